//! The operator's tools: `kubectl` against a kubeconfig, `curl` through a replica, and bounded
//! waits.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Maximum wait for any condition in this test. Generous, because other builds may load the
/// machine; a passing run waits a few seconds at most.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// `kubectl` with a fixed kubeconfig and its own discovery cache.
pub struct Kubectl {
    kubeconfig: PathBuf,
    /// Discovery cache in the test's directory, so a cache of another server that once used
    /// the same port is never read.
    cache_dir: PathBuf,
    /// Directory for the manifests given to `-f`.
    manifest_dir: PathBuf,
}

impl Kubectl {
    /// Uses `kubeconfig`, and `work_dir` for the cache and the manifest files.
    pub fn new(kubeconfig: &Path, work_dir: &Path) -> Self {
        Self {
            kubeconfig: kubeconfig.to_owned(),
            cache_dir: work_dir.join("kubectl-cache"),
            manifest_dir: work_dir.to_owned(),
        }
    }

    /// Runs `kubectl <args>` with a 20 s request timeout, and returns its standard output or,
    /// when it fails, its standard error.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .arg("--request-timeout=20s")
            .args(args)
            .output()
            .expect("failed to run kubectl");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// Runs `kubectl <args>` and returns its standard output, or panics with its error.
    pub fn ok(&self, args: &[&str]) -> String {
        self.run(args)
            .unwrap_or_else(|error| panic!("kubectl {args:?} failed: {error}"))
    }

    /// Writes `manifest` to `<name>.yaml` and runs `kubectl <verb> -f` on it.
    pub fn with_file(&self, verb: &str, name: &str, manifest: &str) -> String {
        let path = self.manifest_dir.join(format!("{name}.yaml"));
        std::fs::write(&path, manifest).expect("failed to write a manifest");
        let path = path.to_str().expect("temporary paths are UTF-8");
        self.ok(&[verb, "-f", path])
    }
}

/// Status code and body of a GET through a replica's plain HTTP listener for `host`.
pub fn get(http_port: u16, host: &str, path: &str) -> (String, String) {
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "5"])
        .args(["--write-out", "\n%{http_code}", "--header"])
        .arg(format!("Host: {host}"))
        .arg(format!("http://127.0.0.1:{http_port}{path}"))
        .output()
        .expect("failed to run curl");
    let text = String::from_utf8_lossy(&output.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.to_owned())
}

/// Status code of a GET of `path` on a replica's admin listener.
pub fn admin_status(admin_port: u16, path: &str) -> String {
    get(admin_port, "localhost", path).0
}

/// Calls `check` every 100 ms until it returns `Ok`, and panics after [`WAIT_TIMEOUT`] with
/// `what` and the last error.
pub fn eventually<T, E: Debug>(what: &str, mut check: impl FnMut() -> Result<T, E>) -> T {
    let started = Instant::now();
    loop {
        let last = match check() {
            Ok(value) => return value,
            Err(error) => error,
        };
        assert!(
            started.elapsed() < WAIT_TIMEOUT,
            "timed out after {WAIT_TIMEOUT:?} waiting until {what}; last state: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
