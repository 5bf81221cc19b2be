//! The immutable routing snapshot that the compiler builds and the proxy reads, one `Arc` per
//! request. Routes, backends and TLS certificates of one generation live together, so a request
//! never uses half of one configuration and half of the next.

mod host;
mod path;
mod table;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::sign::CertifiedKey;
use serde::Serialize;

use crate::store::ObjectKey;

pub use host::{HostTable, normalize_host};
pub use path::{PathMatch, PathTable};
pub use table::{BackendRow, CertificateRow, RouteRow, RouteTable, VirtualHostRow};

/// One generation of the routing configuration.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Increases by one with each snapshot the process publishes; 0 before the first publish.
    pub generation: u64,
    /// Virtual hosts by host name, exact and wildcard.
    pub hosts: HostTable<Arc<VirtualHost>>,
    /// The virtual host for requests whose host matches no entry of `hosts`: rules without
    /// `host` and `spec.defaultBackend`.
    pub catch_all: Option<Arc<VirtualHost>>,
    /// Server certificates selected by SNI.
    pub certificates: CertificateTable,
    /// Every backend that a route forwards to, sorted by id.
    pub backends: Vec<Arc<Backend>>,
}

/// The result of looking up a request in a snapshot.
#[derive(Debug)]
pub enum RouteLookup<'a> {
    /// A route matched.
    Matched {
        /// The virtual host that the request's host selected.
        virtual_host: &'a Arc<VirtualHost>,
        /// The route that serves the request.
        route: &'a Arc<Route>,
    },
    /// No route matched: the proxy responds with the global default, 404.
    NotFound,
}

impl Snapshot {
    /// Looks up the route for a request's host (a `Host` header or `:authority`, port allowed)
    /// and path (without query).
    ///
    /// The host selects one virtual host: exact name, then wildcard, then the catch-all. Within
    /// it the path table decides, then that host's default route. A request does not fall
    /// through from a matched host to the catch-all's paths, as in ingress-nginx and Contour.
    pub fn lookup_route<'a>(&'a self, host: Option<&str>, path: &str) -> RouteLookup<'a> {
        let virtual_host = host
            .and_then(|host| self.hosts.lookup(host))
            .or(self.catch_all.as_ref());
        let Some(virtual_host) = virtual_host else {
            return RouteLookup::NotFound;
        };
        match virtual_host
            .paths
            .lookup(path)
            .or(virtual_host.default_route.as_ref())
        {
            Some(route) => RouteLookup::Matched {
                virtual_host,
                route,
            },
            None => RouteLookup::NotFound,
        }
    }
}

/// The routes for one host name, merged from every Ingress that names the host.
#[derive(Debug, Default)]
pub struct VirtualHost {
    /// `foo.example.com`, `*.example.com`, or `*` for the catch-all.
    pub hostname: String,
    /// Routes by path.
    pub paths: PathTable,
    /// Route for requests that match no path: the `spec.defaultBackend` of an Ingress that has
    /// rules for this host (the oldest such Ingress wins).
    pub default_route: Option<Arc<Route>>,
}

/// A route: one `rules[].http.paths[]` entry, or an Ingress's `spec.defaultBackend`.
#[derive(Debug)]
pub struct Route {
    /// Stable, path-like id such as `ingress/<ns>/<name>/rule/<i>/path/<j>` or
    /// `ingress/<ns>/<name>/default-backend`, used in logs, metrics and `/debug/routes`.
    pub id: Arc<str>,
    /// The Ingress the route comes from, for metrics and logs.
    pub ingress: ObjectKey,
    /// The path match as written, or `None` for a default backend.
    pub path_match: Option<PathMatch>,
    /// Action for a matching request.
    pub action: RouteAction,
    /// Plain-HTTP requests get a 308 redirect to HTTPS: the host is listed in a TLS section and
    /// the Ingress has not turned the redirect off.
    pub https_redirect: bool,
}

/// Action a route takes on a request.
#[derive(Clone, Debug)]
pub enum RouteAction {
    /// Proxy to the backend's endpoints; 503 when it has none.
    Forward(Arc<Backend>),
    /// Fixed response without an upstream, used when a backend cannot be resolved (missing
    /// Service, unknown port, unsupported backend kind). The path stays routed and responds
    /// with this status.
    Respond {
        /// HTTP status code, 503 for unresolved backends.
        status: u16,
        /// Short body for the client, which names no internal detail.
        body: Arc<str>,
    },
}

/// The protocol the proxy speaks to a backend's endpoints, from the Service port's
/// `appProtocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 over TCP (the default, and `kubernetes.io/ws`).
    Http1,
    /// HTTP/2 with prior knowledge over TCP (`kubernetes.io/h2c`).
    H2c,
    /// TLS to the endpoint (`https`, `kubernetes.io/wss`), HTTP/2 or HTTP/1.1 by ALPN.
    Tls,
}

/// A Service port resolved to endpoints.
#[derive(Debug)]
pub struct Backend {
    /// `<namespace>/<service>:<port>`, with the port as the Ingress names it.
    pub id: Arc<str>,
    /// The Service.
    pub service: ObjectKey,
    /// The Service port number.
    pub port: u16,
    /// The protocol spoken to the endpoints.
    pub protocol: UpstreamProtocol,
    /// Endpoints to balance over, sorted by address. Ready endpoints when there are any;
    /// otherwise endpoints that are serving while terminating. Empty means 503.
    pub endpoints: Vec<Endpoint>,
    /// Round-robin position, shared by every route to this backend within one generation.
    cursor: AtomicUsize,
}

impl Backend {
    /// Builds a backend whose round-robin position starts at the first endpoint.
    pub fn new(
        id: impl Into<Arc<str>>,
        service: ObjectKey,
        port: u16,
        protocol: UpstreamProtocol,
        endpoints: Vec<Endpoint>,
    ) -> Self {
        Self {
            id: id.into(),
            service,
            port,
            protocol,
            endpoints,
            cursor: AtomicUsize::new(0),
        }
    }

    /// Picks the next endpoint in round-robin order, or `None` when there is none.
    pub fn next_endpoint(&self) -> Option<&Endpoint> {
        if self.endpoints.is_empty() {
            return None;
        }
        let index = self.cursor.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        Some(&self.endpoints[index])
    }
}

/// One address that serves a backend.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Endpoint {
    /// IP address and target port.
    pub address: SocketAddr,
    /// True when the endpoint is terminating and used only because no endpoint is ready.
    pub terminating: bool,
}

/// A server certificate from a TLS Secret.
#[derive(Debug)]
pub struct TlsCertificate {
    /// The Secret the certificate came from.
    pub secret: ObjectKey,
    /// Chain and private key, ready for rustls.
    pub key: Arc<CertifiedKey>,
}

/// Server certificates by SNI name.
#[derive(Debug, Default)]
pub struct CertificateTable {
    /// Certificates by `spec.tls[].hosts` name, exact and wildcard.
    pub hosts: HostTable<Arc<TlsCertificate>>,
    /// Certificate of a `spec.tls` entry without hosts, served when SNI is missing or matches
    /// no host. When `None`, the proxy serves its generated self-signed certificate.
    pub fallback: Option<Arc<TlsCertificate>>,
}

impl CertificateTable {
    /// Looks up the certificate for an SNI name: exact, then wildcard, then the fallback.
    pub fn lookup(&self, server_name: Option<&str>) -> Option<&Arc<TlsCertificate>> {
        server_name
            .and_then(|name| self.hosts.lookup(name))
            .or(self.fallback.as_ref())
    }
}
