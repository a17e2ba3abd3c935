//! The location service (RFC 3261 §10.3): which contacts each extension is registered at, with
//! their q-values and their own expiry. It is sans-IO: time is an input, and every change it
//! makes is returned as a [`BindingChange`] for the store to persist in the background.
//! Authentication is done before a REGISTER reaches it.

use std::collections::HashMap;

use crate::sip::header::{Contact, Header, NameAddr};
use crate::sip::message::Request;
use crate::sip::peer::{Peer, Proto};
use crate::sip::uri::{Params, Uri};

use crate::store::{BindingChange, BindingRow};

/// Limits a registrar applies (from `[sip]`).
#[derive(Debug, Clone, Copy)]
pub struct RegistrarSettings {
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    /// Contacts one extension may have at once.
    pub max_contacts: usize,
}

/// One registered contact of an extension.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The contact URI, as the phone sent it.
    pub uri: Uri,
    /// The contact URI serialised: the key bindings are compared by.
    pub key: String,
    /// q-value in thousandths (1000 = 1.0); `None` when the phone gave none.
    pub q: Option<u16>,
    /// Unix time (seconds) at which the binding lapses.
    pub expires_at: u64,
    pub call_id: String,
    pub cseq: u32,
    /// Where the REGISTER came from: requests to this contact go there (NAT traversal).
    pub source: Peer,
    pub user_agent: Option<String>,
    /// `+sip.instance` (RFC 5626), quotes removed.
    pub instance: Option<String>,
    pub reg_id: Option<u32>,
}

/// Why a REGISTER was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: String,
    /// For 423: the smallest acceptable expiry.
    pub min_expires: Option<u32>,
}

fn refuse(status: u16, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason: reason.into(),
        min_expires: None,
    }
}

/// The outcome of an accepted REGISTER.
#[derive(Debug)]
pub struct Accepted {
    /// `Contact:` values for the 200 OK, one per current binding (`<uri>;expires=N[;q=…]`).
    pub contacts: Vec<NameAddr>,
    /// What changed, for the store.
    pub changes: Vec<BindingChange>,
}

/// All bindings, by extension number (the user part of the address-of-record).
#[derive(Debug)]
pub struct Registrar {
    settings: RegistrarSettings,
    bindings: HashMap<String, Vec<Binding>>,
}

struct Update {
    key: String,
    binding: Option<Binding>,
}

impl Registrar {
    pub fn new(settings: RegistrarSettings) -> Registrar {
        Registrar {
            settings,
            bindings: HashMap::new(),
        }
    }

    /// Restores bindings loaded from the store (already filtered for expiry by the store).
    pub fn restore(&mut self, rows: Vec<BindingRow>) -> usize {
        let mut n = 0;
        for row in rows {
            match binding_from_row(&row) {
                Some(b) => {
                    self.bindings.entry(row.aor.clone()).or_default().push(b);
                    n += 1;
                }
                None => {
                    tracing::warn!(aor = %row.aor, contact = %row.contact, "skipping unreadable stored binding")
                }
            }
        }
        n
    }

    /// Current, unexpired bindings of an extension, highest q first.
    pub fn lookup(&self, aor: &str, now: u64) -> Vec<&Binding> {
        let mut v: Vec<&Binding> = self
            .bindings
            .get(aor)
            .map(|bs| bs.iter().filter(|b| b.expires_at > now).collect())
            .unwrap_or_default();
        v.sort_by_key(|b| std::cmp::Reverse(b.q.unwrap_or(1000)));
        v
    }

    /// Every unexpired binding with its extension, ordered by extension.
    pub fn all(&self, now: u64) -> impl Iterator<Item = (&str, &Binding)> {
        let mut v: Vec<(&str, &Binding)> = self
            .bindings
            .iter()
            .flat_map(|(aor, bs)| bs.iter().map(move |b| (aor.as_str(), b)))
            .filter(|(_, b)| b.expires_at > now)
            .collect();
        v.sort_by(|a, b| a.0.cmp(b.0).then(a.1.key.cmp(&b.1.key)));
        v.into_iter()
    }

    /// Number of live bindings (all extensions).
    pub fn len(&self) -> usize {
        self.bindings.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets expired bindings and returns their removal for the store.
    pub fn purge(&mut self, now: u64) -> Vec<BindingChange> {
        let mut removed = Vec::new();
        self.bindings.retain(|aor, bs| {
            bs.retain(|b| {
                let live = b.expires_at > now;
                if !live {
                    removed.push(BindingChange::Remove {
                        aor: aor.clone(),
                        contact: b.key.clone(),
                    });
                }
                live
            });
            !bs.is_empty()
        });
        removed
    }

    /// Processes an authenticated REGISTER for extension `aor` (RFC 3261 §10.3 steps 6–8).
    pub fn register(
        &mut self,
        now: u64,
        aor: &str,
        req: &Request,
        source: Peer,
    ) -> Result<Accepted, Refusal> {
        let call_id = req.headers.call_id().unwrap_or_default().to_owned();
        let cseq = req.headers.cseq().map_or(0, |c| c.seq);
        let header_expires = req.headers.expires();
        let contacts: Vec<&Contact> = req.headers.contacts().collect();
        let user_agent = req.headers.get("User-Agent").map(str::to_owned);
        let existing = self
            .bindings
            .get(aor)
            .map(Vec::as_slice)
            .unwrap_or_default();

        let mut updates: Vec<Update> = Vec::new();
        let mut remove_all = false;
        if contacts.iter().any(|c| matches!(c, Contact::Star)) {
            if contacts.len() != 1 || header_expires != Some(0) {
                return Err(refuse(
                    400,
                    "Contact * needs Expires: 0 and no other Contact",
                ));
            }
            for b in existing {
                if b.call_id == call_id && cseq <= b.cseq {
                    return Err(refuse(500, "Out of order REGISTER (CSeq not increasing)"));
                }
            }
            remove_all = true;
        } else {
            for contact in &contacts {
                let Contact::Addr(addr) = contact else {
                    continue;
                };
                let key = addr.uri.to_string();
                let expires = match addr.params.value("expires") {
                    Some(v) => parse_expires(v)
                        .ok_or_else(|| refuse(400, "Bad expires parameter in Contact"))?,
                    None => header_expires.unwrap_or(self.settings.default_expires),
                };
                if expires != 0 && expires < self.settings.min_expires {
                    return Err(Refusal {
                        status: 423,
                        reason: "Interval Too Brief".into(),
                        min_expires: Some(self.settings.min_expires),
                    });
                }
                let expires = expires.min(self.settings.max_expires);
                if let Some(old) = existing.iter().find(|b| b.key == key) {
                    if old.call_id == call_id && cseq <= old.cseq {
                        return Err(refuse(500, "Out of order REGISTER (CSeq not increasing)"));
                    }
                }
                let binding = (expires > 0)
                    .then(|| {
                        new_binding(
                            addr,
                            key.clone(),
                            now,
                            expires,
                            &call_id,
                            cseq,
                            source,
                            &user_agent,
                        )
                    })
                    .transpose()?;
                updates.retain(|u| u.key != key);
                updates.push(Update { key, binding });
            }
        }

        // Apply atomically now that every contact was accepted.
        let mut changes = Vec::new();
        let list = self.bindings.entry(aor.to_owned()).or_default();
        if remove_all {
            list.clear();
            changes.push(BindingChange::RemoveAll {
                aor: aor.to_owned(),
            });
        }
        for u in updates {
            let pos = list.iter().position(|b| b.key == u.key);
            match (u.binding, pos) {
                (Some(b), Some(i)) => {
                    changes.push(BindingChange::Upsert(row_from_binding(aor, &b, now)));
                    list[i] = b;
                }
                (Some(b), None) => {
                    // An RFC 5626 instance re-registering from a new address replaces its old binding.
                    if let (Some(inst), Some(reg)) = (&b.instance, b.reg_id) {
                        if let Some(i) = list.iter().position(|o| {
                            o.instance.as_ref() == Some(inst) && o.reg_id == Some(reg)
                        }) {
                            changes.push(BindingChange::Remove {
                                aor: aor.to_owned(),
                                contact: list[i].key.clone(),
                            });
                            list.remove(i);
                        }
                    }
                    changes.push(BindingChange::Upsert(row_from_binding(aor, &b, now)));
                    list.push(b);
                }
                (None, Some(i)) => {
                    changes.push(BindingChange::Remove {
                        aor: aor.to_owned(),
                        contact: u.key,
                    });
                    list.remove(i);
                }
                (None, None) => {}
            }
        }
        list.retain(|b| b.expires_at > now);
        if list.len() > self.settings.max_contacts {
            // Keep the newest registrations; the oldest ones lapse early.
            list.sort_by_key(|b| std::cmp::Reverse(b.expires_at));
            for b in list.drain(self.settings.max_contacts..) {
                changes.push(BindingChange::Remove {
                    aor: aor.to_owned(),
                    contact: b.key,
                });
            }
        }
        let contacts = list.iter().map(|b| contact_value(b, now)).collect();
        if list.is_empty() {
            self.bindings.remove(aor);
        }
        Ok(Accepted { contacts, changes })
    }
}

fn parse_expires(v: &str) -> Option<u32> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(
        v.parse::<u64>()
            .map_or(u32::MAX, |n| n.min(u32::MAX as u64) as u32),
    )
}

/// Parses a q-value ("0", "0.5", "1.000") into thousandths.
fn parse_q(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_val: u16 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<3}").parse().ok()?
    };
    match int {
        "0" => Some(frac_val),
        "1" if frac_val == 0 => Some(1000),
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)]
fn new_binding(
    addr: &NameAddr,
    key: String,
    now: u64,
    expires: u32,
    call_id: &str,
    cseq: u32,
    source: Peer,
    user_agent: &Option<String>,
) -> Result<Binding, Refusal> {
    let q = match addr.params.value("q") {
        Some(v) => Some(parse_q(v).ok_or_else(|| refuse(400, "Bad q-value in Contact"))?),
        None => None,
    };
    if !matches!(addr.uri, Uri::Sip(_)) {
        return Err(refuse(400, "Contact is not a SIP URI"));
    }
    let instance = addr
        .params
        .value("+sip.instance")
        .map(|v| v.trim_matches('"').to_owned());
    let reg_id = addr.params.value("reg-id").and_then(|v| v.parse().ok());
    Ok(Binding {
        uri: addr.uri.clone(),
        key,
        q,
        expires_at: now + u64::from(expires),
        call_id: call_id.to_owned(),
        cseq,
        source,
        user_agent: user_agent.clone(),
        instance,
        reg_id,
    })
}

fn contact_value(b: &Binding, now: u64) -> NameAddr {
    let mut params = Params::new();
    params.set(
        "expires",
        Some(&b.expires_at.saturating_sub(now).to_string()),
    );
    if let Some(q) = b.q {
        params.set("q", Some(&format_q(q)));
    }
    if let Some(inst) = &b.instance {
        params.set("+sip.instance", Some(&format!("\"{inst}\"")));
    }
    if let Some(r) = b.reg_id {
        params.set("reg-id", Some(&r.to_string()));
    }
    NameAddr {
        display: None,
        uri: b.uri.clone(),
        params,
    }
}

fn format_q(q: u16) -> String {
    if q >= 1000 {
        "1".into()
    } else {
        let s = format!("0.{q:03}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn row_from_binding(aor: &str, b: &Binding, now: u64) -> BindingRow {
    BindingRow {
        aor: aor.to_owned(),
        contact: b.key.clone(),
        q: f32::from(b.q.unwrap_or(1000)) / 1000.0,
        expires_at: b.expires_at as i64,
        call_id: b.call_id.clone(),
        cseq: b.cseq,
        transport: b.source.proto.to_string(),
        source: b.source.remote.to_string(),
        local: b.source.local.to_string(),
        user_agent: b.user_agent.clone(),
        instance: b.instance.clone(),
        reg_id: b.reg_id,
        updated_at: now as i64,
    }
}

fn binding_from_row(row: &BindingRow) -> Option<Binding> {
    let uri = Uri::parse(&row.contact).ok()?;
    let proto = match row.transport.as_str() {
        "udp" => Proto::Udp,
        "tcp" => Proto::Tcp,
        "tls" => Proto::Tls,
        _ => return None,
    };
    let q = (row.q - 1.0).abs() > f32::EPSILON;
    Some(Binding {
        key: uri.to_string(),
        uri,
        q: q.then(|| (row.q.clamp(0.0, 1.0) * 1000.0).round() as u16),
        expires_at: u64::try_from(row.expires_at).ok()?,
        call_id: row.call_id.clone(),
        cseq: row.cseq,
        source: Peer {
            proto,
            remote: row.source.parse().ok()?,
            local: row.local.parse().ok()?,
        },
        user_agent: row.user_agent.clone(),
        instance: row.instance.clone(),
        reg_id: row.reg_id,
    })
}

/// The Contact header fields of an accepted REGISTER's 200 OK.
pub fn contact_headers(contacts: Vec<NameAddr>) -> impl Iterator<Item = Header> {
    contacts
        .into_iter()
        .map(|c| Header::Contact(Contact::Addr(c)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;
    use crate::sip::parse::{parse_message, Framing, Limits};

    fn settings() -> RegistrarSettings {
        RegistrarSettings {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 10,
        }
    }

    fn peer() -> Peer {
        Peer {
            proto: Proto::Udp,
            remote: "127.0.0.1:5062".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
        }
    }

    fn register(contacts: &str, expires: Option<u32>, call_id: &str, cseq: u32) -> Request {
        let mut s = format!(
            "REGISTER sip:office.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK{cseq}\r\n\
             From: <sip:100@office.test>;tag=a\r\nTo: <sip:100@office.test>\r\nCall-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n"
        );
        if !contacts.is_empty() {
            s.push_str(&format!("Contact: {contacts}\r\n"));
        }
        if let Some(e) = expires {
            s.push_str(&format!("Expires: {e}\r\n"));
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        match parse_message(bytes::Bytes::from(s), Framing::Datagram, &Limits::default()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn several_contacts_with_q_and_own_expiry() {
        let mut r = Registrar::new(settings());
        let req = register(
            "<sip:100@10.0.0.1>;q=0.5;expires=120, <sip:100@10.0.0.2>;q=1",
            Some(600),
            "c1",
            1,
        );
        let acc = r.register(1000, "100", &req, peer()).unwrap();
        assert_eq!(acc.contacts.len(), 2);
        assert_eq!(acc.changes.len(), 2);
        let l = r.lookup("100", 1000);
        assert_eq!(l[0].key, "sip:100@10.0.0.2");
        assert_eq!(l[1].q, Some(500));
        assert!(acc
            .contacts
            .iter()
            .any(|c| c.to_string() == "<sip:100@10.0.0.1>;expires=120;q=0.5"));
        // The 120 s contact lapses first.
        assert_eq!(r.lookup("100", 1121).len(), 1);
        assert_eq!(r.purge(1121).len(), 1);
    }

    #[test]
    fn refresh_query_remove_and_star() {
        let mut r = Registrar::new(settings());
        r.register(
            0,
            "100",
            &register("<sip:100@10.0.0.1>", Some(300), "c1", 1),
            peer(),
        )
        .unwrap();
        // Query: no Contact lists the bindings.
        let acc = r
            .register(10, "100", &register("", None, "c9", 1), peer())
            .unwrap();
        assert_eq!(
            acc.contacts[0].to_string(),
            "<sip:100@10.0.0.1>;expires=290"
        );
        assert!(acc.changes.is_empty());
        // Out of order.
        let e = r
            .register(
                10,
                "100",
                &register("<sip:100@10.0.0.1>", Some(300), "c1", 1),
                peer(),
            )
            .unwrap_err();
        assert_eq!(e.status, 500);
        // Too brief.
        let e = r
            .register(
                10,
                "100",
                &register("<sip:100@10.0.0.1>", Some(30), "c1", 2),
                peer(),
            )
            .unwrap_err();
        assert_eq!((e.status, e.min_expires), (423, Some(60)));
        // Capped at max_expires.
        let acc = r
            .register(
                10,
                "100",
                &register("<sip:100@10.0.0.1>", Some(99999), "c1", 3),
                peer(),
            )
            .unwrap();
        assert_eq!(
            acc.contacts[0].to_string(),
            "<sip:100@10.0.0.1>;expires=3600"
        );
        // Expires 0 removes one.
        r.register(
            10,
            "100",
            &register("<sip:100@10.0.0.3>", None, "c2", 1),
            peer(),
        )
        .unwrap();
        let acc = r
            .register(
                11,
                "100",
                &register("<sip:100@10.0.0.3>", Some(0), "c2", 2),
                peer(),
            )
            .unwrap();
        assert_eq!(acc.contacts.len(), 1);
        // Star needs Expires: 0.
        assert_eq!(
            r.register(12, "100", &register("*", None, "c3", 1), peer())
                .unwrap_err()
                .status,
            400
        );
        let acc = r
            .register(12, "100", &register("*", Some(0), "c3", 1), peer())
            .unwrap();
        assert!(acc.contacts.is_empty());
        assert!(matches!(acc.changes[0], BindingChange::RemoveAll { .. }));
        assert!(r.is_empty());
    }

    #[test]
    fn rows_round_trip() {
        let mut r = Registrar::new(settings());
        let acc = r
            .register(
                0,
                "100",
                &register("<sip:100@10.0.0.1;transport=tcp>;q=0.7", Some(300), "c1", 1),
                peer(),
            )
            .unwrap();
        let rows: Vec<BindingRow> = acc
            .changes
            .into_iter()
            .filter_map(|c| match c {
                BindingChange::Upsert(row) => Some(row),
                _ => None,
            })
            .collect();
        let mut r2 = Registrar::new(settings());
        assert_eq!(r2.restore(rows), 1);
        assert_eq!(r2.lookup("100", 1), r.lookup("100", 1));
    }

    #[test]
    fn q_values() {
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("0.333"), Some(333));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(parse_q("0.1234"), None);
        assert_eq!(format_q(500), "0.5");
        assert_eq!(format_q(333), "0.333");
    }
}
