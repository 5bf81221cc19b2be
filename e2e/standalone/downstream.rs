//! The client side: a client that sends its request head too slowly, and a keep-alive
//! connection that stays idle, are closed while other clients keep being served. HTTP/1.0
//! clients get keep-alive when they ask for it.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::clients::{CHANGE_TIMEOUT, Http1Client, get};
use crate::support::gangway::start_echo_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_head_is_closed() {
    let (gangway, _server) =
        start_echo_app("app.test", &["--client-header-timeout", "300ms"]).await;

    // Half a request head, then silence.
    let mut slow = TcpStream::connect(gangway.http).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n")
        .await
        .unwrap();

    let mut received = Vec::new();
    let read = tokio::time::timeout(CHANGE_TIMEOUT, slow.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the proxy kept the slow connection open");
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "unexpected response to a slow request head: {text}"
    );
    assert_eq!(get(gangway.http, "app.test", "/").await.outcome(), "app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connection_is_closed() {
    let (gangway, _server) = start_echo_app("app.test", &["--idle-timeout", "300ms"]).await;
    let mut client = Http1Client::connect(gangway.http).await.unwrap();
    let reply = client.get("app.test", "/").await.unwrap();
    assert_eq!(reply.status, 200);

    let started = Instant::now();
    while !client.is_closed() {
        assert!(
            started.elapsed() < CHANGE_TIMEOUT,
            "the idle connection stayed open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(get(gangway.http, "app.test", "/").await.outcome(), "app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_outlives_the_header_timeout() {
    // The header timeout bounds the wait for a request head, not the idle time after a
    // response, which has its own limit.
    let (gangway, _server) = start_echo_app(
        "app.test",
        &["--client-header-timeout", "300ms", "--idle-timeout", "30s"],
    )
    .await;
    let mut client = Http1Client::connect(gangway.http).await.unwrap();
    assert_eq!(client.get("app.test", "/").await.unwrap().status, 200);

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !client.is_closed(),
        "the idle connection closed at the header timeout"
    );
    assert_eq!(client.get("app.test", "/").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_second_request_head_is_closed() {
    let (gangway, _server) = start_echo_app("app.test", &["--idle-timeout", "300ms"]).await;
    let mut stream = TcpStream::connect(gangway.http).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    tokio::time::timeout(CHANGE_TIMEOUT, stream.read_exact(&mut first))
        .await
        .expect("no response to the first request")
        .unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    // Half of a second request head, then silence.
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(CHANGE_TIMEOUT, stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the proxy kept the slow connection open");
    assert_eq!(get(gangway.http, "app.test", "/").await.outcome(), "app");
}

/// Reads one response whose body has a `Content-Length`, and returns its head.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(CHANGE_TIMEOUT, stream.read(&mut buffer))
            .await
            .expect("timed out reading a response")
            .unwrap();
        assert!(read > 0, "connection closed before a whole response");
        received.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&received).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().unwrap())
            })
            .expect("response without Content-Length");
        if body.len() >= length {
            return head.to_owned();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_keep_alive_is_kept() {
    let (gangway, _server) = start_echo_app("app.test", &[]).await;
    let mut stream = TcpStream::connect(gangway.http).await.unwrap();

    // An HTTP/1.0 client that asks for keep-alive gets it, as from nginx.
    for _ in 0..2 {
        stream
            .write_all(b"GET / HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n")
            .await
            .unwrap();
        let head = read_response(&mut stream).await;
        assert!(head.starts_with("HTTP/1.0 200"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("connection: keep-alive"),
            "{head}"
        );
    }

    // Without the header, HTTP/1.0 closes after the response.
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let head = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(CHANGE_TIMEOUT, stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the HTTP/1.0 connection stayed open");
}
