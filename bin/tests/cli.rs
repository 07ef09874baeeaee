//! The `sidekey` executable itself: its subcommands, its start-up checks, and its signal handling.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const SIDEKEY: &str = env!("CARGO_BIN_EXE_sidekey");

/// Starts `sidekey serve` on a free port with JSON logs and returns the child, its address, and the log
/// lines it writes from then on.
fn start(extra_env: &[(&str, &str)]) -> (Child, String, mpsc::Receiver<String>) {
    let mut command = Command::new(SIDEKEY);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
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

fn get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connects");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

fn terminate(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
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

#[test]
fn sigterm_stops_the_server_gracefully_with_exit_code_zero() {
    let (mut child, addr, logs) = start(&[]);
    assert!(get(&addr, "/healthz").starts_with("HTTP/1.1 200"));
    terminate(&child);
    let status = wait_with_timeout(&mut child, Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
    let said: Vec<String> = logs.try_iter().collect();
    assert!(said.iter().any(|line| line.contains("\"stopped\"")), "{said:#?}");
    assert!(TcpStream::connect(&addr).is_err(), "the port is closed after shutdown");
}

#[test]
fn the_openapi_subcommand_prints_the_committed_spec() {
    let output = Command::new(SIDEKEY).arg("openapi").output().unwrap();
    assert!(output.status.success());
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json"))
        .expect("openapi/openapi.json is committed");
    assert!(
        String::from_utf8(output.stdout).unwrap() == committed,
        "openapi/openapi.json is stale: run `cargo run -q -p sidekey -- openapi > openapi/openapi.json`"
    );
}

#[test]
fn a_configuration_it_cannot_honour_stops_it_at_start_up() {
    let dir = std::env::temp_dir().join(format!("sidekey-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("typo.toml", "listne = \"127.0.0.1:1\"\n", "listne"),
        ("jwt.toml", "[auth]\nmode = \"jwt\"\n", "auth.mode"),
        ("bounds.toml", "[session]\ndefault_ttl_seconds = 100000\n", "session"),
    ];
    for (name, content, mentioned) in cases {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        let output = Command::new(SIDEKEY)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name} was accepted");
        assert!(stderr.contains(mentioned), "{name}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
