//! Manifests the tests create: Gangway's IngressClass, a `web` Service with its
//! EndpointSlice, Ingresses, and TLS Secrets with certificates generated per test.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::harness::Cluster;

/// IngressClass `gangway`, whose controller is Gangway.
pub const GANGWAY_CLASS: &str = "
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: gangway}
spec: {controller: gangway.dev/ingress-controller}
";

/// Builds a Service `<namespace>/<name>` with port 80 (`http`) to target port 8080.
pub fn service(namespace: &str, name: &str) -> String {
    format!(
        "
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
"
    )
}

/// Builds the EndpointSlice of Service `<namespace>/<service>` with ready endpoints at
/// `addresses`, port 8080.
pub fn endpoint_slice(namespace: &str, service: &str, addresses: &[&str]) -> String {
    let endpoints: String = addresses
        .iter()
        .map(|address| format!("- addresses: [{address}]\n  conditions: {{ready: true}}\n"))
        .collect();
    let endpoints = if endpoints.is_empty() {
        "[]\n".to_owned()
    } else {
        format!("\n{endpoints}")
    };
    format!(
        "
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {service}-slice
  namespace: {namespace}
  labels: {{kubernetes.io/service-name: {service}}}
addressType: IPv4
ports:
- {{name: http, port: 8080, protocol: TCP}}
endpoints: {endpoints}"
    )
}

/// Builds an Ingress `<namespace>/<name>` of class `class` that routes prefix `/` of `host`
/// to port `http` of Service `service`.
pub fn ingress(namespace: &str, name: &str, class: &str, host: &str, service: &str) -> String {
    format!(
        "
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  ingressClassName: {class}
  rules:
  - host: {host}
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {{name: {service}, port: {{name: http}}}}
"
    )
}

/// Builds an Ingress like [`ingress`] with a `tls` section naming `secret` for `host`.
pub fn tls_ingress(namespace: &str, name: &str, host: &str, secret: &str) -> String {
    let mut yaml = ingress(namespace, name, "gangway", host, "web");
    yaml.push_str(&format!(
        "  tls:\n  - hosts: [{host}]\n    secretName: {secret}\n"
    ));
    yaml
}

/// Builds a Secret `<namespace>/<name>` of `secret_type` holding a self-signed certificate
/// for `hosts` under `tls.crt` and `tls.key`. The key is a test key only.
pub fn certificate_secret(
    namespace: &str,
    name: &str,
    secret_type: &str,
    hosts: &[&str],
) -> Secret {
    let names: Vec<String> = hosts.iter().map(|host| (*host).to_owned()).collect();
    let generated =
        rcgen::generate_simple_self_signed(names).expect("rcgen generates a certificate");
    let data = BTreeMap::from([
        (
            "tls.crt".to_owned(),
            ByteString(generated.cert.pem().into_bytes()),
        ),
        (
            "tls.key".to_owned(),
            ByteString(generated.signing_key.serialize_pem().into_bytes()),
        ),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        type_: Some(secret_type.to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Creates Gangway's IngressClass, the Service `default/web` with one endpoint 10.0.0.1, and
/// the Ingress `default/web` for `web.example.com`.
pub async fn create_web_app(cluster: &Cluster) {
    cluster.apply(GANGWAY_CLASS).await;
    cluster.apply(&service("default", "web")).await;
    cluster
        .apply(&endpoint_slice("default", "web", &["10.0.0.1"]))
        .await;
    cluster
        .apply(&ingress(
            "default",
            "web",
            "gangway",
            "web.example.com",
            "web",
        ))
        .await;
}
