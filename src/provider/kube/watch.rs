//! The kube-rs reflectors that cache every object the compiler reads, and the tasks that drive
//! their watches.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::Api;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::controller::retry::LogLimiter;
use crate::store::{ObjectKey, Store};

/// Annotation in which `kubectl apply` keeps a full copy of the object, Secret data included.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Field selector of the Secret watch: only TLS Secrets can serve Ingress TLS, and the others
/// (service account tokens, Helm releases) would only cost memory.
pub const TLS_SECRET_SELECTOR: &str = "type=kubernetes.io/tls";

/// Interval at which a failing watch logs its error again.
const WATCH_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Interval at which a replica that is still waiting for initial lists names the kinds it
/// waits for.
const SYNC_WAIT_LOG_INTERVAL: Duration = Duration::from_secs(30);

/// Read handles on the reflector caches of every kind the compiler reads.
#[derive(Clone)]
pub struct Caches {
    ingress_classes: reflector::Store<IngressClass>,
    ingresses: reflector::Store<Ingress>,
    services: reflector::Store<Service>,
    endpoint_slices: reflector::Store<EndpointSlice>,
    secrets: reflector::Store<Secret>,
    /// Kinds whose initial list has not completed yet.
    unsynced: watch::Receiver<BTreeSet<&'static str>>,
}

impl Caches {
    /// Starts a watch for each kind on `tasks`. Namespaced kinds are watched in `namespace`
    /// only when it is set. Each applied change, deletion or completed relist signals
    /// `changes`.
    pub fn start(
        client: &Client,
        namespace: Option<&str>,
        changes: Arc<Notify>,
        tasks: &mut JoinSet<()>,
    ) -> Caches {
        let kinds = [
            "IngressClass",
            "Ingress",
            "Service",
            "EndpointSlice",
            "Secret",
        ];
        let (unsynced_tx, unsynced) = watch::channel(kinds.into_iter().collect::<BTreeSet<_>>());
        let config = watcher::Config::default();

        let mut setup = WatchSetup {
            tasks,
            changes,
            unsynced: Arc::new(unsynced_tx),
        };
        let ingress_classes = setup.start(Api::all(client.clone()), config.clone(), "IngressClass");
        let ingresses = setup.start(api(client, namespace), config.clone(), "Ingress");
        let services = setup.start(api(client, namespace), config.clone(), "Service");
        let endpoint_slices = setup.start(api(client, namespace), config.clone(), "EndpointSlice");
        let secrets = setup.start(
            api(client, namespace),
            config.fields(TLS_SECRET_SELECTOR),
            "Secret",
        );

        Caches {
            ingress_classes,
            ingresses,
            services,
            endpoint_slices,
            secrets,
            unsynced,
        }
    }

    /// Waits until every kind has completed its first list. Logs the kinds still missing every
    /// 30 s, since a kind that never syncs (no RBAC permission to list it, say) keeps the
    /// replica unready.
    pub async fn wait_until_synced(&self) {
        let mut unsynced = self.unsynced.clone();
        let started = Instant::now();
        loop {
            let waited = tokio::time::timeout(
                SYNC_WAIT_LOG_INTERVAL,
                unsynced.wait_for(|kinds| kinds.is_empty()),
            )
            .await
            .map(|synced| synced.is_ok());
            match waited {
                Ok(true) => break,
                // A closed channel means every watch task ended, which happens only on
                // shutdown; the caller's shutdown branch takes over.
                Ok(false) => return std::future::pending().await,
                Err(_) => {
                    let kinds: Vec<&str> = unsynced.borrow().iter().copied().collect();
                    tracing::warn!(
                        kinds = ?kinds,
                        waited_s = started.elapsed().as_secs(),
                        "still waiting for the initial list of some kinds; not ready until then"
                    );
                }
            }
        }
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "initial lists complete for every kind"
        );
    }

    /// Builds the compiler's input from the current cache contents. Objects are shared with
    /// the caches, not copied.
    pub fn to_store(&self) -> Store {
        Store {
            ingress_classes: collect(&self.ingress_classes),
            ingresses: collect(&self.ingresses),
            services: collect(&self.services),
            endpoint_slices: collect(&self.endpoint_slices),
            secrets: collect(&self.secrets),
        }
    }
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

fn collect<K>(cache: &reflector::Store<K>) -> std::collections::BTreeMap<ObjectKey, Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    cache
        .state()
        .into_iter()
        .map(|object| {
            let key = ObjectKey::new(object.namespace().unwrap_or_default(), object.name_any());
            (key, object)
        })
        .collect()
}

/// State that every watch of [`Caches::start`] shares.
struct WatchSetup<'a> {
    tasks: &'a mut JoinSet<()>,
    changes: Arc<Notify>,
    unsynced: Arc<watch::Sender<BTreeSet<&'static str>>>,
}

impl WatchSetup<'_> {
    fn start<K>(
        &mut self,
        api: Api<K>,
        config: watcher::Config,
        kind: &'static str,
    ) -> reflector::Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let (reader, writer) = reflector::store();
        let changes = self.changes.clone();
        let unsynced = self.unsynced.clone();
        spawn_reflector(self.tasks, api, config, kind, writer, move |event| {
            if let watcher::Event::InitDone = event {
                unsynced.send_if_modified(|kinds| kinds.remove(kind));
            }
            changes.notify_one();
        });
        reader
    }
}

/// Drops the fields Gangway never reads before an object enters a cache: `managedFields`,
/// often the largest part of an object, and `kubectl apply`'s copy of the whole object (for a
/// Secret, a second copy of its key).
pub fn strip_metadata<K: Resource>(object: &mut K) {
    let metadata = object.meta_mut();
    metadata.managed_fields = None;
    if let Some(annotations) = &mut metadata.annotations {
        annotations.remove(LAST_APPLIED);
    }
}

/// Spawns a task that runs a watch of `api` into `writer` until the task is aborted.
///
/// kube-runtime's watcher relists after 410 Gone and rewatches from the last resourceVersion
/// after a dropped stream. `default_backoff` (0.8 s doubling to 30 s, with jitter) spaces the
/// attempts while the API server is unreachable. The cache keeps its contents throughout, and
/// a relist replaces them in one step when it completes. `on_change` runs for each applied
/// object, each deletion and each completed list, after the cache has been updated.
pub fn spawn_reflector<K>(
    tasks: &mut JoinSet<()>,
    api: Api<K>,
    config: watcher::Config,
    kind: &'static str,
    writer: Writer<K>,
    mut on_change: impl FnMut(&watcher::Event<K>) + Send + 'static,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let stream = watcher(api, config)
        .default_backoff()
        .modify(strip_metadata::<K>)
        .reflect(writer);
    tasks.spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut errors = LogLimiter::new(WATCH_ERROR_LOG_INTERVAL);
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    if errors.is_failing() {
                        tracing::info!(kind, "watch resumed");
                        errors.reset();
                    }
                    match &event {
                        watcher::Event::Apply(_)
                        | watcher::Event::Delete(_)
                        | watcher::Event::InitDone => on_change(&event),
                        watcher::Event::Init | watcher::Event::InitApply(_) => {}
                    }
                }
                Err(error) => {
                    if let Some(suppressed) = errors.allow(Instant::now()) {
                        tracing::warn!(
                            kind,
                            error = &error as &dyn std::error::Error,
                            suppressed,
                            "watch failed, retrying with backoff; the cache keeps its last contents"
                        );
                    }
                }
            }
        }
        tracing::debug!(kind, "watch stream ended");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_metadata_drops_managed_fields_and_last_applied() {
        let mut secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web-tls",
                "namespace": "shop",
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"tls.key\":\"...\"}}",
                    "team": "web"
                },
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
            },
            "type": "kubernetes.io/tls"
        }))
        .expect("test Secret is valid");

        strip_metadata(&mut secret);

        assert_eq!(secret.metadata.managed_fields, None);
        let annotations = secret.metadata.annotations.expect("annotations kept");
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations.get("team").map(String::as_str), Some("web"));
        assert_eq!(secret.metadata.name.as_deref(), Some("web-tls"));
    }
}
