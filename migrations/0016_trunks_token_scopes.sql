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

-- Ring groups and inbound routes (issue 17), same pattern as trunks: source 'config' rows come
-- from the file's [[ring_group]] and [[inbound.route]] tables (the file wins on a name or
-- number), 'web' rows from the dashboard.
CREATE TABLE ring_groups (
    name            TEXT PRIMARY KEY,
    source          TEXT NOT NULL,
    -- Extension numbers, comma-separated, in ringing order.
    members         TEXT NOT NULL,
    -- 'all' or 'order'.
    strategy        TEXT NOT NULL DEFAULT 'all',
    member_timeout  INTEGER NOT NULL DEFAULT 15,
    position        INTEGER NOT NULL DEFAULT 0,
    updated_at      INTEGER NOT NULL
);

CREATE TABLE inbound_routes (
    -- The number called, E.164 (+ and digits).
    number      TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    -- An extension number or a ring group's name.
    destination TEXT NOT NULL,
    position    INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL
);
