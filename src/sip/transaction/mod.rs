//! RFC 3261 §17 transactions (being written).
