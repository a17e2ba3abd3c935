//! The rate book as the router's [`LinePrices`] (issue 17, least-cost order): a line is priced
//! by the table that will rate its calls ([`RateBook::table_for_line`]: its own, else the
//! reference table), at the rate with the longest prefix of the number.

use crate::routing::least_cost::{LinePrice, LinePrices};

use super::rating::RateBook;

impl LinePrices for RateBook {
    fn price(&self, line: &str, digits: &str) -> Option<LinePrice> {
        let table = self.table_for_line(line)?;
        let rate = table.lookup(digits)?;
        Some(LinePrice {
            table: table.info.name.clone(),
            prefix: rate.prefix.clone(),
            per_minute_micros: rate.per_minute.micros(),
            connect_micros: rate.connect_fee.micros(),
            currency: table.info.currency.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::rating::{Price, Rate, RateTable, RateTableInfo};

    fn table(name: &str, lines: &[&str], prefix: &str, micros: i64) -> RateTable {
        RateTable::new(
            RateTableInfo {
                id: 0,
                name: name.into(),
                currency: "EUR".into(),
                reference: false,
                lines: lines.iter().map(|l| l.to_string()).collect(),
            },
            [Rate {
                prefix: prefix.into(),
                description: String::new(),
                per_minute: Price::from_micros(micros).unwrap(),
                connect_fee: Price::default(),
                first_s: 60,
                next_s: 60,
            }],
        )
    }

    #[test]
    fn a_line_is_priced_by_its_own_table() {
        let book = RateBook::new(vec![
            table("cheap", &["gsm"], "49", 10_000),
            table("dear", &["carrier"], "4930", 30_000),
        ]);
        let p = book.price("gsm", "4930123456").unwrap();
        assert_eq!((p.table.as_str(), p.per_minute_micros), ("cheap", 10_000));
        assert_eq!(book.price("carrier", "4930123456").unwrap().prefix, "4930");
        assert!(
            book.price("carrier", "4940123456").is_none(),
            "no rate for the number"
        );
        assert!(
            book.price("other", "4930123456").is_none(),
            "no table, no reference"
        );
    }
}
