//! A sorted, serializable view of a snapshot: the routing table that `gangway check` prints,
//! `/debug/routes` returns and the compiler's golden files contain.

use serde::Serialize;

use super::{Backend, Route, RouteAction, Snapshot, UpstreamProtocol, VirtualHost};

/// The routing table of one snapshot.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RouteTable {
    /// Snapshot generation; 0 for a snapshot that was never published.
    pub generation: u64,
    /// Virtual hosts sorted by name; the catch-all (`*`) comes last.
    pub virtual_hosts: Vec<VirtualHostRow>,
    /// Backends sorted by id.
    pub backends: Vec<BackendRow>,
    /// TLS certificates sorted by host.
    pub certificates: Vec<CertificateRow>,
    /// Secret (`namespace/name`) of the certificate served for unknown SNI names, or `None`
    /// when the generated self-signed certificate is served.
    pub fallback_certificate: Option<String>,
}

/// One virtual host and its routes.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualHostRow {
    /// Host name, `*.suffix`, or `*` for the catch-all.
    pub host: String,
    /// Routes sorted by path, then Exact before Prefix.
    pub routes: Vec<RouteRow>,
    /// The route for requests that match no path.
    pub default_route: Option<RouteRow>,
}

/// One route.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RouteRow {
    /// Stable route id.
    pub id: String,
    /// `Exact` or `Prefix`; `None` for a default route.
    pub path_type: Option<String>,
    /// Path as written; `None` for a default route.
    pub path: Option<String>,
    /// `<namespace>/<name>` of the Ingress.
    pub ingress: String,
    /// Backend id, when the route forwards.
    pub backend: Option<String>,
    /// Fixed status code, when the route answers without an upstream.
    pub status: Option<u16>,
    /// Plain HTTP is redirected to HTTPS.
    pub https_redirect: bool,
}

/// One backend and its endpoints.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BackendRow {
    /// `<namespace>/<service>:<port>`.
    pub id: String,
    /// Upstream protocol.
    pub protocol: UpstreamProtocol,
    /// Endpoint addresses, with ` (terminating)` after those used only as a fallback.
    pub endpoints: Vec<String>,
}

/// The Secret that serves one TLS host.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRow {
    /// Host name or `*.suffix`.
    pub host: String,
    /// `<namespace>/<name>` of the Secret.
    pub secret: String,
}

impl RouteRow {
    fn new(route: &Route) -> Self {
        let (backend, status) = match &route.action {
            RouteAction::Forward(backend) => (Some(backend.id.to_string()), None),
            RouteAction::Respond { status, .. } => (None, Some(*status)),
        };
        Self {
            id: route.id.to_string(),
            path_type: route.path_match.as_ref().map(|m| m.type_name().to_owned()),
            path: route.path_match.as_ref().map(|m| m.path().to_owned()),
            ingress: route.ingress.to_string(),
            backend,
            status,
            https_redirect: route.https_redirect,
        }
    }
}

impl VirtualHostRow {
    fn new(virtual_host: &VirtualHost) -> Self {
        let mut routes: Vec<RouteRow> = virtual_host
            .paths
            .routes()
            .into_iter()
            .map(|route| RouteRow::new(route))
            .collect();
        // Path first so a reader finds a path quickly; Exact before Prefix, as lookup prefers it.
        routes.sort_by(|a, b| (&a.path, &a.path_type).cmp(&(&b.path, &b.path_type)));
        Self {
            host: virtual_host.hostname.clone(),
            routes,
            default_route: virtual_host.default_route.as_deref().map(RouteRow::new),
        }
    }
}

impl BackendRow {
    fn new(backend: &Backend) -> Self {
        Self {
            id: backend.id.to_string(),
            protocol: backend.protocol,
            endpoints: backend
                .endpoints
                .iter()
                .map(|endpoint| {
                    if endpoint.terminating {
                        format!("{} (terminating)", endpoint.address)
                    } else {
                        endpoint.address.to_string()
                    }
                })
                .collect(),
        }
    }
}

impl Snapshot {
    /// Builds the sorted routing table of this snapshot.
    pub fn route_table(&self) -> RouteTable {
        let mut virtual_hosts: Vec<VirtualHostRow> = self
            .hosts
            .iter()
            .map(|(_, virtual_host)| VirtualHostRow::new(virtual_host))
            .collect();
        virtual_hosts.sort_by(|a, b| a.host.cmp(&b.host));
        virtual_hosts.extend(self.catch_all.as_deref().map(VirtualHostRow::new));

        let mut backends: Vec<BackendRow> =
            self.backends.iter().map(|b| BackendRow::new(b)).collect();
        backends.sort_by(|a, b| a.id.cmp(&b.id));

        let mut certificates: Vec<CertificateRow> = self
            .certificates
            .hosts
            .iter()
            .map(|(host, certificate)| CertificateRow {
                host: host.into_owned(),
                secret: certificate.secret.to_string(),
            })
            .collect();
        certificates.sort_by(|a, b| a.host.cmp(&b.host));

        RouteTable {
            generation: self.generation,
            virtual_hosts,
            backends,
            certificates,
            fallback_certificate: self
                .certificates
                .fallback
                .as_ref()
                .map(|certificate| certificate.secret.to_string()),
        }
    }
}
