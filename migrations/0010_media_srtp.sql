-- 0010: whether each leg's media was encrypted (SRTP, issue 18): bit 0 the caller's leg, bit 1
-- the callee's; 0 for plain RTP or no media. Numbered after 0009 (SIP over TLS, merged from
-- another branch); applied after it.
ALTER TABLE call_records ADD COLUMN media_srtp INTEGER NOT NULL DEFAULT 0;
