//! Echo backends for the demo: each replies to every request with a JSON description of it,
//! and echoes WebSocket messages back.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The body of every echo response.
#[derive(Debug, Serialize)]
pub struct EchoReply {
    /// Name of the backend that replied.
    pub backend: String,
    /// Request method.
    pub method: String,
    /// Request path, without the query.
    pub path: String,
    /// Query string, without `?`, or empty.
    pub query: String,
    /// HTTP version as the backend received it, such as `HTTP/1.1`.
    pub version: String,
    /// Request headers, lower-case names; repeated headers are joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// Size of the request body in bytes.
    pub body_bytes: usize,
}

/// A running echo backend.
#[derive(Debug)]
pub struct EchoServer {
    /// Name reported in every reply.
    pub name: String,
    /// The address it listens on.
    pub address: SocketAddr,
}

/// Binds `127.0.0.1` on an ephemeral port and serves echo replies as `name` until `shutdown`
/// is cancelled. Connections are tracked by `tracker`, so the caller can wait for them.
pub async fn start(
    name: &str,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> std::io::Result<EchoServer> {
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let address = listener.local_addr()?;
    let name: Arc<str> = name.into();
    let connections = tracker.clone();
    tracker.spawn(accept_loop(listener, name.clone(), shutdown, connections));
    tracing::info!(backend = %name, %address, "echo backend listening");
    Ok(EchoServer {
        name: name.to_string(),
        address,
    })
}

async fn accept_loop(
    listener: TcpListener,
    name: Arc<str>,
    shutdown: CancellationToken,
    connections: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(backend = %name, %error, "echo backend failed to accept a connection");
                    continue;
                }
            },
        };
        let name = name.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| handle(name.clone(), request));
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "echo connection ended with an error");
                    }
                }
                () = shutdown.cancelled() => {}
            }
        });
    }
}

async fn handle(
    name: Arc<str>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if is_websocket_upgrade(&request) {
        return Ok(accept_websocket(name, request));
    }

    let (parts, body) = request.into_parts();
    // A body that fails midway still gets a reply, counting what arrived.
    let body_bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes().len(),
        Err(_) => 0,
    };
    let mut headers = BTreeMap::<String, String>::new();
    for (header_name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(header_name.as_str().to_owned())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    let reply = EchoReply {
        backend: name.to_string(),
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        version: format!("{:?}", parts.version),
        headers,
        body_bytes,
    };
    let mut body = serde_json::to_vec_pretty(&reply).unwrap_or_default();
    body.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

fn is_websocket_upgrade<B>(request: &Request<B>) -> bool {
    let headers = request.headers();
    let upgrade_to_websocket = headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"));
    upgrade_to_websocket && headers.contains_key(header::SEC_WEBSOCKET_KEY)
}

/// Completes the WebSocket handshake (RFC 6455 section 4.2.2) and echoes messages on the
/// upgraded connection.
fn accept_websocket(name: Arc<str>, mut request: Request<Incoming>) -> Response<Full<Bytes>> {
    let key = request
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|key| derive_accept_key(key.as_bytes()))
        .unwrap_or_default();
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(backend = %name, %error, "WebSocket upgrade failed");
                return;
            }
        };
        let mut socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = socket.next().await {
            if message.is_close() {
                break;
            }
            if (message.is_text() || message.is_binary()) && socket.send(message).await.is_err() {
                break;
            }
        }
    });

    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&key) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_tungstenite::tungstenite::Message;

    use super::*;

    /// Starts an echo backend named `echo-test`; cancel the token to stop it.
    async fn start_test_echo() -> (EchoServer, CancellationToken) {
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let server = start("echo-test", shutdown.clone(), &tracker)
            .await
            .unwrap();
        (server, shutdown)
    }

    async fn curl(arguments: Vec<String>) -> String {
        let output = tokio::process::Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "10"])
            .args(arguments)
            .output()
            .await
            .expect("failed to run curl");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    #[tokio::test]
    async fn echo_describes_the_request() {
        let (server, shutdown) = start_test_echo().await;

        let body = curl(vec![
            "-H".into(),
            "X-Demo: one".into(),
            "-H".into(),
            "X-Demo: two".into(),
            "--data-binary".into(),
            "hello".into(),
            format!("http://{}/some/path?q=1", server.address),
        ])
        .await;
        let reply: serde_json::Value = serde_json::from_str(&body).unwrap();

        assert_eq!(reply["backend"], "echo-test");
        assert_eq!(reply["method"], "POST");
        assert_eq!(reply["path"], "/some/path");
        assert_eq!(reply["query"], "q=1");
        assert_eq!(reply["version"], "HTTP/1.1");
        assert_eq!(reply["headers"]["x-demo"], "one, two");
        assert_eq!(reply["body_bytes"], 5);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn echo_speaks_h2c() {
        let (server, shutdown) = start_test_echo().await;

        let body = curl(vec![
            "--http2-prior-knowledge".into(),
            format!("http://{}/", server.address),
        ])
        .await;
        let reply: serde_json::Value = serde_json::from_str(&body).unwrap();

        assert_eq!(reply["version"], "HTTP/2.0");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn echo_returns_websocket_messages() {
        let (server, shutdown) = start_test_echo().await;

        let (mut socket, response) =
            tokio_tungstenite::connect_async(format!("ws://{}/ws", server.address))
                .await
                .unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        socket.send(Message::text("hello")).await.unwrap();
        socket.send(Message::binary(vec![1, 2, 3])).await.unwrap();

        assert_eq!(
            socket.next().await.unwrap().unwrap(),
            Message::text("hello")
        );
        assert_eq!(
            socket.next().await.unwrap().unwrap(),
            Message::binary(vec![1, 2, 3])
        );
        socket.close(None).await.unwrap();
        shutdown.cancel();
    }

    #[tokio::test]
    async fn echo_stops_on_cancel() {
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        start("echo-test", shutdown.clone(), &tracker)
            .await
            .unwrap();

        shutdown.cancel();
        tracker.close();
        let stopped = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
        assert!(stopped.is_ok(), "echo tasks did not stop");
    }
}
