//! Leader election with two instances: both serve, only the Lease holder writes, and the
//! Lease moves on a clean shutdown (release) and after a crash (expiry).

use std::time::Duration;

use gangway_test_apiserver::{RequestMatch, StallRule};
use k8s_openapi::api::coordination::v1::Lease;

use crate::fixtures::{create_web_app, ingress};
use crate::harness::{Cluster, Gangway, LEASE, eventually_async};

/// Waits until the Lease names `expected` as holder (`None`: no holder).
async fn wait_for_holder(cluster: &Cluster, expected: Option<&str>) {
    eventually_async(&format!("the Lease holder is {expected:?}"), || async {
        let holder = cluster.lease_holder().await;
        if holder.as_deref() == expected {
            Ok(())
        } else {
            Err(holder)
        }
    })
    .await;
}

/// Creates the Ingress `default/api`, waits until it has a status, and checks that every
/// Ingress status write since the request log was last cleared came from `writer`.
async fn check_new_status_written_by(cluster: &Cluster, writer: &str) {
    cluster
        .apply(&ingress(
            "default",
            "api",
            "gangway",
            "api.example.com",
            "web",
        ))
        .await;
    eventually_async("Ingress api has a status", || async {
        let status = cluster.ingress_status("api").await;
        if status.is_empty() {
            Err("no status")
        } else {
            Ok(())
        }
    })
    .await;

    let writers: Vec<String> = cluster
        .requests("PATCH", "/status")
        .into_iter()
        .filter(|request| request.path.contains("/ingresses/"))
        .map(|request| request.user)
        .collect();
    assert!(!writers.is_empty(), "no status write was logged");
    assert!(
        writers.iter().all(|user| user == writer),
        "status writers: {writers:?}, expected only {writer}"
    );
}

async fn lease_transitions(cluster: &Cluster) -> i32 {
    let lease: Option<Lease> = cluster.get("default", LEASE).await;
    lease
        .and_then(|lease| lease.spec)
        .and_then(|spec| spec.lease_transitions)
        .unwrap_or_default()
}

/// Starts `gangway-a`, waits until it leads, then starts `gangway-b` and waits until it
/// serves.
async fn start_pair(cluster: &Cluster) -> (Gangway, Gangway) {
    create_web_app(cluster).await;
    let a = Gangway::start(cluster.options("gangway-a"));
    wait_for_holder(cluster, Some("gangway-a")).await;
    let b = Gangway::start(cluster.options("gangway-b"));
    b.wait_ready().await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_leader_writes_status() {
    let cluster = Cluster::start().await;
    let (a, b) = start_pair(&cluster).await;

    check_new_status_written_by(&cluster, "gangway-a").await;
    for gangway in [&a, &b] {
        gangway
            .wait_for_hosts(&["api.example.com", "web.example.com"])
            .await;
    }

    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_lease() {
    let cluster = Cluster::start().await;
    create_web_app(&cluster).await;
    let a = Gangway::start(cluster.options("gangway-a"));
    wait_for_holder(&cluster, Some("gangway-a")).await;

    a.stop().await;
    assert_eq!(cluster.lease_holder().await, None, "the Lease was released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_on_shutdown() {
    let cluster = Cluster::start().await;
    let (a, b) = start_pair(&cluster).await;

    a.stop().await;
    wait_for_holder(&cluster, Some("gangway-b")).await;
    cluster.server.clear_requests();
    check_new_status_written_by(&cluster, "gangway-b").await;

    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_after_crash() {
    let cluster = Cluster::start().await;
    let (a, b) = start_pair(&cluster).await;
    let transitions_before = lease_transitions(&cluster).await;

    // A crashed leader does not release the Lease: b takes it once it expires.
    a.crash();
    wait_for_holder(&cluster, Some("gangway-b")).await;
    assert_eq!(lease_transitions(&cluster).await, transitions_before + 1);
    cluster.server.clear_requests();
    check_new_status_written_by(&cluster, "gangway-b").await;

    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_renewal_stops_status_writes() {
    let cluster = Cluster::start().await;
    create_web_app(&cluster).await;
    let a = Gangway::start(cluster.options("gangway-a"));
    wait_for_holder(&cluster, Some("gangway-a")).await;
    a.wait_ready().await;

    // Lease writes hang far longer than the renew deadline (2 s). Each attempt gives up within
    // the deadline, so the leader stops writing status instead of waiting on the request.
    cluster.server.stall_requests(StallRule {
        matching: RequestMatch::any()
            .method("PUT")
            .path_prefix("/apis/coordination.k8s.io/v1/namespaces/default/leases"),
        count: None,
        delay: Duration::from_secs(60),
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster
        .apply(&ingress(
            "default",
            "api",
            "gangway",
            "api.example.com",
            "web",
        ))
        .await;
    a.wait_for_hosts(&["api.example.com", "web.example.com"])
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        cluster.ingress_status("api").await,
        vec![],
        "a replica whose renewals hang kept writing status"
    );

    // Once the Lease can be written again, the replica leads and catches up.
    cluster.server.clear_faults();
    eventually_async("Ingress api has a status", || async {
        let status = cluster.ingress_status("api").await;
        if status.is_empty() {
            Err("no status")
        } else {
            Ok(())
        }
    })
    .await;

    a.stop().await;
}
