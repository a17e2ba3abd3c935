-- 0018: call handling per extension (issue 21): call forwarding (always, busy, no answer,
-- unreachable) to an extension or a number, and the order the extension's phones ring in.
-- The configuration file's [[extension]] keys seed a row; the dashboard and the phone's feature
-- codes (*72/*73, *90/*91, *52/*53) change it afterwards. file_seed holds the file's settings as
-- last applied: the file's values are applied again only when they change in the file.
CREATE TABLE call_handling (
    number              TEXT PRIMARY KEY,
    forward_always      TEXT,
    forward_busy        TEXT,
    forward_no_answer   TEXT,
    -- Ringing time before the no-answer forward, in seconds.
    no_answer_secs      INTEGER NOT NULL DEFAULT 20,
    forward_unreachable TEXT,
    -- 'parallel' (all phones at once) or 'sequential' (one after the other).
    ring_order          TEXT NOT NULL DEFAULT 'parallel',
    -- Turn of each phone in a sequential search, in seconds.
    ring_secs           INTEGER NOT NULL DEFAULT 15,
    file_seed           TEXT,
    updated_at          INTEGER NOT NULL
);
