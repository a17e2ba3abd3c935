//! Tests of the transaction layer.
