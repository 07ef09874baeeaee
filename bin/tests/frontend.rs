//! The frontend suites, run against this build of the binary: the JavaScript client's tests
//! (`clients/js`) and the browser example's Chromium tests (`examples/browser-chat`), each with Node's
//! own test runner (`node --test`), `SIDEKEY_BIN` pointing at the binary cargo just built.
//!
//! They live here, in the `sidekey` package, because only its tests get `CARGO_BIN_EXE_sidekey`, and so
//! `cargo test --workspace` (the README's test command) runs them. Without Node.js, npm or Chromium
//! they print why and pass outside CI; with `CI=true` they fail, because CI installs them
//! (`.ci/frontend.sh`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

/// Debian's Chromium, which the browser tests drive through playwright-core (no browser download).
const CHROMIUM: &str = "/usr/bin/chromium";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("bin/ has a parent").to_path_buf()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}

/// Outside CI a missing tool skips the suite with its reason; under `CI=true` it fails it.
fn missing(reason: &str) {
    assert!(!in_ci(), "CI=true and {reason}: run .ci/frontend.sh to install it");
    eprintln!("skipped: {reason} (CI=true makes this a failure)");
}

fn runs(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok_and(|output| output.status.success())
}

fn show(output: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// One suite at a time: both have renewal tests timed in seconds, and Chromium beside a second
/// sidekey on two cores would eat their margins.
static ONE_SUITE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// `npm ci` when the suite's `node_modules` is missing, then `node --test` on its `test/*.test.mjs`.
fn run_node_suite(dir: &str, needs_chromium: bool) {
    let _turn = ONE_SUITE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !runs("node") || !runs("npm") {
        return missing("node or npm is not installed");
    }
    if needs_chromium && !Path::new(CHROMIUM).exists() {
        return missing("chromium is not installed at /usr/bin/chromium");
    }
    let dir = repo_root().join(dir);
    if !dir.join("node_modules").exists() {
        let output = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .expect("npm starts");
        assert!(output.status.success(), "npm ci in {} failed:\n{}", dir.display(), show(&output));
    }
    // Named one by one: Node 20's `--test` neither expands globs nor skips helpers under test/.
    let mut files: Vec<String> = std::fs::read_dir(dir.join("test"))
        .expect("the suite has a test/ directory")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".test.mjs"))
        .map(|name| format!("test/{name}"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no test/*.test.mjs in {}", dir.display());
    // Node 20 has WebSocket (for the client's realtime test) only behind this flag; later ones by default.
    let websocket_flag = Command::new("node")
        .args(["--experimental-websocket", "-e", "0"])
        .output()
        .is_ok_and(|output| output.status.success());
    let output = Command::new("node")
        .args(websocket_flag.then_some("--experimental-websocket"))
        .arg("--test")
        .args(&files)
        .current_dir(&dir)
        .env("SIDEKEY_BIN", env!("CARGO_BIN_EXE_sidekey"))
        .output()
        .expect("node starts");
    let report = show(&output);
    assert!(output.status.success(), "node --test failed in {}:\n{report}", dir.display());
    // Print the runner's counts and any skip with its reason, so the cargo log shows what ran.
    let summary: Vec<&str> = report
        .lines()
        .filter(|line| {
            ["# tests ", "# pass ", "# fail ", "# skipped "].iter().any(|head| line.starts_with(head))
                || line.contains("# SKIP")
        })
        .map(str::trim)
        .collect();
    eprintln!("{}: {}", dir.display(), summary.join(" | "));
}

#[test]
fn the_javascript_client_passes_its_node_tests_against_this_binary() {
    run_node_suite("clients/js", false);
}

#[test]
fn the_browser_chat_example_passes_its_chromium_tests_against_this_binary() {
    run_node_suite("examples/browser-chat", true);
}
