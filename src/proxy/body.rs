//! Body types of both sides. Bodies stream frame by frame and are never buffered whole.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::inline::InlineBody;
use super::pool::PooledSender;
use super::worker::InFlight;

/// The error of a response body: hyper's, or the inline exchange's.
pub(super) type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The downstream request body on its way upstream. It records when a frame last moved, so
/// the wait for the response head can restart while a slow upload still flows.
pub(super) struct RequestBody {
    /// The downstream body, or `None` for the empty body of a replayed request.
    inner: Option<Incoming>,
    progress: Rc<Cell<Instant>>,
}

impl RequestBody {
    /// Wraps `inner`; `progress` is set to the time of each frame.
    pub(super) fn new(inner: Incoming, progress: Rc<Cell<Instant>>) -> Self {
        Self {
            inner: Some(inner),
            progress,
        }
    }

    /// Builds an empty body, for a request sent again without its downstream body.
    pub(super) fn empty(progress: Rc<Cell<Instant>>) -> Self {
        Self {
            inner: None,
            progress,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if polled.is_ready() {
            self.progress.set(Instant::now());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

/// The body of every response the proxy sends downstream.
pub(super) struct ResponseBody {
    kind: ResponseKind,
    /// Keeps the downstream connection counted as busy until the body is dropped.
    _in_flight: Option<InFlight>,
}

enum ResponseKind {
    /// A body the proxy wrote, such as an error page. `None` once sent.
    Full(Option<Bytes>),
    /// The upstream response body, streamed.
    Upstream {
        body: Incoming,
        /// The HTTP/1.1 connection the response came on, returned to the pool once the body
        /// has ended. `None` for HTTP/2 and for connections that cannot be reused.
        pooled: Option<PooledSender>,
    },
    /// The upstream response body of an inline exchange, which returns its socket to the
    /// pool itself.
    Inline(InlineBody),
}

impl ResponseBody {
    /// Builds a body from bytes the proxy wrote.
    pub(super) fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Self {
            kind: ResponseKind::Full((!bytes.is_empty()).then_some(bytes)),
            _in_flight: None,
        }
    }

    /// Streams an upstream body. `pooled` goes back to its pool when the body ends.
    pub(super) fn upstream(body: Incoming, pooled: Option<PooledSender>) -> Self {
        Self {
            kind: ResponseKind::Upstream { body, pooled },
            _in_flight: None,
        }
    }

    /// Streams the body of an inline exchange.
    pub(super) fn inline(body: InlineBody) -> Self {
        Self {
            kind: ResponseKind::Inline(body),
            _in_flight: None,
        }
    }

    /// Ties the downstream connection's busy state to this body.
    pub(super) fn set_in_flight(&mut self, in_flight: InFlight) {
        self._in_flight = Some(in_flight);
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.kind {
            ResponseKind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseKind::Upstream { body, pooled } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                if let Poll::Ready(None) = polled
                    && let Some(sender) = pooled.take()
                {
                    sender.release();
                }
                polled.map_err(Into::into)
            }
            ResponseKind::Inline(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            ResponseKind::Full(bytes) => bytes.is_none(),
            ResponseKind::Upstream { body, .. } => body.is_end_stream(),
            ResponseKind::Inline(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            ResponseKind::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ResponseKind::Full(None) => SizeHint::with_exact(0),
            ResponseKind::Upstream { body, .. } => body.size_hint(),
            ResponseKind::Inline(body) => body.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper may drop a body that reports its end (an empty body, a response to HEAD)
        // without polling it; the connection is still reusable then. A body dropped before
        // its end leaves the connection mid-response, so hyper closes it instead.
        if let ResponseKind::Upstream { body, pooled } = &mut self.kind
            && body.is_end_stream()
            && let Some(sender) = pooled.take()
        {
            sender.release();
        }
    }
}
