//! The demo's manifests: the bundled examples, plus a TLS Secret and EndpointSlices made at
//! start for the echo backends.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::DemoError;

/// Namespace of every demo object.
pub const NAMESPACE: &str = "demo";

/// Host served by the `echo` Ingress.
pub const ECHO_HOST: &str = "echo.gangway.test";
/// A host that the `*.apps.gangway.test` wildcard rule serves.
pub const WILDCARD_HOST: &str = "hello.apps.gangway.test";
/// Host served over TLS by the `secure` Ingress, with the generated certificate.
pub const SECURE_HOST: &str = "secure.gangway.test";

/// Name of the TLS Secret that the `secure` Ingress names.
const TLS_SECRET: &str = "demo-tls";

/// The example manifests compiled into the binary, by file name.
const BUNDLED: [(&str, &str); 3] = [
    (
        "ingressclass.yaml",
        include_str!("../../examples/demo/ingressclass.yaml"),
    ),
    (
        "services.yaml",
        include_str!("../../examples/demo/services.yaml"),
    ),
    (
        "ingresses.yaml",
        include_str!("../../examples/demo/ingresses.yaml"),
    ),
];

/// The echo backends that the generated EndpointSlices point at.
#[derive(Clone, Debug)]
pub struct Backends {
    /// Address of the backend behind Service `echo-a`.
    pub echo_a: SocketAddr,
    /// Address of the backend behind Service `echo-b`.
    pub echo_b: SocketAddr,
}

/// Writes the bundled examples, a Secret with a new self-signed certificate for
/// [`SECURE_HOST`], and EndpointSlices for `backends` into `dir`.
pub fn write(dir: &Path, backends: &Backends) -> Result<(), DemoError> {
    for (name, text) in BUNDLED {
        write_file(dir, name, text.as_bytes())?;
    }

    let secret = tls_secret()?;
    let secret = serde_json::to_vec_pretty(&secret).map_err(DemoError::Encode)?;
    write_file(dir, "tls-secret.json", &secret)?;

    let slices = serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            endpoint_slice("echo-a", backends.echo_a),
            endpoint_slice("echo-b", backends.echo_b),
        ],
    });
    let slices = serde_json::to_vec_pretty(&slices).map_err(DemoError::Encode)?;
    write_file(dir, "endpointslices.json", &slices)
}

fn write_file(dir: &Path, name: &str, content: &[u8]) -> Result<(), DemoError> {
    let path = dir.join(name);
    std::fs::write(&path, content).map_err(|source| DemoError::WriteManifests { path, source })
}

/// Builds the `kubernetes.io/tls` Secret for [`SECURE_HOST`] with a new self-signed
/// certificate and key.
fn tls_secret() -> Result<Secret, DemoError> {
    let certified = rcgen::generate_simple_self_signed(vec![SECURE_HOST.to_owned()])
        .map_err(DemoError::Certificate)?;
    let data = BTreeMap::from([
        (
            "tls.crt".to_owned(),
            ByteString(certified.cert.pem().into_bytes()),
        ),
        (
            "tls.key".to_owned(),
            ByteString(certified.signing_key.serialize_pem().into_bytes()),
        ),
    ]);
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(TLS_SECRET.to_owned()),
            namespace: Some(NAMESPACE.to_owned()),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data),
        ..Secret::default()
    })
}

/// Builds an EndpointSlice for `service` with one ready endpoint at `address`, on the port
/// named `http` as the Services name it.
fn endpoint_slice(service: &str, address: SocketAddr) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{service}-demo")),
            namespace: Some(NAMESPACE.to_owned()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_owned(),
                service.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        address_type: if address.is_ipv4() { "IPv4" } else { "IPv6" }.to_owned(),
        endpoints: vec![Endpoint {
            addresses: vec![address.ip().to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            ..Endpoint::default()
        }],
        ports: Some(vec![EndpointPort {
            name: Some("http".to_owned()),
            port: Some(i32::from(address.port())),
            protocol: Some("TCP".to_owned()),
            ..EndpointPort::default()
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::manifests::{Changes, ManifestSet};
    use crate::store::ObjectKey;

    #[test]
    fn written_manifests_parse_into_every_object() {
        let dir = tempfile::TempDir::new().unwrap();
        let backends = Backends {
            echo_a: "127.0.0.1:40001".parse().unwrap(),
            echo_b: "127.0.0.1:40002".parse().unwrap(),
        };

        write(dir.path(), &backends).unwrap();
        let mut set = ManifestSet::new(dir.path()).unwrap();
        set.rescan(&Changes::default()).unwrap();
        let (store, problems) = set.build();

        assert_eq!(problems, vec![]);
        assert_eq!(store.ingress_classes.len(), 1);
        assert_eq!(store.ingresses.len(), 3);
        assert_eq!(store.services.len(), 2);
        let secret = &store.secrets[&ObjectKey::new(NAMESPACE, TLS_SECRET)];
        let data = secret.data.as_ref().unwrap();
        assert!(
            data["tls.crt"]
                .0
                .starts_with(b"-----BEGIN CERTIFICATE-----")
        );
        assert!(
            data["tls.key"]
                .0
                .starts_with(b"-----BEGIN PRIVATE KEY-----")
        );
        let slice = &store.endpoint_slices[&ObjectKey::new(NAMESPACE, "echo-b-demo")];
        assert_eq!(slice.endpoints[0].addresses, vec!["127.0.0.1"]);
        assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(40002));
    }
}
