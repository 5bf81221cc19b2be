//! One request: route lookup against the live snapshot, redirect, fixed response, or
//! forwarding to an endpoint with one retry on connect failure and one on a reused
//! connection that closed.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body as _, Incoming};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::body::{RequestBody, ResponseBody};
use super::counters::UpstreamCounters;
use super::failure::{Failure, FailureKind, failure_response};
use super::headers::{self, ForwardedFor, X_GANGWAY_ERROR, X_REQUEST_ID};
use super::inline::{self, ExchangeFailure, SocketHome};
use super::log::RequestLog;
use super::pool::{PoolKey, UpstreamSender};
use super::worker::{Connection, ListenerScheme, WorkerContext};
use crate::snapshot::{Backend, Route, RouteAction, RouteLookup, UpstreamProtocol};

/// Routing facts about a request that the request log and metrics record.
#[derive(Default)]
pub(super) struct Exchange<'a> {
    /// The route that matched.
    pub(super) route: Option<&'a Route>,
    /// The backend the route forwards to.
    pub(super) backend: Option<&'a Backend>,
    /// The endpoint that got the request, the last one tried after a retry.
    pub(super) upstream: Option<SocketAddr>,
}

/// Serves one downstream request. Every failure becomes a response, so the service
/// future cannot fail.
pub(super) async fn handle(
    worker: Rc<WorkerContext>,
    connection: Rc<Connection>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let started = std::time::Instant::now();
    let in_flight = connection.begin_request();
    // The one snapshot load of this request: routes, backends and endpoints all come from it.
    let snapshot = worker.shared.live.snapshot();

    let (parts, body) = request.into_parts();
    let host = request_host(&parts).map(str::to_owned);
    let request_id = headers::request_id(&parts.headers);
    let method = parts.method.clone();
    // The request moves upstream, so the log keeps its own copy; cloning a URI copies no text.
    let uri = parts.uri.clone();
    let downstream_version = parts.version;
    // With keep-alive off (a zero idle timeout) hyper closes every connection after its
    // response, so the response must not claim otherwise.
    let http10_keep_alive = downstream_version == Version::HTTP_10
        && !worker.shared.config.idle_timeout.is_zero()
        && headers::connection_lists(&parts.headers, "keep-alive");

    let mut record = RequestRecord {
        worker: &worker,
        client: connection.client,
        method: &method,
        host: host.as_deref(),
        uri: &uri,
        request_id: &request_id,
        generation: snapshot.generation,
        started,
        exchange: Exchange::default(),
        written: false,
    };
    let context = RequestContext {
        worker: &worker,
        connection: &connection,
        host: host.as_deref(),
        uri: &uri,
        version: downstream_version,
        request_id: &request_id,
        generation: snapshot.generation,
    };
    let outcome = match snapshot.lookup_route(host.as_deref(), uri.path()) {
        RouteLookup::NotFound => Err(Failure::new(FailureKind::NoRoute)),
        RouteLookup::Matched { route, .. } => {
            record.exchange.route = Some(route);
            serve_route(&context, route, parts, body, &mut record.exchange).await
        }
    };

    let mut response = match outcome {
        Ok(response) => response,
        Err(failure) => {
            worker.log_failure(&failure, &record.log());
            build_failure_response(&failure, downstream_version)
        }
    };
    response
        .headers_mut()
        .insert(X_REQUEST_ID, request_id.clone());
    if http10_keep_alive
        && !response.headers().contains_key(header::CONNECTION)
        && response.body().size_hint().exact().is_some()
    {
        // hyper closes an HTTP/1.0 connection unless the response carries
        // `Connection: keep-alive`, and the upstream's `Connection` header was removed as
        // hop-by-hop. A body of unknown length ends with the connection in HTTP/1.0.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    }
    response.body_mut().set_in_flight(in_flight);
    record.write(response.status());
    Ok(response)
}

/// The access log line and request metrics of one request, written once: by the handler
/// with its response's status, or on drop with 499, nginx's code for a request the client
/// closed. A drop before the response happens when the client closed its connection or
/// reset its stream, or when shutdown cut the request.
/// NOTE: a panic in the handler would also be logged as 499 while it unwinds.
struct RequestRecord<'a> {
    worker: &'a WorkerContext,
    client: SocketAddr,
    method: &'a Method,
    host: Option<&'a str>,
    uri: &'a Uri,
    request_id: &'a HeaderValue,
    generation: u64,
    started: std::time::Instant,
    exchange: Exchange<'a>,
    /// Set once the record is written.
    written: bool,
}

impl RequestRecord<'_> {
    /// Returns the fields that every log line about the request carries.
    fn log(&self) -> RequestLog<'_> {
        RequestLog {
            client: self.client,
            method: self.method,
            host: self.host,
            path: self.uri.path(),
            request_id: self.request_id,
            exchange: &self.exchange,
        }
    }

    /// Counts the request with `status` and writes its access log line.
    fn write(&mut self, status: StatusCode) {
        self.written = true;
        let elapsed = self.started.elapsed();
        self.worker.counters.count_request(
            self.generation,
            self.exchange.route,
            self.exchange.backend,
            status,
            elapsed,
        );
        if self.worker.shared.config.access_log {
            self.log().write_access(status, elapsed);
        }
    }
}

impl Drop for RequestRecord<'_> {
    fn drop(&mut self) {
        if !self.written {
            let status = StatusCode::from_u16(CLIENT_CLOSED_REQUEST).expect("499 is a status code");
            self.write(status);
        }
    }
}

/// nginx's status code for a request whose client closed the connection before the response.
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// The parts of a request that the steps after routing read.
struct RequestContext<'a> {
    worker: &'a WorkerContext,
    connection: &'a Connection,
    /// Host as the client sent it, port included.
    host: Option<&'a str>,
    /// The request URI as received.
    uri: &'a Uri,
    /// HTTP version of the downstream request.
    version: Version,
    request_id: &'a HeaderValue,
    /// Generation of the snapshot the request was routed by.
    generation: u64,
}

/// Returns the host a request names: the authority of an absolute-form URI or of HTTP/2's
/// `:authority`, else the `Host` header. RFC 9112 section 3.2.2 makes the URI's authority
/// win when both are present.
fn request_host(parts: &Parts) -> Option<&str> {
    match parts.uri.authority() {
        Some(authority) => Some(without_userinfo(authority)),
        None => parts
            .headers
            .get(header::HOST)
            .and_then(|value| value.to_str().ok()),
    }
}

fn without_userinfo(authority: &Authority) -> &str {
    let text = authority.as_str();
    text.rsplit_once('@').map_or(text, |(_, host)| host)
}

async fn serve_route<'a>(
    context: &RequestContext<'_>,
    route: &'a Route,
    parts: Parts,
    body: Incoming,
    exchange: &mut Exchange<'a>,
) -> Result<Response<ResponseBody>, Failure> {
    if parts.method == Method::CONNECT {
        // TODO: forward HTTP/2 extended CONNECT (RFC 8441 WebSocket) to upstreams that accept it.
        return Err(Failure::new(FailureKind::MethodNotAllowed));
    }
    if route.https_redirect && context.connection.scheme == ListenerScheme::Http {
        return redirect_to_https(context);
    }
    match &route.action {
        RouteAction::Respond { status, body } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let mut response = text_response(status, Bytes::copy_from_slice(body.as_bytes()));
            // The compiler sets a fixed response only for a backend it could not resolve.
            response.headers_mut().insert(
                X_GANGWAY_ERROR,
                HeaderValue::from_static("unresolved-backend"),
            );
            Ok(response)
        }
        RouteAction::Forward(backend) => {
            exchange.backend = Some(backend);
            forward(context, backend, parts, body, exchange).await
        }
    }
}

/// Responds to a plain-HTTP request with a 308 to the same host and path over HTTPS. 308 keeps
/// the method and body, unlike 301.
fn redirect_to_https(context: &RequestContext<'_>) -> Result<Response<ResponseBody>, Failure> {
    let host = context
        .host
        .map(host_without_port)
        .filter(|host| !host.is_empty())
        .ok_or(Failure::new(FailureKind::InvalidHost))?;
    let port = context.worker.shared.config.https_public_port;
    let path = context
        .uri
        .path_and_query()
        .map_or("/", PathAndQuery::as_str);
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    let location = HeaderValue::try_from(location)
        .map_err(|error| Failure::with_source(FailureKind::InvalidHost, error))?;
    let mut response = text_response(StatusCode::PERMANENT_REDIRECT, Bytes::new());
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn text_response(status: StatusCode, body: Bytes) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Builds the response for a failure from the one table in [`failure_response`].
fn build_failure_response(failure: &Failure, version: Version) -> Response<ResponseBody> {
    let mapped = failure_response(failure.kind);
    let mut response = text_response(mapped.status, Bytes::from_static(mapped.body.as_bytes()));
    response.headers_mut().insert(
        X_GANGWAY_ERROR,
        HeaderValue::from_static(failure.kind.code()),
    );
    // HTTP/2 has no Connection header; each stream fails on its own there.
    if mapped.close && version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Forwards a request to one of the backend's endpoints and returns its response head; the
/// body streams afterwards.
async fn forward<'a>(
    context: &RequestContext<'_>,
    backend: &'a Backend,
    mut parts: Parts,
    body: Incoming,
    exchange: &mut Exchange<'a>,
) -> Result<Response<ResponseBody>, Failure> {
    let upgrading =
        parts.version == Version::HTTP_11 && headers::is_upgrade_request(&parts.headers);
    let downstream_upgrade = if upgrading {
        parts.extensions.remove::<OnUpgrade>()
    } else {
        None
    };
    // Read before hop-by-hop removal drops `Transfer-Encoding`.
    let bodiless = !upgrading && has_no_body(&parts, &body);
    let replayable = bodiless && parts.method.is_idempotent();
    prepare_upstream_headers(context, &mut parts, upgrading);

    let counters = context
        .worker
        .counters
        .upstream(context.generation, backend);
    if bodiless && backend.protocol == UpstreamProtocol::Http1 {
        return forward_inline(context, backend, parts, exchange, &counters, replayable).await;
    }
    let progress = Rc::new(Cell::new(Instant::now()));
    let request = Request::from_parts(parts, RequestBody::new(body, progress.clone()));
    let pool = &context.worker.pool;

    if let Some(downstream_upgrade) = downstream_upgrade {
        let upgrade = Upgrade {
            counters: &counters,
            progress: &progress,
            downstream: downstream_upgrade,
        };
        // Boxed, so that the rare upgrade's state does not widen every request's future.
        return Box::pin(forward_upgrade(
            context, backend, exchange, request, upgrade,
        ))
        .await;
    }

    let (checkout, address) = connect_with_retry(context, backend, exchange, |key| {
        let counters = &counters;
        async move { pool.checkout(key, counters).await }
    })
    .await?;
    exchange.upstream = Some(address);
    let key = PoolKey {
        address,
        protocol: backend.protocol,
    };
    let protocol = backend.protocol;

    // The copy allocates the header map's tables but no header text, because hyper parses
    // header values and the URI as shared slices of its read buffer. Only a replayable
    // request on a pooled HTTP/1.1 connection pays for it, because a request on a new
    // connection is never replayed.
    // TODO: replay on HTTP/2 too when the upstream refuses a stream (`REFUSED_STREAM`, or a
    // GOAWAY below its id), because RFC 9113 section 8.7 guarantees such a stream went
    // unprocessed.
    let copy =
        (replayable && checkout.reused && matches!(checkout.sender, UpstreamSender::Http1(_)))
            .then(|| copy_head(&request, &progress));
    let sent = send(
        context,
        &progress,
        checkout.sender,
        address,
        protocol,
        request,
    )
    .await;
    let retry = match sent {
        Ok(Sent::Response(response)) => return Ok(finish_response(context, response)),
        // The pooled connection closed before the request went out, so the request is intact.
        Ok(Sent::NotSent(request)) => request,
        // The upstream closed a reused connection that the request was already written to,
        // most likely because its keep-alive timeout fired at the same time. The request has
        // no body and an idempotent method, so sending it again is safe even if the upstream
        // processed it. nginx's `ngx_http_upstream_next` also gives back the try after an
        // error on a cached keep-alive connection.
        Err(failure) if failure.kind == FailureKind::ConnectionReset => match copy {
            Some(copy) => {
                tracing::debug!(
                    kind = failure.kind.code(),
                    upstream = %address,
                    error = %failure,
                    "reused upstream connection closed before the response head, sending again"
                );
                copy
            }
            None => return Err(failure),
        },
        Err(failure) => return Err(failure),
    };

    // The retry goes on a new connection, because other pooled connections to the endpoint
    // are as old as the one that failed and may close as well. A failure there is final.
    let sender = pool.connect_new(key, &counters).await?;
    progress.set(Instant::now());
    match send(context, &progress, sender, address, protocol, retry).await? {
        Sent::Response(response) => Ok(finish_response(context, response)),
        Sent::NotSent(_) => Err(Failure::new(FailureKind::ConnectionReset)),
    }
}

/// The state of an upgrade request that travels beside the request: upstream counters, body
/// progress and the downstream connection.
struct Upgrade<'a> {
    counters: &'a UpstreamCounters,
    progress: &'a Cell<Instant>,
    /// The downstream connection, handed over after a 101 response.
    downstream: OnUpgrade,
}

/// Forwards an upgrade request, such as a WebSocket handshake, on a new connection that is
/// never pooled.
async fn forward_upgrade<'a>(
    context: &RequestContext<'_>,
    backend: &'a Backend,
    exchange: &mut Exchange<'a>,
    request: Request<RequestBody>,
    upgrade: Upgrade<'_>,
) -> Result<Response<ResponseBody>, Failure> {
    let pool = &context.worker.pool;
    let (sender, address) = connect_with_retry(context, backend, exchange, |key| async move {
        pool.connect_for_upgrade(key, upgrade.counters).await
    })
    .await?;
    exchange.upstream = Some(address);
    let request = origin_form(request, context.host);
    let mut sender = sender;
    let response = await_head(context, upgrade.progress, sender.send_request(request))
        .await?
        .map_err(Failure::from_send_error)?;
    Ok(finish_upgrade(context, response, upgrade.downstream))
}

/// Returns true when a request has no body. Only such a request may be sent again after a
/// reused connection failed, because a downstream body cannot be read twice. Its method must
/// also be idempotent (RFC 9110 section 9.2.2), so that two deliveries have the effect of one.
fn has_no_body(parts: &Parts, body: &Incoming) -> bool {
    let headers = &parts.headers;
    let no_body_framing = !headers.contains_key(header::TRANSFER_ENCODING)
        && headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .all(|value| value == "0");
    // Over HTTP/2 a request without `Content-Length` may still carry DATA frames. hyper
    // reports the end of the stream when the HEADERS frame ended it.
    no_body_framing && body.is_end_stream()
}

/// Forwards a request without a body to a plain HTTP/1.1 endpoint on an inline exchange
/// (src/proxy/inline.rs). It retries as [`forward`] does. A connect failure moves to another
/// endpoint. A replayable request goes once more, on a new connection, when a reused one
/// closed before any byte of the response.
async fn forward_inline<'a>(
    context: &RequestContext<'_>,
    backend: &'a Backend,
    mut parts: Parts,
    exchange: &mut Exchange<'a>,
    counters: &UpstreamCounters,
    replayable: bool,
) -> Result<Response<ResponseBody>, Failure> {
    let pool = &context.worker.pool;
    let ((stream, reused), address) =
        connect_with_retry(context, backend, exchange, |key| async move {
            pool.checkout_socket(key, counters).await
        })
        .await?;
    exchange.upstream = Some(address);
    let key = PoolKey {
        address,
        protocol: backend.protocol,
    };

    set_host(&mut parts.headers, context.host);
    let target = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let head = inline::encode_head(&parts.method, target, &parts.headers);
    let head_request = parts.method == Method::HEAD;
    let progress = Cell::new(Instant::now());
    let first = await_head(
        context,
        &progress,
        inline::exchange(stream, &head, head_request),
    )
    .await?;
    let exchanged = match first {
        Ok(exchanged) => exchanged,
        Err(failed) if reused && replayable && failed.received_nothing => {
            let failure = failed.into_failure();
            tracing::debug!(
                kind = failure.kind.code(),
                upstream = %address,
                error = %failure,
                "reused upstream connection closed before the response head, sending again"
            );
            // A new connection, because other pooled ones are as old as the one that failed.
            let stream = pool.connect_socket(key, counters).await?;
            progress.set(Instant::now());
            await_head(
                context,
                &progress,
                inline::exchange(stream, &head, head_request),
            )
            .await?
            .map_err(ExchangeFailure::into_failure)?
        }
        Err(failed) => return Err(failed.into_failure()),
    };

    let mut body = exchanged.body;
    body.set_home(SocketHome {
        pool: pool.clone(),
        key,
    });
    let mut response = Response::new(ResponseBody::inline(body));
    *response.status_mut() = exchanged.status;
    if let Some(reason) = exchanged.reason {
        response.extensions_mut().insert(reason);
    }
    *response.version_mut() = exchanged.version;
    *response.headers_mut() = exchanged.headers;
    Ok(finish_response(context, response))
}

/// Copies the head of a bodiless request, to send it again if its first attempt fails.
/// Extensions are left out, because the hyper client reads only the header-case and
/// extended CONNECT ones, and the downstream server here is configured to set neither.
fn copy_head(request: &Request<RequestBody>, progress: &Rc<Cell<Instant>>) -> Request<RequestBody> {
    let mut copy = Request::new(RequestBody::empty(progress.clone()));
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// Sets the headers the upstream receives: hop-by-hop removed, `X-Forwarded-*` and the request id.
fn prepare_upstream_headers(context: &RequestContext<'_>, parts: &mut Parts, upgrading: bool) {
    headers::remove_hop_by_hop(&mut parts.headers, upgrading);
    let connection = context.connection;
    let config = &context.worker.shared.config;
    let (proto, public_port) = match connection.scheme {
        ListenerScheme::Http => ("http", config.http_public_port),
        ListenerScheme::Https => ("https", config.https_public_port),
    };
    let forwarded = ForwardedFor {
        client_ip: &connection.client_ip,
        proto,
        host: context.host,
        public_port,
    };
    // Room for the six headers added below, so the map grows at most once.
    parts.headers.reserve(6);
    headers::set_forwarded(&mut parts.headers, &forwarded);
    parts
        .headers
        .insert(X_REQUEST_ID, context.request_id.clone());
}

/// Picks an endpoint and runs `connect` on it. A connect failure is retried once on another
/// endpoint when the backend has more than one, as nginx's `proxy_next_upstream error timeout`
/// does for connections that sent nothing yet.
async fn connect_with_retry<'a, T, F, Fut>(
    context: &RequestContext<'_>,
    backend: &'a Backend,
    exchange: &mut Exchange<'a>,
    mut connect: F,
) -> Result<(T, SocketAddr), Failure>
where
    F: FnMut(PoolKey) -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let first = backend
        .next_endpoint()
        .ok_or(Failure::new(FailureKind::NoEndpoint))?
        .address;
    exchange.upstream = Some(first);

    let key = |address| PoolKey {
        address,
        protocol: backend.protocol,
    };
    let failure = match connect(key(first)).await {
        Ok(connected) => return Ok((connected, first)),
        Err(failure) if is_connect_failure(failure.kind) => failure,
        Err(failure) => return Err(failure),
    };

    // Other requests move the shared round-robin position too, so the next pick may be the
    // same endpoint; a few more picks find another one.
    let second = (0..backend.endpoints.len())
        .filter_map(|_| backend.next_endpoint())
        .map(|endpoint| endpoint.address)
        .find(|address| *address != first);
    let Some(second) = second else {
        return Err(failure);
    };

    context.worker.log_retry(&failure, first, second);
    exchange.upstream = Some(second);
    let connected = connect(key(second)).await?;
    Ok((connected, second))
}

fn is_connect_failure(kind: FailureKind) -> bool {
    matches!(
        kind,
        FailureKind::ConnectRefused | FailureKind::ConnectTimeout | FailureKind::HandshakeFailed
    )
}

/// The outcome of sending a request on a connection.
enum Sent {
    /// The response head arrived; its body streams in the response.
    Response(Response<ResponseBody>),
    /// The connection closed before the request was written, so the request comes back
    /// unchanged.
    NotSent(Request<RequestBody>),
}

/// Sends `request` on `sender` and waits for the response head.
async fn send(
    context: &RequestContext<'_>,
    progress: &Cell<Instant>,
    sender: UpstreamSender,
    address: SocketAddr,
    protocol: UpstreamProtocol,
    request: Request<RequestBody>,
) -> Result<Sent, Failure> {
    let (result, pooled) = match sender {
        UpstreamSender::Http1(mut pooled) => {
            let sending = pooled
                .sender
                .try_send_request(origin_form(request, context.host));
            (await_head(context, progress, sending).await?, Some(pooled))
        }
        UpstreamSender::Http2(mut sender) => {
            let request = absolute_form(request, context.host, address, protocol);
            let sending = sender.try_send_request(request);
            (await_head(context, progress, sending).await?, None)
        }
    };
    match result {
        // Upgrade requests take `forward_upgrade`, so no request here asked to switch.
        Ok(response) if response.status() == StatusCode::SWITCHING_PROTOCOLS => Err(
            Failure::with_source(FailureKind::ProtocolError, UNREQUESTED_UPGRADE),
        ),
        Ok(response) => {
            let (head, body) = response.into_parts();
            let body = ResponseBody::upstream(body, pooled);
            Ok(Sent::Response(Response::from_parts(head, body)))
        }
        Err(mut error) => match error.take_message() {
            Some(request) => Ok(Sent::NotSent(request)),
            None => Err(Failure::from_send_error(error.into_error())),
        },
    }
}

/// The error of a 101 response to a request that did not ask to upgrade.
const UNREQUESTED_UPGRADE: &str =
    "101 Switching Protocols to a request that did not ask to upgrade";

/// Waits for `future`, the response head, for `upstream_response_timeout` after the request
/// body last moved. The wait restarts while a slow upload still flows, because most servers
/// respond only after the whole body.
async fn await_head<F: Future>(
    context: &RequestContext<'_>,
    progress: &Cell<Instant>,
    future: F,
) -> Result<F::Output, Failure> {
    let timeout = context.worker.shared.config.upstream_response_timeout;
    let mut future = std::pin::pin!(future);
    loop {
        let deadline = progress.get() + timeout;
        tokio::select! {
            output = &mut future => return Ok(output),
            () = tokio::time::sleep_until(deadline) => {
                if progress.get() + timeout <= Instant::now() {
                    return Err(Failure::new(FailureKind::ResponseTimeout));
                }
            }
        }
    }
}

/// Rewrites a request for an HTTP/1.1 upstream: origin-form URI and a `Host` header with the
/// host the client named.
fn origin_form(mut request: Request<RequestBody>, host: Option<&str>) -> Request<RequestBody> {
    let path = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *request.uri_mut() = Uri::from(path);
    *request.version_mut() = Version::HTTP_11;
    set_host(request.headers_mut(), host);
    request
}

/// Sets `Host` to the host the client named, unless it is already that.
fn set_host(headers: &mut http::HeaderMap, host: Option<&str>) {
    let Some(host) = host else { return };
    let same = headers
        .get(header::HOST)
        .is_some_and(|value| value.as_bytes() == host.as_bytes());
    if !same && let Ok(value) = HeaderValue::from_str(host) {
        headers.insert(header::HOST, value);
    }
}

/// Rewrites a request for an HTTP/2 upstream: the host moves into `:authority`, because
/// RFC 9113 section 8.3.1 forbids a `Host` header that differs from it.
fn absolute_form(
    mut request: Request<RequestBody>,
    host: Option<&str>,
    address: SocketAddr,
    protocol: UpstreamProtocol,
) -> Request<RequestBody> {
    let scheme = match protocol {
        UpstreamProtocol::Tls => Scheme::HTTPS,
        UpstreamProtocol::Http1 | UpstreamProtocol::H2c => Scheme::HTTP,
    };
    let authority = host
        .and_then(|host| Authority::try_from(host).ok())
        .or_else(|| Authority::try_from(address.to_string()).ok());
    let path = request
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(scheme);
    uri.authority = authority;
    uri.path_and_query = Some(path);
    if let Ok(uri) = Uri::from_parts(uri) {
        *request.uri_mut() = uri;
    }
    request.headers_mut().remove(header::HOST);
    *request.version_mut() = Version::HTTP_2;
    request
}

/// Prepares an upstream response for the client: hop-by-hop headers removed, version of the
/// downstream side.
fn finish_response(
    context: &RequestContext<'_>,
    mut response: Response<ResponseBody>,
) -> Response<ResponseBody> {
    headers::remove_hop_by_hop(response.headers_mut(), false);
    *response.version_mut() = context.version;
    response
}

/// Builds the response to an upgrade request. On 101 both sides' connections are joined
/// once hyper hands them over. Any other status is an ordinary response.
fn finish_upgrade(
    context: &RequestContext<'_>,
    mut response: Response<Incoming>,
    downstream_upgrade: OnUpgrade,
) -> Response<ResponseBody> {
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        let idle_timeout = context.worker.shared.config.tunnel_idle_timeout;
        let client = context.connection.client;
        context.worker.spawn_tunnel(tunnel(
            downstream_upgrade,
            upstream_upgrade,
            idle_timeout,
            client,
        ));
    }
    headers::remove_hop_by_hop(response.headers_mut(), switching);
    *response.version_mut() = context.version;
    let (head, body) = response.into_parts();
    Response::from_parts(head, ResponseBody::upstream(body, None))
}

/// Copies bytes both ways between the upgraded client and upstream connections until either
/// side closes, or until neither side has sent a byte for `idle_timeout`.
async fn tunnel(
    downstream: OnUpgrade,
    upstream: OnUpgrade,
    idle_timeout: std::time::Duration,
    client: SocketAddr,
) {
    let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
        Ok(upgraded) => upgraded,
        Err(error) => {
            tracing::debug!(%client, error = %error, "failed to take over upgraded connections");
            return;
        }
    };
    // Every byte that crosses the tunnel is read from one side first, so the reads alone
    // tell when it last carried traffic.
    let last_read = Rc::new(Cell::new(Instant::now()));
    let mut downstream = ReadClock::new(TokioIo::new(downstream), &last_read);
    let mut upstream = ReadClock::new(TokioIo::new(upstream), &last_read);
    let copy = tokio::io::copy_bidirectional(&mut downstream, &mut upstream);
    let mut copy = std::pin::pin!(copy);
    loop {
        let deadline = last_read.get() + idle_timeout;
        tokio::select! {
            result = copy.as_mut() => {
                match result {
                    Ok((sent, received)) => {
                        tracing::debug!(%client, sent, received, "upgraded connection closed");
                    }
                    Err(error) => {
                        tracing::debug!(%client, error = %error, "upgraded connection failed");
                    }
                }
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                if last_read.get() + idle_timeout <= Instant::now() {
                    tracing::debug!(
                        %client,
                        idle_timeout = ?idle_timeout,
                        "closing upgraded connection that carried no bytes"
                    );
                    return;
                }
            }
        }
    }
}

/// One side of a tunnel, which records the time of every read that returns bytes.
struct ReadClock<T> {
    io: T,
    last_read: Rc<Cell<Instant>>,
}

impl<T> ReadClock<T> {
    fn new(io: T, last_read: &Rc<Cell<Instant>>) -> Self {
        Self {
            io,
            last_read: last_read.clone(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadClock<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.last_read.set(Instant::now());
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadClock<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
