//! Prometheus metrics, served by the admin listener at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a proxied request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `<namespace>/<name>` of the Ingress whose route served the request, or empty.
    pub ingress: String,
    /// `<namespace>/<name>` of the Service, or empty when no backend was chosen.
    pub service: String,
    /// HTTP status code sent downstream, or 499 for a request whose client closed the
    /// connection before the response.
    pub code: u16,
}

/// Labels of an upstream connection event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// `<namespace>/<name>` of the Service.
    pub service: String,
}

/// Every metric Gangway exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by Ingress, Service and status code.
    pub requests: Family<RequestLabels, Counter>,
    /// Request duration in seconds, from the request head to the end of the response head.
    pub request_duration: Histogram,
    /// Upstream connections opened.
    pub upstream_connections_opened: Family<UpstreamLabels, Counter>,
    /// Upstream requests sent on a pooled connection instead of a new one.
    pub upstream_connections_reused: Family<UpstreamLabels, Counter>,
    /// Idle plain HTTP/1.1 connections held without their HTTP state, waiting for input.
    pub downstream_connections_parked: Gauge,
    /// Idle plain HTTP/1.1 upstream connections held without their HTTP state.
    pub upstream_connections_parked: Gauge,
    /// Generation of the live snapshot.
    pub snapshot_generation: Gauge,
    /// Duration of each compile, in seconds.
    pub compile_duration: Histogram,
    /// Problems reported by the last compile, errors and warnings together.
    pub configuration_problems: Gauge,
    /// Errors reported by the last compile.
    pub configuration_errors: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates the metrics and registers them under the `gangway_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gangway");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by Ingress, Service and status code",
            requests.clone(),
        );
        // 0.5 ms to about 33 s.
        let request_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 17));
        registry.register(
            "http_request_duration_seconds",
            "Time from the request head to the response head",
            request_duration.clone(),
        );
        let upstream_connections_opened = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_connections_opened",
            "Upstream connections opened",
            upstream_connections_opened.clone(),
        );
        let upstream_connections_reused = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_connections_reused",
            "Upstream requests sent on a pooled connection",
            upstream_connections_reused.clone(),
        );
        let downstream_connections_parked = Gauge::default();
        registry.register(
            "downstream_connections_parked",
            "Idle plain HTTP/1.1 connections held without their HTTP state",
            downstream_connections_parked.clone(),
        );
        let upstream_connections_parked = Gauge::default();
        registry.register(
            "upstream_connections_parked",
            "Idle plain HTTP/1.1 upstream connections held without their HTTP state",
            upstream_connections_parked.clone(),
        );
        let snapshot_generation = Gauge::default();
        registry.register(
            "snapshot_generation",
            "Generation of the live routing snapshot",
            snapshot_generation.clone(),
        );
        // 0.1 ms to about 3.3 s.
        let compile_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "compile_duration_seconds",
            "Time to compile the routing snapshot",
            compile_duration.clone(),
        );
        let configuration_problems = Gauge::default();
        registry.register(
            "configuration_problems",
            "Problems reported by the last compile",
            configuration_problems.clone(),
        );
        let configuration_errors = Gauge::default();
        registry.register(
            "configuration_errors",
            "Errors reported by the last compile",
            configuration_errors.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            upstream_connections_opened,
            upstream_connections_reused,
            downstream_connections_parked,
            upstream_connections_parked,
            snapshot_generation,
            compile_duration,
            configuration_problems,
            configuration_errors,
        }
    }

    /// Encodes every metric in the OpenMetrics text format, which Prometheus scrapes.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
