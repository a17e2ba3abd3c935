//! [`CdrDb`]: a writing connection to the pasarela database for call records and rates, the
//! handle the record writer, the command-line tools and tests hold.
//!
//! [`CdrDb::open`] migrates the database with [`crate::store::Store`] (the schema is the
//! store's, migration `0003_call_records.sql` and later) and then keeps a connection of its
//! own, set up by the store's connection policy. Its methods are the record model's view of
//! the store: the SQL is in [`crate::store::records`] and [`crate::store::rates`]; the reads
//! are also free functions on a `&Connection`, which the dashboard runs on its read-only
//! connections.

use std::path::Path;

use super::record::CallRecord;
use super::CdrError;
use crate::store::{records, Connection, Store};

pub use crate::store::connection::Durability;

/// A connection to the pasarela database, for call records and rates.
#[derive(Debug)]
pub struct CdrDb {
    pub(crate) conn: Connection,
}

impl CdrDb {
    /// Opens (creating and migrating if needed) the database at `path`, for reading and
    /// occasional writes ([`Durability::Process`]).
    pub fn open(path: &Path) -> Result<CdrDb, CdrError> {
        CdrDb::open_with(path, Durability::Process)
    }

    /// Opens the database at `path` with the given durability of commits.
    pub fn open_with(path: &Path, durability: Durability) -> Result<CdrDb, CdrError> {
        // The store owns the schema: opening it applies any pending migration.
        drop(Store::open(path)?);
        let conn = crate::store::connection::open_writer(path, durability)?;
        Ok(CdrDb { conn })
    }

    /// The connection, for the store's functions.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Stores `records` in one transaction and sets their ids.
    pub fn insert(&mut self, records: &mut [CallRecord]) -> Result<(), CdrError> {
        Ok(records::insert(&mut self.conn, records)?)
    }

    /// One record by id.
    pub fn record(&self, id: i64) -> Result<Option<CallRecord>, CdrError> {
        Ok(records::get(&self.conn, id)?)
    }

    /// The transports of record `id`'s legs, `caller/callee` (`tls/udp`; migration 0009):
    /// `None` for records written before, or calls refused before any leg was set up.
    pub fn signalling(&self, id: i64) -> Result<Option<String>, CdrError> {
        Ok(records::signalling(&self.conn, id)?)
    }

    /// The ids of the parts of a transferred call (the records sharing `linked_id`,
    /// migration 0021), in the order they happened.
    pub fn linked(&self, linked_id: &str) -> Result<Vec<i64>, CdrError> {
        Ok(records::linked(&self.conn, linked_id)?)
    }

    /// Updates the statistics the query planner uses to choose indexes (SQLite's
    /// `PRAGMA optimize`); cheap when nothing changed much. Worth calling now and then, e.g.
    /// after a large import, and by long-lived connections.
    pub fn optimize(&self) -> Result<(), CdrError> {
        Ok(records::optimize(&self.conn)?)
    }
}
