//! Listening sockets: one `SO_REUSEPORT` socket per worker on the same address, so the kernel
//! spreads new connections over the workers without a shared accept queue.

use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

use super::ProxyError;

/// Pending connections per socket; the same default as nginx's `listen ... backlog` on Linux.
const BACKLOG: i32 = 511;

/// Binds `count` listening sockets to `address`, all sharing its port.
///
/// When `address` names a port, a probe socket without `SO_REUSEPORT` is bound first. Linux
/// lets any other `SO_REUSEPORT` socket of the same user join the group silently. Without the
/// probe, a second Gangway on the same port would share the traffic instead of failing.
pub(super) fn bind_group(
    address: SocketAddr,
    count: usize,
) -> Result<Vec<TcpListener>, ProxyError> {
    let bind_error = |source| ProxyError::Bind { address, source };
    if address.port() != 0 {
        drop(bind_socket(address, false).map_err(bind_error)?);
    }

    let first = bind_socket(address, true).map_err(bind_error)?;
    listen(&first).map_err(bind_error)?;
    // With port 0 the kernel picked the port; the other workers join that one.
    let bound = first.local_addr().map_err(bind_error)?;
    let bound = bound
        .as_socket()
        .ok_or_else(|| bind_error(std::io::Error::other("bound address is not an IP address")))?;

    let mut listeners = Vec::with_capacity(count);
    listeners.push(TcpListener::from(first));
    for _ in 1..count {
        let socket = bind_socket(bound, true).map_err(bind_error)?;
        listen(&socket).map_err(bind_error)?;
        listeners.push(TcpListener::from(socket));
    }
    Ok(listeners)
}

/// Returns the address `listener` is bound to, naming `configured` in the error.
pub(super) fn local_addr(
    listener: &TcpListener,
    configured: SocketAddr,
) -> Result<SocketAddr, ProxyError> {
    listener.local_addr().map_err(|source| ProxyError::Bind {
        address: configured,
        source,
    })
}

fn bind_socket(address: SocketAddr, reuse_port: bool) -> std::io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    // SO_REUSEADDR lets a restarted proxy bind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    Ok(socket)
}

fn listen(socket: &Socket) -> std::io::Result<()> {
    socket.listen(BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_group_shares_one_picked_port() {
        let listeners = bind_group("127.0.0.1:0".parse().unwrap(), 3).unwrap();

        let ports: Vec<u16> = listeners
            .iter()
            .map(|listener| listener.local_addr().unwrap().port())
            .collect();
        assert_eq!(ports.len(), 3);
        assert_ne!(ports[0], 0);
        assert!(ports.iter().all(|port| *port == ports[0]), "{ports:?}");
    }

    #[test]
    fn bind_group_rejects_taken_port() {
        let taken = bind_group("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let address = taken[0].local_addr().unwrap();

        let error = bind_group(address, 1).unwrap_err();

        let message = error.to_string();
        assert!(
            message.contains(&address.to_string()),
            "message names the address: {message}"
        );
        assert!(matches!(
            error,
            ProxyError::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse
        ));
    }
}
