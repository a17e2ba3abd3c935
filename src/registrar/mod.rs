//! The location service (being written).
