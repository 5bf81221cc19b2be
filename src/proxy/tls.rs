//! TLS on both sides: the downstream certificate resolver that reads the live snapshot, the
//! generated default certificate, and the upstream client configuration.

use std::sync::Arc;

use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, ring};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::Acceptor;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;

use super::ProxyError;
use crate::live::Live;

/// Common name and subject alternative name of the generated certificate.
const DEFAULT_CERTIFICATE_NAME: &str = "gangway-default";

/// ALPN protocol ids, most preferred first.
const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Generates the self-signed certificate (common name `gangway-default`) that the HTTPS
/// listener serves when the snapshot has no certificate for the requested name.
pub fn generate_default_certificate() -> Result<Arc<CertifiedKey>, ProxyError> {
    let key_pair = KeyPair::generate().map_err(ProxyError::Certificate)?;
    let mut params = CertificateParams::new(vec![DEFAULT_CERTIFICATE_NAME.to_owned()])
        .map_err(ProxyError::Certificate)?;
    params
        .distinguished_name
        .push(DnType::CommonName, DEFAULT_CERTIFICATE_NAME);
    let certificate = params
        .self_signed(&key_pair)
        .map_err(ProxyError::Certificate)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    let signing_key = ring::sign::any_supported_type(&key_der).map_err(ProxyError::PrivateKey)?;
    Ok(Arc::new(CertifiedKey::new(
        vec![certificate.der().clone()],
        signing_key,
    )))
}

/// Picks the server certificate for each TLS handshake from the live snapshot.
pub(super) struct CertificateResolver {
    live: Arc<Live>,
    default_certificate: Arc<CertifiedKey>,
}

impl CertificateResolver {
    pub(super) fn new(live: Arc<Live>, default_certificate: Arc<CertifiedKey>) -> Self {
        Self {
            live,
            default_certificate,
        }
    }

    /// Selects the certificate for an SNI name: exact name, wildcard, the snapshot's fallback,
    /// then the generated default. A handshake is never rejected for want of a certificate,
    /// as ingress-nginx and Contour serve a default one too.
    pub(super) fn select(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let snapshot = self.live.snapshot();
        match snapshot.certificates.lookup(server_name) {
            Some(certificate) => certificate.key.clone(),
            None => self.default_certificate.clone(),
        }
    }
}

impl std::fmt::Debug for CertificateResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of debug output.
        f.debug_struct("CertificateResolver")
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertificateResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.select(client_hello.server_name()))
    }
}

fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// Returns the ring provider with the cipher suites in the order the proxy prefers as a
/// server: AES-128-GCM, then AES-256-GCM, then ChaCha20-Poly1305, in each TLS version.
///
/// rustls lists AES-256-GCM first, and rustls clients offer it first. With it, TLS 1.3
/// runs its key schedule on SHA-384, which took 29 % of the instructions of a handshake in
/// a callgrind profile (`benchdriver.profile handshake`); SHA-256 has hardware
/// instructions on current x86 and ARM processors, SHA-512 on few. AES-128 also takes
/// fewer rounds per block. Go's TLS server has put AES-128-GCM before AES-256-GCM since
/// Go 1.17. Clients that prefer ChaCha20-Poly1305 still get it: see [`DownstreamTls`].
fn server_provider() -> Arc<CryptoProvider> {
    let mut provider = ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| match suite.suite() {
            CipherSuite::TLS13_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
            CipherSuite::TLS13_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
            _ => 2,
        });
    Arc::new(provider)
}

/// The downstream TLS configuration, in two orders of cipher suites, and the choice between
/// them for each client hello.
///
/// A client that lists ChaCha20-Poly1305 before AES-GCM usually lacks AES instructions, and
/// without them AES-GCM is much slower than ChaCha20. Go's TLS server makes the same choice.
/// Every other client gets the proxy's order from [`server_provider`]. Both configurations
/// share one certificate resolver and ticket key. rustls resumes a session only with the
/// cipher suite it began with, so a client that keeps its order between connections resumes.
pub(super) struct DownstreamTls {
    /// Cipher suites in the proxy's order.
    server_order: Arc<ServerConfig>,
    /// The same configuration, following the client's order.
    client_order: Arc<ServerConfig>,
}

impl DownstreamTls {
    /// Builds both configurations around `resolver`.
    pub(super) fn new(resolver: CertificateResolver) -> Result<Self, ProxyError> {
        let server_order = server_config(resolver)?;
        let mut client_order = server_order.clone();
        client_order.ignore_client_order = false;
        Ok(Self {
            server_order: Arc::new(server_order),
            client_order: Arc::new(client_order),
        })
    }

    /// Reads the client hello from `stream`, then completes the handshake with the
    /// configuration its cipher suites call for.
    pub(super) async fn accept(
        &self,
        stream: TcpStream,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        let start = LazyConfigAcceptor::new(Acceptor::default(), stream).await?;
        let config = if prefers_chacha20(start.client_hello().cipher_suites()) {
            self.client_order.clone()
        } else {
            self.server_order.clone()
        };
        start.into_stream(config).await
    }
}

/// Returns true when the first AEAD family in a client's list of cipher suites is
/// ChaCha20-Poly1305 rather than AES-GCM. GREASE values and other suites are skipped.
fn prefers_chacha20(suites: &[CipherSuite]) -> bool {
    suites
        .iter()
        .find_map(|suite| match suite {
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => Some(true),
            CipherSuite::TLS13_AES_128_GCM_SHA256
            | CipherSuite::TLS13_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => Some(false),
            _ => None,
        })
        .unwrap_or(false)
}

/// Builds the downstream TLS configuration: certificates from `resolver`, ALPN h2 then
/// http/1.1, the cipher suite chosen by the proxy's order, not the client's, and stateless
/// session tickets.
///
/// rustls otherwise keeps sessions in a server-side cache of 256 entries, and each TLS 1.3
/// connection stores two: after about 128 other clients, a returning client found its session
/// gone and paid for a full handshake. ring's ticketer encrypts the session into the ticket
/// under a random key that it replaces every 6 hours (tickets live 12 hours), so any number of
/// clients can resume, as with nginx's default `ssl_session_tickets on`. Each Gangway process
/// has its own key, so a client that reconnects to another replica makes a full handshake.
fn server_config(resolver: CertificateResolver) -> Result<ServerConfig, ProxyError> {
    let mut config = ServerConfig::builder_with_provider(server_provider())
        .with_safe_default_protocol_versions()
        .map_err(ProxyError::Tls)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    config.ignore_client_order = true;
    config.ticketer = ring::Ticketer::new().map_err(ProxyError::Tls)?;
    Ok(config)
}

/// Upstream TLS configurations: one offering h2 and http/1.1, one offering http/1.1 only for
/// upgrade requests, which need HTTP/1.1.
#[derive(Clone)]
pub(super) struct UpstreamTls {
    /// Offers ALPN h2 and http/1.1.
    pub(super) any_version: Arc<ClientConfig>,
    /// Offers ALPN http/1.1 only.
    pub(super) http1_only: Arc<ClientConfig>,
}

impl UpstreamTls {
    /// Builds the upstream client configurations.
    ///
    /// The proxy does not verify upstream certificates, as ingress-nginx's default
    /// `proxy_ssl_verify off`: cluster backends usually serve self-signed certificates and the
    /// endpoint address comes from the Kubernetes API, not from DNS. Handshake signatures are
    /// still checked, so the peer must hold the key of the certificate it presents.
    /// TODO: a per-backend option to verify the upstream certificate against a CA bundle.
    pub(super) fn new() -> Result<Self, ProxyError> {
        let provider = ring_provider();
        let build = |alpn: &[&[u8]]| -> Result<Arc<ClientConfig>, ProxyError> {
            let verifier = Arc::new(NoCertificateVerification::new());
            let mut config = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(ProxyError::Tls)?
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
            Ok(Arc::new(config))
        };
        Ok(Self {
            any_version: build(&[ALPN_H2, ALPN_HTTP1])?,
            http1_only: build(&[ALPN_HTTP1])?,
        })
    }
}

/// Returns true when the TLS connection negotiated HTTP/2.
pub(super) fn negotiated_h2(alpn: Option<&[u8]>) -> bool {
    alpn == Some(ALPN_H2)
}

/// Accepts any upstream certificate chain but still verifies handshake signatures.
#[derive(Debug)]
pub(super) struct NoCertificateVerification {
    algorithms: WebPkiSupportedAlgorithms,
}

impl NoCertificateVerification {
    /// Verifies signatures with the algorithms of the ring provider.
    pub(super) fn new() -> Self {
        Self {
            algorithms: ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for NoCertificateVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::snapshot::{Snapshot, TlsCertificate};
    use crate::status::StatusReport;
    use crate::store::ObjectKey;

    fn certificate(secret: &str) -> Arc<TlsCertificate> {
        Arc::new(TlsCertificate {
            secret: ObjectKey::new("default", secret),
            key: generate_default_certificate().unwrap(),
        })
    }

    /// Keys of the certificates in the resolver's snapshot.
    struct Keys {
        exact: Arc<CertifiedKey>,
        wildcard: Arc<CertifiedKey>,
    }

    /// Builds a resolver over a snapshot with `foo.example.com` and `*.wild.example.com`.
    fn resolver(fallback: Option<Arc<TlsCertificate>>) -> (CertificateResolver, Keys) {
        let exact = certificate("foo-tls");
        let wildcard = certificate("wild-tls");
        let keys = Keys {
            exact: exact.key.clone(),
            wildcard: wildcard.key.clone(),
        };
        let mut snapshot = Snapshot::default();
        let hosts = &mut snapshot.certificates.hosts;
        hosts.insert("foo.example.com", exact).unwrap();
        hosts.insert("*.wild.example.com", wildcard).unwrap();
        snapshot.certificates.fallback = fallback;

        let live = Arc::new(Live::new(Arc::new(Metrics::new())));
        live.publish(snapshot, StatusReport::default(), Default::default());
        let default = generate_default_certificate().unwrap();
        (CertificateResolver::new(live, default), keys)
    }

    #[test]
    fn resolver_serves_default_without_sni() {
        let (resolver, _) = resolver(None);

        let selected = resolver.select(None);

        assert!(Arc::ptr_eq(&selected, &resolver.default_certificate));
    }

    #[test]
    fn resolver_serves_default_for_unknown_name() {
        let (resolver, _) = resolver(None);

        let selected = resolver.select(Some("unknown.example.org"));

        assert!(Arc::ptr_eq(&selected, &resolver.default_certificate));
    }

    #[test]
    fn resolver_serves_exact_name() {
        let (resolver, keys) = resolver(None);

        let selected = resolver.select(Some("foo.example.com"));

        assert!(Arc::ptr_eq(&selected, &keys.exact));
    }

    #[test]
    fn resolver_serves_wildcard_for_one_label() {
        let (resolver, keys) = resolver(None);

        let selected = resolver.select(Some("api.wild.example.com"));
        let two_labels = resolver.select(Some("a.b.wild.example.com"));

        assert!(Arc::ptr_eq(&selected, &keys.wildcard));
        assert!(Arc::ptr_eq(&two_labels, &resolver.default_certificate));
    }

    #[test]
    fn resolver_prefers_snapshot_fallback_to_default() {
        let fallback = certificate("fallback-tls");
        let (resolver, _) = resolver(Some(fallback.clone()));

        let unknown = resolver.select(Some("unknown.example.org"));
        let no_sni = resolver.select(None);

        assert!(Arc::ptr_eq(&unknown, &fallback.key));
        assert!(Arc::ptr_eq(&no_sni, &fallback.key));
    }

    #[test]
    fn default_certificate_names_gangway_default() {
        let key = generate_default_certificate().unwrap();

        let der = key.cert[0].as_ref();

        let needle = DEFAULT_CERTIFICATE_NAME.as_bytes();
        assert!(der.windows(needle.len()).any(|window| window == needle));
    }

    #[test]
    fn chacha20_preference_skips_grease() {
        let grease = CipherSuite::Unknown(0x0a0a);
        assert!(prefers_chacha20(&[
            grease,
            CipherSuite::TLS_EMPTY_RENEGOTIATION_INFO_SCSV,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            CipherSuite::TLS13_AES_128_GCM_SHA256,
        ]));
        assert!(!prefers_chacha20(&[
            grease,
            CipherSuite::TLS13_AES_256_GCM_SHA384,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        ]));
        assert!(prefers_chacha20(&[
            CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ]));
        assert!(!prefers_chacha20(&[grease]));
    }
}
