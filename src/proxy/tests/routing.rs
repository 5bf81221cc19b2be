//! Routing, load balancing and the failure responses, through real sockets.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;

use super::harness::{
    BlackHole, SnapshotBuilder, TestProxy, backend, get, one_route, prefix, refused_address, send,
};
use super::upstream::{TestUpstream, Transport};
use crate::snapshot::{PathMatch, RouteAction, UpstreamProtocol};

#[tokio::test]
async fn routes_by_host_and_path() {
    let api = TestUpstream::echo("api", Transport::Plain).await;
    let web = TestUpstream::echo("web", Transport::Plain).await;
    let fallback = TestUpstream::echo("fallback", Transport::Plain).await;
    let api_backend = backend("api", UpstreamProtocol::Http1, &[api.address]);
    let web_backend = backend("web", UpstreamProtocol::Http1, &[web.address]);
    let fallback_backend = backend("fallback", UpstreamProtocol::Http1, &[fallback.address]);
    let snapshot = SnapshotBuilder::default()
        .forward("foo.example.com", prefix("/api"), &api_backend)
        .forward("foo.example.com", prefix("/"), &web_backend)
        .forward("*.example.org", prefix("/"), &api_backend)
        .forward("*", prefix("/"), &fallback_backend)
        .build();
    let proxy = TestProxy::start(snapshot);
    let address = proxy.http_addr();

    // (host, path, expected upstream)
    let cases = [
        ("foo.example.com", "/api/users", "api"),
        ("FOO.example.com:8080", "/api", "api"),
        ("foo.example.com", "/apis", "web"),
        ("foo.example.com", "/", "web"),
        ("bar.example.org", "/x", "api"),
        ("unknown.example.net", "/x", "fallback"),
    ];
    for (host, path, expected) in cases {
        let response = get(address, host, path).await;

        assert_eq!(response.status, StatusCode::OK, "{host}{path}");
        assert_eq!(response.echo().upstream, expected, "{host}{path}");
        assert_eq!(
            response.echo().uri,
            path,
            "origin-form upstream for {host}{path}"
        );
    }
}

#[tokio::test]
async fn absolute_uri_host_wins_over_host_header() {
    let api = TestUpstream::echo("api", Transport::Plain).await;
    let api_backend = backend("api", UpstreamProtocol::Http1, &[api.address]);
    let snapshot = one_route(&api_backend);
    let proxy = TestProxy::start(snapshot);

    let request = Request::get("http://foo.example.com/path?q=1")
        .header("host", "other.example.com")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = send(proxy.http_addr(), request).await;

    assert_eq!(response.status, StatusCode::OK);
    let echo = response.echo();
    assert_eq!(echo.uri, "/path?q=1");
    assert_eq!(echo.header("host"), Some("foo.example.com"));
}

#[tokio::test]
async fn unknown_host_without_catch_all_is_404() {
    let api = TestUpstream::echo("api", Transport::Plain).await;
    let api_backend = backend("api", UpstreamProtocol::Http1, &[api.address]);
    let snapshot = SnapshotBuilder::default()
        .forward(
            "foo.example.com",
            PathMatch::Exact("/only".into()),
            &api_backend,
        )
        .build();
    let proxy = TestProxy::start(snapshot);

    let unknown_host = get(proxy.http_addr(), "bar.example.com", "/only").await;
    let unknown_path = get(proxy.http_addr(), "foo.example.com", "/only/more").await;

    for response in [unknown_host, unknown_path] {
        assert_eq!(response.status, StatusCode::NOT_FOUND);
        assert_eq!(response.header("x-gangway-error"), Some("no-route"));
        assert!(response.body.len() < 64, "short body: {:?}", response.body);
        assert!(response.header("x-request-id").is_some());
    }
}

#[tokio::test]
async fn backend_without_endpoints_is_503() {
    let empty = backend("empty", UpstreamProtocol::Http1, &[]);
    let snapshot = SnapshotBuilder::default()
        .forward("foo.example.com", prefix("/"), &empty)
        .route(
            "foo.example.com",
            prefix("/unresolved"),
            RouteAction::Respond {
                status: 503,
                body: Arc::from("service not found\n"),
            },
            false,
        )
        .build();
    let proxy = TestProxy::start(snapshot);

    let no_endpoint = get(proxy.http_addr(), "foo.example.com", "/").await;
    let respond = get(proxy.http_addr(), "foo.example.com", "/unresolved").await;

    assert_eq!(no_endpoint.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(no_endpoint.header("x-gangway-error"), Some("no-endpoint"));
    assert_eq!(respond.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        respond.header("x-gangway-error"),
        Some("unresolved-backend")
    );
    assert_eq!(respond.body, "service not found\n");
}

#[tokio::test]
async fn refused_connection_is_502() {
    let dead = backend("dead", UpstreamProtocol::Http1, &[refused_address()]);
    let snapshot = one_route(&dead);
    let proxy = TestProxy::start(snapshot);

    let response = get(proxy.http_addr(), "foo.example.com", "/").await;

    assert_eq!(response.status, StatusCode::BAD_GATEWAY);
    assert_eq!(response.header("x-gangway-error"), Some("connect-refused"));
}

#[tokio::test]
async fn upstream_reset_before_head_is_502() {
    // A server that accepts and closes at once, without a response.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let closing = backend("closing", UpstreamProtocol::Http1, &[address]);
    let snapshot = one_route(&closing);
    let proxy = TestProxy::start(snapshot);

    let response = get(proxy.http_addr(), "foo.example.com", "/").await;

    assert_eq!(response.status, StatusCode::BAD_GATEWAY);
    assert_eq!(response.header("x-gangway-error"), Some("connection-reset"));
}

#[tokio::test]
async fn slow_connect_is_504() {
    let black_hole = BlackHole::new();
    let slow = backend("slow", UpstreamProtocol::Http1, &[black_hole.address]);
    let snapshot = one_route(&slow);
    let mut config = TestProxy::config();
    config.upstream_connect_timeout = Duration::from_millis(200);
    let proxy = TestProxy::start_with(config, snapshot);

    let response = get(proxy.http_addr(), "foo.example.com", "/").await;

    assert_eq!(response.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(response.header("x-gangway-error"), Some("connect-timeout"));
}

#[tokio::test]
async fn slow_response_head_is_504() {
    let sleepy = TestUpstream::start(
        Transport::Plain,
        Arc::new(|_request| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                http::Response::new(super::upstream::full_body("too late"))
            })
        }),
    )
    .await;
    let slow = backend("slow", UpstreamProtocol::Http1, &[sleepy.address]);
    let snapshot = one_route(&slow);
    let mut config = TestProxy::config();
    config.upstream_response_timeout = Duration::from_millis(300);
    let proxy = TestProxy::start_with(config, snapshot);

    let response = get(proxy.http_addr(), "foo.example.com", "/").await;

    assert_eq!(response.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(response.header("x-gangway-error"), Some("response-timeout"));
}

#[tokio::test]
async fn connect_failure_retried_on_other_endpoint() {
    let alive = TestUpstream::echo("alive", Transport::Plain).await;
    let mixed = backend(
        "mixed",
        UpstreamProtocol::Http1,
        &[refused_address(), alive.address],
    );
    let snapshot = one_route(&mixed);
    let proxy = TestProxy::start(snapshot);

    for attempt in 0..6 {
        let response = get(proxy.http_addr(), "foo.example.com", "/").await;

        assert_eq!(response.status, StatusCode::OK, "attempt {attempt}");
        assert_eq!(response.echo().upstream, "alive", "attempt {attempt}");
    }
}

#[tokio::test]
async fn single_endpoint_failure_not_retried() {
    let dead = backend("dead", UpstreamProtocol::Http1, &[refused_address()]);
    let snapshot = one_route(&dead);
    let proxy = TestProxy::start(snapshot);

    let response = get(proxy.http_addr(), "foo.example.com", "/").await;

    assert_eq!(response.status, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn endpoints_take_turns() {
    let first = TestUpstream::echo("first", Transport::Plain).await;
    let second = TestUpstream::echo("second", Transport::Plain).await;
    let pair = backend(
        "pair",
        UpstreamProtocol::Http1,
        &[first.address, second.address],
    );
    let snapshot = one_route(&pair);
    let proxy = TestProxy::start(snapshot);

    let mut upstreams = Vec::new();
    for _ in 0..6 {
        let response = get(proxy.http_addr(), "foo.example.com", "/").await;
        upstreams.push(response.echo().upstream);
    }

    assert_eq!(
        upstreams,
        ["first", "second", "first", "second", "first", "second"]
    );
}

#[tokio::test]
async fn plain_http_redirected_to_https_public_port() {
    let api = TestUpstream::echo("api", Transport::Plain).await;
    let api_backend = backend("api", UpstreamProtocol::Http1, &[api.address]);
    let snapshot = SnapshotBuilder::default()
        .route(
            "foo.example.com",
            prefix("/"),
            RouteAction::Forward(api_backend.clone()),
            true,
        )
        .build();
    let proxy = TestProxy::start(snapshot);

    let response = get(proxy.http_addr(), "foo.example.com:8080", "/a/b?c=d").await;

    assert_eq!(response.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        response.header("location"),
        Some("https://foo.example.com:18443/a/b?c=d")
    );
}

#[tokio::test]
async fn redirect_omits_port_443() {
    let api = TestUpstream::echo("api", Transport::Plain).await;
    let api_backend = backend("api", UpstreamProtocol::Http1, &[api.address]);
    let snapshot = SnapshotBuilder::default()
        .route(
            "foo.example.com",
            prefix("/"),
            RouteAction::Forward(api_backend.clone()),
            true,
        )
        .build();
    let mut config = TestProxy::config();
    config.https_public_port = 443;
    let proxy = TestProxy::start_with(config, snapshot);

    let response = get(proxy.http_addr(), "foo.example.com", "/x").await;

    assert_eq!(response.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        response.header("location"),
        Some("https://foo.example.com/x")
    );
}

#[tokio::test]
async fn connect_method_rejected() {
    let api = TestUpstream::echo("api", Transport::Plain).await;
    let api_backend = backend("api", UpstreamProtocol::Http1, &[api.address]);
    let snapshot = SnapshotBuilder::default()
        .forward("*", prefix("/"), &api_backend)
        .build();
    let proxy = TestProxy::start(snapshot);

    let request = Request::connect("foo.example.com:443")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = send(proxy.http_addr(), request).await;

    assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn failed_upstream_tls_handshake_is_502() {
    // The endpoint speaks plain HTTP, so the proxy's ClientHello gets no TLS answer.
    let plain = TestUpstream::echo("plain", Transport::Plain).await;
    let mismatched = backend("mismatched", UpstreamProtocol::Tls, &[plain.address]);
    let proxy = TestProxy::start(one_route(&mismatched));

    let response = get(proxy.http_addr(), "foo.example.com", "/").await;

    assert_eq!(response.status, StatusCode::BAD_GATEWAY);
    assert_eq!(response.header("x-gangway-error"), Some("handshake-failed"));
}
