//! One worker thread: a current-thread runtime with its own listeners, downstream
//! connections and upstream pool. Every task of a connection runs on its worker's thread.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderValue;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::LocalSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::body::ResponseBody;
use super::counters::{CounterCache, GaugeCount};
use super::failure::Failure;
use super::handler;
use super::headers;
use super::log::{FailureLog, RequestLog};
use super::park::{self, ParkSignal, ParkableStream, Parked, ParkingLot};
use super::pool::UpstreamPool;
use super::tls::{CertificateResolver, DownstreamTls, UpstreamTls};
use super::{ProxyConfig, ProxyError};
use crate::live::Live;

/// Pause after a failed `accept`, such as EMFILE, so the loop does not spin while the
/// process is out of file descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Time a connection closed for idleness has to finish closing before it is dropped. hyper's
/// graceful shutdown closes an idle HTTP/1.1 connection at once, but waits for a request head
/// that has only partly arrived, which is the slow client the timeout is there to cut off.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How often a connection checks whether it is idle when the idle timeout is zero, which
/// turns keep-alive off.
const KEEP_ALIVE_OFF_CHECK: Duration = Duration::from_secs(1);

/// Shortest wait between idle checks of a connection with a request in flight.
const MIN_IDLE_RECHECK: Duration = Duration::from_millis(100);

/// Read-only state that every worker shares.
pub(super) struct Shared {
    pub(super) config: ProxyConfig,
    pub(super) live: Arc<Live>,
    tls: DownstreamTls,
    upstream_tls: UpstreamTls,
    shutdown: CancellationToken,
}

impl Shared {
    pub(super) fn new(
        config: ProxyConfig,
        live: Arc<Live>,
        default_certificate: Arc<CertifiedKey>,
        shutdown: CancellationToken,
    ) -> Result<Self, ProxyError> {
        let resolver = CertificateResolver::new(live.clone(), default_certificate);
        Ok(Self {
            config,
            live,
            tls: DownstreamTls::new(resolver)?,
            upstream_tls: UpstreamTls::new()?,
            shutdown,
        })
    }
}

/// Runs worker `index` on the calling thread until shutdown and the drain that follows are
/// over. Builds the runtime first and reports on `ready` whether that worked, so that
/// [`super::Proxy::start`] can return the error. The runtime is built and dropped on this
/// thread, because tokio panics when a runtime is dropped inside another one.
pub(super) fn run(
    index: usize,
    shared: Arc<Shared>,
    http: std::net::TcpListener,
    https: std::net::TcpListener,
    ready: std::sync::mpsc::Sender<Result<(), ProxyError>>,
) {
    let worker_error = |source| ProxyError::Worker { index, source };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(worker_error);
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    let listeners = {
        let _entered = runtime.enter();
        TcpListener::from_std(http)
            .and_then(|http| Ok((http, TcpListener::from_std(https)?)))
            .map_err(worker_error)
    };
    let (http, https) = match listeners {
        Ok(listeners) => listeners,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    drop(ready);

    let local = LocalSet::new();
    local.block_on(&runtime, serve(shared, http, https));
    // Dropping the runtime cancels what is left: tunnels and connections that outlived the
    // drain, and idle upstream connections.
}

/// Runs a future on the worker's thread; hyper uses it for HTTP/2 streams, so they may hold
/// the worker's `Rc`s.
#[derive(Clone, Copy, Debug)]
pub(super) struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, future: F) {
        tokio::task::spawn_local(future);
    }
}

/// The listener a connection arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ListenerScheme {
    /// Plain HTTP/1.1 and h2c.
    Http,
    /// TLS.
    Https,
}

/// State of one worker thread that request handling reads.
pub(super) struct WorkerContext {
    pub(super) shared: Arc<Shared>,
    pub(super) pool: Rc<UpstreamPool>,
    pub(super) counters: CounterCache,
    failure_log: FailureLog,
    tasks: TaskTracker,
    /// For plain connections that start with HTTP/1, which can be parked.
    http1: http1::Builder,
    /// The wait of idle plain HTTP/1.1 connections; `None` if its epoll instance could not
    /// be created, and then they wait in their own tasks.
    lot: Option<ParkingLot>,
    /// For TLS connections and plain ones that start with the HTTP/2 preface.
    builder: auto::Builder<LocalExec>,
}

impl WorkerContext {
    /// Logs a failed request, rate-limited per worker.
    pub(super) fn log_failure(&self, failure: &Failure, log: &RequestLog<'_>) {
        self.failure_log.write(failure, log);
    }

    /// Logs a connect failure that is retried on another endpoint, rate-limited per worker.
    pub(super) fn log_retry(&self, failure: &Failure, upstream: SocketAddr, retry: SocketAddr) {
        self.failure_log.write_retry(failure, upstream, retry);
    }

    /// Runs an upgraded connection's tunnel; shutdown waits for it like for a connection.
    pub(super) fn spawn_tunnel(&self, tunnel: impl Future<Output = ()> + 'static) {
        self.tasks.spawn_local(tunnel);
    }
}

/// One downstream connection, shared by its requests.
pub(super) struct Connection {
    pub(super) scheme: ListenerScheme,
    /// The client's address.
    pub(super) client: SocketAddr,
    /// The client's IP address as a header value, formatted once for all its requests.
    pub(super) client_ip: HeaderValue,
    in_flight: Cell<usize>,
    requests: Cell<u64>,
    /// Shared with the stream of a connection that can be parked (plain HTTP/1.1).
    park: Option<Arc<ParkSignal>>,
    /// When the connection opened, or when its last request ended.
    last_active: Cell<Instant>,
}

impl Connection {
    fn new(scheme: ListenerScheme, client: SocketAddr) -> Self {
        let park = match scheme {
            ListenerScheme::Http => Some(Arc::default()),
            ListenerScheme::Https => None,
        };
        Self {
            scheme,
            client,
            client_ip: headers::ip_header(client.ip()),
            in_flight: Cell::new(0),
            requests: Cell::new(0),
            park,
            last_active: Cell::new(Instant::now()),
        }
    }

    /// Rebuilds a plain connection that was parked after a request that ended at
    /// `last_active`.
    fn resumed(client: SocketAddr, last_active: Instant) -> Self {
        let connection = Self::new(ListenerScheme::Http, client);
        connection.requests.set(1);
        connection.last_active.set(last_active);
        connection
    }

    /// Counts a request as in flight until the returned guard is dropped.
    pub(super) fn begin_request(self: &Rc<Self>) -> InFlight {
        self.in_flight.set(self.in_flight.get() + 1);
        self.requests.set(self.requests.get() + 1);
        if let Some(park) = &self.park {
            park.input_consumed();
        }
        InFlight(self.clone())
    }

    /// Returns when the connection may be parked: `park_after` after its last request
    /// ended, or `None` while a request is in flight or part of a request head may be
    /// buffered.
    fn park_deadline(&self, park: &ParkSignal, config: &ProxyConfig) -> Option<Instant> {
        if self.in_flight.get() > 0 || park.input_pending() {
            return None;
        }
        Some(self.last_active.get() + config.park_after)
    }

    /// Returns when the connection counts as idle for too long, or `None` while a request is
    /// in flight. Before the first request the shorter client header timeout applies, so a
    /// client that connects and sends nothing is closed like a slow header.
    fn idle_deadline(&self, config: &ProxyConfig) -> Option<Instant> {
        if self.in_flight.get() > 0 {
            return None;
        }
        let limit = if self.requests.get() == 0 {
            // An idle timeout of zero turns keep-alive off and leaves the first request alone.
            match config.idle_timeout {
                Duration::ZERO => config.client_header_timeout,
                idle => config.client_header_timeout.min(idle),
            }
        } else {
            config.idle_timeout
        };
        Some(self.last_active.get() + limit)
    }
}

/// Keeps a downstream connection busy while a request or its response body is alive.
pub(super) struct InFlight(Rc<Connection>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let connection = &self.0;
        let in_flight = connection.in_flight.get() - 1;
        connection.in_flight.set(in_flight);
        connection.last_active.set(Instant::now());
        // Bytes read during the request were its body; any later ones set the flag again.
        // NOTE: bytes of a pipelined request head read together with this request are
        // forgotten here too. If that head is still unfinished a `park_after` later, parking
        // makes hyper fail and close the connection.
        if let (0, Some(park)) = (in_flight, &connection.park) {
            park.input_consumed();
        }
    }
}

/// Builds the server for TLS connections and for plain ones that start with the HTTP/2
/// preface.
///
/// hyper's `half_close` stays off: a client that shuts down its write side while its request
/// is in flight is taken as gone, and the request is cancelled, as nginx does under its
/// default `proxy_ignore_client_abort off`. With half-closes allowed, a client that vanished
/// during a quiet streaming response would hold both connections until the upstream wrote.
///
/// Without `keep_alive`, each HTTP/1.1 response carries `Connection: close`.
fn server_builder(keep_alive: bool) -> auto::Builder<LocalExec> {
    let mut builder = auto::Builder::new(LocalExec);
    builder
        .http1()
        .timer(TokioTimer::new())
        // `drive` enforces the header and idle timeouts itself. hyper's header timer would
        // run from the end of each response, so it would also close idle keep-alive
        // connections at the header timeout, and it costs a timer per request.
        .header_read_timeout(None)
        .keep_alive(keep_alive);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Builds an HTTP/1.1 server with the settings of [`server_builder`], for connections
/// served without it.
fn http1_builder(keep_alive: bool) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(keep_alive);
    builder
}

async fn serve(shared: Arc<Shared>, http: TcpListener, https: TcpListener) {
    let config = &shared.config;
    let pool = Rc::new(UpstreamPool::new(
        config.upstream_connect_timeout,
        shared.upstream_tls.clone(),
        config.park_after,
        shared.live.metrics().upstream_connections_parked.clone(),
    ));
    // A zero idle timeout turns keep-alive off.
    let keep_alive = !config.idle_timeout.is_zero();
    let worker = Rc::new(WorkerContext {
        shared: shared.clone(),
        pool: pool.clone(),
        counters: CounterCache::new(shared.live.metrics().clone()),
        failure_log: FailureLog::new(),
        tasks: TaskTracker::new(),
        http1: http1_builder(keep_alive),
        builder: server_builder(keep_alive),
        lot: ParkingLot::new(shared.live.metrics().downstream_connections_parked.clone())
            .inspect_err(|error| {
                tracing::warn!(error = %error, "idle connections cannot be parked outside their tasks");
            })
            .ok(),
    });
    let shutdown = shared.shutdown.clone();
    let lot = tokio::task::spawn_local(run_parking_lot(worker.clone()));

    let sweeper = tokio::task::spawn_local(housekeeping(worker.clone()));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = http.accept() => match accepted {
                Ok((stream, client)) => {
                    let connection = Connection::new(ListenerScheme::Http, client);
                    worker.tasks.spawn_local(serve_tcp(worker.clone(), stream, connection));
                }
                Err(error) => accept_failed(&http, error).await,
            },
            accepted = https.accept() => match accepted {
                Ok((stream, client)) => {
                    let connection = Connection::new(ListenerScheme::Https, client);
                    worker.tasks.spawn_local(serve_tls(worker.clone(), stream, connection));
                }
                Err(error) => accept_failed(&https, error).await,
            },
        }
    }

    // Closing the sockets makes the kernel refuse new connections from here on.
    drop(http);
    drop(https);
    sweeper.abort();
    // The lot closes its connections once shutdown is signalled.
    let _ = lot.await;
    worker.tasks.close();
    let drained = tokio::time::timeout(config.shutdown_timeout, worker.tasks.wait()).await;
    if drained.is_err() {
        tracing::warn!(
            connections = worker.tasks.len(),
            timeout = ?config.shutdown_timeout,
            "shutdown timeout reached, closing remaining connections"
        );
    }
}

async fn accept_failed(listener: &TcpListener, error: std::io::Error) {
    let address = listener.local_addr().ok();
    tracing::warn!(address = ?address, error = %error, "failed to accept a connection");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}

/// Runs once per `park_after`: parks the pool's idle upstream connections. When the worker
/// counted no request since the previous run, it also empties the worker's allocator cache,
/// so that what a burst of requests freed can leave the resident set (crate::alloc).
async fn housekeeping(worker: Rc<WorkerContext>) {
    let park_after = worker.shared.config.park_after;
    let shutdown = worker.shared.shutdown.clone();
    // Idle connections are parked up to one tick late. `interval` panics on a zero period.
    let mut interval = tokio::time::interval(park_after.max(Duration::from_millis(10)));
    let mut served = worker.counters.served();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {
                worker.pool.sweep();
                let now_served = worker.counters.served();
                if now_served == served {
                    crate::alloc::release_thread_cache();
                }
                served = now_served;
            }
        }
    }
}

async fn serve_tcp(worker: Rc<WorkerContext>, stream: TcpStream, connection: Connection) {
    let _ = stream.set_nodelay(true);
    let connection = Rc::new(connection);
    let Some(signal) = connection.park.clone() else {
        return Box::pin(serve_connection(worker, stream, connection)).await;
    };
    let first_input = Box::pin(wait_for_input(
        &worker,
        &connection,
        park::starts_with_http1(&stream),
    ));
    match first_input.await {
        Some(true) => serve_parkable(worker, stream, connection, signal).await,
        Some(false) => Box::pin(serve_connection(worker, stream, connection)).await,
        None => {}
    }
}

/// Serves a plain HTTP/1.1 connection that has input, parking it whenever it is idle.
async fn serve_parkable(
    worker: Rc<WorkerContext>,
    mut stream: TcpStream,
    connection: Rc<Connection>,
    signal: Arc<ParkSignal>,
) {
    loop {
        let io = ParkableStream::new(stream, signal.clone());
        let served = Box::pin(serve_http1(worker.clone(), io, connection.clone(), &signal));
        match served.await {
            Some(io) => stream = io.into_inner(),
            None => return,
        }
        if let Some(lot) = &worker.lot {
            let last_active = connection.last_active.get();
            match lot.park(stream, connection.client, last_active) {
                Ok(()) => return,
                Err(returned) => stream = returned,
            }
        }
        // Without the lot, the connection waits in this task.
        if wait_for_input(&worker, &connection, stream.readable())
            .await
            .is_none()
        {
            return;
        }
    }
}

/// Runs the worker's parking lot: resumes parked connections that have input, closes those
/// idle for `idle_timeout`, and closes all of them at shutdown.
async fn run_parking_lot(worker: Rc<WorkerContext>) {
    let Some(lot) = &worker.lot else {
        return;
    };
    let config = &worker.shared.config;
    let mut events = Vec::with_capacity(256);
    // Idle connections are closed up to one tick late. `interval` panics on a zero period.
    let mut tick = tokio::time::interval(config.park_after.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = worker.shared.shutdown.cancelled() => {
                lot.close_all();
                return;
            }
            ready = lot.ready(&mut events) => {
                for parked in ready {
                    resume(&worker, parked);
                }
            }
            _ = tick.tick() => lot.expire(config.idle_timeout),
        }
    }
}

/// Gives a parked connection with input back to tokio, in a task of its own.
fn resume(worker: &Rc<WorkerContext>, parked: Parked) {
    // The lot keeps no address. A socket whose peer has reset the connection has none
    // either, and the connection closes here without reading bytes that came before the
    // reset. A connection that was never parked would still pass those on.
    let client = match parked.socket.peer_addr() {
        Ok(client) => client,
        Err(error) => {
            tracing::debug!(error = %error, "cannot resume a parked connection");
            return;
        }
    };
    let stream = match TcpStream::from_std(parked.socket) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::debug!(client = %client, error = %error, "cannot resume a parked connection");
            return;
        }
    };
    let connection = Rc::new(Connection::resumed(client, parked.last_active));
    let signal = connection
        .park
        .clone()
        .expect("a plain connection has a park signal");
    worker
        .tasks
        .spawn_local(serve_parkable(worker.clone(), stream, connection, signal));
}

/// Waits for `input`, which ends when a parked connection has bytes to read or is closed
/// by its peer. Returns `None` when the connection should close instead: it stayed idle
/// too long, or shutdown began.
async fn wait_for_input<T>(
    worker: &WorkerContext,
    connection: &Connection,
    input: impl Future<Output = T>,
) -> Option<T> {
    let config = &worker.shared.config;
    let deadline = connection
        .idle_deadline(config)
        .unwrap_or_else(|| Instant::now() + config.idle_timeout);
    let _parked = GaugeCount::new(&worker.shared.live.metrics().downstream_connections_parked);
    tokio::select! {
        input = input => Some(input),
        () = tokio::time::sleep_until(deadline) => {
            tracing::debug!(client = %connection.client, "closing idle downstream connection");
            None
        }
        () = worker.shared.shutdown.cancelled() => None,
    }
}

/// Serves HTTP/1.1 on a plain connection until it closes or is parked; returns the stream
/// when it is parked.
async fn serve_http1(
    worker: Rc<WorkerContext>,
    io: ParkableStream,
    connection: Rc<Connection>,
    signal: &ParkSignal,
) -> Option<ParkableStream> {
    let served = worker
        .http1
        .serve_connection(TokioIo::new(io), request_service(&worker, &connection))
        .with_upgrades();
    let mut served = served;
    let graceful_shutdown = |served: Pin<&mut http1::UpgradeableConnection<_, _>>| {
        served.graceful_shutdown();
    };
    let parked = drive(
        &worker,
        &connection,
        Pin::new(&mut served),
        graceful_shutdown,
        Some(signal),
    )
    .await;
    if parked != Ended::Parked {
        return None;
    }
    let parts = served.into_parts()?;
    // hyper only ends cleanly at the end of the stream with an empty buffer.
    if !parts.read_buf.is_empty() {
        tracing::debug!(client = %connection.client, "not parking a connection with buffered input");
        return None;
    }
    Some(parts.io.into_inner())
}

// TODO: park idle TLS HTTP/1.1 connections too. rustls keeps its state, but hyper's buffers
// could go; the wait for input must then also look at plaintext rustls already decrypted.
async fn serve_tls(worker: Rc<WorkerContext>, stream: TcpStream, connection: Connection) {
    let _ = stream.set_nodelay(true);
    let config = &worker.shared.config;
    let handshake = worker.shared.tls.accept(stream);
    let tls = tokio::select! {
        () = worker.shared.shutdown.cancelled() => return,
        result = tokio::time::timeout(config.client_header_timeout, handshake) => result,
    };
    match tls {
        Ok(Ok(stream)) => serve_connection(worker, stream, Rc::new(connection)).await,
        Ok(Err(error)) => {
            tracing::debug!(client = %connection.client, error = %error, "TLS handshake failed");
        }
        Err(_) => {
            tracing::debug!(client = %connection.client, "TLS handshake timed out");
        }
    }
}

/// Serves HTTP on one connection until it closes, it stays idle too long, or shutdown
/// makes it finish its in-flight requests.
async fn serve_connection<I>(worker: Rc<WorkerContext>, io: I, connection: Rc<Connection>)
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let served = worker
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), request_service(&worker, &connection));
    let graceful_shutdown = |served: Pin<&mut auto::UpgradeableConnection<_, _, _>>| {
        served.graceful_shutdown();
    };
    drive(
        &worker,
        &connection,
        std::pin::pin!(served),
        graceful_shutdown,
        None,
    )
    .await;
}

/// The future of one request: [`handler::handle`], boxed.
type HandleFuture = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>>>>;

/// Builds the hyper service of a connection, which passes every request to
/// [`handler::handle`].
fn request_service(
    worker: &Rc<WorkerContext>,
    connection: &Rc<Connection>,
) -> impl Service<
    Request<Incoming>,
    Response = Response<ResponseBody>,
    Error = Infallible,
    Future = HandleFuture,
> + 'static {
    let worker = worker.clone();
    let connection = connection.clone();
    // Boxed per request: hyper keeps a slot of the future's size for the whole connection,
    // and an idle keep-alive connection should not hold 4 KiB for it.
    service_fn(move |request| -> HandleFuture {
        Box::pin(handler::handle(worker.clone(), connection.clone(), request))
    })
}

/// The outcome of [`drive`].
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The connection closed, or failed.
    Closed,
    /// hyper stopped at the end of stream that parking reported; the socket is open.
    Parked,
}

/// Runs `served` until it ends, enforcing the idle and header timeouts and the shutdown
/// drain; `graceful_shutdown` is hyper's call of that name on `served`. With a `park`
/// signal, it also parks the connection after `park_after` idle.
async fn drive<C, E>(
    worker: &WorkerContext,
    connection: &Connection,
    mut served: Pin<&mut C>,
    graceful_shutdown: impl Fn(Pin<&mut C>),
    park: Option<&ParkSignal>,
) -> Ended
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let config = &worker.shared.config;
    let shutdown = &worker.shared.shutdown;
    let mut draining = false;
    // Set when the connection was closed for idleness: the time to drop it if it is still open.
    let mut drop_at: Option<Instant> = None;
    loop {
        // While a request is in flight there is no idle deadline; the check runs again after
        // `idle_timeout`, by which time the request may have ended, but no more often than
        // every `MIN_IDLE_RECHECK`, so that a long request does not wake the loop at every
        // turn of the runtime. With keep-alive off it runs every second, so that an HTTP/2
        // connection closes within a second of its last stream.
        let keep_alive_off = config.idle_timeout.is_zero();
        let recheck = Instant::now()
            + if keep_alive_off {
                KEEP_ALIVE_OFF_CHECK
            } else {
                config.idle_timeout.max(MIN_IDLE_RECHECK)
            };
        let idle_deadline = match connection.idle_deadline(config) {
            Some(deadline) if keep_alive_off => deadline.min(recheck),
            Some(deadline) => deadline,
            None => recheck,
        };
        // With a request in flight, the parking check runs again after `park_after`.
        let park_deadline = park.map(|park| {
            connection
                .park_deadline(park, config)
                .unwrap_or_else(|| Instant::now() + config.park_after)
        });
        let deadline = park_deadline.map_or(idle_deadline, |park| park.min(idle_deadline));
        tokio::select! {
            result = served.as_mut() => {
                if let Err(error) = &result {
                    tracing::debug!(
                        client = %connection.client,
                        error = %error,
                        "downstream connection ended with an error"
                    );
                }
                let parked = park.is_some_and(ParkSignal::is_parking) && result.is_ok();
                return if parked { Ended::Parked } else { Ended::Closed };
            }
            () = shutdown.cancelled(), if !draining => {
                graceful_shutdown(served.as_mut());
                draining = true;
            }
            () = tokio::time::sleep_until(deadline), if !draining => {
                let now = Instant::now();
                let expired = connection
                    .idle_deadline(config)
                    .is_some_and(|deadline| deadline <= now);
                if expired {
                    tracing::debug!(
                        client = %connection.client,
                        "closing idle downstream connection"
                    );
                    graceful_shutdown(served.as_mut());
                    draining = true;
                    drop_at = Some(now + IDLE_CLOSE_GRACE);
                } else if let Some(park) = park
                    && connection.park_deadline(park, config).is_some_and(|deadline| deadline <= now)
                {
                    // The next poll of `served` reads the end of the stream.
                    park.start_parking();
                }
            }
            () = tokio::time::sleep_until(drop_at.unwrap_or(deadline)), if drop_at.is_some() => {
                // A request head that completed during the grace is served to its end.
                if connection.idle_deadline(config).is_some() {
                    tracing::debug!(
                        client = %connection.client,
                        "dropping downstream connection with an unfinished request head"
                    );
                    return Ended::Closed;
                }
                drop_at = None;
            }
        }
    }
}
