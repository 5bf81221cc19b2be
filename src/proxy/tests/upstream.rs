//! A test upstream server written with hyper: HTTP/1.1 and h2c on plain TCP, or either over
//! TLS with ALPN. Handlers are closures, and the server counts the connections it accepts.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// Error type of test bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body of test upstream responses.
pub(crate) type TestBody = UnsyncBoxBody<Bytes, BoxError>;
/// Future of a handler's response.
pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = Response<TestBody>> + Send>>;
/// A request handler of a test upstream.
pub(crate) type Handler = Arc<dyn Fn(Request<Incoming>) -> HandlerFuture + Send + Sync>;

/// Wraps bytes as a test body.
pub(crate) fn full_body(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Transport of a test upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    /// Plain TCP: HTTP/1.1 or h2c with prior knowledge, detected per connection.
    Plain,
    /// TLS with a self-signed certificate and ALPN h2, http/1.1.
    Tls,
}

/// A running test upstream; it stops when dropped.
pub(crate) struct TestUpstream {
    /// The address the server listens on.
    pub(crate) address: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TestUpstream {
    /// Starts a server on 127.0.0.1 that serves `handler`.
    pub(crate) async fn start(transport: Transport, handler: Handler) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let acceptor = (transport == Transport::Tls).then(tls_acceptor);
        tokio::spawn(accept_loop(
            listener,
            acceptor,
            handler,
            accepted.clone(),
            stop.clone(),
        ));
        Self {
            address,
            accepted,
            stop,
        }
    }

    /// Starts a server whose every response is the echo of the request (see [`Echo`]).
    pub(crate) async fn echo(name: &str, transport: Transport) -> Self {
        Self::start(transport, echo_handler(name)).await
    }

    /// Returns how many TCP connections the server has accepted.
    pub(crate) fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    handler: Handler,
    accepted: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
        };
        accepted.fetch_add(1, Ordering::SeqCst);
        let handler = handler.clone();
        let acceptor = acceptor.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(request).await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            match acceptor {
                Some(acceptor) => {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = connection => {}
                        () = stop.cancelled() => {}
                    }
                }
                None => {
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = connection => {}
                        () = stop.cancelled() => {}
                    }
                }
            }
        });
    }
}

fn tls_acceptor() -> TlsAcceptor {
    let key = crate::proxy::generate_default_certificate().unwrap();
    let resolver = rustls::sign::SingleCertAndKey::from(key);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// What an echo upstream saw, returned as its JSON response body.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Echo {
    /// Name given to the upstream at start.
    pub(crate) upstream: String,
    pub(crate) method: String,
    /// Request target as received: origin-form over HTTP/1.1, absolute over HTTP/2.
    pub(crate) uri: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub(crate) version: String,
    /// Headers, values of repeated names joined with `, `.
    pub(crate) headers: BTreeMap<String, String>,
    /// Length of the request body.
    pub(crate) body_len: usize,
}

impl Echo {
    /// Returns a header the upstream saw.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Returns a handler that responds 200 with an [`Echo`] of the request.
pub(crate) fn echo_handler(name: &str) -> Handler {
    let name: Arc<str> = name.into();
    Arc::new(move |request: Request<Incoming>| {
        let name = name.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body_len = match body.collect().await {
                Ok(collected) => collected.to_bytes().len(),
                Err(_) => 0,
            };
            let mut headers = BTreeMap::new();
            for (header, value) in &parts.headers {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                headers
                    .entry(header.to_string())
                    .and_modify(|joined: &mut String| {
                        joined.push_str(", ");
                        joined.push_str(&value);
                    })
                    .or_insert(value);
            }
            let echo = Echo {
                upstream: name.to_string(),
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                version: format!("{:?}", parts.version),
                headers,
                body_len,
            };
            let mut response = Response::new(full_body(serde_json::to_vec(&echo).unwrap()));
            response
                .headers_mut()
                .insert("x-upstream", http::HeaderValue::from_str(&name).unwrap());
            response
        })
    })
}
