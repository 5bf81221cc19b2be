//! The floor under Gangway's HTTP/1.1 data plane: the least a proxy built from Gangway's
//! parts does per request. It is a benchmark instrument, not a proxy to deploy.
//!
//! It runs one current-thread tokio runtime, serves HTTP/1.1 with hyper's server and
//! allocates with jemalloc, as a Gangway worker does. It has no routing, no header
//! rewriting, no request id, no metrics, no logs and no timeouts: every request goes to the
//! one `--upstream`, with its path and headers as received. What Gangway spends per request
//! beyond this binary's figures is the cost of its features; what this binary spends is the
//! cost of the design. `--client` picks the upstream side of the design:
//!
//! - `hyper`: a stack of idle `hyper::client::conn::http1` connections, each driven by a task
//!   of its own, as Gangway's pool does. The request's task hands the request to the
//!   connection's task and waits for the response.
//! - `inline`: the request's own task writes the request head to a pooled socket and reads
//!   the response from it, with no task or channel between them, as Pingora does. It handles
//!   only what the benchmark sends, requests without a body and responses with a
//!   `Content-Length`; anything else gets a 502.
//!
//! `benchdriver.compare --floor` runs both beside nginx and Gangway builds.

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1 as client;
use hyper::server::conn::http1 as server;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::LocalSet;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Maximum number of response headers the inline client parses.
const MAX_HEADERS: usize = 64;
/// Maximum response body the inline client buffers, in bytes.
const MAX_BODY: usize = 16 << 20;

#[derive(Parser)]
#[command(about = "The floor under Gangway's HTTP/1.1 data plane, for benchmarks only")]
struct Args {
    /// Address to serve HTTP/1.1 on.
    #[arg(long)]
    listen: SocketAddr,
    /// Address of the one upstream every request goes to.
    #[arg(long)]
    upstream: SocketAddr,
    /// Client that forwards requests to the upstream.
    #[arg(long, value_enum)]
    client: ClientKind,
}

#[derive(Clone, Copy, ValueEnum)]
enum ClientKind {
    /// hyper's HTTP/1.1 client connections, each driven by its own task.
    Hyper,
    /// The request's task writes to and reads from the upstream socket itself.
    Inline,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    LocalSet::new().block_on(&runtime, serve(args))
}

async fn serve(args: Args) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    let pool = Rc::new(Pool {
        upstream: args.upstream,
        hyper: RefCell::default(),
        inline: RefCell::default(),
    });
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("floor-proxy: accept failed: {error}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let pool = pool.clone();
        let kind = args.client;
        let io = TokioIo::new(stream);
        let connection = server::Builder::new().keep_alive(true).to_owned();
        tokio::task::spawn_local(async move {
            // A client that goes away mid-request is no error of the floor's.
            let _ = match kind {
                ClientKind::Hyper => {
                    let service = service_fn(move |request| via_hyper(pool.clone(), request));
                    connection.serve_connection(io, service).await
                }
                ClientKind::Inline => {
                    let service = service_fn(move |request| via_inline(pool.clone(), request));
                    connection.serve_connection(io, service).await
                }
            };
        });
    }
}

/// Idle upstream connections of the one worker, most recently used last.
struct Pool {
    upstream: SocketAddr,
    hyper: RefCell<Vec<client::SendRequest<Incoming>>>,
    inline: RefCell<Vec<InlineConnection>>,
}

/// An upstream socket with the bytes read from it beyond the last response.
struct InlineConnection {
    stream: TcpStream,
    buffer: BytesMut,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn bad_gateway<B>(body: B, error: &dyn std::fmt::Display) -> Response<B> {
    eprintln!("floor-proxy: 502: {error}");
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

async fn connect(upstream: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn via_hyper(
    pool: Rc<Pool>,
    request: Request<Incoming>,
) -> Result<Response<Pooled>, Infallible> {
    match send_with_hyper(&pool, request).await {
        Ok(response) => Ok(response),
        Err(error) => Ok(bad_gateway(Pooled::empty(pool), &error)),
    }
}

async fn send_with_hyper(
    pool: &Rc<Pool>,
    mut request: Request<Incoming>,
) -> Result<Response<Pooled>, BoxError> {
    // A pooled connection whose task has seen the upstream close it is no longer ready.
    let idle = std::iter::from_fn(|| pool.hyper.borrow_mut().pop()).find(|s| s.is_ready());
    let mut sender = match idle {
        Some(sender) => sender,
        None => {
            let stream = connect(pool.upstream).await?;
            let (sender, connection) = client::handshake(TokioIo::new(stream)).await?;
            tokio::task::spawn_local(connection);
            sender
        }
    };
    // Origin form, as Gangway sends it.
    if let Some(path) = request.uri().path_and_query() {
        *request.uri_mut() = path.as_str().parse()?;
    }
    let response = sender.send_request(request).await?;
    Ok(response.map(|body| Pooled {
        body: Some(body),
        sender: Some(sender),
        pool: pool.clone(),
    }))
}

/// A response body that returns its connection to the pool when it ends, because an
/// HTTP/1.1 connection takes its next request only after the whole response.
struct Pooled {
    /// None for the floor's own 502 responses.
    body: Option<Incoming>,
    sender: Option<client::SendRequest<Incoming>>,
    pool: Rc<Pool>,
}

impl Pooled {
    fn empty(pool: Rc<Pool>) -> Self {
        Self {
            body: None,
            sender: None,
            pool,
        }
    }

    fn release(&mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.hyper.borrow_mut().push(sender);
        }
    }
}

impl Body for Pooled {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(&mut *body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || body.is_end_stream() {
            self.release();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or(SizeHint::with_exact(0), Body::size_hint)
    }
}

async fn via_inline(
    pool: Rc<Pool>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.body().size_hint().upper() != Some(0) {
        let error = "the inline client sends no request body";
        return Ok(bad_gateway(Full::default(), &error));
    }
    let head = request_head(&request);
    let idle = pool.inline.borrow_mut().pop();
    let outcome = match idle {
        // An upstream may close an idle connection as the request goes out. The request has
        // no body, so it is sent once more on a new connection.
        Some(connection) => match exchange(connection, &head).await {
            Ok(outcome) => Ok(outcome),
            Err(_) => exchange_new(&pool, &head).await,
        },
        None => exchange_new(&pool, &head).await,
    };
    Ok(match outcome {
        Ok((response, connection)) => {
            if let Some(connection) = connection {
                pool.inline.borrow_mut().push(connection);
            }
            response
        }
        Err(error) => bad_gateway(Full::default(), &error),
    })
}

async fn exchange_new(pool: &Pool, head: &[u8]) -> Result<Exchanged, BoxError> {
    let connection = InlineConnection {
        stream: connect(pool.upstream).await?,
        buffer: BytesMut::with_capacity(8192),
    };
    exchange(connection, head).await
}

/// Encodes the request line and headers as received, in origin form.
fn request_head(request: &Request<Incoming>) -> Vec<u8> {
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(request.method().as_str().as_bytes());
    head.push(b' ');
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers() {
        if name == header::CONNECTION {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// A response, and the connection when it may carry another request.
type Exchanged = (Response<Full<Bytes>>, Option<InlineConnection>);

/// Writes one request head and reads its response.
async fn exchange(mut connection: InlineConnection, head: &[u8]) -> Result<Exchanged, BoxError> {
    connection.stream.write_all(head).await?;
    let buffer = &mut connection.buffer;
    loop {
        if buffer.capacity() - buffer.len() < 1024 {
            buffer.reserve(8192);
        }
        if connection.stream.read_buf(buffer).await? == 0 {
            return Err("the upstream closed the connection before a whole response head".into());
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head_length) = parsed.parse(buffer)? else {
            continue;
        };
        let status = StatusCode::from_u16(parsed.code.unwrap_or(0))?;
        if status.is_informational() {
            return Err("the inline client does not forward 1xx responses".into());
        }
        // Header values stay slices of the read buffer, as in hyper: note where each one is,
        // then cut the head off the buffer.
        let start = buffer.as_ptr() as usize;
        let mut fields = Vec::with_capacity(parsed.headers.len());
        let mut content_length = None;
        let mut keep_alive = true;
        for field in parsed.headers.iter() {
            let name = HeaderName::from_bytes(field.name.as_bytes())?;
            if name == header::CONTENT_LENGTH {
                content_length = Some(std::str::from_utf8(field.value)?.parse::<usize>()?);
            }
            if name == header::CONNECTION {
                keep_alive = !field.value.eq_ignore_ascii_case(b"close");
                continue;
            }
            if name == header::TRANSFER_ENCODING {
                return Err("the inline client reads no chunked body".into());
            }
            let offset = field.value.as_ptr() as usize - start;
            fields.push((name, offset..offset + field.value.len()));
        }
        let head = buffer.split_to(head_length).freeze();
        let length = content_length.ok_or("the inline client needs a Content-Length")?;
        if length > MAX_BODY {
            return Err("the response body is larger than the inline client buffers".into());
        }
        while buffer.len() < length {
            buffer.reserve(length - buffer.len());
            if connection.stream.read_buf(buffer).await? == 0 {
                return Err("the upstream closed the connection inside a response body".into());
            }
        }
        let mut response = Response::new(Full::new(buffer.split_to(length).freeze()));
        *response.status_mut() = status;
        for (name, range) in fields {
            let value = HeaderValue::from_maybe_shared(head.slice(range))?;
            response.headers_mut().append(name, value);
        }
        return Ok((response, keep_alive.then_some(connection)));
    }
}
