//! Tokio drivers for UDP and TCP (being written).
