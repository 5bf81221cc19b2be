//! The admin listener's endpoints, over a real socket.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::harness::{SnapshotBuilder, backend, get, prefix};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::proxy::admin;
use crate::snapshot::UpstreamProtocol;
use crate::status::{Problem, StatusReport};
use crate::store::{ObjectKey, ObjectRef};

struct TestAdmin {
    address: std::net::SocketAddr,
    live: Arc<Live>,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start_admin() -> TestAdmin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let live = Arc::new(Live::new(Arc::new(Metrics::new())));
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(admin::serve(listener, live.clone(), shutdown.clone()));
    TestAdmin {
        address,
        live,
        shutdown,
        served,
    }
}

fn publish_one_route(live: &Live) {
    let api = backend(
        "api",
        UpstreamProtocol::Http1,
        &["127.0.0.1:9".parse().unwrap()],
    );
    let snapshot = SnapshotBuilder::default()
        .forward("foo.example.com", prefix("/api"), &api)
        .build();
    let report = StatusReport {
        problems: vec![Problem::warning(
            ObjectRef::new("Ingress", ObjectKey::new("default", "foo")),
            "spec.rules[0].http.paths[0].backend.service.name",
            "ServiceNotFound",
            "service \"missing\" not found",
        )],
        owned_ingresses: vec![ObjectKey::new("default", "foo")],
    };
    live.publish(snapshot, report, Duration::from_millis(1));
}

#[tokio::test]
async fn healthz_always_ok() {
    let admin = start_admin().await;

    let response = get(admin.address, "localhost", "/healthz").await;

    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn readyz_waits_for_first_snapshot() {
    let admin = start_admin().await;

    let before = get(admin.address, "localhost", "/readyz").await;
    publish_one_route(&admin.live);
    let after = get(admin.address, "localhost", "/readyz").await;

    assert_eq!(before.status, 503);
    assert_eq!(after.status, 200);
}

#[tokio::test]
async fn metrics_in_openmetrics_format() {
    let admin = start_admin().await;
    publish_one_route(&admin.live);

    let response = get(admin.address, "localhost", "/metrics").await;

    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = String::from_utf8(response.body.to_vec()).unwrap();
    assert!(text.contains("gangway_snapshot_generation 1"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
}

#[tokio::test]
async fn debug_routes_show_table_and_problems() {
    let admin = start_admin().await;
    publish_one_route(&admin.live);

    let response = get(admin.address, "localhost", "/debug/routes").await;

    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(json["generation"], 1);
    assert_eq!(json["virtualHosts"][0]["host"], "foo.example.com");
    assert_eq!(json["virtualHosts"][0]["routes"][0]["path"], "/api");
    assert_eq!(json["backends"][0]["id"], "default/api:80");
    assert_eq!(json["problems"][0]["reason"], "ServiceNotFound");
}

#[tokio::test]
async fn unknown_path_is_404() {
    let admin = start_admin().await;

    let response = get(admin.address, "localhost", "/nope").await;

    assert_eq!(response.status, 404);
}

#[tokio::test]
async fn serve_returns_after_shutdown() {
    let admin = start_admin().await;

    admin.shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), admin.served)
        .await
        .expect("serve returns after shutdown")
        .unwrap();

    assert!(result.is_ok());
    assert!(tokio::net::TcpStream::connect(admin.address).await.is_err());
}
