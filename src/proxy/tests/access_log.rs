//! The access log: one `gangway::access` event per request, with the documented fields.
//!
//! Workers run on their own threads, so the events are captured by a process-wide subscriber
//! and matched by request id.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{Empty, Full};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use super::harness::{
    Collected, TestProxy, backend, h2c_client, http1_client, metric_value, one_route, send,
};
use super::lifecycle::slow_upstream;
use super::upstream::{TestUpstream, Transport};
use crate::snapshot::UpstreamProtocol;

/// Bound on waiting for something that should happen soon.
const WAIT: Duration = Duration::from_secs(5);

/// Fields of one captured event, values formatted with `Debug` or as text.
type Fields = BTreeMap<String, String>;

static ACCESS_EVENTS: OnceLock<Arc<Mutex<Vec<Fields>>>> = OnceLock::new();

struct CaptureAccessLog {
    events: Arc<Mutex<Vec<Fields>>>,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CaptureAccessLog {
    fn on_event(&self, event: &tracing::Event<'_>, _context: Context<'_, S>) {
        let metadata = event.metadata();
        if metadata.target() != "gangway::access" {
            return;
        }
        let mut fields = FieldsVisitor(Fields::new());
        event.record(&mut fields);
        fields
            .0
            .insert("level".into(), metadata.level().to_string());
        self.events.lock().unwrap().push(fields.0);
    }
}

struct FieldsVisitor(Fields);

impl Visit for FieldsVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
}

/// Installs the capturing subscriber once per test process.
fn access_events() -> Arc<Mutex<Vec<Fields>>> {
    ACCESS_EVENTS
        .get_or_init(|| {
            let events = Arc::new(Mutex::new(Vec::new()));
            let subscriber = tracing_subscriber::registry().with(CaptureAccessLog {
                events: events.clone(),
            });
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other test sets a global subscriber");
            events
        })
        .clone()
}

fn events_for(request_id: &str) -> Vec<Fields> {
    access_events()
        .lock()
        .unwrap()
        .iter()
        .filter(|fields| fields.get("request_id").map(String::as_str) == Some(request_id))
        .cloned()
        .collect()
}

fn request_with_id(request_id: &str) -> Request<Full<Bytes>> {
    Request::get("/path?token=secret")
        .header("host", "foo.example.com")
        .header("x-request-id", request_id)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn access_event_per_request() {
    access_events();
    let upstream = TestUpstream::echo("echo", Transport::Plain).await;
    let proxy = TestProxy::start(one_route(&backend(
        "echo",
        UpstreamProtocol::Http1,
        &[upstream.address],
    )));

    // From a second loopback address, so that the client field cannot be the proxy's own.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let stream = socket.connect(proxy.http_addr()).await.unwrap();
    let client = stream.local_addr().unwrap();
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    // The proxy writes the event before it sends the response head.
    let response = Collected::read(
        sender
            .send_request(request_with_id("access-log-on"))
            .await
            .unwrap(),
    )
    .await;

    assert_eq!(response.status, StatusCode::OK);
    let events = events_for("access-log-on");
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["client"], client.to_string());
    assert_eq!(event["method"], "GET");
    assert_eq!(event["host"], "foo.example.com");
    assert_eq!(
        event["path"], "/path",
        "the query string stays out of the log"
    );
    assert_eq!(event["status"], "200");
    assert_eq!(event["upstream"], upstream.address.to_string());
    assert_eq!(event["route"], "ingress/default/foo.example.com/path/");
    let duration = &event["duration_ms"];
    assert!(duration.parse::<f64>().unwrap() >= 0.0);
    let decimals = duration
        .split_once('.')
        .map_or(0, |(_, decimals)| decimals.len());
    assert!(decimals <= 3, "{duration} has more than microsecond digits");
}

/// The series that counts abandoned requests on the route of [`slow_proxy`].
const ABANDONED: &str = concat!(
    r#"gangway_http_requests_total{ingress="default/foo.example.com","#,
    r#"service="default/echo",code="499"}"#
);

/// Starts a proxy with `config` in front of an upstream that responds after `delay`, and
/// returns the channel on which the upstream reports each request it receives.
async fn slow_proxy(
    config: crate::proxy::ProxyConfig,
    delay: Duration,
) -> (
    TestUpstream,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    TestProxy,
) {
    let (upstream, started) = slow_upstream(delay).await;
    let route = one_route(&backend(
        "echo",
        UpstreamProtocol::Http1,
        &[upstream.address],
    ));
    let proxy = TestProxy::start_with(config, route);
    (upstream, started, proxy)
}

#[tokio::test]
async fn abandoned_request_logged_as_499() {
    access_events();
    let (upstream, mut started_receiver, proxy) =
        slow_proxy(TestProxy::config(), Duration::from_secs(30)).await;

    let mut stream = TcpStream::connect(proxy.http_addr()).await.unwrap();
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nHost: foo.example.com\r\nX-Request-ID: access-log-abandoned\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(WAIT, started_receiver.recv())
        .await
        .expect("the request reaches the upstream");
    drop(stream);

    let events = wait_for_events("access-log-abandoned").await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event["status"], "499");
    assert_eq!(event["path"], "/slow");
    assert_eq!(event["upstream"], upstream.address.to_string());
    assert_eq!(event["route"], "ingress/default/foo.example.com/path/");
    assert_eq!(metric_value(&proxy, ABANDONED), 1);
}

/// Waits until the access log has an event for `request_id`, and returns its events.
async fn wait_for_events(request_id: &str) -> Vec<Fields> {
    tokio::time::timeout(WAIT, async {
        loop {
            let events = events_for(request_id);
            if !events.is_empty() {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no access event for {request_id}"))
}

#[tokio::test]
async fn http2_reset_stream_logged_as_499() {
    access_events();
    let (upstream, mut started_receiver, proxy) =
        slow_proxy(TestProxy::config(), Duration::from_secs(30)).await;

    let mut sender = h2c_client::<Empty<Bytes>>(proxy.http_addr()).await;
    let request = Request::get("http://foo.example.com/slow")
        .header("x-request-id", "access-log-h2-reset")
        .body(Empty::new())
        .unwrap();
    let pending = tokio::spawn(sender.send_request(request));
    tokio::time::timeout(WAIT, started_receiver.recv())
        .await
        .expect("the request reaches the upstream");
    // hyper's HTTP/2 client resets a stream whose response future is dropped.
    pending.abort();

    let events = wait_for_events("access-log-h2-reset").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["status"], "499");
    assert_eq!(events[0]["upstream"], upstream.address.to_string());
    assert_eq!(metric_value(&proxy, ABANDONED), 1);
    assert!(!sender.is_closed(), "a reset stream keeps its connection");
}

#[tokio::test]
async fn request_cut_by_shutdown_logged_as_499() {
    access_events();
    let mut config = TestProxy::config();
    config.shutdown_timeout = Duration::from_millis(300);
    config.upstream_response_timeout = Duration::from_secs(60);
    let (_upstream, mut started_receiver, proxy) =
        slow_proxy(config, Duration::from_secs(60)).await;
    let live = proxy.live.clone();

    let mut sender = http1_client::<Full<Bytes>>(proxy.http_addr()).await;
    let in_flight = tokio::spawn(sender.send_request(request_with_id("access-log-shutdown")));
    tokio::time::timeout(WAIT, started_receiver.recv())
        .await
        .expect("the request reaches the upstream");
    tokio::time::timeout(WAIT, proxy.stop())
        .await
        .expect("join returns once the shutdown timeout passes");
    let _ = in_flight.await;

    // The workers have returned, so every event they write is already captured.
    let events = events_for("access-log-shutdown");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["status"], "499");
    let metrics = live.metrics().encode();
    assert!(metrics.contains(&format!("{ABANDONED} 1")), "{metrics}");
}

#[tokio::test]
async fn upgrade_client_gone_logged_as_499() {
    access_events();
    let (_upstream, mut started_receiver, proxy) =
        slow_proxy(TestProxy::config(), Duration::from_secs(30)).await;

    let mut stream = TcpStream::connect(proxy.http_addr()).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: foo.example.com\r\nConnection: Upgrade\r\n\
              Upgrade: websocket\r\nX-Request-ID: access-log-upgrade-gone\r\n\r\n",
        )
        .await
        .unwrap();
    tokio::time::timeout(WAIT, started_receiver.recv())
        .await
        .expect("the upgrade request reaches the upstream");
    drop(stream);

    let events = wait_for_events("access-log-upgrade-gone").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["status"], "499");
}

#[tokio::test]
async fn access_log_off_writes_nothing() {
    access_events();
    let upstream = TestUpstream::echo("echo", Transport::Plain).await;
    let mut config = TestProxy::config();
    config.access_log = false;
    let proxy = TestProxy::start_with(
        config,
        one_route(&backend(
            "echo",
            UpstreamProtocol::Http1,
            &[upstream.address],
        )),
    );

    let response = send(proxy.http_addr(), request_with_id("access-log-off")).await;

    assert_eq!(response.status, StatusCode::OK);
    assert!(events_for("access-log-off").is_empty());
}
