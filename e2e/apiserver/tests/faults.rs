//! Fault injection, through the Rust handle in process and through the HTTP control
//! endpoint of the `gangway-test-apiserver` binary driven with curl.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{CURL_TIMEOUT, TestServer, curl, curl_json};
use gangway_test_apiserver::{FailRule, RequestMatch, StallRule};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

fn api_status(error: kube::Error) -> kube::core::Status {
    match error {
        kube::Error::Api(status) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_rule_matches_method_and_path() {
    let test = TestServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(test.client("tester").await, "default");
    let rule = |count, status| FailRule {
        matching: RequestMatch::any()
            .method("POST")
            .path_prefix("/api/v1/namespaces/default/configmaps"),
        count,
        status,
        retry_after_seconds: None,
    };

    // kube-rs retries 503 by default, so two failures still end in a create.
    test.server.fail_requests(rule(2, 503)).unwrap();
    api.list(&Default::default()).await.unwrap();
    api.create(&PostParams::default(), &config_map("a"))
        .await
        .unwrap();
    let statuses: Vec<u16> = test
        .server
        .requests()
        .iter()
        .map(|request| request.status)
        .collect();
    assert_eq!(statuses, [200, 503, 503, 201]);

    // A 500 is not retried and reaches the caller as a Status.
    test.server.fail_requests(rule(1, 500)).unwrap();
    let status = api_status(
        api.create(&PostParams::default(), &config_map("b"))
            .await
            .unwrap_err(),
    );
    assert_eq!(status.code, 500);
    assert_eq!(status.reason, "InternalError");
    api.create(&PostParams::default(), &config_map("b"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_rule_sends_retry_after() {
    let test = TestServer::start().await;
    test.server
        .fail_requests(FailRule {
            matching: RequestMatch::any(),
            count: 1,
            status: 429,
            retry_after_seconds: Some(7),
        })
        .unwrap();
    let url = format!("{}/api/v1/namespaces/default/configmaps", test.server.url());
    let output = curl(&["-s", "-i", &url]).await;
    assert!(output.starts_with("HTTP/1.1 429"), "{output}");
    assert!(
        output.to_ascii_lowercase().contains("retry-after: 7"),
        "{output}"
    );
    assert!(output.contains(r#""retryAfterSeconds":7"#), "{output}");
    let output = curl(&["-s", "-i", &url]).await;
    assert!(output.starts_with("HTTP/1.1 200"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_rule_delays_matching_requests() {
    let test = TestServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(test.client("tester").await, "default");
    let delay = Duration::from_millis(400);
    test.server.stall_requests(StallRule {
        matching: RequestMatch::any().method("GET"),
        count: Some(1),
        delay,
    });
    let started = Instant::now();
    api.list(&Default::default()).await.unwrap();
    assert!(
        started.elapsed() >= delay,
        "the list returned after {:?}",
        started.elapsed()
    );

    // A stall that never ends makes a client with a timeout give up.
    test.server.stall_requests(StallRule {
        matching: RequestMatch::any(),
        count: None,
        delay: Duration::from_secs(30),
    });
    let waited =
        tokio::time::timeout(Duration::from_millis(300), api.list(&Default::default())).await;
    assert!(waited.is_err(), "the stalled request completed");
    test.server.clear_faults();
    api.list(&Default::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_token_is_unauthorized() {
    let test = TestServer::start().await;
    let url = format!("{}/api/v1/namespaces", test.server.url());
    let output = curl(&["-s", "-i", "-H", "Authorization: Bearer forged.token", &url]).await;
    assert!(output.starts_with("HTTP/1.1 401"), "{output}");
    let token = test.server.token("curl").unwrap();
    let header = format!("Authorization: Bearer {token}");
    let output = curl(&["-s", "-i", "-H", &header, &url]).await;
    assert!(output.starts_with("HTTP/1.1 200"), "{output}");
    let users: Vec<String> = test
        .server
        .requests()
        .into_iter()
        .map(|request| request.user)
        .collect();
    assert_eq!(users, ["", "curl"]);
}

/// The `gangway-test-apiserver` binary, killed when dropped.
struct BinaryServer {
    child: Child,
    url: String,
}

impl BinaryServer {
    async fn start() -> BinaryServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gangway-test-apiserver"))
            .args(["--listen", "127.0.0.1:0", "--bookmark-interval", "1s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("failed to start gangway-test-apiserver");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("the server printed no URL in time")
            .unwrap()
            .expect("the server exited before printing its URL");
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        BinaryServer { child, url }
    }

    fn control(&self, path: &str) -> String {
        format!("{}/_gangway/{path}", self.url)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_endpoint_drives_every_fault() {
    let mut server = BinaryServer::start().await;
    let config_maps = format!("{}/api/v1/namespaces/default/configmaps", server.url);

    let created = curl_json(
        "POST",
        &config_maps,
        Some(json!({"metadata": {"name": "a"}})),
    )
    .await;
    let version = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    // Fail: the next GET fails with 500, the one after succeeds.
    let rule = json!({"count": 1, "status": 500, "method": "GET", "pathPrefix": "/api/v1"});
    curl_json("POST", &server.control("faults/fail"), Some(rule)).await;
    let failed = curl_json("GET", &config_maps, None).await;
    assert_eq!(failed["code"], 500);
    assert_eq!(failed["reason"], "InternalError");
    let listed = curl_json("GET", &config_maps, None).await;
    assert_eq!(listed["kind"], "ConfigMapList");

    // Stall: the next request waits for the delay.
    curl_json(
        "POST",
        &server.control("faults/stall"),
        Some(json!({"count": 1, "delayMillis": 300})),
    )
    .await;
    let started = Instant::now();
    curl_json("GET", &config_maps, None).await;
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Drop watches: an open watch stream ends and curl exits.
    let watch_url = format!("{config_maps}?watch=true&resourceVersion={version}");
    let watch = tokio::spawn(async move { curl(&["-s", "-N", &watch_url]).await });
    let mut dropped = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while dropped == 0 {
        assert!(Instant::now() < deadline, "the watch never opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
        dropped = curl_json("POST", &server.control("faults/drop-watches"), None).await["dropped"]
            .as_u64()
            .unwrap();
    }
    let streamed = tokio::time::timeout(CURL_TIMEOUT, watch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        streamed, "",
        "the watch sent events although nothing changed"
    );

    // Compact: a watch from the old version now gets an ERROR event with 410.
    curl_json(
        "POST",
        &config_maps,
        Some(json!({"metadata": {"name": "b"}})),
    )
    .await;
    curl_json("POST", &server.control("faults/compact"), None).await;
    let watch_url = format!("{config_maps}?watch=true&resourceVersion={version}");
    let expired = curl(&["-s", "-N", &watch_url]).await;
    let event: Value = serde_json::from_str(expired.trim()).unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);

    // Restart: the server goes away, comes back on the same address with its state.
    let accepted = curl_json(
        "POST",
        &server.control("faults/restart"),
        Some(json!({"downMillis": 500})),
    )
    .await;
    assert_eq!(accepted["downMillis"], 500);
    let mut saw_down = false;
    let mut names = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while names.is_empty() {
        assert!(Instant::now() < deadline, "the server did not come back");
        let output = curl(&["-s", &config_maps]).await;
        match serde_json::from_str::<Value>(&output) {
            Ok(list) => {
                names = list["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|item| item["metadata"]["name"].as_str().unwrap().to_string())
                    .collect();
            }
            Err(_) => saw_down = true,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_down, "no request saw the server down");
    assert_eq!(names, ["a", "b"]);

    // The request log lists API requests, not control requests.
    let log = curl_json("GET", &server.control("requests"), None).await;
    let entries = log.as_array().unwrap();
    assert!(
        entries
            .iter()
            .all(|entry| !entry["path"].as_str().unwrap().starts_with("/_gangway"))
    );
    assert!(
        entries
            .iter()
            .any(|entry| entry["status"] == 500 && entry["method"] == "GET")
    );
    curl_json("DELETE", &server.control("requests"), None).await;
    assert_eq!(
        curl_json("GET", &server.control("requests"), None).await,
        json!([])
    );

    server.child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_server_refuses_connections_until_resumed() {
    let test = TestServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(test.client("tester").await, "default");
    api.create(&PostParams::default(), &config_map("kept"))
        .await
        .unwrap();
    test.server.stop().await;
    assert!(!test.server.is_running().await);
    let error = api.get("kept").await.unwrap_err();
    assert!(
        !matches!(error, kube::Error::Api(_)),
        "a stopped server answered: {error:?}"
    );
    test.server.resume().await.unwrap();
    let kept = api.get("kept").await.unwrap();
    assert_eq!(kept.metadata.name.as_deref(), Some("kept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_watch_path_streams_one_object() {
    let test = TestServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(test.client("tester").await, "default");
    let start = test.server.resource_version();
    api.create(&PostParams::default(), &config_map("other"))
        .await
        .unwrap();
    api.create(&PostParams::default(), &config_map("watched"))
        .await
        .unwrap();
    let url = format!(
        "{}/api/v1/watch/namespaces/default/configmaps/watched?resourceVersion={start}&timeoutSeconds=1",
        test.server.url()
    );
    let output = curl(&["-s", "-N", &url]).await;
    let events: Vec<Value> = output
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{output}");
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "watched");
}
