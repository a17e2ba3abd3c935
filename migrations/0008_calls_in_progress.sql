-- 0008: records of calls in progress and of calls that ended abnormally (issue 13 §9).

-- Why a call ended when it was not a normal end: 'in progress' while an answered call is up
-- (its record is written at the answer and replaced when it ends), 'interrupted' when pasarela
-- stopped without ending it (a crash: the duration runs to the last heartbeat), or the reason
-- pasarela refused it ('Limit reached: …', 'No media ports available'). NULL otherwise.
ALTER TABLE call_records ADD COLUMN end_reason TEXT;
-- The in-progress record's key (process run and call number); NULL once the call has ended.
ALTER TABLE call_records ADD COLUMN call_key TEXT;
CREATE UNIQUE INDEX call_records_call_key ON call_records (call_key) WHERE call_key IS NOT NULL;

-- The dialog state of each answered call's legs (JSON: Call-ID, tags, CSeq, remote target,
-- route set, the flow), so that after a crash the far ends can be sent BYE; and the last time
-- the call was known to be up (a heartbeat every few seconds).
CREATE TABLE call_legs (
    call_key TEXT PRIMARY KEY,
    seen_ms  INTEGER NOT NULL,
    legs     TEXT NOT NULL
);
