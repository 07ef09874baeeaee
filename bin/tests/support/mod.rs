//! Running the `sidekey` executable from a test: start it, read its JSON log, stop it.
// Each test binary uses part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const SIDEKEY: &str = env!("CARGO_BIN_EXE_sidekey");

/// Starts `sidekey serve` on a free port with JSON logs, `extra_args` after the subcommand, and returns
/// the child, its address, and the log lines it writes from then on.
pub fn start_with(
    extra_args: &[&str],
    extra_env: &[(&str, &str)],
) -> (Child, String, mpsc::Receiver<String>) {
    let mut command = Command::new(SIDEKEY);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .args(extra_args)
        .env_remove("SIDEKEY_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in extra_env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("sidekey starts");
    let (lines, receiver) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    // Other components may log before the announcement (poem's own "listening", in any order).
    let mut addr = None;
    while addr.is_none() {
        let line = receiver.recv_timeout(Duration::from_secs(20)).expect("sidekey logs that it is listening");
        let event: serde_json::Value = serde_json::from_str(&line).expect("log lines are JSON");
        if event["message"] == "sidekey is listening" {
            addr = Some(event["addr"].as_str().expect("the event names the address").to_owned());
        }
    }
    let addr = addr.unwrap();
    (child, addr, receiver)
}

/// Sends SIGTERM.
pub fn terminate(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// Waits for the child to exit, killing it and failing the test after `timeout`.
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("sidekey did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
