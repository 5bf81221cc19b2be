//! HTTP/1.1 exchanges with plain-TCP endpoints, driven by the request's own task.
//!
//! hyper's client runs each HTTP/1.1 connection as a task of its own: a request crosses a
//! channel to that task, and the response head comes back on another, so both tasks wake
//! for every request. Here the request's task writes the request head to the socket and
//! parses the response head itself, and the response body reads from the socket when the
//! downstream connection polls it, as Pingora's proxy does. The floor comparison in
//! docs/benchmarks.md measured the hand-off at 9 % of the CPU of a proxied request.
//!
//! The handler takes this path for requests without a body to plain HTTP/1.1 endpoints.
//! Requests with a body, upgrades, TLS and HTTP/2 endpoints keep hyper's client, which
//! streams request bodies while it reads the response. An idle connection of this path is a
//! parked socket in the pool (src/proxy/pool.rs), which either path can take. A warm hyper
//! connection serves only hyper's path until the pool's sweep parks it.
//!
//! Response framing follows RFC 9112 section 6.3. The http crate validates every header
//! name and value.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::ext::ReasonPhrase;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

use super::failure::{Failure, FailureKind};
use super::headers;
use super::pool::{PoolKey, UpstreamPool};

/// Maximum size of a response head, and of the trailer section of a chunked body: hyper's
/// default read buffer limit. hyper checks it only between reads, so it may accept a head a
/// few KiB longer.
const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
/// Maximum number of fields in a response head or trailer section, hyper's default.
const MAX_HEADERS: usize = 100;
/// Maximum length of a chunk-size line with its extensions: hyper's 16 KiB of extensions,
/// and room for the size and the line end.
const MAX_CHUNK_LINE: usize = 16 * 1024 + 32;
/// Size of each read of a response head.
const HEAD_READ: usize = 8 * 1024;
/// Largest read of a response body, so a large body streams in frames of at most this size.
const MAX_BODY_READ: usize = 64 * 1024;

/// Failure of an inline exchange.
#[derive(Debug)]
pub(super) enum InlineError {
    /// Writing the request head failed.
    Write(io::Error),
    /// Reading from the endpoint failed.
    Read(io::Error),
    /// The endpoint closed the connection before a whole response head.
    Closed,
    /// The response head is not valid HTTP/1.x.
    InvalidHead(String),
    /// The response head is larger than `MAX_HEAD_BYTES`.
    HeadTooLarge,
    /// A chunk-size line or the line after a chunk is not valid.
    InvalidChunk,
    /// The endpoint closed the connection before the end of the body its framing announced.
    Truncated,
}

impl fmt::Display for InlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InlineError::Write(error) => write!(f, "writing the request head failed: {error}"),
            InlineError::Read(error) => write!(f, "reading the response failed: {error}"),
            InlineError::Closed => f.write_str("connection closed before the response head"),
            InlineError::InvalidHead(reason) => write!(f, "invalid response head: {reason}"),
            InlineError::HeadTooLarge => {
                write!(f, "response head larger than {MAX_HEAD_BYTES} bytes")
            }
            InlineError::InvalidChunk => f.write_str("invalid chunked encoding"),
            InlineError::Truncated => f.write_str("connection closed inside the response body"),
        }
    }
}

impl std::error::Error for InlineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InlineError::Write(error) | InlineError::Read(error) => Some(error),
            _ => None,
        }
    }
}

/// A failed exchange, and whether the endpoint sent any byte of a response before it failed.
/// A request on a reused connection that got nothing back may be sent again.
#[derive(Debug)]
pub(super) struct ExchangeFailure {
    pub(super) error: InlineError,
    pub(super) received_nothing: bool,
}

impl ExchangeFailure {
    /// Classifies the failure for the client's response and the log.
    pub(super) fn into_failure(self) -> Failure {
        let kind = match self.error {
            InlineError::Write(_) | InlineError::Read(_) | InlineError::Closed => {
                FailureKind::ConnectionReset
            }
            _ => FailureKind::ProtocolError,
        };
        Failure::with_source(kind, self.error)
    }
}

/// Encodes the head of a request without a body for an HTTP/1.1 endpoint: the origin-form
/// `target` and the headers as prepared.
pub(super) fn encode_head(method: &Method, target: &str, headers: &HeaderMap) -> Vec<u8> {
    let mut head = Vec::with_capacity(256 + headers.len() * 48);
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        push_field(&mut head, name.as_str(), value);
    }
    head.extend_from_slice(b"\r\n");
    head
}

fn push_field(head: &mut Vec<u8>, name: &str, value: &HeaderValue) {
    head.extend_from_slice(name.as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value.as_bytes());
    head.extend_from_slice(b"\r\n");
}

/// The head of an upstream response, and the reader of its body.
pub(super) struct Exchanged {
    pub(super) status: StatusCode,
    /// The reason phrase when it is not the status code's canonical one, which hyper's
    /// server sends on instead of the canonical one.
    pub(super) reason: Option<ReasonPhrase>,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
    pub(super) body: InlineBody,
}

/// Writes `head` to `stream` and reads the response head. 1xx responses other than 101 are
/// read and dropped, as hyper's client does. `head_request` is true for a `HEAD` request,
/// whose response has no body whatever its headers announce.
pub(super) async fn exchange(
    mut stream: TcpStream,
    head: &[u8],
    head_request: bool,
) -> Result<Exchanged, ExchangeFailure> {
    let failure = |error, received: bool| ExchangeFailure {
        error,
        received_nothing: !received,
    };
    stream
        .write_all(head)
        .await
        .map_err(|error| failure(InlineError::Write(error), false))?;
    let mut buffer = BytesMut::with_capacity(HEAD_READ);
    // Bytes of a dropped 1xx response count too, though the buffer no longer has them.
    let mut received = false;
    loop {
        let parsed = parse_head(&mut buffer, head_request).map_err(|error| failure(error, true))?;
        match parsed {
            Parsed::Final(head) => {
                let body = InlineBody::new(stream, buffer, head.framing, head.reusable);
                return Ok(Exchanged {
                    status: head.status,
                    reason: head.reason,
                    version: head.version,
                    headers: head.headers,
                    body,
                });
            }
            // The bytes of a 1xx response were consumed; the final head may follow in them.
            Parsed::Informational => continue,
            Parsed::Partial if buffer.len() >= MAX_HEAD_BYTES => {
                return Err(failure(InlineError::HeadTooLarge, true));
            }
            Parsed::Partial => {}
        }
        buffer.reserve(HEAD_READ);
        // `AsyncRead` rather than `try_read_buf`: tokio takes a short read as a drained
        // socket, so the pool's check of an idle socket costs no system call.
        match stream.read_buf(&mut (&mut buffer).limit(HEAD_READ)).await {
            Ok(0) => return Err(failure(InlineError::Closed, received)),
            Ok(_) => received = true,
            Err(error) => return Err(failure(InlineError::Read(error), received)),
        }
    }
}

enum Parsed {
    /// The final response head, consumed from the buffer.
    Final(Head),
    /// A 1xx response, consumed from the buffer.
    Informational,
    /// More bytes are needed.
    Partial,
}

struct Head {
    status: StatusCode,
    reason: Option<ReasonPhrase>,
    version: Version,
    headers: HeaderMap,
    framing: Framing,
    /// The connection may carry another request once the body has ended.
    reusable: bool,
}

/// Parses one response head from the start of `buffer` and removes it from the buffer when
/// complete. Header values stay slices of the bytes read, as in hyper.
fn parse_head(buffer: &mut BytesMut, head_request: bool) -> Result<Parsed, InlineError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut fields);
    let length = match response.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(error) => return Err(InlineError::InvalidHead(error.to_string())),
    };
    // A read may complete a head longer than the limit checked while it was partial.
    if length > MAX_HEAD_BYTES {
        return Err(InlineError::HeadTooLarge);
    }
    let code = response.code.unwrap_or_default();
    let status = StatusCode::from_u16(code)
        .map_err(|_| InlineError::InvalidHead(format!("status code {code}")))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        // Upgrade requests take hyper's path, so no request here asked to switch.
        return Err(InlineError::InvalidHead(
            "101 Switching Protocols to a request that did not ask to upgrade".to_owned(),
        ));
    }
    if status.is_informational() {
        buffer.advance(length);
        return Ok(Parsed::Informational);
    }
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let reason = response
        .reason
        .filter(|reason| Some(*reason) != status.canonical_reason())
        .and_then(|reason| ReasonPhrase::try_from(reason.as_bytes()).ok());
    // Offsets of each field, so that the values can be cut from the head once it is frozen.
    let start = buffer.as_ptr() as usize;
    let mut offsets = Vec::with_capacity(response.headers.len());
    for field in response.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| InlineError::InvalidHead(format!("header name {:?}", field.name)))?;
        let offset = field.value.as_ptr() as usize - start;
        offsets.push((name, offset, offset + field.value.len()));
    }
    let bytes = buffer.split_to(length).freeze();
    let mut headers = HeaderMap::with_capacity(offsets.len());
    for (name, from, to) in offsets {
        let value = HeaderValue::from_maybe_shared(bytes.slice(from..to))
            .map_err(|_| InlineError::InvalidHead(format!("value of header {name}")))?;
        headers.append(name, value);
    }

    let (framing, conflicting) = framing(status, version, &mut headers, head_request)?;
    // RFC 9112 section 9.3: `close` ends the connection in either version, and HTTP/1.0
    // keeps it only when asked to.
    let keep_alive = !headers::connection_lists(&headers, "close")
        && (version == Version::HTTP_11 || headers::connection_lists(&headers, "keep-alive"));
    let reusable = keep_alive && !conflicting && !matches!(framing, Framing::UntilClose);
    Ok(Parsed::Final(Head {
        status,
        reason,
        version,
        headers,
        framing,
        reusable,
    }))
}

/// Returns how the body of a response is delimited (RFC 9112 section 6.3), and whether the
/// head carried both `Transfer-Encoding` and `Content-Length`. The transfer coding wins
/// then: `Content-Length` is removed, as a proxy must, and the connection is not reused,
/// because such a message may be an attempt at response splitting.
fn framing(
    status: StatusCode,
    version: Version,
    headers: &mut HeaderMap,
    head_request: bool,
) -> Result<(Framing, bool), InlineError> {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Length(0), false));
    }
    let has_length = headers.contains_key(header::CONTENT_LENGTH);
    if headers.contains_key(header::TRANSFER_ENCODING) {
        // RFC 9112 section 6.1 calls such an HTTP/1.0 message faulty; hyper's client rejects
        // it too, so both paths return 502.
        if version == Version::HTTP_10 {
            return Err(InlineError::InvalidHead(
                "Transfer-Encoding in an HTTP/1.0 response".to_owned(),
            ));
        }
        headers.remove(header::CONTENT_LENGTH);
        let last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|value| value.as_bytes().split(|byte| *byte == b','))
            .map(<[u8]>::trim_ascii)
            .rfind(|coding| !coding.is_empty());
        let chunked = last.is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked"));
        let framing = if chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::UntilClose
        };
        return Ok((framing, has_length));
    }
    if has_length {
        return content_length(headers).map(|length| (Framing::Length(length), false));
    }
    Ok((Framing::UntilClose, false))
}

/// Parses `Content-Length`. Repeated fields and comma-separated lists are accepted when
/// every value is the same number (RFC 9110 section 8.6).
fn content_length(headers: &HeaderMap) -> Result<u64, InlineError> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for item in value.as_bytes().split(|byte| *byte == b',') {
            let item = item.trim_ascii();
            let parsed = std::str::from_utf8(item)
                .ok()
                .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|text| text.parse::<u64>().ok());
            match (parsed, length) {
                (Some(parsed), None) => length = Some(parsed),
                (Some(parsed), Some(seen)) if parsed == seen => {}
                _ => {
                    return Err(InlineError::InvalidHead(format!(
                        "Content-Length {:?}",
                        String::from_utf8_lossy(value.as_bytes())
                    )));
                }
            }
        }
    }
    length.ok_or_else(|| InlineError::InvalidHead("empty Content-Length".to_owned()))
}

/// Delimiter of the rest of a response body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// This many bytes remain.
    Length(u64),
    /// Chunked transfer coding, at this step.
    Chunked(Chunk),
    /// The body ends when the endpoint closes the connection.
    UntilClose,
    /// The body has ended.
    Done,
}

/// A step of the chunked transfer coding (RFC 9112 section 7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// This many bytes of chunk data remain.
    Data(u64),
    /// The CRLF after a chunk's data is next.
    DataEnd,
    /// The trailer section after the last chunk is next.
    Trailers,
}

/// Returns a socket whose exchange ended cleanly to its pool.
pub(super) struct SocketHome {
    pub(super) pool: Rc<UpstreamPool>,
    pub(super) key: PoolKey,
}

/// The body of an upstream response on an inline exchange. It reads from the socket only
/// when polled, so a slow client slows the endpoint down instead of filling memory. The
/// socket goes back to the pool when the body ends cleanly, and is closed when the body is
/// dropped before its end.
pub(super) struct InlineBody {
    stream: Option<TcpStream>,
    buffer: BytesMut,
    framing: Framing,
    reusable: bool,
    home: Option<SocketHome>,
    /// An error held back for one poll (see `poll_frame`).
    failed: Option<InlineError>,
}

impl InlineBody {
    fn new(stream: TcpStream, buffer: BytesMut, framing: Framing, reusable: bool) -> Self {
        let mut body = Self {
            stream: Some(stream),
            buffer,
            framing,
            reusable,
            home: None,
            failed: None,
        };
        if body.framing == Framing::Length(0) {
            body.framing = Framing::Done;
        }
        body
    }

    /// Sets where the socket goes when the body ends cleanly. A body that has already ended
    /// gives the socket back at once.
    pub(super) fn set_home(&mut self, home: SocketHome) {
        if self.framing == Framing::Done {
            self.give_back(home);
        } else {
            self.home = Some(home);
        }
    }

    /// Ends the body: the socket goes back to the pool when the exchange ended cleanly and
    /// the endpoint sent nothing beyond the response.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        if let Some(home) = self.home.take() {
            self.give_back(home);
        }
    }

    fn give_back(&mut self, home: SocketHome) {
        if let Some(stream) = self.stream.take()
            && self.reusable
            && self.buffer.is_empty()
        {
            home.pool.return_socket(home.key, stream);
        }
    }

    /// Reads more bytes into the buffer, at most `expected` clamped to 8 to 64 KiB. Returns
    /// the number read, 0 at the end of the stream.
    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        expected: u64,
    ) -> Poll<Result<usize, InlineError>> {
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        let room = usize::try_from(expected)
            .unwrap_or(MAX_BODY_READ)
            .clamp(HEAD_READ, MAX_BODY_READ);
        if self.buffer.capacity() - self.buffer.len() < room / 2 {
            self.buffer.reserve(room);
        }
        let mut limited = (&mut self.buffer).limit(room);
        poll_read_buf(Pin::new(stream), cx, &mut limited).map_err(InlineError::Read)
    }

    /// Takes up to `remaining` bytes of the buffer as a data frame.
    fn take_data(&mut self, remaining: u64) -> (Bytes, u64) {
        let available = u64::try_from(self.buffer.len()).unwrap_or(u64::MAX);
        let length = remaining.min(available);
        // `length` is at most the buffer's length, so it fits in usize.
        let data = self.buffer.split_to(length as usize).freeze();
        (data, remaining - length)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, InlineError>>> {
        loop {
            match self.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(remaining) => {
                    if self.buffer.is_empty() {
                        if ready!(self.poll_fill(cx, remaining))? == 0 {
                            return Poll::Ready(Some(Err(InlineError::Truncated)));
                        }
                        continue;
                    }
                    let (data, left) = self.take_data(remaining);
                    self.framing = Framing::Length(left);
                    if left == 0 {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::UntilClose => {
                    if self.buffer.is_empty() {
                        if ready!(self.poll_fill(cx, MAX_BODY_READ as u64))? == 0 {
                            self.finish();
                            return Poll::Ready(None);
                        }
                        continue;
                    }
                    let data = self.buffer.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(step) => {
                    if let Some(frame) = self.step_chunked(step)? {
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    if self.framing == Framing::Done {
                        return Poll::Ready(None);
                    }
                    // `step_chunked` needs more bytes when it returns no frame and no new step.
                    if self.framing == Framing::Chunked(step) {
                        let expected = match step {
                            Chunk::Data(remaining) => remaining,
                            _ => HEAD_READ as u64,
                        };
                        if ready!(self.poll_fill(cx, expected))? == 0 {
                            return Poll::Ready(Some(Err(InlineError::Truncated)));
                        }
                    }
                }
            }
        }
    }

    /// Advances the chunked decoder with the bytes in the buffer. Returns a frame when one is
    /// ready; otherwise either the step changed or more bytes are needed.
    fn step_chunked(&mut self, step: Chunk) -> Result<Option<Frame<Bytes>>, InlineError> {
        match step {
            Chunk::Size => {
                let window = &self.buffer[..self.buffer.len().min(MAX_CHUNK_LINE)];
                let Some(end) = window.iter().position(|byte| *byte == b'\n') else {
                    return if self.buffer.len() < MAX_CHUNK_LINE {
                        Ok(None)
                    } else {
                        Err(InlineError::InvalidChunk)
                    };
                };
                if !is_chunk_size_line(&window[..end]) {
                    return Err(InlineError::InvalidChunk);
                }
                match httparse::parse_chunk_size(&self.buffer) {
                    Ok(httparse::Status::Complete((used, size))) if used == end + 1 => {
                        self.buffer.advance(used);
                        self.framing = Framing::Chunked(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                        Ok(None)
                    }
                    _ => Err(InlineError::InvalidChunk),
                }
            }
            Chunk::Data(remaining) => {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                let (data, left) = self.take_data(remaining);
                self.framing = Framing::Chunked(if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                });
                Ok(Some(Frame::data(data)))
            }
            Chunk::DataEnd => {
                if self.buffer.len() < 2 {
                    return Ok(None);
                }
                if &self.buffer[..2] != b"\r\n" {
                    return Err(InlineError::InvalidChunk);
                }
                self.buffer.advance(2);
                self.framing = Framing::Chunked(Chunk::Size);
                Ok(None)
            }
            Chunk::Trailers => {
                if self.buffer.starts_with(b"\r\n") {
                    self.buffer.advance(2);
                    self.finish();
                    return Ok(None);
                }
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                match httparse::parse_headers(&self.buffer, &mut fields) {
                    Ok(httparse::Status::Complete((used, fields))) => {
                        let mut trailers = HeaderMap::with_capacity(fields.len());
                        for field in fields {
                            let name = HeaderName::from_bytes(field.name.as_bytes());
                            let value = HeaderValue::from_bytes(field.value);
                            let (Ok(name), Ok(value)) = (name, value) else {
                                return Err(InlineError::InvalidChunk);
                            };
                            trailers.append(name, value);
                        }
                        self.buffer.advance(used);
                        self.finish();
                        Ok(Some(Frame::trailers(trailers)))
                    }
                    Ok(httparse::Status::Partial) if self.buffer.len() < MAX_HEAD_BYTES => Ok(None),
                    _ => Err(InlineError::InvalidChunk),
                }
            }
        }
    }
}

/// Returns true when `line`, a chunk-size line up to its LF, starts with a hex digit, ends
/// with CR, and has no control character other than HTAB. httparse alone accepts an empty
/// size and a bare LF inside an extension, which hyper's decoder rejects: a server that
/// reads them differently from the proxy could be made to see a different body.
fn is_chunk_size_line(line: &[u8]) -> bool {
    let Some((b'\r', line)) = line.split_last() else {
        return false;
    };
    line.first().is_some_and(u8::is_ascii_hexdigit)
        && line
            .iter()
            .all(|byte| *byte == b'\t' || !byte.is_ascii_control())
}

impl Body for InlineBody {
    type Data = Bytes;
    type Error = InlineError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, InlineError>>> {
        let body = self.get_mut();
        if let Some(error) = body.failed.take() {
            return Poll::Ready(Some(Err(error)));
        }
        match body.poll_next(cx) {
            Poll::Ready(Some(Err(error))) => {
                match &body.home {
                    Some(home) => tracing::warn!(
                        upstream = %home.key.address,
                        error = %error,
                        "upstream response body failed"
                    ),
                    None => tracing::warn!(error = %error, "upstream response body failed"),
                }
                // The connection is in an unknown state: close it.
                body.stream = None;
                body.home = None;
                body.framing = Framing::Done;
                // hyper's server drops the downstream connection as soon as a body fails,
                // with what it has buffered. One poll later, the head and the data read before
                // the failure are flushed first, as on hyper's client path.
                body.failed = Some(error);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            polled => polled,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done && self.failed.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(remaining) => SizeHint::with_exact(remaining),
            Framing::Done => SizeHint::with_exact(0),
            Framing::Chunked(_) | Framing::UntilClose => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;
    use prometheus_client::metrics::gauge::Gauge;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use crate::snapshot::UpstreamProtocol;

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);
    const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: upstream.test\r\n\r\n";

    /// Starts an endpoint on loopback that reads one request head, writes `pieces` one by
    /// one with a pause between them, then closes the connection. Returns the exchange's
    /// outcome and the request head the endpoint read.
    async fn exchange_with(
        pieces: &[&[u8]],
        head_request: bool,
    ) -> (Result<Exchanged, ExchangeFailure>, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let pieces: Vec<Vec<u8>> = pieces.iter().map(|piece| piece.to_vec()).collect();
        let endpoint = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let mut byte = [0_u8; 1];
                if stream.read(&mut byte).await.unwrap() == 0 {
                    break;
                }
                request.push(byte[0]);
            }
            for piece in pieces {
                // The proxy side closes early on some bad responses; the rest is not needed.
                if stream.write_all(&piece).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            request
        });
        let stream = TcpStream::connect(address).await.unwrap();
        let outcome = tokio::time::timeout(WAIT, exchange(stream, GET, head_request))
            .await
            .expect("the exchange timed out");
        (outcome, endpoint.await.unwrap())
    }

    /// Reads a whole body: its data, its trailers, or the error that ended it.
    async fn read_body(body: InlineBody) -> Result<(Vec<u8>, Option<HeaderMap>), InlineError> {
        let collected = tokio::time::timeout(WAIT, body.collect())
            .await
            .expect("reading the body timed out")?;
        let trailers = collected.trailers().cloned();
        Ok((collected.to_bytes().to_vec(), trailers))
    }

    fn failure_of(outcome: Result<Exchanged, ExchangeFailure>) -> ExchangeFailure {
        match outcome {
            Ok(exchanged) => panic!("expected a failure, got {}", exchanged.status),
            Err(failure) => failure,
        }
    }

    /// Returns the failure of an exchange whose endpoint sends `response` in one piece.
    async fn head_failure(response: &[u8]) -> ExchangeFailure {
        failure_of(exchange_with(&[response], false).await.0)
    }

    /// Returns the error that ends the body of `response`, sent in one piece.
    async fn body_error(response: &[u8]) -> InlineError {
        let (outcome, _) = exchange_with(&[response], false).await;
        read_body(outcome.unwrap().body).await.unwrap_err()
    }

    #[test]
    fn head_encoded_in_origin_form() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("a.test"));
        headers.append("x-many", HeaderValue::from_static("1"));
        headers.append("x-many", HeaderValue::from_static("2"));
        let head = encode_head(&Method::DELETE, "/items/7?force=1", &headers);
        assert_eq!(
            head,
            b"DELETE /items/7?force=1 HTTP/1.1\r\nhost: a.test\r\nx-many: 1\r\nx-many: 2\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn length_body_split_across_reads() {
        let (outcome, request) = exchange_with(
            &[
                b"HTTP/1.1 200 OK\r\nContent-Le",
                b"ngth: 11\r\n\r\nhello",
                b" world",
            ],
            false,
        )
        .await;
        assert_eq!(request, GET);
        let exchanged = outcome.unwrap();
        assert_eq!(exchanged.status, StatusCode::OK);
        assert_eq!(exchanged.version, Version::HTTP_11);
        assert_eq!(exchanged.headers["content-length"], "11");
        assert!(exchanged.body.reusable);
        let (data, trailers) = read_body(exchanged.body).await.unwrap();
        assert_eq!(data, b"hello world");
        assert!(trailers.is_none());
    }

    #[tokio::test]
    async fn chunked_body_with_extensions_and_trailers() {
        let (outcome, _) = exchange_with(
            &[
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5;name=value\r\nhel",
                b"lo\r",
                b"\n6\r\n world\r\n0\r\nx-checksum: abc\r\n",
                b"\r\n",
            ],
            false,
        )
        .await;
        let exchanged = outcome.unwrap();
        assert!(exchanged.body.reusable);
        let (data, trailers) = read_body(exchanged.body).await.unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(trailers.unwrap()["x-checksum"], "abc");
    }

    #[tokio::test]
    async fn chunked_body_without_trailers_ends() {
        let (outcome, _) = exchange_with(
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"],
            false,
        )
        .await;
        let (data, trailers) = read_body(outcome.unwrap().body).await.unwrap();
        assert_eq!(data, b"abc");
        assert!(trailers.is_none());
    }

    #[tokio::test]
    async fn informational_responses_skipped() {
        let (outcome, _) = exchange_with(
            &[
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n",
                b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
            ],
            false,
        )
        .await;
        let exchanged = outcome.unwrap();
        assert_eq!(exchanged.status, StatusCode::CREATED);
        assert!(!exchanged.headers.contains_key("link"));
        assert_eq!(read_body(exchanged.body).await.unwrap().0, b"ok");
    }

    #[tokio::test]
    async fn close_delimited_body_read_to_end() {
        let (outcome, _) =
            exchange_with(&[b"HTTP/1.1 200 OK\r\n\r\nfirst ", b"second"], false).await;
        let exchanged = outcome.unwrap();
        assert!(!exchanged.body.reusable);
        assert_eq!(read_body(exchanged.body).await.unwrap().0, b"first second");
    }

    #[tokio::test]
    async fn head_response_has_no_body() {
        let (outcome, _) =
            exchange_with(&[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"], true).await;
        let exchanged = outcome.unwrap();
        assert!(exchanged.body.is_end_stream());
        assert!(exchanged.body.reusable);
        assert_eq!(exchanged.headers["content-length"], "10");
        assert!(read_body(exchanged.body).await.unwrap().0.is_empty());
    }

    #[tokio::test]
    async fn not_modified_has_no_body() {
        let (outcome, _) = exchange_with(
            &[b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"],
            false,
        )
        .await;
        assert!(outcome.unwrap().body.is_end_stream());
    }

    #[tokio::test]
    async fn repeated_equal_lengths_accepted() {
        let (outcome, _) = exchange_with(
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok"],
            false,
        )
        .await;
        assert_eq!(read_body(outcome.unwrap().body).await.unwrap().0, b"ok");
    }

    #[tokio::test]
    async fn conflicting_lengths_rejected() {
        let failure =
            head_failure(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")
                .await;
        assert!(matches!(failure.error, InlineError::InvalidHead(_)));
        assert!(!failure.received_nothing);
        assert_eq!(failure.into_failure().kind, FailureKind::ProtocolError);
    }

    #[tokio::test]
    async fn signed_length_rejected() {
        let failure = head_failure(b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc").await;
        assert!(matches!(failure.error, InlineError::InvalidHead(_)));
    }

    #[tokio::test]
    async fn chunked_wins_over_length_without_reuse() {
        let (outcome, _) = exchange_with(
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"],
            false,
        )
        .await;
        let exchanged = outcome.unwrap();
        assert!(!exchanged.body.reusable);
        assert!(!exchanged.headers.contains_key("content-length"));
        assert_eq!(read_body(exchanged.body).await.unwrap().0, b"ok");
    }

    #[tokio::test]
    async fn http10_transfer_encoding_rejected() {
        let failure = head_failure(
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        )
        .await;
        assert!(matches!(failure.error, InlineError::InvalidHead(_)));
    }

    #[tokio::test]
    async fn connection_close_prevents_reuse() {
        let cases: [(&[u8], bool); 5] = [
            (
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\nContent-Length: 0\r\n\r\n",
                false,
            ),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false),
            (
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
                true,
            ),
            (
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n",
                false,
            ),
        ];
        for (response, reusable) in cases {
            let (outcome, _) = exchange_with(&[response], false).await;
            let exchanged = outcome.unwrap();
            let text = String::from_utf8_lossy(response);
            assert_eq!(exchanged.body.reusable, reusable, "{text}");
        }
    }

    #[tokio::test]
    async fn truncated_length_body_fails() {
        let error = body_error(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").await;
        assert!(matches!(error, InlineError::Truncated), "{error}");
    }

    #[tokio::test]
    async fn invalid_chunk_size_fails() {
        let error =
            body_error(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc").await;
        assert!(matches!(error, InlineError::InvalidChunk), "{error}");
    }

    #[tokio::test]
    async fn chunk_size_lines_checked_strictly() {
        let bodies: [&[u8]; 4] = [
            // An empty size line, which httparse alone reads as the last chunk.
            b"3\r\nabc\r\n\r\n\r\n",
            // A bare LF inside an extension.
            b"3;name\nvalue\r\nabc\r\n0\r\n\r\n",
            // A size line ended by LF alone.
            b"3\nabc\r\n0\r\n\r\n",
            // A size of more than 64 bits.
            b"10000000000000000\r\nabc\r\n0\r\n\r\n",
        ];
        for body in bodies {
            let mut response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            response.extend_from_slice(body);
            let error = body_error(&response).await;
            let text = String::from_utf8_lossy(body);
            assert!(
                matches!(error, InlineError::InvalidChunk),
                "{text:?}: {error}"
            );
        }
    }

    #[tokio::test]
    async fn long_chunk_extension_accepted() {
        let mut response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=".to_vec();
        response.extend_from_slice(&[b'e'; 5000]);
        response.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
        let (outcome, _) = exchange_with(&[&response], false).await;
        assert_eq!(read_body(outcome.unwrap().body).await.unwrap().0, b"hello");
    }

    #[tokio::test]
    async fn custom_reason_phrase_kept() {
        let (outcome, _) = exchange_with(
            &[b"HTTP/1.1 200 Fine Thanks\r\nContent-Length: 0\r\n\r\n"],
            false,
        )
        .await;
        let reason = outcome.unwrap().reason.unwrap();
        assert_eq!(reason.as_bytes(), b"Fine Thanks");
        let (outcome, _) =
            exchange_with(&[b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], false).await;
        assert!(outcome.unwrap().reason.is_none());
    }

    /// Builds a pool and returns it with the gauge that counts its parked sockets.
    fn pool() -> (Rc<UpstreamPool>, Gauge) {
        let gauge = Gauge::default();
        let tls = super::super::tls::UpstreamTls::new().unwrap();
        let pool = UpstreamPool::new(WAIT, tls, WAIT, gauge.clone());
        (Rc::new(pool), gauge)
    }

    async fn exchange_into_pool(
        pieces: &[&[u8]],
        head_request: bool,
    ) -> (InlineBody, Rc<UpstreamPool>, Gauge) {
        let (outcome, _) = exchange_with(pieces, head_request).await;
        let mut body = outcome.unwrap().body;
        let (pool, gauge) = pool();
        let key = PoolKey {
            address: "127.0.0.1:9".parse().unwrap(),
            protocol: UpstreamProtocol::Http1,
        };
        body.set_home(SocketHome {
            pool: pool.clone(),
            key,
        });
        (body, pool, gauge)
    }

    #[tokio::test]
    async fn clean_end_returns_socket() {
        let (body, _pool, gauge) =
            exchange_into_pool(&[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"], false).await;
        assert_eq!(gauge.get(), 0);
        assert_eq!(read_body(body).await.unwrap().0, b"ok");
        assert_eq!(gauge.get(), 1);
    }

    #[tokio::test]
    async fn ended_body_returns_socket_at_once() {
        let (_body, _pool, gauge) =
            exchange_into_pool(&[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"], true).await;
        assert_eq!(gauge.get(), 1);
    }

    #[tokio::test]
    async fn extra_bytes_prevent_reuse() {
        let response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n";
        let (body, _pool, gauge) = exchange_into_pool(&[response], false).await;
        assert_eq!(read_body(body).await.unwrap().0, b"ok");
        assert_eq!(gauge.get(), 0);
    }

    #[tokio::test]
    async fn dropped_body_not_returned() {
        let (mut body, _pool, gauge) =
            exchange_into_pool(&[b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok"], false).await;
        let first = tokio::time::timeout(WAIT, body.frame()).await.unwrap();
        assert_eq!(first.unwrap().unwrap().into_data().unwrap(), "ok");
        drop(body);
        assert_eq!(gauge.get(), 0);
    }

    #[tokio::test]
    async fn missing_crlf_after_chunk_fails() {
        let error = body_error(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
        )
        .await;
        assert!(matches!(error, InlineError::InvalidChunk), "{error}");
    }

    #[tokio::test]
    async fn close_before_head_received_nothing() {
        let (outcome, _) = exchange_with(&[], false).await;
        let failure = failure_of(outcome);
        assert!(matches!(failure.error, InlineError::Closed));
        assert!(failure.received_nothing);
        assert_eq!(failure.into_failure().kind, FailureKind::ConnectionReset);
    }

    #[tokio::test]
    async fn close_inside_head_received_something() {
        let failure = head_failure(b"HTTP/1.1 200 OK\r\nContent-").await;
        assert!(matches!(failure.error, InlineError::Closed));
        assert!(!failure.received_nothing);
    }

    #[tokio::test]
    async fn oversized_head_rejected() {
        let filler = vec![b'a'; MAX_HEAD_BYTES];
        let (outcome, _) = exchange_with(&[b"HTTP/1.1 200 OK\r\nx-filler: ", &filler], false).await;
        assert!(matches!(
            failure_of(outcome).error,
            InlineError::HeadTooLarge
        ));
    }

    #[tokio::test]
    async fn too_many_headers_rejected() {
        let fields = b"x-field: 1\r\n".repeat(MAX_HEADERS + 1);
        let (outcome, _) = exchange_with(&[b"HTTP/1.1 200 OK\r\n", &fields], false).await;
        assert!(matches!(
            failure_of(outcome).error,
            InlineError::InvalidHead(_)
        ));
    }

    #[tokio::test]
    async fn unrequested_switching_protocols_rejected() {
        let failure =
            head_failure(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n").await;
        assert!(matches!(failure.error, InlineError::InvalidHead(_)));
    }

    #[tokio::test]
    async fn invalid_header_value_rejected() {
        let failure =
            head_failure(b"HTTP/1.1 200 OK\r\nx-bad: a\x7fb\r\nContent-Length: 0\r\n\r\n").await;
        assert!(matches!(failure.error, InlineError::InvalidHead(_)));
    }
}
