//! How the record's word-valued columns (`direction`, `route_kind`, `disposition`) are stored:
//! as their lower-case text ([`Direction::as_str`] and its `FromStr`). The impls live here,
//! with the rest of the SQL, so that the record model in [`crate::cdr::record`] knows nothing
//! of SQLite; a word that does not parse reads as an error, never a panic.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::cdr::record::{Direction, Disposition, RouteKind};

/// `ToSql`/`FromSql` through `as_str` and `FromStr`.
macro_rules! text_column {
    ($($name:ty),+) => {$(
        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e: String| FromSqlError::Other(e.into()))
            }
        }
    )+};
}

text_column!(Direction, RouteKind, Disposition);
