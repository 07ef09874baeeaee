//! Private `redis-server` processes for the Redis fault, TLS, Unix-socket and Cluster tests.
//!
//! A [`PrivateRedis`] is one `redis-server` of the test's own, on a free loopback port, in a fresh temporary
//! directory, persisting every write to its append-only file (so a stop, or even a crash, loses nothing),
//! which the test may stop, restart, kill, freeze and thaw. A [`PrivateCluster`] is three of them joined
//! into a Redis Cluster of three masters. Every process is killed and every directory removed on drop, so a
//! failed assertion leaves nothing behind.
//!
//! Each server also listens on a Unix socket in its directory, whatever URL the store is given: the harness
//! talks to the server through it (readiness, `SHUTDOWN`, `CLUSTER INFO`, `DBSIZE`), so that it works the
//! same for plain TCP, TLS and cluster nodes.
//!
//! Tests call [`skip_unless_installed`](crate::skip_unless_installed) first: without `redis-server` (or
//! `openssl`, or `redis-cli`) on the `PATH` they print why and return, except under `CI=true`, where a
//! missing tool is a failure.
#![allow(dead_code, reason = "each test binary uses its own part of the harness")]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use std::{fs, thread};

use crate::unique::{TempDir, free_port};

/// How long a server may take to answer `PING` after being started: it loads at most a few sessions from
/// its append-only file, so anything near this bound means it is not coming up at all.
const READY_WITHIN: Duration = Duration::from_secs(5);

/// How long a server may take to exit after `SHUTDOWN` (its data is already on disk: `appendfsync always`)
/// before the harness kills it.
const EXIT_WITHIN: Duration = Duration::from_secs(5);

/// How long a cluster may take to be created and to report `cluster_state:ok` on every node. Three empty
/// local nodes need about a second; the bound only keeps a broken setup from hanging the test.
const CLUSTER_READY_WITHIN: Duration = Duration::from_secs(20);

/// How often the harness polls a process or a server while waiting.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Timeout of each admin command on the Unix socket, so that a frozen server cannot hang the harness.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(1);

/// How many times a first start may be retried on fresh ports: the port is free when chosen but released
/// before `redis-server` binds it, so another process may take it in between.
const START_ATTEMPTS: u32 = 3;

/// How clients reach a [`PrivateRedis`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP on `127.0.0.1:port`: `redis://`.
    Tcp,
    /// The Unix socket in the server's directory: `redis+unix://`.
    Unix,
    /// TLS on `127.0.0.1:port`, with a certificate from a CA made for this server; no plain TCP port.
    Tls,
    /// Plain TCP, as a Redis Cluster node (its bus on a second free port).
    ClusterNode,
}

/// The files of a [`Transport::Tls`] server, all in its directory.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA that signed the server's certificate (what a verifying client would trust).
    pub ca_cert: PathBuf,
    /// The server's certificate, for `127.0.0.1` and `localhost`.
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
}

/// A `redis-server` process of the test's own. Killed, and its directory removed, on drop.
pub struct PrivateRedis {
    transport: Transport,
    port: u16,
    /// The cluster bus port of a [`Transport::ClusterNode`]: chosen free like `port` rather than the default
    /// `port + 10000`, which is past 65535 for most ephemeral ports.
    bus_port: u16,
    tls: Option<TlsFiles>,
    /// Whether the process was frozen with `SIGSTOP` (and not yet thawed).
    paused: bool,
    child: Option<Child>,
    // Last field: dropped after `Drop::drop` killed the process.
    dir: TempDir,
}

impl PrivateRedis {
    /// A server on plain TCP (`redis://127.0.0.1:port`).
    pub fn start() -> Self {
        Self::start_with(Transport::Tcp)
    }

    /// A server reached through its Unix socket only (`redis+unix://…/redis.sock`).
    pub fn start_unix() -> Self {
        Self::start_with(Transport::Unix)
    }

    /// A server on TLS only (`rediss://127.0.0.1:port/#insecure`), with a CA and server certificate made
    /// with the `openssl` command for it.
    pub fn start_tls() -> Self {
        Self::start_with(Transport::Tls)
    }

    /// A server, up and answering `PING`.
    ///
    /// # Panics
    /// When it does not come up within `READY_WITHIN` (on fresh ports, `START_ATTEMPTS` times); the
    /// message carries the end of its log.
    pub fn start_with(transport: Transport) -> Self {
        let dir = TempDir::new("redis");
        let tls = (transport == Transport::Tls).then(|| make_certificates(dir.path()));
        let mut server = Self { transport, port: 0, bus_port: 0, tls, paused: false, child: None, dir };
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            server.port = free_port();
            server.bus_port = if transport == Transport::ClusterNode { free_port() } else { 0 };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("redis-server did not start:\n{}", failures.join("\n---\n"));
    }

    /// The URL a store is given to reach this server.
    pub fn url(&self) -> String {
        match self.transport {
            Transport::Tcp | Transport::ClusterNode => format!("redis://127.0.0.1:{}", self.port),
            Transport::Unix => format!("redis+unix://{}", self.socket_path().display()),
            // The store has no setting for a CA of its own, so the client skips verification; the CA is
            // still made (see `tls_files`) so that a client that can trust it may be pointed at it.
            Transport::Tls => format!("rediss://127.0.0.1:{}/#insecure", self.port),
        }
    }

    /// The TCP (or TLS) port; for [`Transport::Unix`] a port chosen but not listened on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address a cluster node announces: `127.0.0.1:port`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The Unix socket the server listens on (the URL of [`Transport::Unix`], the harness's admin channel
    /// for every transport).
    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// The certificate files of a [`Transport::Tls`] server.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// The process id while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running (frozen counts as running).
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Stops the server cleanly (`SHUTDOWN`, as on `SIGTERM`) and waits for it to exit; kills it if it has
    /// not within `EXIT_WITHIN`. Every write it acknowledged is in its append-only file.
    pub fn stop(&mut self) {
        if self.paused {
            self.resume();
        }
        let Some(mut child) = self.child.take() else { return };
        // The server closes the connection instead of answering; an error here only means it is gone.
        let _ = admin_command(&self.socket_path(), &["SHUTDOWN"]);
        let deadline = Instant::now() + EXIT_WITHIN;
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server did not exit within {EXIT_WITHIN:?} of SHUTDOWN:\n{}", self.log_tail());
            }
            thread::sleep(POLL_EVERY);
        }
    }

    /// Kills the server with `SIGKILL`, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        self.paused = false;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the stopped (or killed) server again on the same port and directory, so it reloads its
    /// append-only file, and waits until it answers `PING`.
    ///
    /// # Panics
    /// When it is still running, or does not come up within `READY_WITHIN`.
    pub fn restart(&mut self) {
        assert!(!self.is_running(), "restart() of a server that is still running");
        self.child = None;
        if let Err(failure) = self.spawn_and_wait() {
            panic!("redis-server did not restart on port {}:\n{failure}", self.port);
        }
    }

    /// Starts the stopped (or killed) server again on the same port with nothing in it, as a replacement
    /// server would come back: its append-only files are deleted first.
    ///
    /// # Panics
    /// As [`PrivateRedis::restart`].
    pub fn restart_empty(&mut self) {
        assert!(!self.is_running(), "restart_empty() of a server that is still running");
        // Redis 7 keeps its append-only files in `appendonlydir`, earlier versions in `appendonly.aof`.
        let _ = fs::remove_dir_all(self.dir.path().join("appendonlydir"));
        let _ = fs::remove_file(self.dir.path().join("appendonly.aof"));
        self.restart();
    }

    /// Freezes the process with `SIGSTOP`: its sockets stay open (the kernel still accepts connections)
    /// but nothing is answered, as with a server stuck on a slow disk.
    pub fn pause(&mut self) {
        self.signal("STOP");
        self.paused = true;
    }

    /// Thaws a process frozen by [`PrivateRedis::pause`] with `SIGCONT`.
    pub fn resume(&mut self) {
        self.signal("CONT");
        self.paused = false;
    }

    /// Runs a command on the admin socket and returns its reply as text (see [`admin_command`]).
    ///
    /// # Panics
    /// When the server cannot be reached or answers with an error.
    pub fn command(&self, args: &[&str]) -> String {
        match admin_command(&self.socket_path(), args) {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => panic!("redis-server answered {args:?} with an error: {error}"),
            Err(error) => panic!("redis-server did not answer {args:?}: {error}"),
        }
    }

    /// How many keys the server holds.
    pub fn dbsize(&self) -> u64 {
        let reply = self.command(&["DBSIZE"]);
        reply.parse().unwrap_or_else(|_| panic!("DBSIZE answered {reply:?}"))
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The command line: the same on every (re)start, so a restart finds the same port, socket and files.
    fn arguments(&self) -> Vec<String> {
        let dir = self.dir.path();
        let in_dir = |name: &str| dir.join(name).display().to_string();
        let mut args: Vec<String> = [
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "no",
            // Every acknowledged write is on disk before the reply, so a restart or a crash loses nothing.
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            // No RDB snapshots: the append-only file is the one persistence under test.
            "--save",
            "",
            "--unixsocketperm",
            "700",
            "--loglevel",
            "notice",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        args.extend(["--dir".to_owned(), dir.display().to_string()]);
        args.extend(["--logfile".to_owned(), in_dir("redis.log")]);
        args.extend(["--unixsocket".to_owned(), self.socket_path().display().to_string()]);
        match self.transport {
            Transport::Tcp => args.extend(["--port".to_owned(), self.port.to_string()]),
            Transport::Unix => args.extend(["--port".to_owned(), "0".to_owned()]),
            Transport::Tls => {
                let tls = self.tls.as_ref().expect("a TLS server has certificates");
                args.extend(
                    [
                        ("--port", "0".to_owned()),
                        ("--tls-port", self.port.to_string()),
                        ("--tls-cert-file", tls.server_cert.display().to_string()),
                        ("--tls-key-file", tls.server_key.display().to_string()),
                        ("--tls-ca-cert-file", tls.ca_cert.display().to_string()),
                        ("--tls-auth-clients", "no".to_owned()),
                    ]
                    .into_iter()
                    .flat_map(|(name, value)| [name.to_owned(), value]),
                );
            }
            Transport::ClusterNode => args.extend(
                [
                    ("--port", self.port.to_string()),
                    ("--cluster-enabled", "yes".to_owned()),
                    ("--cluster-port", self.bus_port.to_string()),
                    ("--cluster-config-file", in_dir(&format!("nodes-{}.conf", self.port))),
                    ("--cluster-node-timeout", "5000".to_owned()),
                ]
                .into_iter()
                .flat_map(|(name, value)| [name.to_owned(), value]),
            ),
        }
        args
    }

    /// Spawns `redis-server` and waits until it answers `PING` on its socket. On failure the process is
    /// reaped and the error carries the log's end.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let mut child = Command::new("redis-server")
            .args(self.arguments())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|error| format!("cannot run redis-server: {error}"))?;
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("redis-server exited with {status}:\n{}", self.log_tail()));
            }
            if matches!(admin_command(&self.socket_path(), &["PING"]), Ok(Ok(ref pong)) if pong == "PONG") {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no PONG within {READY_WITHIN:?}:\n{}", self.log_tail()));
            }
            thread::sleep(POLL_EVERY);
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().expect("signal to a server that is not running");
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("run the kill command");
        assert!(status.success(), "kill -{signal} {pid} failed: {status}");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        // SIGKILL ends a frozen process too; the directory goes with `self.dir` right after.
        self.kill();
    }
}

/// Three `redis-server` processes joined into a Redis Cluster of three masters and no replicas, each
/// holding a third of the 16384 hash slots.
pub struct PrivateCluster {
    nodes: Vec<PrivateRedis>,
}

impl PrivateCluster {
    /// Starts three nodes, creates the cluster with `redis-cli --cluster create`, and waits until every
    /// node reports `cluster_state:ok` and all slots assigned.
    ///
    /// # Panics
    /// When any of that fails or takes longer than `CLUSTER_READY_WITHIN`.
    pub fn start() -> Self {
        let nodes: Vec<PrivateRedis> =
            (0..3).map(|_| PrivateRedis::start_with(Transport::ClusterNode)).collect();
        let deadline = Instant::now() + CLUSTER_READY_WITHIN;
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create").args(nodes.iter().map(PrivateRedis::address)).args([
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ]);
        let output = run_bounded(&mut create, deadline);
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        let cluster = Self { nodes };
        cluster.wait_until_ok(deadline.saturating_duration_since(Instant::now()));
        cluster
    }

    /// Waits until every node reports `cluster_state:ok`, all 16384 slots served and all three nodes
    /// known (after [`PrivateCluster::start`], or after a node's restart).
    ///
    /// # Panics
    /// When that is not so `within`.
    pub fn wait_until_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let states: Vec<String> = self
                .nodes
                .iter()
                .map(|node| match admin_command(&node.socket_path(), &["CLUSTER", "INFO"]) {
                    Ok(Ok(info)) => info,
                    other => format!("{other:?}"),
                })
                .collect();
            let ready = states.iter().all(|info| {
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && info.contains("cluster_known_nodes:3")
            });
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster is not ok:\n{}", states.join("\n---\n"));
            thread::sleep(POLL_EVERY * 5);
        }
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`.
    pub fn url(&self) -> String {
        let addresses: Vec<String> = self.nodes.iter().map(PrivateRedis::address).collect();
        format!("redis+cluster://{}", addresses.join(","))
    }

    /// The three masters.
    pub fn nodes(&self) -> &[PrivateRedis] {
        &self.nodes
    }

    /// One master, to stop, freeze or restart. A restarted node rejoins with its slots: its cluster
    /// config file (node id, epoch, slots) is in its directory, which a restart keeps.
    pub fn node_mut(&mut self, index: usize) -> &mut PrivateRedis {
        &mut self.nodes[index]
    }
}

/// Runs `command` to completion, killing it at `deadline`.
///
/// # Panics
/// When it cannot be run or does not finish by `deadline`.
fn run_bounded(command: &mut Command, deadline: Instant) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    // Its output is small (a few KiB), far below a pipe's buffer, so waiting before reading cannot block.
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().expect("collect the command's output"),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL_EVERY),
            _ => {
                let _ = child.kill();
                let output = child.wait_with_output().expect("collect the command's output");
                panic!(
                    "{command:?} did not finish in time:\n{}\n{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr),
                );
            }
        }
    }
}

/// Makes a CA and a server certificate for `127.0.0.1` / `localhost` signed by it, with the `openssl`
/// command, in `dir`. P-256 keys: quick to make, and accepted by rustls.
fn make_certificates(dir: &Path) -> TlsFiles {
    let files = TlsFiles {
        ca_cert: dir.join("ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
    };
    let ca_key = dir.join("ca.key");
    let request = dir.join("server.csr");
    let extensions = dir.join("server.ext");
    fs::write(
        &extensions,
        "basicConstraints = CA:FALSE\n\
         keyUsage = digitalSignature, keyEncipherment\n\
         extendedKeyUsage = serverAuth\n\
         subjectAltName = IP:127.0.0.1, DNS:localhost\n",
    )
    .expect("write the certificate extensions");
    let path = |path: &PathBuf| path.display().to_string();
    let ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let deadline = Instant::now() + Duration::from_secs(20);
    let steps: [Vec<String>; 3] = [
        ["req", "-x509"]
            .iter()
            .chain(&ec_key)
            .map(|arg| (*arg).to_owned())
            .chain(["-keyout".to_owned(), path(&ca_key), "-out".to_owned(), path(&files.ca_cert)])
            .chain(["-days", "2", "-subj", "/CN=sidekey test CA"].map(str::to_owned))
            .collect(),
        ["req"]
            .iter()
            .chain(&ec_key)
            .map(|arg| (*arg).to_owned())
            .chain(["-keyout".to_owned(), path(&files.server_key), "-out".to_owned(), path(&request)])
            .chain(["-subj", "/CN=127.0.0.1"].map(str::to_owned))
            .collect(),
        ["x509", "-req", "-in"]
            .map(str::to_owned)
            .into_iter()
            .chain([
                path(&request),
                "-CA".to_owned(),
                path(&files.ca_cert),
                "-CAkey".to_owned(),
                path(&ca_key),
            ])
            .chain(["-CAcreateserial", "-days", "2", "-extfile"].map(str::to_owned))
            .chain([path(&extensions), "-out".to_owned(), path(&files.server_cert)])
            .collect(),
    ];
    for step in steps {
        let output = run_bounded(Command::new("openssl").args(&step).current_dir(dir), deadline);
        assert!(
            output.status.success(),
            "openssl {} failed:\n{}",
            step.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    files
}

/// Sends one command to the server on `socket` and reads its reply: `Ok(Ok(text))` for a status, integer
/// or bulk reply (a nil as empty text), `Ok(Err(text))` for an error reply, `Err` when the server cannot be
/// reached or does not answer within `ADMIN_TIMEOUT`.
pub fn admin_command(socket: &Path, args: &[&str]) -> io::Result<Result<String, String>> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(ADMIN_TIMEOUT))?;
    stream.set_write_timeout(Some(ADMIN_TIMEOUT))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(request.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
    }
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" | ":" => Ok(Ok(rest.to_owned())),
        "-" => Ok(Err(rest.to_owned())),
        "$" => {
            let Ok(length) = rest.parse::<usize>() else { return Ok(Ok(String::new())) }; // $-1: nil
            let mut body = vec![0; length + 2];
            reader.read_exact(&mut body)?;
            body.truncate(length);
            Ok(Ok(String::from_utf8_lossy(&body).into_owned()))
        }
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, format!("unexpected reply {line:?}"))),
    }
}
