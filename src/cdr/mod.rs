//! Call detail records and their rating: what every call attempt leaves behind, what it cost,
//! and the queries the dashboard reads them with.
//!
//! The parts, each with one job:
//!
//! - [`record`]: the [`CallRecord`] and how it is made from a finished call
//!   ([`CallRecord::from_summary`]) or a call refused before ringing ([`CallRecord::rejected`]):
//!   wall-clock times, direction, route kind and target, disposition, SIP status and Q.850 cause.
//! - [`rating`]: rate tables matched by the longest E.164 prefix, billing increments, connect
//!   fees, the PSTN reference table that prices the savings of bypassed calls, CSV import and
//!   export of rates, and re-rating a period.
//! - [`writer`]: the background thread that rates records and commits them in batches, so the
//!   SIP loop never waits on the disk and a finished call's record survives a crash.
//! - [`query`]: the dashboard's reads — filtered, sorted, paginated lists, totals, daily
//!   series, monthly billing (the store's query types, re-exported) — and the streaming CSV
//!   exports.
//! - [`db`]: [`CdrDb`], a writing connection with the record model's methods; the schema is
//!   migration `0003_call_records.sql`, applied by [`crate::store::Store`].
//!
//! The SQL is the store's: [`crate::store::records`] (records, calls in progress, the
//! dashboard's queries) and [`crate::store::rates`] (rate tables, re-rating); this module
//! keeps the domain — the record model, rating rules, CSV — and calls them.
//! - [`csv`]: the small RFC 4180 reader and writer behind the CSV features.
//!
//! Money is never a float: amounts are `i64` minor units of their currency (cents for EUR,
//! [`rating::minor_digits`] says how many digits a currency has) and rate prices are `i64`
//! millionths of the currency unit ([`rating::Price`]).

pub mod csv;
pub mod db;
pub mod in_progress;
pub mod line_prices;
pub mod query;
pub mod rating;
pub mod record;
pub mod writer;

pub use db::CdrDb;
pub use query::{BillingLine, DayTotals, Filter, Overview, Page, Sort, SortKey, Totals};
pub use rating::{rerate, Price, Rate, RateBook, RateTable, RateTableInfo, Rating};
pub use record::{CallRecord, Direction, Disposition, OfficeNumbers, RouteKind};
pub use writer::{CdrWriter, CdrWriterHandle, CdrWriterStats, Note};

/// Errors of the call records and rating.
#[derive(Debug, thiserror::Error)]
pub enum CdrError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Reading or writing a CSV stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A rates CSV file has errors; nothing was imported.
    #[error("{0}")]
    Csv(#[from] csv::CsvErrors),
    /// No rate table has this name.
    #[error("no rate table named {0:?}")]
    UnknownTable(String),
    /// A rate table or rate is not valid.
    #[error("invalid rate: {0}")]
    Invalid(String),
    /// The record writer thread is gone.
    #[error("the call record writer has stopped")]
    WriterStopped,
    /// Some records could not be written (each was logged with its content).
    #[error("{failed} call record(s) could not be written")]
    WriteFailed {
        /// How many records failed since the previous flush.
        failed: usize,
    },
}
