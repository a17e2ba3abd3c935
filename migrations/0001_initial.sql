-- 0001: extensions and registrar bindings.

-- Extensions (SIP accounts). `source` says who manages the row: 'config' rows are provisioned
-- from the [[extension]] tables of the config file and re-synchronised at every start; rows
-- with any other source (e.g. 'web') are managed elsewhere and never touched by that sync.
CREATE TABLE extensions (
    number     TEXT PRIMARY KEY,
    password   TEXT NOT NULL,
    name       TEXT,
    did        TEXT,
    enabled    INTEGER NOT NULL DEFAULT 1,
    source     TEXT NOT NULL DEFAULT 'config',
    created_at INTEGER,            -- unix seconds
    updated_at INTEGER             -- unix seconds
);

-- Registrar bindings (RFC 3261 section 10): one row per (address of record, contact).
CREATE TABLE bindings (
    aor        TEXT NOT NULL,
    contact    TEXT NOT NULL,
    q          REAL NOT NULL,
    expires_at INTEGER NOT NULL,   -- unix seconds
    call_id    TEXT NOT NULL,
    cseq       INTEGER NOT NULL,
    transport  TEXT NOT NULL,
    source     TEXT NOT NULL,      -- ip:port the REGISTER came from
    local      TEXT NOT NULL,      -- our listen address it came in on
    user_agent TEXT,
    instance   TEXT,               -- +sip.instance (RFC 5626)
    reg_id     INTEGER,            -- reg-id (RFC 5626)
    updated_at INTEGER NOT NULL,   -- unix seconds
    PRIMARY KEY (aor, contact)
);

CREATE INDEX bindings_expires_at ON bindings (expires_at);
