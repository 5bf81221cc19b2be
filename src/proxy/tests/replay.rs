//! Sending a request again when a reused upstream HTTP/1.1 connection closes before the
//! response head: only idempotent requests without a body, only once, only on a new
//! connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::harness::{Collected, TestProxy, backend, http1_client, metric_value, one_route};
use crate::snapshot::UpstreamProtocol;

/// Bound on one exchange through the proxy.
const WAIT: Duration = Duration::from_secs(5);

/// What the test upstream does with the second request on a connection.
#[derive(Clone, Copy)]
enum SecondRequest {
    /// Closes the connection without a response, as a keep-alive timeout does.
    Close,
    /// Sends a response head that promises more body than follows, then closes.
    TruncateBody,
}

/// What the upstream did with one request head it read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Responded in full.
    Answered,
    /// Closed the connection without a response.
    Dropped,
    /// Sent the response head and part of the body, then closed.
    Truncated,
}

/// One request head the upstream read.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    /// Index of the connection in accept order, from 0.
    connection: usize,
    method: String,
    request_id: String,
    outcome: Outcome,
}

/// A raw HTTP/1.1 upstream that responds to the first request on each connection and treats
/// the second as `second` says. It records every request head it reads.
struct RawUpstream {
    address: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    async fn start(second: SecondRequest) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let seen = seen.clone();
            let accepted = accepted.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let connection = accepted.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve_connection(stream, connection, second, seen.clone()));
                }
            }
        });
        Self {
            address,
            seen,
            accepted,
            task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Returns what happened to each delivery of the request with `request_id`.
    fn outcomes_of(&self, request_id: &str) -> Vec<(usize, Outcome)> {
        self.seen()
            .into_iter()
            .filter(|seen| seen.request_id == request_id)
            .map(|seen| (seen.connection, seen.outcome))
            .collect()
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    connection: usize,
    second: SecondRequest,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    let mut buffer = Vec::new();
    let record = |(method, request_id), outcome| {
        seen.lock().unwrap().push(Seen {
            connection,
            method,
            request_id,
            outcome,
        });
    };

    let Some(first) = read_head(&mut stream, &mut buffer).await else {
        return;
    };
    let response = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    if stream.write_all(response.as_bytes()).await.is_err() {
        return;
    }
    record(first, Outcome::Answered);

    let Some(next) = read_head(&mut stream, &mut buffer).await else {
        return;
    };
    match second {
        SecondRequest::Close => record(next, Outcome::Dropped),
        SecondRequest::TruncateBody => {
            let response = "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial";
            let _ = stream.write_all(response.as_bytes()).await;
            record(next, Outcome::Truncated);
        }
    }
}

/// Reads one request head and returns its method and `x-request-id`. Body bytes are left
/// in `buffer` and never read as a head, because each connection reads at most two heads
/// and only the second request may have a body.
async fn read_head(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<(String, String)> {
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(at) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    };
    let head: Vec<u8> = buffer.drain(..end).collect();
    let head = String::from_utf8_lossy(&head).into_owned();
    let method = head.split(' ').next().unwrap_or_default().to_owned();
    let request_id = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("x-request-id"))
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_default();
    Some((method, request_id))
}

fn request(method: Method, request_id: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri("/")
        .header("host", "foo.example.com")
        .header("x-request-id", request_id)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

const OPENED: &str = r#"gangway_upstream_connections_opened_total{service="default/raw"}"#;
const REUSED: &str = r#"gangway_upstream_connections_reused_total{service="default/raw"}"#;

fn proxy_to(upstream: &RawUpstream) -> TestProxy {
    let raw = backend("raw", UpstreamProtocol::Http1, &[upstream.address]);
    TestProxy::start(one_route(&raw))
}

#[tokio::test]
async fn get_replayed_after_reused_connection_closes() {
    let upstream = RawUpstream::start(SecondRequest::Close).await;
    let proxy = proxy_to(&upstream);
    // One client connection keeps every request on one worker, so on one upstream pool.
    let mut client = http1_client::<Full<Bytes>>(proxy.http_addr()).await;

    for request_id in ["get-1", "get-2", "get-3"] {
        let sending = client.send_request(request(Method::GET, request_id, ""));
        let response = tokio::time::timeout(WAIT, sending).await.unwrap().unwrap();
        let response = Collected::read(response).await;
        assert_eq!(response.status, StatusCode::OK, "{request_id}");
        assert_eq!(response.body, "ok", "{request_id}");
    }

    // The upstream closed every reused connection, so each GET after the first went out
    // twice: dropped on the old connection, answered on a new one.
    assert_eq!(upstream.outcomes_of("get-1"), [(0, Outcome::Answered)]);
    assert_eq!(
        upstream.outcomes_of("get-2"),
        [(0, Outcome::Dropped), (1, Outcome::Answered)]
    );
    assert_eq!(
        upstream.outcomes_of("get-3"),
        [(1, Outcome::Dropped), (2, Outcome::Answered)]
    );
    assert_eq!(upstream.accepted(), 3);
    assert_eq!(metric_value(&proxy, OPENED), 3);
    assert_eq!(metric_value(&proxy, REUSED), 2);
}

#[tokio::test]
async fn request_with_body_or_unsafe_method_not_replayed() {
    // (row name, method, body)
    let rows = [
        ("a POST with a body", Method::POST, "payload"),
        ("a PUT with a body", Method::PUT, "payload"),
        ("a POST without a body", Method::POST, ""),
    ];

    for (name, method, body) in rows {
        let upstream = RawUpstream::start(SecondRequest::Close).await;
        let proxy = proxy_to(&upstream);
        let mut client = http1_client::<Full<Bytes>>(proxy.http_addr()).await;

        let warm_up = client.send_request(request(Method::GET, "warm-up", ""));
        let warm_up = tokio::time::timeout(WAIT, warm_up).await.unwrap().unwrap();
        assert_eq!(
            Collected::read(warm_up).await.status,
            StatusCode::OK,
            "{name}"
        );
        let sending = client.send_request(request(method.clone(), "unsafe", body));
        let response = tokio::time::timeout(WAIT, sending).await.unwrap().unwrap();
        let response = Collected::read(response).await;

        assert_eq!(response.status, StatusCode::BAD_GATEWAY, "{name}");
        assert_eq!(
            response.header("x-gangway-error"),
            Some("connection-reset"),
            "{name}"
        );
        assert_eq!(
            upstream.outcomes_of("unsafe"),
            [(0, Outcome::Dropped)],
            "{name}"
        );
        assert_eq!(upstream.seen()[1].method, method.as_str(), "{name}");
        assert_eq!(upstream.accepted(), 1, "{name}");
        assert_eq!(metric_value(&proxy, OPENED), 1, "{name}");
    }
}

#[tokio::test]
async fn get_not_replayed_after_response_head() {
    let upstream = RawUpstream::start(SecondRequest::TruncateBody).await;
    let proxy = proxy_to(&upstream);
    let mut client = http1_client::<Full<Bytes>>(proxy.http_addr()).await;

    let first = client.send_request(request(Method::GET, "get-1", ""));
    let first = tokio::time::timeout(WAIT, first).await.unwrap().unwrap();
    assert_eq!(Collected::read(first).await.status, StatusCode::OK);

    // The response head arrived before the connection closed, so the GET counts as
    // delivered: the client gets the head and a body that fails, and no second copy goes
    // out.
    let second = client.send_request(request(Method::GET, "get-2", ""));
    let second = tokio::time::timeout(WAIT, second).await.unwrap().unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    let body = tokio::time::timeout(WAIT, second.into_body().collect()).await;
    assert!(body.unwrap().is_err(), "the truncated body read to the end");

    assert_eq!(upstream.outcomes_of("get-1"), [(0, Outcome::Answered)]);
    assert_eq!(upstream.outcomes_of("get-2"), [(0, Outcome::Truncated)]);
    assert_eq!(upstream.accepted(), 1);
    assert_eq!(metric_value(&proxy, OPENED), 1);
}
