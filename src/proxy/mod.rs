//! The data plane: listeners, request routing against the live snapshot, and upstream pools.
//!
//! [`Proxy::start`] runs `worker_threads` OS threads. Each thread owns a current-thread tokio
//! runtime, its own `SO_REUSEPORT` listeners for HTTP and HTTPS and its own upstream
//! connection pool. The kernel spreads new connections over the listeners. So the request
//! path takes no lock, and every task of a connection stays on one thread. Each request loads
//! the live snapshot once and reads nothing else that can change.

pub mod admin;
mod body;
mod counters;
mod failure;
mod handler;
mod headers;
mod inline;
mod listener;
mod log;
mod park;
mod pool;
mod tls;
mod worker;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use crate::live::Live;

pub use tls::generate_default_certificate;

/// Default of [`ProxyConfig::park_after`]. Parking and resuming a connection cost four
/// `epoll_ctl` calls, a `getpeername` call, a new task and new hyper buffers, so busy
/// connections are not parked.
pub const DEFAULT_PARK_AFTER: Duration = Duration::from_secs(1);

/// Default of [`ProxyConfig::tunnel_idle_timeout`]. nginx closes a WebSocket after 60 s
/// without traffic (`proxy_read_timeout`), and the usual advice to ingress-nginx users with
/// WebSockets is to raise that to 3600 s.
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Settings of the data plane.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Address of the plain HTTP listener (HTTP/1.1 and h2c). Port 0 picks a free port.
    pub http_listen: SocketAddr,
    /// Address of the TLS listener (HTTP/1.1 and HTTP/2 by ALPN). Port 0 picks a free port.
    pub https_listen: SocketAddr,
    /// Number of worker threads, each with its own listeners, runtime and upstream pool.
    /// 0 is treated as 1.
    pub worker_threads: usize,
    /// Port that clients use to reach the HTTP listener (a Service or host port may map it),
    /// sent in `X-Forwarded-Port`. 0 means the port the HTTP listener is bound to.
    pub http_public_port: u16,
    /// Port that clients use to reach the HTTPS listener, used in redirects to HTTPS and in
    /// `X-Forwarded-Port`. 0 means the port the HTTPS listener is bound to.
    pub https_public_port: u16,
    /// Time a client has to send the first request head on a new connection, TLS handshake
    /// included.
    pub client_header_timeout: Duration,
    /// Time a downstream connection may stay open without a request in flight. On a
    /// keep-alive connection the next request head must arrive within it, counted from the
    /// end of the previous request, as nginx's `keepalive_timeout` counts. Zero turns
    /// keep-alive off, as `keepalive_timeout 0` does: an HTTP/1 connection closes after its
    /// response, and an HTTP/2 connection within a second after its streams end.
    pub idle_timeout: Duration,
    /// Time to open an upstream connection, TLS handshake included.
    pub upstream_connect_timeout: Duration,
    /// Time to wait for the upstream response head after the request body stopped flowing.
    pub upstream_response_timeout: Duration,
    /// Time in-flight requests get to finish after shutdown starts.
    pub shutdown_timeout: Duration,
    /// Time an upgraded connection, such as a WebSocket, may carry no bytes in either
    /// direction before the proxy closes it.
    pub tunnel_idle_timeout: Duration,
    /// Emit one `gangway::access` event per request.
    pub access_log: bool,
    /// Time an idle plain HTTP/1.1 connection keeps its HTTP state before it is parked:
    /// held as a bare socket until the client sends again. Not a command-line flag.
    pub park_after: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        let worker_threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Self {
            http_listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            https_listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            worker_threads,
            http_public_port: 80,
            https_public_port: 443,
            client_header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(75),
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_response_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(25),
            tunnel_idle_timeout: DEFAULT_TUNNEL_IDLE_TIMEOUT,
            access_log: true,
            park_after: DEFAULT_PARK_AFTER,
        }
    }
}

/// Errors that stop the proxy from starting.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A listener could not be bound.
    #[error("failed to listen on {address}: {source}")]
    Bind {
        /// The address from the configuration.
        address: SocketAddr,
        /// The socket error, such as `AddrInUse`.
        #[source]
        source: std::io::Error,
    },
    /// A worker thread or its runtime could not be created.
    #[error("failed to start proxy worker {index}: {source}")]
    Worker {
        /// Index of the worker thread.
        index: usize,
        /// The error from the operating system.
        #[source]
        source: std::io::Error,
    },
    /// The self-signed default certificate could not be generated.
    #[error("failed to generate the default certificate: {0}")]
    Certificate(#[source] rcgen::Error),
    /// The generated private key is not usable by rustls.
    #[error("failed to load the default certificate's private key: {0}")]
    PrivateKey(#[source] rustls::Error),
    /// The TLS configuration could not be built.
    #[error("failed to build the TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
}

/// The running data plane.
pub struct Proxy {
    http_addr: SocketAddr,
    https_addr: SocketAddr,
    workers: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Binds every listener (clear error naming the address if taken) and starts the workers.
    ///
    /// The proxy serves `live` until `shutdown` is cancelled; see [`Proxy::join`].
    pub fn start(
        config: ProxyConfig,
        live: Arc<Live>,
        default_certificate: Arc<CertifiedKey>,
        shutdown: CancellationToken,
    ) -> Result<Proxy, ProxyError> {
        let worker_count = config.worker_threads.max(1);
        let http_listeners = listener::bind_group(config.http_listen, worker_count)?;
        let https_listeners = listener::bind_group(config.https_listen, worker_count)?;
        let http_addr = listener::local_addr(&http_listeners[0], config.http_listen)?;
        let https_addr = listener::local_addr(&https_listeners[0], config.https_listen)?;
        let mut config = config;
        if config.http_public_port == 0 {
            config.http_public_port = http_addr.port();
        }
        if config.https_public_port == 0 {
            config.https_public_port = https_addr.port();
        }

        // Workers watch a child token, so a failed start can stop them without cancelling
        // the caller's token; cancelling the caller's token still stops them.
        let workers_shutdown = shutdown.child_token();
        let shared = Arc::new(worker::Shared::new(
            config,
            live,
            default_certificate,
            workers_shutdown.clone(),
        )?);

        let (ready_sender, ready) = std::sync::mpsc::channel();
        let mut workers = Vec::with_capacity(worker_count);
        let mut failure = None;
        let listener_pairs = http_listeners.into_iter().zip(https_listeners);
        for (index, (http, https)) in listener_pairs.enumerate() {
            let shared = shared.clone();
            let ready_sender = ready_sender.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("gangway-proxy-{index}"))
                .spawn(move || worker::run(index, shared, http, https, ready_sender));
            match spawned {
                Ok(handle) => workers.push(handle),
                Err(source) => {
                    failure = Some(ProxyError::Worker { index, source });
                    break;
                }
            }
        }
        drop(ready_sender);
        for _ in 0..workers.len() {
            // A worker that exits without reporting has dropped its sender, so `recv` fails
            // instead of blocking forever.
            match ready.recv() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    failure.get_or_insert(error);
                }
                Err(_) => {
                    failure.get_or_insert(ProxyError::Worker {
                        index: 0,
                        source: std::io::Error::other("worker thread exited before it was ready"),
                    });
                }
            }
        }
        if let Some(error) = failure {
            workers_shutdown.cancel();
            for handle in workers {
                let _ = handle.join();
            }
            return Err(error);
        }

        tracing::info!(
            http = %http_addr,
            https = %https_addr,
            workers = worker_count,
            "proxy listening"
        );
        Ok(Proxy {
            http_addr,
            https_addr,
            workers,
        })
    }

    /// Returns the bound address of the HTTP listener, with the actual port when port 0 was
    /// configured.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Returns the bound address of the HTTPS listener, with the actual port when port 0 was
    /// configured.
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    /// After `shutdown` is cancelled: stop accepting, let in-flight requests finish until
    /// `shutdown_timeout`, then return. Blocking; call from a plain thread or spawn_blocking.
    pub fn join(self) {
        for handle in self.workers {
            if handle.join().is_err() {
                tracing::error!("proxy worker thread panicked");
            }
        }
        tracing::info!("proxy stopped");
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;

    #[test]
    fn config_defaults() {
        let config = ProxyConfig::default();

        assert_eq!(config.http_listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(config.https_listen, "0.0.0.0:8443".parse().unwrap());
        assert!(config.worker_threads >= 1);
        assert_eq!(config.http_public_port, 80);
        assert_eq!(config.https_public_port, 443);
        assert_eq!(config.client_header_timeout, Duration::from_secs(60));
        assert_eq!(config.idle_timeout, Duration::from_secs(75));
        assert_eq!(config.upstream_connect_timeout, Duration::from_secs(5));
        assert_eq!(config.upstream_response_timeout, Duration::from_secs(60));
        assert_eq!(config.shutdown_timeout, Duration::from_secs(25));
        assert_eq!(config.tunnel_idle_timeout, Duration::from_secs(3600));
        assert!(config.access_log);
    }

    #[test]
    fn start_names_taken_address() {
        let live = Arc::new(Live::new(Arc::new(crate::metrics::Metrics::new())));
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let config = ProxyConfig {
            http_listen: address,
            https_listen: "127.0.0.1:0".parse().unwrap(),
            worker_threads: 1,
            ..ProxyConfig::default()
        };

        let result = Proxy::start(
            config,
            live,
            generate_default_certificate().unwrap(),
            CancellationToken::new(),
        );

        let Err(error) = result else {
            panic!("start succeeded on a taken address");
        };
        assert!(error.to_string().contains(&address.to_string()), "{error}");
    }
}
