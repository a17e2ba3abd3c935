-- 0004: dashboard accounts and their login sessions.

-- People who may log in to the dashboard. `password_hash` is an argon2id PHC string.
CREATE TABLE web_users (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL      -- unix seconds
);

-- Logged-in browsers. `token_hash` is the SHA-256 (hex) of the 256-bit random cookie value, so
-- a copy of the database does not hand out live sessions; `csrf` is the token every POST form of
-- the session must carry.
CREATE TABLE web_sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES web_users (id) ON DELETE CASCADE,
    csrf       TEXT NOT NULL,
    expires_at INTEGER NOT NULL         -- unix seconds
);

CREATE INDEX web_sessions_expires_at ON web_sessions (expires_at);
