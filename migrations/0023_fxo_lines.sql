-- Analog (FXO) lines of a telephony card added in the dashboard or the API (issue 17). The
-- configuration file's [[fxo]] tables are not copied here: they are shown read-only "from the
-- configuration file" and an [[fxo]] of the file takes over a row of the same name (the file
-- wins), as for trunks and modem lines.
CREATE TABLE fxo_lines (
    name        TEXT PRIMARY KEY,
    enabled     INTEGER NOT NULL DEFAULT 1,
    -- Order of preference among the dashboard's FXO lines (after the file's), as added.
    position    INTEGER NOT NULL DEFAULT 0,
    -- The line's keys as JSON (the [[fxo]] keys other than name).
    settings    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
