//! The upstream connection pool of one worker thread.
//!
//! The pool belongs to one thread, so it takes no lock. It is keyed by endpoint address and
//! protocol and lives outside the snapshot, so connections survive a snapshot swap. HTTP/1.1
//! connections wait idle in a LIFO stack per endpoint: the most recently used one is the
//! likeliest to still be open. HTTP/2 (h2c, or TLS with ALPN h2) multiplexes every request to
//! an endpoint over one connection.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{LocalBoxFuture, Shared};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::gauge::Gauge;
use rustls::pki_types::ServerName;
use tokio::io::ReadBuf;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::body::RequestBody;
use super::counters::{GaugeCount, UpstreamCounters};
use super::failure::{Failure, FailureKind};
use super::tls::{UpstreamTls, negotiated_h2};
use super::worker::LocalExec;
use crate::snapshot::UpstreamProtocol;

/// Idle HTTP/1.1 connections kept per endpoint, parked ones included; the oldest is closed
/// beyond this.
const MAX_IDLE_PER_ENDPOINT: usize = 128;

/// Time an idle upstream connection is kept, ingress-nginx's `upstream-keepalive-timeout`.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Time a pooled HTTP/1.1 connection gets to finish its previous exchange before the pool
/// gives up on it and tries the next one.
const READY_TIMEOUT: Duration = Duration::from_millis(100);

/// Sends requests to one endpoint over HTTP/1.1.
pub(super) type Http1Sender = http1::SendRequest<RequestBody>;
/// Sends requests to one endpoint over HTTP/2.
pub(super) type Http2Sender = http2::SendRequest<RequestBody>;

/// Identifies the connections that can serve a request: same address, same protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct PoolKey {
    /// Endpoint address.
    pub(super) address: SocketAddr,
    /// Protocol spoken to the endpoint.
    pub(super) protocol: UpstreamProtocol,
}

/// A connection ready to carry one request.
pub(super) enum UpstreamSender {
    /// An HTTP/1.1 connection, lent to this request alone.
    Http1(PooledSender),
    /// A handle to a multiplexed HTTP/2 connection.
    Http2(Http2Sender),
}

/// A connection from [`UpstreamPool::checkout`].
pub(super) struct Checkout {
    /// The connection.
    pub(super) sender: UpstreamSender,
    /// The connection came from the pool instead of being opened for this request. The
    /// upstream may close such a connection at any moment, when its keep-alive timeout fires,
    /// so a request sent on it can fail through no fault of the request.
    pub(super) reused: bool,
}

/// An HTTP/1.1 connection lent to one request.
pub(super) struct PooledSender {
    pool: Rc<UpstreamPool>,
    key: PoolKey,
    /// The connection's request sender.
    pub(super) sender: Http1Sender,
    /// Present when the connection can be parked: plain TCP only.
    park: Option<ParkRequest>,
}

impl PooledSender {
    /// Returns the connection to its pool, once its response body has ended.
    pub(super) fn release(self) {
        let pool = self.pool.clone();
        pool.release(
            self.key,
            IdleSender {
                sender: self.sender,
                since: Instant::now(),
                park: self.park,
            },
        );
    }
}

/// A flag shared by the pool and a plain HTTP/1.1 connection's task. To park the connection,
/// the pool sets it to the time the connection became idle and drops the sender. hyper then
/// hands the socket back to the task, which parks it because the flag is set.
type ParkRequest = Rc<Cell<Option<Instant>>>;

/// The result of one HTTP/2 connect attempt, shared by every request that waits for it.
/// `Err(None)` means the endpoint negotiated HTTP/1.1 this time; that connection went to the
/// idle stack and the waiters take the HTTP/1.1 path.
type Http2Outcome = Result<Http2Sender, Option<Failure>>;

#[derive(Default)]
struct EndpointConnections {
    /// Idle HTTP/1.1 connections, most recently used at the back.
    idle: VecDeque<IdleSender>,
    /// Parked HTTP/1.1 connections, most recently used at the back.
    parked: VecDeque<ParkedSocket>,
    /// The shared HTTP/2 connection.
    http2: Option<Http2Sender>,
    /// The connect attempt in progress for `http2`, so that a burst of requests opens one
    /// connection instead of one each.
    http2_connecting: Option<Shared<LocalBoxFuture<'static, Http2Outcome>>>,
    /// The endpoint spoke HTTP/2 last time: always for h2c, by ALPN for TLS.
    speaks_h2: bool,
}

struct IdleSender {
    sender: Http1Sender,
    since: Instant,
    park: Option<ParkRequest>,
}

/// A parked plain HTTP/1.1 connection: its socket, still registered with tokio, so that the
/// sweep detects an upstream close without a system call.
struct ParkedSocket {
    stream: TcpStream,
    /// When its last request ended.
    since: Instant,
    /// Counts it in `gangway_upstream_connections_parked` while it lives.
    _gauge: GaugeCount,
}

impl ParkedSocket {
    /// Returns true when the socket may carry a request: not idle for longer than the
    /// timeout, and not closed by the endpoint.
    fn is_reusable(&self) -> bool {
        self.since.elapsed() <= UPSTREAM_IDLE_TIMEOUT && is_open(&self.stream)
    }
}

impl EndpointConnections {
    /// Closes the oldest idle connection, parked ones first, when the endpoint is at
    /// `MAX_IDLE_PER_ENDPOINT`, so that one more fits.
    fn make_room(&mut self) {
        if self.idle.len() + self.parked.len() >= MAX_IDLE_PER_ENDPOINT
            && self.parked.pop_front().is_none()
        {
            self.idle.pop_front();
        }
    }
}

/// The connections of one worker thread to every endpoint it has talked to.
pub(super) struct UpstreamPool {
    /// Keyed by addresses from the snapshot, never by client input, so foldhash's fixed seed
    /// is enough. SipHash of a `SocketAddr` showed in the proxy's profile.
    endpoints: RefCell<HashMap<PoolKey, EndpointConnections, foldhash::fast::FixedState>>,
    connect_timeout: Duration,
    tls: UpstreamTls,
    /// Idle time after which a plain HTTP/1.1 connection is parked.
    park_after: Duration,
    /// `gangway_upstream_connections_parked`.
    parked_gauge: Gauge,
}

impl UpstreamPool {
    /// Creates an empty pool.
    pub(super) fn new(
        connect_timeout: Duration,
        tls: UpstreamTls,
        park_after: Duration,
        parked_gauge: Gauge,
    ) -> Self {
        Self {
            endpoints: RefCell::new(HashMap::default()),
            connect_timeout,
            tls,
            park_after,
            parked_gauge,
        }
    }

    /// Returns a connection for one request to `key`: a pooled one when there is one that is
    /// still open, otherwise a new one. Counts the outcome in `counters`.
    pub(super) async fn checkout(
        self: &Rc<Self>,
        key: PoolKey,
        counters: &UpstreamCounters,
    ) -> Result<Checkout, Failure> {
        let reused = |sender| Checkout {
            sender,
            reused: true,
        };
        if let Some(sender) = self.checkout_idle(key).await {
            counters.reused.inc();
            return Ok(reused(sender));
        }
        if self.prefers_http2(key) {
            let (outcome, opened) = self.connect_http2_shared(key).await;
            match outcome {
                Ok(sender) => {
                    if opened {
                        counters.opened.inc();
                    } else {
                        counters.reused.inc();
                    }
                    return Ok(Checkout {
                        sender: UpstreamSender::Http2(sender),
                        reused: !opened,
                    });
                }
                Err(Some(failure)) => return Err(failure),
                Err(None) => {
                    if let Some(sender) = self.checkout_idle(key).await {
                        counters.reused.inc();
                        return Ok(reused(sender));
                    }
                }
            }
        }
        let sender = self.connect_new(key, counters).await?;
        Ok(Checkout {
            sender,
            reused: false,
        })
    }

    /// Opens a new connection to `key` even when pooled ones are idle, for a request that
    /// failed or could not be sent on a pooled one. Counts it in `counters`.
    pub(super) async fn connect_new(
        self: &Rc<Self>,
        key: PoolKey,
        counters: &UpstreamCounters,
    ) -> Result<UpstreamSender, Failure> {
        let sender = self.connect(key).await?;
        counters.opened.inc();
        Ok(sender)
    }

    /// Returns true when requests to `key` should wait for one shared HTTP/2 connection.
    fn prefers_http2(&self, key: PoolKey) -> bool {
        key.protocol == UpstreamProtocol::H2c
            || self
                .endpoints
                .borrow()
                .get(&key)
                .is_some_and(|entry| entry.speaks_h2)
    }

    /// Joins the HTTP/2 connect attempt in progress for `key`, or starts one. Returns the
    /// outcome and whether this call started the attempt.
    async fn connect_http2_shared(self: &Rc<Self>, key: PoolKey) -> (Http2Outcome, bool) {
        let (attempt, opened) = {
            let mut endpoints = self.endpoints.borrow_mut();
            let entry = endpoints.entry(key).or_default();
            match &entry.http2_connecting {
                Some(attempt) => (attempt.clone(), false),
                None => {
                    let pool = self.clone();
                    let attempt = async move { pool.connect_http2(key).await }
                        .boxed_local()
                        .shared();
                    entry.http2_connecting = Some(attempt.clone());
                    (attempt, true)
                }
            }
        };
        (attempt.await, opened)
    }

    /// Opens one HTTP/2 connection and clears the attempt marker, so later requests use the
    /// stored connection or start a new attempt.
    async fn connect_http2(self: Rc<Self>, key: PoolKey) -> Http2Outcome {
        let outcome = match self.connect(key).await {
            Ok(UpstreamSender::Http2(sender)) => Ok(sender),
            Ok(UpstreamSender::Http1(pooled)) => {
                pooled.release();
                Err(None)
            }
            Err(failure) => Err(Some(failure)),
        };
        let mut endpoints = self.endpoints.borrow_mut();
        let entry = endpoints.entry(key).or_default();
        entry.http2_connecting = None;
        outcome
    }

    /// Opens a new HTTP/1.1 connection to `key`, never pooled: it carries one upgrade
    /// request, and hyper hands the socket over after a 101 response.
    pub(super) async fn connect_for_upgrade(
        &self,
        key: PoolKey,
        counters: &UpstreamCounters,
    ) -> Result<Http1Sender, Failure> {
        let connect = async {
            let tcp = connect_tcp(key.address).await?;
            match key.protocol {
                // Upgrades need HTTP/1.1; an h2c endpoint gets it too, which servers that
                // accept h2c usually speak as well.
                UpstreamProtocol::Http1 | UpstreamProtocol::H2c => {
                    handshake_http1(TokioIo::new(tcp), true).await
                }
                UpstreamProtocol::Tls => {
                    let tls = self.handshake_tls(tcp, key, &self.tls.http1_only).await?;
                    handshake_http1(TokioIo::new(tls), true).await
                }
            }
        };
        let sender = self.within_connect_timeout(connect).await?;
        counters.opened.inc();
        Ok(sender)
    }

    /// Opens a new connection for an ordinary request, HTTP/1.1 or HTTP/2 by protocol and ALPN.
    async fn connect(self: &Rc<Self>, key: PoolKey) -> Result<UpstreamSender, Failure> {
        // Boxed: the TLS and HTTP/2 handshakes make this future about 8 KiB, and without the
        // box every request's future would carry that space, though most reuse a connection.
        let connect = Box::pin(async {
            let tcp = connect_tcp(key.address).await?;
            match key.protocol {
                UpstreamProtocol::Http1 => Ok(self.handshake_parkable(key, tcp).await?),
                UpstreamProtocol::H2c => {
                    let sender = handshake_http2(TokioIo::new(tcp)).await?;
                    Ok(self.share_http2(key, sender))
                }
                UpstreamProtocol::Tls => {
                    let tls = self.handshake_tls(tcp, key, &self.tls.any_version).await?;
                    if negotiated_h2(tls.get_ref().1.alpn_protocol()) {
                        let sender = handshake_http2(TokioIo::new(tls)).await?;
                        Ok(self.share_http2(key, sender))
                    } else {
                        self.forget_http2(key);
                        let sender = handshake_http1(TokioIo::new(tls), false).await?;
                        Ok(self.lend(key, sender, None))
                    }
                }
            }
        });
        self.within_connect_timeout(connect).await
    }

    /// Runs `connect` for at most the connect timeout.
    async fn within_connect_timeout<T>(
        &self,
        connect: impl Future<Output = Result<T, Failure>>,
    ) -> Result<T, Failure> {
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| Failure::new(FailureKind::ConnectTimeout))?
    }

    async fn handshake_tls(
        &self,
        tcp: TcpStream,
        key: PoolKey,
        config: &Arc<rustls::ClientConfig>,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Failure> {
        // An IP address as server name sends no SNI, as ingress-nginx's default
        // `proxy_ssl_server_name off`; the certificate is not verified either (see UpstreamTls).
        let server_name = ServerName::IpAddress(key.address.ip().into());
        TlsConnector::from(config.clone())
            .connect(server_name, tcp)
            .await
            .map_err(|error| Failure::with_source(FailureKind::HandshakeFailed, error))
    }

    fn lend(
        self: &Rc<Self>,
        key: PoolKey,
        sender: Http1Sender,
        park: Option<ParkRequest>,
    ) -> UpstreamSender {
        UpstreamSender::Http1(PooledSender {
            pool: self.clone(),
            key,
            sender,
            park,
        })
    }

    /// Starts an HTTP/1.1 connection on a plain TCP stream, new or parked. Its task parks the
    /// stream once the pool sets the returned sender's `ParkRequest`.
    async fn handshake_parkable(
        self: &Rc<Self>,
        key: PoolKey,
        tcp: TcpStream,
    ) -> Result<UpstreamSender, Failure> {
        let (sender, connection) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|error| Failure::with_source(FailureKind::HandshakeFailed, error))?;
        let park = ParkRequest::default();
        let pool = Rc::downgrade(self);
        tokio::task::spawn_local(run_parkable(connection, pool, key, park.clone()));
        Ok(self.lend(key, sender, Some(park)))
    }

    /// Takes a parked socket to `key` for an inline exchange, or opens a new one. Returns
    /// the socket and whether it was reused. Counts the outcome in `counters`.
    pub(super) async fn checkout_socket(
        &self,
        key: PoolKey,
        counters: &UpstreamCounters,
    ) -> Result<(TcpStream, bool), Failure> {
        if let Some(stream) = self.take_parked(key) {
            counters.reused.inc();
            return Ok((stream, true));
        }
        Ok((self.connect_socket(key, counters).await?, false))
    }

    /// Opens a new socket to `key` for an inline exchange. Counts it in `counters`.
    pub(super) async fn connect_socket(
        &self,
        key: PoolKey,
        counters: &UpstreamCounters,
    ) -> Result<TcpStream, Failure> {
        let tcp = self
            .within_connect_timeout(connect_tcp(key.address))
            .await?;
        counters.opened.inc();
        Ok(tcp)
    }

    /// Takes back the socket of an inline exchange that ended cleanly.
    pub(super) fn return_socket(&self, key: PoolKey, stream: TcpStream) {
        self.park(key, stream, Instant::now());
    }

    /// Keeps an idle socket: one whose hyper connection the pool ended to park it, or one
    /// whose inline exchange ended cleanly.
    fn park(&self, key: PoolKey, stream: TcpStream, since: Instant) {
        let mut endpoints = self.endpoints.borrow_mut();
        let entry = endpoints.entry(key).or_default();
        entry.make_room();
        entry.parked.push_back(ParkedSocket {
            stream,
            since,
            _gauge: GaugeCount::new(&self.parked_gauge),
        });
    }

    /// Keeps `sender` as the endpoint's shared HTTP/2 connection unless an open one is
    /// already stored.
    fn share_http2(&self, key: PoolKey, sender: Http2Sender) -> UpstreamSender {
        let mut endpoints = self.endpoints.borrow_mut();
        let entry = endpoints.entry(key).or_default();
        entry.speaks_h2 = true;
        if entry
            .http2
            .as_ref()
            .is_none_or(|existing| existing.is_closed())
        {
            entry.http2 = Some(sender.clone());
        }
        UpstreamSender::Http2(sender)
    }

    fn forget_http2(&self, key: PoolKey) {
        if let Some(entry) = self.endpoints.borrow_mut().get_mut(&key) {
            entry.speaks_h2 = false;
        }
    }

    async fn checkout_idle(self: &Rc<Self>, key: PoolKey) -> Option<UpstreamSender> {
        if let Some(sender) = self.checkout_active(key).await {
            return Some(sender);
        }
        while let Some(stream) = self.take_parked(key) {
            // A failure here is hyper's, not the endpoint's. The socket is dropped and the
            // caller opens a new connection.
            if let Ok(sender) = self.handshake_parkable(key, stream).await {
                return Some(sender);
            }
        }
        None
    }

    /// Takes the most recently parked socket to `key` that is still reusable, closing the
    /// expired or closed ones above it.
    fn take_parked(&self, key: PoolKey) -> Option<TcpStream> {
        let mut endpoints = self.endpoints.borrow_mut();
        let parked = &mut endpoints.get_mut(&key)?.parked;
        while let Some(socket) = parked.pop_back() {
            if socket.is_reusable() {
                return Some(socket.stream);
            }
        }
        None
    }

    /// Takes an idle connection that still has its hyper state, or the endpoint's HTTP/2
    /// connection.
    async fn checkout_active(self: &Rc<Self>, key: PoolKey) -> Option<UpstreamSender> {
        loop {
            // The borrow ends before any await: another task of this thread may use the pool
            // while this one waits.
            let candidate = {
                let mut endpoints = self.endpoints.borrow_mut();
                let entry = endpoints.get_mut(&key)?;
                if let Some(http2) = &entry.http2 {
                    if !http2.is_closed() && http2.is_ready() {
                        return Some(UpstreamSender::Http2(http2.clone()));
                    }
                    entry.http2 = None;
                }
                entry.idle.pop_back()?
            };
            if candidate.sender.is_closed() || candidate.since.elapsed() > UPSTREAM_IDLE_TIMEOUT {
                continue;
            }
            let mut sender = candidate.sender;
            if sender.is_ready() {
                return Some(self.lend(key, sender, candidate.park));
            }
            // The previous response ended but its connection task has not run since; give it
            // a moment to mark the connection ready.
            if let Ok(Ok(())) = tokio::time::timeout(READY_TIMEOUT, sender.ready()).await {
                return Some(self.lend(key, sender, candidate.park));
            }
        }
    }

    fn release(&self, key: PoolKey, idle: IdleSender) {
        if idle.sender.is_closed() {
            return;
        }
        let mut endpoints = self.endpoints.borrow_mut();
        let entry = endpoints.entry(key).or_default();
        entry.make_room();
        entry.idle.push_back(idle);
    }

    /// Closes idle connections that expired or that the endpoint closed, parks the plain
    /// HTTP/1.1 ones idle for `park_after`, and removes endpoints with nothing left. The
    /// worker calls this every `park_after`.
    pub(super) fn sweep(&self) {
        let mut endpoints = self.endpoints.borrow_mut();
        for entry in endpoints.values_mut() {
            entry.idle.retain(|idle| {
                let idle_for = idle.since.elapsed();
                if idle.sender.is_closed() || idle_for > UPSTREAM_IDLE_TIMEOUT {
                    return false;
                }
                match &idle.park {
                    // Dropping the sender ends the connection's task, which parks the socket.
                    Some(park) if idle_for >= self.park_after => {
                        park.set(Some(idle.since));
                        false
                    }
                    _ => true,
                }
            });
            entry.parked.retain(ParkedSocket::is_reusable);
            if entry
                .http2
                .as_ref()
                .is_some_and(|sender| sender.is_closed())
            {
                entry.http2 = None;
            }
        }
        endpoints.retain(|_, entry| {
            !entry.idle.is_empty()
                || !entry.parked.is_empty()
                || entry.http2.is_some()
                || entry.http2_connecting.is_some()
        });
    }
}

/// Runs a plain HTTP/1.1 connection until the pool drops its sender or it fails. Parks the
/// socket if the pool set `park` and hyper left no unread byte.
async fn run_parkable(
    connection: http1::Connection<TokioIo<TcpStream>, RequestBody>,
    pool: Weak<UpstreamPool>,
    key: PoolKey,
    park: ParkRequest,
) {
    match connection.without_shutdown().await {
        Ok(parts) => {
            if let (Some(since), Some(pool)) = (park.get(), pool.upgrade())
                && parts.read_buf.is_empty()
            {
                pool.park(key, parts.io.into_inner(), since);
            }
        }
        Err(error) => {
            tracing::debug!(upstream = %key.address, error = %error, "upstream HTTP/1.1 connection ended with an error");
        }
    }
}

/// Returns false when the peer of a parked socket closed it or sent bytes no request asked
/// for. Reads tokio's readiness first, so an idle open socket costs no system call.
fn is_open(stream: &TcpStream) -> bool {
    let mut byte = [0_u8; 1];
    let mut buffer = ReadBuf::new(&mut byte);
    let mut context = Context::from_waker(Waker::noop());
    stream.poll_peek(&mut context, &mut buffer).is_pending()
}

async fn connect_tcp(address: SocketAddr) -> Result<TcpStream, Failure> {
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|error| Failure::with_source(FailureKind::ConnectRefused, error))?;
    // Request heads are small writes that should not wait for Nagle's algorithm.
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

async fn handshake_http1<T>(io: TokioIo<T>, upgrades: bool) -> Result<Http1Sender, Failure>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http1::handshake(io)
        .await
        .map_err(|error| Failure::with_source(FailureKind::HandshakeFailed, error))?;
    tokio::task::spawn_local(async move {
        let result = if upgrades {
            connection.with_upgrades().await
        } else {
            connection.await
        };
        if let Err(error) = result {
            tracing::debug!(error = %error, "upstream HTTP/1.1 connection ended with an error");
        }
    });
    Ok(sender)
}

async fn handshake_http2<T>(io: TokioIo<T>) -> Result<Http2Sender, Failure>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = http2::Builder::new(LocalExec)
        .timer(TokioTimer::new())
        .handshake(io)
        .await
        .map_err(|error| Failure::with_source(FailureKind::HandshakeFailed, error))?;
    tokio::task::spawn_local(async move {
        if let Err(error) = connection.await {
            tracing::debug!(error = %error, "upstream HTTP/2 connection ended with an error");
        }
    });
    Ok(sender)
}
