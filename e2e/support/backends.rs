//! Upstream servers for the tests: the demo's echo backend, and servers with a handler written
//! in the test, over plain TCP (HTTP/1.1 and h2c) or TLS. Each stops when its handle drops.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use gangway::demo::echo;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::body::{Body, full};
use super::clients::REQUEST_TIMEOUT;
use super::manifests;

/// A running test backend. Dropping it stops its listener and its open connections.
#[derive(Debug)]
pub struct TestServer {
    /// The address it listens on, on 127.0.0.1.
    pub address: SocketAddr,
    shutdown: CancellationToken,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts the demo's echo backend named `name`: it responds to every request with a JSON
/// description of it (`backend`, `method`, `path`, `version`, `headers`, `body_bytes`) and
/// echoes WebSocket messages.
pub async fn echo(name: &str) -> TestServer {
    let shutdown = CancellationToken::new();
    let server = echo::start(name, shutdown.clone(), &TaskTracker::new())
        .await
        .expect("failed to start an echo backend");
    TestServer {
        address: server.address,
        shutdown,
    }
}

/// Starts one echo backend per name, each behind a Service of the same name with the port
/// `http`, and returns the servers with the YAML of the Services and their EndpointSlices.
pub async fn echo_services(names: &[&str]) -> (Vec<TestServer>, String) {
    let mut servers = Vec::new();
    let mut yaml = Vec::new();
    for name in names {
        let server = echo(name).await;
        yaml.push(manifests::backend(name, &[server.address]));
        servers.push(server);
    }
    (servers, manifests::documents(&yaml))
}

/// Starts a backend that responds to every request with `handler`, over HTTP/1.1 (with upgrades)
/// or h2c with prior knowledge, as the client chooses.
pub async fn serve<F, Fut>(handler: F) -> TestServer
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    start(handler, None, IpAddr::V4(Ipv4Addr::LOCALHOST)).await
}

/// Starts a backend like [`serve`] on `ip`, such as `::1`.
pub async fn serve_on<F, Fut>(ip: IpAddr, handler: F) -> TestServer
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    start(handler, None, ip).await
}

/// Starts a backend like [`serve`] behind TLS with `config` (certificate and ALPN).
pub async fn serve_tls<F, Fut>(handler: F, config: Arc<rustls::ServerConfig>) -> TestServer
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    start(
        handler,
        Some(TlsAcceptor::from(config)),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    )
    .await
}

async fn start<F, Fut>(handler: F, tls: Option<TlsAcceptor>, ip: IpAddr) -> TestServer
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind((ip, 0))
        .await
        .expect("failed to bind a test backend");
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let handler = Arc::new(handler);
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => continue,
                },
            };
            let handler = handler.clone();
            let stop = stop.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve_connection(stream, handler, stop).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve_connection(stream, handler, stop).await;
                        }
                    }
                }
            });
        }
    });
    TestServer { address, shutdown }
}

async fn serve_connection<I, F, Fut>(io: I, handler: Arc<F>, stop: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let service = service_fn(move |request| {
        let response = handler(request);
        async move { Ok::<_, std::convert::Infallible>(response.await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::select! {
        _ = connection => {}
        () = stop.cancelled() => {}
    }
}

/// A backend that holds its first request until the test releases it, so the test can act
/// while that request is in flight. Later requests get their response at once. Every
/// response body is `{"backend": "held"}`.
pub struct HeldBackend {
    /// The running server.
    pub server: TestServer,
    arrivals: mpsc::UnboundedReceiver<()>,
    release: Arc<Notify>,
}

impl HeldBackend {
    /// Starts the backend on 127.0.0.1.
    pub async fn start() -> Self {
        let (arrived, arrivals) = mpsc::unbounded_channel();
        let release = Arc::new(Notify::new());
        let released = release.clone();
        let first = Arc::new(AtomicBool::new(true));
        let server = serve(move |_request| {
            let arrived = arrived.clone();
            let released = released.clone();
            let is_first = first.swap(false, Ordering::SeqCst);
            async move {
                if is_first {
                    let _ = arrived.send(());
                    released.notified().await;
                }
                Response::new(full("{\"backend\": \"held\"}"))
            }
        })
        .await;
        Self {
            server,
            arrivals,
            release,
        }
    }

    /// Waits until the first request has arrived, failing the test after
    /// [`REQUEST_TIMEOUT`].
    pub async fn wait_for_first_request(&mut self) {
        tokio::time::timeout(REQUEST_TIMEOUT, self.arrivals.recv())
            .await
            .expect("the request never reached the backend");
    }

    /// Lets the first request get its response.
    pub fn release(&self) {
        // A stored permit also releases a request that has not started waiting yet.
        self.release.notify_one();
    }
}

/// Returns an address on 127.0.0.1 where nothing listens, so connecting is refused. Another
/// process could bind the port meanwhile; on a test machine that is unlikely within a test.
pub fn closed_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("failed to bind a probe socket");
    listener.local_addr().unwrap()
}
