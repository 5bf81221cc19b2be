//! Live changes: manifests rewritten while clients keep sending requests. No request may
//! fail, each change must serve within a bounded poll, and open connections (keep-alive
//! HTTP/1.1, HTTP/2, TLS and a WebSocket) and requests in flight must survive every change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::support::backends::{HeldBackend, echo, echo_services};
use crate::support::clients::{
    CHANGE_TIMEOUT, Http1Client, Http2Client, REQUEST_TIMEOUT, get, wait_for_outcome, websocket,
};
use crate::support::gangway::Gangway;
use crate::support::manifests::{
    HTTP, INGRESS_CLASS, backend, documents, ingress, service, tls_ingress, tls_secret,
};
use crate::support::tls::{ALPN_HTTP1, TestCa, connect, presented_certificate};

/// How long the clients send requests at least.
const LOAD_DURATION: Duration = Duration::from_secs(3);
/// Hard bounds on one load loop, should the changes take much longer than expected.
const LOAD_TIME_LIMIT: Duration = Duration::from_secs(60);
const LOAD_REQUEST_LIMIT: usize = 200_000;

/// How a load loop connects.
#[derive(Clone, Copy, Debug)]
enum LoadClient {
    /// One HTTP/1.1 connection, kept alive for every request.
    KeepAlive,
    /// One h2c connection.
    Http2,
    /// A new HTTP/1.1 connection per request.
    NewConnections,
}

/// What one load loop saw.
#[derive(Debug, Default)]
struct LoadReport {
    requests: usize,
    /// Requests per outcome ([`crate::support::clients::Reply::outcome`]).
    outcomes: BTreeMap<String, usize>,
    /// Failed requests: transport errors and non-2xx responses, the first few in full.
    failures: Vec<String>,
    failure_count: usize,
    /// Connections opened, the first one included.
    connections: usize,
}

impl LoadReport {
    fn fail(&mut self, failure: String) {
        self.failure_count += 1;
        if self.failures.len() < 10 {
            self.failures.push(failure);
        }
    }
}

/// Sends GET live.test/ until `stop` is cancelled or a limit is reached.
async fn load(client_kind: LoadClient, address: SocketAddr, stop: CancellationToken) -> LoadReport {
    let started = Instant::now();
    let mut report = LoadReport::default();
    let mut http1: Option<Http1Client> = None;
    let mut http2: Option<Http2Client> = None;
    while !stop.is_cancelled()
        && started.elapsed() < LOAD_TIME_LIMIT
        && report.requests < LOAD_REQUEST_LIMIT
    {
        report.requests += 1;
        let exchange = async {
            match client_kind {
                LoadClient::KeepAlive | LoadClient::NewConnections => {
                    if http1.is_none() || matches!(client_kind, LoadClient::NewConnections) {
                        http1 = Some(Http1Client::connect(address).await?);
                        report.connections += 1;
                    }
                    http1.as_mut().unwrap().get("live.test", "/").await
                }
                LoadClient::Http2 => {
                    if http2.is_none() {
                        http2 = Some(Http2Client::connect_h2c(address).await?);
                        report.connections += 1;
                    }
                    http2.as_mut().unwrap().get("live.test", "/").await
                }
            }
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(Ok(reply)) if reply.status.is_success() => {
                *report.outcomes.entry(reply.outcome()).or_default() += 1;
            }
            Ok(Ok(reply)) => {
                report.fail(format!("request {}: {}", report.requests, reply.outcome()))
            }
            Ok(Err(error)) => {
                report.fail(format!("request {}: {error}", report.requests));
                http1 = None;
                http2 = None;
            }
            Err(_) => {
                report.fail(format!("request {}: timed out", report.requests));
                http1 = None;
                http2 = None;
            }
        }
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_under_load_fail_no_request() {
    let servers = [
        echo("one").await,
        echo("two").await,
        echo("three").await,
        echo("four").await,
    ];
    let [one, two, three, four] = servers.each_ref().map(|server| server.address);
    let gangway = Gangway::start_with(
        &[
            ("class.yaml", INGRESS_CLASS),
            ("first.yaml", &backend("first", &[one])),
            ("second.yaml", &backend("second", &[two])),
            ("live.yaml", &ingress("live", "live.test", "first")),
        ],
        // Two workers, so the changes reach connections on both.
        &["--worker-threads", "2", "--access-log", "false"],
    )
    .await;

    // A WebSocket opened before any change, through the route that changes.
    let mut socket = websocket(gangway.http, "live.test", "/socket").await;

    let stop = CancellationToken::new();
    let loops: Vec<_> = [
        LoadClient::KeepAlive,
        LoadClient::Http2,
        LoadClient::NewConnections,
    ]
    .into_iter()
    .map(|kind| (kind, tokio::spawn(load(kind, gangway.http, stop.clone()))))
    .collect();
    let started = Instant::now();

    // Add a route.
    gangway.write("added.yaml", &ingress("added", "added.test", "second"));
    wait_for_outcome(gangway.http, "added.test", "/", "two").await;
    // Point the route under load at another Service.
    gangway.write("live.yaml", &ingress("live", "live.test", "second"));
    wait_for_outcome(gangway.http, "live.test", "/", "two").await;
    // Swap the Service's endpoint for another one.
    gangway.write("second.yaml", &backend("second", &[three]));
    wait_for_outcome(gangway.http, "live.test", "/", "three").await;
    // Grow it to two endpoints.
    gangway.write("second.yaml", &backend("second", &[three, four]));
    wait_for_outcome(gangway.http, "live.test", "/", "four").await;

    let elapsed = started.elapsed();
    if elapsed < LOAD_DURATION {
        tokio::time::sleep(LOAD_DURATION - elapsed).await;
    }
    stop.cancel();
    for (kind, handle) in loops {
        let report = tokio::time::timeout(REQUEST_TIMEOUT, handle)
            .await
            .expect("a load loop did not stop")
            .unwrap();
        assert_eq!(
            report.failure_count, 0,
            "{kind:?}: {} of {} requests failed, first ones: {:#?}",
            report.failure_count, report.requests, report.failures
        );
        // Every response came from a backend that the configuration named at some point.
        let seen: BTreeSet<&str> = report.outcomes.keys().map(String::as_str).collect();
        let allowed = BTreeSet::from(["one", "two", "three", "four"]);
        assert!(seen.is_subset(&allowed), "{kind:?}: {seen:?}");
        assert!(
            seen.contains("one"),
            "{kind:?} never saw the first backend: {seen:?}"
        );
        assert!(
            seen.contains("three") || seen.contains("four"),
            "{kind:?} never saw the last endpoints: {seen:?}"
        );
        if !matches!(kind, LoadClient::NewConnections) {
            assert_eq!(report.connections, 1, "{kind:?} had to reconnect");
        }
    }

    // The WebSocket still reaches its backend.
    socket.send(Message::text("still here")).await.unwrap();
    let echoed = tokio::time::timeout(REQUEST_TIMEOUT, socket.next())
        .await
        .expect("no WebSocket echo after the changes")
        .expect("the WebSocket closed")
        .unwrap();
    assert_eq!(echoed, Message::text("still here"));

    // Four changes, each published: generation 1 is the start.
    assert!(gangway.generation().await >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_applies_to_new_handshakes() {
    let ca = TestCa::new();
    let before = ca.issue(&["rotate.test"]);
    let after = ca.issue(&["rotate.test"]);
    let (_servers, services) = echo_services(&["app"]).await;
    let gangway = Gangway::start(&[
        ("class.yaml", INGRESS_CLASS),
        ("services.yaml", &services),
        ("secret.yaml", &tls_secret("rotate-tls", &before)),
        (
            "rotate.yaml",
            &tls_ingress("rotate", "rotate.test", "rotate-tls", "app"),
        ),
    ])
    .await;
    let config = ca.client_config(&[ALPN_HTTP1]);
    let stream = connect(gangway.https, Some("rotate.test"), config.clone())
        .await
        .unwrap();
    assert_eq!(presented_certificate(&stream), before.certificate_der);
    let mut open_connection = Http1Client::handshake(stream).await.unwrap();

    gangway.write("secret.yaml", &tls_secret("rotate-tls", &after));

    let started = Instant::now();
    loop {
        let stream = connect(gangway.https, Some("rotate.test"), config.clone())
            .await
            .unwrap();
        if presented_certificate(&stream) == after.certificate_der {
            break;
        }
        assert!(
            started.elapsed() < CHANGE_TIMEOUT,
            "the new certificate was not served within {CHANGE_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A connection that completed its handshake before the rotation keeps working.
    let reply = open_connection.get("rotate.test", "/").await.unwrap();
    assert_eq!(reply.outcome(), "app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_request_survives_route_removal() {
    let mut upstream = HeldBackend::start().await;
    let gangway = Gangway::start(&[
        ("class.yaml", INGRESS_CLASS),
        ("app.yaml", &backend("app", &[upstream.server.address])),
        ("ingress.yaml", &ingress("app", "app.test", "app")),
    ])
    .await;
    let mut client = Http1Client::connect(gangway.http).await.unwrap();
    let in_flight = tokio::spawn(async move { client.get("app.test", "/").await });
    upstream.wait_for_first_request().await;

    // The route goes away while the request waits for its response.
    gangway.remove("ingress.yaml");
    wait_for_outcome(gangway.http, "app.test", "/", "404 no-route").await;

    upstream.release();
    let reply = tokio::time::timeout(REQUEST_TIMEOUT, in_flight)
        .await
        .expect("the in-flight request did not finish")
        .unwrap()
        .expect("the in-flight request failed");
    assert_eq!(reply.outcome(), "held");
}

/// How long `/healthz` may take to respond while a large manifest file is parsed. Kubernetes
/// liveness probes time out after 1 s by default, so this bound is loose. It catches an admin
/// listener that waits for the whole parse, which takes seconds in a debug build.
const HEALTHZ_TIMEOUT: Duration = Duration::from_secs(3);

/// Bound on reading, parsing and compiling the large file, generous for a debug build on a
/// loaded machine.
const LARGE_FILE_LIMIT: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_responds_while_large_file_parses() {
    let gangway = Gangway::start(&[("class.yaml", INGRESS_CLASS)]).await;
    let generation = gangway.generation().await;

    // About 2 MB of YAML: 20,000 Services and an Ingress to the first one, which has no
    // endpoints, so the route returns 503 once the file is live.
    let mut parts: Vec<String> = (0..20_000)
        .map(|index| service(&format!("bulk-{index}"), &[HTTP]))
        .collect();
    parts.push(ingress("bulk", "bulk.test", "bulk-0"));
    gangway.write("bulk.yaml", &documents(&parts));

    let started = Instant::now();
    let mut probes = 0;
    loop {
        let probe = tokio::time::timeout(HEALTHZ_TIMEOUT, get(gangway.admin, "admin", "/healthz"));
        let Ok(reply) = probe.await else {
            panic!("/healthz did not respond within {HEALTHZ_TIMEOUT:?} after {probes} probes");
        };
        assert_eq!(reply.status, 200);
        probes += 1;
        if gangway.generation().await > generation {
            break;
        }
        assert!(
            started.elapsed() < LARGE_FILE_LIMIT,
            "the large file was not live within {LARGE_FILE_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "{probes} /healthz probes answered in {:?} until the large file was live",
        started.elapsed()
    );

    let reply = get(gangway.http, "bulk.test", "/").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
}
