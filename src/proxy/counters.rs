//! Per-worker handles to the request and upstream counters, so that counting a request
//! neither formats label strings nor hashes a label set.
//!
//! A `prometheus_client` [`Counter`] is a shared atomic: a clone taken from its family once
//! counts into the same series as the family. The cache keys the clones by the addresses of
//! the route and backend in the snapshot, which identify the label values within one
//! generation, and drops every entry when a newer generation arrives.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::{Metrics, RequestLabels, UpstreamLabels};
use crate::snapshot::{Backend, Route};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// The two upstream connection counters of one Service.
#[derive(Clone)]
pub(super) struct UpstreamCounters {
    /// Connections opened.
    pub(super) opened: Counter,
    /// Requests sent on a pooled connection.
    pub(super) reused: Counter,
}

/// A count of one in a gauge, held for as long as this value lives.
pub(super) struct GaugeCount(Gauge);

impl GaugeCount {
    /// Adds one to `gauge`; dropping the value takes it off again.
    pub(super) fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeCount {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A request counter's key: route and backend addresses (0 for none) and the status code.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct RequestKey {
    route: usize,
    backend: usize,
    code: u16,
}

/// Counter handles of one worker thread, valid for one snapshot generation.
pub(super) struct CounterCache {
    metrics: Arc<Metrics>,
    generation: Cell<u64>,
    requests: RefCell<FastMap<RequestKey, Counter>>,
    upstreams: RefCell<FastMap<usize, UpstreamCounters>>,
    /// Requests counted by this worker since it started.
    served: Cell<u64>,
}

impl CounterCache {
    /// Creates an empty cache over `metrics`.
    pub(super) fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            generation: Cell::new(0),
            requests: RefCell::default(),
            upstreams: RefCell::default(),
            served: Cell::new(0),
        }
    }

    /// Returns the number of requests counted by this worker since it started.
    pub(super) fn served(&self) -> u64 {
        self.served.get()
    }

    /// Counts one request served by `route` and `backend` of snapshot `generation`, and
    /// records its duration.
    pub(super) fn count_request(
        &self,
        generation: u64,
        route: Option<&Route>,
        backend: Option<&Backend>,
        status: StatusCode,
        elapsed: Duration,
    ) {
        self.served.set(self.served.get() + 1);
        self.metrics.request_duration.observe(elapsed.as_secs_f64());
        let key = RequestKey {
            route: route.map_or(0, |route| ptr::from_ref(route) as usize),
            backend: backend.map_or(0, |backend| ptr::from_ref(backend) as usize),
            code: status.as_u16(),
        };
        let labels = || RequestLabels {
            ingress: route
                .map(|route| route.ingress.to_string())
                .unwrap_or_default(),
            service: backend
                .map(|backend| backend.service.to_string())
                .unwrap_or_default(),
            code: key.code,
        };
        if !self.is_current(generation) {
            self.metrics.requests.get_or_create(&labels()).inc();
            return;
        }
        let mut requests = self.requests.borrow_mut();
        requests
            .entry(key)
            .or_insert_with(|| self.metrics.requests.get_or_create(&labels()).clone())
            .inc();
    }

    /// Returns the upstream counters of `backend`'s Service in snapshot `generation`.
    pub(super) fn upstream(&self, generation: u64, backend: &Backend) -> UpstreamCounters {
        let lookup = || {
            let labels = UpstreamLabels {
                service: backend.service.to_string(),
            };
            UpstreamCounters {
                opened: self
                    .metrics
                    .upstream_connections_opened
                    .get_or_create(&labels)
                    .clone(),
                reused: self
                    .metrics
                    .upstream_connections_reused
                    .get_or_create(&labels)
                    .clone(),
            }
        };
        if !self.is_current(generation) {
            return lookup();
        }
        self.upstreams
            .borrow_mut()
            .entry(ptr::from_ref(backend) as usize)
            .or_insert_with(lookup)
            .clone()
    }

    /// Moves the cache to `generation` when it is newer than the cached one, dropping every
    /// handle keyed by an older snapshot's addresses. Returns false for a request routed by an
    /// older snapshot: its addresses may have been reused, so it bypasses the cache.
    fn is_current(&self, generation: u64) -> bool {
        let cached = self.generation.get();
        if generation > cached {
            self.requests.borrow_mut().clear();
            self.upstreams.borrow_mut().clear();
            self.generation.set(generation);
        }
        generation >= cached
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{RouteAction, UpstreamProtocol};
    use crate::store::ObjectKey;

    fn route(name: &str, backend: &Arc<Backend>) -> Route {
        Route {
            id: Arc::from(format!("ingress/default/{name}")),
            ingress: ObjectKey::new("default", name),
            path_match: None,
            action: RouteAction::Forward(backend.clone()),
            https_redirect: false,
        }
    }

    fn backend(service: &str) -> Arc<Backend> {
        Arc::new(Backend::new(
            format!("default/{service}:80"),
            ObjectKey::new("default", service),
            80,
            UpstreamProtocol::Http1,
            Vec::new(),
        ))
    }

    fn requests(metrics: &Metrics, ingress: &str, service: &str, code: u16) -> u64 {
        metrics
            .requests
            .get_or_create(&RequestLabels {
                ingress: ingress.to_owned(),
                service: service.to_owned(),
                code,
            })
            .get()
    }

    #[test]
    fn cache_counts_into_labelled_series() {
        let metrics = Arc::new(Metrics::new());
        let cache = CounterCache::new(metrics.clone());
        let web = backend("web");
        let (a, b) = (route("a", &web), route("b", &web));
        for _ in 0..3 {
            cache.count_request(1, Some(&a), Some(&web), StatusCode::OK, Duration::ZERO);
        }
        cache.count_request(1, Some(&b), Some(&web), StatusCode::OK, Duration::ZERO);
        cache.count_request(
            1,
            Some(&a),
            Some(&web),
            StatusCode::BAD_GATEWAY,
            Duration::ZERO,
        );
        cache.count_request(1, None, None, StatusCode::NOT_FOUND, Duration::ZERO);

        assert_eq!(requests(&metrics, "default/a", "default/web", 200), 3);
        assert_eq!(requests(&metrics, "default/b", "default/web", 200), 1);
        assert_eq!(requests(&metrics, "default/a", "default/web", 502), 1);
        assert_eq!(requests(&metrics, "", "", 404), 1);
    }

    #[test]
    fn cache_resets_on_new_generation() {
        let metrics = Arc::new(Metrics::new());
        let cache = CounterCache::new(metrics.clone());
        let web = backend("web");
        let a = route("a", &web);
        cache.count_request(1, Some(&a), Some(&web), StatusCode::OK, Duration::ZERO);
        assert_eq!(cache.requests.borrow().len(), 1);

        // Generation 2: the same addresses may now mean other objects, so nothing is kept.
        let api = backend("api");
        let c = route("c", &api);
        cache.count_request(2, Some(&c), Some(&api), StatusCode::OK, Duration::ZERO);
        assert_eq!(cache.requests.borrow().len(), 1);
        // A request routed by generation 1 counts without touching the cache.
        cache.count_request(1, Some(&a), Some(&web), StatusCode::OK, Duration::ZERO);
        assert_eq!(cache.requests.borrow().len(), 1);

        assert_eq!(requests(&metrics, "default/a", "default/web", 200), 2);
        assert_eq!(requests(&metrics, "default/c", "default/api", 200), 1);
    }

    #[test]
    fn cache_counts_upstreams_by_service() {
        let metrics = Arc::new(Metrics::new());
        let cache = CounterCache::new(metrics.clone());
        let web = backend("web");
        cache.upstream(1, &web).opened.inc();
        cache.upstream(1, &web).reused.inc();
        cache.upstream(1, &web).reused.inc();
        let labels = UpstreamLabels {
            service: "default/web".to_owned(),
        };
        let opened = metrics
            .upstream_connections_opened
            .get_or_create(&labels)
            .get();
        let reused = metrics
            .upstream_connections_reused
            .get_or_create(&labels)
            .get();
        assert_eq!((opened, reused), (1, 2));
    }
}
