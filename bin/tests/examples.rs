//! The deployment examples under `examples/` (nginx, systemd, Kubernetes), exercised for real by their
//! Node tests (`examples/test/*.test.mjs`) against this build of the binary.
//!
//! Each Node test finds its own tool (nginx, systemd-analyze, kubernetes-validate) and skips without it,
//! or fails under `CI=true`, where `.ci/examples.sh` has installed them; this wrapper needs only `node`.

use std::path::Path;
use std::process::Command;

use sidekey_test_support::skip_unless_installed;

/// Longest a single Node test may run before `node --test` fails it (a hung nginx or sidekey).
const NODE_TEST_TIMEOUT_MS: &str = "120000";

/// Runs `node --test examples/test/{name}.test.mjs` with `SIDEKEY_BIN` set to this build, and fails with
/// its output when it fails.
fn run_node_test(test: &str, name: &str) {
    if skip_unless_installed(test, &["node"]) {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let file = root.join("examples").join("test").join(format!("{name}.test.mjs"));
    let output = Command::new("node")
        .arg("--test")
        .arg(format!("--test-timeout={NODE_TEST_TIMEOUT_MS}"))
        .arg(&file)
        .current_dir(&root)
        .env("SIDEKEY_BIN", env!("CARGO_BIN_EXE_sidekey"))
        .output()
        .expect("node starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{} failed ({}):\n{stdout}\n{stderr}", file.display(), output.status);
    // What was skipped and why (a missing tool outside CI), for `cargo test -- --nocapture`.
    for line in stdout.lines().filter(|line| line.contains("skipped:") || line.contains("# SKIP")) {
        eprintln!("{name}: {}", line.trim());
    }
}

#[test]
fn the_nginx_example_serves_forward_auth_in_front_of_a_backend() {
    run_node_test("the_nginx_example_serves_forward_auth_in_front_of_a_backend", "nginx");
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_and_starts_sidekey_from_its_environment_file() {
    run_node_test(
        "the_systemd_unit_passes_systemd_analyze_and_starts_sidekey_from_its_environment_file",
        "systemd",
    );
}

#[test]
fn the_kubernetes_manifest_validates_and_its_sidecar_environment_starts_sidekey() {
    run_node_test(
        "the_kubernetes_manifest_validates_and_its_sidecar_environment_starts_sidekey",
        "kubernetes",
    );
}
