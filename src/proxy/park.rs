//! Parking of idle HTTP/1.1 connections from the plain HTTP listener.
//!
//! hyper keeps an HTTP/1.1 connection's read buffer (8 KiB or more) and write buffer (8 KiB)
//! for as long as the connection lives, with no option to release them between requests.
//! With many idle keep-alive clients that is most of the proxy's memory. So a connection
//! that has been idle for `ProxyConfig::park_after` is parked: its hyper state and its task
//! end, and the bare socket waits in the worker's [`ParkingLot`]. When the client sends
//! again, a new task and hyper connection take the socket over. A new connection waits for
//! its first bytes in its own task, without hyper.
//!
//! hyper has no call to stop between requests, so [`ParkableStream`] reports an end of
//! stream to it instead. Waiting for a request head with nothing buffered, hyper takes that
//! as a clean close and hands the socket back through `into_parts`. In any other state it
//! fails the connection, which closes it: a wrong guess costs the connection, and no byte is
//! ever read outside its message framing.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use rustix::buffer::spare_capacity;
use rustix::event::{Timespec, epoll};
use slab::Slab;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

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
    /// Wraps `stream` for a new hyper connection, started because the socket has input.
    pub(super) fn new(stream: TcpStream, signal: Arc<ParkSignal>) -> Self {
        signal.parking.store(false, Ordering::Relaxed);
        // Until hyper has read and parsed that input, the connection is not idle.
        signal.input_pending.store(true, Ordering::Relaxed);
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

/// A connection in the [`ParkingLot`].
#[derive(Debug)]
pub(super) struct Parked {
    pub(super) socket: std::net::TcpStream,
    pub(super) client: SocketAddr,
    /// When its last request ended.
    pub(super) last_active: Instant,
    /// Distinguishes this stay from earlier ones in the same slab slot.
    serial: u64,
}

/// The parked connections of one worker: bare sockets outside tokio, watched by an epoll
/// instance of the worker's own, so that a parked connection costs a slab entry and no task.
pub(super) struct ParkingLot {
    epoll: AsyncFd<OwnedFd>,
    parked: RefCell<Slab<Parked>>,
    /// Slab keys and serials in the order they were parked, for the idle timeout.
    order: RefCell<VecDeque<(usize, u64)>>,
    serial: Cell<u64>,
    gauge: Gauge,
}

impl ParkingLot {
    /// Creates an empty lot; must run inside the worker's runtime.
    pub(super) fn new(gauge: Gauge) -> io::Result<Self> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        // SAFETY: the `AsyncFd` owns the `OwnedFd`, which keeps the same descriptor open
        // until both are dropped.
        let epoll = unsafe { AsyncFd::register_with_interest(epoll, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self {
            epoll,
            parked: RefCell::default(),
            order: RefCell::default(),
            serial: Cell::new(0),
            gauge,
        })
    }

    /// Takes `stream` out of tokio and keeps it until it has input or times out. Gives the
    /// stream back when the epoll instance refuses it; closes it when it cannot leave tokio.
    pub(super) fn park(
        &self,
        stream: TcpStream,
        client: SocketAddr,
        last_active: Instant,
    ) -> Result<(), TcpStream> {
        let socket = match stream.into_std() {
            Ok(socket) => socket,
            Err(error) => {
                tracing::debug!(client = %client, error = %error, "cannot park a connection");
                return Ok(());
            }
        };
        let serial = self.serial.get() + 1;
        self.serial.set(serial);
        let mut parked = self.parked.borrow_mut();
        let entry = parked.vacant_entry();
        let key = entry.key();
        let flags = epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::ONESHOT;
        let data = epoll::EventData::new_u64(key as u64);
        if let Err(error) = epoll::add(self.epoll.get_ref(), &socket, data, flags) {
            tracing::debug!(client = %client, error = %error, "cannot park a connection");
            return TcpStream::from_std(socket).map_or(Ok(()), Err);
        }
        entry.insert(Parked {
            socket,
            client,
            last_active,
            serial,
        });
        self.order.borrow_mut().push_back((key, serial));
        self.gauge.inc();
        Ok(())
    }

    /// Waits until parked connections have input, and returns them.
    pub(super) async fn ready(&self, events: &mut Vec<epoll::Event>) -> Vec<Parked> {
        loop {
            let Ok(mut guard) = self.epoll.readable().await else {
                return Vec::new();
            };
            events.clear();
            let zero = Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            match epoll::wait(self.epoll.get_ref(), spare_capacity(events), Some(&zero)) {
                Ok(0) => guard.clear_ready(),
                Ok(_) => break,
                Err(error) if error == rustix::io::Errno::INTR => {}
                Err(error) => {
                    tracing::warn!(error = %error, "waiting for parked connections failed");
                    guard.clear_ready();
                }
            }
        }
        events
            .iter()
            .filter_map(|event| self.remove(event.data.u64() as usize))
            .collect()
    }

    /// Closes the connections parked longer than they may stay idle: `idle_timeout` after
    /// their last request ended.
    pub(super) fn expire(&self, idle_timeout: Duration) {
        let now = Instant::now();
        loop {
            let Some(&(key, serial)) = self.order.borrow().front() else {
                return;
            };
            let last_active = self
                .parked
                .borrow()
                .get(key)
                .filter(|parked| parked.serial == serial)
                .map(|parked| parked.last_active);
            match last_active {
                Some(last_active) if last_active + idle_timeout > now => return,
                Some(_) => {
                    if let Some(parked) = self.remove(key) {
                        tracing::debug!(client = %parked.client, "closing idle downstream connection");
                    }
                }
                // Resumed since it was parked.
                None => {}
            }
            self.order.borrow_mut().pop_front();
        }
    }

    /// Closes every parked connection.
    pub(super) fn close_all(&self) {
        let closed = self.parked.borrow().len();
        self.parked.borrow_mut().clear();
        self.order.borrow_mut().clear();
        self.gauge.dec_by(closed as i64);
    }

    fn remove(&self, key: usize) -> Option<Parked> {
        let parked = self.parked.borrow_mut().try_remove(key)?;
        self.gauge.dec();
        // The socket leaves this epoll before tokio registers it in its own.
        let _ = epoll::delete(self.epoll.get_ref(), &parked.socket);
        Some(parked)
    }
}
