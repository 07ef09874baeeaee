//! The `sidekey` executable itself: its subcommands, its start-up checks, and its signal handling.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::Duration;

mod support;

use support::{SIDEKEY, start_with, terminate, wait_with_timeout};

fn start(extra_env: &[(&str, &str)]) -> (Child, String, mpsc::Receiver<String>) {
    start_with(&[], extra_env)
}

fn get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connects");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
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
