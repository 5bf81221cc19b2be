//! Connections over time: snapshot swaps under traffic, graceful shutdown, downstream
//! timeouts, and upstream connection reuse.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::harness::{
    Collected, TestProxy, TlsClient, backend, get, h2c_client, http1_client, metric_value,
    one_route,
};
use super::upstream::{TestUpstream, Transport, full_body};
use crate::snapshot::{Snapshot, UpstreamProtocol};

/// Bound on waiting for something that should happen soon.
const WAIT: Duration = Duration::from_secs(5);

fn snapshot_to(upstream: &TestUpstream, protocol: UpstreamProtocol) -> Snapshot {
    let echo = backend("echo", protocol, &[upstream.address]);
    one_route(&echo)
}

fn get_request() -> Request<Empty<Bytes>> {
    Request::get("/")
        .header("host", "foo.example.com")
        .body(Empty::new())
        .unwrap()
}

/// Reads from `stream` until the peer closes it, or fails after [`WAIT`].
async fn expect_closed(stream: &mut TcpStream) {
    let mut buffer = vec![0u8; 4096];
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the proxy did not close the connection");
}

#[tokio::test]
async fn snapshot_swap_during_traffic_fails_no_request() {
    let blue = TestUpstream::echo("blue", Transport::Plain).await;
    let green = TestUpstream::echo("green", Transport::Plain).await;
    let blue_snapshot = || snapshot_to(&blue, UpstreamProtocol::Http1);
    let green_snapshot = || snapshot_to(&green, UpstreamProtocol::H2c);
    let proxy = TestProxy::start(blue_snapshot());
    let address = proxy.http_addr();

    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(tokio::spawn(async move {
            let mut client = http1_client::<Empty<Bytes>>(address).await;
            let mut seen = Vec::new();
            for _ in 0..50 {
                let response = client.send_request(get_request()).await.unwrap();
                let response = Collected::read(response).await;
                assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
                seen.push(response.echo().upstream);
            }
            seen
        }));
    }
    for swap in 0..20 {
        let snapshot = if swap % 2 == 0 {
            green_snapshot()
        } else {
            blue_snapshot()
        };
        proxy.publish(snapshot);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let mut seen = Vec::new();
    for client in clients {
        seen.extend(tokio::time::timeout(WAIT, client).await.unwrap().unwrap());
    }
    assert_eq!(seen.len(), 200);
    assert!(seen.iter().any(|upstream| upstream == "blue"));
    assert!(seen.iter().any(|upstream| upstream == "green"));
}

/// Starts an upstream that reports each request on the returned channel, then responds
/// after `delay`.
pub(super) async fn slow_upstream(delay: Duration) -> (TestUpstream, mpsc::UnboundedReceiver<()>) {
    let (started, started_receiver) = mpsc::unbounded_channel();
    let upstream = TestUpstream::start(
        Transport::Plain,
        Arc::new(move |_request| {
            let started = started.clone();
            Box::pin(async move {
                let _ = started.send(());
                tokio::time::sleep(delay).await;
                Response::new(full_body("finished"))
            })
        }),
    )
    .await;
    (upstream, started_receiver)
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_request() {
    let (upstream, mut started) = slow_upstream(Duration::from_millis(500)).await;
    let proxy = TestProxy::start(snapshot_to(&upstream, UpstreamProtocol::Http1));
    let address = proxy.http_addr();

    let mut client = http1_client::<Empty<Bytes>>(address).await;
    let in_flight = tokio::spawn(client.send_request(get_request()));
    tokio::time::timeout(WAIT, started.recv()).await.unwrap();
    let stopped = tokio::spawn(proxy.stop());

    // New connections are refused once every worker has dropped its listener. Until then a
    // connection may still land in the queue of a listener that is closing, which resets it.
    let refused = tokio::time::timeout(WAIT, async {
        loop {
            match TcpStream::connect(address).await {
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => return,
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    assert!(refused.is_ok(), "the listeners stay open after shutdown");

    let response = tokio::time::timeout(WAIT, in_flight)
        .await
        .unwrap()
        .unwrap()
        .expect("the in-flight request completes");
    let response = Collected::read(response).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body, "finished");
    tokio::time::timeout(WAIT, stopped)
        .await
        .expect("join returns after the drain")
        .unwrap();
}

#[tokio::test]
async fn shutdown_timeout_bounds_the_drain() {
    let (upstream, mut started) = slow_upstream(Duration::from_secs(60)).await;
    let mut config = TestProxy::config();
    config.shutdown_timeout = Duration::from_millis(300);
    config.upstream_response_timeout = Duration::from_secs(60);
    let proxy = TestProxy::start_with(config, snapshot_to(&upstream, UpstreamProtocol::Http1));

    let mut client = http1_client::<Empty<Bytes>>(proxy.http_addr()).await;
    let in_flight = tokio::spawn(client.send_request(get_request()));
    tokio::time::timeout(WAIT, started.recv()).await.unwrap();

    tokio::time::timeout(WAIT, proxy.stop())
        .await
        .expect("join returns once the shutdown timeout passes");
    let outcome = tokio::time::timeout(WAIT, in_flight)
        .await
        .unwrap()
        .unwrap();
    assert!(outcome.is_err(), "the cut request fails instead of hanging");
}

/// Writes a complete request on `stream`, shuts down its write side, and returns everything
/// the proxy sends until it closes the connection. Over TLS the proxy may close without
/// close_notify, which also counts as closed.
async fn request_then_half_close<S>(mut stream: S) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: foo.example.com\r\n\r\n")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut received = Vec::new();
    let ended = tokio::time::timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .expect("the proxy closes the connection");
    if let Err(error) = ended {
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof, "{error}");
    }
    String::from_utf8(received).unwrap()
}

#[tokio::test]
async fn client_half_closed_during_request_cancels_it() {
    // The upstream responds after the half-close arrives, so the request is still in flight
    // when the proxy reads the client's end of input.
    let (upstream, _started) = slow_upstream(Duration::from_millis(500)).await;
    let proxy = TestProxy::start(snapshot_to(&upstream, UpstreamProtocol::Http1));

    let plain = TcpStream::connect(proxy.http_addr()).await.unwrap();
    let received = request_then_half_close(plain).await;
    assert_eq!(received, "", "plain");

    // Over TLS, the shutdown sends close_notify before the TCP half-close.
    let tls = TlsClient::connect(proxy.https_addr(), "foo.example.com", &[b"http/1.1"]).await;
    let received = request_then_half_close(tls.stream).await;
    assert_eq!(received, "", "TLS");
}

/// Starts a raw upstream that responds to each request with a chunked response head and
/// then sends nothing. It reports on the returned channel when the proxy closes its connection.
async fn silent_stream_upstream() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (closed, closed_receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let closed = closed.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 4096];
                while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => head.extend_from_slice(&buffer[..read]),
                    }
                }
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    .await
                    .unwrap();
                while !matches!(stream.read(&mut buffer).await, Ok(0) | Err(_)) {}
                let _ = closed.send(());
            });
        }
    });
    (address, closed_receiver)
}

#[tokio::test]
async fn client_gone_during_silent_stream_frees_upstream() {
    let (address, mut closed) = silent_stream_upstream().await;
    let silent = backend("silent", UpstreamProtocol::Http1, &[address]);
    let proxy = TestProxy::start(one_route(&silent));

    let mut stream = TcpStream::connect(proxy.http_addr()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: foo.example.com\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 4096];
    let read = tokio::time::timeout(WAIT, stream.read(&mut buffer))
        .await
        .expect("the response head arrives")
        .unwrap();
    assert!(buffer[..read].starts_with(b"HTTP/1.1 200"));
    drop(stream);

    let freed = tokio::time::timeout(WAIT, closed.recv()).await;
    assert!(freed.is_ok(), "the upstream connection outlives the client");
}

/// Sends one request on a new HTTP/2 connection to `address`, checks that it succeeds, and
/// returns whether the proxy closes the connection within [`WAIT`].
async fn http2_request_then_close(address: std::net::SocketAddr) -> bool {
    let mut sender = h2c_client::<Empty<Bytes>>(address).await;
    let request = Request::get("http://foo.example.com/")
        .body(Empty::new())
        .unwrap();
    let response = Collected::read(sender.send_request(request).await.unwrap()).await;
    assert_eq!(response.status, StatusCode::OK);

    tokio::time::timeout(WAIT, async {
        while !sender.is_closed() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn idle_http2_connection_closed() {
    let upstream = TestUpstream::echo("echo", Transport::Plain).await;
    let mut config = TestProxy::config();
    config.idle_timeout = Duration::from_millis(300);
    let proxy = TestProxy::start_with(config, snapshot_to(&upstream, UpstreamProtocol::Http1));

    let closed = http2_request_then_close(proxy.http_addr()).await;
    assert!(closed, "the idle HTTP/2 connection stays open");
}

#[tokio::test]
async fn idle_http1_connection_closed() {
    let upstream = TestUpstream::echo("echo", Transport::Plain).await;
    let mut config = TestProxy::config();
    config.idle_timeout = Duration::from_millis(300);
    let proxy = TestProxy::start_with(config, snapshot_to(&upstream, UpstreamProtocol::Http1));

    let mut stream = TcpStream::connect(proxy.http_addr()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: foo.example.com\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    expect_closed(&mut stream).await;
}

#[tokio::test]
async fn zero_idle_timeout_turns_keep_alive_off() {
    let upstream = TestUpstream::echo("echo", Transport::Plain).await;
    let mut config = TestProxy::config();
    config.idle_timeout = Duration::ZERO;
    let proxy = TestProxy::start_with(config, snapshot_to(&upstream, UpstreamProtocol::Http1));

    let mut stream = TcpStream::connect(proxy.http_addr()).await.unwrap();
    // The first request still has the client header timeout, not zero.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: foo.example.com\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .expect("the proxy closes the connection after its response")
        .unwrap();
    let received = String::from_utf8(received).unwrap();
    assert!(received.starts_with("HTTP/1.1 200"), "{received:?}");
    let head = received
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase()
        + "\r\n";
    assert!(head.contains("\r\nconnection: close\r\n"), "{head:?}");

    // An HTTP/1.0 request for keep-alive gets no `Connection: keep-alive` in the response.
    let mut stream = TcpStream::connect(proxy.http_addr()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: foo.example.com\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut received))
        .await
        .expect("the proxy closes the HTTP/1.0 connection after its response")
        .unwrap();
    let received = String::from_utf8(received).unwrap().to_ascii_lowercase();
    assert!(received.starts_with("http/1.0 200"), "{received:?}");
    assert!(!received.contains("keep-alive"), "{received:?}");

    let closed = http2_request_then_close(proxy.http_addr()).await;
    assert!(closed, "the HTTP/2 connection stays open after its stream");
}

#[tokio::test]
async fn silent_client_closed_after_header_timeout() {
    let upstream = TestUpstream::echo("echo", Transport::Plain).await;
    let mut config = TestProxy::config();
    config.client_header_timeout = Duration::from_millis(300);
    let proxy = TestProxy::start_with(config, snapshot_to(&upstream, UpstreamProtocol::Http1));

    let mut silent = TcpStream::connect(proxy.http_addr()).await.unwrap();
    let mut partial = TcpStream::connect(proxy.http_addr()).await.unwrap();
    partial
        .write_all(b"GET / HTTP/1.1\r\nHost: foo")
        .await
        .unwrap();
    let mut silent_tls = TcpStream::connect(proxy.https_addr()).await.unwrap();

    expect_closed(&mut silent).await;
    expect_closed(&mut partial).await;
    expect_closed(&mut silent_tls).await;
}

#[tokio::test]
async fn upstream_http1_connection_reused() {
    let upstream = TestUpstream::echo("echo", Transport::Plain).await;
    let proxy = TestProxy::start(snapshot_to(&upstream, UpstreamProtocol::Http1));

    let mut client = http1_client::<Empty<Bytes>>(proxy.http_addr()).await;
    for _ in 0..20 {
        let response = Collected::read(client.send_request(get_request()).await.unwrap()).await;
        assert_eq!(response.status, StatusCode::OK);
    }

    assert_eq!(upstream.accepted(), 1);
    let opened = r#"gangway_upstream_connections_opened_total{service="default/echo"}"#;
    let reused = r#"gangway_upstream_connections_reused_total{service="default/echo"}"#;
    assert_eq!(metric_value(&proxy, opened), 1);
    assert_eq!(metric_value(&proxy, reused), 19);
    let requests = concat!(
        r#"gangway_http_requests_total{ingress="default/foo.example.com","#,
        r#"service="default/echo",code="200"}"#
    );
    assert_eq!(metric_value(&proxy, requests), 20);
    let durations = "gangway_http_request_duration_seconds_count";
    assert_eq!(metric_value(&proxy, durations), 20);
}

#[tokio::test]
async fn upstream_pool_shared_across_client_connections() {
    let upstream = TestUpstream::echo("echo", Transport::Plain).await;
    let proxy = TestProxy::start(snapshot_to(&upstream, UpstreamProtocol::Http1));

    for _ in 0..20 {
        let response = get(proxy.http_addr(), "foo.example.com", "/").await;
        assert_eq!(response.status, StatusCode::OK);
    }

    // Each of the two workers has its own pool, so at most one connection each.
    assert!(upstream.accepted() <= 2, "opened {}", upstream.accepted());
}

#[tokio::test]
async fn upstream_h2c_connection_multiplexed() {
    let upstream = TestUpstream::echo("echo", Transport::Plain).await;
    let proxy = TestProxy::start(snapshot_to(&upstream, UpstreamProtocol::H2c));

    let mut client = h2c_client::<Empty<Bytes>>(proxy.http_addr()).await;
    let mut requests = Vec::new();
    for _ in 0..10 {
        let request = Request::get("http://foo.example.com/")
            .body(Empty::new())
            .unwrap();
        requests.push(client.send_request(request));
    }
    for request in requests {
        let response = Collected::read(request.await.unwrap()).await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.echo().version, "HTTP/2.0");
    }

    assert_eq!(upstream.accepted(), 1);
}
