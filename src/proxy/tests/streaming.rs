//! Bodies stream through the proxy in both directions instead of being buffered whole.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use tokio::sync::{Notify, mpsc};

use super::harness::{TestProxy, backend, http1_client, one_route};
use super::upstream::{BoxError, TestUpstream, Transport};
use crate::snapshot::UpstreamProtocol;

/// Bound on each wait, so a proxy that buffers fails the test instead of hanging it.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);

fn proxy_to(upstream: &TestUpstream) -> TestProxy {
    let streaming = backend("streaming", UpstreamProtocol::Http1, &[upstream.address]);
    let snapshot = one_route(&streaming);
    TestProxy::start(snapshot)
}

async fn next_data(body: &mut Incoming) -> Option<Bytes> {
    let frame = tokio::time::timeout(STEP_TIMEOUT, body.frame())
        .await
        .expect("a frame arrives in time")?
        .expect("the frame is not an error");
    Some(frame.into_data().expect("a data frame"))
}

#[tokio::test]
async fn slow_response_body_arrives_in_pieces() {
    let release = Arc::new(Notify::new());
    let upstream = {
        let release = release.clone();
        TestUpstream::start(
            Transport::Plain,
            Arc::new(move |_request| {
                let release = release.clone();
                Box::pin(async move {
                    let (mut sender, body) = Channel::<Bytes, BoxError>::new(1);
                    tokio::spawn(async move {
                        sender.send_data(Bytes::from("first")).await.unwrap();
                        release.notified().await;
                        sender.send_data(Bytes::from("second")).await.unwrap();
                    });
                    Response::new(body.boxed_unsync())
                })
            }),
        )
        .await
    };
    let proxy = proxy_to(&upstream);

    let mut client = http1_client::<Empty<Bytes>>(proxy.http_addr()).await;
    let request = Request::get("/")
        .header("host", "foo.example.com")
        .body(Empty::new())
        .unwrap();
    let response = tokio::time::timeout(STEP_TIMEOUT, client.send_request(request))
        .await
        .expect("the head arrives before the body ends")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();

    let first = next_data(&mut body).await;
    assert_eq!(first.as_deref(), Some(&b"first"[..]));

    release.notify_one();
    let second = next_data(&mut body).await;
    assert_eq!(second.as_deref(), Some(&b"second"[..]));
    assert_eq!(next_data(&mut body).await, None);
}

#[tokio::test]
async fn large_request_body_streams_upstream() {
    const CHUNK: usize = 1 << 20;
    let (progress_sender, mut progress) = mpsc::unbounded_channel::<usize>();
    let upstream = TestUpstream::start(
        Transport::Plain,
        Arc::new(move |request: Request<Incoming>| {
            let progress_sender = progress_sender.clone();
            Box::pin(async move {
                let mut body = request.into_body();
                let mut received = 0;
                while let Some(Ok(frame)) = body.frame().await {
                    if let Some(data) = frame.data_ref() {
                        received += data.len();
                        let _ = progress_sender.send(received);
                    }
                }
                Response::new(super::upstream::full_body(received.to_string()))
            })
        }),
    )
    .await;
    let proxy = proxy_to(&upstream);

    let mut client = http1_client::<Channel<Bytes>>(proxy.http_addr()).await;
    let (mut body_sender, body) = Channel::<Bytes>::new(4);
    let request = Request::post("/upload")
        .header("host", "foo.example.com")
        .body(body)
        .unwrap();
    let response = tokio::spawn(client.send_request(request));

    body_sender
        .send_data(Bytes::from(vec![b'a'; CHUNK]))
        .await
        .unwrap();
    // The upstream must receive the first chunk before the client sends the rest.
    let mut seen = 0;
    while seen < CHUNK {
        seen = tokio::time::timeout(STEP_TIMEOUT, progress.recv())
            .await
            .expect("the first chunk reaches the upstream before the body ends")
            .unwrap();
    }
    body_sender
        .send_data(Bytes::from(vec![b'b'; CHUNK]))
        .await
        .unwrap();
    drop(body_sender);

    let response = tokio::time::timeout(STEP_TIMEOUT, response)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let total = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(total, (2 * CHUNK).to_string());
}
