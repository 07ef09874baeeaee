//! What the `sidekey` executable tells its operator, read from the real binary with a clean environment:
//! warnings about the environment, a missing secret, configuration errors, host names, help and colour.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod support;

use support::SIDEKEY;

/// `sidekey` with nothing of the test runner's environment but `PATH`, so that a `SIDEKEY_*` variable
/// of the machine cannot change what is read.
fn sidekey() -> Command {
    let mut command = Command::new(SIDEKEY);
    command.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    command
}

/// A running `sidekey serve`: its address, and every stderr line, those before "listening" included.
struct Running {
    child: Child,
    addr: String,
    /// The lines written up to the announcement.
    before: Vec<String>,
    lines: mpsc::Receiver<String>,
}

impl Running {
    /// Starts `sidekey serve` with `args` and `env` (nothing else), stderr piped, and waits for it to
    /// listen. Logs in the default (human) format unless `args` say otherwise.
    fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = sidekey();
        command
            .arg("serve")
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("sidekey starts");
        let (sender, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut before = Vec::new();
        loop {
            let line = match lines.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("sidekey did not announce that it listens; it said: {before:#?}");
                }
            };
            before.push(line.clone());
            if line.contains("sidekey is listening") {
                let addr = listening_address(&line);
                return Self { child, addr, before, lines };
            }
        }
    }

    /// Every line written so far, those before the announcement included.
    fn said(&self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(200));
        self.before.iter().cloned().chain(self.lines.try_iter()).collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in the "listening" line, human (`addr=HOST:PORT`) or JSON (`"addr":"HOST:PORT"`).
fn listening_address(line: &str) -> String {
    if let Ok(event) = serde_json::from_str::<serde_json::Value>(line) {
        return event["addr"].as_str().expect("the event names the address").to_owned();
    }
    line.split_whitespace()
        .find_map(|word| word.strip_prefix("addr="))
        .expect("the line names the address")
        .to_owned()
}

/// One HTTP/1.1 request; the whole answer as text.
fn request(addr: &str, method: &str, path: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// A fresh directory for this test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sidekey-messages-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn unknown_sidekey_variables_are_warned_at_start_up_with_the_closest_name_and_never_their_value() {
    let running = Running::start(
        &["--listen", "127.0.0.1:0"],
        &[
            ("SIDEKEY_LISTN", "listn-value-never-printed"),
            ("SIDEKEY_SECRETS_OPENAI_PROD", "sk-typo-value-never-printed"),
            ("SIDEKEY_SECRET_OPENAI_DEV", "sk-secret-value-never-printed"),
        ],
    );
    let said = running.said().join("\n");
    assert!(said.contains("SIDEKEY_LISTN is not a sidekey setting"), "{said}");
    assert!(said.contains("did you mean SIDEKEY_LISTEN?"), "{said}");
    assert!(said.contains("SIDEKEY_SECRETS_OPENAI_PROD is not a sidekey setting"), "{said}");
    assert!(said.contains("did you mean SIDEKEY_SECRET_OPENAI_PROD?"), "{said}");
    assert!(!said.contains("SIDEKEY_SECRET_OPENAI_DEV"), "a secret variable is never unknown: {said}");
    assert!(!said.contains("never-printed"), "a value was printed: {said}");
}

#[test]
fn a_missing_secret_is_a_422_naming_the_variable_looked_for_in_the_answer_and_the_log() {
    let running = Running::start(
        &["--listen", "127.0.0.1:0"],
        &[("SIDEKEY_SECRET_ANTHROPIC_PROD", "sk-ant-never-revealed")],
    );
    let answer = request(&running.addr, "POST", "/v1/sessions", r#"{"secret_key_id":"openai-prod"}"#);
    assert!(answer.starts_with("HTTP/1.1 422"), "{answer}");
    assert!(answer.contains(r#""code":"unknown_secret_key_id""#), "{answer}");
    assert!(answer.contains("looked for the environment variable SIDEKEY_SECRET_OPENAI_PROD"), "{answer}");
    assert!(!answer.contains("ANTHROPIC") && !answer.contains("never-revealed"), "{answer}");
    let said = running.said().join("\n");
    assert!(said.contains("SIDEKEY_SECRET_OPENAI_PROD"), "the log names the variable: {said}");
    assert!(!said.contains("never-revealed"), "{said}");
}

#[test]
fn a_missing_secret_under_a_file_source_names_the_file_looked_for() {
    let dir = scratch("keys");
    std::fs::write(dir.join("anthropic-prod"), "sk-ant-never-revealed").unwrap();
    let source = format!("file:{}", dir.display());
    let running = Running::start(&["--listen", "127.0.0.1:0", "--secrets", &source], &[]);
    let answer = request(&running.addr, "POST", "/v1/sessions", r#"{"secret_key_id":"openai-prod"}"#);
    let expected = format!("the file {}", dir.join("openai-prod").display());
    assert!(answer.starts_with("HTTP/1.1 422") && answer.contains(&expected), "{answer}");
    assert!(!answer.contains("anthropic") && !answer.contains("never-revealed"), "{answer}");
    let said = running.said().join("\n");
    assert!(said.contains(&expected), "the log names the file: {said}");
    drop(running);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_config_file_typo_names_the_key_and_the_file_as_given_without_backticks_or_profile() {
    let dir = scratch("typo");
    let cases = [
        (
            "typo.toml",
            "[session]\ndefault_ttl = 5\n",
            "unknown key session.default_ttl in {file} (did you mean session.default_ttl_seconds?)",
        ),
        (
            "type.toml",
            "[session]\ndefault_ttl_seconds = \"five\"\n",
            "invalid value for key session.default_ttl_seconds in {file}: invalid type: found string \"five\", \
             expected u64",
        ),
    ];
    for (name, content, expected) in cases {
        let file = dir.join(name);
        std::fs::write(&file, content).unwrap();
        let output =
            sidekey().args(["serve", "--listen", "127.0.0.1:0", "--config"]).arg(&file).output().unwrap();
        assert!(!output.status.success(), "{name} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let expected = expected.replace("{file}", &file.display().to_string());
        assert_eq!(stderr.trim(), format!("Error: {expected}"), "{name}");
    }
    // From the environment, the variable (and its flag) is named instead of a file.
    let output = sidekey()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("SIDEKEY_DEFAULT_TTL", "abc")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "SIDEKEY_DEFAULT_TTL=abc was accepted");
    assert!(
        stderr.contains(
            "invalid value for key session.default_ttl_seconds (from SIDEKEY_DEFAULT_TTL or --default-ttl)"
        ),
        "{stderr}"
    );
    // A relative path is named as given, not rewritten.
    let output = sidekey()
        .current_dir(&dir)
        .args(["serve", "--listen", "127.0.0.1:0", "--config", "typo.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("session.default_ttl in typo.toml ("), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_host_name_is_accepted_where_an_address_is_by_flag_and_by_environment() {
    let by_flag = Running::start(&["--listen", "localhost:0"], &[]);
    assert!(request(&by_flag.addr, "GET", "/healthz", "").starts_with("HTTP/1.1 200"));
    let by_environment = Running::start(&[], &[("SIDEKEY_LISTEN", "localhost:0")]);
    assert!(request(&by_environment.addr, "GET", "/healthz", "").starts_with("HTTP/1.1 200"));
}

/// The subcommands and, for each, flags it must list and flags it must not (those of another one).
const SUBCOMMANDS: &[(&str, &[&str], &[&str])] = &[
    ("serve", &["--listen", "--store", "--secrets", "--admin-listen"], &["--bridge-source", "--withdrawn"]),
    (
        "bridge",
        &["--bridge-source", "--secrets"],
        &["--listen", "--store", "--default-ttl", "--admin-listen"],
    ),
    ("announce", &["--withdrawn", "--secrets"], &["--listen", "--store", "--bridge-source", "--default-ttl"]),
    ("config", &["--defaults", "--listen"], &["--withdrawn"]),
    ("openapi", &[], &["--listen", "--secrets", "--config"]),
];

/// The environment-only settings each subcommand reads.
const ENVIRONMENT_ONLY: &[(&str, &[&str])] = &[
    (
        "serve",
        &[
            "SIDEKEY_ADMIN_TOKEN",
            "SIDEKEY_BRIDGE_SECRET",
            "SIDEKEY_AUTH_HS256_SECRET",
            "SIDEKEY_BETTER_AUTH_SECRET",
            "SIDEKEY_SECRET_<ID>",
        ],
    ),
    ("bridge", &["SIDEKEY_BRIDGE_SECRET", "SIDEKEY_SECRET_<ID>"]),
    ("announce", &["SIDEKEY_BRIDGE_SECRET"]),
];

fn help(args: &[&str]) -> String {
    let output = sidekey().args(args).arg("--help").output().unwrap();
    assert!(output.status.success(), "{args:?} --help failed");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_help_opens_with_a_sentence_for_users_and_lists_every_subcommand() {
    let help = help(&[]);
    let first = help.lines().next().unwrap_or_default();
    assert!(first.starts_with("Keeps LLM API keys on the server"), "{help}");
    assert!(!help.contains("`sidekey`:"), "the crate's own comment: {help}");
    for (name, _, _) in SUBCOMMANDS {
        assert!(help.contains(&format!("  {name} ")), "{name} missing from: {help}");
    }
}

#[test]
fn each_subcommand_lists_only_its_own_options_and_the_environment_only_settings_it_reads() {
    for (name, own, others) in SUBCOMMANDS {
        let help = help(&[name]);
        let words: Vec<&str> = help.split_whitespace().collect();
        for flag in *own {
            assert!(words.contains(flag), "`{name} --help` lacks {flag}: {help}");
        }
        for flag in *others {
            assert!(!words.contains(flag), "`{name} --help` lists {flag}: {help}");
        }
    }
    for (name, variables) in ENVIRONMENT_ONLY {
        let help = help(&[name]);
        let environment = help.split("Environment").nth(1).unwrap_or_else(|| panic!("{name}: {help}"));
        for variable in *variables {
            assert!(environment.contains(variable), "`{name} --help` lacks {variable}: {help}");
        }
    }
}

#[test]
fn logs_written_to_a_pipe_carry_no_colour() {
    let running =
        Running::start(&["--listen", "127.0.0.1:0", "--log-format", "human"], &[("SIDEKEY_LISTN", "x")]);
    let said = running.said();
    assert!(said.iter().any(|line| line.contains("SIDEKEY_LISTN")), "{said:#?}");
    assert!(said.iter().all(|line| !line.contains('\u{1b}')), "escape codes in a pipe: {said:#?}");
}

#[test]
fn the_example_configuration_starts_the_server() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/sidekey.toml");
    let running = Running::start(&["--config", example, "--listen", "127.0.0.1:0"], &[]);
    assert!(request(&running.addr, "GET", "/healthz", "").starts_with("HTTP/1.1 200"));
    let said = running.said().join("\n");
    assert!(said.contains("openai") && said.contains("anthropic"), "its upstreams are served: {said}");
}
