//! Least-cost order of the PSTN lines (issue 17): the router asks what each line's rate table
//! charges for the number ([`LinePrices`], given by the billing side) and tries the cheaper
//! lines first. Ties, and every line when nothing is priced, keep the configured order; lines
//! without a price for the number come after the priced ones. Every price compared is noted
//! for the route explainer.

use std::fmt;

use crate::routing::trunk::TrunkConfig;

/// What one line's rate table charges for a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinePrice {
    /// The rate table.
    pub table: String,
    /// The rate's prefix (E.164 digits; empty: every number).
    pub prefix: String,
    /// Per minute, millionths of the currency unit.
    pub per_minute_micros: i64,
    /// Connect fee, millionths of the currency unit.
    pub connect_micros: i64,
    /// ISO 4217.
    pub currency: String,
}

fn money(micros: i64) -> String {
    let frac = format!("{:06}", micros.rem_euclid(1_000_000));
    let trimmed = frac.trim_end_matches('0');
    let shown = if trimmed.len() < 2 {
        frac.get(..2).unwrap_or("00")
    } else {
        trimmed
    };
    format!("{}.{shown}", micros.div_euclid(1_000_000))
}

impl fmt::Display for LinePrice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/min", money(self.per_minute_micros), self.currency)?;
        if self.connect_micros > 0 {
            write!(f, " + {} connect", money(self.connect_micros))?;
        }
        let prefix = if self.prefix.is_empty() {
            "any number".to_owned()
        } else {
            format!("prefix {}", self.prefix)
        };
        write!(f, " (table {}, {prefix})", self.table)
    }
}

/// The prices of the lines, as the billing side knows them.
pub trait LinePrices: Send + Sync {
    /// What `line`'s rate table charges for the E.164 number `digits` (without `+`).
    fn price(&self, line: &str, digits: &str) -> Option<LinePrice>;
}

/// `trunks` (in configured order) cheapest first for `digits`, with the explainer's notes.
pub fn order<'a>(
    trunks: Vec<&'a TrunkConfig>,
    digits: &str,
    prices: &dyn LinePrices,
) -> (Vec<&'a TrunkConfig>, Vec<String>) {
    let priced: Vec<(&TrunkConfig, Option<LinePrice>)> = trunks
        .into_iter()
        .map(|t| (t, prices.price(&t.name, digits)))
        .collect();
    if priced.iter().all(|(_, p)| p.is_none()) {
        return (priced.into_iter().map(|(t, _)| t).collect(), Vec::new());
    }
    let mut notes: Vec<String> = priced
        .iter()
        .map(|(t, p)| match p {
            Some(p) => format!("least cost: line {} costs {p}", t.name),
            None => format!(
                "least cost: line {} has no rate for {digits} (tried after the priced lines)",
                t.name
            ),
        })
        .collect();
    let mut sorted = priced;
    // Stable: equal prices keep the configured order.
    sorted.sort_by_key(|(_, p)| match p {
        Some(p) => (0, p.per_minute_micros, p.connect_micros),
        None => (1, 0, 0),
    });
    let names: Vec<&str> = sorted.iter().map(|(t, _)| t.name.as_str()).collect();
    notes.push(format!("least cost order: {}", names.join(", ")));
    (sorted.into_iter().map(|(t, _)| t).collect(), notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Table(HashMap<&'static str, i64>);

    impl LinePrices for Table {
        fn price(&self, line: &str, _digits: &str) -> Option<LinePrice> {
            self.0.get(line).map(|&m| LinePrice {
                table: format!("t-{line}"),
                prefix: "49".into(),
                per_minute_micros: m,
                connect_micros: 0,
                currency: "EUR".into(),
            })
        }
    }

    fn trunk(name: &str) -> TrunkConfig {
        let Ok(crate::sip::uri::Uri::Sip(uri)) = crate::sip::uri::Uri::parse("sip:127.0.0.1:5090")
        else {
            unreachable!()
        };
        TrunkConfig {
            name: name.into(),
            uri,
            username: None,
            password: None,
            number_format: crate::routing::trunk::NumberFormat::E164,
            enabled: true,
            sources: Vec::new(),
            options: Default::default(),
        }
    }

    #[test]
    fn cheaper_first_ties_and_unpriced_keep_their_order() {
        let (a, b, c, d) = (trunk("a"), trunk("b"), trunk("c"), trunk("d"));
        let prices = Table(HashMap::from([("a", 20_000), ("b", 10_000), ("d", 10_000)]));
        let (order_, notes) = order(vec![&a, &b, &c, &d], "4930123", &prices);
        let names: Vec<&str> = order_.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["b", "d", "a", "c"]);
        assert!(
            notes[0].contains("line a costs 0.02 EUR/min (table t-a, prefix 49)"),
            "{notes:?}"
        );
        assert!(notes[2].contains("line c has no rate"), "{notes:?}");
        assert_eq!(notes.last().unwrap(), "least cost order: b, d, a, c");
        // Nothing priced: configured order, no notes.
        let none = Table(HashMap::new());
        let (order_, notes) = order(vec![&a, &b], "4930123", &none);
        assert_eq!(order_[0].name, "a");
        assert!(notes.is_empty());
        assert_eq!(money(1_234_500), "1.2345");
        assert_eq!(money(10_000), "0.01");
    }
}
