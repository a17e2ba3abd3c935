//! The fuzz targets run in the normal suite, time-boxed: `fuzz/run.sh` builds every target in
//! fuzz/fuzz_targets with cargo-fuzz and runs each for a while, seeded with the corpus that is
//! committed in fuzz/corpus. cargo-fuzz is installed first when it is missing (`cargo install
//! cargo-fuzz --locked`, about two minutes), so a fresh machine runs it too.
//!
//! `PASARELA_FUZZ_SECS` sets the seconds per target (default 30: with seven targets about
//! 3.5 minutes of fuzzing, plus the instrumented build of the crate on the first run, about
//! ten minutes on two cores). The build has no sanitizer (`FUZZ_SANITIZER=none`, see
//! fuzz/run.sh): the parsers are safe Rust, so what fuzzing finds is panics and hangs.
use std::path::Path;
use std::process::Command;

fn have_cargo_fuzz() -> bool {
    Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn every_fuzz_target_runs_time_boxed_without_a_crash() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let targets = std::fs::read_dir(root.join("fuzz/fuzz_targets"))
        .expect("fuzz/fuzz_targets")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "rs"))
        .count();
    assert!(targets >= 7, "fuzz targets missing: {targets}");
    for entry in std::fs::read_dir(root.join("fuzz/fuzz_targets")).expect("targets") {
        let path = entry.expect("entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let corpus = root.join("fuzz/corpus").join(name);
        let seeds = std::fs::read_dir(&corpus).map_or(0, |d| d.count());
        assert!(seeds > 0, "no seed corpus in {}", corpus.display());
    }
    if !have_cargo_fuzz() {
        let st = Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked"])
            .status()
            .expect("run cargo install");
        assert!(
            st.success(),
            "cargo install cargo-fuzz --locked failed: {st}"
        );
    }
    let secs = std::env::var("PASARELA_FUZZ_SECS").unwrap_or_else(|_| "30".into());
    let out = Command::new("bash")
        .arg(root.join("fuzz/run.sh"))
        .arg(&secs)
        // The fuzz crate has a target directory of its own; the suite's release flags do not
        // apply to it.
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("run fuzz/run.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "fuzz/run.sh failed:\n{text}");
    assert!(
        text.contains("without a crash"),
        "fuzz/run.sh did not finish:\n{text}"
    );
}
