//! A small RFC 4180 CSV reader and writer: enough for rate tables and record exports, with
//! errors that name the line (and, through [`CsvProblem`], the column) of the problem.
//!
//! Reading: fields are separated by the delimiter (`,`, or `;` as spreadsheets write it in
//! countries with a decimal comma); a field in double quotes may hold delimiters, doubled
//! quotes and line breaks; records end at `\n` or `\r\n`; a UTF-8 byte order mark is skipped;
//! blank lines are ignored. Writing: rows end with `\r\n`, and a field is quoted when it holds
//! the delimiter, a quote, a line break, or leading or trailing spaces.
//!
//! Formula injection (CWE-1236): a written field that a spreadsheet would run as a formula —
//! one starting with `=`, `+`, `-`, `@`, a tab or a carriage return, such as a dialled string
//! `=HYPERLINK(…)` — gets a leading `'`, which spreadsheets show as text. Plain numbers
//! (`+4930123456`, `-0.5`) are left as they are: they are no formula. Reading drops that `'`
//! again, so exported rate tables import unchanged.
// Outside data is parsed here: no unchecked indexing or string slicing (issue 13).
#![cfg_attr(not(test), deny(clippy::string_slice, clippy::indexing_slicing))]

use std::fmt;
use std::io::{self, Write};

/// One record read from a CSV text, with the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRow {
    /// The line the record starts on.
    pub line: usize,
    /// Its fields, unquoted.
    pub fields: Vec<String>,
}

/// One problem in a CSV text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvProblem {
    /// 1-based line.
    pub line: usize,
    /// The column's header name, when the problem is in a field.
    pub column: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for CsvProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(c) => write!(f, "line {}, column `{c}`: {}", self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

/// The problems found in a CSV text (at least one), in line order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct CsvErrors {
    /// What was being read (`rates CSV`).
    pub what: String,
    /// The problems; at most [`CsvErrors::MAX`] are kept.
    pub problems: Vec<CsvProblem>,
    /// How many more problems there were beyond those kept.
    pub more: usize,
}

impl CsvErrors {
    /// How many problems are kept for the report.
    pub const MAX: usize = 50;

    /// An empty collection for `what`.
    pub fn new(what: &str) -> CsvErrors {
        CsvErrors {
            what: what.to_owned(),
            problems: Vec::new(),
            more: 0,
        }
    }

    /// Adds a problem.
    pub fn push(&mut self, line: usize, column: Option<&str>, message: impl Into<String>) {
        if self.problems.len() < Self::MAX {
            self.problems.push(CsvProblem {
                line,
                column: column.map(str::to_owned),
                message: message.into(),
            });
        } else {
            self.more += 1;
        }
    }

    /// Whether no problem was found.
    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for CsvErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.what)?;
        for p in &self.problems {
            write!(f, "\n  {p}")?;
        }
        if self.more > 0 {
            write!(f, "\n  … and {} more", self.more)?;
        }
        Ok(())
    }
}

/// The delimiter a CSV text most likely uses: `;` when its first line has semicolons and no
/// commas, else `,`.
pub fn sniff_delimiter(text: &str) -> u8 {
    let first = text.lines().next().unwrap_or("");
    if first.contains(';') && !first.contains(',') {
        b';'
    } else {
        b','
    }
}

/// Splits a CSV text into records. Fails on the first malformed quoted field, naming its line.
pub fn parse(text: &str, delimiter: u8) -> Result<Vec<CsvRow>, CsvProblem> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let bytes = text.as_bytes();
    let mut rows = Vec::new();
    let mut line = 1usize;
    let mut i = 0usize;
    while i < bytes.len() {
        let start_line = line;
        let mut fields = Vec::new();
        let mut field = Vec::new();
        let mut at_field_start = true;
        loop {
            let Some(&b) = bytes.get(i) else {
                fields.push(std::mem::take(&mut field));
                break;
            };
            if at_field_start && b == b'"' {
                // A quoted field: up to the closing quote, then a delimiter or end of record.
                let quote_line = line;
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => {
                            return Err(CsvProblem {
                                line: quote_line,
                                column: None,
                                message: "a quoted field is not closed".into(),
                            })
                        }
                        Some(b'"') if bytes.get(i + 1) == Some(&b'"') => {
                            field.push(b'"');
                            i += 2;
                        }
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(&c) => {
                            if c == b'\n' {
                                line += 1;
                            }
                            field.push(c);
                            i += 1;
                        }
                    }
                }
                match bytes.get(i) {
                    None | Some(b'\n') | Some(b'\r') => {}
                    Some(&c) if c == delimiter => {}
                    Some(_) => {
                        return Err(CsvProblem {
                            line,
                            column: None,
                            message: "text after the closing quote of a field".into(),
                        })
                    }
                }
                at_field_start = false;
                continue;
            }
            at_field_start = false;
            if b == delimiter {
                fields.push(std::mem::take(&mut field));
                at_field_start = true;
                i += 1;
            } else if b == b'\n' || (b == b'\r' && bytes.get(i + 1) == Some(&b'\n')) {
                i += if b == b'\r' { 2 } else { 1 };
                line += 1;
                fields.push(std::mem::take(&mut field));
                break;
            } else {
                field.push(b);
                i += 1;
            }
        }
        // Splitting at ASCII bytes keeps every field valid UTF-8.
        let fields: Vec<String> = fields
            .into_iter()
            .map(|f| {
                let text = String::from_utf8_lossy(&f).into_owned();
                match text.strip_prefix('\'') {
                    Some(rest) if formula_like(rest) => rest.to_owned(),
                    _ => text,
                }
            })
            .collect();
        let blank = fields.len() == 1 && fields.first().is_some_and(|f| f.trim().is_empty());
        if !blank {
            rows.push(CsvRow {
                line: start_line,
                fields,
            });
        }
    }
    Ok(rows)
}

/// Whether a spreadsheet would take `value` for a formula: it starts with `=`, `+`, `-`, `@`,
/// a tab or a carriage return and is not a plain number.
pub fn formula_like(value: &str) -> bool {
    let Some(first) = value.chars().next() else {
        return false;
    };
    if !matches!(first, '=' | '+' | '-' | '@' | '\t' | '\r') {
        return false;
    }
    let plain_number = matches!(first, '+' | '-')
        && value.len() > 1
        && value
            .chars()
            .skip(1)
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | ',' | ' '));
    !plain_number
}

/// Appends `value` to `row` as one field (with the delimiter before it unless `first`); a
/// formula-like value is neutralised with a leading `'`.
pub fn push_field(row: &mut String, value: &str, first: bool) {
    if !first {
        row.push(',');
    }
    let neutralised;
    let value = if formula_like(value) {
        neutralised = format!("'{value}");
        neutralised.as_str()
    } else {
        value
    };
    let needs_quotes = value
        .bytes()
        .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'))
        || value.starts_with(' ')
        || value.ends_with(' ');
    if needs_quotes {
        row.push('"');
        for c in value.chars() {
            if c == '"' {
                row.push('"');
            }
            row.push(c);
        }
        row.push('"');
    } else {
        row.push_str(value);
    }
}

/// Writes one row of fields, ending with `\r\n`.
pub fn write_row<W: Write + ?Sized, S: AsRef<str>>(out: &mut W, fields: &[S]) -> io::Result<()> {
    let mut row = String::new();
    for (i, f) in fields.iter().enumerate() {
        push_field(&mut row, f.as_ref(), i == 0);
    }
    row.push_str("\r\n");
    out.write_all(row.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(rows: &[CsvRow]) -> Vec<Vec<&str>> {
        rows.iter()
            .map(|r| r.fields.iter().map(String::as_str).collect())
            .collect()
    }

    #[test]
    fn reads_plain_and_quoted_fields() {
        let text = "\u{feff}a,b,c\r\n1,\"x, \"\"y\"\"\",3\n\n\"multi\nline\",,\n4,5,6";
        let rows = parse(text, b',').unwrap();
        assert_eq!(
            fields(&rows),
            vec![
                vec!["a", "b", "c"],
                vec!["1", "x, \"y\"", "3"],
                vec!["multi\nline", "", ""],
                vec!["4", "5", "6"],
            ]
        );
        assert_eq!(
            rows.iter().map(|r| r.line).collect::<Vec<_>>(),
            vec![1, 2, 4, 6]
        );
    }

    #[test]
    fn semicolons_are_sniffed() {
        assert_eq!(sniff_delimiter("prefix;per_minute\n49;0,01"), b';');
        assert_eq!(sniff_delimiter("prefix,per_minute"), b',');
        let rows = parse("prefix;per_minute\n49;0,01\n", b';').unwrap();
        assert_eq!(
            fields(&rows),
            vec![vec!["prefix", "per_minute"], vec!["49", "0,01"]]
        );
    }

    #[test]
    fn malformed_quotes_name_their_line() {
        let e = parse("a,b\n1,\"open\n2,3\n", b',').unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("not closed"), "{e}");
        let e = parse("a,b\n1,2\n\"x\"y,3\n", b',').unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.to_string().starts_with("line 3:"), "{e}");
    }

    #[test]
    fn written_rows_read_back() {
        let values = [
            "plain",
            "com,ma",
            "quo\"te",
            "line\nbreak",
            " padded ",
            "",
            "+4930",
        ];
        let mut out = Vec::new();
        write_row(&mut out, &values).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("\r\n"));
        assert!(
            text.starts_with("plain,\"com,ma\",\"quo\"\"te\","),
            "{text}"
        );
        let rows = parse(&text, b',').unwrap();
        assert_eq!(fields(&rows), vec![values.to_vec()]);
    }

    #[test]
    fn formulas_are_neutralised_and_read_back() {
        let values = [
            "=HYPERLINK(\"http://evil.example\",\"call\")",
            "+1+cmd|' /C calc'!A0",
            "-2+3",
            "@SUM(A1:A2)",
            "\tx",
            "\r=1",
            "+4930123456",
            "-0.50",
            "sip:=x@host",
        ];
        let mut out = Vec::new();
        write_row(&mut out, &values).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"call\"\")\",'+1+cmd|' /C calc'!A0,'-2+3,'@SUM(A1:A2),'\tx,\"'\r=1\",+4930123456,-0.50,sip:=x@host\r\n"),
            "{text}"
        );
        // No field of the written row starts with a formula character.
        let rows = parse(&text, b',').unwrap();
        assert_eq!(fields(&rows), vec![values.to_vec()]);
    }

    #[test]
    fn errors_are_listed_with_line_and_column() {
        let mut e = CsvErrors::new("rates CSV");
        e.push(3, Some("per_minute"), "not a price: \"abc\"");
        e.push(5, None, "3 fields, the header has 6");
        assert_eq!(
            e.to_string(),
            "rates CSV:\n  line 3, column `per_minute`: not a price: \"abc\"\n  line 5: 3 fields, the header has 6"
        );
    }
}
