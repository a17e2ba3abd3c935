//! Rating: what a call cost and what bypassing the PSTN saved.
//!
//! **Rate tables.** A table has a currency and rates; each rate has an E.164 prefix (digits
//! without `+`; the empty prefix matches every number), a price per minute, a connect fee, and
//! billing increments. A call is priced by the rate with the longest prefix of the callee's
//! E.164 digits. A table rates the calls of the PSTN trunks or lines assigned to it (one table
//! per line; several lines on one table form a line group). At most one table is the
//! *reference*: what the PSTN would have cost. It prices the savings of bypassed (SIP) calls,
//! and the calls of lines that have no table of their own.
//!
//! **Increments** `first/next` (60/60, 30/6, 1/1): the first `first` seconds are charged as a
//! block even when the call was shorter, then every started block of `next` seconds.
//! A 61 s call is charged 120 s at 60/60, 36 s at 30/6, 61 s at 1/1.
//!
//! **Rounding.** Prices are integer millionths of the currency unit ([`Price`]). The cost is
//! computed exactly — `connect fee + per-minute price × charged seconds / 60` — and rounded
//! once, at the end, half up to the currency's minor unit ([`minor_digits`]): 0.125 EUR is
//! 13 cents, 0.1249 EUR is 12 cents. Amounts are stored as integer minor units.
//!
//! **Which calls cost what** ([`RateBook::rate`]):
//! - unanswered calls, internal calls, incoming calls, emergency calls, and calls that reached
//!   an extension: cost 0, savings 0;
//! - PSTN calls: the line's table (else the reference table); savings 0. No table or no
//!   matching rate: not rated (`cost_minor: None`), and logged by the writer;
//! - SIP calls (ENUM, DUNDi): cost 0; the reference table's price is their reference cost and
//!   their savings (`None` — unknown — without a reference table or a reference rate for the
//!   number).
//!
//! Rates are imported and exported as CSV ([`import_rates_csv`]), and [`rerate`]
//! recomputes the money of the records of a period after rates changed. The tables are stored
//! by [`crate::store::rates`]; the functions here check what is stored and call it.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{Read, Write};

use super::csv::{self, CsvErrors};
use super::record::{CallRecord, Direction, RouteKind};
use super::{CdrDb, CdrError};
use crate::store::{rates, Connection};

/// Digits after the decimal point of a currency's minor unit (ISO 4217): 2 for most, 0 for
/// currencies without a minor unit in use (JPY, KRW …), 3 for BHD, IQD, JOD, KWD, LYD, OMR
/// and TND.
pub fn minor_digits(currency: &str) -> u32 {
    match currency {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// An amount of minor units as a decimal number of the currency (`1234`, EUR → `"12.34"`).
pub fn format_minor(amount: i64, currency: &str) -> String {
    let digits = minor_digits(currency);
    let sign = if amount < 0 { "-" } else { "" };
    let abs = amount.unsigned_abs();
    if digits == 0 {
        return format!("{sign}{abs}");
    }
    let unit = 10u64.pow(digits);
    format!(
        "{sign}{}.{:0width$}",
        abs / unit,
        abs % unit,
        width = digits as usize
    )
}

/// A price in millionths of the currency unit (0.0123 EUR = 12 300), never negative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(i64);

impl Price {
    /// Millionths per unit.
    pub const SCALE: i64 = 1_000_000;
    /// The largest price accepted (a million currency units).
    pub const MAX: i64 = 1_000_000 * Self::SCALE;

    /// A price of `micros` millionths; `None` when negative or above [`Price::MAX`].
    pub fn from_micros(micros: i64) -> Option<Price> {
        (0..=Self::MAX).contains(&micros).then_some(Price(micros))
    }

    /// The price in millionths of the currency unit.
    pub fn micros(self) -> i64 {
        self.0
    }

    /// Parses a decimal price: digits with at most six decimals (`0.0123`, `1`, `.5`). With
    /// `decimal_comma`, `0,0123` is accepted too.
    pub fn parse(text: &str, decimal_comma: bool) -> Result<Price, String> {
        let t = text.trim();
        let bad = || format!("not a price: {t:?} (want digits with at most 6 decimals)");
        let (int, frac) = match t.find(|c| c == '.' || (decimal_comma && c == ',')) {
            Some(i) => crate::checked::cut(t, i, 1).ok_or_else(bad)?,
            None => (t, ""),
        };
        if (int.is_empty() && frac.is_empty())
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        if frac.len() > 6 {
            return Err(format!("{t:?} has more than 6 decimals"));
        }
        let too_big = || format!("{t:?} is too large");
        let mut micros: i64 = 0;
        for b in int.bytes() {
            micros = micros
                .checked_mul(10)
                .and_then(|m| m.checked_add(i64::from(b - b'0')))
                .ok_or_else(too_big)?;
        }
        micros = micros.checked_mul(Self::SCALE).ok_or_else(too_big)?;
        let mut scale = Self::SCALE;
        for b in frac.bytes() {
            scale /= 10;
            micros += i64::from(b - b'0') * scale;
        }
        Price::from_micros(micros).ok_or_else(too_big)
    }
}

impl fmt::Display for Price {
    /// The price with at least two and at most six decimals: `0.0123`, `1.00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let frac = format!("{:06}", self.0 % Self::SCALE);
        let trimmed = frac.trim_end_matches('0');
        let shown = if trimmed.len() < 2 {
            crate::checked::head(&frac, 2)
        } else {
            trimmed
        };
        write!(f, "{}.{shown}", self.0 / Self::SCALE)
    }
}

/// One rate of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    /// E.164 digits without `+`; `""` matches every number.
    pub prefix: String,
    /// Free text (`Germany mobile`).
    pub description: String,
    /// Price per minute.
    pub per_minute: Price,
    /// Charged once per answered call.
    pub connect_fee: Price,
    /// First billing increment, seconds (≥ 1): the minimum charged.
    pub first_s: u32,
    /// Following increments, seconds (≥ 1).
    pub next_s: u32,
}

impl Rate {
    /// The seconds charged for an answered call of `billable_s` seconds.
    pub fn charged_seconds(&self, billable_s: i64) -> i64 {
        let s = billable_s.max(0);
        let first = i64::from(self.first_s.max(1));
        let next = i64::from(self.next_s.max(1));
        if s <= first {
            first
        } else {
            first + (s - first + next - 1) / next * next
        }
    }

    /// The cost of an answered call of `billable_s` seconds, in minor units of a currency with
    /// `minor_digits` decimals, rounded half up (see the module documentation).
    pub fn cost_minor(&self, billable_s: i64, minor_digits: u32) -> i64 {
        let charged = i128::from(self.charged_seconds(billable_s));
        // In millionths × seconds / 60: exact.
        let exact = i128::from(self.connect_fee.micros()) * 60
            + i128::from(self.per_minute.micros()) * charged;
        let divisor = 60 * 10i128.pow(6 - minor_digits.min(6));
        i64::try_from((exact + divisor / 2) / divisor).unwrap_or(i64::MAX)
    }

    /// Checks the fields a rate must satisfy.
    pub fn validate(&self) -> Result<(), String> {
        if self.prefix.len() > 15 || !self.prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "prefix {:?}: want up to 15 digits of an E.164 number",
                self.prefix
            ));
        }
        for (name, v) in [("first", self.first_s), ("next", self.next_s)] {
            if !(1..=3600).contains(&v) {
                return Err(format!("{name} increment {v}: want 1 to 3600 seconds"));
            }
        }
        Ok(())
    }
}

/// A rate table's settings, without its rates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateTableInfo {
    pub id: i64,
    /// Unique name (`carrier`, `gsm`, `reference`).
    pub name: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Whether this is the PSTN reference table.
    pub reference: bool,
    /// The trunks and lines it rates, sorted.
    pub lines: Vec<String>,
}

/// A rate table with its rates, for matching.
#[derive(Debug, Clone)]
pub struct RateTable {
    pub info: RateTableInfo,
    rates: HashMap<String, Rate>,
    longest: usize,
}

impl RateTable {
    /// A table with `rates`.
    pub fn new(info: RateTableInfo, rates: impl IntoIterator<Item = Rate>) -> RateTable {
        let mut t = RateTable {
            info,
            rates: HashMap::new(),
            longest: 0,
        };
        for r in rates {
            t.longest = t.longest.max(r.prefix.len());
            t.rates.insert(r.prefix.clone(), r);
        }
        t
    }

    /// The rate for an E.164 number (`+` optional): the one with the longest matching prefix.
    pub fn lookup(&self, e164: &str) -> Option<&Rate> {
        let digits = e164.strip_prefix('+').unwrap_or(e164);
        let max = digits.len().min(self.longest);
        (0..=max)
            .rev()
            .find_map(|n| digits.get(..n).and_then(|p| self.rates.get(p)))
    }

    /// How many rates it has.
    pub fn len(&self) -> usize {
        self.rates.len()
    }

    /// Whether it has no rates.
    pub fn is_empty(&self) -> bool {
        self.rates.is_empty()
    }
}

/// What rating needs to know about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatingInput<'a> {
    pub direction: Direction,
    pub route_kind: RouteKind,
    /// The trunk or line name of a PSTN call.
    pub route_target: Option<&'a str>,
    pub callee_e164: Option<&'a str>,
    /// The numbering category (`emergency` calls are free).
    pub category: Option<&'a str>,
    pub answered: bool,
    pub billable_s: i64,
}

/// The money fields of a record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rating {
    /// `None`: not rated (no table or no rate for the number).
    pub cost_minor: Option<i64>,
    pub currency: Option<String>,
    pub rate_table: Option<String>,
    pub rate_prefix: Option<String>,
    pub reference_cost_minor: Option<i64>,
    pub savings_minor: Option<i64>,
}

impl CallRecord {
    /// What rating looks at.
    pub fn rating_input(&self) -> RatingInput<'_> {
        RatingInput {
            direction: self.direction,
            route_kind: self.route_kind,
            route_target: self.route_target.as_deref(),
            callee_e164: self.callee_e164.as_deref(),
            category: self.category.as_deref(),
            answered: self.answer_ms.is_some(),
            billable_s: self.billable_s,
        }
    }

    /// Sets the money fields.
    pub fn apply_rating(&mut self, r: Rating) {
        self.cost_minor = r.cost_minor;
        self.currency = r.currency;
        self.rate_table = r.rate_table;
        self.rate_prefix = r.rate_prefix;
        self.reference_cost_minor = r.reference_cost_minor;
        self.savings_minor = r.savings_minor;
    }
}

/// All rate tables, ready to rate calls.
#[derive(Debug, Clone, Default)]
pub struct RateBook {
    tables: Vec<RateTable>,
    by_line: HashMap<String, usize>,
    reference: Option<usize>,
}

impl RateBook {
    /// A book of `tables` (a second reference table is ignored, as is a line listed twice).
    pub fn new(tables: Vec<RateTable>) -> RateBook {
        let mut by_line = HashMap::new();
        let mut reference = None;
        for (i, t) in tables.iter().enumerate() {
            if t.info.reference && reference.is_none() {
                reference = Some(i);
            }
            for l in &t.info.lines {
                by_line.entry(l.clone()).or_insert(i);
            }
        }
        RateBook {
            tables,
            by_line,
            reference,
        }
    }

    /// The tables.
    pub fn tables(&self) -> &[RateTable] {
        &self.tables
    }

    /// The reference table.
    pub fn reference(&self) -> Option<&RateTable> {
        self.tables.get(self.reference?)
    }

    /// The table that rates calls over `line`: its own, else the reference table.
    pub fn table_for_line(&self, line: &str) -> Option<&RateTable> {
        match self.by_line.get(line) {
            Some(&i) => self.tables.get(i),
            None => self.reference(),
        }
    }

    /// Rates a call; see the module documentation for the rules.
    pub fn rate(&self, call: &RatingInput<'_>) -> Rating {
        let reference = self.reference();
        let free = || Rating {
            cost_minor: Some(0),
            currency: reference.map(|t| t.info.currency.clone()),
            savings_minor: Some(0),
            ..Rating::default()
        };
        if !call.answered
            || call.direction != Direction::Outgoing
            || call.category == Some("emergency")
        {
            return free();
        }
        // What the PSTN would have charged, in `currency`.
        let reference_cost = |currency: &str| -> Option<(i64, &Rate)> {
            let t = reference.filter(|t| t.info.currency == currency)?;
            let rate = t.lookup(call.callee_e164?)?;
            Some((
                rate.cost_minor(call.billable_s, minor_digits(currency)),
                rate,
            ))
        };
        match call.route_kind {
            RouteKind::Extension | RouteKind::NoRoute => free(),
            RouteKind::Sip => {
                let Some(t) = reference else {
                    return Rating {
                        cost_minor: Some(0),
                        ..Rating::default()
                    };
                };
                let found = reference_cost(&t.info.currency);
                Rating {
                    cost_minor: Some(0),
                    currency: Some(t.info.currency.clone()),
                    rate_table: found.map(|_| t.info.name.clone()),
                    rate_prefix: found.map(|(_, r)| r.prefix.clone()),
                    reference_cost_minor: found.map(|(c, _)| c),
                    savings_minor: found.map(|(c, _)| c),
                }
            }
            RouteKind::Pstn => {
                let Some(t) = call.route_target.and_then(|l| self.table_for_line(l)) else {
                    return Rating::default();
                };
                let currency = &t.info.currency;
                let rate = call.callee_e164.and_then(|n| t.lookup(n));
                Rating {
                    cost_minor: rate.map(|r| r.cost_minor(call.billable_s, minor_digits(currency))),
                    currency: Some(currency.clone()),
                    rate_table: Some(t.info.name.clone()),
                    rate_prefix: rate.map(|r| r.prefix.clone()),
                    reference_cost_minor: reference_cost(currency).map(|(c, _)| c),
                    savings_minor: Some(0),
                }
            }
        }
    }
}

/// How an import treats the rates already in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportMode {
    /// The table ends up with exactly the rates of the file.
    Replace,
    /// Rates of the file are added or replace those with the same prefix; others stay.
    Merge,
}

/// The columns of a rates CSV file. `prefix` and `per_minute` are required; `connect_fee`
/// defaults to 0 and the increments to 60.
pub const RATE_COLUMNS: [&str; 6] = [
    "prefix",
    "description",
    "per_minute",
    "connect_fee",
    "first_increment",
    "next_increment",
];

fn check_currency(currency: &str) -> Result<(), CdrError> {
    if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(CdrError::Invalid(format!(
            "currency {currency:?}: want an ISO 4217 code such as EUR"
        )))
    }
}

/// Parses the rates of a CSV text; every problem is collected with its line and column.
fn parse_rates(text: &str) -> Result<Vec<Rate>, CsvErrors> {
    let mut errors = CsvErrors::new("rates CSV");
    let delimiter = csv::sniff_delimiter(text);
    let decimal_comma = delimiter == b';';
    let rows = match csv::parse(text, delimiter) {
        Ok(rows) => rows,
        Err(p) => {
            errors.push(p.line, None, p.message);
            return Err(errors);
        }
    };
    let Some((header, body)) = rows.split_first() else {
        errors.push(1, None, "empty file: want a header line and rates");
        return Err(errors);
    };
    let mut index: HashMap<&str, usize> = HashMap::new();
    let names: Vec<String> = header
        .fields
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    for (i, name) in names.iter().enumerate() {
        if !RATE_COLUMNS.contains(&name.as_str()) {
            errors.push(
                header.line,
                Some(name),
                format!("unknown column (known: {})", RATE_COLUMNS.join(", ")),
            );
        } else if index.insert(name.as_str(), i).is_some() {
            errors.push(header.line, Some(name), "column given twice");
        }
    }
    for required in ["prefix", "per_minute"] {
        if !index.contains_key(required) {
            errors.push(header.line, Some(required), "required column missing");
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut rates = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for row in body {
        if row.fields.len() != names.len() {
            errors.push(
                row.line,
                None,
                format!(
                    "{} field(s), the header has {}",
                    row.fields.len(),
                    names.len()
                ),
            );
            continue;
        }
        let field = |name: &str| {
            index
                .get(name)
                .and_then(|&i| row.fields.get(i))
                .map(|f| f.trim())
        };
        let mut ok = true;
        let mut fail = |column: &str, message: String| {
            errors.push(row.line, Some(column), message);
            ok = false;
        };
        let raw_prefix = field("prefix").unwrap_or("");
        let prefix: String = raw_prefix
            .strip_prefix('+')
            .unwrap_or(raw_prefix)
            .chars()
            .filter(|c| !matches!(c, ' ' | '-'))
            .collect();
        if prefix.len() > 15 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            fail(
                "prefix",
                format!("{raw_prefix:?}: want up to 15 digits of an E.164 number (empty: all)"),
            );
        } else if let Some(first) = seen.insert(prefix.clone(), row.line) {
            fail(
                "prefix",
                format!("prefix {prefix:?} is already on line {first}"),
            );
        }
        let mut price = |column: &str, default: Option<Price>| -> Price {
            match field(column) {
                Some(t) if !t.is_empty() => Price::parse(t, decimal_comma).unwrap_or_else(|e| {
                    fail(column, e);
                    Price(0)
                }),
                _ => default.unwrap_or_else(|| {
                    fail(column, "a price is required".into());
                    Price(0)
                }),
            }
        };
        let per_minute = price("per_minute", None);
        let connect_fee = price("connect_fee", Some(Price(0)));
        let mut increment = |column: &str| -> u32 {
            match field(column) {
                Some(t) if !t.is_empty() => match t.parse::<u32>() {
                    Ok(v) if (1..=3600).contains(&v) => v,
                    _ => {
                        fail(column, format!("{t:?}: want whole seconds from 1 to 3600"));
                        60
                    }
                },
                _ => 60,
            }
        };
        let first_s = increment("first_increment");
        let next_s = increment("next_increment");
        if ok {
            rates.push(Rate {
                prefix,
                description: field("description").unwrap_or("").to_owned(),
                per_minute,
                connect_fee,
                first_s,
                next_s,
            });
        }
    }
    if errors.is_empty() {
        Ok(rates)
    } else {
        Err(errors)
    }
}

/// The id of the table named `name`, or [`CdrError::UnknownTable`].
fn table_id(conn: &Connection, name: &str) -> Result<i64, CdrError> {
    rates::table_id(conn, name)?.ok_or_else(|| CdrError::UnknownTable(name.to_owned()))
}

/// Creates a rate table; returns its id. The name must be free and not empty, the currency
/// an ISO 4217 code, and there is at most one reference table.
pub fn create_rate_table(
    conn: &Connection,
    name: &str,
    currency: &str,
    reference: bool,
) -> Result<i64, CdrError> {
    check_currency(currency)?;
    if name.trim().is_empty() {
        return Err(CdrError::Invalid("a rate table needs a name".into()));
    }
    if reference && rates::has_reference(conn)? {
        return Err(CdrError::Invalid(
            "there is already a reference table".into(),
        ));
    }
    if rates::table_id(conn, name)?.is_some() {
        return Err(CdrError::Invalid(format!(
            "a rate table named {name:?} exists"
        )));
    }
    Ok(rates::create_table(conn, name, currency, reference)?)
}

/// Deletes a rate table and its rates.
pub fn delete_rate_table(conn: &Connection, name: &str) -> Result<(), CdrError> {
    let id = table_id(conn, name)?;
    Ok(rates::delete_table(conn, id)?)
}

/// Makes `lines` (trunk or line names) the lines rated by table `name`, taking them from any
/// other table.
pub fn set_rate_table_lines(
    conn: &mut Connection,
    name: &str,
    lines: &[&str],
) -> Result<(), CdrError> {
    let id = table_id(conn, name)?;
    Ok(rates::set_table_lines(conn, id, lines)?)
}

/// All rate tables, by name.
pub fn rate_tables(conn: &Connection) -> Result<Vec<RateTableInfo>, CdrError> {
    Ok(rates::tables(conn)?)
}

/// The rates of table `name`, by prefix.
pub fn rates_of(conn: &Connection, name: &str) -> Result<Vec<Rate>, CdrError> {
    let id = table_id(conn, name)?;
    Ok(rates::rates(conn, id)?)
}

/// Adds a valid rate to table `name`, or replaces the one with the same prefix.
pub fn put_rate(conn: &Connection, name: &str, rate: &Rate) -> Result<(), CdrError> {
    rate.validate().map_err(CdrError::Invalid)?;
    let id = table_id(conn, name)?;
    Ok(rates::put_rate(conn, id, rate)?)
}

/// Removes the rate with `prefix` from table `name`; whether there was one.
pub fn delete_rate(conn: &Connection, name: &str, prefix: &str) -> Result<bool, CdrError> {
    let id = table_id(conn, name)?;
    Ok(rates::delete_rate(conn, id, prefix)?)
}

/// Imports rates from CSV (columns [`RATE_COLUMNS`], in any order, header first; `,` or `;`
/// separated; with `;`, decimal commas are accepted). All or nothing: a file with any error
/// imports nothing and the error lists every problem with its line and column. Returns how
/// many rates were imported.
pub fn import_rates_csv(
    conn: &mut Connection,
    name: &str,
    mut input: impl Read,
    mode: ImportMode,
) -> Result<usize, CdrError> {
    let id = table_id(conn, name)?;
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes)?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let line = 1 + crate::checked::bytes(e.as_bytes(), 0, valid)
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            let mut errors = CsvErrors::new("rates CSV");
            errors.push(line, None, "not UTF-8 text (save the file as UTF-8 CSV)");
            return Err(errors.into());
        }
    };
    let parsed = parse_rates(&text)?;
    rates::put_rates(conn, id, &parsed, mode == ImportMode::Replace)?;
    tracing::info!(table = name, rates = parsed.len(), ?mode, "rates imported");
    Ok(parsed.len())
}

/// Writes the rates of table `name` as CSV (the columns of [`RATE_COLUMNS`]); returns how many
/// rates were written.
pub fn export_rates_csv(
    conn: &Connection,
    name: &str,
    mut out: impl Write,
) -> Result<usize, CdrError> {
    let rates = rates_of(conn, name)?;
    csv::write_row(&mut out, &RATE_COLUMNS)?;
    for r in &rates {
        csv::write_row(
            &mut out,
            &[
                r.prefix.clone(),
                r.description.clone(),
                r.per_minute.to_string(),
                r.connect_fee.to_string(),
                r.first_s.to_string(),
                r.next_s.to_string(),
            ],
        )?;
    }
    out.flush()?;
    Ok(rates.len())
}

/// Loads every table and rate for rating.
pub fn load_rate_book(conn: &Connection) -> Result<RateBook, CdrError> {
    let infos = rates::tables(conn)?;
    let mut all = rates::all_rates(conn)?;
    let tables = infos
        .into_iter()
        .map(|info| {
            let list = all.remove(&info.id).unwrap_or_default();
            RateTable::new(info, list)
        })
        .collect();
    Ok(RateBook::new(tables))
}

/// A number that changes whenever a rate table, line assignment or rate changes.
pub fn rating_version(conn: &Connection) -> Result<i64, CdrError> {
    Ok(rates::rating_version(conn)?)
}

impl CdrDb {
    /// Creates a rate table; returns its id ([`create_rate_table`]).
    pub fn create_rate_table(
        &mut self,
        name: &str,
        currency: &str,
        reference: bool,
    ) -> Result<i64, CdrError> {
        create_rate_table(&self.conn, name, currency, reference)
    }

    /// Deletes a rate table and its rates.
    pub fn delete_rate_table(&mut self, name: &str) -> Result<(), CdrError> {
        delete_rate_table(&self.conn, name)
    }

    /// Makes `lines` the lines rated by table `name` ([`set_rate_table_lines`]).
    pub fn set_rate_table_lines(&mut self, name: &str, lines: &[&str]) -> Result<(), CdrError> {
        set_rate_table_lines(&mut self.conn, name, lines)
    }

    /// All rate tables, by name.
    pub fn rate_tables(&self) -> Result<Vec<RateTableInfo>, CdrError> {
        rate_tables(&self.conn)
    }

    /// The rates of table `name`, by prefix.
    pub fn rates(&self, name: &str) -> Result<Vec<Rate>, CdrError> {
        rates_of(&self.conn, name)
    }

    /// Adds a rate to table `name`, or replaces the one with the same prefix.
    pub fn put_rate(&mut self, name: &str, rate: &Rate) -> Result<(), CdrError> {
        put_rate(&self.conn, name, rate)
    }

    /// Removes the rate with `prefix` from table `name`; whether there was one.
    pub fn delete_rate(&mut self, name: &str, prefix: &str) -> Result<bool, CdrError> {
        delete_rate(&self.conn, name, prefix)
    }

    /// Imports rates from CSV ([`import_rates_csv`]).
    pub fn import_rates_csv(
        &mut self,
        name: &str,
        input: impl Read,
        mode: ImportMode,
    ) -> Result<usize, CdrError> {
        import_rates_csv(&mut self.conn, name, input, mode)
    }

    /// Writes the rates of table `name` as CSV ([`export_rates_csv`]).
    pub fn export_rates_csv(&self, name: &str, out: impl Write) -> Result<usize, CdrError> {
        export_rates_csv(&self.conn, name, out)
    }

    /// Loads every table and rate for rating.
    pub fn load_rate_book(&self) -> Result<RateBook, CdrError> {
        load_rate_book(&self.conn)
    }

    /// A number that changes whenever a rate table, line assignment or rate changes.
    pub fn rating_version(&self) -> Result<i64, CdrError> {
        rating_version(&self.conn)
    }
}

/// Records re-rated per transaction, so that the record writer never waits long for the lock.
const RERATE_CHUNK: usize = 2_000;

/// Recomputes cost, currency, rate used, reference cost and savings of every record that
/// started in `[from_ms, to_ms)` with the current rates. Works in short transactions of
/// [`RERATE_CHUNK`] records. Returns how many records changed.
pub fn rerate(db: &mut CdrDb, from_ms: i64, to_ms: i64) -> Result<usize, CdrError> {
    rerate_on(&mut db.conn, from_ms, to_ms)
}

/// [`rerate`] on a writing connection (the dashboard's).
pub fn rerate_on(conn: &mut Connection, from_ms: i64, to_ms: i64) -> Result<usize, CdrError> {
    let book = load_rate_book(conn)?;
    let mut changed = 0usize;
    let mut after = (from_ms, i64::MIN);
    loop {
        let (n, last) =
            rates::rerate_chunk(conn, after, to_ms, RERATE_CHUNK, |input| book.rate(input))?;
        changed += n;
        match last {
            Some(l) => after = l,
            None => break,
        }
    }
    tracing::info!(from_ms, to_ms, changed, "call records re-rated");
    Ok(changed)
}

/// The lines among `lines` that have no rate table of their own (their calls are rated with
/// the reference table), for warnings at start-up or in the dashboard.
pub fn lines_without_table<'a>(book: &RateBook, lines: &[&'a str]) -> Vec<&'a str> {
    let known: HashSet<&str> = book.by_line.keys().map(String::as_str).collect();
    lines
        .iter()
        .copied()
        .filter(|l| !known.contains(l))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::record::tests::sample;

    fn rate(prefix: &str, per_minute: &str, connect: &str, first: u32, next: u32) -> Rate {
        Rate {
            prefix: prefix.into(),
            description: String::new(),
            per_minute: Price::parse(per_minute, false).unwrap(),
            connect_fee: Price::parse(connect, false).unwrap(),
            first_s: first,
            next_s: next,
        }
    }

    fn info(name: &str, currency: &str, reference: bool, lines: &[&str]) -> RateTableInfo {
        RateTableInfo {
            id: 0,
            name: name.into(),
            currency: currency.into(),
            reference,
            lines: lines.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// A carrier table for trunk `carrier`, a GSM line `gsm1` without a table, and the
    /// reference.
    fn book() -> RateBook {
        RateBook::new(vec![
            RateTable::new(
                info("carrier", "EUR", false, &["carrier"]),
                vec![
                    rate("49", "0.02", "0", 60, 60),
                    rate("4915", "0.09", "0.05", 30, 6),
                ],
            ),
            RateTable::new(
                info("reference", "EUR", true, &[]),
                vec![
                    rate("", "0.50", "0", 60, 60),
                    rate("49", "0.04", "0", 60, 60),
                    rate("4930", "0.03", "0", 1, 1),
                ],
            ),
        ])
    }

    fn call<'a>(
        kind: RouteKind,
        target: Option<&'a str>,
        callee: &'a str,
        s: i64,
    ) -> RatingInput<'a> {
        RatingInput {
            direction: Direction::Outgoing,
            route_kind: kind,
            route_target: target,
            callee_e164: Some(callee),
            category: Some("national"),
            answered: true,
            billable_s: s,
        }
    }

    #[test]
    fn increments() {
        let r60 = rate("", "1", "0", 60, 60);
        let r30 = rate("", "1", "0", 30, 6);
        let r1 = rate("", "1", "0", 1, 1);
        for (s, c60, c30, c1) in [
            (0, 60, 30, 1),
            (1, 60, 30, 1),
            (30, 60, 30, 30),
            (31, 60, 36, 31),
            (36, 60, 36, 36),
            (37, 60, 42, 37),
            (60, 60, 60, 60),
            (61, 120, 66, 61),
            (3601, 3660, 3606, 3601),
        ] {
            assert_eq!(r60.charged_seconds(s), c60, "60/60 {s}s");
            assert_eq!(r30.charged_seconds(s), c30, "30/6 {s}s");
            assert_eq!(r1.charged_seconds(s), c1, "1/1 {s}s");
        }
        // 1.00/min: 61 s cost 2.00 at 60/60, 1.10 at 30/6, 1.0167 → 1.02 at 1/1.
        assert_eq!(r60.cost_minor(61, 2), 200);
        assert_eq!(r30.cost_minor(61, 2), 110);
        assert_eq!(r1.cost_minor(61, 2), 102);
    }

    #[test]
    fn rounding_is_half_up_once_at_the_end() {
        // 0.125 EUR exactly: 7.5 ct/min for 100 s at 1/1 → 12.5 ct → 13 ct.
        let r = rate("", "0.075", "0", 1, 1);
        assert_eq!(r.cost_minor(100, 2), 13);
        // 0.1249983 EUR → 12 ct: 7.4999 ct/min × 100 s, rounded once.
        let r = rate("", "0.074999", "0", 1, 1);
        assert_eq!(r.cost_minor(100, 2), 12);
        // Per-second rounding would give 100 × 0.125 ct = 0; the exact sum is 12.5 ct → 13.
        let r = rate("", "0.075", "0", 1, 1);
        assert_eq!(r.cost_minor(100, 2), 13);
        // Currencies without and with three minor digits.
        let r = rate("", "10.5", "0", 60, 60);
        assert_eq!(r.cost_minor(30, 0), 11); // 10.5 JPY → 11
        assert_eq!(r.cost_minor(30, 3), 10_500); // 10.500 KWD
        assert_eq!(minor_digits("JPY"), 0);
        assert_eq!(minor_digits("KWD"), 3);
        assert_eq!(minor_digits("EUR"), 2);
        assert_eq!(format_minor(1234, "EUR"), "12.34");
        assert_eq!(format_minor(-5, "EUR"), "-0.05");
        assert_eq!(format_minor(1234, "JPY"), "1234");
        assert_eq!(format_minor(1234, "KWD"), "1.234");
    }

    #[test]
    fn connect_fee() {
        // 0.05 connect + 30 s at 0.09/min (30/6) = 0.05 + 0.045 = 0.095 → 0.10.
        let r = rate("4915", "0.09", "0.05", 30, 6);
        assert_eq!(r.cost_minor(10, 2), 10);
        // The fee alone for a free minute.
        let r = rate("", "0", "0.15", 60, 60);
        assert_eq!(r.cost_minor(600, 2), 15);
        // Unanswered calls pay no connect fee.
        let b = RateBook::new(vec![RateTable::new(
            info("carrier", "EUR", false, &["carrier"]),
            vec![rate("", "0", "0.15", 60, 60)],
        )]);
        let mut c = call(RouteKind::Pstn, Some("carrier"), "+4930123", 0);
        c.answered = false;
        assert_eq!(b.rate(&c).cost_minor, Some(0));
        c.answered = true;
        assert_eq!(b.rate(&c).cost_minor, Some(15));
    }

    #[test]
    fn longest_prefix() {
        let b = book();
        let t = b.table_for_line("carrier").unwrap();
        assert_eq!(t.lookup("+4915112345").unwrap().prefix, "4915");
        assert_eq!(t.lookup("4930123").unwrap().prefix, "49");
        assert!(t.lookup("+331234").is_none());
        let r = b.reference().unwrap();
        assert_eq!(r.lookup("+4930123").unwrap().prefix, "4930");
        assert_eq!(r.lookup("+4940123").unwrap().prefix, "49");
        assert_eq!(r.lookup("+331234").unwrap().prefix, "");

        let rated = b.rate(&call(RouteKind::Pstn, Some("carrier"), "+4915112345", 45));
        // 45 s at 30/6 = 48 s × 0.09/min = 0.072 + 0.05 = 0.122 → 12 ct.
        assert_eq!(rated.cost_minor, Some(12));
        assert_eq!(rated.rate_table.as_deref(), Some("carrier"));
        assert_eq!(rated.rate_prefix.as_deref(), Some("4915"));
        assert_eq!(rated.currency.as_deref(), Some("EUR"));
        // The reference (49: 0.04/min 60/60) would have charged 4 ct; no bypass, no savings.
        assert_eq!(rated.reference_cost_minor, Some(4));
        assert_eq!(rated.savings_minor, Some(0));
    }

    #[test]
    fn line_without_table_uses_the_reference_and_unknown_numbers_are_unrated() {
        let b = book();
        let rated = b.rate(&call(RouteKind::Pstn, Some("gsm1"), "+493012345", 90));
        assert_eq!(rated.rate_table.as_deref(), Some("reference"));
        assert_eq!(rated.cost_minor, Some(5)); // 90 s × 0.03/min = 4.5 ct → 5
        let rated = b.rate(&call(RouteKind::Pstn, Some("carrier"), "+331234", 90));
        assert_eq!(rated.cost_minor, None);
        assert_eq!(rated.rate_table.as_deref(), Some("carrier"));
        // No tables at all: nothing to say.
        let empty = RateBook::default();
        assert_eq!(
            empty.rate(&call(RouteKind::Pstn, Some("carrier"), "+331234", 90)),
            Rating::default()
        );
    }

    #[test]
    fn free_internal_incoming_emergency_and_unanswered_calls() {
        let b = book();
        let mut c = call(RouteKind::Extension, Some("101"), "+4930100", 300);
        c.direction = Direction::Internal;
        let r = b.rate(&c);
        assert_eq!((r.cost_minor, r.savings_minor), (Some(0), Some(0)));
        assert_eq!(r.currency.as_deref(), Some("EUR"));

        let mut c = call(RouteKind::Extension, Some("101"), "+4930100", 300);
        c.direction = Direction::Incoming;
        assert_eq!(b.rate(&c).cost_minor, Some(0));

        let mut c = call(RouteKind::Pstn, Some("carrier"), "+4930100", 300);
        c.category = Some("emergency");
        c.callee_e164 = None;
        assert_eq!(b.rate(&c).cost_minor, Some(0));

        let mut c = call(RouteKind::Pstn, Some("carrier"), "+4930100", 0);
        c.answered = false;
        let r = b.rate(&c);
        assert_eq!((r.cost_minor, r.reference_cost_minor), (Some(0), None));
    }

    #[test]
    fn bypassed_calls_are_free_and_show_savings() {
        let b = book();
        let r = b.rate(&call(
            RouteKind::Sip,
            Some("sip:bob@example.net"),
            "+4930123",
            600,
        ));
        // 600 s at the reference 0.03/min 1/1 = 30 ct saved.
        assert_eq!(r.cost_minor, Some(0));
        assert_eq!(r.reference_cost_minor, Some(30));
        assert_eq!(r.savings_minor, Some(30));
        assert_eq!(r.rate_table.as_deref(), Some("reference"));
        assert_eq!(r.rate_prefix.as_deref(), Some("4930"));
        // Without a reference table, or a reference rate for the number, the savings are
        // unknown but the call is still free.
        let no_ref = RateBook::new(vec![book().tables()[0].clone()]);
        let r = no_ref.rate(&call(RouteKind::Sip, None, "+4930123", 600));
        assert_eq!((r.cost_minor, r.savings_minor), (Some(0), None));
        let partial = RateBook::new(vec![RateTable::new(
            info("reference", "EUR", true, &[]),
            vec![rate("33", "0.5", "0", 60, 60)],
        )]);
        let r = partial.rate(&call(RouteKind::Sip, None, "+4930123", 600));
        assert_eq!((r.cost_minor, r.savings_minor), (Some(0), None));
        assert_eq!(r.currency.as_deref(), Some("EUR"));
    }

    #[test]
    fn prices_parse_and_print() {
        assert_eq!(Price::parse("0.0123", false).unwrap().micros(), 12_300);
        assert_eq!(Price::parse(" 1 ", false).unwrap().micros(), 1_000_000);
        assert_eq!(Price::parse(".5", false).unwrap().micros(), 500_000);
        assert_eq!(Price::parse("0,25", true).unwrap().micros(), 250_000);
        for bad in [
            "",
            ".",
            "-1",
            "1e3",
            "0,25",
            "1.2.3",
            "€1",
            "0.1234567",
            "99999999999999",
        ] {
            assert!(Price::parse(bad, false).is_err(), "{bad:?}");
        }
        assert_eq!(Price(12_300).to_string(), "0.0123");
        assert_eq!(Price(1_000_000).to_string(), "1.00");
        assert_eq!(Price(100_000).to_string(), "0.10");
        assert_eq!(Price(1_234_567).to_string(), "1.234567");
    }

    fn db() -> (tempfile::TempDir, CdrDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = CdrDb::open(&dir.path().join("r.db")).unwrap();
        (dir, db)
    }

    #[test]
    fn tables_and_rates_in_the_store() {
        let (_d, mut db) = db();
        db.create_rate_table("carrier", "EUR", false).unwrap();
        db.create_rate_table("reference", "EUR", true).unwrap();
        assert!(matches!(
            db.create_rate_table("ref2", "EUR", true),
            Err(CdrError::Invalid(_))
        ));
        assert!(db.create_rate_table("carrier", "EUR", false).is_err());
        assert!(db.create_rate_table("x", "euro", false).is_err());
        db.set_rate_table_lines("carrier", &["carrier", "gsm1"])
            .unwrap();
        let v0 = db.rating_version().unwrap();
        db.put_rate("carrier", &rate("49", "0.02", "0", 60, 60))
            .unwrap();
        db.put_rate("carrier", &rate("49", "0.03", "0", 60, 60))
            .unwrap();
        assert!(db.rating_version().unwrap() > v0);
        assert!(db
            .put_rate("carrier", &rate("4x", "0.03", "0", 60, 60))
            .is_err());
        assert!(matches!(
            db.put_rate("nope", &rate("49", "0.03", "0", 60, 60)),
            Err(CdrError::UnknownTable(_))
        ));
        let rates = db.rates("carrier").unwrap();
        assert_eq!(rates.len(), 1);
        assert_eq!(rates[0].per_minute.to_string(), "0.03");
        let tables = db.rate_tables().unwrap();
        assert_eq!(tables[0].lines, vec!["carrier", "gsm1"]);
        assert!(tables[1].reference);
        let book = db.load_rate_book().unwrap();
        assert_eq!(book.table_for_line("gsm1").unwrap().info.name, "carrier");
        assert_eq!(lines_without_table(&book, &["gsm1", "gsm2"]), vec!["gsm2"]);
        assert!(db.delete_rate("carrier", "49").unwrap());
        assert!(!db.delete_rate("carrier", "49").unwrap());
        db.delete_rate_table("carrier").unwrap();
        assert_eq!(db.rate_tables().unwrap().len(), 1);
    }

    #[test]
    fn csv_import_and_export_round_trip() {
        let (_d, mut db) = db();
        db.create_rate_table("carrier", "EUR", false).unwrap();
        let text = "Prefix,Description,per_minute,connect_fee,first_increment,next_increment\n\
                    +49,Germany,0.02,,60,60\n\
                    4915,\"Germany, mobile\",0.09,0.05,30,6\n\
                    ,Rest of world,0.5,0,1,1\n";
        assert_eq!(
            db.import_rates_csv("carrier", text.as_bytes(), ImportMode::Replace)
                .unwrap(),
            3
        );
        let mut out = Vec::new();
        assert_eq!(db.export_rates_csv("carrier", &mut out).unwrap(), 3);
        let exported = String::from_utf8(out).unwrap();
        assert_eq!(
            exported,
            "prefix,description,per_minute,connect_fee,first_increment,next_increment\r\n\
             ,Rest of world,0.50,0.00,1,1\r\n\
             49,Germany,0.02,0.00,60,60\r\n\
             4915,\"Germany, mobile\",0.09,0.05,30,6\r\n"
        );
        // Re-importing the export gives the same rates.
        let before = db.rates("carrier").unwrap();
        db.import_rates_csv("carrier", exported.as_bytes(), ImportMode::Replace)
            .unwrap();
        assert_eq!(db.rates("carrier").unwrap(), before);

        // Semicolons and decimal commas (a spreadsheet in Germany); merge keeps the others.
        let text = "prefix;per_minute\n4930;0,015\n";
        db.import_rates_csv("carrier", text.as_bytes(), ImportMode::Merge)
            .unwrap();
        let rates = db.rates("carrier").unwrap();
        assert_eq!(rates.len(), 4);
        assert_eq!(rates[3].prefix, "4930");
        assert_eq!(rates[3].per_minute.micros(), 15_000);
        assert_eq!((rates[3].first_s, rates[3].next_s), (60, 60));
    }

    #[test]
    fn csv_errors_name_line_and_column_and_import_nothing() {
        let (_d, mut db) = db();
        db.create_rate_table("carrier", "EUR", false).unwrap();
        db.put_rate("carrier", &rate("1", "0.01", "0", 60, 60))
            .unwrap();
        let text = "prefix,per_minute,first_increment\n\
                    49,0.02,60\n\
                    49x,abc,0\n\
                    33,0.02\n\
                    49,0.03,60\n";
        let err = db
            .import_rates_csv("carrier", text.as_bytes(), ImportMode::Replace)
            .unwrap_err();
        let CdrError::Csv(e) = &err else {
            panic!("{err:?}")
        };
        let got: Vec<(usize, Option<&str>)> = e
            .problems
            .iter()
            .map(|p| (p.line, p.column.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (3, Some("prefix")),
                (3, Some("per_minute")),
                (3, Some("first_increment")),
                (4, None),
                (5, Some("prefix")),
            ],
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("line 5, column `prefix`: prefix \"49\" is already on line 2"),
            "{msg}"
        );
        assert!(
            msg.contains("line 4: 2 field(s), the header has 3"),
            "{msg}"
        );
        // Nothing changed.
        assert_eq!(db.rates("carrier").unwrap().len(), 1);

        for (text, expect) in [
            (
                "per_minute\n0.1\n",
                "line 1, column `prefix`: required column missing",
            ),
            (
                "prefix,price\n49,1\n",
                "line 1, column `price`: unknown column",
            ),
            ("", "line 1: empty file"),
            (
                "prefix,per_minute\n49,\"0.1\n",
                "line 2: a quoted field is not closed",
            ),
        ] {
            let err = db
                .import_rates_csv("carrier", text.as_bytes(), ImportMode::Replace)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expect), "{err}");
        }
        let err = db
            .import_rates_csv(
                "carrier",
                &b"prefix,per_minute\n49,1\n\xff\n"[..],
                ImportMode::Merge,
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3: not UTF-8"), "{err}");
    }

    #[test]
    fn rerate_a_period_after_a_rate_change() {
        let (_d, mut db) = db();
        db.create_rate_table("carrier", "EUR", false).unwrap();
        db.create_rate_table("reference", "EUR", true).unwrap();
        db.set_rate_table_lines("carrier", &["carrier"]).unwrap();
        db.put_rate("carrier", &rate("49", "0.02", "0", 60, 60))
            .unwrap();
        db.put_rate("reference", &rate("49", "0.10", "0", 60, 60))
            .unwrap();
        // Five PSTN calls of 60 s and one bypassed call, a day apart; nothing rated yet.
        let day = 86_400_000;
        let mut recs: Vec<CallRecord> = (0..5).map(|i| sample(i * day)).collect();
        let mut sip = sample(2 * day + 1);
        sip.route_kind = RouteKind::Sip;
        sip.route_target = Some("sip:x@example.net".into());
        recs.push(sip);
        db.insert(&mut recs).unwrap();

        assert_eq!(rerate(&mut db, 0, 10 * day).unwrap(), 6);
        let r = db.record(1).unwrap().unwrap();
        assert_eq!((r.cost_minor, r.reference_cost_minor), (Some(2), Some(10)));
        let r = db.record(6).unwrap().unwrap();
        assert_eq!((r.cost_minor, r.savings_minor), (Some(0), Some(10)));
        // Nothing changed: nothing to update.
        assert_eq!(rerate(&mut db, 0, 10 * day).unwrap(), 0);

        // The carrier raised its price from day 2 on: only that period is re-rated.
        db.put_rate("carrier", &rate("49", "0.05", "0", 60, 60))
            .unwrap();
        assert_eq!(rerate(&mut db, 2 * day, 10 * day).unwrap(), 3);
        let costs: Vec<Option<i64>> = (1..=5)
            .map(|id| db.record(id).unwrap().unwrap().cost_minor)
            .collect();
        assert_eq!(costs, vec![Some(2), Some(2), Some(5), Some(5), Some(5)]);
        // More records than a chunk are all re-rated.
        let mut many: Vec<CallRecord> = (0..(RERATE_CHUNK as i64 * 2 + 7))
            .map(|i| sample(20 * day + i))
            .collect();
        db.insert(&mut many).unwrap();
        assert_eq!(
            rerate(&mut db, 20 * day, 21 * day).unwrap(),
            RERATE_CHUNK * 2 + 7
        );
    }
}
