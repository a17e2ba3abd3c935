//! The text messages in SQLite (tables of migration 0013): received PDUs kept before the modem
//! deletes them (one row per distinct PDU, so a PDU read twice is stored once), the messages
//! they become, messages between extensions, and outgoing SMS with their parts and status
//! reports. Its own connection with `synchronous = FULL`: a message the modem is told to
//! forget is on disk, not only in the write-ahead log's page cache.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

/// Errors of the message store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("message store: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// A message as listed (inbox, outbox, API).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MessageRow {
    pub id: i64,
    /// `sms_in`, `sms_out` or `local`.
    pub kind: String,
    pub line: Option<String>,
    /// The outside number, or the sending extension (`local`).
    pub peer: String,
    /// The extensions it is for, or the one that sent it.
    pub extension: String,
    pub body: String,
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub parts: i64,
    pub encoding: Option<String>,
    pub is_read: bool,
    pub error: Option<String>,
    pub cost: Option<f64>,
}

/// One conversation (all messages with one peer).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Conversation {
    pub peer: String,
    pub last_at: i64,
    pub count: i64,
    pub unread: i64,
    pub last_body: String,
}

/// A received SMS whose e-mail is due.
#[derive(Debug, Clone, PartialEq)]
pub struct MailDue {
    pub id: i64,
    pub line: String,
    pub sender: String,
    /// The line's extensions (comma-separated).
    pub extensions: String,
    pub body: String,
    pub received_at: i64,
    pub attempts: i64,
}

/// A USSD message from a line (network-initiated, or an answer to a code).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UssdEvent {
    pub id: i64,
    pub line: String,
    /// `network` (nobody asked) or `answer`.
    pub origin: String,
    /// `+CUSD` `<m>`: 0 done, 1 a reply is awaited, 2 ended by the network, 4 not supported.
    pub status: i64,
    /// Whether the network waits for a reply (`status` 1).
    pub awaits_reply: bool,
    pub text: String,
    pub received_at: i64,
}

/// An outgoing SMS due to be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct DueSms {
    pub id: i64,
    pub line: Option<String>,
    pub number: String,
    pub body: String,
    pub reference: i64,
    pub attempts: i64,
    /// Parts already accepted by the network (not to send again).
    pub sent_parts: Vec<i64>,
}

/// A message waiting for a phone.
#[derive(Debug, Clone, PartialEq)]
pub struct Undelivered {
    pub id: i64,
    pub from: String,
    pub to: Vec<String>,
    pub body: String,
}

/// The connection.
pub struct SmsStore {
    conn: Connection,
}

const COLUMNS: &str = "id, kind, line, peer, extension, body, status, created_at, updated_at, \
                       parts, encoding, is_read, error, cost";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRow> {
    Ok(MessageRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        line: r.get(2)?,
        peer: r.get(3)?,
        extension: r.get(4)?,
        body: r.get(5)?,
        status: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
        parts: r.get(9)?,
        encoding: r.get(10)?,
        is_read: r.get::<_, i64>(11)? != 0,
        error: r.get(12)?,
        cost: r.get(13)?,
    })
}

impl SmsStore {
    /// Opens the (already migrated) database.
    pub fn open(path: &Path) -> Result<SmsStore, StoreError> {
        let conn = Connection::open(path)?;
        super::connection::configure_writer(&conn, super::connection::Durability::Power)?;
        Ok(SmsStore { conn })
    }

    /// Keeps a PDU read on `line`; `None` when the same PDU is stored already.
    pub fn insert_part(&self, line: &str, pdu: &str, now: i64) -> Result<Option<i64>, StoreError> {
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO sms_parts (line, pdu, received_at) VALUES (?1, ?2, ?3)",
            params![line, pdu, now],
        )?;
        Ok((n == 1).then(|| self.conn.last_insert_rowid()))
    }

    /// PDUs not yet part of a message: (id, line, pdu).
    pub fn loose_parts(&self) -> Result<Vec<(i64, String, String)>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT id, line, pdu FROM sms_parts WHERE message_id IS NULL ORDER BY id")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks PDUs as handled without a message (status reports, undecodable).
    pub fn drop_parts(&self, ids: &[i64]) -> Result<(), StoreError> {
        for id in ids {
            self.conn
                .execute("DELETE FROM sms_parts WHERE id = ?1", [id])?;
        }
        Ok(())
    }

    /// A received SMS made of `part_ids`, for the phones of `extensions` (and to be mailed
    /// when `mail`); one transaction.
    #[allow(clippy::too_many_arguments)]
    pub fn store_received(
        &mut self,
        line: &str,
        sender: &str,
        extensions: &[String],
        body: &str,
        encoding: &str,
        part_ids: &[i64],
        mail: bool,
        now: i64,
    ) -> Result<i64, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO messages (kind, line, peer, extension, body, status, created_at, \
             updated_at, parts, encoding, mail_status, mail_next_at) \
             VALUES ('sms_in', ?1, ?2, ?3, ?4, 'pending', ?5, ?5, ?6, ?7, ?8, ?9)",
            params![
                line,
                sender,
                extensions.join(","),
                body,
                now,
                part_ids.len() as i64,
                encoding,
                mail.then_some("pending"),
                mail.then_some(now)
            ],
        )?;
        let id = tx.last_insert_rowid();
        for p in part_ids {
            tx.execute(
                "UPDATE sms_parts SET message_id = ?1 WHERE id = ?2",
                params![id, p],
            )?;
        }
        tx.commit()?;
        Ok(id)
    }

    /// A message from extension `from` to extension `to`.
    pub fn store_local(
        &self,
        from: &str,
        to: &str,
        body: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        self.conn.execute(
            "INSERT INTO messages (kind, peer, extension, body, status, created_at, updated_at) \
             VALUES ('local', ?1, ?2, ?3, 'pending', ?4, ?4)",
            params![from, to, body, now],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// An SMS to send from extension `ext` to `number` (`status` `queued`, or `failed` with
    /// `error` when it was refused).
    #[allow(clippy::too_many_arguments)]
    pub fn store_outgoing(
        &self,
        ext: &str,
        number: &str,
        body: &str,
        parts: usize,
        encoding: &str,
        reference: u16,
        cost: Option<f64>,
        error: Option<&str>,
        now: i64,
    ) -> Result<i64, StoreError> {
        let status = if error.is_some() { "failed" } else { "queued" };
        self.conn.execute(
            "INSERT INTO messages (kind, peer, extension, body, status, created_at, updated_at, \
             parts, encoding, reference, cost, error, is_read) \
             VALUES ('sms_out', ?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9, ?10, 1)",
            params![
                number,
                ext,
                body,
                status,
                now,
                parts as i64,
                encoding,
                reference,
                cost,
                error
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Messages a phone took.
    pub fn mark_delivered(&self, id: i64, now: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE messages SET status = 'delivered', updated_at = ?2 WHERE id = ?1 \
             AND status = 'pending'",
            params![id, now],
        )?;
        Ok(())
    }

    /// Messages waiting for a phone.
    pub fn undelivered(&self) -> Result<Vec<Undelivered>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT id, peer, extension, body FROM messages \
             WHERE status = 'pending' AND kind IN ('sms_in', 'local') ORDER BY id",
        )?;
        let rows = st.query_map([], |r| {
            let to: String = r.get(2)?;
            Ok(Undelivered {
                id: r.get(0)?,
                from: r.get(1)?,
                to: to
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
                body: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Outgoing SMS due now.
    pub fn due_outgoing(&self, now: i64) -> Result<Vec<DueSms>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT id, line, peer, body, COALESCE(reference, 0), attempts FROM messages \
             WHERE kind = 'sms_out' AND status = 'queued' \
             AND COALESCE(next_try_at, 0) <= ?1 ORDER BY id",
        )?;
        let rows: Vec<(i64, Option<String>, String, String, i64, i64)> = st
            .query_map([now], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for (id, line, number, body, reference, attempts) in rows {
            let mut st = self.conn.prepare(
                "SELECT seq FROM sms_out_parts WHERE message_id = ?1 AND status != 'pending'",
            )?;
            let sent_parts = st
                .query_map([id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            out.push(DueSms {
                id,
                line,
                number,
                body,
                reference,
                attempts,
                sent_parts,
            });
        }
        Ok(out)
    }

    /// The attempt at `id` is under way on `line`: not due again until `retry_at`.
    pub fn sending(&self, id: i64, line: &str, retry_at: i64, now: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE messages SET line = ?2, attempts = attempts + 1, next_try_at = ?3, \
             updated_at = ?4 WHERE id = ?1",
            params![id, line, retry_at, now],
        )?;
        Ok(())
    }

    /// Part `seq` of `id` was accepted by the network with reference `mr`; the message is
    /// `sent` once all its parts are.
    pub fn part_sent(&self, id: i64, seq: i64, mr: u8, now: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO sms_out_parts (message_id, seq, mr, status) VALUES (?1, ?2, ?3, 'sent') \
             ON CONFLICT (message_id, seq) DO UPDATE SET mr = ?3, status = 'sent'",
            params![id, seq, mr],
        )?;
        self.conn.execute(
            "UPDATE messages SET status = 'sent', next_try_at = NULL, error = NULL, \
             updated_at = ?2 WHERE id = ?1 AND status = 'queued' AND parts <= \
             (SELECT COUNT(*) FROM sms_out_parts WHERE message_id = ?1 AND status != 'pending')",
            params![id, now],
        )?;
        Ok(())
    }

    /// An attempt failed: tried again at `retry_at`, or `failed` for good.
    pub fn attempt_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<i64>,
        now: i64,
    ) -> Result<(), StoreError> {
        let status = if retry_at.is_some() {
            "queued"
        } else {
            "failed"
        };
        self.conn.execute(
            "UPDATE messages SET status = ?2, error = ?3, next_try_at = ?4, updated_at = ?5 \
             WHERE id = ?1 AND status = 'queued'",
            params![id, status, error, retry_at, now],
        )?;
        Ok(())
    }

    /// A status report for message reference `mr` on `line`: the newest sent part with that
    /// reference takes it; the message is `delivered` when all its parts are, `failed` when
    /// one failed. Returns the message id.
    pub fn status_report(
        &self,
        line: &str,
        mr: u8,
        delivered: bool,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let found: Option<(i64, i64)> = self
            .conn
            .query_row(
                "SELECT p.message_id, p.seq FROM sms_out_parts p JOIN messages m \
                 ON m.id = p.message_id WHERE p.mr = ?1 AND p.status = 'sent' \
                 AND m.line = ?2 ORDER BY p.message_id DESC LIMIT 1",
                params![mr, line],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((id, seq)) = found else {
            return Ok(None);
        };
        let part_status = if delivered { "delivered" } else { "failed" };
        self.conn.execute(
            "UPDATE sms_out_parts SET status = ?3 WHERE message_id = ?1 AND seq = ?2",
            params![id, seq, part_status],
        )?;
        if delivered {
            self.conn.execute(
                "UPDATE messages SET status = 'delivered', updated_at = ?2 WHERE id = ?1 \
                 AND NOT EXISTS (SELECT 1 FROM sms_out_parts WHERE message_id = ?1 \
                 AND status != 'delivered') AND parts <= (SELECT COUNT(*) FROM sms_out_parts \
                 WHERE message_id = ?1)",
                params![id, now],
            )?;
        } else {
            self.conn.execute(
                "UPDATE messages SET status = 'failed', error = 'not delivered (status report)', \
                 updated_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
        }
        Ok(Some(id))
    }

    /// SMS sent by `ext` since `since`, for its hourly limit.
    pub fn sent_since(&self, ext: &str, since: i64) -> Result<i64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT COUNT(*) FROM messages WHERE kind = 'sms_out' AND extension = ?1 \
             AND created_at >= ?2 AND status != 'failed'",
            params![ext, since],
            |r| r.get(0),
        )?)
    }

    /// The newest messages, optionally of one kind.
    pub fn list(&self, kind: Option<&str>, limit: i64) -> Result<Vec<MessageRow>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM messages WHERE (?1 IS NULL OR kind = ?1) \
             ORDER BY id DESC LIMIT ?2"
        );
        let mut st = self.conn.prepare(&sql)?;
        let rows = st.query_map(params![kind, limit], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Conversations by outside number (or sending extension), newest first; only those on
    /// `line` when given.
    pub fn conversations(&self, line: Option<&str>) -> Result<Vec<Conversation>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT peer, MAX(created_at), COUNT(*), SUM(is_read = 0), \
             (SELECT body FROM messages m2 WHERE m2.peer = m.peer \
              AND (?1 IS NULL OR m2.line = ?1) ORDER BY id DESC LIMIT 1) \
             FROM messages m WHERE (?1 IS NULL OR line = ?1) GROUP BY peer ORDER BY MAX(id) DESC",
        )?;
        let rows = st.query_map([line], |r| {
            Ok(Conversation {
                peer: r.get(0)?,
                last_at: r.get(1)?,
                count: r.get(2)?,
                unread: r.get(3)?,
                last_body: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The lines that have messages: (line, messages, unread), by name.
    pub fn lines(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT line, COUNT(*), SUM(is_read = 0) FROM messages WHERE line IS NOT NULL \
             GROUP BY line ORDER BY line",
        )?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The messages with `peer`, oldest first.
    pub fn thread(&self, peer: &str) -> Result<Vec<MessageRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM messages WHERE peer = ?1 ORDER BY id");
        let mut st = self.conn.prepare(&sql)?;
        let rows = st.query_map([peer], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks the messages with `peer` read.
    pub fn mark_read(&self, peer: &str) -> Result<(), StoreError> {
        self.conn
            .execute("UPDATE messages SET is_read = 1 WHERE peer = ?1", [peer])?;
        Ok(())
    }

    /// Unread messages.
    pub fn unread(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM messages WHERE is_read = 0", [], |r| {
                r.get(0)
            })?)
    }

    /// Deletes a message (and what is kept of its parts); whether it existed.
    pub fn delete(&mut self, id: i64) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM sms_parts WHERE message_id = ?1", [id])?;
        tx.execute("DELETE FROM sms_out_parts WHERE message_id = ?1", [id])?;
        let n = tx.execute("DELETE FROM messages WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(n == 1)
    }

    /// Received SMS whose e-mail is due at `now`, oldest first.
    pub fn mail_due(&self, now: i64, limit: i64) -> Result<Vec<MailDue>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT id, COALESCE(line, ''), peer, extension, body, created_at, mail_attempts \
             FROM messages WHERE mail_status = 'pending' AND COALESCE(mail_next_at, 0) <= ?1 \
             ORDER BY id LIMIT ?2",
        )?;
        let rows = st.query_map(params![now, limit], |r| {
            Ok(MailDue {
                id: r.get(0)?,
                line: r.get(1)?,
                sender: r.get(2)?,
                extensions: r.get(3)?,
                body: r.get(4)?,
                received_at: r.get(5)?,
                attempts: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When the next pending e-mail is due.
    pub fn mail_next(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.conn.query_row(
            "SELECT MIN(COALESCE(mail_next_at, 0)) FROM messages WHERE mail_status = 'pending'",
            [],
            |r| r.get(0),
        )?)
    }

    /// The e-mail of message `id` was accepted by the SMTP server.
    pub fn mail_sent(&self, id: i64, now: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE messages SET mail_status = 'sent', mail_attempts = mail_attempts + 1, \
             mail_next_at = NULL, mail_error = NULL, updated_at = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        Ok(())
    }

    /// Mailing message `id` failed: tried again at `retry_at`, or `failed` for good.
    pub fn mail_failed(
        &self,
        id: i64,
        error: &str,
        retry_at: Option<i64>,
        now: i64,
    ) -> Result<(), StoreError> {
        let status = if retry_at.is_some() {
            "pending"
        } else {
            "failed"
        };
        self.conn.execute(
            "UPDATE messages SET mail_status = ?2, mail_attempts = mail_attempts + 1, \
             mail_next_at = ?3, mail_error = ?4, updated_at = ?5 WHERE id = ?1",
            params![id, status, retry_at, error, now],
        )?;
        Ok(())
    }

    /// Keeps a USSD message of `line` (`origin` `network` or `answer`).
    pub fn ussd_event(
        &self,
        line: &str,
        origin: &str,
        status: u8,
        text: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        self.conn.execute(
            "INSERT INTO ussd_events (line, origin, status, text, received_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![line, origin, status, text, now],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The newest USSD messages, optionally of one origin.
    pub fn ussd_events(
        &self,
        origin: Option<&str>,
        limit: i64,
    ) -> Result<Vec<UssdEvent>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT id, line, origin, status, text, received_at FROM ussd_events \
             WHERE (?1 IS NULL OR origin = ?1) ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = st.query_map(params![origin, limit], |r| {
            let status: i64 = r.get(3)?;
            Ok(UssdEvent {
                id: r.get(0)?,
                line: r.get(1)?,
                origin: r.get(2)?,
                status,
                awaits_reply: status == 1,
                text: r.get(4)?,
                received_at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One message.
    pub fn get(&self, id: i64) -> Result<Option<MessageRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM messages WHERE id = ?1");
        Ok(self.conn.query_row(&sql, [id], row).optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (SmsStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        crate::store::Store::open(&path).unwrap();
        (SmsStore::open(&path).unwrap(), dir)
    }

    #[test]
    fn parts_are_stored_once_and_become_a_message() {
        let (mut s, _d) = store();
        let a = s.insert_part("gsm1", "00AA", 1).unwrap().unwrap();
        assert_eq!(s.insert_part("gsm1", "00AA", 2).unwrap(), None);
        let b = s.insert_part("gsm1", "00BB", 2).unwrap().unwrap();
        assert_eq!(s.loose_parts().unwrap().len(), 2);
        let id = s
            .store_received(
                "gsm1",
                "+4917",
                &["101".into()],
                "hi",
                "UCS-2",
                &[a, b],
                true,
                3,
            )
            .unwrap();
        assert!(s.loose_parts().unwrap().is_empty());
        assert_eq!(s.undelivered().unwrap()[0].to, vec!["101".to_string()]);
        s.mark_delivered(id, 4).unwrap();
        assert!(s.undelivered().unwrap().is_empty());
        assert_eq!(s.list(Some("sms_in"), 10).unwrap()[0].status, "delivered");
    }

    #[test]
    fn mail_is_retried_then_sent_or_given_up() {
        let (mut s, _d) = store();
        let a = s.insert_part("gsm1", "00AA", 1).unwrap().unwrap();
        let b = s.insert_part("gsm1", "00BB", 1).unwrap().unwrap();
        let m1 = s
            .store_received("gsm1", "+4917", &[], "one", "GSM-7", &[a], true, 10)
            .unwrap();
        let m2 = s
            .store_received("gsm1", "+4917", &[], "two", "GSM-7", &[b], false, 10)
            .unwrap();
        let due = s.mail_due(10, 10).unwrap();
        assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![m1]);
        assert_eq!(s.mail_next().unwrap(), Some(10));
        s.mail_failed(m1, "refused", Some(70), 11).unwrap();
        assert!(s.mail_due(69, 10).unwrap().is_empty());
        assert_eq!(s.mail_due(70, 10).unwrap()[0].attempts, 1);
        s.mail_sent(m1, 71).unwrap();
        assert!(s.mail_due(1000, 10).unwrap().is_empty());
        assert_eq!(s.mail_next().unwrap(), None);
        let _ = m2;
    }

    #[test]
    fn ussd_events_newest_first() {
        let (s, _d) = store();
        s.ussd_event("gsm1", "answer", 0, "Balance", 1).unwrap();
        s.ussd_event("gsm1", "network", 1, "Menu: 1 yes", 2)
            .unwrap();
        let all = s.ussd_events(None, 10).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].text, "Menu: 1 yes");
        assert!(all[0].awaits_reply);
        assert_eq!(
            s.ussd_events(Some("answer"), 10).unwrap()[0].text,
            "Balance"
        );
    }

    #[test]
    fn outgoing_parts_sent_then_delivered_by_reports() {
        let (s, _d) = store();
        let id = s
            .store_outgoing("101", "+4917", "x", 2, "GSM-7", 9, Some(0.18), None, 1)
            .unwrap();
        assert_eq!(s.due_outgoing(1).unwrap().len(), 1);
        s.sending(id, "gsm1", 100, 1).unwrap();
        assert!(s.due_outgoing(2).unwrap().is_empty());
        s.part_sent(id, 1, 7, 2).unwrap();
        assert_eq!(s.get(id).unwrap().unwrap().status, "queued");
        s.part_sent(id, 2, 8, 2).unwrap();
        assert_eq!(s.get(id).unwrap().unwrap().status, "sent");
        assert_eq!(s.status_report("gsm1", 7, true, 3).unwrap(), Some(id));
        assert_eq!(s.get(id).unwrap().unwrap().status, "sent");
        s.status_report("gsm1", 8, true, 3).unwrap();
        assert_eq!(s.get(id).unwrap().unwrap().status, "delivered");
        assert_eq!(s.status_report("gsm1", 99, true, 3).unwrap(), None);
        assert_eq!(s.sent_since("101", 0).unwrap(), 1);
    }
}
