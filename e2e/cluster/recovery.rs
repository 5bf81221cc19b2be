//! Recovery: dropped watches, history compaction (410 Gone) and an API server restart, with
//! the last snapshot serving throughout.

use std::time::Duration;

use gangway_test_apiserver::{RequestMatch, StallRule};

use crate::fixtures::{create_web_app, ingress};
use crate::harness::{Cluster, Gangway, hosts};

const INGRESSES_PATH: &str = "/apis/networking.k8s.io/v1/ingresses";

/// Returns the number of Ingress list requests (not watches) made cluster-wide.
fn ingress_lists(cluster: &Cluster) -> usize {
    cluster
        .requests("GET", INGRESSES_PATH)
        .iter()
        .filter(|request| request.path == INGRESSES_PATH && !request.query.contains("watch=true"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_after_dropped_watches() {
    let cluster = Cluster::start().await;
    create_web_app(&cluster).await;
    let gangway = Gangway::start(cluster.options("gangway-a"));
    gangway.wait_ready().await;
    let lists_before = ingress_lists(&cluster);

    let dropped = cluster.server.drop_watches();
    assert!(
        dropped >= 5,
        "every kind had a watch open, {dropped} dropped"
    );
    cluster
        .apply(&ingress(
            "default",
            "api",
            "gangway",
            "api.example.com",
            "web",
        ))
        .await;
    gangway
        .wait_for_hosts(&["api.example.com", "web.example.com"])
        .await;
    assert_eq!(
        ingress_lists(&cluster),
        lists_before,
        "a dropped watch resumes from its resourceVersion without a relist"
    );

    gangway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relists_after_history_compaction() {
    let cluster = Cluster::start().await;
    create_web_app(&cluster).await;
    let gangway = Gangway::start(cluster.options("gangway-a"));
    gangway.wait_ready().await;
    let lists_before = ingress_lists(&cluster);

    // Hold the Ingress watch back while a change lands and the history is compacted, so the
    // watch resumes from a resourceVersion the server no longer has and gets 410 Gone.
    cluster.server.stall_requests(StallRule {
        matching: RequestMatch::any()
            .method("GET")
            .path_prefix(INGRESSES_PATH),
        count: None,
        delay: Duration::from_secs(1),
    });
    cluster.server.drop_watches();
    cluster
        .apply(&ingress(
            "default",
            "api",
            "gangway",
            "api.example.com",
            "web",
        ))
        .await;
    cluster.server.compact();
    cluster.server.clear_faults();

    gangway
        .wait_for_hosts(&["api.example.com", "web.example.com"])
        .await;
    assert!(
        ingress_lists(&cluster) > lists_before,
        "the Ingress watcher relisted after 410 Gone"
    );

    gangway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_through_apiserver_restart() {
    let cluster = Cluster::start().await;
    create_web_app(&cluster).await;
    let gangway = Gangway::start(cluster.options("gangway-a"));
    gangway.wait_ready().await;

    // Down for longer than the renew deadline (2 s): the leader steps down meanwhile. The
    // compile that the last watch event may have started ends well within the first 200 ms.
    cluster.server.stop().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let generation = gangway.live.snapshot().generation;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        gangway.live.is_ready(),
        "still ready while the API server is down"
    );
    assert_eq!(hosts(&gangway.route_table()), vec!["web.example.com"]);
    assert_eq!(gangway.live.snapshot().generation, generation);
    cluster.server.resume().await.expect("API server resumes");

    cluster
        .apply(&ingress(
            "default",
            "api",
            "gangway",
            "api.example.com",
            "web",
        ))
        .await;
    gangway
        .wait_for_hosts(&["api.example.com", "web.example.com"])
        .await;
    cluster
        .wait_for_ingress_status("api", &[("192.0.2.10".to_owned(), String::new())])
        .await;

    gangway.stop().await;
}
