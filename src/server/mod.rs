//! Wires the services together for `pasarela serve` (being written).
use crate::config::Config;

/// Runs the gateway until it is asked to stop.
pub async fn run(_config: Config) -> anyhow::Result<()> {
    Ok(())
}
