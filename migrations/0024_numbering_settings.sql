-- The numbering plan and ENUM settings ([numbering] and [enum] keys) set in the dashboard or the
-- API (issue 17). One row per key; `value` is the key's value as JSON (as the file would write
-- it). Keys the configuration file sets are copied here with source 'config' at start and on
-- SIGHUP and are read-only in the dashboard: the file wins over a row of the same key.
CREATE TABLE numbering_settings (
    section     TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    source      TEXT NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (section, key)
);
