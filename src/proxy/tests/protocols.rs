//! Protocols on both sides: HTTP/2 over TLS by ALPN, h2c, TLS and h2c upstreams, gRPC-like
//! trailers, WebSocket upgrades, and `curl` as an independent client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use super::harness::{
    Collected, HTTPS_PUBLIC_PORT, TestProxy, TlsClient, backend, h2c_client, one_route,
};
use super::upstream::{TestUpstream, Transport};
use crate::snapshot::UpstreamProtocol;

fn proxy_to(upstream: &TestUpstream, protocol: UpstreamProtocol) -> TestProxy {
    let echo = backend("echo", protocol, &[upstream.address]);
    let snapshot = one_route(&echo);
    TestProxy::start(snapshot)
}

#[tokio::test]
async fn http2_over_tls_by_alpn() {
    let upstream = TestUpstream::echo("echo", Transport::Plain).await;
    let proxy = proxy_to(&upstream, UpstreamProtocol::Http1);

    let tls =
        TlsClient::connect(proxy.https_addr(), "foo.example.com", &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.alpn().as_deref(), Some(&b"h2"[..]));
    let (mut sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls.stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get("https://foo.example.com/secure")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = Collected::read(sender.send_request(request).await.unwrap()).await;

    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.version, Version::HTTP_2);
    let echo = response.echo();
    assert_eq!(echo.version, "HTTP/1.1");
    assert_eq!(echo.header("host"), Some("foo.example.com"));
    assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
    let public_port = HTTPS_PUBLIC_PORT.to_string();
    assert_eq!(echo.header("x-forwarded-port"), Some(public_port.as_str()));
}

#[tokio::test]
async fn http1_over_tls_by_alpn() {
    let upstream = TestUpstream::echo("echo", Transport::Plain).await;
    let proxy = proxy_to(&upstream, UpstreamProtocol::Http1);

    let tls = TlsClient::connect(proxy.https_addr(), "foo.example.com", &[b"http/1.1"]).await;
    assert_eq!(tls.alpn().as_deref(), Some(&b"http/1.1"[..]));
    let (mut sender, connection) = http1::handshake(TokioIo::new(tls.stream)).await.unwrap();
    tokio::spawn(connection);
    let request = Request::get("/secure")
        .header("host", "foo.example.com")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = Collected::read(sender.send_request(request).await.unwrap()).await;

    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.version, Version::HTTP_11);
    assert_eq!(response.echo().header("x-forwarded-proto"), Some("https"));
}

#[tokio::test]
async fn h2c_downstream_by_prior_knowledge() {
    let upstream = TestUpstream::echo("echo", Transport::Plain).await;
    let proxy = proxy_to(&upstream, UpstreamProtocol::Http1);

    let mut sender = h2c_client::<Empty<Bytes>>(proxy.http_addr()).await;
    let request = Request::get("http://foo.example.com/plain")
        .body(Empty::new())
        .unwrap();
    let response = Collected::read(sender.send_request(request).await.unwrap()).await;

    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.version, Version::HTTP_2);
    let echo = response.echo();
    assert_eq!(echo.uri, "/plain");
    assert_eq!(echo.header("host"), Some("foo.example.com"));
}

#[tokio::test]
async fn tls_upstream_speaks_h2_by_alpn() {
    let upstream = TestUpstream::echo("secure", Transport::Tls).await;
    let proxy = proxy_to(&upstream, UpstreamProtocol::Tls);

    let response = super::harness::get(proxy.http_addr(), "foo.example.com", "/x?y=1").await;

    assert_eq!(response.status, StatusCode::OK);
    let echo = response.echo();
    assert_eq!(echo.version, "HTTP/2.0");
    assert_eq!(echo.uri, "https://foo.example.com/x?y=1");
    assert_eq!(
        echo.header("host"),
        None,
        "HTTP/2 carries the host in :authority"
    );
}

/// Returns a handler that responds like a gRPC server: it echoes the body, then sends
/// `grpc-status` as a trailer.
fn grpc_like_handler() -> super::upstream::Handler {
    Arc::new(|request: Request<Incoming>| {
        Box::pin(async move {
            let version = format!("{:?}", request.version());
            let te = request.headers().get("te").cloned();
            let content = request.into_body().collect().await.unwrap().to_bytes();
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            trailers.insert("grpc-message", HeaderValue::from_static("done"));
            let body = Full::new(content)
                .with_trailers(async move { Some(Ok(trailers)) })
                .map_err(|never| match never {})
                .boxed_unsync();
            let mut response = Response::new(body);
            let headers = response.headers_mut();
            headers.insert("content-type", HeaderValue::from_static("application/grpc"));
            headers.insert("x-seen-version", HeaderValue::from_str(&version).unwrap());
            if let Some(te) = te {
                headers.insert("x-seen-te", te);
            }
            response
        })
    })
}

#[tokio::test]
async fn grpc_trailers_pass_through_h2c() {
    let upstream = TestUpstream::start(Transport::Plain, grpc_like_handler()).await;
    let proxy = proxy_to(&upstream, UpstreamProtocol::H2c);

    let mut sender = h2c_client::<Full<Bytes>>(proxy.http_addr()).await;
    let request = Request::post("http://foo.example.com/pkg.Service/Method")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x02hi")))
        .unwrap();
    let response = Collected::read(sender.send_request(request).await.unwrap()).await;

    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.header("x-seen-version"), Some("HTTP/2.0"));
    assert_eq!(response.header("x-seen-te"), Some("trailers"));
    assert_eq!(response.body, Bytes::from_static(b"\0\0\0\0\x02hi"));
    let trailers = response.trailers.expect("trailers arrive");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(trailers.get("grpc-message").unwrap(), "done");
}

#[tokio::test]
async fn grpc_trailers_pass_through_tls() {
    let upstream = TestUpstream::start(Transport::Tls, grpc_like_handler()).await;
    let proxy = proxy_to(&upstream, UpstreamProtocol::Tls);

    let tls = TlsClient::connect(proxy.https_addr(), "foo.example.com", &[b"h2"]).await;
    let (mut sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls.stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::post("https://foo.example.com/pkg.Service/Method")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\x01x")))
        .unwrap();
    let response = Collected::read(sender.send_request(request).await.unwrap()).await;

    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.header("x-seen-version"), Some("HTTP/2.0"));
    let trailers = response.trailers.expect("trailers arrive");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
}

/// Starts a WebSocket server that echoes every message, on a raw TCP listener.
pub(super) async fn websocket_echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_close() {
                        break;
                    }
                    if socket.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    address
}

#[tokio::test]
async fn websocket_echo_through_upgrade() {
    let server = websocket_echo_server().await;
    let websocket = backend("ws", UpstreamProtocol::Http1, &[server]);
    let snapshot = one_route(&websocket);
    let proxy = TestProxy::start(snapshot);

    let stream = tokio::net::TcpStream::connect(proxy.http_addr())
        .await
        .unwrap();
    let (mut socket, response) =
        tokio_tungstenite::client_async("ws://foo.example.com/chat", stream)
            .await
            .expect("WebSocket handshake through the proxy");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);

    for text in ["hello", "second message"] {
        socket.send(Message::text(text)).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("echo arrives in time")
            .unwrap()
            .unwrap();
        assert_eq!(echoed, Message::text(text));
    }
    let binary = vec![0u8, 1, 2, 255];
    socket.send(Message::binary(binary.clone())).await.unwrap();
    let echoed = socket.next().await.unwrap().unwrap();
    assert_eq!(echoed, Message::binary(binary));
    socket.close(None).await.unwrap();
}

#[tokio::test]
async fn idle_websocket_tunnel_closed() {
    let server = websocket_echo_server().await;
    let websocket = backend("ws", UpstreamProtocol::Http1, &[server]);
    let mut config = TestProxy::config();
    config.tunnel_idle_timeout = Duration::from_millis(400);
    let proxy = TestProxy::start_with(config, one_route(&websocket));

    let stream = tokio::net::TcpStream::connect(proxy.http_addr())
        .await
        .unwrap();
    let (mut socket, _) = tokio_tungstenite::client_async("ws://foo.example.com/chat", stream)
        .await
        .expect("WebSocket handshake through the proxy");

    // Traffic every 100 ms, for three times the timeout, keeps the tunnel open.
    let mut last_echo = std::time::Instant::now();
    for round in 0..12 {
        let text = format!("message {round}");
        socket.send(Message::text(text.clone())).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("echo arrives in time")
            .expect("the tunnel is open")
            .unwrap();
        assert_eq!(echoed, Message::text(text));
        last_echo = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Then silence: the proxy closes the tunnel, without a close frame, 400 ms after it
    // read the last echo, which was just before the client received it.
    let ended = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("the idle tunnel is closed");
    assert!(
        !matches!(ended, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{ended:?}"
    );
    let quiet = last_echo.elapsed();
    assert!(
        quiet >= Duration::from_millis(300),
        "closed {quiet:?} after the last echo, before the timeout"
    );
}

#[tokio::test]
async fn idle_tunnel_closes_upstream_side() {
    // A raw upstream that accepts the upgrade, then reports how long it waited for the proxy
    // to close the connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (closed, mut closed_receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buffer = [0u8; 4096];
        while !head.windows(4).any(|window| window == b"\r\n\r\n") {
            let read = stream.read(&mut buffer).await.unwrap();
            assert!(read > 0);
            head.extend_from_slice(&buffer[..read]);
        }
        stream
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: test\r\n\r\n",
            )
            .await
            .unwrap();
        let started = std::time::Instant::now();
        while !matches!(stream.read(&mut buffer).await, Ok(0) | Err(_)) {}
        let _ = closed.send(started.elapsed());
    });
    let upstream = backend("raw", UpstreamProtocol::Http1, &[address]);
    let mut config = TestProxy::config();
    config.tunnel_idle_timeout = Duration::from_millis(300);
    let proxy = TestProxy::start_with(config, one_route(&upstream));

    let mut client = tokio::net::TcpStream::connect(proxy.http_addr())
        .await
        .unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: foo.example.com\r\nConnection: upgrade\r\nUpgrade: test\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = [0u8; 4096];
    let read = client.read(&mut buffer).await.unwrap();
    let head = String::from_utf8_lossy(&buffer[..read]);
    assert!(head.starts_with("HTTP/1.1 101"), "{head:?}");

    let upstream_idle = tokio::time::timeout(Duration::from_secs(5), closed_receiver.recv())
        .await
        .expect("the proxy closes the upstream side")
        .unwrap();
    assert!(
        upstream_idle >= Duration::from_millis(250),
        "{upstream_idle:?}"
    );
    let client_end = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buffer))
        .await
        .expect("the proxy closes the client side");
    assert!(matches!(client_end, Ok(0) | Err(_)), "{client_end:?}");
}

/// Runs `curl` with `args` and returns its standard output; `%{http_version}` and the body
/// are what the tests read.
async fn curl(args: &[String]) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "10"])
            .args(args)
            .output(),
    )
    .await
    .expect("curl finishes in time")
    .expect("curl runs");
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn curl_http2_over_tls_with_sni() {
    let upstream = TestUpstream::echo("echo", Transport::Plain).await;
    let proxy = proxy_to(&upstream, UpstreamProtocol::Http1);
    let port = proxy.https_addr().port();

    let output = curl(&[
        "--insecure".into(),
        "--http2".into(),
        "--resolve".into(),
        format!("foo.example.com:{port}:127.0.0.1"),
        "--write-out".into(),
        "\n%{http_code} %{http_version}".into(),
        format!("https://foo.example.com:{port}/curl"),
    ])
    .await;

    let (body, status_line) = output.rsplit_once('\n').unwrap();
    assert_eq!(status_line, "200 2");
    let echo: super::upstream::Echo = serde_json::from_str(body).unwrap();
    assert_eq!(echo.uri, "/curl");
    assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
}

#[tokio::test]
async fn curl_h2c_prior_knowledge() {
    let upstream = TestUpstream::echo("echo", Transport::Plain).await;
    let proxy = proxy_to(&upstream, UpstreamProtocol::Http1);
    let port = proxy.http_addr().port();

    let output = curl(&[
        "--http2-prior-knowledge".into(),
        "--resolve".into(),
        format!("foo.example.com:{port}:127.0.0.1"),
        "--write-out".into(),
        "\n%{http_code} %{http_version}".into(),
        format!("http://foo.example.com:{port}/curl"),
    ])
    .await;

    let (body, status_line) = output.rsplit_once('\n').unwrap();
    assert_eq!(status_line, "200 2");
    let echo: super::upstream::Echo = serde_json::from_str(body).unwrap();
    assert_eq!(
        echo.header("host"),
        Some(format!("foo.example.com:{port}").as_str())
    );
}
