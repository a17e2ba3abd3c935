//! Backup and restore (issue 16): `pasarela backup FILE` while `serve` runs, the store wiped,
//! `pasarela restore FILE` (refused while `serve` runs), and the records, extensions and
//! dashboard accounts are back after a restart; `--files` also puts the configuration back.
mod common;

use std::process::Command;

use common::{config, server_program, Server};

fn pasarela(conf: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(server_program())
        .args(args)
        .arg("--config")
        .arg(conf)
        .output()
        .expect("run pasarela")
}

fn count(db: &std::path::Path, sql: &str) -> i64 {
    let c = rusqlite::Connection::open(db).expect("open store");
    c.query_row(sql, [], |r| r.get(0)).expect(sql)
}

#[test]
fn backup_while_running_then_restore_into_a_wiped_store() {
    let mut server = Server::start(&config(""));
    let conf = server.dir().join("pasarela.toml");
    {
        let c = rusqlite::Connection::open(&server.db).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
        c.execute(
            "INSERT INTO web_users (username, password_hash, created_at) VALUES ('admin', 'x', 1)",
            [],
        )
        .unwrap();
    }
    let extensions = count(&server.db, "SELECT COUNT(*) FROM extensions");
    assert!(extensions > 0, "the test config provisions extensions");

    let file = server.dir().join("backup.db");
    let out = pasarela(&conf, &["backup", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "backup while serve runs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("pasarela.toml"));
    // A second backup to the same file is refused rather than overwriting it.
    let again = pasarela(&conf, &["backup", file.to_str().unwrap()]);
    assert!(!again.status.success());

    // Restoring under a running gateway is refused, and says why.
    let refused = pasarela(&conf, &["restore", file.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("running"));

    server.stop();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", server.db.display()));
    }
    std::fs::write(&conf, "# wiped\n").unwrap();
    let out = Command::new(server_program())
        .args(["restore", file.to_str().unwrap(), "--files", "--config"])
        .arg(server.dir().join("restore.toml"))
        .output()
        .unwrap();
    // restore.toml does not exist: the config error comes first.
    assert_eq!(out.status.code(), Some(2));
    std::fs::write(
        server.dir().join("restore.toml"),
        format!("[store]\npath = \"{}\"\n", server.db.display()),
    )
    .unwrap();
    let out = Command::new(server_program())
        .args(["restore", file.to_str().unwrap(), "--files", "--config"])
        .arg(server.dir().join("restore.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count(&server.db, "SELECT COUNT(*) FROM web_users"), 1);
    assert_eq!(
        count(&server.db, "SELECT COUNT(*) FROM extensions"),
        extensions
    );
    let restored_conf = std::fs::read_to_string(&conf).unwrap();
    assert!(restored_conf.contains("[sip]"), "the configuration is back");

    server.start_again();
    assert_eq!(
        common::options_status(server.udp),
        Some(200),
        "the restored gateway answers"
    );
}
