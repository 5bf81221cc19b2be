//! Backends: round-robin over endpoints, EndpointSlice conditions, unavailable and failing
//! upstreams, and the retry of a failed connect on another endpoint.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::backends::{closed_address, echo, echo_services, serve, serve_on, serve_tls};
use crate::support::body::full;
use crate::support::clients::{Http1Client, get};
use crate::support::gangway::{Gangway, problem};
use crate::support::manifests::{
    Endpoint, HTTP, INGRESS_CLASS, ServicePort, backend, documents, endpoint_slice, ingress,
    service,
};
use crate::support::tls::{ALPN_H2, ALPN_HTTP1, TestCa};

/// Sends `count` requests for `host` on one keep-alive connection and counts the outcomes.
async fn count_outcomes(gangway: &Gangway, host: &str, count: usize) -> BTreeMap<String, usize> {
    let mut client = Http1Client::connect(gangway.http).await.unwrap();
    let mut outcomes = BTreeMap::new();
    for _ in 0..count {
        let reply = client.get(host, "/").await.unwrap();
        *outcomes.entry(reply.outcome()).or_default() += 1;
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_requests_evenly() {
    let servers = [echo("one").await, echo("two").await, echo("three").await];
    let addresses: Vec<_> = servers.iter().map(|server| server.address).collect();
    let gangway = Gangway::start(&[
        ("class.yaml", INGRESS_CLASS),
        ("app.yaml", &backend("app", &addresses)),
        ("ingress.yaml", &ingress("app", "app.test", "app")),
    ])
    .await;

    let outcomes = count_outcomes(&gangway, "app.test", 30).await;

    // Requests in sequence take the endpoints in turn, so each gets an equal share.
    let expected: BTreeMap<String, usize> = [("one", 10), ("two", 10), ("three", 10)]
        .into_iter()
        .map(|(name, count)| (name.to_owned(), count))
        .collect();
    assert_eq!(outcomes, expected);

    // The metrics count the requests, and one pooled connection per endpoint served them.
    let metrics = get(gangway.admin, "admin", "/metrics").await.text();
    let requests = [
        "gangway_http_requests_total{",
        "ingress=\"default/app\"",
        "service=\"default/app\"",
        "code=\"200\"",
    ];
    assert_eq!(metric_value(&metrics, &requests), Some(30.0), "{metrics}");
    let opened = [
        "gangway_upstream_connections_opened_total{",
        "service=\"default/app\"",
    ];
    assert_eq!(metric_value(&metrics, &opened), Some(3.0), "{metrics}");
    let reused = [
        "gangway_upstream_connections_reused_total{",
        "service=\"default/app\"",
    ];
    assert_eq!(metric_value(&metrics, &reused), Some(27.0), "{metrics}");
}

/// Returns the value of the sample whose line contains every one of `parts`.
fn metric_value(metrics: &str, parts: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .find(|line| parts.iter().all(|part| line.contains(part)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_conditions_select_endpoints() {
    let ready = echo("ready").await;
    let unset = echo("unset").await;
    let terminating = echo("terminating").await;
    let not_serving = echo("not-serving").await;
    let condition = |server: &crate::support::backends::TestServer,
                     ready: Option<bool>,
                     serving: Option<bool>,
                     terminating: Option<bool>| Endpoint {
        address: server.address,
        ready,
        serving,
        terminating,
    };
    // Each endpoint in its own slice, because each listens on its own port.
    let mixed = documents(&[
        service("mixed", &[HTTP]),
        endpoint_slice(
            "mixed-1",
            "mixed",
            "http",
            &[condition(&ready, Some(true), None, None)],
        ),
        endpoint_slice(
            "mixed-2",
            "mixed",
            "http",
            &[condition(&unset, None, None, None)],
        ),
        endpoint_slice(
            "mixed-3",
            "mixed",
            "http",
            &[condition(&terminating, Some(false), Some(true), Some(true))],
        ),
        endpoint_slice(
            "mixed-4",
            "mixed",
            "http",
            &[condition(&not_serving, Some(false), Some(false), None)],
        ),
    ]);
    let draining = documents(&[
        service("draining", &[HTTP]),
        endpoint_slice(
            "draining-1",
            "draining",
            "http",
            &[condition(&terminating, Some(false), Some(true), Some(true))],
        ),
        endpoint_slice(
            "draining-2",
            "draining",
            "http",
            &[condition(
                &not_serving,
                Some(false),
                Some(false),
                Some(true),
            )],
        ),
    ]);
    let gangway = Gangway::start(&[
        ("class.yaml", INGRESS_CLASS),
        ("mixed.yaml", &mixed),
        ("draining.yaml", &draining),
        (
            "ingresses.yaml",
            &documents(&[
                ingress("mixed", "mixed.test", "mixed"),
                ingress("draining", "draining.test", "draining"),
            ]),
        ),
    ])
    .await;

    // Ready endpoints, `ready` unset included, take every request while there are any.
    let outcomes = count_outcomes(&gangway, "mixed.test", 20).await;
    let expected: BTreeMap<String, usize> = [("ready", 10), ("unset", 10)]
        .into_iter()
        .map(|(name, count)| (name.to_owned(), count))
        .collect();
    assert_eq!(outcomes, expected);

    // Without a ready endpoint, one that is serving while terminating takes the requests.
    let outcomes = count_outcomes(&gangway, "draining.test", 4).await;
    assert_eq!(
        outcomes.into_iter().collect::<Vec<_>>(),
        [("terminating".to_owned(), 4)]
    );

    let routes = gangway.routes().await;
    let draining_backend = routes["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|backend| backend["id"] == "default/draining:http")
        .expect("no backend default/draining:http");
    assert_eq!(
        draining_backend["endpoints"],
        serde_json::json!([format!("{} (terminating)", terminating.address)])
    );
    let warning = problem(&routes, "Ingress", "draining", "NoReadyEndpoints");
    assert_eq!(warning["severity"], "warning");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_backends_answer_503() {
    let (_servers, services) = echo_services(&["app"]).await;
    let not_ready = echo("not-ready").await;
    let unavailable = documents(&[
        service("not-ready", &[HTTP]),
        endpoint_slice(
            "not-ready-1",
            "not-ready",
            "http",
            &[Endpoint {
                address: not_ready.address,
                ready: Some(false),
                serving: Some(false),
                terminating: None,
            }],
        ),
        // A Service whose EndpointSlice lists no endpoint.
        service("scaled-down", &[HTTP]),
        endpoint_slice("scaled-down-1", "scaled-down", "http", &[]),
        // A Service without any EndpointSlice.
        service("no-slices", &[HTTP]),
    ]);
    let app = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: app}
spec:
  ingressClassName: gangway
  rules:
  - host: app.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: app, port: {name: http}}}}
      - {path: /not-ready, pathType: Prefix, backend: {service: {name: not-ready, port: {name: http}}}}
      - {path: /scaled-down, pathType: Prefix, backend: {service: {name: scaled-down, port: {name: http}}}}
      - {path: /no-slices, pathType: Prefix, backend: {service: {name: no-slices, port: {name: http}}}}
      - {path: /missing, pathType: Prefix, backend: {service: {name: missing, port: {name: http}}}}
";
    let gangway = Gangway::start(&[
        ("class.yaml", INGRESS_CLASS),
        ("services.yaml", &services),
        ("unavailable.yaml", &unavailable),
        ("app.yaml", app),
    ])
    .await;

    // (path, expected outcome): a path whose backend cannot serve responds with 503 and never falls
    // through to `/`, which would serve.
    let cases = [
        ("/", "app"),
        ("/not-ready", "503 no-endpoint"),
        ("/scaled-down/x", "503 no-endpoint"),
        ("/no-slices", "503 no-endpoint"),
        ("/missing/page", "503 unresolved-backend"),
    ];
    for (path, expected) in cases {
        assert_eq!(
            get(gangway.http, "app.test", path).await.outcome(),
            expected,
            "{path}"
        );
    }

    let routes = gangway.routes().await;
    let missing = problem(&routes, "Ingress", "app", "ServiceNotFound");
    assert_eq!(
        missing["field"],
        "spec.rules[0].http.paths[4].backend.service.name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_answers_502() {
    let gangway = Gangway::start(&[
        ("class.yaml", INGRESS_CLASS),
        ("app.yaml", &backend("app", &[closed_address()])),
        ("ingress.yaml", &ingress("app", "app.test", "app")),
    ])
    .await;

    let reply = get(gangway.http, "app.test", "/").await;

    assert_eq!(reply.status, 502);
    assert_eq!(reply.header("x-gangway-error"), Some("connect-refused"));
    let logged = gangway
        .wait_for_log_record(|record| {
            record["message"] == "request failed"
                && record["kind"] == "connect-refused"
                && record["route"] == "ingress/default/app/rule/0/path/0"
        })
        .await;
    assert!(logged, "no failure line naming the route and kind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_answers_504() {
    // The backend sends its response head only after 30 s, far beyond the proxy's timeout.
    let slow = serve(|_request| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        Response::new(full("too late"))
    })
    .await;
    let gangway = Gangway::start_with(
        &[
            ("class.yaml", INGRESS_CLASS),
            ("app.yaml", &backend("app", &[slow.address])),
            ("ingress.yaml", &ingress("app", "app.test", "app")),
        ],
        &["--upstream-response-timeout", "300ms"],
    )
    .await;

    let reply = get(gangway.http, "app.test", "/").await;

    assert_eq!(reply.status, 504);
    assert_eq!(reply.header("x-gangway-error"), Some("response-timeout"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_connect_retried_on_another_endpoint() {
    let live = echo("live").await;
    let gangway = Gangway::start(&[
        ("class.yaml", INGRESS_CLASS),
        (
            "app.yaml",
            &backend("app", &[closed_address(), live.address]),
        ),
        ("ingress.yaml", &ingress("app", "app.test", "app")),
    ])
    .await;

    // Round-robin sends every other request to the dead endpoint first; each must be retried
    // on the live one instead of failing.
    let outcomes = count_outcomes(&gangway, "app.test", 20).await;

    assert_eq!(
        outcomes.into_iter().collect::<Vec<_>>(),
        [("live".to_owned(), 20)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstream_by_app_protocol() {
    let ca = TestCa::new();
    let leaf = ca.issue(&["upstream.internal"]);
    let upstream = serve_tls(
        |request| async move {
            let body = format!(
                "{{\"backend\": \"tls\", \"version\": \"{:?}\", \"proto\": \"{}\"}}",
                request.version(),
                request
                    .headers()
                    .get("x-forwarded-proto")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or_default()
            );
            Response::new(full(body))
        },
        leaf.server_config(&[ALPN_H2, ALPN_HTTP1]),
    )
    .await;
    let https_port = ServicePort {
        name: "https",
        port: 443,
        app_protocol: Some("https"),
    };
    let upstream_yaml = documents(&[
        service("secure", &[https_port]),
        endpoint_slice(
            "secure-1",
            "secure",
            "https",
            &[Endpoint::ready(upstream.address)],
        ),
    ]);
    let app = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: secure}
spec:
  ingressClassName: gangway
  rules:
  - host: secure.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: secure, port: {name: https}}}}
";
    let gangway = Gangway::start(&[
        ("class.yaml", INGRESS_CLASS),
        ("secure.yaml", &upstream_yaml),
        ("app.yaml", app),
    ])
    .await;

    let reply = get(gangway.http, "secure.test", "/").await;

    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["backend"], "tls");
    // The upstream offered h2 by ALPN, so the proxy spoke HTTP/2 to it.
    assert_eq!(body["version"], "HTTP/2.0");
    assert_eq!(body["proto"], "http");
}

/// Starts a raw HTTP/1.1 upstream that responds to the first request on each connection and
/// closes the connection, without a response, when a second request arrives on it. A server
/// does the same when its keep-alive timeout fires just as the proxy reuses the connection.
async fn start_closing_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                // The first request head gets a response.
                while !buffer.windows(4).any(|window| window == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                    }
                }
                let response = "HTTP/1.1 200 OK\r\ncontent-length: 17\r\n\r\n{\"backend\": \"ok\"}";
                if stream.write_all(response.as_bytes()).await.is_err() {
                    return;
                }
                // The next request is read and dropped with the connection.
                let _ = stream.read(&mut chunk).await;
            });
        }
    });
    (address, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_connection_closed_by_upstream_is_retried() {
    let (address, upstream) = start_closing_upstream().await;
    let gangway = Gangway::start(&[
        ("class.yaml", INGRESS_CLASS),
        ("app.yaml", &backend("app", &[address])),
        ("ingress.yaml", &ingress("app", "app.test", "app")),
    ])
    .await;

    // Every second GET goes out on a pooled connection that the upstream then closes. A GET
    // is idempotent, so the proxy must send it again on a new connection instead of
    // responding with 502. nginx does the same: `ngx_http_upstream_next` does not count a
    // failure on a cached keep-alive connection as a try.
    let outcomes = count_outcomes(&gangway, "app.test", 10).await;

    assert_eq!(
        outcomes.into_iter().collect::<Vec<_>>(),
        [("ok".to_owned(), 10)]
    );
    upstream.abort();
}

/// Returns an address whose accept queue is full, so the kernel drops new SYNs and a connect
/// hangs until the client gives up. The returned sockets keep the queue full.
fn unresponsive_address() -> (SocketAddr, socket2::Socket, Vec<std::net::TcpStream>) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    listener.listen(0).unwrap();
    let address = listener.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)) {
            Ok(stream) => fillers.push(stream),
            Err(_) => return (address, listener, fillers),
        }
    }
    panic!("the accept queue of {address} never filled up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_answers_504_or_retries() {
    let (unresponsive, _listener, _fillers) = unresponsive_address();
    let live = echo("live").await;
    let gangway = Gangway::start_with(
        &[
            ("class.yaml", INGRESS_CLASS),
            ("stuck.yaml", &backend("stuck", &[unresponsive])),
            (
                "mixed.yaml",
                &backend("mixed", &[unresponsive, live.address]),
            ),
            (
                "ingresses.yaml",
                &documents(&[
                    ingress("stuck", "stuck.test", "stuck"),
                    ingress("mixed", "mixed.test", "mixed"),
                ]),
            ),
        ],
        &["--upstream-connect-timeout", "300ms"],
    )
    .await;

    let reply = get(gangway.http, "stuck.test", "/").await;
    assert_eq!(reply.status, 504);
    assert_eq!(reply.header("x-gangway-error"), Some("connect-timeout"));

    // A timed-out connect is retried on the other endpoint like a refused one.
    let outcomes = count_outcomes(&gangway, "mixed.test", 4).await;
    assert_eq!(
        outcomes.into_iter().collect::<Vec<_>>(),
        [("live".to_owned(), 4)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_listener_and_endpoints() {
    let loopback = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let upstream = serve_on(loopback, |request| async move {
        let forwarded_for = request
            .headers()
            .get("x-forwarded-for")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = serde_json::json!({"backend": "v6", "forwarded_for": forwarded_for});
        Response::new(full(body.to_string()))
    })
    .await;
    let gangway = Gangway::start_with(
        &[
            ("class.yaml", INGRESS_CLASS),
            ("app.yaml", &backend("app", &[upstream.address])),
            ("ingress.yaml", &ingress("app", "app.test", "app")),
        ],
        &["--http-listen", "[::1]:0"],
    )
    .await;
    assert!(gangway.http.is_ipv6(), "{}", gangway.http);

    let reply = get(gangway.http, "app.test", "/").await;

    assert_eq!(reply.outcome(), "v6");
    assert_eq!(reply.json()["forwarded_for"], "::1");
    let routes = gangway.routes().await;
    assert_eq!(
        routes["backends"][0]["endpoints"],
        serde_json::json!([upstream.address.to_string()])
    );
}
