//! Backend resolution: an Ingress backend to a Service port, and the Service port to the
//! endpoints listed in its EndpointSlices.

use std::fmt;
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use k8s_openapi::api::core::v1::ServicePort;
use k8s_openapi::api::networking::v1::IngressBackend;

use super::endpoints::EndpointIndex;
use super::problems::Problems;
use super::validate::{
    NameError, PortNameError, port_number, validate_port_name, validate_service_name,
};
use crate::snapshot::{Backend, RouteAction, UpstreamProtocol};
use crate::status::Problem;
use crate::store::{ObjectKey, ObjectRef, Store};

/// Body of the 503 response of a route whose backend cannot be resolved. It names no internal
/// detail because any client can read it. The Problem carries the detail.
const UNAVAILABLE_BODY: &str = "backend unavailable\n";

/// Position of an `http.paths[]` entry in its Ingress.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PathPosition {
    /// Index into `spec.rules`.
    pub(crate) rule: usize,
    /// Index into `http.paths`.
    pub(crate) path: usize,
}

impl fmt::Display for PathPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spec.rules[{}].http.paths[{}]", self.rule, self.path)
    }
}

/// Position of a backend in its Ingress, for the field paths of problems.
#[derive(Clone, Copy, Debug)]
pub(crate) enum BackendField {
    /// `spec.rules[rule].http.paths[path].backend`.
    Path(PathPosition),
    /// `spec.defaultBackend`.
    Default,
}

impl fmt::Display for BackendField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendField::Path(position) => write!(f, "{position}.backend"),
            BackendField::Default => f.write_str("spec.defaultBackend"),
        }
    }
}

/// A Service port as an Ingress backend names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum PortRef<'a> {
    /// `port.number`.
    Number(u16),
    /// `port.name`.
    Name(&'a str),
}

impl fmt::Display for PortRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(number) => write!(f, "{number}"),
            PortRef::Name(name) => f.write_str(name),
        }
    }
}

/// Reason a backend cannot be routed to. Each variant becomes an Error problem, and the route
/// responds with 503.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BackendError {
    /// Both `service` and `resource` are set.
    #[error("backend sets both `service` and `resource`; set exactly one")]
    ServiceAndResource,
    /// Neither `service` nor `resource` is set.
    #[error("backend sets neither `service` nor `resource`; set `service`")]
    NoTarget,
    /// A `resource` backend.
    #[error(
        "backend `resource` (kind `{kind}`, name `{name}`) is not supported; Gangway supports \
         only Service backends, so use `service`"
    )]
    Resource {
        /// `resource.kind`.
        kind: String,
        /// `resource.name`.
        name: String,
    },
    /// `service.name` is empty.
    #[error("service name is missing; set `service.name`")]
    MissingServiceName,
    /// `service.name` is not a DNS-1035 label.
    #[error("service name `{name}` is invalid: it {reason}")]
    InvalidServiceName {
        /// The name as written.
        name: String,
        /// The rule the name breaks.
        reason: NameError,
    },
    /// Neither `port.name` nor `port.number` is set.
    #[error("service port is missing; set `service.port.number` or `service.port.name`")]
    MissingPort,
    /// Both `port.name` and `port.number` are set.
    #[error("service port sets both `name` ({name}) and `number` ({number}); set exactly one")]
    PortNameAndNumber {
        /// `port.name`.
        name: String,
        /// `port.number`.
        number: i32,
    },
    /// `port.name` is not an IANA service name.
    #[error("service port name `{name}` is invalid: it {reason}")]
    InvalidPortName {
        /// The name as written.
        name: String,
        /// The rule the name breaks.
        reason: PortNameError,
    },
    /// `port.number` is outside 1-65535.
    #[error("service port number {number} is invalid: it must be between 1 and 65535")]
    InvalidPortNumber {
        /// The number as written.
        number: i32,
    },
    /// The Service does not exist in the Ingress namespace.
    #[error(
        "Service `{service}` not found; create it in namespace `{namespace}`, or fix the name",
        service = service.name,
        namespace = service.namespace
    )]
    ServiceNotFound {
        /// Namespace and name of the missing Service.
        service: ObjectKey,
    },
    /// The Service exists, but has no port with that number or name.
    #[error(
        "Service `{name}` has no port `{port}`; use one of its ports: {available}",
        name = service.name
    )]
    PortNotFound {
        /// The Service.
        service: ObjectKey,
        /// The port as written.
        port: String,
        /// The ports the Service has, as `number (name)`.
        available: String,
    },
    /// An ExternalName Service.
    #[error(
        "Service `{name}` has type ExternalName, which Gangway does not support yet; \
         point the backend at a Service with a selector or EndpointSlices",
        name = service.name
    )]
    ExternalName {
        /// The Service.
        service: ObjectKey,
    },
}

impl BackendError {
    /// Returns the Event reason.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            BackendError::Resource { .. } => "UnsupportedBackend",
            BackendError::ServiceNotFound { .. } => "ServiceNotFound",
            BackendError::PortNotFound { .. } => "ServicePortNotFound",
            BackendError::ExternalName { .. } => "UnsupportedServiceType",
            _ => "InvalidBackend",
        }
    }

    /// Returns the offending field below the backend, such as `.service.port.name`.
    fn field_suffix(&self, port: Option<PortRef<'_>>) -> &'static str {
        match self {
            BackendError::ServiceAndResource | BackendError::NoTarget => "",
            BackendError::Resource { .. } => ".resource",
            BackendError::MissingServiceName
            | BackendError::InvalidServiceName { .. }
            | BackendError::ServiceNotFound { .. }
            | BackendError::ExternalName { .. } => ".service.name",
            BackendError::MissingPort | BackendError::PortNameAndNumber { .. } => ".service.port",
            BackendError::InvalidPortName { .. } => ".service.port.name",
            BackendError::InvalidPortNumber { .. } => ".service.port.number",
            BackendError::PortNotFound { .. } => match port {
                Some(PortRef::Name(_)) => ".service.port.name",
                _ => ".service.port.number",
            },
        }
    }
}

/// A backend that passed the API server's checks.
#[derive(Clone, Copy, Debug)]
struct ServiceRef<'a> {
    name: &'a str,
    port: PortRef<'a>,
}

/// Checks the shape of a backend as the API server does.
fn validate_backend(backend: &IngressBackend) -> Result<ServiceRef<'_>, BackendError> {
    let service = match (&backend.service, &backend.resource) {
        (Some(_), Some(_)) => return Err(BackendError::ServiceAndResource),
        (None, None) => return Err(BackendError::NoTarget),
        (None, Some(resource)) => {
            return Err(BackendError::Resource {
                kind: resource.kind.clone(),
                name: resource.name.clone(),
            });
        }
        (Some(service), None) => service,
    };
    if service.name.is_empty() {
        return Err(BackendError::MissingServiceName);
    }
    validate_service_name(&service.name).map_err(|reason| BackendError::InvalidServiceName {
        name: service.name.clone(),
        reason,
    })?;
    let port = service.port.as_ref();
    let name = port
        .and_then(|p| p.name.as_deref())
        .filter(|name| !name.is_empty());
    // The API server treats number 0 as unset, because 0 is the int32 zero value.
    let number = port.and_then(|p| p.number).filter(|number| *number != 0);
    let port = match (name, number) {
        (Some(name), Some(number)) => {
            return Err(BackendError::PortNameAndNumber {
                name: name.to_owned(),
                number,
            });
        }
        (None, None) => return Err(BackendError::MissingPort),
        (Some(name), None) => {
            validate_port_name(name).map_err(|reason| BackendError::InvalidPortName {
                name: name.to_owned(),
                reason,
            })?;
            PortRef::Name(name)
        }
        (None, Some(number)) => match port_number(number) {
            Some(number) => PortRef::Number(number),
            None => return Err(BackendError::InvalidPortNumber { number }),
        },
    };
    Ok(ServiceRef {
        name: &service.name,
        port,
    })
}

/// Maps a Service port's `appProtocol` to the protocol spoken upstream. Returns `None` for a
/// value Gangway does not know, which falls back to HTTP/1.1.
pub(crate) fn upstream_protocol(app_protocol: Option<&str>) -> Option<UpstreamProtocol> {
    match app_protocol {
        None | Some("http") | Some("kubernetes.io/ws") => Some(UpstreamProtocol::Http1),
        Some("kubernetes.io/h2c") => Some(UpstreamProtocol::H2c),
        Some("https") | Some("kubernetes.io/wss") => Some(UpstreamProtocol::Tls),
        Some(_) => None,
    }
}

/// Resolves backends, each (Service, port as written) once per compile.
pub(crate) struct Backends<'a> {
    store: &'a Store,
    /// EndpointSlices by Service.
    endpoints: EndpointIndex<'a>,
    /// Results by (namespace, Service name, port as written), so routes that name the same
    /// backend share one `Arc<Backend>`. The key borrows from the store, so a lookup
    /// allocates nothing.
    resolved: HashMap<(&'a str, &'a str, PortRef<'a>), Result<Arc<Backend>, BackendError>>,
    /// (Ingress, backend id) pairs already warned about missing ready endpoints.
    warned: HashSet<(ObjectKey, Arc<str>)>,
    unavailable_body: Arc<str>,
}

impl<'a> Backends<'a> {
    /// Indexes the EndpointSlices of `store` by the Service they belong to.
    pub(crate) fn new(store: &'a Store) -> Self {
        Self {
            store,
            endpoints: EndpointIndex::new(store),
            resolved: HashMap::with_capacity(store.services.len()),
            warned: HashSet::new(),
            unavailable_body: Arc::from(UNAVAILABLE_BODY),
        }
    }

    /// Compiles the backend of a route into its action.
    ///
    /// Every failure leaves the route in place with a 503 response and adds an Error problem,
    /// so a request never falls through to another route. A Service without ready endpoints
    /// still forwards (the proxy responds with 503 until endpoints appear) and adds a Warning.
    pub(crate) fn compile_action(
        &mut self,
        ingress: &'a ObjectKey,
        backend: &'a IngressBackend,
        field: BackendField,
        problems: &mut Problems,
    ) -> RouteAction {
        let service_ref = match validate_backend(backend) {
            Ok(service_ref) => service_ref,
            Err(error) => return self.unavailable(ingress, field, None, &error, problems),
        };
        let cache_key = (
            ingress.namespace.as_str(),
            service_ref.name,
            service_ref.port,
        );
        if !self.resolved.contains_key(&cache_key) {
            let result = self.resolve(&ingress.namespace, service_ref, problems);
            self.resolved.insert(cache_key, result);
        }
        match &self.resolved[&cache_key] {
            Ok(backend) => {
                let backend = backend.clone();
                self.warn_without_ready_endpoints(ingress, field, &backend, problems);
                RouteAction::Forward(backend)
            }
            Err(error) => {
                let error = error.clone();
                self.unavailable(ingress, field, Some(service_ref.port), &error, problems)
            }
        }
    }

    /// Adds a Warning when a backend has no ready endpoint, once per Ingress and backend:
    /// one per path would repeat the same message for every path to the Service.
    fn warn_without_ready_endpoints(
        &mut self,
        ingress: &ObjectKey,
        field: BackendField,
        backend: &Backend,
        problems: &mut Problems,
    ) {
        let service = &backend.service.name;
        let message = if backend.endpoints.is_empty() {
            format!(
                "Service `{service}` has no ready endpoints, so the route responds with 503 until \
                 a Pod behind it is ready; check the Service selector and the Pods' readiness"
            )
        } else if backend.endpoints.iter().all(|e| e.terminating) {
            format!(
                "Service `{service}` has no ready endpoints, so the route uses {} terminating \
                 endpoints until a Pod behind it is ready",
                backend.endpoints.len()
            )
        } else {
            return;
        };
        if !self.warned.insert((ingress.clone(), backend.id.clone())) {
            return;
        }
        problems.ingress_warning(
            ingress,
            format!("{field}.service.name"),
            "NoReadyEndpoints",
            message,
        );
    }

    fn unavailable(
        &self,
        ingress: &ObjectKey,
        field: BackendField,
        port: Option<PortRef<'_>>,
        error: &BackendError,
        problems: &mut Problems,
    ) -> RouteAction {
        problems.ingress_error(
            ingress,
            format!("{field}{}", error.field_suffix(port)),
            error.reason(),
            format!("{error}; until then the route responds with 503"),
        );
        RouteAction::Respond {
            status: 503,
            body: self.unavailable_body.clone(),
        }
    }

    /// Resolves a backend to its Service port and endpoints, adding problems about the
    /// Service and its EndpointSlices.
    fn resolve(
        &self,
        namespace: &str,
        service_ref: ServiceRef<'_>,
        problems: &mut Problems,
    ) -> Result<Arc<Backend>, BackendError> {
        let service_key = ObjectKey::new(namespace, service_ref.name);
        let Some(service) = self.store.services.get(&service_key) else {
            return Err(BackendError::ServiceNotFound {
                service: service_key,
            });
        };

        let spec = service.spec.as_ref();
        if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
            // TODO: resolve ExternalName Services to their DNS name once the proxy can
            // connect to a host name instead of an endpoint address.
            return Err(BackendError::ExternalName {
                service: service_key,
            });
        }

        let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
        // A Service port outside 1-65535 cannot be valid, so it matches no backend.
        let found = ports.iter().enumerate().find_map(|(index, port)| {
            let number = port_number(port.port)?;
            let matches = match service_ref.port {
                PortRef::Number(wanted) => number == wanted,
                PortRef::Name(name) => port.name.as_deref() == Some(name),
            };
            matches.then_some((index, port, number))
        });
        let Some((port_index, service_port, port)) = found else {
            return Err(BackendError::PortNotFound {
                service: service_key,
                port: service_ref.port.to_string(),
                available: describe_ports(ports),
            });
        };

        let protocol = protocol(&service_key, port_index, service_port, problems);
        let endpoints = self
            .endpoints
            .endpoints(&service_key, service_port, problems);
        let id = format!("{namespace}/{}:{}", service_ref.name, service_ref.port);
        Ok(Arc::new(Backend::new(
            id,
            service_key,
            port,
            protocol,
            endpoints,
        )))
    }
}

/// Returns the upstream protocol of a Service port, adding a Warning for an unknown
/// `appProtocol`.
fn protocol(
    service: &ObjectKey,
    port_index: usize,
    service_port: &ServicePort,
    problems: &mut Problems,
) -> UpstreamProtocol {
    let app_protocol = service_port.app_protocol.as_deref();
    if let Some(protocol) = upstream_protocol(app_protocol) {
        return protocol;
    }
    problems.push(Problem::warning(
        ObjectRef::new("Service", service.clone()),
        format!("spec.ports[{port_index}].appProtocol"),
        "UnsupportedAppProtocol",
        format!(
            "appProtocol `{}` is not supported, so Gangway speaks HTTP/1.1 to the endpoints; \
             use `http`, `kubernetes.io/h2c` (HTTP/2 without TLS), `https` or \
             `kubernetes.io/wss` (TLS), or `kubernetes.io/ws`",
            app_protocol.unwrap_or_default()
        ),
    ));
    UpstreamProtocol::Http1
}

/// Lists a Service's ports as `80 (http), 443 (https)` for error messages.
fn describe_ports(ports: &[ServicePort]) -> String {
    if ports.is_empty() {
        return "none".to_owned();
    }
    let described: Vec<String> = ports
        .iter()
        .map(|port| match port.name.as_deref() {
            Some(name) if !name.is_empty() => format!("{} ({name})", port.port),
            _ => port.port.to_string(),
        })
        .collect();
    described.join(", ")
}
