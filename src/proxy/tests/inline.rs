//! Requests without a body to a plain HTTP/1.1 upstream take the inline exchange. Each
//! response framing ends the body at its end and leaves the connection reusable or not, as
//! RFC 9112 requires.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::harness::{Collected, TestProxy, backend, http1_client, metric_value, one_route};
use crate::snapshot::UpstreamProtocol;

const WAIT: Duration = Duration::from_secs(5);
const OPENED: &str = r#"gangway_upstream_connections_opened_total{service="default/scripted"}"#;
const REUSED: &str = r#"gangway_upstream_connections_reused_total{service="default/scripted"}"#;

/// Responses of a [`ScriptedUpstream`] in order, each with whether the connection closes
/// after it.
type Script = Arc<Mutex<VecDeque<(&'static [u8], bool)>>>;

/// A raw upstream that sends its scripted responses in order, one per request head it
/// reads, and closes a connection after a response marked to close it.
struct ScriptedUpstream {
    address: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for ScriptedUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedUpstream {
    async fn start(script: Vec<(&'static [u8], bool)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let script: Script = Arc::new(Mutex::new(VecDeque::from(script)));
        let task = tokio::spawn({
            let accepted = accepted.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve(stream, script.clone()));
                }
            }
        });
        Self {
            address,
            accepted,
            task,
        }
    }
}

async fn serve(mut stream: TcpStream, script: Script) {
    loop {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0_u8; 1];
            match stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let Some((response, close)) = script.lock().unwrap().pop_front() else {
            return;
        };
        if stream.write_all(response).await.is_err() || close {
            return;
        }
    }
}

fn request(method: Method, path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "foo.example.com")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn framings_end_bodies_and_keep_connection() {
    let upstream = ScriptedUpstream::start(vec![
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nchunks\r\n0\r\n\r\n",
            false,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", false),
        (b"HTTP/1.1 204 No Content\r\n\r\n", false),
        (b"HTTP/1.1 200 OK\r\n\r\nuntil the close", true),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnew", false),
    ])
    .await;
    let echo = backend("scripted", UpstreamProtocol::Http1, &[upstream.address]);
    let proxy = TestProxy::start(one_route(&echo));
    // One client connection keeps every request on one worker, so on one upstream pool.
    let mut client = http1_client::<Full<Bytes>>(proxy.http_addr()).await;
    let mut exchange = async |method: Method, path: &str| {
        let sending = client.send_request(request(method, path));
        let response = tokio::time::timeout(WAIT, sending).await.unwrap().unwrap();
        tokio::time::timeout(WAIT, Collected::read(response))
            .await
            .unwrap()
    };

    let length = exchange(Method::GET, "/length").await;
    assert_eq!(length.status, StatusCode::OK);
    assert_eq!(length.body, "hello");
    let chunked = exchange(Method::GET, "/chunked").await;
    assert_eq!(chunked.body, "chunks");
    let head = exchange(Method::HEAD, "/head").await;
    assert_eq!(head.header("content-length"), Some("10"));
    assert!(head.body.is_empty());
    let no_content = exchange(Method::GET, "/no-content").await;
    assert_eq!(no_content.status, StatusCode::NO_CONTENT);
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 1);

    // A body delimited by the close ends the connection; the next request opens another.
    let until_close = exchange(Method::GET, "/until-close").await;
    assert_eq!(until_close.body, "until the close");
    let after = exchange(Method::GET, "/after").await;
    assert_eq!(after.body, "new");
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(metric_value(&proxy, OPENED), 2);
    assert_eq!(metric_value(&proxy, REUSED), 4);
}

#[tokio::test]
async fn length_dropped_when_chunked() {
    let upstream = ScriptedUpstream::start(vec![
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            false,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext", false),
    ])
    .await;
    let echo = backend("scripted", UpstreamProtocol::Http1, &[upstream.address]);
    let proxy = TestProxy::start(one_route(&echo));
    let mut client = http1_client::<Full<Bytes>>(proxy.http_addr()).await;

    for (path, expected) in [("/both", "ok"), ("/next", "next")] {
        let sending = client.send_request(request(Method::GET, path));
        let response = tokio::time::timeout(WAIT, sending).await.unwrap().unwrap();
        let response = tokio::time::timeout(WAIT, Collected::read(response))
            .await
            .unwrap();
        assert_eq!(response.body, expected, "{path}");
    }
    // Such a response may be an attempt at response splitting, so its connection closes.
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unrequested_upgrade_answers_502_on_both_paths() {
    let switching =
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n";
    let upstream = ScriptedUpstream::start(vec![(switching, true), (switching, true)]).await;
    let echo = backend("scripted", UpstreamProtocol::Http1, &[upstream.address]);
    let proxy = TestProxy::start(one_route(&echo));

    // GET takes the inline exchange, POST with a body hyper's client.
    for (method, body) in [(Method::GET, ""), (Method::POST, "x")] {
        let mut client = http1_client::<Full<Bytes>>(proxy.http_addr()).await;
        let mut sent = request(method.clone(), "/");
        *sent.body_mut() = Full::new(Bytes::from(body));
        let response = tokio::time::timeout(WAIT, client.send_request(sent))
            .await
            .unwrap()
            .unwrap();
        let response = Collected::read(response).await;
        assert_eq!(response.status, StatusCode::BAD_GATEWAY, "{method}");
        assert_eq!(
            response.header("x-gangway-error"),
            Some("protocol-error"),
            "{method}"
        );
    }
}

#[tokio::test]
async fn bad_framing_answers_502() {
    let upstream = ScriptedUpstream::start(vec![(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        false,
    )])
    .await;
    let echo = backend("scripted", UpstreamProtocol::Http1, &[upstream.address]);
    let proxy = TestProxy::start(one_route(&echo));
    let mut client = http1_client::<Full<Bytes>>(proxy.http_addr()).await;

    let sending = client.send_request(request(Method::GET, "/"));
    let response = tokio::time::timeout(WAIT, sending).await.unwrap().unwrap();
    let response = Collected::read(response).await;
    assert_eq!(response.status, StatusCode::BAD_GATEWAY);
    assert_eq!(response.header("x-gangway-error"), Some("protocol-error"));
}
