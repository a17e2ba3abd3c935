-- 0003: call detail records and the rate tables they are rated with.

-- One row per call attempt, answered or not. Times are UTC unix milliseconds; money is in
-- integer minor units of `currency` (cents for EUR), never floating point. See src/cdr/record.rs.
CREATE TABLE call_records (
    id                   INTEGER PRIMARY KEY,   -- assigned on insert
    call_ref             INTEGER,               -- the B2BUA's number for the call (per process run)
    start_ms             INTEGER NOT NULL,      -- the INVITE arrived
    answer_ms            INTEGER,               -- the callee answered (NULL: never)
    end_ms               INTEGER NOT NULL,      -- the call ended
    duration_s           INTEGER NOT NULL,      -- end - start, whole seconds rounded up
    billable_s           INTEGER NOT NULL,      -- end - answer, whole seconds rounded up; 0 unanswered
    caller               TEXT NOT NULL,         -- as presented (extension number or caller id)
    caller_e164          TEXT,                  -- '+…', when known
    callee               TEXT NOT NULL,         -- as dialled
    callee_e164          TEXT,                  -- '+…', when known
    extension            TEXT,                  -- the office extension the call belongs to
    direction            TEXT NOT NULL CHECK (direction IN ('outgoing', 'incoming', 'internal')),
    category             TEXT,                  -- numbering category: internal, national, mobile …
    route_kind           TEXT NOT NULL CHECK (route_kind IN ('extension', 'sip', 'pstn', 'none')),
    route_target         TEXT,                  -- extension number, SIP URI or trunk/line name
    route_source         TEXT,                  -- 'ENUM e164.arpa', 'DUNDi …', 'trunk'
    disposition          TEXT NOT NULL
        CHECK (disposition IN ('answered', 'busy', 'no_answer', 'failed', 'cancelled')),
    sip_status           INTEGER NOT NULL,      -- the final SIP status of the call
    q850_cause           INTEGER NOT NULL,      -- the Q.850 cause (RFC 3398 mapping)
    codec                TEXT,
    packets              INTEGER NOT NULL DEFAULT 0,
    packets_lost         INTEGER NOT NULL DEFAULT 0,
    jitter_ms            REAL NOT NULL DEFAULT 0,
    cost_minor           INTEGER,               -- NULL: not rated (no rate matched)
    currency             TEXT,                  -- ISO 4217 code of the money columns
    rate_table           TEXT,                  -- name of the rate table used
    rate_prefix          TEXT,                  -- the prefix of the rate used ('' = catch-all)
    reference_cost_minor INTEGER,               -- what the PSTN reference rate would have cost
    savings_minor        INTEGER,               -- what the PSTN bypass saved
    explanation          TEXT NOT NULL DEFAULT '' -- the routing decision, one step a line
);

-- Indexes for the dashboard's filters. The period index holds every low-cardinality filter
-- column (direction, route kind, disposition, talk time) and the money, so that filtering on
-- those within a period, and the overview's sums, never touch the table; extension and route
-- target (line, SIP URI) have their own. A number is searched as a substring: the numbers
-- index lets that test run on index entries, in start order, before any row is read (the
-- queries name it with INDEXED BY). Few indexes keep the planner's choice obvious without
-- statistics.
CREATE INDEX call_records_period ON call_records
    (start_ms, direction, route_kind, disposition, billable_s, cost_minor, savings_minor);
CREATE INDEX call_records_extension ON call_records (extension, start_ms);
CREATE INDEX call_records_route ON call_records (route_target, start_ms);
CREATE INDEX call_records_numbers ON call_records
    (start_ms, caller, callee, caller_e164, callee_e164);

-- Rate tables: one per PSTN trunk/line or group of lines, and at most one reference table
-- ("what the PSTN would have cost") that prices bypassed calls and lines without a table.
CREATE TABLE rate_tables (
    id        INTEGER PRIMARY KEY,
    name      TEXT NOT NULL UNIQUE,
    currency  TEXT NOT NULL,
    reference INTEGER NOT NULL DEFAULT 0 CHECK (reference IN (0, 1))
);
CREATE UNIQUE INDEX rate_tables_one_reference ON rate_tables (reference) WHERE reference = 1;

-- Which table rates the calls over a trunk or line (a line belongs to at most one table).
CREATE TABLE rate_table_lines (
    line     TEXT PRIMARY KEY,
    table_id INTEGER NOT NULL REFERENCES rate_tables (id) ON DELETE CASCADE
);

-- Rates, matched by the longest prefix of the callee's E.164 digits. Prices are integer
-- millionths of the currency unit (0.0123 EUR/min = 12300).
CREATE TABLE rates (
    table_id          INTEGER NOT NULL REFERENCES rate_tables (id) ON DELETE CASCADE,
    prefix            TEXT NOT NULL,            -- E.164 digits without '+'; '' matches all
    description       TEXT NOT NULL DEFAULT '',
    per_minute_micros INTEGER NOT NULL CHECK (per_minute_micros >= 0),
    connect_micros    INTEGER NOT NULL DEFAULT 0 CHECK (connect_micros >= 0),
    first_s           INTEGER NOT NULL CHECK (first_s >= 1),
    next_s            INTEGER NOT NULL CHECK (next_s >= 1),
    PRIMARY KEY (table_id, prefix)
) WITHOUT ROWID;

-- Bumped by every change to the three tables above, so that a long-lived connection (the
-- record writer) knows when to reload its rates.
CREATE TABLE rating_version (version INTEGER NOT NULL);
INSERT INTO rating_version (version) VALUES (0);

CREATE TRIGGER rate_tables_ins AFTER INSERT ON rate_tables
    BEGIN UPDATE rating_version SET version = version + 1; END;
CREATE TRIGGER rate_tables_upd AFTER UPDATE ON rate_tables
    BEGIN UPDATE rating_version SET version = version + 1; END;
CREATE TRIGGER rate_tables_del AFTER DELETE ON rate_tables
    BEGIN UPDATE rating_version SET version = version + 1; END;
CREATE TRIGGER rate_table_lines_ins AFTER INSERT ON rate_table_lines
    BEGIN UPDATE rating_version SET version = version + 1; END;
CREATE TRIGGER rate_table_lines_upd AFTER UPDATE ON rate_table_lines
    BEGIN UPDATE rating_version SET version = version + 1; END;
CREATE TRIGGER rate_table_lines_del AFTER DELETE ON rate_table_lines
    BEGIN UPDATE rating_version SET version = version + 1; END;
CREATE TRIGGER rates_ins AFTER INSERT ON rates
    BEGIN UPDATE rating_version SET version = version + 1; END;
CREATE TRIGGER rates_upd AFTER UPDATE ON rates
    BEGIN UPDATE rating_version SET version = version + 1; END;
CREATE TRIGGER rates_del AFTER DELETE ON rates
    BEGIN UPDATE rating_version SET version = version + 1; END;
