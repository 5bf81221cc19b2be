//! Streaming and protocols: response and request bodies that flow while the other side is
//! still sending, HTTP/2 over TLS by ALPN, h2c from the client, gRPC-style trailers to an h2c
//! upstream, and WebSocket over HTTP and HTTPS.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::support::backends::{echo_services, serve};
use crate::support::body::{Body, channel, empty, full};
use crate::support::clients::{
    Http1Client, Http2Client, REQUEST_TIMEOUT, curl, get, request, send, websocket,
};
use crate::support::gangway::{Gangway, start_echo_app};
use crate::support::manifests::{
    Endpoint, INGRESS_CLASS, ServicePort, backend, documents, endpoint_slice, ingress, service,
    tls_ingress, tls_secret,
};
use crate::support::tls::{ALPN_H2, ALPN_HTTP1, TestCa, connect, inspecting_client_config};

/// Runs `future`, failing the test with `description` after [`REQUEST_TIMEOUT`].
async fn bounded<F: std::future::Future>(description: &str, future: F) -> F::Output {
    tokio::time::timeout(REQUEST_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {description}"))
}

/// Reads data frames from `body` until `expected` bytes arrived, and compares them.
async fn read_exactly(body: &mut Incoming, expected: &[u8]) {
    let mut received = Vec::new();
    while received.len() < expected.len() {
        let frame = bounded("a response body frame", body.frame())
            .await
            .expect("the response body ended early")
            .expect("the response body failed");
        if let Ok(data) = frame.into_data() {
            received.extend_from_slice(&data);
        }
    }
    assert_eq!(received, expected);
}

/// Starts a backend whose response body is fed by the test: each request hands a frame
/// sender over the returned channel, and the body ends when the test drops it.
async fn start_fed_backend() -> (
    crate::support::backends::TestServer,
    mpsc::UnboundedReceiver<mpsc::Sender<Frame<Bytes>>>,
) {
    let (handoff, senders) = mpsc::unbounded_channel();
    let server = serve(move |_request| {
        let (frames, body) = channel();
        let _ = handoff.send(frames);
        async move { Response::new(body) }
    })
    .await;
    (server, senders)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_response_arrives_in_pieces() {
    let (upstream, mut senders) = start_fed_backend().await;
    let gangway = Gangway::start(&[
        ("class.yaml", INGRESS_CLASS),
        ("app.yaml", &backend("app", &[upstream.address])),
        ("ingress.yaml", &ingress("app", "stream.test", "app")),
    ])
    .await;

    for version in [Version::HTTP_11, Version::HTTP_2] {
        let response = if version == Version::HTTP_11 {
            let mut client = Http1Client::connect(gangway.http).await.unwrap();
            let outgoing = request("GET", "stream.test", "/", empty());
            bounded("the response head", client.send_streaming(outgoing))
                .await
                .unwrap()
        } else {
            let mut client = Http2Client::connect_h2c(gangway.http).await.unwrap();
            let outgoing = client.request("GET", "stream.test", "/", empty());
            bounded("the response head", client.send_streaming(outgoing))
                .await
                .unwrap()
        };
        assert_eq!(response.status(), StatusCode::OK, "{version:?}");
        if version == Version::HTTP_11 {
            assert_eq!(
                response.headers().get("transfer-encoding").unwrap(),
                "chunked"
            );
        }
        let frames = bounded("the upstream request", senders.recv())
            .await
            .unwrap();
        let mut body = response.into_body();

        // The first piece reaches the client while the upstream has not finished its body.
        frames
            .send(Frame::data(Bytes::from("first piece;")))
            .await
            .unwrap();
        read_exactly(&mut body, b"first piece;").await;
        frames
            .send(Frame::data(Bytes::from("second piece")))
            .await
            .unwrap();
        read_exactly(&mut body, b"second piece").await;
        drop(frames);

        // HTTP/2 may end the stream with an empty DATA frame; no byte may follow.
        let rest = bounded("the end of the body", body.collect())
            .await
            .expect("the response body failed at its end");
        assert!(
            rest.to_bytes().is_empty(),
            "{version:?}: body continued after the upstream ended it"
        );
    }
}

/// Bytes in the upload test: large enough that buffering it whole would show.
const UPLOAD_BYTES: usize = 16 * 1024 * 1024;
const UPLOAD_CHUNK: usize = 64 * 1024;
/// Bytes the upstream must receive before the client sends the rest.
const UPLOAD_FIRST_PART: usize = 1024 * 1024;

/// Returns the test pattern byte at `offset`.
fn pattern(offset: usize) -> u8 {
    (offset % 251) as u8
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_request_body_streams_upstream() {
    // The backend counts bytes as they arrive, reports the count, and responds with the total
    // and whether every byte matched the pattern.
    let (progress, mut received) = watch::channel(0usize);
    let progress = Arc::new(progress);
    let upstream = serve(move |request| {
        let progress = progress.clone();
        async move {
            let mut body = request.into_body();
            let mut total = 0usize;
            let mut intact = true;
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    intact &= data
                        .iter()
                        .enumerate()
                        .all(|(index, byte)| *byte == pattern(total + index));
                    total += data.len();
                    progress.send_replace(total);
                }
            }
            Response::new(full(format!(
                "{{\"total\": {total}, \"intact\": {intact}}}"
            )))
        }
    })
    .await;
    let gangway = Gangway::start(&[
        ("class.yaml", INGRESS_CLASS),
        ("app.yaml", &backend("app", &[upstream.address])),
        ("ingress.yaml", &ingress("app", "upload.test", "app")),
    ])
    .await;

    let (frames, body) = channel();
    let mut client = Http1Client::connect(gangway.http).await.unwrap();
    let exchange = tokio::spawn(async move {
        client
            .send(request("POST", "upload.test", "/upload", body))
            .await
    });
    let chunk = |start: usize| -> Bytes {
        (start..start + UPLOAD_CHUNK)
            .map(pattern)
            .collect::<Vec<u8>>()
            .into()
    };

    let mut sent = 0;
    while sent < UPLOAD_FIRST_PART {
        frames.send(Frame::data(chunk(sent))).await.unwrap();
        sent += UPLOAD_CHUNK;
    }
    // The upstream receives the first part before the client sends the rest.
    let arrived = tokio::time::timeout(
        REQUEST_TIMEOUT,
        received.wait_for(|count| *count >= UPLOAD_FIRST_PART),
    )
    .await
    .is_ok();
    assert!(
        arrived,
        "the upstream received {} of the first {UPLOAD_FIRST_PART} bytes; the proxy holds the body back",
        *received.borrow()
    );
    while sent < UPLOAD_BYTES {
        frames.send(Frame::data(chunk(sent))).await.unwrap();
        sent += UPLOAD_CHUNK;
    }
    drop(frames);

    let reply = bounded("the upload response", exchange)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        serde_json::json!({"total": UPLOAD_BYTES, "intact": true})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_tls_by_alpn() {
    let ca = TestCa::new();
    let leaf = ca.issue(&["app.test"]);
    let (_servers, services) = echo_services(&["app"]).await;
    let gangway = Gangway::start(&[
        ("class.yaml", INGRESS_CLASS),
        ("services.yaml", &services),
        ("secret.yaml", &tls_secret("app-tls", &leaf)),
        (
            "app.yaml",
            &tls_ingress("app", "app.test", "app-tls", "app"),
        ),
    ])
    .await;

    // A client that offers h2 first gets HTTP/2.
    let stream = connect(
        gangway.https,
        Some("app.test"),
        ca.client_config(&[ALPN_H2, ALPN_HTTP1]),
    )
    .await
    .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(ALPN_H2));
    let mut client = Http2Client::handshake(stream, "https").await.unwrap();
    let reply = client.get("app.test", "/over-h2").await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.version, Version::HTTP_2);
    let echoed = reply.json();
    assert_eq!(echoed["path"], "/over-h2");
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");

    // A client that offers only http/1.1 gets HTTP/1.1.
    let stream = connect(
        gangway.https,
        Some("app.test"),
        ca.client_config(&[ALPN_HTTP1]),
    )
    .await
    .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(ALPN_HTTP1));
    let mut client = Http1Client::handshake(stream).await.unwrap();
    let reply = client.get("app.test", "/").await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.version, Version::HTTP_11);

    // A client that offers no ALPN at all gets HTTP/1.1.
    let stream = connect(gangway.https, Some("app.test"), ca.client_config(&[]))
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    let mut client = Http1Client::handshake(stream).await.unwrap();
    let reply = client.get("app.test", "/").await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.version, Version::HTTP_11);

    // curl negotiates HTTP/2 and verifies the certificate against the test CA.
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), ca.pem()).unwrap();
    let port = gangway.https.port();
    let resolve = format!("app.test:{port}:127.0.0.1");
    let url = format!("https://app.test:{port}/");
    let ca_path = ca_file.path().to_str().unwrap();
    let reply = curl(&["--http2", "--cacert", ca_path, "--resolve", &resolve, &url]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.http_version, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_from_client_with_prior_knowledge() {
    let (gangway, _server) = start_echo_app("app.test", &[]).await;

    // Many streams at once on one connection.
    let client = Http2Client::connect_h2c(gangway.http).await.unwrap();
    let mut requests = Vec::new();
    for index in 0..20 {
        let mut client = client.clone();
        requests.push(tokio::spawn(async move {
            client.get("app.test", &format!("/stream/{index}")).await
        }));
    }
    for (index, exchange) in requests.into_iter().enumerate() {
        let reply = bounded("an h2c response", exchange).await.unwrap().unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.version, Version::HTTP_2);
        assert_eq!(reply.json()["path"], format!("/stream/{index}"));
    }

    let url = format!("http://127.0.0.1:{}/", gangway.http.port());
    let reply = curl(&[
        "--http2-prior-knowledge",
        "--header",
        "Host: app.test",
        &url,
    ])
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.http_version, "2");
    assert_eq!(reply.json()["backend"], "app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_style_trailers_pass_through_h2c() {
    // A gRPC-like upstream: it reports the version and `te` it got, echoes the message, and
    // ends with trailers that carry the status, as gRPC does.
    let upstream = serve(|request| async move {
        let version = format!("{:?}", request.version());
        let te = request
            .headers()
            .get("te")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("none")
            .to_owned();
        let message = request.into_body().collect().await.unwrap().to_bytes();
        let (frames, body): (_, Body) = channel();
        tokio::spawn(async move {
            let _ = frames.send(Frame::data(message)).await;
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            trailers.insert("grpc-message", "ok".parse().unwrap());
            let _ = frames.send(Frame::trailers(trailers)).await;
        });
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert("content-type", "application/grpc".parse().unwrap());
        headers.insert("x-upstream-version", version.parse().unwrap());
        headers.insert("x-upstream-te", te.parse().unwrap());
        response
    })
    .await;
    let h2c_port = ServicePort {
        name: "grpc",
        port: 50051,
        app_protocol: Some("kubernetes.io/h2c"),
    };
    let grpc = documents(&[
        service("grpc", &[h2c_port]),
        endpoint_slice(
            "grpc-1",
            "grpc",
            "grpc",
            &[Endpoint::ready(upstream.address)],
        ),
    ]);
    let app = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: grpc}
spec:
  ingressClassName: gangway
  rules:
  - host: grpc.test
    http:
      paths:
      - {path: /echo.Echo/, pathType: Prefix, backend: {service: {name: grpc, port: {name: grpc}}}}
";
    let gangway = Gangway::start(&[
        ("class.yaml", INGRESS_CLASS),
        ("grpc.yaml", &grpc),
        ("app.yaml", app),
    ])
    .await;

    // A length-prefixed gRPC message: no compression, 5 bytes.
    let message = Bytes::from_static(b"\x00\x00\x00\x00\x05hello");
    let mut client = Http2Client::connect_h2c(gangway.http).await.unwrap();
    let mut outgoing = client.request("POST", "grpc.test", "/echo.Echo/Say", full(message.clone()));
    let headers = outgoing.headers_mut();
    headers.insert("content-type", "application/grpc".parse().unwrap());
    headers.insert("te", "trailers".parse().unwrap());
    let reply = bounded("the gRPC response", client.send(outgoing))
        .await
        .unwrap();

    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/grpc"));
    assert_eq!(reply.header("x-upstream-version"), Some("HTTP/2.0"));
    assert_eq!(reply.header("x-upstream-te"), Some("trailers"));
    assert_eq!(reply.body, message);
    let trailers = reply.trailers.expect("the response has no trailers");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(trailers.get("grpc-message").unwrap(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_through_proxy() {
    let (gangway, _server) = start_echo_app("ws.test", &[]).await;

    // Over plain HTTP.
    let mut socket = websocket(gangway.http, "ws.test", "/chat").await;
    for message in [
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 255]),
    ] {
        socket.send(message.clone()).await.unwrap();
        let echoed = bounded("a WebSocket echo", socket.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message);
    }
    socket.close(None).await.unwrap();

    // Over TLS with the default certificate; WebSocket needs ALPN http/1.1.
    let stream = connect(
        gangway.https,
        Some("ws.test"),
        inspecting_client_config(&[ALPN_HTTP1]),
    )
    .await
    .unwrap();
    let (mut socket, response) = bounded(
        "the secure WebSocket handshake",
        tokio_tungstenite::client_async("wss://ws.test/chat", stream),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    socket.send(Message::text("over tls")).await.unwrap();
    let echoed = bounded("a secure WebSocket echo", socket.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("over tls"));

    // Ordinary requests still work next to the tunnels.
    assert_eq!(get(gangway.http, "ws.test", "/").await.outcome(), "app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_upload_and_head_pass_through() {
    let (gangway, _server) = start_echo_app("app.test", &[]).await;
    let url = format!("http://127.0.0.1:{}/upload", gangway.http.port());

    // curl sends `Expect: 100-continue` for a large PUT and waits for the 100 response.
    let upload = tempfile::NamedTempFile::new().unwrap();
    let size = 8 * 1024 * 1024;
    std::fs::write(upload.path(), (0..size).map(pattern).collect::<Vec<u8>>()).unwrap();
    let file = upload.path().to_str().unwrap();
    let reply = curl(&["--upload-file", file, "--header", "Host: app.test", &url]).await;
    assert_eq!(reply.status, 200);
    let echoed = reply.json();
    assert_eq!(echoed["method"], "PUT");
    assert_eq!(echoed["body_bytes"], size);

    // HEAD gets the headers of a GET and no body.
    let head = send(
        gangway.http,
        request("HEAD", "app.test", "/upload", empty()),
    )
    .await;
    assert_eq!(head.status, 200);
    assert!(
        head.header("content-length").is_some(),
        "{:?}",
        head.headers
    );
    assert!(head.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delimited_upstream_body_arrives_whole() {
    // An HTTP/1.0-style upstream: no Content-Length, the body ends when it closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let body = "x".repeat(100_000);
    let served = body.clone();
    let upstream = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let served = served.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let head =
                    "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-type: text/plain\r\n\r\n";
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(served.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    let gangway = Gangway::start(&[
        ("class.yaml", INGRESS_CLASS),
        ("app.yaml", &backend("app", &[address])),
        ("ingress.yaml", &ingress("app", "app.test", "app")),
    ])
    .await;

    // Twice on one client connection: the closed upstream connection must not be reused.
    let mut client = Http1Client::connect(gangway.http).await.unwrap();
    for attempt in 0..2 {
        let reply = client.get("app.test", "/").await.unwrap();
        assert_eq!(reply.status, 200, "attempt {attempt}");
        assert_eq!(reply.body.len(), body.len(), "attempt {attempt}");
    }
    upstream.abort();
}
