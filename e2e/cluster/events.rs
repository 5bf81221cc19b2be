//! Events: one Warning per distinct problem of an existing object, from the leader only,
//! sent again only when the problem comes back.

use std::time::Duration;

use gangway_test_apiserver::{FailRule, RequestMatch};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ListParams};

use crate::fixtures::{create_web_app, endpoint_slice, ingress};
use crate::harness::{Cluster, Gangway, eventually, eventually_async};

/// Returns the Events in `default` whose reason is `reason`.
async fn events_with_reason(cluster: &Cluster, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(cluster.client.clone(), "default")
        .list(&ListParams::default())
        .await
        .expect("Events are listed")
        .items
        .into_iter()
        .filter(|event| event.reason.as_deref() == Some(reason))
        .collect()
}

/// Waits until `count` Events with `reason` exist.
async fn wait_for_events(cluster: &Cluster, reason: &str, count: usize) -> Vec<Event> {
    eventually_async(&format!("{count} {reason} Events exist"), || async {
        let events = events_with_reason(cluster, reason).await;
        if events.len() == count {
            Ok(events)
        } else {
            Err(events.len())
        }
    })
    .await
}

/// Waits until the live report of `gangway` has (or has not) a problem with `reason`.
async fn wait_for_problem(gangway: &Gangway, reason: &str, present: bool) {
    eventually(&format!("problem {reason} present: {present}"), || {
        let report = gangway.live.report();
        let found = report.problems.iter().any(|p| p.reason == reason);
        (found == present).then_some(()).ok_or(found)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warning_event_for_bad_ingress() {
    let cluster = Cluster::start().await;
    create_web_app(&cluster).await;
    cluster
        .apply(&ingress(
            "default",
            "broken",
            "gangway",
            "Upper.Example.com",
            "web",
        ))
        .await;
    let a = Gangway::start(cluster.options("gangway-a"));
    a.wait_ready().await;
    let b = Gangway::start(cluster.options("gangway-b"));
    b.wait_ready().await;

    let events = wait_for_events(&cluster, "InvalidHost", 1).await;
    let event = &events[0];
    let broken: Ingress = cluster
        .get("default", "broken")
        .await
        .expect("Ingress exists");
    let regarding = event.regarding.as_ref().expect("Event names its object");
    assert_eq!(regarding.kind.as_deref(), Some("Ingress"));
    assert_eq!(regarding.name.as_deref(), Some("broken"));
    assert_eq!(regarding.namespace.as_deref(), Some("default"));
    assert_eq!(regarding.uid, broken.metadata.uid);
    assert_eq!(regarding.field_path.as_deref(), Some("spec.rules[0].host"));
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(
        event.reporting_controller.as_deref(),
        Some("gangway.dev/ingress-controller")
    );
    assert_eq!(
        event.reporting_instance.as_deref(),
        Some("gangway-a"),
        "only the leader sends Events"
    );
    let note = event.note.as_deref().unwrap_or_default();
    assert!(
        note.starts_with("spec.rules[0].host: ") && note.contains("Upper.Example.com"),
        "note: {note}"
    );

    // Later compiles with the same problem send nothing new.
    for addresses in [["10.0.0.2"], ["10.0.0.3"]] {
        cluster
            .apply(&endpoint_slice("default", "web", &addresses))
            .await;
    }
    eventually("the last endpoint change is live", || {
        let table = a.route_table();
        let found = crate::harness::endpoints(&table, "default/web:http");
        (found == Some(vec!["10.0.0.3:8080".to_owned()]))
            .then_some(())
            .ok_or(found)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(events_with_reason(&cluster, "InvalidHost").await.len(), 1);

    // A fixed problem that comes back is reported again.
    cluster
        .apply(&ingress(
            "default",
            "broken",
            "gangway",
            "upper.example.com",
            "web",
        ))
        .await;
    wait_for_problem(&a, "InvalidHost", false).await;
    // Give the leader's writer a moment to sync the fixed report before the next change.
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster
        .apply(&ingress(
            "default",
            "broken",
            "gangway",
            "Upper.Example.com",
            "web",
        ))
        .await;
    wait_for_events(&cluster, "InvalidHost", 2).await;

    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_event_is_retried() {
    let cluster = Cluster::start().await;
    create_web_app(&cluster).await;
    cluster
        .apply(&ingress(
            "default",
            "broken",
            "gangway",
            "Upper.Example.com",
            "web",
        ))
        .await;
    let events_path = "/apis/events.k8s.io/v1/namespaces/default/events";
    cluster
        .server
        .fail_requests(FailRule {
            matching: RequestMatch::any().method("POST").path_prefix(events_path),
            count: 2,
            status: 503,
            retry_after_seconds: None,
        })
        .expect("fault is installed");
    let gangway = Gangway::start(cluster.options("gangway-a"));

    wait_for_events(&cluster, "InvalidHost", 1).await;
    let statuses: Vec<u16> = cluster
        .requests("POST", events_path)
        .iter()
        .map(|request| request.status)
        .collect();
    assert_eq!(statuses, vec![503, 503, 201]);

    gangway.stop().await;
}
