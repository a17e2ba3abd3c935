//! DUNDi node settings and mappings in the store (tables `dundi_settings`, `dundi_mappings`,
//! issue 17): the dashboard and the API turn DUNDi on or off, set our listen address, EID,
//! TTL, cache and key times, `${IPADDR}` and contact record, and add, change and delete
//! mappings. One precedence rule, as for trunks: a key written in the file's `[dundi]` section
//! wins (shown read-only "from the configuration file"); the file's `[[dundi.mapping]]` tables
//! are used beside the mappings here. [`effective`] merges both into the node's settings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use crate::config::{DundiConfig, DUNDI_LOCAL_CONTEXT};
use crate::routing::dundi::{self, Eid, Mapping, Pattern, Tech};

use super::dundi::field;
use super::trunks::{FieldError, TrunkChangeError as ChangeError};

/// The node settings the dashboard can set, in the order the page shows them.
pub const NODE_KEYS: [&str; 15] = [
    "enabled",
    "listen",
    "eid",
    "context",
    "ttl",
    "cache_secs",
    "key_ttl_secs",
    "ipaddr",
    "organization",
    "department",
    "locality",
    "state_prov",
    "country",
    "email",
    "phone",
];

/// Stored node settings: key → value as typed (checked); a key without a value is not set here.
pub type NodeValues = BTreeMap<String, String>;

fn positive(key: &str, v: &str) -> Result<u64, FieldError> {
    match v.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(field(key, format!("`{v}` is not a whole number above 0"))),
    }
}

/// Checks one node setting (`value` trimmed, not empty); the value to store.
pub fn check_node_value(key: &str, value: &str) -> Result<String, FieldError> {
    let v = value.trim();
    match key {
        "enabled" => match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "on" | "yes" => Ok("true".into()),
            "false" | "0" | "off" | "no" => Ok("false".into()),
            _ => Err(field(key, format!("`{v}`: expected true or false"))),
        },
        "listen" => v.parse::<SocketAddr>().map(|a| a.to_string()).map_err(|_| {
            field(
                key,
                format!("`{v}` is not an address:port (e.g. `0.0.0.0:4520`)"),
            )
        }),
        "eid" => match v.parse::<Eid>() {
            Ok(e) if !e.is_zero() => Ok(e.to_string()),
            _ => Err(field(
                key,
                format!("`{v}` is not an EID (six hex bytes, e.g. `02:00:00:00:00:01`)"),
            )),
        },
        "ttl" => {
            let n = positive(key, v)?;
            u16::try_from(n)
                .ok()
                .filter(|n| *n <= 255)
                .map(|n| n.to_string())
                .ok_or_else(|| field(key, "at most 255 hops"))
        }
        "cache_secs" | "key_ttl_secs" => {
            let n = positive(key, v)?;
            if n > 7 * 86_400 {
                return Err(field(key, "at most 604800 seconds (a week)"));
            }
            Ok(n.to_string())
        }
        "context" => {
            if v.len() <= 80
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                Ok(v.to_owned())
            } else {
                Err(field(
                    key,
                    format!("`{v}` is not a DUNDi context (letters, digits, - _ .; e.g. `e164`)"),
                ))
            }
        }
        "ipaddr" => v
            .parse::<std::net::IpAddr>()
            .map(|a| a.to_string())
            .map_err(|_| field(key, format!("`{v}` is not an IP address"))),
        "organization" | "department" | "locality" | "state_prov" | "country" | "email"
        | "phone" => {
            if v.len() > 200 || v.chars().any(char::is_control) {
                Err(field(key, "at most 200 characters, no control characters"))
            } else {
                Ok(v.to_owned())
            }
        }
        _ => Err(field(key, "not a DUNDi setting")),
    }
}

/// Checks a set of node settings (an empty value clears the key). `file_keys`: the keys the
/// file sets, which cannot be changed here. The checked values, empty ones kept as "clear".
pub fn check_node(input: &NodeValues, file_keys: &[String]) -> Result<NodeValues, FieldError> {
    let mut out = NodeValues::new();
    for (k, v) in input {
        if !NODE_KEYS.contains(&k.as_str()) {
            return Err(field(k, "not a DUNDi setting"));
        }
        if file_keys.iter().any(|f| f == k) {
            return Err(field(
                k,
                "set in the configuration file's [dundi] section; change it there",
            ));
        }
        let v = v.trim();
        out.insert(
            k.clone(),
            if v.is_empty() {
                String::new()
            } else {
                check_node_value(k, v)?
            },
        );
    }
    Ok(out)
}

/// The stored node settings.
pub fn node(conn: &Connection) -> rusqlite::Result<NodeValues> {
    let mut stmt = conn.prepare("SELECT key, value FROM dundi_settings ORDER BY key")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    rows.collect()
}

/// Stores checked node settings ([`check_node`]): an empty value deletes the key.
pub fn save_node(conn: &Connection, values: &NodeValues) -> rusqlite::Result<()> {
    let now = super::unix_now();
    for (k, v) in values {
        if v.is_empty() {
            conn.execute("DELETE FROM dundi_settings WHERE key = ?1", [k])?;
        } else {
            conn.execute(
                "INSERT INTO dundi_settings (key, value, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(key) DO UPDATE SET value = ?2, updated_at = ?3",
                params![k, v, now],
            )?;
        }
    }
    Ok(())
}

/// A mapping as typed in the form or sent to the API (every field text).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MappingInput {
    /// The DUNDi context peers ask about (`e164`).
    pub context: String,
    /// `${NUMBER}@${IPADDR}:5060` (empty: that).
    pub destination: String,
    /// `SIP` (empty), `PJSIP`, `IAX2`, `H323`.
    pub tech: String,
    /// 0–60000, lower is better (empty: 0).
    pub weight: String,
    /// Comma-separated options (empty: `nounsolicited, nocomunsolicit`).
    pub options: String,
    /// Number patterns answered besides the DIDs (`_4930123XXX`), commas or spaces.
    pub numbers: String,
}

/// The destination when none is typed.
pub const DEFAULT_DESTINATION: &str = "${NUMBER}@${IPADDR}:5060";
/// The options when none are typed (Asterisk's usual ones).
pub const DEFAULT_OPTIONS: &str = "nounsolicited, nocomunsolicit";

/// One stored mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingRow {
    /// 0 before it is stored.
    pub id: i64,
    pub context: String,
    pub destination: String,
    pub tech: Tech,
    pub weight: u16,
    /// Normalised: lower case, `, `-separated.
    pub options: String,
    pub numbers: Vec<String>,
    pub enabled: bool,
}

fn list_of(v: &str) -> Vec<String> {
    v.split([',', ' ', '\t', '\n', '\r'])
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `SIP`, `PJSIP`, `IAX2`, `H323`.
pub fn tech_name(t: Tech) -> &'static str {
    match t {
        Tech::Sip => "SIP",
        Tech::Pjsip => "PJSIP",
        Tech::Iax2 => "IAX2",
        Tech::H323 => "H323",
    }
}

impl MappingInput {
    /// The mapping this input describes, checked; the error names the field at fault.
    pub fn check(&self, enabled: bool) -> Result<MappingRow, FieldError> {
        let context = self.context.trim().to_ascii_lowercase();
        if context.is_empty()
            || context.len() > 64
            || !context
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(field(
                "context",
                "a DUNDi context name (letters, digits, - _ .; e.g. `e164`), at most 64",
            ));
        }
        let destination = match self.destination.trim() {
            "" => DEFAULT_DESTINATION.to_owned(),
            d if d.len() > 200 || d.chars().any(|c| c.is_control() || c == ' ') => {
                return Err(field(
                    "destination",
                    "at most 200 characters without spaces (e.g. `${NUMBER}@${IPADDR}:5060`)",
                ))
            }
            d => d.to_owned(),
        };
        let tech = match self.tech.trim() {
            "" => Tech::Sip,
            t => t
                .parse::<Tech>()
                .map_err(|e| field("tech", e.to_string()))?,
        };
        let weight = match self.weight.trim() {
            "" => 0,
            w => w
                .parse::<u16>()
                .ok()
                .filter(|w| *w <= 60_000)
                .ok_or_else(|| field("weight", format!("`{w}`: a whole number 0–60000")))?,
        };
        let options = match self.options.trim() {
            "" => list_of(DEFAULT_OPTIONS),
            o => list_of(o),
        };
        dundi::parse_mapping_options(&options).map_err(|e| field("options", e.to_string()))?;
        let numbers = list_of(&self.numbers);
        for n in &numbers {
            // A number is digits (and # *); a pattern `_` then digits, X Z N . ! - and [ranges].
            let chars_ok = match n.strip_prefix('_') {
                Some(p) => p
                    .chars()
                    .all(|c| c.is_ascii_digit() || "XZNxzn.!-[]#*".contains(c)),
                None => n
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '#' || c == '*'),
            };
            if n.len() > 64 || !chars_ok || n.parse::<Pattern>().is_err() {
                return Err(field(
                    "numbers",
                    format!("`{n}` is not a number or pattern (e.g. `4930123456`, `_4930123XXX`)"),
                ));
            }
        }
        Ok(MappingRow {
            id: 0,
            context,
            destination,
            tech,
            weight,
            options: options
                .iter()
                .map(|o| o.to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join(", "),
            numbers,
            enabled,
        })
    }
}

impl MappingRow {
    /// The engine's mapping (answering from the office's numbers).
    pub fn mapping(&self) -> Mapping {
        let mut m = Mapping::sip(&self.context, DUNDI_LOCAL_CONTEXT, &self.destination);
        m.tech = self.tech;
        m.weight = self.weight;
        // Checked when stored.
        if let Ok((flags, no_partial)) = dundi::parse_mapping_options(&list_of(&self.options)) {
            m.options = flags;
            m.no_partial = no_partial;
        }
        m
    }

    /// The form's fields for this mapping.
    pub fn input(&self) -> MappingInput {
        MappingInput {
            context: self.context.clone(),
            destination: self.destination.clone(),
            tech: tech_name(self.tech).to_owned(),
            weight: self.weight.to_string(),
            options: self.options.clone(),
            numbers: self.numbers.join(", "),
        }
    }
}

const MAPPING_COLUMNS: &str = "id, context, destination, tech, weight, options, numbers, enabled";

type RawMapping = (i64, String, String, String, i64, String, String, bool);

fn raw_mapping(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawMapping> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
    ))
}

fn mapping_row(r: RawMapping) -> MappingRow {
    let (id, context, destination, tech, weight, options, numbers, enabled) = r;
    MappingRow {
        id,
        context,
        destination,
        tech: tech.parse().unwrap_or_default(),
        weight: u16::try_from(weight).unwrap_or(0),
        options,
        numbers: list_of(&numbers),
        enabled,
    }
}

/// Every stored mapping, oldest first.
pub fn mappings(conn: &Connection) -> rusqlite::Result<Vec<MappingRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {MAPPING_COLUMNS} FROM dundi_mappings ORDER BY id"
    ))?;
    let rows = stmt.query_map([], raw_mapping)?;
    rows.map(|r| r.map(mapping_row)).collect()
}

/// Adds a mapping (`id` 0) or changes the stored mapping `id`; the stored id.
pub fn save_mapping(conn: &Connection, m: &MappingRow) -> Result<i64, ChangeError> {
    let now = super::unix_now();
    let values = params![
        m.context,
        m.destination,
        tech_name(m.tech),
        i64::from(m.weight),
        m.options,
        m.numbers.join(","),
        m.enabled,
        now
    ];
    if m.id == 0 {
        conn.execute(
            "INSERT INTO dundi_mappings (context, destination, tech, weight, options, numbers, \
             enabled, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
            values,
        )?;
        return Ok(conn.last_insert_rowid());
    }
    let n = conn.execute(
        "UPDATE dundi_mappings SET context = ?1, destination = ?2, tech = ?3, weight = ?4, \
         options = ?5, numbers = ?6, enabled = ?7, updated_at = ?8 WHERE id = ?9",
        params![
            m.context,
            m.destination,
            tech_name(m.tech),
            i64::from(m.weight),
            m.options,
            m.numbers.join(","),
            m.enabled,
            now,
            m.id
        ],
    )?;
    if n == 0 {
        return Err(ChangeError::Unknown(format!("mapping {}", m.id)));
    }
    Ok(m.id)
}

/// Deletes the stored mapping `id`.
pub fn delete_mapping(conn: &Connection, id: i64) -> Result<(), ChangeError> {
    let n = conn.execute("DELETE FROM dundi_mappings WHERE id = ?1", [id])?;
    if n == 0 {
        return Err(ChangeError::Unknown(format!("mapping {id}")));
    }
    Ok(())
}

/// What the store holds for DUNDi: node settings, mappings, peers.
#[derive(Debug, Clone, Default)]
pub struct StoredDundi {
    pub node: NodeValues,
    pub mappings: Vec<MappingRow>,
    pub peers: Vec<super::dundi::PeerRow>,
}

/// Reads everything DUNDi keeps in the store.
pub fn read(conn: &Connection) -> rusqlite::Result<StoredDundi> {
    Ok(StoredDundi {
        node: node(conn)?,
        mappings: mappings(conn)?,
        peers: super::dundi::list(conn)?,
    })
}

impl super::Store {
    /// Everything DUNDi keeps in the store ([`read`]).
    pub fn dundi_stored(&self) -> Result<StoredDundi, super::StoreError> {
        Ok(read(&self.conn)?)
    }
}

/// The node's configuration: the file's `[dundi]` with the stored settings for the keys the
/// file does not set, and the stored (enabled) mappings after the file's. Peers stay the
/// file's (the stored ones join through [`super::dundi::peer_settings`]).
pub fn effective(file: &DundiConfig, node: &NodeValues) -> DundiConfig {
    let mut c = file.clone();
    let value = |k: &str| -> Option<&str> {
        if file.file_keys.iter().any(|f| f == k) {
            return None;
        }
        node.get(k).map(String::as_str).filter(|v| !v.is_empty())
    };
    // Values were checked when stored; one that no longer parses is ignored.
    if let Some(v) = value("enabled") {
        c.enabled = v == "true";
    }
    if let Some(a) = value("listen").and_then(|v| v.parse().ok()) {
        c.settings.bind = a;
    }
    if let Some(e) = value("eid").and_then(|v| v.parse().ok()) {
        c.settings.eid = Some(e);
    }
    if let Some(v) = value("context") {
        c.context = v.to_owned();
    }
    if let Some(t) = value("ttl").and_then(|v| v.parse().ok()) {
        c.settings.ttl = t;
    }
    if let Some(s) = value("cache_secs").and_then(|v| v.parse().ok()) {
        c.settings.cache_ttl = Duration::from_secs(s);
    }
    if let Some(s) = value("key_ttl_secs").and_then(|v| v.parse().ok()) {
        c.settings.key_ttl = Duration::from_secs(s);
    }
    if let Some(v) = value("ipaddr") {
        c.settings.ipaddr = v.to_owned();
    }
    let e = &mut c.settings.entity;
    for (k, slot) in [
        ("organization", &mut e.organization),
        ("department", &mut e.department),
        ("locality", &mut e.locality),
        ("state_prov", &mut e.state_prov),
        ("country", &mut e.country),
        ("email", &mut e.email),
        ("phone", &mut e.phone),
    ] {
        if let Some(v) = value(k) {
            *slot = v.to_owned();
        }
    }
    c
}

/// [`effective`] with the stored `mappings` (the enabled ones) added after the file's.
pub fn effective_with_mappings(
    file: &DundiConfig,
    node: &NodeValues,
    mappings: &[MappingRow],
) -> DundiConfig {
    let mut c = effective(file, node);
    for m in mappings.iter().filter(|m| m.enabled) {
        c.settings.mappings.push(m.mapping());
        if !m.numbers.is_empty() {
            c.numbers
                .push((DUNDI_LOCAL_CONTEXT.to_owned(), m.numbers.clone()));
        }
    }
    c
}

/// The DUNDi node as `serve` provisions it, for the command-line tools (`pasarela dundi`,
/// `pasarela route`): the file's `[dundi]` with the store's settings, mappings and enabled
/// peers (their keys written into the keys directory beside the store), and our key pair of the
/// keys directory when the file names none. The file's section alone when there is no store.
pub fn for_tools(
    file: &DundiConfig,
    db: &std::path::Path,
) -> Result<DundiConfig, super::StoreError> {
    if !db.exists() {
        return Ok(file.clone());
    }
    let stored = super::Store::open(db)?.dundi_stored()?;
    let mut c = effective_with_mappings(file, &stored.node, &stored.mappings);
    let dir = dundi::keyring::keys_dir(db);
    if c.enabled && c.settings.private_key.is_none() && dir.exists() {
        dundi::keyring::ensure_our_keys(&mut c.settings, &dir)
            .map_err(|e| super::StoreError::Invalid(format!("DUNDi keys: {e}")))?;
    }
    let file_eids: Vec<Eid> = file.settings.peers.iter().map(|p| p.eid).collect();
    for p in super::dundi::peer_settings(&stored.peers, &file_eids, &dir) {
        c.settings.peers.push(p);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_settings_are_checked_and_the_file_wins() {
        let s = crate::store::Store::open_in_memory().unwrap();
        let conn = &s.conn;
        let mut input = NodeValues::new();
        input.insert("listen".into(), "not an address".into());
        assert_eq!(check_node(&input, &[]).unwrap_err().field, "listen");
        input.insert("listen".into(), "127.0.0.1:4599".into());
        input.insert("enabled".into(), "on".into());
        input.insert("ttl".into(), "300".into());
        assert_eq!(check_node(&input, &[]).unwrap_err().field, "ttl");
        input.insert("ttl".into(), "".into());
        input.insert("eid".into(), "02:00:00:00:00:07".into());
        let file_keys = vec!["eid".to_owned()];
        assert_eq!(check_node(&input, &file_keys).unwrap_err().field, "eid");
        let checked = check_node(&input, &[]).unwrap();
        save_node(conn, &checked).unwrap();
        let stored = node(conn).unwrap();
        assert_eq!(stored.get("enabled").map(String::as_str), Some("true"));
        assert!(!stored.contains_key("ttl"));
        let mut file = DundiConfig::default();
        let c = effective(&file, &stored);
        assert!(c.enabled);
        assert_eq!(c.settings.bind.port(), 4599);
        assert_eq!(c.settings.eid.unwrap().to_string(), "02:00:00:00:00:07");
        // The file's key wins.
        file.file_keys = vec!["enabled".into()];
        assert!(!effective(&file, &stored).enabled);
    }

    #[test]
    fn mappings_are_checked_stored_and_used() {
        let s = crate::store::Store::open_in_memory().unwrap();
        let conn = &s.conn;
        let bad = MappingInput {
            context: "e164".into(),
            tech: "smoke".into(),
            ..MappingInput::default()
        };
        assert_eq!(bad.check(true).unwrap_err().field, "tech");
        let bad = MappingInput {
            context: "".into(),
            ..MappingInput::default()
        };
        assert_eq!(bad.check(true).unwrap_err().field, "context");
        for numbers in ["12a", "_49[1", "_"] {
            let bad = MappingInput {
                context: "e164".into(),
                numbers: numbers.into(),
                ..MappingInput::default()
            };
            assert_eq!(bad.check(true).unwrap_err().field, "numbers", "{numbers}");
        }
        let bad = MappingInput {
            context: "e164".into(),
            options: "loud".into(),
            ..MappingInput::default()
        };
        assert_eq!(bad.check(true).unwrap_err().field, "options");
        let good = MappingInput {
            context: "E164".into(),
            weight: "10".into(),
            numbers: "_4930999XXX".into(),
            ..MappingInput::default()
        };
        let mut row = good.check(true).unwrap();
        assert_eq!(row.destination, DEFAULT_DESTINATION);
        row.id = save_mapping(conn, &row).unwrap();
        assert_eq!(mappings(conn).unwrap(), vec![row.clone()]);
        let c =
            effective_with_mappings(&DundiConfig::default(), &NodeValues::new(), &[row.clone()]);
        assert_eq!(c.settings.mappings.len(), 1);
        assert_eq!(c.settings.mappings[0].context, "e164");
        assert_eq!(c.settings.mappings[0].weight, 10);
        assert_eq!(c.numbers.len(), 1);
        row.enabled = false;
        save_mapping(conn, &row).unwrap();
        let c = effective_with_mappings(
            &DundiConfig::default(),
            &NodeValues::new(),
            &mappings(conn).unwrap(),
        );
        assert!(c.settings.mappings.is_empty());
        delete_mapping(conn, row.id).unwrap();
        assert!(delete_mapping(conn, row.id).is_err());
    }
}
