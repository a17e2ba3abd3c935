//! DUNDi peers in the store (table `dundi_peers`, issue 17): the dashboard and the API add,
//! change, enable, disable and delete them; the configuration file's `[[dundi.peer]]` tables
//! are not copied here but win on an EID (a peer of the file cannot be added or changed here).
//! A peer's public key is kept as PEM text and written to a key file when DUNDi is
//! provisioned ([`crate::routing::dundi::keyring`]).

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::routing::dundi::{self, keyring, Eid, Model, PeerSettings};

use super::trunks::{FieldError, TrunkChangeError as ChangeError};

/// A peer as typed in the dashboard's form or sent to the API (every field text).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerInput {
    /// `02:00:00:00:00:02`.
    pub eid: String,
    /// `IP` or `IP:port` (4520 when not given).
    pub address: String,
    /// `symmetric` (empty), `inbound` or `outbound`.
    pub model: String,
    /// Order of preference (0 first; empty: 0).
    pub order: String,
    /// Contexts asked of the peer, separated by commas or spaces (empty: `e164`).
    pub include: String,
    /// Contexts the peer may ask us about (empty: `e164`).
    pub permit: String,
    /// The peer's public key (PEM); empty: unencrypted (or, when changing a peer, keep it).
    pub key: String,
    /// Qualify every … seconds (empty or 0: off).
    pub qualify: String,
}

/// One stored peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRow {
    pub eid: Eid,
    /// As typed (`IP` or `IP:port`), checked.
    pub address: String,
    pub model: Model,
    pub order: u32,
    pub include: Vec<String>,
    pub permit: Vec<String>,
    /// Normalised PEM ([`keyring::normalise_public_pem`]).
    pub key: Option<String>,
    /// 0: not qualified.
    pub qualify_secs: u32,
    pub enabled: bool,
}

/// A refusal naming the field at fault (also for [`super::dundi_node`]).
pub(super) fn field(name: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: name.to_owned(),
        message: message.into(),
    }
}

fn contexts(v: &str) -> Vec<String> {
    let list: Vec<String> = v
        .split([',', ' ', '\t', '\n', '\r'])
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    if list.is_empty() {
        vec!["e164".to_owned()]
    } else {
        list
    }
}

fn model_name(m: Model) -> &'static str {
    match m {
        Model::Symmetric => "symmetric",
        Model::Inbound => "inbound",
        Model::Outbound => "outbound",
    }
}

impl PeerInput {
    /// The peer this input describes, checked; the error names the field at fault.
    pub fn check(&self, enabled: bool) -> Result<PeerRow, FieldError> {
        let eid: Eid = self.eid.trim().parse().map_err(|_| {
            field(
                "eid",
                format!(
                    "`{}` is not an EID (six hex bytes, e.g. `02:00:00:00:00:02`)",
                    self.eid.trim()
                ),
            )
        })?;
        if eid.is_zero() {
            return Err(field("eid", "the EID 00:00:00:00:00:00 is not a peer"));
        }
        let address = self.address.trim();
        dundi::parse_peer_address(address).map_err(|e| field("address", e.to_string()))?;
        let model = match self.model.trim() {
            "" => Model::Symmetric,
            m => m
                .parse::<Model>()
                .map_err(|e| field("model", e.to_string()))?,
        };
        let order = match self.order.trim() {
            "" => 0,
            o => o
                .parse()
                .map_err(|_| field("order", format!("`{o}` is not a whole number")))?,
        };
        let qualify_secs = match self.qualify.trim() {
            "" => 0,
            q => q
                .parse()
                .map_err(|_| field("qualify", format!("`{q}` is not a whole number of seconds")))?,
        };
        let key = match self.key.trim() {
            "" => None,
            k => Some(keyring::normalise_public_pem(k).map_err(|e| field("key", e.to_string()))?),
        };
        Ok(PeerRow {
            eid,
            address: address.to_owned(),
            model,
            order,
            include: contexts(&self.include),
            permit: contexts(&self.permit),
            key,
            qualify_secs,
            enabled,
        })
    }
}

impl PeerRow {
    /// The engine's settings of this peer; its key is written into `keys_dir`.
    pub fn settings(&self, keys_dir: &Path) -> Result<PeerSettings, keyring::KeyringError> {
        // Checked when stored; a row that no longer parses falls back to the default port.
        let address = dundi::parse_peer_address(&self.address)
            .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 4520)));
        let mut p = PeerSettings::new(self.eid, address, "e164");
        p.model = self.model;
        p.order = self.order;
        p.include = self.include.clone();
        p.permit = self.permit.clone();
        p.qualify = (self.qualify_secs > 0).then(|| Duration::from_secs(self.qualify_secs.into()));
        p.inkey = match &self.key {
            Some(pem) => Some(keyring::write_peer_key(keys_dir, self.eid, pem)?),
            None => None,
        };
        Ok(p)
    }

    /// The form's fields for this peer (the key as stored).
    pub fn input(&self) -> PeerInput {
        PeerInput {
            eid: self.eid.to_string(),
            address: self.address.clone(),
            model: model_name(self.model).to_owned(),
            order: self.order.to_string(),
            include: self.include.join(", "),
            permit: self.permit.join(", "),
            key: self.key.clone().unwrap_or_default(),
            qualify: if self.qualify_secs > 0 {
                self.qualify_secs.to_string()
            } else {
                String::new()
            },
        }
    }

    /// `symmetric`, `inbound` or `outbound`.
    pub fn model_name(&self) -> &'static str {
        model_name(self.model)
    }
}

type RawRow = (
    String,
    String,
    String,
    i64,
    String,
    String,
    Option<String>,
    i64,
    bool,
);

fn row(r: RawRow) -> Option<PeerRow> {
    let (eid, address, model, order, include, permit, key, qualify, enabled) = r;
    let split = |s: &str| -> Vec<String> {
        s.split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect()
    };
    Some(PeerRow {
        eid: eid.parse().ok()?,
        address,
        model: model.parse().unwrap_or_default(),
        order: u32::try_from(order).unwrap_or(0),
        include: split(&include),
        permit: split(&permit),
        key,
        qualify_secs: u32::try_from(qualify).unwrap_or(0),
        enabled,
    })
}

const COLUMNS: &str =
    "eid, address, model, position, include, permit, inkey_pem, qualify_secs, enabled";

fn raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

/// Every stored peer, in order of preference then EID.
pub fn list(conn: &Connection) -> rusqlite::Result<Vec<PeerRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM dundi_peers ORDER BY position, eid"
    ))?;
    let rows = stmt.query_map([], raw)?;
    let mut out = Vec::new();
    for r in rows {
        if let Some(p) = row(r?) {
            out.push(p);
        }
    }
    Ok(out)
}

/// The stored peer `eid`.
pub fn get(conn: &Connection, eid: Eid) -> rusqlite::Result<Option<PeerRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM dundi_peers WHERE eid = ?1"),
            [eid.to_string()],
            raw,
        )
        .optional()?
        .and_then(row))
}

/// Adds (`new`) or changes a peer. `file_peers`: the EIDs of the configuration file's peers
/// (not changed here), `ours`: our own EID. Changing a peer with an empty key keeps its key
/// unless `drop_key`.
pub fn save(
    conn: &Connection,
    mut peer: PeerRow,
    new: bool,
    drop_key: bool,
    file_peers: &[Eid],
    ours: Option<Eid>,
) -> Result<(), ChangeError> {
    let name = peer.eid.to_string();
    if file_peers.contains(&peer.eid) {
        return Err(ChangeError::FromFile(name));
    }
    if Some(peer.eid) == ours {
        return Err(ChangeError::Field(field("eid", "this is our own EID")));
    }
    let existing = get(conn, peer.eid)?;
    match (&existing, new) {
        (Some(_), true) => return Err(ChangeError::Exists(name)),
        (None, false) => return Err(ChangeError::Unknown(name)),
        _ => {}
    }
    if peer.key.is_none() && !drop_key {
        peer.key = existing.and_then(|e| e.key);
    }
    let now = super::unix_now();
    let p = &peer;
    let values = params![
        name,
        p.address,
        p.model_name(),
        i64::from(p.order),
        p.include.join(","),
        p.permit.join(","),
        p.key,
        i64::from(p.qualify_secs),
        p.enabled,
        now
    ];
    if new {
        conn.execute(
            &format!(
                "INSERT INTO dundi_peers ({COLUMNS}, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)"
            ),
            values,
        )?;
    } else {
        conn.execute(
            "UPDATE dundi_peers SET address = ?2, model = ?3, position = ?4, include = ?5, \
             permit = ?6, inkey_pem = ?7, qualify_secs = ?8, enabled = ?9, updated_at = ?10 \
             WHERE eid = ?1",
            values,
        )?;
    }
    Ok(())
}

/// Enables or disables a stored peer.
pub fn set_enabled(conn: &Connection, eid: Eid, enabled: bool) -> Result<(), ChangeError> {
    let n = conn.execute(
        "UPDATE dundi_peers SET enabled = ?2, updated_at = ?3 WHERE eid = ?1",
        params![eid.to_string(), enabled, super::unix_now()],
    )?;
    if n == 0 {
        return Err(ChangeError::Unknown(eid.to_string()));
    }
    Ok(())
}

/// Deletes a stored peer.
pub fn delete(conn: &Connection, eid: Eid) -> Result<(), ChangeError> {
    let n = conn.execute("DELETE FROM dundi_peers WHERE eid = ?1", [eid.to_string()])?;
    if n == 0 {
        return Err(ChangeError::Unknown(eid.to_string()));
    }
    Ok(())
}

impl super::Store {
    /// Every DUNDi peer of the dashboard ([`list`]).
    pub fn dundi_peers(&self) -> Result<Vec<PeerRow>, super::StoreError> {
        Ok(list(&self.conn)?)
    }
}

/// The settings of the enabled stored peers that the file does not name, their keys written
/// into `keys_dir`; a peer whose key cannot be written is left out (and logged).
pub fn peer_settings(rows: &[PeerRow], file_peers: &[Eid], keys_dir: &Path) -> Vec<PeerSettings> {
    rows.iter()
        .filter(|r| r.enabled && !file_peers.contains(&r.eid))
        .filter_map(|r| match r.settings(keys_dir) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(peer = %r.eid, "DUNDi peer not used: {e}");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> crate::store::Store {
        crate::store::Store::open_in_memory().unwrap()
    }

    #[test]
    fn peers_are_checked_stored_and_changed() {
        let s = store();
        let conn = &s.conn;
        let bad = PeerInput {
            eid: "02:00:00".into(),
            address: "127.0.0.2".into(),
            ..PeerInput::default()
        };
        assert_eq!(bad.check(true).unwrap_err().field, "eid");
        let bad = PeerInput {
            eid: "02:00:00:00:00:02".into(),
            address: "peer.example".into(),
            ..PeerInput::default()
        };
        assert_eq!(bad.check(true).unwrap_err().field, "address");
        let bad = PeerInput {
            eid: "02:00:00:00:00:02".into(),
            address: "127.0.0.2".into(),
            key: "-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----".into(),
            ..PeerInput::default()
        };
        assert_eq!(bad.check(true).unwrap_err().field, "key");
        let good = PeerInput {
            eid: "02:00:00:00:00:02".into(),
            address: "127.0.0.2:4521".into(),
            qualify: "5".into(),
            ..PeerInput::default()
        };
        let row = good.check(true).unwrap();
        assert_eq!(row.include, ["e164"]);
        let file: Vec<Eid> = vec!["02:00:00:00:00:09".parse().unwrap()];
        save(conn, row.clone(), true, false, &file, None).unwrap();
        assert!(matches!(
            save(conn, row.clone(), true, false, &file, None),
            Err(ChangeError::Exists(_))
        ));
        let mut of_file = row.clone();
        of_file.eid = file[0];
        assert!(matches!(
            save(conn, of_file, true, false, &file, None),
            Err(ChangeError::FromFile(_))
        ));
        assert_eq!(list(conn).unwrap(), vec![row.clone()]);
        set_enabled(conn, row.eid, false).unwrap();
        assert!(!get(conn, row.eid).unwrap().unwrap().enabled);
        let dir = std::env::temp_dir().join(format!("pasarela-dundi-store-{}", std::process::id()));
        assert!(peer_settings(&list(conn).unwrap(), &[], &dir).is_empty());
        set_enabled(conn, row.eid, true).unwrap();
        let settings = peer_settings(&list(conn).unwrap(), &[], &dir);
        assert_eq!(settings.len(), 1);
        assert_eq!(settings[0].address.port(), 4521);
        assert_eq!(settings[0].qualify, Some(Duration::from_secs(5)));
        delete(conn, row.eid).unwrap();
        assert!(list(conn).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
