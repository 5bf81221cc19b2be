//! YAML for the objects the tests write into a manifest directory: the repetitive Services,
//! EndpointSlices and Secrets. Tests write the Ingresses they are about in full.

use std::fmt::Write;
use std::net::SocketAddr;

use super::tls::Leaf;

/// Gangway's IngressClass, named `gangway`, not the default class.
pub const INGRESS_CLASS: &str = "apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: gangway}
spec: {controller: gangway.dev/ingress-controller}
";

/// Joins YAML documents into one multi-document stream.
pub fn documents<S: AsRef<str>>(parts: &[S]) -> String {
    parts
        .iter()
        .map(|part| part.as_ref().trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n---\n")
        + "\n"
}

/// One port of a Service.
#[derive(Clone, Copy, Debug)]
pub struct ServicePort<'a> {
    /// `name`; empty for an unnamed port.
    pub name: &'a str,
    /// `port`.
    pub port: u16,
    /// `appProtocol`, such as `kubernetes.io/h2c`.
    pub app_protocol: Option<&'a str>,
}

/// The port most tests use: `http`, 80, plain HTTP/1.1.
pub const HTTP: ServicePort<'static> = ServicePort {
    name: "http",
    port: 80,
    app_protocol: None,
};

/// Returns a ClusterIP Service in namespace `default`.
pub fn service(name: &str, ports: &[ServicePort<'_>]) -> String {
    let mut yaml = format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  ports:
"
    );
    for port in ports {
        write!(yaml, "  - {{port: {}", port.port).unwrap();
        if !port.name.is_empty() {
            write!(yaml, ", name: {}", port.name).unwrap();
        }
        if let Some(app_protocol) = port.app_protocol {
            write!(yaml, ", appProtocol: {app_protocol}").unwrap();
        }
        yaml.push_str("}\n");
    }
    yaml
}

/// One endpoint of an EndpointSlice with its conditions; `None` leaves a condition unset.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint {
    /// Address and target port.
    pub address: SocketAddr,
    /// `conditions.ready`.
    pub ready: Option<bool>,
    /// `conditions.serving`.
    pub serving: Option<bool>,
    /// `conditions.terminating`.
    pub terminating: Option<bool>,
}

impl Endpoint {
    /// Returns an endpoint with `ready: true`.
    pub fn ready(address: SocketAddr) -> Self {
        Self {
            address,
            ready: Some(true),
            serving: None,
            terminating: None,
        }
    }
}

/// Returns an EndpointSlice of Service `service` whose port `port_name` (empty for an
/// unnamed port) leads to the endpoints. The slice has one port and one address type, so
/// every endpoint must listen on the same port number, and the first one sets the type.
pub fn endpoint_slice(
    name: &str,
    service: &str,
    port_name: &str,
    endpoints: &[Endpoint],
) -> String {
    let port = endpoints
        .first()
        .map_or(80, |endpoint| endpoint.address.port());
    assert!(
        endpoints.iter().all(|e| e.address.port() == port),
        "one EndpointSlice port serves every endpoint, so they must share a port number"
    );
    let address_type = match endpoints.first().map(|endpoint| endpoint.address) {
        Some(SocketAddr::V6(_)) => "IPv6",
        _ => "IPv4",
    };
    let port_name = if port_name.is_empty() {
        String::new()
    } else {
        format!("name: {port_name}, ")
    };
    let mut yaml = format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}
  labels: {{kubernetes.io/service-name: {service}}}
addressType: {address_type}
ports: [{{{port_name}port: {port}, protocol: TCP}}]
"
    );
    yaml.push_str(if endpoints.is_empty() {
        "endpoints: []\n"
    } else {
        "endpoints:\n"
    });
    for endpoint in endpoints {
        let mut conditions = Vec::new();
        for (condition, value) in [
            ("ready", endpoint.ready),
            ("serving", endpoint.serving),
            ("terminating", endpoint.terminating),
        ] {
            if let Some(value) = value {
                conditions.push(format!("{condition}: {value}"));
            }
        }
        writeln!(
            yaml,
            "- addresses: [\"{}\"]\n  conditions: {{{}}}",
            endpoint.address.ip(),
            conditions.join(", ")
        )
        .unwrap();
    }
    yaml
}

/// Returns a Service `name` with the port [`HTTP`] and one ready EndpointSlice per server,
/// so requests are spread over `servers`.
pub fn backend(name: &str, servers: &[SocketAddr]) -> String {
    let mut parts = vec![service(name, &[HTTP])];
    for (index, server) in servers.iter().enumerate() {
        parts.push(endpoint_slice(
            &format!("{name}-{index}"),
            name,
            HTTP.name,
            &[Endpoint::ready(*server)],
        ));
    }
    documents(&parts)
}

/// Returns an Ingress of class `gangway` that sends every path of `host` to port `http` of
/// Service `service`.
pub fn ingress(name: &str, host: &str, service: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}}}
spec:
  ingressClassName: gangway
  rules:
  - host: {host}
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{name: http}}}}}}}}
"
    )
}

/// Returns an Ingress like [`ingress`] whose host is also served over HTTPS with the
/// certificate in Secret `secret`.
pub fn tls_ingress(name: &str, host: &str, secret: &str, service: &str) -> String {
    ingress(name, host, service).replace(
        "  rules:\n",
        &format!("  tls: [{{hosts: [{host}], secretName: {secret}}}]\n  rules:\n"),
    )
}

/// Returns a `kubernetes.io/tls` Secret with `leaf`'s certificate and key in `stringData`.
pub fn tls_secret(name: &str, leaf: &Leaf) -> String {
    tls_secret_pem(name, &leaf.certificate_pem, &leaf.key_pem)
}

/// Returns a `kubernetes.io/tls` Secret with the given PEM text, valid or not.
pub fn tls_secret_pem(name: &str, certificate_pem: &str, key_pem: &str) -> String {
    format!(
        "apiVersion: v1
kind: Secret
metadata: {{name: {name}}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{}
  tls.key: |
{}
",
        indent(certificate_pem, 4),
        indent(key_pem, 4)
    )
}

fn indent(text: &str, spaces: usize) -> String {
    let prefix = " ".repeat(spaces);
    text.trim_end()
        .lines()
        .map(|line| format!("{prefix}{line}"))
        .collect::<Vec<_>>()
        .join("\n")
}
