//! Request logging: the access log and the one line per failed request, rate-limited.

use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use http::header::HeaderValue;
use http::{Method, StatusCode};
use tokio::time::Instant;

use super::failure::{Failure, Side};
use super::handler::Exchange;

/// Failure lines a worker writes per second; the rest are counted and reported with the
/// next line that is written.
const FAILURE_LINES_PER_SECOND: u32 = 20;

/// The fields every log line about a request carries.
pub(super) struct RequestLog<'a> {
    /// The client's address and port, as the proxy's socket reports them.
    pub(super) client: SocketAddr,
    pub(super) method: &'a Method,
    pub(super) host: Option<&'a str>,
    /// The path without the query string, which can carry tokens.
    pub(super) path: &'a str,
    pub(super) request_id: &'a HeaderValue,
    pub(super) exchange: &'a Exchange<'a>,
}

impl RequestLog<'_> {
    fn route(&self) -> &str {
        self.exchange.route.map_or("", |route| &route.id)
    }

    fn upstream(&self) -> String {
        self.exchange
            .upstream
            .map(|address| address.to_string())
            .unwrap_or_default()
    }

    fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or_default()
    }

    /// Writes the access log event, target `gangway::access`.
    pub(super) fn write_access(&self, status: StatusCode, elapsed: Duration) {
        tracing::info!(
            target: "gangway::access",
            client = %self.client,
            method = %self.method,
            host = self.host.unwrap_or_default(),
            path = self.path,
            status = status.as_u16(),
            upstream = %self.upstream(),
            route = self.route(),
            // Whole microseconds, so the value prints without binary rounding noise.
            duration_ms = elapsed.as_micros() as f64 / 1000.0,
            request_id = self.request_id(),
        );
    }
}

/// Rate limit of one worker's failure lines.
pub(super) struct FailureLog {
    window_start: Cell<Instant>,
    written: Cell<u32>,
    suppressed: Cell<u64>,
}

impl FailureLog {
    pub(super) fn new() -> Self {
        Self {
            window_start: Cell::new(Instant::now()),
            written: Cell::new(0),
            suppressed: Cell::new(0),
        }
    }

    /// Counts a line against this second's budget. Returns the number of lines suppressed
    /// since the last line written, or `None` when this line is over budget.
    fn admit(&self) -> Option<u64> {
        let now = Instant::now();
        if now.duration_since(self.window_start.get()) >= Duration::from_secs(1) {
            self.window_start.set(now);
            self.written.set(0);
        }
        if self.written.get() >= FAILURE_LINES_PER_SECOND {
            self.suppressed.set(self.suppressed.get() + 1);
            return None;
        }
        self.written.set(self.written.get() + 1);
        Some(self.suppressed.replace(0))
    }

    /// Logs at warn a connect failure that the request survives by retrying on `retry`.
    pub(super) fn write_retry(&self, failure: &Failure, upstream: SocketAddr, retry: SocketAddr) {
        let Some(suppressed) = self.admit() else {
            return;
        };
        tracing::warn!(
            kind = failure.kind.code(),
            upstream = %upstream,
            retry = %retry,
            suppressed,
            error = %failure,
            "upstream connect failed, retrying on another endpoint"
        );
    }

    /// Logs a failed request once: at warn for upstream failures, which operators can act
    /// on, at debug for requests that match no route or that the client broke.
    pub(super) fn write(&self, failure: &Failure, log: &RequestLog<'_>) {
        let Some(suppressed) = self.admit() else {
            return;
        };

        let kind = failure.kind.code();
        let route = log.route();
        let upstream = log.upstream();
        let host = log.host.unwrap_or_default();
        let request_id = log.request_id();
        match failure.kind.side() {
            Side::Upstream => tracing::warn!(
                kind,
                client = %log.client,
                route,
                host,
                path = log.path,
                upstream,
                request_id,
                suppressed,
                error = %failure,
                "request failed"
            ),
            Side::Downstream => tracing::debug!(
                kind,
                client = %log.client,
                route,
                host,
                path = log.path,
                upstream,
                request_id,
                suppressed,
                error = %failure,
                "request failed"
            ),
        }
    }
}
