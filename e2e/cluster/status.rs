//! Ingress status: addresses written on Gangway's Ingresses only, only when they differ,
//! cleared when an Ingress leaves the class, taken from the publish Service, and retried.

use std::time::Duration;

use gangway::store::ObjectKey;
use gangway_test_apiserver::{FailRule, RequestMatch};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, Patch, PatchParams};

use crate::fixtures::{create_web_app, ingress, service};
use crate::harness::{Cluster, Gangway};

const WEB_STATUS_PATH: &str = "/apis/networking.k8s.io/v1/namespaces/default/ingresses/web/status";

fn ip(address: &str) -> (String, String) {
    (address.to_owned(), String::new())
}

fn hostname(name: &str) -> (String, String) {
    (String::new(), name.to_owned())
}

/// Sets the status of Ingress `default/<name>` as another controller would.
async fn set_foreign_status(cluster: &Cluster, name: &str, address: &str) {
    let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": address}]}}});
    Api::<Ingress>::namespaced(cluster.client.clone(), "default")
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("foreign status is written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_written_once_for_owned_ingress() {
    let cluster = Cluster::start().await;
    create_web_app(&cluster).await;
    cluster
        .apply(&ingress(
            "default",
            "other",
            "nginx",
            "other.example.com",
            "web",
        ))
        .await;
    let mut options = cluster.options("gangway-a");
    options.publish_address = vec!["lb.example.com".to_owned(), "192.0.2.10".to_owned()];
    let gangway = Gangway::start(options);

    cluster
        .wait_for_ingress_status("web", &[ip("192.0.2.10"), hostname("lb.example.com")])
        .await;
    // The write comes back as a watch event and a new compile; the status then matches, so
    // nothing more is written.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(cluster.requests("PATCH", WEB_STATUS_PATH).len(), 1);
    assert_eq!(cluster.ingress_status("other").await, vec![]);
    assert!(
        cluster
            .requests("PATCH", "/ingresses/other/status")
            .is_empty(),
        "an Ingress of another class was written"
    );

    gangway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_cleared_after_leaving_class() {
    let cluster = Cluster::start().await;
    create_web_app(&cluster).await;
    cluster
        .apply(&ingress(
            "default",
            "nginx",
            "nginx",
            "nginx.example.com",
            "web",
        ))
        .await;
    set_foreign_status(&cluster, "nginx", "198.51.100.1").await;
    let gangway = Gangway::start(cluster.options("gangway-a"));
    cluster
        .wait_for_ingress_status("web", &[ip("192.0.2.10")])
        .await;

    cluster
        .apply(&ingress(
            "default",
            "web",
            "nginx",
            "web.example.com",
            "web",
        ))
        .await;
    cluster.wait_for_ingress_status("web", &[]).await;

    assert_eq!(
        cluster.ingress_status("nginx").await,
        vec![ip("198.51.100.1")],
        "another controller's address is left alone"
    );
    gangway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_follows_publish_service() {
    let cluster = Cluster::start().await;
    create_web_app(&cluster).await;
    let mut load_balancer = service("default", "gangway");
    load_balancer.push_str("  type: LoadBalancer\n");
    cluster.apply(&load_balancer).await;
    let mut options = cluster.options("gangway-a");
    options.publish_address.clear();
    options.publish_service = Some(ObjectKey::new("default", "gangway"));
    let gangway = Gangway::start(options);
    gangway.wait_ready().await;

    // The load balancer is still pending: no address, so nothing is written.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(cluster.requests("PATCH", WEB_STATUS_PATH).is_empty());

    let services = Api::<Service>::namespaced(cluster.client.clone(), "default");
    let provisioned =
        serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}]}}});
    services
        .patch_status(
            "gangway",
            &PatchParams::default(),
            &Patch::Merge(&provisioned),
        )
        .await
        .expect("Service status is written");
    cluster
        .wait_for_ingress_status("web", &[ip("203.0.113.5")])
        .await;

    let moved = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.net"}]}}});
    services
        .patch_status("gangway", &PatchParams::default(), &Patch::Merge(&moved))
        .await
        .expect("Service status is written");
    cluster
        .wait_for_ingress_status("web", &[hostname("lb.example.net")])
        .await;

    gangway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_status_write_is_retried() {
    let cluster = Cluster::start().await;
    create_web_app(&cluster).await;
    cluster
        .server
        .fail_requests(FailRule {
            matching: RequestMatch::any()
                .method("PATCH")
                .path_prefix(WEB_STATUS_PATH),
            count: 2,
            status: 500,
            retry_after_seconds: None,
        })
        .expect("fault is installed");
    let gangway = Gangway::start(cluster.options("gangway-a"));

    cluster
        .wait_for_ingress_status("web", &[ip("192.0.2.10")])
        .await;
    let statuses: Vec<u16> = cluster
        .requests("PATCH", WEB_STATUS_PATH)
        .iter()
        .map(|request| request.status)
        .collect();
    assert_eq!(statuses, vec![500, 500, 200]);

    gangway.stop().await;
}
