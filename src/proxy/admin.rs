//! The admin listener: liveness, readiness, Prometheus metrics and the live routing table.
//!
//! It serves HTTP/1.1 on its own listener, apart from the data plane, so probes and scrapes
//! never compete with proxied traffic for a route.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::live::Live;
use crate::snapshot::RouteTable;
use crate::status::Problem;

/// Content type of `/metrics`, the OpenMetrics text format that prometheus-client writes.
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Time a probe or scrape gets to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Time open admin requests get to finish after shutdown.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the admin endpoints on `listener`:
/// - `GET /healthz`: 200 while the process is alive.
/// - `GET /readyz`: 200 once `live.is_ready()`, else 503.
/// - `GET /metrics`: `live.metrics().encode()`, content type
///   `application/openmetrics-text; version=1.0.0; charset=utf-8`.
/// - `GET /debug/routes`: JSON of `live.snapshot().route_table()` with its generation, and
///   the problems of `live.report()` under `problems`.
///
/// Returns once `shutdown` is cancelled and open requests have finished (5 s at most), or
/// with the error of a failed `accept`.
pub async fn serve(
    listener: TcpListener,
    live: Arc<Live>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let result = loop {
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) if is_transient(&error) => {
                    tracing::warn!(error = %error, "admin listener failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(error) => break Err(error),
            },
        };
        let live = live.clone();
        let service = service_fn(move |request| {
            let live = live.clone();
            async move { Ok::<_, Infallible>(respond(&live, &request)) }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %error, "admin connection ended with an error");
            }
        });
    };
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("admin connections still open after the shutdown timeout");
    }
    result
}

/// Errors after which `accept` can succeed again, such as running out of file descriptors.
fn is_transient(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
    ) || error.raw_os_error().is_some_and(|code| {
        // EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux.
        matches!(code, 24 | 23 | 105 | 12)
    })
}

/// The body of `/debug/routes`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DebugRoutes<'a> {
    #[serde(flatten)]
    table: RouteTable,
    problems: &'a [Problem],
}

fn respond(live: &Live, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if live.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no configuration loaded yet\n",
        ),
        "/metrics" => with_type(
            StatusCode::OK,
            OPENMETRICS_CONTENT_TYPE,
            live.metrics().encode(),
        ),
        "/debug/routes" => {
            let report = live.report();
            let body = DebugRoutes {
                table: live.snapshot().route_table(),
                problems: &report.problems,
            };
            match serde_json::to_vec_pretty(&body) {
                Ok(json) => with_type(StatusCode::OK, "application/json", json),
                Err(error) => {
                    tracing::error!(error = %error, "failed to serialize the routing table");
                    text(StatusCode::INTERNAL_SERVER_ERROR, "failed to serialize\n")
                }
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    with_type(status, "text/plain; charset=utf-8", body)
}

fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
