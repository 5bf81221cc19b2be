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

/// A connection that left the [`ParkingLot`] because it has input.
#[derive(Debug)]
pub(super) struct Parked {
    pub(super) socket: std::net::TcpStream,
    /// When its last request ended.
    pub(super) last_active: Instant,
}

/// A connection in the [`ParkingLot`]: 16 bytes in the slab, where a socket address and an
/// `Instant` would take 64. With 10,000 parked connections that is 0.5 MiB less. The client
/// address is read from the socket again when the connection resumes.
#[derive(Debug)]
struct Slot {
    socket: std::net::TcpStream,
    /// When its last request ended, on the lot's [`Ticks`] clock.
    last_active: u32,
    /// Distinguishes this stay from earlier ones in the same slab slot. It wraps, and a stale
    /// `order` entry that matches a later stay only checks that stay's own idle time.
    serial: u32,
}

/// Milliseconds since the lot was created, modulo 2^32, so about 49.7 days. Differences
/// between two readings are right as long as they are shorter than that, and a connection
/// stays parked only until its idle timeout.
#[derive(Debug)]
struct Ticks {
    epoch: Instant,
}

impl Ticks {
    /// Returns the clock's reading at `instant`.
    fn at(&self, instant: Instant) -> u32 {
        // Truncating to 32 bits is the wrap.
        instant.saturating_duration_since(self.epoch).as_millis() as u32
    }

    /// Time from `ticks` to `now`.
    fn since(&self, ticks: u32, now: Instant) -> Duration {
        Duration::from_millis(u64::from(self.at(now).wrapping_sub(ticks)))
    }

    /// Returns the instant at which the clock read `ticks`, before `now`.
    fn instant(&self, ticks: u32, now: Instant) -> Instant {
        now.checked_sub(self.since(ticks, now)).unwrap_or(now)
    }
}

/// The parked connections of one worker: bare sockets outside tokio, watched by an epoll
/// instance of the worker's own, so that a parked connection costs a slab entry and no task.
pub(super) struct ParkingLot {
    epoll: AsyncFd<OwnedFd>,
    parked: RefCell<Slab<Slot>>,
    /// Slab keys and serials in the order they were parked, for the idle timeout.
    order: RefCell<VecDeque<(u32, u32)>>,
    serial: Cell<u32>,
    ticks: Ticks,
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
            ticks: Ticks {
                epoch: Instant::now(),
            },
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
        let mut parked = self.parked.borrow_mut();
        let entry = parked.vacant_entry();
        // More slots than 32 bits can count would take more descriptors than a process has.
        let Ok(key) = u32::try_from(entry.key()) else {
            return TcpStream::from_std(socket).map_or(Ok(()), Err);
        };
        let serial = self.serial.get().wrapping_add(1);
        self.serial.set(serial);
        let flags = epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::ONESHOT;
        let data = epoll::EventData::new_u64(key as u64);
        if let Err(error) = epoll::add(self.epoll.get_ref(), &socket, data, flags) {
            tracing::debug!(client = %client, error = %error, "cannot park a connection");
            return TcpStream::from_std(socket).map_or(Ok(()), Err);
        }
        entry.insert(Slot {
            socket,
            last_active: self.ticks.at(last_active),
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
        let now = Instant::now();
        events
            .iter()
            .filter_map(|event| self.remove(event.data.u64() as usize))
            .map(|slot| Parked {
                last_active: self.ticks.instant(slot.last_active, now),
                socket: slot.socket,
            })
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
            let key = key as usize;
            let idle = self
                .parked
                .borrow()
                .get(key)
                .filter(|slot| slot.serial == serial)
                .map(|slot| self.ticks.since(slot.last_active, now));
            match idle {
                Some(idle) if idle < idle_timeout => return,
                Some(_) => {
                    if let Some(slot) = self.remove(key) {
                        tracing::debug!(
                            client = slot.socket.peer_addr().ok().map(tracing::field::display),
                            "closing idle downstream connection"
                        );
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

    fn remove(&self, key: usize) -> Option<Slot> {
        let slot = self.parked.borrow_mut().try_remove(key)?;
        self.gauge.dec();
        // The socket leaves this epoll before tokio registers it in its own.
        let _ = epoll::delete(self.epoll.get_ref(), &slot.socket);
        Some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_entry_of_slot_is_16_bytes() {
        // The shape of the slab crate's private entry type, which the lot's memory per
        // connection depends on.
        #[allow(dead_code)]
        enum Entry<T> {
            Vacant(usize),
            Occupied(T),
        }

        assert_eq!(std::mem::size_of::<Slot>(), 12);
        assert_eq!(std::mem::size_of::<Entry<Slot>>(), 16);
    }

    #[test]
    fn ticks_measure_across_the_wrap() {
        let now = Instant::now();
        let ticks = Ticks { epoch: now };
        assert_eq!(ticks.at(now), 0);
        assert_eq!(
            ticks.at(now + Duration::from_millis(1_500)),
            1_500,
            "milliseconds since the epoch"
        );
        // Parked 3 ms before the clock wrapped, measured 1.5 s after the epoch.
        let later = now + Duration::from_millis(1_500);
        assert_eq!(
            ticks.since(u32::MAX - 2, later),
            Duration::from_millis(1_503)
        );
        // A reading before the epoch counts as the epoch.
        let before = Ticks {
            epoch: now + Duration::from_secs(1),
        };
        assert_eq!(before.at(now), 0);
    }
}
