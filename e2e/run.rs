//! End-to-end tests of `gangway run`: the built binary serving a manifest directory through
//! the proxy, following changes to it, and stopping on SIGTERM.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gangway::demo::echo;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod support;

use support::manifests::{self, INGRESS_CLASS};
use support::{ChildGuard, free_port, wait_until_ready};

/// Generous bounds, because other builds may load the machine.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a change to the directory may take to show in responses. The provider publishes
/// within milliseconds; the bound only keeps a failing test from hanging.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(2);

/// Returns the status code of a GET through the proxy for `host`.
fn status_for_host(http_port: u16, host: &str) -> String {
    let output = Command::new("curl")
        .args(["--silent", "--output", "/dev/null", "--max-time", "5"])
        .args(["--write-out", "%{http_code}", "--header"])
        .arg(format!("Host: {host}"))
        .arg(format!("http://127.0.0.1:{http_port}/"))
        .output()
        .expect("failed to run curl");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn wait_for_status(http_port: u16, host: &str, expected: &str, timeout: Duration) {
    let started = Instant::now();
    loop {
        let status = status_for_host(http_port, host);
        if status == expected {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "{host} returned {status}, expected {expected}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn run_serves_directory_and_follows_changes() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let backend = runtime
        .block_on(echo::start("echo", shutdown.clone(), &tracker))
        .unwrap();
    let dir = tempfile::TempDir::new().unwrap();
    let base = manifests::documents(&[
        INGRESS_CLASS.to_owned(),
        manifests::backend("echo", &[backend.address]),
    ]);
    write(dir.path(), "base.yaml", &base);
    write(
        dir.path(),
        "first.yaml",
        &manifests::ingress("first", "first.test", "echo"),
    );

    let (http, https, admin) = (free_port(), free_port(), free_port());
    let stderr_file = tempfile::NamedTempFile::new().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_gangway"))
        .args(["run", "--manifests"])
        .arg(dir.path())
        .args(["--http-listen", &format!("127.0.0.1:{http}")])
        .args(["--https-listen", &format!("127.0.0.1:{https}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--log-format", "json", "--shutdown-timeout", "2s"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(stderr_file.reopen().unwrap())
        .spawn()
        .expect("failed to start gangway run");
    let mut gangway = ChildGuard(child);

    // The first snapshot is live before the proxy accepts, so the first 200 from /readyz
    // means the route works.
    wait_until_ready(admin, START_TIMEOUT);
    assert_eq!(status_for_host(http, "first.test"), "200");
    assert_eq!(status_for_host(http, "second.test"), "404");

    // A new file goes live.
    write(
        dir.path(),
        "second.yaml",
        &manifests::ingress("second", "second.test", "echo"),
    );
    wait_for_status(http, "second.test", "200", CHANGE_TIMEOUT);

    // A broken rewrite keeps the last valid version.
    write(dir.path(), "second.yaml", "kind: [unclosed\n");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(status_for_host(http, "second.test"), "200");

    // Deleting the file removes its routes.
    std::fs::remove_file(dir.path().join("second.yaml")).unwrap();
    wait_for_status(http, "second.test", "404", CHANGE_TIMEOUT);

    let status = gangway.terminate(STOP_TIMEOUT);
    let logs = std::fs::read_to_string(stderr_file.path()).unwrap();
    assert_eq!(status.code(), Some(0), "logs:\n{logs}");

    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut gangway.0.stdout.take().unwrap(), &mut stdout).unwrap();
    assert_eq!(stdout, "", "run prints nothing but logs, to stderr");
    let mut published = 0;
    for line in logs.lines() {
        let record: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("log line is not JSON ({error}): {line}"));
        if record["message"] == "published snapshot" {
            published += 1;
        }
    }
    // The start, the new file, the broken rewrite (a new problem) and the deletion.
    assert_eq!(published, 4, "logs:\n{logs}");
    let problem_logged = logs
        .lines()
        .any(|line| line.contains("InvalidManifest") && line.contains("second.yaml"));
    assert!(problem_logged, "logs:\n{logs}");

    shutdown.cancel();
}

#[test]
fn missing_kubeconfig_exits_one() {
    let output = Command::new(env!("CARGO_BIN_EXE_gangway"))
        .args(["run", "--kubeconfig", "/nonexistent/gangway-kubeconfig"])
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--https-listen",
            "127.0.0.1:0",
        ])
        .args(["--admin-listen", "127.0.0.1:0"])
        .env_remove("GANGWAY_MANIFESTS")
        .output()
        .expect("failed to run gangway");
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("failed to start cluster mode"), "{stderr}");
    assert!(
        stderr.contains("failed to read kubeconfig /nonexistent/gangway-kubeconfig"),
        "{stderr}"
    );
}

#[test]
fn manifests_with_cluster_flag_exits_two() {
    let output = Command::new(env!("CARGO_BIN_EXE_gangway"))
        .args([
            "run",
            "--manifests",
            "examples",
            "--watch-namespace",
            "apps",
        ])
        .output()
        .expect("failed to run gangway");
    let stderr = String::from_utf8_lossy(&output.stderr);

    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    assert!(stderr.contains("--watch-namespace"), "{stderr}");
}
