//! The README's two commands stay true (issue 16): `.ci/run` runs exactly the README's test
//! command, and `tests/setup.sh` (which that command starts with) is valid shell that finds
//! everything the suite needs on a machine where it has run before.
use std::path::Path;
use std::process::Command;

fn readme_command_after(marker: &str) -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let rest = readme
        .split_once(marker)
        .unwrap_or_else(|| panic!("README.md has no {marker:?}"))
        .1;
    rest.lines()
        .find(|l| l.starts_with("    "))
        .expect("an indented command after the marker")
        .trim()
        .to_string()
}

#[test]
fn ci_runs_exactly_the_readme_test_command() {
    let test_command = readme_command_after("Run the whole test suite");
    assert_eq!(test_command, "bash tests/setup.sh && cargo test --release");
    let ci = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/run"))
        .expect(".ci/run");
    let last = ci
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .expect("a command in .ci/run");
    assert_eq!(
        last.trim(),
        test_command,
        ".ci/run must end with the README's test command"
    );
    let run = readme_command_after("Run on the embedded defaults");
    assert_eq!(run, "cargo run --release -- serve");
}

#[test]
fn setup_script_is_valid_and_idempotent() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/setup.sh");
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .expect("bash");
    assert!(syntax.success(), "tests/setup.sh has a syntax error");
    // The suite is running, so setup has run: a second run finds everything and installs nothing.
    let out = Command::new("bash").arg(&script).output().expect("bash");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tests/setup.sh failed on a second run:\n{err}"
    );
    assert!(
        !err.contains("installing"),
        "a second run installed again:\n{err}"
    );
}
