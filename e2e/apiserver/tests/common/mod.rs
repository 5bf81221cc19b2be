//! Helpers shared by the integration tests: a server per test, kubectl runs with a
//! timeout, and kube-rs clients built from the generated kubeconfig.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use gangway_test_apiserver::{ApiServer, Config};
use serde_json::Value;
use tempfile::TempDir;

/// Upper bound for one curl run.
pub const CURL_TIMEOUT: Duration = Duration::from_secs(15);

/// Upper bound for one kubectl run.
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(30);

/// A server with a kubeconfig and a kubectl cache in a temporary directory.
pub struct TestServer {
    pub server: ApiServer,
    pub directory: TempDir,
    pub kubeconfig: PathBuf,
}

impl TestServer {
    /// Starts a server with default settings.
    pub async fn start() -> TestServer {
        Self::start_with(Config::default()).await
    }

    /// Starts a server with `config`.
    pub async fn start_with(config: Config) -> TestServer {
        let server = ApiServer::start(config)
            .await
            .expect("failed to start the test API server");
        let directory = tempfile::tempdir().expect("failed to create a temporary directory");
        let kubeconfig = directory.path().join("kubeconfig");
        server
            .write_kubeconfig(&kubeconfig, "tester")
            .expect("failed to write the kubeconfig");
        TestServer {
            server,
            directory,
            kubeconfig,
        }
    }

    /// Writes `contents` to a file in the temporary directory and returns its path.
    pub fn write_file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.directory.path().join(name);
        std::fs::write(&path, contents).expect("failed to write a test file");
        path
    }

    /// Runs kubectl against the server and returns its output.
    pub async fn kubectl(&self, args: &[&str]) -> Output {
        let cache = self.directory.path().join("kubectl-cache");
        let run = tokio::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&cache)
            .args(args)
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(KUBECTL_TIMEOUT, run)
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} timed out"))
            .expect("failed to run kubectl")
    }

    /// Runs kubectl, asserts that it succeeded and returns its standard output.
    pub async fn kubectl_ok(&self, args: &[&str]) -> String {
        let output = self.kubectl(args).await;
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8(output.stdout).expect("kubectl printed non-UTF-8 output")
    }

    /// Builds a kube-rs client for `user` from a kubeconfig of this server.
    pub async fn client(&self, user: &str) -> kube::Client {
        let text = self.server.kubeconfig(user).expect("invalid user name");
        let kubeconfig =
            kube::config::Kubeconfig::from_yaml(&text).expect("the kubeconfig does not parse");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("kube-rs rejected the kubeconfig");
        kube::Client::try_from(config).expect("failed to build a kube-rs client")
    }
}

/// Polls `condition` every 20 ms until it holds, failing after `limit`.
pub async fn eventually<F: FnMut() -> bool>(limit: Duration, what: &str, mut condition: F) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs curl with a timeout and returns its standard output.
pub async fn curl(args: &[&str]) -> String {
    let run = tokio::process::Command::new("curl")
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(CURL_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("curl {args:?} timed out"))
        .expect("failed to run curl");
    String::from_utf8(output.stdout).expect("curl printed non-UTF-8 output")
}

/// Runs curl for a JSON control or API request and parses the response.
pub async fn curl_json(method: &str, url: &str, body: Option<Value>) -> Value {
    let mut args = vec!["-s", "-X", method, url];
    let body_text = body.map(|body| body.to_string());
    if let Some(body_text) = &body_text {
        args.extend([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body_text,
        ]);
    }
    let output = curl(&args).await;
    serde_json::from_str(&output)
        .unwrap_or_else(|error| panic!("curl {args:?} printed invalid JSON ({error}): {output}"))
}
