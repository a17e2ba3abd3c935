//! The `pickup_groups` table (migration 0020): each extension's call groups and pickup groups
//! ([`PickupGroups`]). The configuration file seeds a row; the dashboard changes it; the
//! file's groups are applied again only when they change in the file (`file_seed` remembers
//! what was applied last).

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};

use crate::routing::pickup::{parse_groups, PickupGroups};

/// What the file's groups are remembered as (to see whether they changed).
fn seed_text(g: &PickupGroups) -> String {
    format!("{}|{}", g.call.join(","), g.pickup.join(","))
}

fn groups(text: &str) -> Vec<String> {
    // The store only holds what was checked on the way in; anything else is dropped.
    parse_groups(text).unwrap_or_default()
}

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(String, PickupGroups)> {
    Ok((
        row.get(0)?,
        PickupGroups {
            call: groups(&row.get::<_, String>(1)?),
            pickup: groups(&row.get::<_, String>(2)?),
        },
    ))
}

/// Every extension's pickup groups (extensions without a row have none).
pub fn all(conn: &Connection) -> rusqlite::Result<HashMap<String, PickupGroups>> {
    let mut stmt = conn.prepare("SELECT number, call_group, pickup_group FROM pickup_groups")?;
    let rows = stmt.query_map([], from_row)?;
    rows.collect()
}

/// One extension's pickup groups (none without a row).
pub fn get(conn: &Connection, number: &str) -> rusqlite::Result<PickupGroups> {
    Ok(conn
        .query_row(
            "SELECT number, call_group, pickup_group FROM pickup_groups WHERE number = ?1",
            [number],
            from_row,
        )
        .optional()?
        .map(|(_, g)| g)
        .unwrap_or_default())
}

/// Stores `g` for `number` (from the dashboard): the file's seed is kept.
pub fn set(conn: &Connection, number: &str, g: &PickupGroups, now: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO pickup_groups (number, call_group, pickup_group, updated_at)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (number) DO UPDATE SET
             call_group = excluded.call_group,
             pickup_group = excluded.pickup_group,
             updated_at = excluded.updated_at",
        params![number, g.call.join(","), g.pickup.join(","), now],
    )?;
    Ok(())
}

/// Seeds the rows of the file's extensions: a row is (re)written when it is new or when the
/// file's groups differ from those it applied last. Returns how many rows were written.
pub fn seed(
    conn: &mut Connection,
    from_file: &[(String, PickupGroups)],
    now: i64,
) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    let mut written = 0;
    for (number, g) in from_file {
        let seed = seed_text(g);
        let last: Option<Option<String>> = tx
            .query_row(
                "SELECT file_seed FROM pickup_groups WHERE number = ?1",
                [number],
                |r| r.get(0),
            )
            .optional()?;
        if last.as_ref().and_then(|s| s.as_deref()) == Some(seed.as_str()) {
            continue;
        }
        // A new extension without groups needs no row.
        if last.is_none() && g.is_empty() {
            continue;
        }
        set(&tx, number, g, now)?;
        tx.execute(
            "UPDATE pickup_groups SET file_seed = ?2 WHERE number = ?1",
            params![number, seed],
        )?;
        written += 1;
    }
    tx.commit()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(call: &[&str], pickup: &[&str]) -> PickupGroups {
        PickupGroups {
            call: call.iter().map(|s| s.to_string()).collect(),
            pickup: pickup.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn file_seeds_and_dashboard_changes_stay() {
        let mut store = crate::store::Store::open_in_memory().unwrap();
        let file = g(&["sales"], &["sales", "support"]);
        let rows = vec![
            ("102".to_owned(), file.clone()),
            ("103".to_owned(), PickupGroups::default()),
        ];
        assert_eq!(store.seed_pickup_groups(&rows).unwrap(), 1);
        let all = store.pickup_groups().unwrap();
        assert_eq!(all.get("102"), Some(&file));
        assert_eq!(all.get("103"), None);
        // The dashboard changes it; the same file at the next start leaves that alone.
        let web = g(&["support"], &[]);
        store.set_pickup_groups("102", &web).unwrap();
        assert_eq!(store.seed_pickup_groups(&rows).unwrap(), 0);
        assert_eq!(store.pickup_groups().unwrap().get("102"), Some(&web));
        // A change in the file wins.
        let file2 = g(&["sales"], &["sales"]);
        assert_eq!(
            store
                .seed_pickup_groups(&[("102".to_owned(), file2.clone())])
                .unwrap(),
            1
        );
        assert_eq!(store.pickup_groups().unwrap().get("102"), Some(&file2));
    }
}
