-- 0005: tokens for the JSON API, and the records filters people saved in the dashboard.

-- Programs that read the JSON API (`Authorization: Bearer TOKEN`). Only the SHA-256 (hex) of
-- the random token is kept: the dashboard shows the token once, when it is created.
CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,      -- unix seconds
    last_used_at INTEGER                -- unix seconds; NULL: never used
);

-- Named records filters: `query` is the records page's query string (without the page).
CREATE TABLE saved_filters (
    id      INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES web_users (id) ON DELETE CASCADE,
    name    TEXT NOT NULL,
    query   TEXT NOT NULL,
    UNIQUE (user_id, name)
);
