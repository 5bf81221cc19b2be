//! Headers: hop-by-hop removal in both directions, `X-Forwarded-*`, `X-Request-Id` and the
//! `Host` header the upstream receives.

use http::Response;
use serde_json::Value;

use crate::support::backends::serve;
use crate::support::body::{empty, full};
use crate::support::clients::{Http2Client, curl, get, request, send};
use crate::support::gangway::{Gangway, start_echo_app};
use crate::support::manifests::{INGRESS_CLASS, backend, ingress};

/// Returns the request headers the echo backend reported.
fn upstream_headers(reply: &Value) -> &serde_json::Map<String, Value> {
    reply["headers"]
        .as_object()
        .expect("echo reply without headers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_removed_both_ways() {
    // The backend reports the request headers it received, and responds with hop-by-hop headers of
    // its own next to one end-to-end header.
    let upstream = serve(|request| async move {
        let names: Vec<String> = request
            .headers()
            .keys()
            .map(|name| name.as_str().to_owned())
            .collect();
        let mut response = Response::new(full(serde_json::to_vec(&names).unwrap()));
        let headers = response.headers_mut();
        headers.insert("connection", "x-upstream-hop".parse().unwrap());
        headers.insert("x-upstream-hop", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("proxy-authenticate", "Basic".parse().unwrap());
        headers.insert("x-upstream-end-to-end", "kept".parse().unwrap());
        response
    })
    .await;
    let gangway = Gangway::start(&[
        ("class.yaml", INGRESS_CLASS),
        ("app.yaml", &backend("app", &[upstream.address])),
        ("ingress.yaml", &ingress("app", "app.test", "app")),
    ])
    .await;

    let mut outgoing = request("GET", "app.test", "/", empty());
    let headers = outgoing.headers_mut();
    headers.insert("connection", "x-client-hop".parse().unwrap());
    headers.insert("x-client-hop", "1".parse().unwrap());
    headers.insert("keep-alive", "300".parse().unwrap());
    headers.insert("proxy-connection", "keep-alive".parse().unwrap());
    headers.insert("proxy-authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
    headers.insert("te", "gzip".parse().unwrap());
    headers.insert("upgrade", "example/1".parse().unwrap());
    headers.insert("x-client-end-to-end", "kept".parse().unwrap());
    let reply = send(gangway.http, outgoing).await;

    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen: Vec<String> = serde_json::from_slice(&reply.body).unwrap();
    for removed in [
        "connection",
        "x-client-hop",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "upgrade",
    ] {
        assert!(
            !seen.iter().any(|name| name == removed),
            "upstream got {removed}: {seen:?}"
        );
    }
    assert!(
        seen.iter().any(|name| name == "x-client-end-to-end"),
        "{seen:?}"
    );

    for removed in ["x-upstream-hop", "keep-alive", "proxy-authenticate"] {
        assert_eq!(reply.header(removed), None, "client got {removed}");
    }
    // The upstream's Connection header is gone; hyper writes none on a kept-alive connection.
    assert_eq!(reply.header("connection"), None);
    assert_eq!(reply.header("x-upstream-end-to-end"), Some("kept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_describe_client() {
    let (gangway, _server) = start_echo_app(
        "app.test",
        &["--http-public-port", "8080", "--https-public-port", "8443"],
    )
    .await;

    // Plain HTTP, with a forged X-Forwarded-For that the proxy must replace.
    let mut outgoing = request("GET", "app.test:8080", "/", empty());
    outgoing
        .headers_mut()
        .insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
    let reply = send(gangway.http, outgoing).await.json();
    let headers = upstream_headers(&reply);
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-real-ip"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "app.test:8080");
    assert_eq!(headers["x-forwarded-port"], "8080");

    // HTTPS through curl, which names the host by --resolve.
    let port = gangway.https.port();
    let resolve = format!("app.test:{port}:127.0.0.1");
    let url = format!("https://app.test:{port}/");
    let reply = curl(&["--insecure", "--resolve", &resolve, &url])
        .await
        .json();
    let headers = upstream_headers(&reply);
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "https");
    assert_eq!(headers["x-forwarded-host"], format!("app.test:{port}"));
    assert_eq!(headers["x-forwarded-port"], "8443");
}

/// Returns true for a lower-case UUID of version 4, as the proxy generates.
fn is_uuid_v4(text: &str) -> bool {
    let bytes = text.as_bytes();
    let dashes_at = [8, 13, 18, 23];
    text.len() == 36
        && dashes_at.iter().all(|index| bytes[*index] == b'-')
        && bytes[14] == b'4'
        && text
            .bytes()
            .enumerate()
            .filter(|(index, _)| !dashes_at.contains(index))
            .all(|(_, byte)| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_generated_and_kept() {
    let (gangway, _server) = start_echo_app("app.test", &[]).await;

    // Without an id, the proxy makes one and sends the same to both sides.
    let reply = get(gangway.http, "app.test", "/").await;
    let generated = reply
        .header("x-request-id")
        .expect("no x-request-id")
        .to_owned();
    assert!(is_uuid_v4(&generated), "{generated}");
    assert_eq!(
        upstream_headers(&reply.json())["x-request-id"],
        generated.as_str()
    );
    let second = get(gangway.http, "app.test", "/").await;
    assert_ne!(second.header("x-request-id"), Some(generated.as_str()));

    // A well-formed id from the client is kept.
    let mut outgoing = request("GET", "app.test", "/", empty());
    outgoing
        .headers_mut()
        .insert("x-request-id", "trace-42.a_b:c".parse().unwrap());
    let reply = send(gangway.http, outgoing).await;
    assert_eq!(reply.header("x-request-id"), Some("trace-42.a_b:c"));
    assert_eq!(
        upstream_headers(&reply.json())["x-request-id"],
        "trace-42.a_b:c"
    );

    // A malformed one is replaced.
    let mut outgoing = request("GET", "app.test", "/", empty());
    outgoing
        .headers_mut()
        .insert("x-request-id", "has space;and=more".parse().unwrap());
    let reply = send(gangway.http, outgoing).await;
    let replaced = reply.header("x-request-id").unwrap();
    assert!(is_uuid_v4(replaced), "{replaced}");

    // The access log carries the id.
    let logged = gangway
        .wait_for_log_record(|record| {
            record["request_id"] == "trace-42.a_b:c" && record["status"] == 200
        })
        .await;
    assert!(logged, "no access log line with the client's request id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_header_reaches_upstream_as_sent() {
    let (gangway, _server) = start_echo_app("app.test", &[]).await;

    let reply = get(gangway.http, "App.Test:8080", "/").await.json();
    assert_eq!(upstream_headers(&reply)["host"], "App.Test:8080");

    // HTTP/2 carries the host in :authority; the HTTP/1.1 upstream gets it as Host.
    let mut client = Http2Client::connect_h2c(gangway.http).await.unwrap();
    let reply = client.get("app.test", "/h2").await.unwrap();
    assert_eq!(reply.status, 200);
    let reply = reply.json();
    assert_eq!(upstream_headers(&reply)["host"], "app.test");
    assert_eq!(upstream_headers(&reply)["x-forwarded-host"], "app.test");
    assert_eq!(reply["version"], "HTTP/1.1");
    assert_eq!(reply["path"], "/h2");
}
