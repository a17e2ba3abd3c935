//! The rate tables in SQLite (tables `rate_tables`, `rates`, `rate_table_lines` and the
//! `rating_version` counter their triggers bump): one repository for the tables, their rates
//! and the lines they rate, and the walk that re-rates stored records. The rules — what a
//! valid rate or currency is, how a call is priced — are [`crate::cdr::rating`]'s; tables are
//! named here by id, which [`table_id`] finds. Which table rates each line alone, for the
//! Lines page, is [`super::line_rates`].

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::StoreError;
use crate::cdr::rating::{Price, Rate, RateTableInfo, Rating, RatingInput};

fn price(micros: i64) -> Price {
    Price::from_micros(micros.clamp(0, Price::MAX)).unwrap_or_default()
}

fn rate_from_row(row: &Row<'_>) -> rusqlite::Result<Rate> {
    Ok(Rate {
        prefix: row.get(0)?,
        description: row.get(1)?,
        per_minute: price(row.get(2)?),
        connect_fee: price(row.get(3)?),
        first_s: u32::try_from(row.get::<_, i64>(4)?).unwrap_or(60),
        next_s: u32::try_from(row.get::<_, i64>(5)?).unwrap_or(60),
    })
}

/// The id of the table named `name`.
pub fn table_id(conn: &Connection, name: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .query_row("SELECT id FROM rate_tables WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?)
}

/// Whether some table is the reference table.
pub fn has_reference(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn
        .query_row("SELECT 1 FROM rate_tables WHERE reference = 1", [], |_| {
            Ok(())
        })
        .optional()?
        .is_some())
}

/// Creates a table (its name must be free); returns its id.
pub fn create_table(
    conn: &Connection,
    name: &str,
    currency: &str,
    reference: bool,
) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO rate_tables (name, currency, reference) VALUES (?1, ?2, ?3)",
        params![name, currency, reference],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Deletes a table, its rates and its lines.
pub fn delete_table(conn: &Connection, id: i64) -> Result<(), StoreError> {
    conn.execute("DELETE FROM rate_tables WHERE id = ?1", [id])?;
    Ok(())
}

/// Makes `lines` the lines table `id` rates, taking them from any other table.
pub fn set_table_lines(conn: &mut Connection, id: i64, lines: &[&str]) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    tx.execute("DELETE FROM rate_table_lines WHERE table_id = ?1", [id])?;
    {
        let mut put = tx.prepare(
            "INSERT INTO rate_table_lines (line, table_id) VALUES (?1, ?2)
             ON CONFLICT (line) DO UPDATE SET table_id = excluded.table_id",
        )?;
        for l in lines {
            put.execute(params![l, id])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// All tables with the lines they rate, by name.
pub fn tables(conn: &Connection) -> Result<Vec<RateTableInfo>, StoreError> {
    let mut lines: HashMap<i64, Vec<String>> = HashMap::new();
    let mut stmt = conn.prepare("SELECT table_id, line FROM rate_table_lines ORDER BY line")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))? {
        let (id, line) = row?;
        lines.entry(id).or_default().push(line);
    }
    let mut stmt =
        conn.prepare("SELECT id, name, currency, reference FROM rate_tables ORDER BY name")?;
    let tables = stmt
        .query_map([], |r| {
            let id: i64 = r.get(0)?;
            Ok(RateTableInfo {
                id,
                name: r.get(1)?,
                currency: r.get(2)?,
                reference: r.get(3)?,
                lines: lines.get(&id).cloned().unwrap_or_default(),
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(tables)
}

/// The rates of table `id`, by prefix.
pub fn rates(conn: &Connection, id: i64) -> Result<Vec<Rate>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT prefix, description, per_minute_micros, connect_micros, first_s, next_s
         FROM rates WHERE table_id = ?1 ORDER BY prefix",
    )?;
    let rates = stmt
        .query_map([id], rate_from_row)?
        .collect::<Result<_, _>>()?;
    Ok(rates)
}

/// The rates of every table, by table id.
pub fn all_rates(conn: &Connection) -> Result<HashMap<i64, Vec<Rate>>, StoreError> {
    let mut rates: HashMap<i64, Vec<Rate>> = HashMap::new();
    let mut stmt = conn.prepare(
        "SELECT prefix, description, per_minute_micros, connect_micros, first_s, next_s,
                table_id
         FROM rates",
    )?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, i64>(6)?, rate_from_row(r)?)))? {
        let (id, rate) = row?;
        rates.entry(id).or_default().push(rate);
    }
    Ok(rates)
}

fn put_rate_in(conn: &Connection, table_id: i64, r: &Rate) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO rates (table_id, prefix, description, per_minute_micros, connect_micros,
                            first_s, next_s)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (table_id, prefix) DO UPDATE SET
             description = excluded.description,
             per_minute_micros = excluded.per_minute_micros,
             connect_micros = excluded.connect_micros,
             first_s = excluded.first_s,
             next_s = excluded.next_s",
    )?
    .execute(params![
        table_id,
        r.prefix,
        r.description,
        r.per_minute.micros(),
        r.connect_fee.micros(),
        r.first_s,
        r.next_s
    ])?;
    Ok(())
}

/// Adds a rate to table `id`, or replaces the one with the same prefix.
pub fn put_rate(conn: &Connection, id: i64, rate: &Rate) -> Result<(), StoreError> {
    Ok(put_rate_in(conn, id, rate)?)
}

/// Removes the rate with `prefix` from table `id`; whether there was one.
pub fn delete_rate(conn: &Connection, id: i64, prefix: &str) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "DELETE FROM rates WHERE table_id = ?1 AND prefix = ?2",
        params![id, prefix],
    )? > 0)
}

/// Puts `rates` into table `id` in one transaction; with `replace`, the table ends up with
/// exactly these rates.
pub fn put_rates(
    conn: &mut Connection,
    id: i64,
    rates: &[Rate],
    replace: bool,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    if replace {
        tx.execute("DELETE FROM rates WHERE table_id = ?1", [id])?;
    }
    for r in rates {
        put_rate_in(&tx, id, r)?;
    }
    tx.commit()?;
    Ok(())
}

/// A number that changes whenever a rate table, line assignment or rate changes.
pub fn rating_version(conn: &Connection) -> Result<i64, StoreError> {
    // Read before every batch of records: prepared once per connection.
    Ok(conn
        .prepare_cached("SELECT version FROM rating_version")?
        .query_row([], |r| r.get(0))?)
}

/// Re-rates, in one transaction, at most `limit` records that started in
/// `[after.0, to_ms)` after `(start_ms, id)` = `after`, in that order: `rate` prices each, and
/// its money columns are updated where they differ. Returns how many records changed and the
/// `(start_ms, id)` of the last one seen (`None`: nothing left).
pub fn rerate_chunk(
    conn: &mut Connection,
    after: (i64, i64),
    to_ms: i64,
    limit: usize,
    rate: impl Fn(&RatingInput<'_>) -> Rating,
) -> Result<(usize, Option<(i64, i64)>), StoreError> {
    let tx = conn.transaction()?;
    let mut changed = 0usize;
    let mut last = None;
    {
        let mut select = tx.prepare_cached(
            "SELECT id, start_ms, direction, route_kind, route_target, callee_e164, category,
                    answer_ms IS NOT NULL, billable_s
             FROM call_records
             WHERE (start_ms, id) > (?1, ?2) AND start_ms >= ?1 AND start_ms < ?3
             ORDER BY start_ms, id LIMIT ?4",
        )?;
        let mut update = tx.prepare_cached(
            "UPDATE call_records SET cost_minor = ?2, currency = ?3, rate_table = ?4,
                    rate_prefix = ?5, reference_cost_minor = ?6, savings_minor = ?7
             WHERE id = ?1 AND (cost_minor IS NOT ?2 OR currency IS NOT ?3
                    OR rate_table IS NOT ?4 OR rate_prefix IS NOT ?5
                    OR reference_cost_minor IS NOT ?6 OR savings_minor IS NOT ?7)",
        )?;
        let mut rows = select.query(params![
            after.0,
            after.1,
            to_ms,
            i64::try_from(limit).unwrap_or(i64::MAX)
        ])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let start: i64 = row.get(1)?;
            let route_target: Option<String> = row.get(4)?;
            let callee: Option<String> = row.get(5)?;
            let category: Option<String> = row.get(6)?;
            let input = RatingInput {
                direction: row.get(2)?,
                route_kind: row.get(3)?,
                route_target: route_target.as_deref(),
                callee_e164: callee.as_deref(),
                category: category.as_deref(),
                answered: row.get(7)?,
                billable_s: row.get(8)?,
            };
            let r = rate(&input);
            changed += update.execute(params![
                id,
                r.cost_minor,
                r.currency,
                r.rate_table,
                r.rate_prefix,
                r.reference_cost_minor,
                r.savings_minor
            ])?;
            last = Some((start, id));
        }
    }
    tx.commit()?;
    Ok((changed, last))
}
