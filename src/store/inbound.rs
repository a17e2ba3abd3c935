//! Ring groups and inbound routes in the store (tables `ring_groups`, `inbound_routes`,
//! issue 17), the same pattern as [`super::trunks`]: the file's `[[ring_group]]` and
//! `[[inbound.route]]` tables are synchronised in (source `config`, read-only elsewhere; the
//! file wins on a name or number), the dashboard adds, changes and deletes its own (source
//! `web`). Every change is checked by the configuration file's own validation.

use std::path::Path;

use rusqlite::{params, Connection};

use super::config::{RingGroupConfig, RingStrategy};
use crate::config::Config;

use super::trunks::{FieldError, TrunkChangeError as ChangeError, SOURCE_WEB};
use super::{StoreError, SOURCE_CONFIG};

/// One row of `ring_groups`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRow {
    pub group: RingGroupConfig,
    pub source: String,
}

/// One row of `inbound_routes`: the number called and where it rings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRow {
    pub number: String,
    pub destination: String,
    pub source: String,
}

fn strategy_text(s: RingStrategy) -> &'static str {
    match s {
        RingStrategy::All => "all",
        RingStrategy::Order => "order",
    }
}

/// Every ring group: the file's in file order, then the dashboard's as added.
pub fn groups(conn: &Connection) -> Result<Vec<GroupRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT name, source, members, strategy, member_timeout FROM ring_groups \
         ORDER BY source <> 'config', position, rowid",
    )?;
    let rows = stmt.query_map([], |r| {
        let members: String = r.get(2)?;
        let strategy: String = r.get(3)?;
        Ok(GroupRow {
            group: RingGroupConfig {
                name: r.get(0)?,
                members: members
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect(),
                strategy: if strategy == "order" {
                    RingStrategy::Order
                } else {
                    RingStrategy::All
                },
                member_timeout_secs: u32::try_from(r.get::<_, i64>(4)?).unwrap_or(15),
            },
            source: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Every inbound route, the file's first.
pub fn routes(conn: &Connection) -> Result<Vec<RouteRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT number, destination, source FROM inbound_routes \
         ORDER BY source <> 'config', position, rowid",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(RouteRow {
            number: r.get(0)?,
            destination: r.get(1)?,
            source: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The ring groups and the inbound routes (number, destination) the gateway uses.
pub type InboundSets = (Vec<RingGroupConfig>, Vec<(String, String)>);

/// The groups and routes the gateway uses (`[[ring_group]]`, `[inbound] routes`).
pub fn effective(conn: &Connection) -> Result<InboundSets, StoreError> {
    Ok((
        groups(conn)?.into_iter().map(|g| g.group).collect(),
        routes(conn)?
            .into_iter()
            .map(|r| (r.number, r.destination))
            .collect(),
    ))
}

/// Makes the `config` rows match the file's groups and routes (taking over web rows of the
/// same name or number), deleting `config` rows no longer in the file. Returns how many rows
/// changed.
pub fn sync_config(
    conn: &mut Connection,
    groups_in_file: &[RingGroupConfig],
    routes_in_file: &[(String, String)],
) -> Result<usize, StoreError> {
    let now = super::unix_now();
    let tx = conn.transaction()?;
    let mut changed = 0;
    for (i, g) in groups_in_file.iter().enumerate() {
        changed += tx.execute(
            "INSERT INTO ring_groups (name, source, members, strategy, member_timeout, position, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (name) DO UPDATE SET source = excluded.source, members = excluded.members, \
             strategy = excluded.strategy, member_timeout = excluded.member_timeout, \
             position = excluded.position, updated_at = excluded.updated_at \
             WHERE ring_groups.source IS NOT excluded.source OR ring_groups.members IS NOT excluded.members \
             OR ring_groups.strategy IS NOT excluded.strategy \
             OR ring_groups.member_timeout IS NOT excluded.member_timeout \
             OR ring_groups.position IS NOT excluded.position",
            params![
                g.name,
                SOURCE_CONFIG,
                g.members.join(","),
                strategy_text(g.strategy),
                g.member_timeout_secs,
                i64::try_from(i).unwrap_or(i64::MAX),
                now
            ],
        )?;
    }
    for (i, (number, destination)) in routes_in_file.iter().enumerate() {
        changed += tx.execute(
            "INSERT INTO inbound_routes (number, source, destination, position, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (number) DO UPDATE SET source = excluded.source, \
             destination = excluded.destination, position = excluded.position, \
             updated_at = excluded.updated_at \
             WHERE inbound_routes.source IS NOT excluded.source \
             OR inbound_routes.destination IS NOT excluded.destination \
             OR inbound_routes.position IS NOT excluded.position",
            params![
                number,
                SOURCE_CONFIG,
                destination,
                i64::try_from(i).unwrap_or(i64::MAX),
                now
            ],
        )?;
    }
    let names: Vec<&str> = groups_in_file.iter().map(|g| g.name.as_str()).collect();
    let stale: Vec<String> = tx
        .prepare("SELECT name FROM ring_groups WHERE source = ?1")?
        .query_map([SOURCE_CONFIG], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|n| !names.contains(&n.as_str()))
        .collect();
    for n in stale {
        changed += tx.execute("DELETE FROM ring_groups WHERE name = ?1", [n])?;
    }
    let numbers: Vec<&str> = routes_in_file.iter().map(|r| r.0.as_str()).collect();
    let stale: Vec<String> = tx
        .prepare("SELECT number FROM inbound_routes WHERE source = ?1")?
        .query_map([SOURCE_CONFIG], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|n| !numbers.contains(&n.as_str()))
        .collect();
    for n in stale {
        changed += tx.execute("DELETE FROM inbound_routes WHERE number = ?1", [n])?;
    }
    tx.commit()?;
    Ok(changed)
}

/// Checks `groups` and `routes` together as the file's tables are checked; the error names
/// the key at fault (`members`, `destination`, …).
fn check(groups: &[RingGroupConfig], routes: &[(String, String)]) -> Result<(), FieldError> {
    let mut doc = toml::Table::new();
    let gs: Vec<toml::Value> = groups
        .iter()
        .map(|g| {
            let mut t = toml::Table::new();
            t.insert("name".into(), g.name.clone().into());
            t.insert(
                "members".into(),
                toml::Value::Array(g.members.iter().cloned().map(toml::Value::from).collect()),
            );
            t.insert("strategy".into(), strategy_text(g.strategy).into());
            t.insert(
                "member_timeout".into(),
                toml::Value::Integer(i64::from(g.member_timeout_secs)),
            );
            toml::Value::Table(t)
        })
        .collect();
    doc.insert("ring_group".into(), toml::Value::Array(gs));
    let rs: Vec<toml::Value> = routes
        .iter()
        .map(|(n, d)| {
            let mut t = toml::Table::new();
            t.insert("number".into(), n.clone().into());
            t.insert("destination".into(), d.clone().into());
            toml::Value::Table(t)
        })
        .collect();
    let mut inbound = toml::Table::new();
    inbound.insert("route".into(), toml::Value::Array(rs));
    doc.insert("inbound".into(), toml::Value::Table(inbound));
    let bad = |field: &str, message: String| FieldError {
        field: field.to_owned(),
        message,
    };
    let text = toml::to_string(&doc).map_err(|e| bad("settings", e.to_string()))?;
    match Config::from_toml_str(&text, Path::new("inbound")) {
        Ok(_) => Ok(()),
        Err(e) => {
            let field = e
                .key()
                .and_then(|k| k.rsplit('.').next())
                .map(|k| k.split('[').next().unwrap_or(k).to_owned())
                .unwrap_or_else(|| "settings".into());
            let message = match &e {
                crate::config::ConfigError::Key { message, .. }
                | crate::config::ConfigError::Syntax { message, .. } => message.clone(),
                other => other.to_string(),
            };
            Err(bad(&field, message))
        }
    }
}

/// Adds or replaces a dashboard ring group after checking it with every other group.
pub fn save_group(conn: &mut Connection, group: RingGroupConfig) -> Result<(), ChangeError> {
    let mut all = groups(conn)?;
    if let Some(g) = all.iter().find(|g| g.group.name == group.name) {
        if g.source == SOURCE_CONFIG {
            return Err(ChangeError::FromFile(group.name));
        }
    }
    all.retain(|g| g.group.name != group.name);
    let mut gs: Vec<RingGroupConfig> = all.into_iter().map(|g| g.group).collect();
    gs.push(group.clone());
    check(&gs, &[])?;
    conn.execute(
        "INSERT INTO ring_groups (name, source, members, strategy, member_timeout, position, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, (SELECT coalesce(max(position), -1) + 1 FROM ring_groups), ?6) \
         ON CONFLICT (name) DO UPDATE SET members = excluded.members, strategy = excluded.strategy, \
         member_timeout = excluded.member_timeout, updated_at = excluded.updated_at",
        params![
            group.name,
            SOURCE_WEB,
            group.members.join(","),
            strategy_text(group.strategy),
            group.member_timeout_secs,
            super::unix_now()
        ],
    )?;
    Ok(())
}

/// Deletes a dashboard ring group that no route uses.
pub fn delete_group(conn: &Connection, name: &str) -> Result<(), ChangeError> {
    let Some(g) = groups(conn)?.into_iter().find(|g| g.group.name == name) else {
        return Err(ChangeError::Unknown(name.into()));
    };
    if g.source == SOURCE_CONFIG {
        return Err(ChangeError::FromFile(name.into()));
    }
    if let Some(r) = routes(conn)?.into_iter().find(|r| r.destination == name) {
        return Err(ChangeError::Field(FieldError {
            field: "name".into(),
            message: format!(
                "the route of {} rings this group; change it first",
                r.number
            ),
        }));
    }
    conn.execute("DELETE FROM ring_groups WHERE name = ?1", [name])?;
    Ok(())
}

/// Adds or replaces a dashboard route (the destination must be an extension number or a ring
/// group).
pub fn save_route(conn: &Connection, number: &str, destination: &str) -> Result<(), ChangeError> {
    if let Some(r) = routes(conn)?.into_iter().find(|r| r.number == number) {
        if r.source == SOURCE_CONFIG {
            return Err(ChangeError::FromFile(number.into()));
        }
    }
    let gs: Vec<RingGroupConfig> = groups(conn)?.into_iter().map(|g| g.group).collect();
    check(&gs, &[(number.to_owned(), destination.to_owned())])?;
    conn.execute(
        "INSERT INTO inbound_routes (number, source, destination, position, updated_at) \
         VALUES (?1, ?2, ?3, (SELECT coalesce(max(position), -1) + 1 FROM inbound_routes), ?4) \
         ON CONFLICT (number) DO UPDATE SET destination = excluded.destination, \
         updated_at = excluded.updated_at",
        params![number, SOURCE_WEB, destination, super::unix_now()],
    )?;
    Ok(())
}

/// Deletes a dashboard route.
pub fn delete_route(conn: &Connection, number: &str) -> Result<(), ChangeError> {
    let Some(r) = routes(conn)?.into_iter().find(|r| r.number == number) else {
        return Err(ChangeError::Unknown(number.into()));
    };
    if r.source == SOURCE_CONFIG {
        return Err(ChangeError::FromFile(number.into()));
    }
    conn.execute("DELETE FROM inbound_routes WHERE number = ?1", [number])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, members: &[&str]) -> RingGroupConfig {
        RingGroupConfig {
            name: name.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
            strategy: RingStrategy::All,
            member_timeout_secs: 15,
        }
    }

    #[test]
    fn groups_and_routes_are_checked_seeded_and_edited() {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::migrations::MIGRATIONS
            .to_latest(&mut c)
            .unwrap();
        sync_config(
            &mut c,
            &[group("support", &["100"])],
            &[("+4930123459".into(), "support".into())],
        )
        .unwrap();
        assert!(matches!(
            save_group(&mut c, group("support", &["101"])),
            Err(ChangeError::FromFile(_))
        ));
        let e = save_group(&mut c, group("sales", &["10x"])).unwrap_err();
        assert!(
            matches!(&e, ChangeError::Field(f) if f.field == "members"),
            "{e:?}"
        );
        save_group(&mut c, group("sales", &["100", "101"])).unwrap();
        let e = save_route(&c, "+4930123450", "nobody").unwrap_err();
        assert!(
            matches!(&e, ChangeError::Field(f) if f.field == "destination"),
            "{e:?}"
        );
        let e = save_route(&c, "030123450", "sales").unwrap_err();
        assert!(
            matches!(&e, ChangeError::Field(f) if f.field == "number"),
            "{e:?}"
        );
        save_route(&c, "+4930123450", "sales").unwrap();
        assert!(delete_group(&c, "sales").is_err(), "a route rings it");
        let (gs, rs) = effective(&c).unwrap();
        assert_eq!(gs.len(), 2);
        assert_eq!(gs[1].members, ["100", "101"]);
        assert_eq!(rs.len(), 2);
        delete_route(&c, "+4930123450").unwrap();
        delete_group(&c, "sales").unwrap();
        // Gone from the file: gone.
        sync_config(&mut c, &[], &[]).unwrap();
        assert_eq!(effective(&c).unwrap(), (vec![], vec![]));
    }
}
