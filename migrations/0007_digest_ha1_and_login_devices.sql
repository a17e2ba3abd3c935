-- 0007: extension passwords as digest HA1 hashes, per-extension allow-lists and RFC 2069
-- opt-in, and the dashboard's trusted login devices.

-- H(number:realm:password) for MD5 and SHA-256, and the realm they were computed for. The
-- clear `password` column is emptied by the application at start-up (SQL cannot hash), and
-- stays '' from then on.
ALTER TABLE extensions ADD COLUMN ha1_md5 TEXT;
ALTER TABLE extensions ADD COLUMN ha1_sha256 TEXT;
ALTER TABLE extensions ADD COLUMN ha1_realm TEXT;
-- Whether digest answers without qop (RFC 2069) are accepted for this extension.
ALTER TABLE extensions ADD COLUMN legacy_digest INTEGER NOT NULL DEFAULT 0;
-- Comma-separated networks the extension may register and call from; NULL: anywhere.
ALTER TABLE extensions ADD COLUMN allow TEXT;

-- Devices that logged in to the dashboard before: a login that presents one of these cookies
-- is not held back by someone else's failed guesses for the same user.
CREATE TABLE web_devices (
    token_hash TEXT PRIMARY KEY,   -- SHA-256 of the cookie value, hex
    user_id    INTEGER NOT NULL REFERENCES web_users (id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL    -- unix seconds
);
