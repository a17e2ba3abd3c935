-- SIP trunks in the store (issue 17): the dashboard and the API edit them, the configuration
-- file's [[trunk]] tables seed them. source: 'config' (re-synchronised from the file at start
-- and on SIGHUP, read-only elsewhere) or 'web' (added in the dashboard or the API). A name is
-- one trunk: a [[trunk]] in the file takes over a web row of the same name (the file wins).
CREATE TABLE trunks (
    name        TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    enabled     INTEGER NOT NULL DEFAULT 1,
    -- Order of preference: file trunks in file order, then web trunks as added.
    position    INTEGER NOT NULL DEFAULT 0,
    -- The trunk's keys as JSON (the [[trunk]] keys other than name and enabled).
    settings    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- API token scopes (issue 17): 'read' tokens may only read (GET); 'admin' tokens may also
-- change trunks, send messages and the like. Tokens made before keep what they could do.
ALTER TABLE api_tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin';
