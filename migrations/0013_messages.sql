-- Text messages (issue 20): SMS through the modem lines and SIP MESSAGE between phones.

-- Every PDU read from a modem, kept before the modem is told to delete it. The same PDU read
-- twice (after a reset, or a kill before the delete) is the same row: nothing is stored twice.
CREATE TABLE sms_parts (
    id          INTEGER PRIMARY KEY,
    line        TEXT NOT NULL,
    pdu         TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    -- The message it became part of; NULL while its siblings are awaited.
    message_id  INTEGER REFERENCES messages(id),
    UNIQUE (line, pdu)
);

-- One text message. kind: 'sms_in' (received on a line), 'sms_out' (a phone's MESSAGE sent
-- as SMS), 'local' (between extensions).
CREATE TABLE messages (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    line        TEXT,
    -- The outside party (E.164 or as the network gave it), or the sending extension.
    peer        TEXT NOT NULL,
    -- The extensions it is for (comma-separated), or the extension that sent it.
    extension   TEXT NOT NULL,
    body        TEXT NOT NULL,
    -- sms_in/local: pending (no phone took it yet), delivered; sms_out: queued, sent,
    -- delivered, failed.
    status      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    parts       INTEGER NOT NULL DEFAULT 1,
    encoding    TEXT,
    is_read     INTEGER NOT NULL DEFAULT 0,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_try_at INTEGER,
    error       TEXT,
    -- Concatenation reference of an outgoing message.
    reference   INTEGER,
    -- What the message cost (parts × [sms] price_per_part), for outgoing SMS.
    cost        REAL
);
CREATE INDEX messages_status ON messages(status);
CREATE INDEX messages_peer ON messages(peer, created_at);

-- The parts of an outgoing SMS and their message references, for the status reports.
CREATE TABLE sms_out_parts (
    message_id  INTEGER NOT NULL REFERENCES messages(id),
    seq         INTEGER NOT NULL,
    mr          INTEGER,
    status      TEXT NOT NULL,
    PRIMARY KEY (message_id, seq)
);
CREATE INDEX sms_out_parts_mr ON sms_out_parts(mr);
