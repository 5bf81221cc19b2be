//! Parking of idle HTTP/1.1 connections from the plain HTTP listener.
//!
//! hyper keeps an HTTP/1.1 connection's read buffer (8 KiB or more) and write buffer (8 KiB)
//! for as long as the connection lives, with no option to release them between requests.
//! With many idle keep-alive clients that is most of the proxy's memory. So a connection
//! that has been idle for `ProxyConfig::park_after` is parked: its hyper state is dropped and only the
//! socket is kept, and a new hyper connection takes the socket over when the client sends
//! again. A connection that has not sent its first request is parked from the start.
//!
//! hyper has no call to stop between requests, so [`ParkableStream`] reports an end of
//! stream to it instead. Waiting for a request head with nothing buffered, hyper takes that
//! as a clean close and hands the socket back through `into_parts`. In any other state it
//! fails the connection, which closes it: a wrong guess costs the connection, and no byte is
//! ever read outside its message framing.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The client preface of HTTP/2 with prior knowledge (RFC 9113, section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// State shared by a parkable connection's stream, its requests and its serving loop.
/// Atomic only because hyper requires a `Send` stream; all of it stays on one worker thread.
#[derive(Debug, Default)]
pub(super) struct ParkSignal {
    /// Set to make the stream report an end of stream to hyper and skip its shutdown.
    parking: AtomicBool,
    /// Set when bytes arrive and cleared when a request starts or the last one ends. While
    /// set, hyper may hold part of a request head, so the connection is not parked.
    input_pending: AtomicBool,
}

impl ParkSignal {
    /// Records that a request head was parsed or the connection's last request ended.
    pub(super) fn input_consumed(&self) {
        self.input_pending.store(false, Ordering::Relaxed);
    }

    /// Returns whether bytes arrived that no request has consumed yet.
    pub(super) fn input_pending(&self) -> bool {
        self.input_pending.load(Ordering::Relaxed)
    }

    /// Makes the stream end for hyper, so that hyper returns it.
    pub(super) fn start_parking(&self) {
        self.parking.store(true, Ordering::Relaxed);
    }

    /// Returns whether [`Self::start_parking`] was called on the current hyper connection.
    pub(super) fn is_parking(&self) -> bool {
        self.parking.load(Ordering::Relaxed)
    }
}

/// A downstream TCP stream that can report an end of stream to hyper while the socket stays
/// open. See the module documentation.
pub(super) struct ParkableStream {
    stream: TcpStream,
    signal: Arc<ParkSignal>,
}

impl ParkableStream {
    /// Wraps `stream` for a new hyper connection.
    pub(super) fn new(stream: TcpStream, signal: Arc<ParkSignal>) -> Self {
        signal.parking.store(false, Ordering::Relaxed);
        Self { stream, signal }
    }

    /// Returns the socket.
    pub(super) fn into_inner(self) -> TcpStream {
        self.stream
    }
}

impl AsyncRead for ParkableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.signal.is_parking() {
            // Nothing read: to hyper, the end of the stream.
            return Poll::Ready(Ok(()));
        }
        let filled = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > filled {
            self.signal.input_pending.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for ParkableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.signal.is_parking() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Returns whether the first bytes on a plain connection are HTTP/1, as opposed to the
/// HTTP/2 preface or too few bytes to tell. Reads nothing off the socket.
pub(super) async fn starts_with_http1(stream: &TcpStream) -> bool {
    let mut first = [0_u8; H2_PREFACE.len()];
    match stream.peek(&mut first).await {
        Ok(read) if read > 0 => !H2_PREFACE.starts_with(&first[..read]),
        _ => false,
    }
}
