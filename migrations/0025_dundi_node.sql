-- DUNDi node settings and mappings set in the dashboard or the API (issue 17). A key of the
-- configuration file's [dundi] section wins over the same key here (shown read-only "from the
-- configuration file"); the file's [[dundi.mapping]] tables are used beside the mappings here.
-- One row per setting the dashboard set (enabled, listen, eid, ttl, cache_secs, key_ttl_secs,
-- ipaddr, organization, department, locality, state_prov, country, email, phone), as typed
-- and checked; a setting without a row takes the file's value or the default.
CREATE TABLE dundi_settings (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- What we answer peers for (Asterisk's [mappings] lines): DUNDi context → destination.
CREATE TABLE dundi_mappings (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    context      TEXT NOT NULL,
    -- ${NUMBER}, ${IPADDR} and ${EID} are replaced.
    destination  TEXT NOT NULL,
    -- 'SIP', 'PJSIP', 'IAX2' or 'H323'.
    tech         TEXT NOT NULL DEFAULT 'SIP',
    weight       INTEGER NOT NULL DEFAULT 0,
    -- Asterisk's mapping options, comma-separated (nounsolicited, nocomunsolicit, …).
    options      TEXT NOT NULL DEFAULT '',
    -- Number patterns answered besides the extensions' DIDs, comma-separated (_4930123XXX).
    numbers      TEXT NOT NULL DEFAULT '',
    enabled      INTEGER NOT NULL DEFAULT 1,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
