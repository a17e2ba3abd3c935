-- Text messages, continued (issue 20): e-mail forwarding of received SMS, and USSD the network
-- sent on its own (or answered).

-- mail_status: NULL (not forwarded), 'pending' (to mail, at mail_next_at), 'sent', 'failed'
-- (given up after the last attempt). Set with the message in one transaction, so a message
-- that is stored is also mailed, after a restart too.
ALTER TABLE messages ADD COLUMN mail_status TEXT;
ALTER TABLE messages ADD COLUMN mail_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN mail_next_at INTEGER;
ALTER TABLE messages ADD COLUMN mail_error TEXT;
CREATE INDEX messages_mail ON messages(mail_status, mail_next_at);

-- USSD from a line: network-initiated (origin 'network': +CUSD without a request of ours) and
-- answers to our codes (origin 'answer'). status is +CUSD's <m>: 0 done, 1 the network waits
-- for a reply, 2 ended by the network, 4 not supported.
CREATE TABLE ussd_events (
    id          INTEGER PRIMARY KEY,
    line        TEXT NOT NULL,
    origin      TEXT NOT NULL,
    status      INTEGER NOT NULL,
    text        TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX ussd_events_line ON ussd_events(line, id);
