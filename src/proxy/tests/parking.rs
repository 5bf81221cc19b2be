//! Parking of idle plain HTTP/1.1 connections: a parked connection serves its next request,
//! and connections that hold part of a request are never parked. Upstream connections idle
//! in the pool are parked too. The harness parks after 100 ms of idleness.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::harness::{Collected, TestProxy, backend, http1_client, metric_value, one_route};
use super::upstream::{Echo, TestUpstream, Transport};
use crate::proxy::ProxyConfig;
use crate::snapshot::UpstreamProtocol;

/// Bound on waiting for something that should happen soon.
const WAIT: Duration = Duration::from_secs(5);
const PARKED: &str = "gangway_downstream_connections_parked";
const UPSTREAM_PARKED: &str = "gangway_upstream_connections_parked";
const OPENED: &str = r#"gangway_upstream_connections_opened_total{service="default/echo"}"#;
const REUSED: &str = r#"gangway_upstream_connections_reused_total{service="default/echo"}"#;

async fn echo_proxy() -> (TestUpstream, TestProxy) {
    echo_proxy_with(TestProxy::config()).await
}

async fn echo_proxy_with(config: ProxyConfig) -> (TestUpstream, TestProxy) {
    let upstream = TestUpstream::echo("echo", Transport::Plain).await;
    let echo = backend("echo", UpstreamProtocol::Http1, &[upstream.address]);
    let proxy = TestProxy::start_with(config, one_route(&echo));
    (upstream, proxy)
}

/// Opens a connection to `proxy`, makes one GET on it and waits until it is parked.
async fn parked_connection(proxy: &TestProxy) -> TcpStream {
    let mut stream = TcpStream::connect(proxy.http_addr()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: foo.example.com\r\n\r\n")
        .await
        .unwrap();
    let (status, _) = read_response(&mut stream).await;
    assert_eq!(status, 200);
    wait_parked(proxy, 1).await;
    stream
}

/// Waits until `count` downstream connections of `proxy` are parked.
async fn wait_parked(proxy: &TestProxy, count: u64) {
    wait_metric(proxy, PARKED, count).await;
}

/// Waits until the metric `series` of `proxy` reads `value`.
async fn wait_metric(proxy: &TestProxy, series: &str, value: u64) {
    let waited = tokio::time::timeout(WAIT, async {
        while metric_value(proxy, series) != value {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "{series} stayed at {}, expected {value}",
        metric_value(proxy, series)
    );
}

/// Reads one response with a `content-length` body from `stream`; returns the status code
/// and the body.
async fn read_response(stream: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(WAIT, stream.read_u8())
            .await
            .expect("response head in time")
            .expect("response head");
        head.push(byte);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head[9..12].parse().unwrap();
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().unwrap())
        })
        .expect("a content-length header");
    let mut body = vec![0; length];
    tokio::time::timeout(WAIT, stream.read_exact(&mut body))
        .await
        .expect("response body in time")
        .unwrap();
    (status, body)
}

/// Fails unless the proxy closes `stream` within [`WAIT`] without sending anything.
async fn expect_closed(stream: &mut TcpStream) {
    let mut buffer = [0_u8; 16];
    let read = tokio::time::timeout(WAIT, stream.read(&mut buffer))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

/// Builds a bodiless GET of `/` on foo.example.com.
fn get_foo() -> Request<Full<Bytes>> {
    Request::get("/")
        .header("host", "foo.example.com")
        .body(Full::default())
        .unwrap()
}

fn echoed_path(body: &[u8]) -> String {
    serde_json::from_slice::<Echo>(body).unwrap().uri
}

#[tokio::test]
async fn parked_connection_serves_next_requests() {
    let (_upstream, proxy) = echo_proxy().await;
    let mut client = http1_client::<Full<Bytes>>(proxy.http_addr()).await;

    let response = Collected::read(client.send_request(get_foo()).await.unwrap()).await;
    assert_eq!(response.status, StatusCode::OK);
    wait_parked(&proxy, 1).await;

    let response = Collected::read(client.send_request(get_foo()).await.unwrap()).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(metric_value(&proxy, PARKED), 0);
    wait_parked(&proxy, 1).await;

    // A body larger than one read, after parking.
    let body = Bytes::from(vec![b'x'; 256 * 1024]);
    let post = Request::post("/upload")
        .header("host", "foo.example.com")
        .body(Full::new(body.clone()))
        .unwrap();
    let response = Collected::read(client.send_request(post).await.unwrap()).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.echo().body_len, body.len());
    wait_parked(&proxy, 1).await;
}

#[tokio::test]
async fn partial_head_not_parked() {
    let (_upstream, proxy) = echo_proxy().await;
    let mut stream = TcpStream::connect(proxy.http_addr()).await.unwrap();
    // Parked before its first request, like every new connection.
    wait_parked(&proxy, 1).await;

    for path in ["/first", "/second"] {
        stream.write_all(b"GET ").await.unwrap();
        stream.write_all(path.as_bytes()).await.unwrap();
        stream.write_all(b" HTTP/1.1\r\nHo").await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(metric_value(&proxy, PARKED), 0);
        stream
            .write_all(b"st: foo.example.com\r\n\r\n")
            .await
            .unwrap();
        let (status, body) = read_response(&mut stream).await;
        assert_eq!(status, 200);
        assert_eq!(echoed_path(&body), path);
    }
}

#[tokio::test]
async fn pipelined_requests_answered_in_order_around_parking() {
    let (_upstream, proxy) = echo_proxy().await;
    let mut stream = TcpStream::connect(proxy.http_addr()).await.unwrap();

    stream
        .write_all(
            b"GET /one HTTP/1.1\r\nHost: foo.example.com\r\n\r\n\
              GET /two HTTP/1.1\r\nHost: foo.example.com\r\n\r\n",
        )
        .await
        .unwrap();
    for path in ["/one", "/two"] {
        let (status, body) = read_response(&mut stream).await;
        assert_eq!(status, 200);
        assert_eq!(echoed_path(&body), path);
    }
    wait_parked(&proxy, 1).await;

    stream
        .write_all(b"GET /three HTTP/1.1\r\nHost: foo.example.com\r\n\r\n")
        .await
        .unwrap();
    let (status, body) = read_response(&mut stream).await;
    assert_eq!(status, 200);
    assert_eq!(echoed_path(&body), "/three");
}

#[tokio::test]
async fn websocket_upgrade_on_a_parked_connection() {
    let server = super::protocols::websocket_echo_server().await;
    let websocket = backend("ws", UpstreamProtocol::Http1, &[server]);
    let proxy = TestProxy::start(one_route(&websocket));
    let stream = TcpStream::connect(proxy.http_addr()).await.unwrap();
    wait_parked(&proxy, 1).await;

    let (mut socket, response) =
        tokio_tungstenite::client_async("ws://foo.example.com/chat", stream)
            .await
            .expect("WebSocket handshake through the proxy");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    // The tunnel is not an idle HTTP/1.1 connection: it is not parked.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(metric_value(&proxy, PARKED), 0);
    socket.send(Message::text("hello")).await.unwrap();
    let echoed = tokio::time::timeout(WAIT, socket.next())
        .await
        .expect("echo in time")
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("hello"));
}

#[tokio::test]
async fn shutdown_closes_parked_connections() {
    let (_upstream, proxy) = echo_proxy().await;
    let mut stream = parked_connection(&proxy).await;

    let stopped = tokio::time::timeout(WAIT, proxy.stop()).await;
    assert!(stopped.is_ok(), "the proxy waited on a parked connection");
    expect_closed(&mut stream).await;
}

#[tokio::test]
async fn parked_connection_closed_at_idle_timeout() {
    let mut config = TestProxy::config();
    config.idle_timeout = Duration::from_secs(2);
    let (_upstream, proxy) = echo_proxy_with(config).await;
    let mut stream = parked_connection(&proxy).await;
    let parked_at = tokio::time::Instant::now();

    // Halfway through the timeout the connection is still parked and open.
    tokio::time::sleep_until(parked_at + Duration::from_secs(1)).await;
    assert_eq!(metric_value(&proxy, PARKED), 1);
    let mut buffer = [0_u8; 16];
    let read = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buffer)).await;
    assert!(read.is_err(), "closed before its idle timeout: {read:?}");

    expect_closed(&mut stream).await;
    assert!(parked_at.elapsed() >= Duration::from_millis(1_500));
    assert_eq!(metric_value(&proxy, PARKED), 0);
}

#[tokio::test]
async fn resumed_connection_keeps_client_address() {
    let (_upstream, proxy) = echo_proxy().await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut stream = socket.connect(proxy.http_addr()).await.unwrap();

    for round in 0..2 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: foo.example.com\r\n\r\n")
            .await
            .unwrap();
        let (status, body) = read_response(&mut stream).await;
        assert_eq!(status, 200, "round {round}");
        let echo: Echo = serde_json::from_slice(&body).unwrap();
        assert_eq!(echo.header("x-real-ip"), Some("127.0.0.2"), "round {round}");
        assert_eq!(
            echo.header("x-forwarded-for"),
            Some("127.0.0.2"),
            "round {round}"
        );
        wait_parked(&proxy, 1).await;
    }
}

#[tokio::test]
async fn parked_connection_reset_by_client_leaves_lot() {
    let (_upstream, proxy) = echo_proxy().await;
    let stream = parked_connection(&proxy).await;

    // A zero linger time makes the close a reset.
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
    wait_parked(&proxy, 0).await;

    let _next = parked_connection(&proxy).await;
}

#[tokio::test]
async fn parked_connection_half_closed_by_client_is_closed() {
    let (_upstream, proxy) = echo_proxy().await;
    let mut stream = parked_connection(&proxy).await;

    stream.shutdown().await.unwrap();
    wait_parked(&proxy, 0).await;
    expect_closed(&mut stream).await;
}

#[tokio::test]
async fn parked_upstream_connection_serves_next_request() {
    let (upstream, proxy) = echo_proxy().await;
    // One client connection keeps every request on one worker, so on one upstream pool.
    let mut client = http1_client::<Full<Bytes>>(proxy.http_addr()).await;

    for round in 0..3 {
        let response = Collected::read(client.send_request(get_foo()).await.unwrap()).await;
        assert_eq!(response.status, StatusCode::OK, "round {round}");
        wait_metric(&proxy, UPSTREAM_PARKED, 1).await;
    }

    assert_eq!(upstream.accepted(), 1);
    assert_eq!(metric_value(&proxy, OPENED), 1);
    assert_eq!(metric_value(&proxy, REUSED), 2);
}

#[tokio::test]
async fn parked_upstream_connection_closed_by_upstream_is_replaced() {
    let upstream = ClosingUpstream::start().await;
    let echo = backend("echo", UpstreamProtocol::Http1, &[upstream.address]);
    let proxy = TestProxy::start(one_route(&echo));
    let mut client = http1_client::<Full<Bytes>>(proxy.http_addr()).await;

    let response = Collected::read(client.send_request(get_foo()).await.unwrap()).await;
    assert_eq!(response.status, StatusCode::OK);
    wait_metric(&proxy, UPSTREAM_PARKED, 1).await;
    upstream.close_all();
    upstream.wait_closed(1).await;

    // The proxy detects the close in its sweep or when the request takes the socket. Either
    // way the request goes on a new connection and reaches the upstream once.
    let response = Collected::read(client.send_request(get_foo()).await.unwrap()).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(upstream.requests(), 2);
    assert_eq!(upstream.accepted(), 2);
    assert_eq!(metric_value(&proxy, OPENED), 2);
    assert_eq!(metric_value(&proxy, REUSED), 0);
}

/// A raw HTTP/1.1 upstream that keeps each connection open after its responses until
/// `close_all`.
struct ClosingUpstream {
    address: std::net::SocketAddr,
    /// Cancelled to close the connections accepted so far, then replaced.
    close: Arc<Mutex<CancellationToken>>,
    accepted: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ClosingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ClosingUpstream {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let close = Arc::new(Mutex::new(CancellationToken::new()));
        let [accepted, requests, closed] = [(); 3].map(|()| Arc::new(AtomicUsize::new(0)));
        let task = tokio::spawn({
            let (close, accepted, requests, closed) = (
                close.clone(),
                accepted.clone(),
                requests.clone(),
                closed.clone(),
            );
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let close = close.lock().unwrap().clone();
                    let (requests, closed) = (requests.clone(), closed.clone());
                    tokio::spawn(async move {
                        tokio::select! {
                            () = answer(stream, &requests) => {}
                            () = close.cancelled() => {}
                        }
                        closed.fetch_add(1, Ordering::SeqCst);
                    });
                }
            }
        });
        Self {
            address,
            close,
            accepted,
            requests,
            closed,
            task,
        }
    }

    /// Closes every open connection; connections accepted later stay open.
    fn close_all(&self) {
        let mut close = self.close.lock().unwrap();
        close.cancel();
        *close = CancellationToken::new();
    }

    async fn wait_closed(&self, count: usize) {
        let waited = tokio::time::timeout(WAIT, async {
            while self.closed.load(Ordering::SeqCst) < count {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "the upstream did not close {count} connections"
        );
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Responds to each bodiless request on `stream` with a two-byte body and keeps the
/// connection open.
async fn answer(mut stream: TcpStream, requests: &AtomicUsize) {
    let mut buffer = Vec::new();
    let mut chunk = [0_u8; 4096];
    loop {
        while let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            buffer.drain(..end + 4);
            requests.fetch_add(1, Ordering::SeqCst);
            let response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if stream.write_all(response).await.is_err() {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    }
}
