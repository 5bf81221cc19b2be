//! SIGTERM: requests in flight finish, idle connections close, new connections are refused,
//! and the exit code is 0.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::support::backends::HeldBackend;
use crate::support::clients::{Http1Client, REQUEST_TIMEOUT, websocket};
use crate::support::gangway::{Gangway, PROCESS_TIMEOUT, start_echo_app};
use crate::support::manifests::{INGRESS_CLASS, backend, ingress};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_request() {
    let mut upstream = HeldBackend::start().await;
    let mut gangway = Gangway::start_with(
        &[
            ("class.yaml", INGRESS_CLASS),
            ("app.yaml", &backend("app", &[upstream.server.address])),
            ("ingress.yaml", &ingress("app", "app.test", "app")),
        ],
        &["--shutdown-timeout", "20s"],
    )
    .await;

    let mut client = Http1Client::connect(gangway.http).await.unwrap();
    let in_flight = tokio::spawn(async move { client.get("app.test", "/slow").await });
    upstream.wait_for_first_request().await;

    gangway.send_sigterm();

    // The listeners close: new connections are refused while the request is still open.
    let started = Instant::now();
    for address in [gangway.http, gangway.https] {
        loop {
            // While the listening socket closes, a connect may also be reset; only a refusal
            // shows that it is gone.
            let attempt = TcpStream::connect(address).await;
            if let Err(error) = &attempt
                && error.kind() == std::io::ErrorKind::ConnectionRefused
            {
                break;
            }
            assert!(
                started.elapsed() < PROCESS_TIMEOUT,
                "{address} still accepts connections after SIGTERM: {attempt:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(
        gangway.is_running(),
        "gangway exited with a request in flight"
    );
    assert!(
        !in_flight.is_finished(),
        "the request ended before the backend answered"
    );

    upstream.release();
    let reply = tokio::time::timeout(REQUEST_TIMEOUT, in_flight)
        .await
        .expect("the in-flight request did not finish")
        .unwrap()
        .expect("the in-flight request failed");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.outcome(), "held");

    let status = gangway.wait_for_exit().await;
    assert_eq!(status.code(), Some(0));
    let records = gangway.log_records();
    assert!(
        records
            .iter()
            .any(|record| record["message"] == "shutting down" && record["signal"] == "SIGTERM"),
        "no log line for SIGTERM"
    );
    assert!(
        records
            .iter()
            .any(|record| record["message"] == "gangway stopped")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_idle_connections_and_tunnels() {
    let (mut gangway, _server) = start_echo_app("app.test", &["--shutdown-timeout", "2s"]).await;
    let mut idle = Http1Client::connect(gangway.http).await.unwrap();
    let reply = idle.get("app.test", "/").await.unwrap();
    assert_eq!(reply.status, 200);
    let mut socket = websocket(gangway.http, "app.test", "/socket").await;

    gangway.send_sigterm();

    // The idle keep-alive connection is closed at once, so it does not hold up the drain.
    let started = Instant::now();
    while !idle.is_closed() {
        assert!(
            started.elapsed() < PROCESS_TIMEOUT,
            "the idle connection stayed open after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The tunnel counts as a request in flight: Gangway waits for it up to the shutdown
    // timeout, then closes it and exits cleanly.
    let status = gangway.wait_for_exit().await;
    assert_eq!(status.code(), Some(0));
    let closed = tokio::time::timeout(REQUEST_TIMEOUT, socket.next())
        .await
        .expect("the WebSocket stayed open after gangway exited");
    assert!(
        !matches!(closed, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{closed:?}"
    );
    let timed_out = gangway.log_records().into_iter().any(|record| {
        record["message"] == "shutdown timeout reached, closing remaining connections"
    });
    assert!(
        timed_out,
        "the tunnel did not hold the drain until the timeout"
    );
}
