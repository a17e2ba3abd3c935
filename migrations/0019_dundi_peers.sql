-- DUNDi peers added in the dashboard or the API (issue 17). Peers of the configuration file's
-- [[dundi.peer]] tables are not copied here: they are shown read-only from the running
-- configuration, and the file wins on an EID. The peer's public key is kept as its PEM text
-- (so that a backup of the store keeps it) and written to a key file when DUNDi is provisioned.
CREATE TABLE dundi_peers (
    eid           TEXT PRIMARY KEY,
    address       TEXT NOT NULL,
    -- 'symmetric', 'inbound' or 'outbound' (Asterisk's model=).
    model         TEXT NOT NULL DEFAULT 'symmetric',
    -- Lower is asked first (Asterisk's order=).
    position      INTEGER NOT NULL DEFAULT 0,
    -- Contexts, comma-separated: asked of the peer (include) and it may ask us (permit).
    include       TEXT NOT NULL,
    permit        TEXT NOT NULL,
    -- The peer's RSA public key (PEM); NULL: unencrypted.
    inkey_pem     TEXT,
    -- NULL pings every … seconds; 0: not qualified.
    qualify_secs  INTEGER NOT NULL DEFAULT 0,
    enabled       INTEGER NOT NULL DEFAULT 1,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
