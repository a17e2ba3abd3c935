//! Configuration (being written).
#[derive(Debug, Clone, Default)]
pub struct Config;
