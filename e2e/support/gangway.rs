//! A `gangway run` process serving a temporary manifest directory, for one test.
//!
//! The listeners bind port 0 and the test reads the ports from the `gangway is serving` log
//! line, so tests running in parallel never race for a port. Logs are JSON and kept in memory
//! for assertions; a failing test prints them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ChildGuard;
use super::backends::{TestServer, echo_services};
use super::clients::{CHANGE_TIMEOUT, get};
use super::manifests::{INGRESS_CLASS, ingress};

/// Bound on start and stop; generous because other builds may load the machine.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);

/// Flags every test gets unless it sets them itself. One worker thread keeps the load low on
/// a busy machine; the shutdown timeout bounds a test that leaves a request open.
const DEFAULT_FLAGS: [(&str, &str); 7] = [
    ("--http-listen", "127.0.0.1:0"),
    ("--https-listen", "127.0.0.1:0"),
    ("--admin-listen", "127.0.0.1:0"),
    ("--log-format", "json"),
    ("--log-level", "info"),
    ("--worker-threads", "1"),
    ("--shutdown-timeout", "5s"),
];

/// A running `gangway run --manifests <temporary directory>`, killed on drop.
pub struct Gangway {
    /// The plain HTTP listener.
    pub http: SocketAddr,
    /// The HTTPS listener.
    pub https: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    process: ChildGuard,
    logs: Arc<Mutex<Vec<String>>>,
    /// The thread that copies stderr into `logs`; it ends when the process closes stderr.
    log_reader: Option<std::thread::JoinHandle<()>>,
    directory: tempfile::TempDir,
}

impl Gangway {
    /// Writes `files` (name, content) into a new directory and starts Gangway on it with the
    /// default flags.
    pub async fn start(files: &[(&str, &str)]) -> Gangway {
        Self::start_with(files, &[]).await
    }

    /// Like [`Gangway::start`], with extra flags such as `["--https-public-port", "8443"]`. A
    /// flag given here replaces its default.
    pub async fn start_with(files: &[(&str, &str)], flags: &[&str]) -> Gangway {
        let directory = tempfile::TempDir::new().unwrap();
        for (name, content) in files {
            write_atomically(directory.path(), name, content.as_bytes());
        }
        Self::spawn(directory, flags).await
    }

    async fn spawn(directory: tempfile::TempDir, flags: &[&str]) -> Gangway {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gangway"));
        command.args(["run", "--manifests"]).arg(directory.path());
        for (flag, value) in DEFAULT_FLAGS {
            if !flags.contains(&flag) {
                command.args([flag, value]);
            }
        }
        let child = command
            .args(flags)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("failed to start gangway run");
        let mut process = ChildGuard(child);
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = process.0.stderr.take().unwrap();
        let sink = logs.clone();
        let log_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push(line);
            }
        });

        let started = Instant::now();
        let serving = loop {
            let line = logs
                .lock()
                .unwrap()
                .iter()
                .find(|line| line.contains("\"gangway is serving\""))
                .cloned();
            if let Some(line) = line {
                break serde_json::from_str::<Value>(&line).unwrap();
            }
            if let Some(status) = process.0.try_wait().unwrap() {
                panic!(
                    "gangway exited with {status} before serving:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
            assert!(
                started.elapsed() < PROCESS_TIMEOUT,
                "gangway did not start within {PROCESS_TIMEOUT:?}:\n{}",
                logs.lock().unwrap().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let address = |field: &str| -> SocketAddr {
            serving[field]
                .as_str()
                .and_then(|text| text.parse().ok())
                .unwrap_or_else(|| panic!("no {field} address in {serving}"))
        };
        Gangway {
            http: address("http"),
            https: address("https"),
            admin: address("admin"),
            process,
            logs,
            log_reader: Some(log_reader),
            directory,
        }
    }

    /// Returns the manifest directory.
    pub fn directory(&self) -> &Path {
        self.directory.path()
    }

    /// Returns the path of a file in the manifest directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.directory.path().join(name)
    }

    /// Replaces (or creates) a manifest file in one step, by writing a hidden file and renaming
    /// it, as editors and ConfigMap volume updates do, so Gangway never reads half a file.
    pub fn write(&self, name: &str, content: &str) {
        write_atomically(self.directory.path(), name, content.as_bytes());
    }

    /// Like [`Gangway::write`] with raw bytes.
    pub fn write_bytes(&self, name: &str, content: &[u8]) {
        write_atomically(self.directory.path(), name, content);
    }

    /// Deletes a manifest file.
    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.path(name)).unwrap();
    }

    /// Returns `/debug/routes`: the live routing table (`generation`, `virtualHosts`,
    /// `backends`, `certificates`) and the `problems` of the last compile.
    pub async fn routes(&self) -> Value {
        let reply = get(self.admin, "admin", "/debug/routes").await;
        assert_eq!(reply.status, 200, "/debug/routes: {}", reply.text());
        reply.json()
    }

    /// Returns the generation of the live snapshot.
    pub async fn generation(&self) -> u64 {
        self.routes().await["generation"]
            .as_u64()
            .expect("/debug/routes has no generation")
    }

    /// Waits until a snapshot newer than `generation` is live and returns its `/debug/routes`.
    pub async fn wait_for_newer(&self, generation: u64) -> Value {
        let started = Instant::now();
        loop {
            let routes = self.routes().await;
            if routes["generation"].as_u64().unwrap_or(0) > generation {
                return routes;
            }
            assert!(
                started.elapsed() < CHANGE_TIMEOUT,
                "no snapshot newer than generation {generation} within {CHANGE_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes a manifest file and waits until Gangway published a snapshot that includes it.
    /// The content must differ from what the file held, or nothing is published.
    pub async fn write_and_wait(&self, name: &str, content: &[u8]) -> Value {
        let generation = self.generation().await;
        self.write_bytes(name, content);
        self.wait_for_newer(generation).await
    }

    /// Returns the log lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Returns the log lines so far as JSON records; lines that are not JSON are skipped.
    pub fn log_records(&self) -> Vec<Value> {
        self.logs()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Waits up to `CHANGE_TIMEOUT` for a log record that `matches` accepts, because lines
    /// reach the test through a reader thread some time after the process writes them.
    /// Returns whether one arrived.
    pub async fn wait_for_log_record(&self, matches: impl Fn(&Value) -> bool) -> bool {
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        loop {
            if self.log_records().iter().any(&matches) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Returns the process id, for sending signals.
    pub fn pid(&self) -> u32 {
        self.process.0.id()
    }

    /// Returns true while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.process.0.try_wait().unwrap().is_none()
    }

    /// Sends SIGTERM.
    pub fn send_sigterm(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("failed to run kill");
        assert!(sent.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits for the process to exit, failing the test after [`PROCESS_TIMEOUT`]. Once it
    /// returns, [`Gangway::logs`] contains every line the process wrote.
    pub async fn wait_for_exit(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.process.0.try_wait().unwrap() {
                if let Some(reader) = self.log_reader.take() {
                    tokio::task::spawn_blocking(move || reader.join())
                        .await
                        .unwrap()
                        .expect("the log reader thread panicked");
                }
                return status;
            }
            assert!(
                started.elapsed() < PROCESS_TIMEOUT,
                "gangway did not exit within {PROCESS_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.send_sigterm();
        self.wait_for_exit().await
    }
}

/// Starts an echo backend named `app` and Gangway, with `flags`, routing every path of `host`
/// to it. The backend stops when the returned server drops.
pub async fn start_echo_app(host: &str, flags: &[&str]) -> (Gangway, TestServer) {
    let (mut servers, services) = echo_services(&["app"]).await;
    let gangway = Gangway::start_with(
        &[
            ("class.yaml", INGRESS_CLASS),
            ("services.yaml", &services),
            ("ingress.yaml", &ingress("app", host, "app")),
        ],
        flags,
    )
    .await;
    (gangway, servers.remove(0))
}

impl Drop for Gangway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("gangway logs:\n{}", self.logs.lock().unwrap().join("\n"));
        }
    }
}

/// Finds the problems in `/debug/routes` about object `kind` `name` (namespace `default`, or
/// none for a file or a cluster-scoped object).
pub fn problems_of<'a>(routes: &'a Value, kind: &str, name: &str) -> Vec<&'a Value> {
    routes["problems"]
        .as_array()
        .expect("/debug/routes has no problems list")
        .iter()
        .filter(|problem| problem["object"]["kind"] == kind && problem["object"]["name"] == name)
        .collect()
}

/// Returns the one problem about `kind` `name` with `reason`, failing the test with every
/// problem when there is none.
pub fn problem<'a>(routes: &'a Value, kind: &str, name: &str, reason: &str) -> &'a Value {
    problems_of(routes, kind, name)
        .into_iter()
        .find(|problem| problem["reason"] == reason)
        .unwrap_or_else(|| {
            panic!(
                "no {reason} problem for {kind} {name}; problems: {:#}",
                routes["problems"]
            )
        })
}

fn write_atomically(directory: &Path, name: &str, content: &[u8]) {
    let target = directory.join(name);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let temporary = directory.join(format!(".{}.tmp", name.replace('/', "_")));
    std::fs::write(&temporary, content).unwrap();
    std::fs::rename(&temporary, &target).unwrap();
}
