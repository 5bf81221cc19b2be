//! The published snapshot follows the cluster: creates, updates and deletes of every watched
//! kind, readiness only after every initial list, and the namespace limit.

use std::time::Duration;

use gangway_test_apiserver::{RequestMatch, StallRule};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;

use crate::fixtures::{
    GANGWAY_CLASS, certificate_secret, create_web_app, endpoint_slice, ingress, service,
    tls_ingress,
};
use crate::harness::{Cluster, Gangway, endpoints, eventually, hosts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_follow_cluster_changes() {
    let cluster = Cluster::start().await;
    create_web_app(&cluster).await;
    let gangway = Gangway::start(cluster.options("gangway-a"));
    gangway.wait_ready().await;

    let table = gangway.route_table();
    assert_eq!(hosts(&table), vec!["web.example.com"]);
    assert_eq!(
        endpoints(&table, "default/web:http"),
        Some(vec!["10.0.0.1:8080".to_owned()])
    );

    // An EndpointSlice update changes the backend's endpoints.
    cluster
        .apply(&endpoint_slice("default", "web", &["10.0.0.1", "10.0.0.2"]))
        .await;
    eventually("the second endpoint is live", || {
        let found = endpoints(&gangway.route_table(), "default/web:http");
        match found.as_deref() {
            Some([a, b]) if a == "10.0.0.1:8080" && b == "10.0.0.2:8080" => Ok(()),
            _ => Err(found),
        }
    })
    .await;

    // A new Ingress adds a host; an updated one moves its host.
    cluster
        .apply(&ingress(
            "default",
            "api",
            "gangway",
            "api.example.com",
            "web",
        ))
        .await;
    cluster
        .apply(&ingress(
            "default",
            "web",
            "gangway",
            "www.example.com",
            "web",
        ))
        .await;
    eventually("the hosts are api and www", || {
        let found = hosts(&gangway.route_table());
        (found == ["api.example.com", "www.example.com"])
            .then_some(())
            .ok_or(found)
    })
    .await;

    // Deletes remove what the objects contributed.
    cluster.delete::<Ingress>("default", "api").await;
    cluster
        .delete::<EndpointSlice>("default", "web-slice")
        .await;
    eventually("api is gone and web has no endpoint", || {
        let table = gangway.route_table();
        let state = (hosts(&table), endpoints(&table, "default/web:http"));
        (state.0 == ["www.example.com"] && state.1 == Some(vec![]))
            .then_some(())
            .ok_or(state)
    })
    .await;

    gangway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_change_is_one_compile() {
    let cluster = Cluster::start().await;
    create_web_app(&cluster).await;
    // Without an address no status is written, so no watch event comes from Gangway itself.
    let mut options = cluster.options("gangway-a");
    options.publish_address.clear();
    let gangway = Gangway::start(options);
    gangway.wait_ready().await;
    let before = gangway.live.snapshot().generation;
    assert_eq!(before, 1, "the first complete view is generation 1");

    cluster
        .apply(&endpoint_slice("default", "web", &["10.0.0.9"]))
        .await;
    eventually("the new endpoint is live", || {
        let found = endpoints(&gangway.route_table(), "default/web:http");
        (found == Some(vec!["10.0.0.9:8080".to_owned()]))
            .then_some(())
            .ok_or(found)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        gangway.live.snapshot().generation,
        before + 1,
        "one watch event publishes one generation"
    );

    gangway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_snapshot_waits_for_every_kind() {
    let cluster = Cluster::start().await;
    create_web_app(&cluster).await;
    let secret = certificate_secret(
        "default",
        "web-tls",
        "kubernetes.io/tls",
        &["web.example.com"],
    );
    cluster.apply_object(&secret).await;
    cluster
        .apply(&tls_ingress("default", "web", "web.example.com", "web-tls"))
        .await;
    // The first list of Secrets takes 1.5 s; every other kind lists at once.
    cluster.server.stall_requests(StallRule {
        matching: RequestMatch::any()
            .method("GET")
            .path_prefix("/api/v1/secrets"),
        count: Some(1),
        delay: Duration::from_millis(1500),
    });

    // Without an address no status is written, which would publish a second generation.
    let mut options = cluster.options("gangway-a");
    options.publish_address.clear();
    let gangway = Gangway::start(options);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !gangway.live.is_ready(),
        "ready before the Secrets were listed"
    );
    gangway.wait_ready().await;

    let table = gangway.route_table();
    assert_eq!(
        table.generation, 1,
        "nothing was published before the first complete view"
    );
    assert_eq!(hosts(&table), vec!["web.example.com"]);
    let certificates: Vec<_> = table
        .certificates
        .iter()
        .map(|row| (row.host.as_str(), row.secret.as_str()))
        .collect();
    assert_eq!(certificates, vec![("web.example.com", "default/web-tls")]);

    gangway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tls_secrets_are_watched() {
    let cluster = Cluster::start().await;
    create_web_app(&cluster).await;
    let opaque = certificate_secret("default", "web-tls", "Opaque", &["web.example.com"]);
    cluster.apply_object(&opaque).await;
    cluster
        .apply(&tls_ingress("default", "web", "web.example.com", "web-tls"))
        .await;
    let gangway = Gangway::start(cluster.options("gangway-a"));
    gangway.wait_ready().await;

    assert_eq!(gangway.route_table().certificates, vec![]);
    let secret_lists = cluster.requests("GET", "/api/v1/secrets");
    assert!(!secret_lists.is_empty(), "Secrets were listed");
    for request in &secret_lists {
        assert!(
            request
                .query
                .contains("fieldSelector=type%3Dkubernetes.io%2Ftls")
                || request
                    .query
                    .contains("fieldSelector=type=kubernetes.io/tls"),
            "Secret request without the TLS field selector: {}",
            request.query
        );
    }

    // Turning the Secret into a TLS Secret makes the certificate live.
    let tls = certificate_secret(
        "default",
        "web-tls-2",
        "kubernetes.io/tls",
        &["web.example.com"],
    );
    cluster.apply_object(&tls).await;
    cluster
        .apply(&tls_ingress(
            "default",
            "web",
            "web.example.com",
            "web-tls-2",
        ))
        .await;
    eventually("the TLS Secret serves web.example.com", || {
        let certificates = gangway.route_table().certificates;
        match certificates.as_slice() {
            [row] if row.secret == "default/web-tls-2" => Ok(()),
            _ => Err(certificates),
        }
    })
    .await;

    gangway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_namespace_limits_objects() {
    let cluster = Cluster::start().await;
    cluster.create_namespace("team-a").await;
    cluster.create_namespace("team-b").await;
    cluster.apply(GANGWAY_CLASS).await;
    for namespace in ["team-a", "team-b"] {
        cluster.apply(&service(namespace, "web")).await;
        let host = format!("{namespace}.example.com");
        cluster
            .apply(&ingress(namespace, "web", "gangway", &host, "web"))
            .await;
    }
    let mut options = cluster.options("gangway-a");
    options.watch_namespace = Some("team-a".to_owned());
    let gangway = Gangway::start(options);
    gangway.wait_ready().await;

    assert_eq!(hosts(&gangway.route_table()), vec!["team-a.example.com"]);
    let cluster_wide = cluster
        .server
        .requests()
        .into_iter()
        .filter(|request| {
            request.method == "GET"
                && (request.path == "/apis/networking.k8s.io/v1/ingresses"
                    || request.path == "/api/v1/services")
        })
        .count();
    assert_eq!(cluster_wide, 0, "namespaced kinds were listed cluster-wide");

    gangway.stop().await;
}
