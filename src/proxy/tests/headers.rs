//! Headers on the way up and down: hop-by-hop removal, `X-Forwarded-*`, `X-Request-Id`.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;

use super::harness::{HTTP_PUBLIC_PORT, SnapshotBuilder, TestProxy, backend, one_route, send};
use super::upstream::{TestUpstream, Transport, full_body};
use crate::snapshot::UpstreamProtocol;

fn echo_proxy(upstream: &TestUpstream) -> TestProxy {
    let echo = backend("echo", UpstreamProtocol::Http1, &[upstream.address]);
    let snapshot = one_route(&echo);
    TestProxy::start(snapshot)
}

#[tokio::test]
async fn hop_by_hop_request_headers_removed() {
    let upstream = TestUpstream::echo("echo", Transport::Plain).await;
    let proxy = echo_proxy(&upstream);

    let request = Request::get("/")
        .header("host", "foo.example.com")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("te", "gzip")
        .header("upgrade", "h2c")
        .header("x-end-to-end", "kept")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = send(proxy.http_addr(), request).await;

    let echo = response.echo();
    for removed in [
        "x-hop",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "upgrade",
    ] {
        assert_eq!(echo.header(removed), None, "{removed} reached the upstream");
    }
    assert_eq!(echo.header("x-end-to-end"), Some("kept"));
    assert_eq!(echo.header("host"), Some("foo.example.com"));
}

#[tokio::test]
async fn hop_by_hop_response_headers_removed() {
    let upstream = TestUpstream::start(
        Transport::Plain,
        Arc::new(|_request| {
            Box::pin(async {
                Response::builder()
                    .header("connection", "x-hop")
                    .header("x-hop", "secret")
                    .header("proxy-authenticate", "Basic")
                    .header("keep-alive", "timeout=5")
                    .header("x-end-to-end", "kept")
                    .body(full_body("ok"))
                    .unwrap()
            })
        }),
    )
    .await;
    let proxy = echo_proxy(&upstream);

    let request = Request::get("/")
        .header("host", "foo.example.com")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = send(proxy.http_addr(), request).await;

    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.header("x-hop"), None);
    assert_eq!(response.header("proxy-authenticate"), None);
    assert_eq!(response.header("keep-alive"), None);
    assert_eq!(response.header("x-end-to-end"), Some("kept"));
}

#[tokio::test]
async fn forwarded_headers_set_from_connection() {
    let upstream = TestUpstream::echo("echo", Transport::Plain).await;
    let proxy = echo_proxy(&upstream);

    let request = Request::get("/path?token=secret")
        .header("host", "foo.example.com")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-real-ip", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = send(proxy.http_addr(), request).await;

    let echo = response.echo();
    assert_eq!(echo.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(echo.header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(echo.header("x-forwarded-proto"), Some("http"));
    assert_eq!(echo.header("x-forwarded-host"), Some("foo.example.com"));
    let public_port = HTTP_PUBLIC_PORT.to_string();
    assert_eq!(echo.header("x-forwarded-port"), Some(public_port.as_str()));
}

#[tokio::test]
async fn request_id_generated_and_returned() {
    let upstream = TestUpstream::echo("echo", Transport::Plain).await;
    let proxy = echo_proxy(&upstream);

    let request = Request::get("/")
        .header("host", "foo.example.com")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = send(proxy.http_addr(), request).await;

    let returned = response.header("x-request-id").unwrap().to_owned();
    let seen = response.echo().header("x-request-id").unwrap().to_owned();
    assert_eq!(returned, seen);
    let parsed = uuid::Uuid::parse_str(&returned).unwrap();
    assert_eq!(parsed.get_version_num(), 4);
}

#[tokio::test]
async fn request_id_kept_when_client_sends_one() {
    let upstream = TestUpstream::echo("echo", Transport::Plain).await;
    let proxy = echo_proxy(&upstream);

    let request = Request::get("/")
        .header("host", "foo.example.com")
        .header("x-request-id", "trace-42")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = send(proxy.http_addr(), request).await;

    assert_eq!(response.header("x-request-id"), Some("trace-42"));
    assert_eq!(response.echo().header("x-request-id"), Some("trace-42"));
}

#[tokio::test]
async fn request_id_on_failure_responses() {
    let proxy = TestProxy::start(SnapshotBuilder::default().build());

    let request = Request::get("/")
        .header("host", "foo.example.com")
        .header("x-request-id", "trace-404")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = send(proxy.http_addr(), request).await;

    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert_eq!(response.header("x-request-id"), Some("trace-404"));
}
