//! A private PostgreSQL server for the directory's outage tests.
//!
//! A [`PrivatePostgres`] is a cluster of the test's own: `initdb` in a fresh temporary directory, `trust`
//! authentication, listening on a free loopback port (and a Unix socket in its directory only), which the
//! test may stop and start again on the same port. Stopped (immediately) and its directory removed on
//! drop, so a failed assertion leaves nothing behind.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, every server command runs as the
//! `postgres` user (`runuser -u postgres --`), which then owns the directory.
#![allow(dead_code, reason = "each test binary uses its own part of the harness")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::{env, fs};

use crate::services::is_executable;
use crate::unique::{TempDir, free_port};

/// How long `pg_ctl` may wait for the server to start or stop (`-t`): an empty cluster needs well under a
/// second; the bound only keeps a broken setup from hanging the test.
const PG_CTL_WAIT_SECONDS: &str = "30";

/// A PostgreSQL server of the test's own; see the [module documentation](self).
pub struct PrivatePostgres {
    bin: PathBuf,
    port: u16,
    /// `Some(user)` when commands must run as that user (the tests run as root).
    run_as: Option<&'static str>,
    running: bool,
    // Last field: removed after `Drop::drop` stopped the server.
    dir: TempDir,
}

impl PrivatePostgres {
    /// Creates a cluster (`initdb`), not started yet. `Err` says why it cannot (no PostgreSQL binaries, no
    /// `postgres` user to run them as root, `initdb` failed): the caller skips or fails the test.
    pub fn init() -> Result<Self, String> {
        let bin = server_bin_dir().ok_or("no PostgreSQL server binaries (initdb, pg_ctl) found")?;
        let run_as = if is_root() { Some("postgres") } else { None };
        let dir = TempDir::try_new("pg")?;
        if let Some(user) = run_as {
            let (uid, gid) = ids_of(user)?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|error| format!("cannot give {} to {user}: {error}", dir.path().display()))?;
        }
        let port = free_port();
        let server = Self { bin, dir, port, run_as, running: false };
        let data = server.data_dir();
        server.run(
            "initdb",
            &["-D", path_str(&data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"],
        )?;
        Ok(server)
    }

    /// Starts the server (again) on its port, and waits until it accepts connections.
    pub fn start(&mut self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            path_str(self.dir.path())
        );
        let data = self.data_dir();
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-l",
                path_str(&log),
                "-o",
                &options,
                "-w",
                "-t",
                PG_CTL_WAIT_SECONDS,
                "start",
            ],
        )
        .map_err(|error| format!("{error}\n{}", self.log_tail()))?;
        self.running = true;
        Ok(())
    }

    /// Stops the server (`fast`: clients are disconnected) and waits until it has exited.
    pub fn stop(&mut self) {
        self.stop_with("fast");
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`, with `query` appended when not empty.
    pub fn url(&self, query: &str) -> String {
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        if query.is_empty() { url } else { format!("{url}?{query}") }
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn stop_with(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        let data = self.data_dir();
        let _ =
            self.run("pg_ctl", &["-D", path_str(&data), "-m", mode, "-w", "-t", PG_CTL_WAIT_SECONDS, "stop"]);
        self.running = false;
    }

    /// Runs a server program from the binaries' directory, as the server's user.
    fn run(&self, program: &str, args: &[&str]) -> Result<Output, String> {
        let program_path = self.bin.join(program);
        let mut command = match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(&program_path);
                command
            }
            None => Command::new(&program_path),
        };
        // From the server's directory: the postgres user may not be allowed into the test's cwd.
        command.args(args).current_dir(self.dir.path()).stdin(Stdio::null());
        let output = command.output().map_err(|error| format!("cannot run {program}: {error}"))?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(format!(
                "{program} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // The directory goes with `self.dir` right after.
        self.stop_with("immediate");
    }
}

/// Where `initdb` and `pg_ctl` are: `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`
/// (Debian keeps them off the `PATH`), else the `PATH`.
fn server_bin_dir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| ["initdb", "pg_ctl"].iter().all(|tool| is_executable(&dir.join(tool)));
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    let mut debian: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .collect();
    debian.sort_by_key(|path| {
        let version = path.parent().and_then(Path::file_name).and_then(|name| name.to_str());
        version.and_then(|version| version.parse::<u32>().ok()).unwrap_or(0)
    });
    let on_path =
        env::var_os("PATH").map(|path| env::split_paths(&path).collect::<Vec<_>>()).unwrap_or_default();
    from_pg_config.into_iter().chain(debian.into_iter().rev()).chain(on_path).find(|dir| has_tools(dir))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// The uid and gid of `user`.
fn ids_of(user: &str) -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let output = Command::new("id")
            .args([flag, user])
            .output()
            .map_err(|error| format!("cannot run id: {error}"))?;
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .map_err(|_| format!("no {user} user to run PostgreSQL as (the tests run as root)"))
    };
    Ok((id("-u")?, id("-g")?))
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}
