-- 0009: whether each leg's signalling was encrypted (issue 18): the transports of the caller's
-- leg and of the called leg, `caller/callee` (e.g. `tls/udp`); TLS is encrypted. NULL for
-- records written before, and for calls refused before any leg was set up.
ALTER TABLE call_records ADD COLUMN signalling TEXT;
