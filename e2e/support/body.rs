//! The body type of test clients' requests and test backends' responses.

use bytes::Bytes;
use futures_util::stream;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;

/// Any error a body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed body, so that full, empty and streamed bodies share one type.
pub type Body = BoxBody<Bytes, BoxError>;

/// Returns an empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Returns a body of `bytes`, sent at once.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Returns a body whose frames are the ones sent on the returned sender, in order. The body
/// ends when the sender is dropped, so a frame is on the wire before the next one exists.
pub fn channel() -> (mpsc::Sender<Frame<Bytes>>, Body) {
    // A buffer of one frame: the sender waits until the previous frame was taken, so the
    // sending side notices when the transport stops reading.
    let (sender, receiver) = mpsc::channel::<Frame<Bytes>>(1);
    let frames = stream::unfold(receiver, |mut receiver| async move {
        let frame = receiver.recv().await?;
        Some((Ok::<_, BoxError>(frame), receiver))
    });
    (sender, StreamBody::new(frames).boxed())
}
