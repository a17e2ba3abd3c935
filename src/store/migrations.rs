//! The schema migrations, in order: the one place that lists the SQL files of `/migrations`.
//!
//! Each file is embedded in the binary with `include_str!` and applied at start-up by
//! `rusqlite_migration`, which records the schema version in SQLite's `user_version`. Append new
//! files at the end; never edit or reorder one that has shipped.

use rusqlite_migration::{Migrations, M};

const MIGRATION_LIST: &[M<'static>] = &[
    M::up(include_str!("../../migrations/0001_initial.sql")),
    M::up(include_str!(
        "../../migrations/0002_extension_permissions.sql"
    )),
    M::up(include_str!("../../migrations/0003_call_records.sql")),
    M::up(include_str!("../../migrations/0004_web_users.sql")),
    M::up(include_str!(
        "../../migrations/0005_api_tokens_saved_filters.sql"
    )),
    M::up(include_str!("../../migrations/0006_billing_indexes.sql")),
    M::up(include_str!(
        "../../migrations/0007_digest_ha1_and_login_devices.sql"
    )),
    M::up(include_str!("../../migrations/0008_calls_in_progress.sql")),
    M::up(include_str!("../../migrations/0009_call_signalling.sql")),
    M::up(include_str!("../../migrations/0010_media_srtp.sql")),
    M::up(include_str!("../../migrations/0012_web_roles_audit.sql")),
    M::up(include_str!("../../migrations/0013_messages.sql")),
    M::up(include_str!("../../migrations/0014_sms_mail_ussd.sql")),
    M::up(include_str!(
        "../../migrations/0016_trunks_token_scopes.sql"
    )),
    M::up(include_str!("../../migrations/0018_call_handling.sql")),
    M::up(include_str!("../../migrations/0019_dundi_peers.sql")),
    M::up(include_str!("../../migrations/0020_pickup_groups.sql")),
    M::up(include_str!("../../migrations/0021_call_transfers.sql")),
    M::up(include_str!("../../migrations/0022_modem_lines.sql")),
    M::up(include_str!("../../migrations/0023_fxo_lines.sql")),
    M::up(include_str!("../../migrations/0024_numbering_settings.sql")),
    M::up(include_str!("../../migrations/0025_dundi_node.sql")),
];

/// All migrations, oldest first.
pub(crate) const MIGRATIONS: Migrations<'static> = Migrations::from_slice(MIGRATION_LIST);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        assert!(MIGRATIONS.validate().is_ok());
    }
}
