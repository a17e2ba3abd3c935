-- 0012: dashboard roles, listable sessions and the audit log of dashboard changes.

-- `admin` may change everything; `viewer` reads (records, billing, live) and changes only its
-- own password and sessions.
ALTER TABLE web_users ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';

-- When a session started and from where, so that it can be listed and revoked.
ALTER TABLE web_sessions ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE web_sessions ADD COLUMN address TEXT NOT NULL DEFAULT '';

-- Every change made on the dashboard (or by `pasarela admin`): who, when, what.
CREATE TABLE audit_log (
    id       INTEGER PRIMARY KEY,
    at       INTEGER NOT NULL,   -- unix seconds
    username TEXT NOT NULL,
    action   TEXT NOT NULL,      -- the form's path, e.g. /extensions/delete
    detail   TEXT NOT NULL,      -- the form's fields, passwords and tokens left out
    outcome  INTEGER NOT NULL    -- the HTTP status answered
);
CREATE INDEX audit_log_at ON audit_log (at);
