//! Helpers shared by the end-to-end tests that start the `gangway` binary.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod backends;
pub mod body;
pub mod clients;
pub mod gangway;
pub mod manifests;
pub mod tls;

use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Returns a port that was free a moment ago on 127.0.0.1. Another process could take it
/// before gangway binds it, which fails the test with a clear bind error in gangway's log.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("failed to find a free port")
        .port()
}

/// A child process that is killed when the guard drops, so a failing test leaves no process
/// behind.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl ChildGuard {
    /// Sends SIGTERM and waits up to `timeout` for the process to exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let pid = self.0.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("failed to run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let started = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("failed to wait for gangway") {
                return status;
            }
            assert!(
                started.elapsed() < timeout,
                "gangway did not stop within {timeout:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Polls `/readyz` on the admin port with curl until it returns 200, failing after `timeout`.
pub fn wait_until_ready(admin_port: u16, timeout: Duration) {
    let url = format!("http://127.0.0.1:{admin_port}/readyz");
    let started = Instant::now();
    loop {
        let output = Command::new("curl")
            .args(["--silent", "--output", "/dev/null", "--max-time", "2"])
            .args(["--write-out", "%{http_code}", &url])
            .output()
            .expect("failed to run curl");
        if output.stdout == b"200" {
            return;
        }
        assert!(started.elapsed() < timeout, "{url} never returned 200");
        std::thread::sleep(Duration::from_millis(50));
    }
}
