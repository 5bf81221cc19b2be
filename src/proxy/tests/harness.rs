//! Test fixtures: hand-built snapshots, a running proxy, and downstream clients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::live::Live;
use crate::metrics::Metrics;
use crate::proxy::tls::NoCertificateVerification;
use crate::proxy::{Proxy, ProxyConfig, generate_default_certificate};
use crate::snapshot::{
    Backend, Endpoint, PathMatch, Route, RouteAction, Snapshot, TlsCertificate, UpstreamProtocol,
    VirtualHost,
};
use crate::status::StatusReport;
use crate::store::ObjectKey;

/// Public ports the test proxy reports, different from the bound ones on purpose.
pub(crate) const HTTP_PUBLIC_PORT: u16 = 18080;
pub(crate) const HTTPS_PUBLIC_PORT: u16 = 18443;

/// Builds a backend `default/<service>:80` over `addresses`.
pub(crate) fn backend(
    service: &str,
    protocol: UpstreamProtocol,
    addresses: &[SocketAddr],
) -> Arc<Backend> {
    let endpoints = addresses
        .iter()
        .map(|address| Endpoint {
            address: *address,
            terminating: false,
        })
        .collect();
    Arc::new(Backend::new(
        format!("default/{service}:80"),
        ObjectKey::new("default", service),
        80,
        protocol,
        endpoints,
    ))
}

/// Builds snapshots by hand, one route at a time.
#[derive(Default)]
pub(crate) struct SnapshotBuilder {
    snapshot: Snapshot,
}

impl SnapshotBuilder {
    /// Adds a route on `host` (`*` for the catch-all) that forwards to `backend`.
    pub(crate) fn forward(self, host: &str, path: PathMatch, backend: &Arc<Backend>) -> Self {
        self.route(host, path, RouteAction::Forward(backend.clone()), false)
    }

    /// Adds a route with any action.
    pub(crate) fn route(
        mut self,
        host: &str,
        path: PathMatch,
        action: RouteAction,
        https_redirect: bool,
    ) -> Self {
        if let RouteAction::Forward(backend) = &action
            && !self
                .snapshot
                .backends
                .iter()
                .any(|known| Arc::ptr_eq(known, backend))
        {
            self.snapshot.backends.push(backend.clone());
        }
        let route = Arc::new(Route {
            id: format!("ingress/default/{}/path{}", host, path.path()).into(),
            ingress: ObjectKey::new("default", host.replace('*', "any")),
            path_match: Some(path.clone()),
            action,
            https_redirect,
        });
        let make = || {
            Arc::new(VirtualHost {
                hostname: host.to_owned(),
                ..Default::default()
            })
        };
        let virtual_host = if host == "*" {
            self.snapshot.catch_all.get_or_insert_with(make)
        } else {
            self.snapshot.hosts.ensure_with(host, make)
        };
        Arc::get_mut(virtual_host)
            .expect("virtual hosts are not shared while building")
            .paths
            .insert(&path, route)
            .expect("each test route has its own path");
        self
    }

    /// Serves `certificate` for `host`, exact or `*.suffix`.
    pub(crate) fn certificate(mut self, host: &str, certificate: Arc<TlsCertificate>) -> Self {
        let _ = self.snapshot.certificates.hosts.insert(host, certificate);
        self
    }

    pub(crate) fn build(self) -> Snapshot {
        self.snapshot
    }
}

/// Builds a snapshot whose one route sends everything for `foo.example.com` to `backend`.
pub(crate) fn one_route(backend: &Arc<Backend>) -> Snapshot {
    SnapshotBuilder::default()
        .forward("foo.example.com", prefix("/"), backend)
        .build()
}

/// Returns a `Prefix` match.
pub(crate) fn prefix(path: &str) -> PathMatch {
    PathMatch::Prefix(path.to_owned())
}

/// A proxy on loopback with two workers and short timeouts. Dropping it cancels shutdown;
/// [`TestProxy::stop`] also waits for the workers.
pub(crate) struct TestProxy {
    proxy: Option<Proxy>,
    pub(crate) live: Arc<Live>,
    pub(crate) shutdown: CancellationToken,
    /// The certificate served when the snapshot has none for a name.
    pub(crate) default_certificate: Arc<CertifiedKey>,
}

impl TestProxy {
    /// Returns the base test configuration: ports picked by the kernel, and timeouts short
    /// enough for a test to wait them out.
    pub(crate) fn config() -> ProxyConfig {
        ProxyConfig {
            http_listen: "127.0.0.1:0".parse().unwrap(),
            https_listen: "127.0.0.1:0".parse().unwrap(),
            worker_threads: 2,
            http_public_port: HTTP_PUBLIC_PORT,
            https_public_port: HTTPS_PUBLIC_PORT,
            client_header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            upstream_connect_timeout: Duration::from_secs(2),
            upstream_response_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
            tunnel_idle_timeout: Duration::from_secs(10),
            access_log: true,
            // Short, so that most tests also park and resume connections between requests.
            park_after: Duration::from_millis(100),
        }
    }

    /// Starts a proxy with [`TestProxy::config`] serving `snapshot`.
    pub(crate) fn start(snapshot: Snapshot) -> Self {
        Self::start_with(Self::config(), snapshot)
    }

    /// Starts a proxy with `config` serving `snapshot`.
    pub(crate) fn start_with(config: ProxyConfig, snapshot: Snapshot) -> Self {
        let live = Arc::new(Live::new(Arc::new(Metrics::new())));
        live.publish(snapshot, StatusReport::default(), Duration::ZERO);
        let shutdown = CancellationToken::new();
        let default_certificate = generate_default_certificate().unwrap();
        let proxy = Proxy::start(
            config,
            live.clone(),
            default_certificate.clone(),
            shutdown.clone(),
        )
        .expect("proxy starts");
        Self {
            proxy: Some(proxy),
            live,
            shutdown,
            default_certificate,
        }
    }

    pub(crate) fn http_addr(&self) -> SocketAddr {
        self.proxy.as_ref().unwrap().http_addr()
    }

    pub(crate) fn https_addr(&self) -> SocketAddr {
        self.proxy.as_ref().unwrap().https_addr()
    }

    /// Publishes a new snapshot.
    pub(crate) fn publish(&self, snapshot: Snapshot) {
        self.live
            .publish(snapshot, StatusReport::default(), Duration::ZERO);
    }

    /// Cancels shutdown and waits for the workers to return.
    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        let proxy = self.proxy.take().unwrap();
        tokio::task::spawn_blocking(move || proxy.join())
            .await
            .unwrap();
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Returns the value of one metric series of `proxy`, 0 when it has none yet.
pub(crate) fn metric_value(proxy: &TestProxy, series: &str) -> u64 {
    let text = proxy.live.metrics().encode();
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// A response with its body read to the end.
pub(crate) struct Collected {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) trailers: Option<HeaderMap>,
}

impl Collected {
    /// Reads `response` to the end.
    pub(crate) async fn read(response: Response<Incoming>) -> Self {
        let (parts, body) = response.into_parts();
        let collected = body
            .collect()
            .await
            .expect("response body reads to the end");
        let trailers = collected.trailers().cloned();
        Self {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        }
    }

    /// Parses the body as an echo upstream's JSON.
    pub(crate) fn echo(&self) -> super::upstream::Echo {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "body is not an echo ({error}): status {}, body {:?}",
                self.status, self.body
            )
        })
    }

    /// Returns a response header as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// Opens an HTTP/1.1 connection to `address`.
pub(crate) async fn http1_client<B>(address: SocketAddr) -> http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(address).await.unwrap();
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection.with_upgrades());
    sender
}

/// Opens an HTTP/2 connection with prior knowledge (h2c) to `address`.
pub(crate) async fn h2c_client<B>(address: SocketAddr) -> http2::SendRequest<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(address).await.unwrap();
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// Sends a GET for `path` with `host` on a new HTTP/1.1 connection and reads the response.
pub(crate) async fn get(address: SocketAddr, host: &str, path: &str) -> Collected {
    let mut client = http1_client::<Empty<Bytes>>(address).await;
    let request = Request::get(path)
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    Collected::read(client.send_request(request).await.unwrap()).await
}

/// Sends `request` on a new HTTP/1.1 connection and reads the response.
pub(crate) async fn send(address: SocketAddr, request: Request<Full<Bytes>>) -> Collected {
    let mut client = http1_client::<Full<Bytes>>(address).await;
    Collected::read(client.send_request(request).await.unwrap()).await
}

/// A TLS connection to the proxy and what its handshake chose.
pub(crate) struct TlsClient {
    pub(crate) stream: tokio_rustls::client::TlsStream<TcpStream>,
}

impl TlsClient {
    /// Connects with `server_name` as SNI (an IP address sends none) and offers `alpn`.
    pub(crate) async fn connect(address: SocketAddr, server_name: &str, alpn: &[&[u8]]) -> Self {
        let config = client_config(rustls::crypto::ring::default_provider(), alpn);
        Self::connect_with_config(address, server_name, config).await
    }

    /// Connects as [`TlsClient::connect`] with no ALPN, offering the cipher suite `first`
    /// before ring's others.
    pub(crate) async fn connect_preferring(
        address: SocketAddr,
        server_name: &str,
        first: rustls::CipherSuite,
    ) -> Self {
        Self::connect_with_config(address, server_name, config_preferring(first)).await
    }

    /// Connects with `config`. Connections that share a configuration share its session
    /// store, so a later one can resume the session of an earlier one.
    pub(crate) async fn connect_with_config(
        address: SocketAddr,
        server_name: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> Self {
        let tcp = TcpStream::connect(address).await.unwrap();
        let name = ServerName::try_from(server_name.to_owned()).unwrap();
        let stream = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .expect("TLS handshake succeeds");
        Self { stream }
    }

    /// Returns true when the handshake resumed an earlier session.
    pub(crate) fn resumed(&self) -> bool {
        let (_, connection) = self.stream.get_ref();
        connection.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// Returns the leaf certificate the proxy presented.
    pub(crate) fn peer_certificate(&self) -> CertificateDer<'static> {
        let (_, connection) = self.stream.get_ref();
        connection.peer_certificates().unwrap()[0]
            .clone()
            .into_owned()
    }

    /// Returns the negotiated cipher suite.
    pub(crate) fn cipher_suite(&self) -> rustls::CipherSuite {
        let (_, connection) = self.stream.get_ref();
        connection.negotiated_cipher_suite().unwrap().suite()
    }

    /// Returns the negotiated ALPN protocol.
    pub(crate) fn alpn(&self) -> Option<Vec<u8>> {
        let (_, connection) = self.stream.get_ref();
        connection.alpn_protocol().map(<[u8]>::to_vec)
    }
}

/// Builds a client configuration with `provider` that offers `alpn`. It accepts any
/// certificate, because the proxy's are self-signed and the tests check which one it chose.
fn client_config(
    provider: rustls::crypto::CryptoProvider,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoCertificateVerification::new()))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Arc::new(config)
}

/// Builds a client configuration with no ALPN that offers the cipher suite `first` before
/// ring's others.
pub(crate) fn config_preferring(first: rustls::CipherSuite) -> Arc<rustls::ClientConfig> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != first);
    client_config(provider, &[])
}

/// Returns an address on loopback where nothing listens, so connecting is refused.
pub(crate) fn refused_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A listener whose accept queue is full, so further connection attempts hang in SYN_SENT
/// until they time out. Linux drops SYNs to a full queue unless `tcp_abort_on_overflow` is set.
pub(crate) struct BlackHole {
    pub(crate) address: SocketAddr,
    _listener: socket2::Socket,
    _queued: Vec<std::net::TcpStream>,
}

impl BlackHole {
    pub(crate) fn new() -> Self {
        use socket2::{Domain, Socket, Type};
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
        listener.bind(&bind.into()).unwrap();
        listener.listen(0).unwrap();
        let address = listener.local_addr().unwrap().as_socket().unwrap();
        let mut queued = Vec::new();
        // Fill the queue: connections succeed until it is full, then one times out.
        for _ in 0..16 {
            match std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)) {
                Ok(stream) => queued.push(stream),
                Err(_) => break,
            }
        }
        Self {
            address,
            _listener: listener,
            _queued: queued,
        }
    }
}
