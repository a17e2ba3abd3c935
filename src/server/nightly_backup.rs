//! The nightly backup (`[store] backup_at`): at that office time every day a backup like
//! `pasarela backup` (a consistent snapshot of the store, the configuration and key files) is
//! written as `pasarela-YYYY-MM-DD.backup` into the backup directory, and the newest
//! `backup_keep` of those files are kept. The plan (when next, what to delete) is pure
//! ([`next_run`], [`to_prune`]); [`run`] is the task that sleeps, writes and prunes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::NightlyBackup;
use crate::office_time::OfficeTime;

const PREFIX: &str = "pasarela-";
const SUFFIX: &str = ".backup";

/// The file name of the backup of office day `day` (`YYYY-MM-DD`).
pub fn file_name(day: &str) -> String {
    format!("{PREFIX}{day}{SUFFIX}")
}

/// Whether `name` is one of ours: `pasarela-YYYY-MM-DD.backup`.
fn is_nightly(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_suffix(SUFFIX))
        .is_some_and(|day| {
            day.len() == 10
                && day.chars().enumerate().all(|(i, c)| {
                    if i == 4 || i == 7 {
                        c == '-'
                    } else {
                        c.is_ascii_digit()
                    }
                })
        })
}

/// The nightly backups among `names` to delete so that the newest `keep` stay (the date in
/// the name orders them; other files are never touched).
pub fn to_prune(names: &[String], keep: u32) -> Vec<String> {
    let mut ours: Vec<&String> = names.iter().filter(|n| is_nightly(n)).collect();
    ours.sort_unstable_by(|a, b| b.cmp(a));
    ours.into_iter().skip(keep as usize).cloned().collect()
}

/// When the next backup is due after `now_ms` (unix ms), and the office day it is named by.
pub fn next_run(plan: &NightlyBackup, office: &OfficeTime, now_ms: i64) -> Option<(i64, String)> {
    let at = office.next_at(now_ms, plan.hour, plan.minute)?;
    Some((at, office.day(at)))
}

/// Writes the backup of `day` into the directory (replacing one of the same day, through a
/// temporary file so a crash leaves the old one), then deletes the oldest beyond `keep`.
/// Returns the file written.
pub fn write(
    plan: &NightlyBackup,
    store: &Path,
    files: &[(String, PathBuf)],
    day: &str,
    now_unix: i64,
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(&plan.dir)
        .map_err(|e| format!("cannot create {}: {e}", plan.dir.display()))?;
    let target = plan.dir.join(file_name(day));
    let partial = plan.dir.join(format!("{}.partial", file_name(day)));
    let _ = std::fs::remove_file(&partial);
    crate::store::backup::backup(store, &partial, files, now_unix).map_err(|e| e.to_string())?;
    std::fs::rename(&partial, &target).map_err(|e| {
        format!(
            "cannot rename {} to {}: {e}",
            partial.display(),
            target.display()
        )
    })?;
    let names: Vec<String> = std::fs::read_dir(&plan.dir)
        .map_err(|e| format!("cannot list {}: {e}", plan.dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    for old in to_prune(&names, plan.keep) {
        let path = plan.dir.join(&old);
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(file = %path.display(), "old nightly backup deleted"),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "old nightly backup not deleted")
            }
        }
    }
    Ok(target)
}

/// The task: sleeps until the next backup time, writes it, and again, forever. A failed
/// backup is logged as an error and tried again the next night.
pub async fn run(
    plan: NightlyBackup,
    office: OfficeTime,
    store: PathBuf,
    files: Vec<(String, PathBuf)>,
) {
    loop {
        let now = crate::office_time::now_ms();
        let Some((at, day)) = next_run(&plan, &office, now) else {
            tracing::error!("nightly backup: no next time can be computed; stopped");
            return;
        };
        tracing::info!(at = %office.show(at), dir = %plan.dir.display(), "nightly backup scheduled");
        let wait = u64::try_from(at.saturating_sub(now)).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let (plan2, store2, files2, day2) = (plan.clone(), store.clone(), files.clone(), day);
        let result =
            tokio::task::spawn_blocking(move || write(&plan2, &store2, &files2, &day2, at / 1000))
                .await;
        match result {
            Ok(Ok(path)) => tracing::info!(file = %path.display(), "nightly backup written"),
            Ok(Err(e)) => tracing::error!("nightly backup failed: {e}"),
            Err(e) => tracing::error!("nightly backup task failed: {e}"),
        }
        // Past the minute, so that the same time is not taken twice.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prunes_the_oldest_of_ours_only() {
        let names: Vec<String> = [
            "pasarela-2026-11-28.backup",
            "pasarela-2026-12-01.backup",
            "pasarela-2026-11-30.backup",
            "pasarela-2026-11-29.backup",
            "notes.txt",
            "pasarela-2026-11-01.backup.partial",
            "pasarela-latest.backup",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            to_prune(&names, 2),
            vec!["pasarela-2026-11-29.backup", "pasarela-2026-11-28.backup"]
        );
        assert!(to_prune(&names, 7).is_empty());
    }

    #[test]
    fn next_run_names_the_office_day() {
        let plan = NightlyBackup {
            hour: 23,
            minute: 30,
            dir: PathBuf::from("b"),
            keep: 3,
        };
        let berlin = OfficeTime::new(Some("Europe/Berlin"));
        // 2026-03-10 22:45 UTC = 23:45 Berlin: the next run is the 11th at 23:30 Berlin time
        // (22:30 UTC), named by the office's day.
        let now = 1_773_182_700_000;
        let (at, day) = next_run(&plan, &berlin, now).unwrap();
        assert_eq!(berlin.show(at), "2026-03-11 23:30:00");
        assert_eq!(day, "2026-03-11");
    }

    #[test]
    fn writes_keeps_the_newest_and_replaces_the_same_day() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("pasarela.db");
        crate::store::Store::open(&store).unwrap();
        let conf = dir.path().join("pasarela.toml");
        std::fs::write(&conf, "# config\n").unwrap();
        let plan = NightlyBackup {
            hour: 3,
            minute: 0,
            dir: dir.path().join("backups"),
            keep: 2,
        };
        let files = vec![("config".to_owned(), conf)];
        for day in ["2026-12-01", "2026-12-02", "2026-12-03", "2026-12-03"] {
            let path = write(&plan, &store, &files, day, 1).unwrap();
            let info = crate::store::backup::inspect(&path).unwrap();
            assert_eq!(info.files.len(), 1);
        }
        let mut left: Vec<String> = std::fs::read_dir(&plan.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec!["pasarela-2026-12-02.backup", "pasarela-2026-12-03.backup"]
        );
    }
}
