//! Clients generated from the committed OpenAPI document work: a Python client (openapi-python-client)
//! and a type-checked TypeScript client (openapi-typescript + openapi-fetch) each run the README
//! walkthrough against the real binary (`tests/clients/*/run.sh`).
//!
//! The generators are installed by `.ci/api-tools.sh`. Missing, the test is skipped with the reason
//! printed; under `CI=true` it fails instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

mod support;

use support::{start_with, terminate, wait_with_timeout};

/// An admin token of the length the server demands (at least 32 bytes).
const ADMIN_TOKEN: &str = "walkthrough-admin-token-0123456789abcdef";

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/clients")
}

/// Whether `tool` can run; under `CI=true` a missing tool fails the test, elsewhere it is skipped.
fn available(test: &str, tool: &str, present: bool) -> bool {
    if present {
        return true;
    }
    let reason = format!("{test}: {tool} is not installed (bash .ci/api-tools.sh installs it)");
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{reason}");
    eprintln!("skipped: {reason}");
    false
}

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Runs `script` against a fresh `sidekey serve` (memory store, one env secret, the admin API on).
fn run_walkthrough(script: &Path) {
    let (mut child, addr, _logs) = start_with(
        &[],
        &[("SIDEKEY_ADMIN_TOKEN", ADMIN_TOKEN), ("SIDEKEY_SECRET_OPENAI_PROD", "sk-walkthrough-not-real")],
    );
    let output = Command::new("bash")
        .arg(script)
        .env("SIDEKEY_URL", format!("http://{addr}"))
        .env("SIDEKEY_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SIDEKEY_SECRET_KEY_ID", "openai-prod")
        .output()
        .expect("bash runs");
    terminate(&child);
    wait_with_timeout(&mut child, Duration::from_secs(10));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{} failed:\n{stdout}\n{stderr}", script.display());
    assert!(stdout.contains("walkthrough: ok"), "{stdout}\n{stderr}");
}

#[test]
fn a_python_client_generated_from_the_committed_document_runs_the_readme_walkthrough() {
    let test = "python client";
    if !available(test, "openapi-python-client", on_path("openapi-python-client")) {
        return;
    }
    run_walkthrough(&clients_dir().join("python/run.sh"));
}

#[test]
fn a_typescript_client_generated_from_the_committed_document_type_checks_and_runs_the_readme_walkthrough() {
    let test = "typescript client";
    let dir = clients_dir().join("typescript");
    let installed = on_path("node") && dir.join("node_modules/.bin/tsc").exists();
    if !available(test, "node with the pinned npm packages (npm ci)", installed) {
        return;
    }
    run_walkthrough(&dir.join("run.sh"));
}
