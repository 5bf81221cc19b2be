//! kube-rs 4.2 clients against the test API server: lists, watches, watchers, status
//! writes, optimistic concurrency and Leases.

mod common;

use std::time::Duration;

use common::{TestServer, eventually};
use futures_util::{StreamExt, TryStreamExt};
use gangway_test_apiserver::Config;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

/// Upper bound for waiting on one watch event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

fn config_map(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "data": {"key": "value"},
    }))
    .unwrap()
}

fn ingress(name: &str) -> Ingress {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"ingressClassName": "gangway", "rules": [{"host": "web.example.com"}]},
    }))
    .unwrap()
}

async fn next_event<S, K>(stream: &mut S) -> WatchEvent<K>
where
    S: futures_util::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin,
{
    tokio::time::timeout(EVENT_TIMEOUT, stream.next())
        .await
        .expect("timed out waiting for a watch event")
        .expect("the watch stream ended")
        .expect("the watch stream failed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_and_selects() {
    let test = TestServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(test.client("tester").await, "default");
    for index in 0..7 {
        let tier = if index % 2 == 0 { "even" } else { "odd" };
        api.create(
            &PostParams::default(),
            &config_map(&format!("cm-{index}"), json!({"tier": tier})),
        )
        .await
        .unwrap();
    }

    let mut names = Vec::new();
    let mut params = ListParams::default().limit(3);
    loop {
        let page = api.list(&params).await.unwrap();
        assert!(page.items.len() <= 3);
        names.extend(
            page.items
                .iter()
                .map(|item| item.metadata.name.clone().unwrap()),
        );
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    assert_eq!(
        names,
        (0..7)
            .map(|index| format!("cm-{index}"))
            .collect::<Vec<_>>()
    );

    let odd = api
        .list(&ListParams::default().labels("tier=odd"))
        .await
        .unwrap();
    assert_eq!(odd.items.len(), 3);
    let one = api
        .list(&ListParams::default().fields("metadata.name=cm-4"))
        .await
        .unwrap();
    assert_eq!(one.items.len(), 1);

    // Every request carried the kubeconfig's token, so the log names the user.
    let requests = test.server.requests();
    assert!(
        requests.iter().all(|request| request.user == "tester"),
        "{requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_select_by_type() {
    let test = TestServer::start().await;
    let api: Api<Secret> = Api::namespaced(test.client("tester").await, "default");
    for (name, secret_type) in [("cert", "kubernetes.io/tls"), ("opaque", "Opaque")] {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": name},
            "type": secret_type,
            "data": {"tls.crt": "", "tls.key": ""},
        }))
        .unwrap();
        api.create(&PostParams::default(), &secret).await.unwrap();
    }
    let tls = api
        .list(&ListParams::default().fields("type=kubernetes.io/tls"))
        .await
        .unwrap();
    let names: Vec<_> = tls
        .items
        .iter()
        .map(|secret| secret.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["cert"]);
    let error = api
        .list(&ListParams::default().fields("data.tls=x"))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("field label not supported"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_replays_changes_after_version() {
    let test = TestServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(test.client("tester").await, "default");
    let first = api
        .create(&PostParams::default(), &config_map("a", json!({})))
        .await
        .unwrap();
    let start = first.metadata.resource_version.clone().unwrap();
    api.create(&PostParams::default(), &config_map("b", json!({})))
        .await
        .unwrap();
    api.delete("a", &Default::default()).await.unwrap();

    let mut stream = api
        .watch(&WatchParams::default(), &start)
        .await
        .unwrap()
        .boxed();
    match next_event(&mut stream).await {
        WatchEvent::Added(object) => assert_eq!(object.metadata.name.as_deref(), Some("b")),
        other => panic!("expected ADDED b, got {other:?}"),
    }
    match next_event(&mut stream).await {
        WatchEvent::Deleted(object) => assert_eq!(object.metadata.name.as_deref(), Some("a")),
        other => panic!("expected DELETED a, got {other:?}"),
    }
    api.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"key": "new"}})),
    )
    .await
    .unwrap();
    match next_event(&mut stream).await {
        WatchEvent::Modified(object) => {
            assert_eq!(object.data.unwrap()["key"], "new");
        }
        other => panic!("expected MODIFIED b, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_zero_adds_existing() {
    let test = TestServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(test.client("tester").await, "default");
    api.create(&PostParams::default(), &config_map("existing", json!({})))
        .await
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    match next_event(&mut stream).await {
        WatchEvent::Added(object) => assert_eq!(object.metadata.name.as_deref(), Some("existing")),
        other => panic!("expected a synthetic ADDED, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sends_bookmarks() {
    let test = TestServer::start_with(Config {
        bookmark_interval: Duration::from_millis(100),
        ..Config::default()
    })
    .await;
    let api: Api<ConfigMap> = Api::namespaced(test.client("tester").await, "default");
    let start = test.server.resource_version().to_string();
    let mut stream = api
        .watch(&WatchParams::default(), &start)
        .await
        .unwrap()
        .boxed();
    // A write to another kind moves the global resourceVersion. The next bookmark
    // carries it although this watch saw no event.
    let ingresses: Api<Ingress> = Api::namespaced(test.client("tester").await, "default");
    let written = ingresses
        .create(&PostParams::default(), &ingress("web"))
        .await
        .unwrap();
    let written_version: u64 = written.metadata.resource_version.unwrap().parse().unwrap();
    loop {
        match next_event(&mut stream).await {
            WatchEvent::Bookmark(bookmark) => {
                let version: u64 = bookmark.metadata.resource_version.parse().unwrap();
                if version >= written_version {
                    break;
                }
            }
            other => panic!("expected only bookmarks, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selector_exit_is_deleted_event() {
    let test = TestServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(test.client("tester").await, "default");
    let created = api
        .create(
            &PostParams::default(),
            &config_map("web", json!({"app": "web"})),
        )
        .await
        .unwrap();
    let start = created.metadata.resource_version.unwrap();
    let mut stream = api
        .watch(&WatchParams::default().labels("app=web"), &start)
        .await
        .unwrap()
        .boxed();
    let relabel = Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}}));
    let moved = api
        .patch("web", &PatchParams::default(), &relabel)
        .await
        .unwrap();
    match next_event(&mut stream).await {
        WatchEvent::Deleted(object) => {
            assert_eq!(object.metadata.labels.unwrap()["app"], "web");
            assert_eq!(
                object.metadata.resource_version,
                moved.metadata.resource_version
            );
        }
        other => panic!("expected DELETED, got {other:?}"),
    }
    let back = Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}}));
    api.patch("web", &PatchParams::default(), &back)
        .await
        .unwrap();
    match next_event(&mut stream).await {
        WatchEvent::Added(object) => assert_eq!(object.metadata.labels.unwrap()["app"], "web"),
        other => panic!("expected ADDED, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_gives_410_on_watch_and_list() {
    let test = TestServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(test.client("tester").await, "default");
    for index in 0..3 {
        api.create(
            &PostParams::default(),
            &config_map(&format!("cm-{index}"), json!({})),
        )
        .await
        .unwrap();
    }
    let first_page = api.list(&ListParams::default().limit(1)).await.unwrap();
    let token = first_page.metadata.continue_.clone().unwrap();
    let old = first_page.metadata.resource_version.clone().unwrap();
    api.create(&PostParams::default(), &config_map("late", json!({})))
        .await
        .unwrap();
    test.server.compact();

    let mut stream = api
        .watch(&WatchParams::default(), &old)
        .await
        .unwrap()
        .boxed();
    match next_event(&mut stream).await {
        WatchEvent::Error(error) => {
            assert_eq!(error.code, 410);
            assert_eq!(error.reason, "Expired");
        }
        other => panic!("expected an ERROR event, got {other:?}"),
    }

    let error = api
        .list(&ListParams::default().limit(1).continue_token(&token))
        .await
        .unwrap_err();
    match error {
        kube::Error::Api(status) => assert_eq!(status.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_patch_changes_only_status() {
    let test = TestServer::start().await;
    let api: Api<Ingress> = Api::namespaced(test.client("tester").await, "default");
    api.create(&PostParams::default(), &ingress("web"))
        .await
        .unwrap();
    let status = json!({
        "spec": {"ingressClassName": "ignored"},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}},
    });
    let patched = api
        .patch_status("web", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    let address = &patched
        .status
        .unwrap()
        .load_balancer
        .unwrap()
        .ingress
        .unwrap()[0];
    assert_eq!(address.ip.as_deref(), Some("192.0.2.10"));
    assert_eq!(
        patched.spec.unwrap().ingress_class_name.as_deref(),
        Some("gangway")
    );
    assert_eq!(patched.metadata.generation, Some(1));

    // Server-side apply of status, as controllers built on kube-rs often write it.
    let applied = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}},
    });
    let applied = api
        .patch_status(
            "web",
            &PatchParams::apply("gangway").force(),
            &Patch::Apply(applied),
        )
        .await
        .unwrap();
    let address = &applied
        .status
        .unwrap()
        .load_balancer
        .unwrap()
        .ingress
        .unwrap()[0];
    assert_eq!(address.hostname.as_deref(), Some("lb.example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_update_conflicts() {
    let test = TestServer::start().await;
    let api: Api<Ingress> = Api::namespaced(test.client("tester").await, "default");
    let created = api
        .create(&PostParams::default(), &ingress("web"))
        .await
        .unwrap();
    let mut first = created.clone();
    first.metadata.labels = Some([("writer".to_string(), "first".to_string())].into());
    api.replace("web", &PostParams::default(), &first)
        .await
        .unwrap();

    let mut second = created;
    second.metadata.labels = Some([("writer".to_string(), "second".to_string())].into());
    let error = api
        .replace("web", &PostParams::default(), &second)
        .await
        .unwrap_err();
    match error {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 409);
            assert_eq!(status.reason, "Conflict");
        }
        other => panic!("expected 409 Conflict, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_create_and_update() {
    let test = TestServer::start().await;
    let leader: Api<Lease> = Api::namespaced(test.client("leader").await, "kube-system");
    let candidate: Api<Lease> = Api::namespaced(test.client("candidate").await, "kube-system");
    let lease = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some("gangway".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("leader".into()),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }),
    };
    let created = leader.create(&PostParams::default(), &lease).await.unwrap();
    let error = candidate
        .create(&PostParams::default(), &lease)
        .await
        .unwrap_err();
    assert!(
        matches!(error, kube::Error::Api(ref status) if status.code == 409),
        "{error:?}"
    );

    // Both read the Lease. The leader renews first, so the candidate's takeover
    // carries a stale resourceVersion and must fail.
    let seen_by_candidate = candidate.get("gangway").await.unwrap();
    let mut renewed = created.clone();
    renewed.spec.as_mut().unwrap().lease_transitions = Some(0);
    leader
        .replace("gangway", &PostParams::default(), &renewed)
        .await
        .unwrap();
    let mut takeover = seen_by_candidate;
    takeover.spec.as_mut().unwrap().holder_identity = Some("candidate".into());
    let error = candidate
        .replace("gangway", &PostParams::default(), &takeover)
        .await
        .unwrap_err();
    assert!(
        matches!(error, kube::Error::Api(ref status) if status.code == 409),
        "{error:?}"
    );

    let current = leader.get("gangway").await.unwrap();
    assert_eq!(
        current.spec.unwrap().holder_identity.as_deref(),
        Some("leader")
    );
    let writers: Vec<String> = test
        .server
        .requests()
        .into_iter()
        .filter(|request| request.method == "PUT" && request.status == 200)
        .map(|request| request.user)
        .collect();
    assert_eq!(writers, ["leader"]);
}

/// Collects the names a watcher-fed store holds.
fn names(reader: &kube::runtime::reflector::Store<ConfigMap>) -> Vec<String> {
    let mut names: Vec<String> = reader
        .state()
        .iter()
        .map(|object| object.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_recovers_after_dropped_streams_and_restart() {
    let test = TestServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(test.client("tester").await, "default");
    api.create(&PostParams::default(), &config_map("before", json!({})))
        .await
        .unwrap();

    let (reader, writer) = kube::runtime::reflector::store();
    let stream = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let task = tokio::spawn(async move {
        // Errors are retried by the backoff; the stream ends only when aborted.
        stream.for_each(|_| async {}).await;
    });

    let limit = Duration::from_secs(15);
    eventually(limit, "the initial list", || names(&reader) == ["before"]).await;
    eventually(limit, "the watch to open", || {
        test.server.watch_count() == 1
    })
    .await;

    assert_eq!(test.server.drop_watches(), 1);
    api.create(&PostParams::default(), &config_map("after-drop", json!({})))
        .await
        .unwrap();
    eventually(limit, "the event after the drop", || {
        names(&reader) == ["after-drop", "before"]
    })
    .await;

    test.server.stop().await;
    assert!(
        api.get("before").await.is_err(),
        "the stopped server answered"
    );
    test.server.resume().await.unwrap();
    api.create(
        &PostParams::default(),
        &config_map("after-restart", json!({})),
    )
    .await
    .unwrap();
    eventually(limit, "the event after the restart", || {
        names(&reader) == ["after-drop", "after-restart", "before"]
    })
    .await;

    // A compaction while the watch is down forces a relist (410 Gone), which must
    // also converge.
    test.server.stop().await;
    api.create(&PostParams::default(), &config_map("missed", json!({})))
        .await
        .expect_err("the stopped server answered");
    test.server.compact();
    test.server.resume().await.unwrap();
    api.delete("before", &Default::default()).await.unwrap();
    eventually(limit, "the state after compaction", || {
        names(&reader) == ["after-drop", "after-restart"]
    })
    .await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_watcher_gets_initial_events() {
    let test = TestServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(test.client("tester").await, "default");
    for name in ["a", "b"] {
        api.create(&PostParams::default(), &config_map(name, json!({})))
            .await
            .unwrap();
    }
    let events: Vec<watcher::Event<ConfigMap>> =
        watcher(api, watcher::Config::default().streaming_lists())
            .take_while(|event| {
                let done = matches!(event, Ok(watcher::Event::InitDone));
                async move { !done }
            })
            .try_collect()
            .await
            .unwrap();
    let names: Vec<_> = events
        .iter()
        .filter_map(|event| match event {
            watcher::Event::InitApply(object) => object.metadata.name.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["a", "b"]);
    let requests = test.server.requests();
    assert!(
        requests
            .iter()
            .any(|request| request.query.contains("sendInitialEvents=true")),
        "{requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_name_dry_run_and_delete_collection() {
    let test = TestServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(test.client("tester").await, "default");
    let mut generated = config_map("", json!({"batch": "one"}));
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("job-".into());
    let first = api
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let second = api
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let first_name = first.metadata.name.unwrap();
    assert!(first_name.starts_with("job-"), "{first_name}");
    assert_ne!(Some(first_name), second.metadata.name);

    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    api.create(&dry_run, &config_map("never-stored", json!({})))
        .await
        .unwrap();
    assert!(api.get_opt("never-stored").await.unwrap().is_none());

    api.create(
        &PostParams::default(),
        &config_map("kept", json!({"batch": "two"})),
    )
    .await
    .unwrap();
    let deleted = api
        .delete_collection(
            &Default::default(),
            &ListParams::default().labels("batch=one"),
        )
        .await
        .unwrap();
    let deleted = deleted
        .left()
        .expect("deletecollection returns the deleted list");
    assert_eq!(deleted.items.len(), 2);
    let left: Vec<_> = api
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|item| item.metadata.name.unwrap())
        .collect();
    assert_eq!(left, ["kept"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_ends_at_timeout_seconds() {
    let test = TestServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(test.client("tester").await, "default");
    let start = test.server.resource_version().to_string();
    let mut stream = api
        .watch(&WatchParams::default().timeout(1), &start)
        .await
        .unwrap()
        .boxed();
    let ended = tokio::time::timeout(EVENT_TIMEOUT, stream.next())
        .await
        .unwrap();
    assert!(
        ended.is_none(),
        "expected the end of the stream, got {ended:?}"
    );
    eventually(EVENT_TIMEOUT, "the watch to unregister", || {
        test.server.watch_count() == 0
    })
    .await;
}
