//! Cluster mode: kube-rs watchers fill the compiler's store, each burst of changes compiles
//! once into a snapshot that goes live, and the elected leader writes Ingress status and
//! Events.
//!
//! The compile path is the same as in standalone mode: the caches become a [`Store`], and
//! [`compile`] turns it into a snapshot that [`Live::publish`] swaps in. Nothing is published
//! before every watched kind has completed its first list, so readiness (`Live::is_ready`)
//! means a complete view of the cluster. When the API server goes away, the last snapshot keeps
//! serving and the watches resume with backoff.

mod coalesce;
mod watch;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{reflector, watcher};
use tokio::sync::{Notify, watch as channel};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::compile::{CompileOptions, compile};
use crate::controller::address::{self, PublishAddress};
use crate::controller::leader::{LeaderElector, LeaseSettings, LeaseTiming};
use crate::controller::{self, ControllerInputs, Published};
use crate::live::Live;
use crate::snapshot::Snapshot;
use crate::status::{Problem, StatusReport};
use crate::store::ObjectKey;
use coalesce::CoalescePolicy;
use watch::Caches;

/// Maximum wait on shutdown for the leader to give its Lease up, so that a dead API server
/// cannot block the exit. An unreleased Lease expires on its own.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of cluster mode.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Kubeconfig file to use. When unset, `KUBECONFIG`, then `~/.kube/config`, then the
    /// in-cluster service account (`kube::Config::infer`).
    pub kubeconfig: Option<PathBuf>,
    /// Watch namespaced kinds in this namespace only. IngressClasses are cluster-scoped and
    /// always watched cluster-wide.
    pub watch_namespace: Option<String>,
    /// Settings that decide which objects are Gangway's.
    pub compile: CompileOptions,
    /// Service (NAMESPACE/NAME) whose addresses go into the status of Gangway's Ingresses;
    /// see [`address::from_service`] for how each Service type maps to addresses.
    pub publish_service: Option<ObjectKey>,
    /// Static addresses for that status: an IP address goes into `ip`, anything else into
    /// `hostname`. When set, they take precedence over `publish_service`, as in ingress-nginx.
    pub publish_address: Vec<String>,
    /// Namespace of the leader election Lease (the Helm chart passes its release namespace).
    pub leader_election_namespace: String,
    /// Name of the leader election Lease.
    pub leader_election_lease: String,
    /// This replica's identity in the Lease and in Events; unique per replica.
    pub identity: String,
    /// Durations of the leader election; client-go's defaults unless a test shortens them.
    pub leader_election_timing: LeaseTiming,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            watch_namespace: None,
            compile: CompileOptions::default(),
            publish_service: None,
            publish_address: Vec::new(),
            leader_election_namespace: "default".to_owned(),
            leader_election_lease: "gangway-leader".to_owned(),
            identity: default_identity(),
            leader_election_timing: LeaseTiming::default(),
        }
    }
}

/// Returns this replica's default identity: `POD_NAME` when set (the chart sets it from the
/// downward API), else the host name with a random suffix, so that two processes on one host
/// never share an identity.
pub fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}", &suffix[..8])
}

/// Errors that stop cluster mode from starting. Once running, every failure is retried.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// An option is unusable.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        /// The option's field name in [`ClusterOptions`].
        option: &'static str,
        /// The reason it is invalid.
        reason: String,
    },
    /// The kubeconfig file could not be read or parsed.
    #[error("failed to read kubeconfig {path}")]
    ReadKubeconfig {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The kubeconfig file was read but names no usable cluster, user or context.
    #[error("failed to load kubeconfig {path}")]
    LoadKubeconfig {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither a kubeconfig nor the in-cluster service account was found.
    #[error(
        "failed to find a Kubernetes client configuration in KUBECONFIG, ~/.kube/config or the in-cluster service account; pass --kubeconfig"
    )]
    InferConfig(#[source] kube::config::InferConfigError),
    /// The client could not be built from the configuration.
    #[error("failed to create the Kubernetes client")]
    Client(#[source] kube::Error),
}

impl ClusterOptions {
    fn validate(&self) -> Result<(), ClusterError> {
        let invalid = |option, reason: &str| {
            Err(ClusterError::InvalidOption {
                option,
                reason: reason.to_owned(),
            })
        };
        if self.identity.is_empty() {
            return invalid("identity", "must not be empty");
        }
        if self.leader_election_lease.is_empty() {
            return invalid("leader_election_lease", "must not be empty");
        }
        if self.leader_election_namespace.is_empty() {
            return invalid("leader_election_namespace", "must not be empty");
        }
        if let Some(service) = &self.publish_service
            && (service.namespace.is_empty() || service.name.is_empty())
        {
            return invalid("publish_service", "must be NAMESPACE/NAME");
        }
        let timing = &self.leader_election_timing;
        if timing.renew_deadline >= timing.lease_duration {
            return invalid(
                "leader_election_timing",
                "renew deadline must be shorter than the lease duration",
            );
        }
        if timing.retry_period.is_zero() || timing.retry_period >= timing.renew_deadline {
            return invalid(
                "leader_election_timing",
                "retry period must be above zero and shorter than the renew deadline",
            );
        }
        Ok(())
    }
}

/// Builds a client from `--kubeconfig`, or infers one.
async fn client(options: &ClusterOptions) -> Result<kube::Client, ClusterError> {
    let config = match &options.kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|source| ClusterError::ReadKubeconfig {
                    path: path.clone(),
                    source,
                })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|source| ClusterError::LoadKubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
        None => kube::Config::infer()
            .await
            .map_err(ClusterError::InferConfig)?,
    };
    kube::Client::try_from(config).map_err(ClusterError::Client)
}

/// Runs until `shutdown` is cancelled: watches, compiles on change, publishes into `live`,
/// and (as elected leader only) writes Ingress status and Events.
///
/// Returns an error only when the client cannot be set up. An unreachable API server is not
/// an error: the watches retry, and `live` stays unready until the first complete list.
pub async fn run(
    options: ClusterOptions,
    live: Arc<Live>,
    shutdown: CancellationToken,
) -> Result<(), ClusterError> {
    options.validate()?;
    let client = client(&options).await?;
    tracing::info!(
        identity = %options.identity,
        namespace = options.watch_namespace.as_deref().unwrap_or("<all>"),
        "starting cluster mode"
    );

    let changes = Arc::new(Notify::new());
    let mut watches = JoinSet::new();
    let caches = Caches::start(
        &client,
        options.watch_namespace.as_deref(),
        changes.clone(),
        &mut watches,
    );
    let addresses = start_address_source(&client, &options, &mut watches);

    // The workers stop before the watches, in this order: status and Events first, then the
    // Lease is released, so no write happens after another replica could lead.
    let controller_shutdown = CancellationToken::new();
    let elector_shutdown = CancellationToken::new();
    let (leadership_tx, leadership) = channel::channel(false);
    let (published_tx, published) = channel::channel(None);
    // The tasks end with this future even when it is dropped instead of cancelled, as the
    // watch tasks in `watches` do.
    let controller_task = AbortOnDropHandle::new(tokio::spawn(controller::run(
        ControllerInputs {
            client: client.clone(),
            identity: options.identity.clone(),
            published,
            addresses,
            leadership,
        },
        controller_shutdown.clone(),
    )));
    let settings = LeaseSettings {
        namespace: options.leader_election_namespace.clone(),
        name: options.leader_election_lease.clone(),
        identity: options.identity.clone(),
        timing: options.leader_election_timing,
    };
    let elector_task = AbortOnDropHandle::new(tokio::spawn(
        LeaderElector::new(client.clone(), settings).run(leadership_tx, elector_shutdown.clone()),
    ));

    let publisher = Publisher {
        caches,
        options: options.compile.clone(),
        live,
        published: published_tx,
        problems: BTreeSet::new(),
    };
    publisher
        .run(&changes, CoalescePolicy::DEFAULT, &shutdown)
        .await;

    tracing::info!("stopping cluster mode");
    // A write in flight finishes (each is bounded by its own timeout) before the release.
    controller_shutdown.cancel();
    if let Err(error) = controller_task.await {
        tracing::error!(
            error = &error as &dyn std::error::Error,
            "status writer task failed"
        );
    }
    elector_shutdown.cancel();
    match tokio::time::timeout(RELEASE_TIMEOUT, elector_task).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::error!(
            error = &error as &dyn std::error::Error,
            "leader election task failed"
        ),
        // Dropping the timed-out handle aborts the task.
        Err(_) => {
            tracing::warn!(
                timeout = ?RELEASE_TIMEOUT,
                "timed out releasing the Lease; it expires on its own"
            );
        }
    }
    watches.shutdown().await;
    Ok(())
}

/// Starts the source of the addresses for Ingress status. Returns a channel that contains the
/// current list, normalized, and empty while unknown.
fn start_address_source(
    client: &kube::Client,
    options: &ClusterOptions,
    tasks: &mut JoinSet<()>,
) -> channel::Receiver<Vec<PublishAddress>> {
    if !options.publish_address.is_empty() {
        let addresses = address::normalize(
            options
                .publish_address
                .iter()
                .map(|a| PublishAddress::parse(a))
                .collect(),
        );
        if options.publish_service.is_some() {
            tracing::info!("static publish addresses set; the publish Service is not read");
        }
        tracing::info!(addresses = ?addresses, "publishing static addresses in Ingress status");
        // The controller treats a closed channel as "never changes".
        return channel::channel(addresses).1;
    }

    let Some(service) = options.publish_service.clone() else {
        tracing::info!("no publish Service or address set; Ingress status is not written");
        return channel::channel(Vec::new()).1;
    };

    let (sender, receiver) = channel::channel(Vec::new());
    let (reader, writer) = reflector::store::<Service>();
    let api: Api<Service> = Api::namespaced(client.clone(), &service.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", service.name));
    let key = service.clone();
    watch::spawn_reflector(tasks, api, config, "Service", writer, move |_| {
        let current = reader
            .state()
            .into_iter()
            .find(|svc| svc.metadata.name.as_deref() == Some(key.name.as_str()));
        let addresses = current
            .as_deref()
            .map(address::from_service)
            .unwrap_or_default();
        sender.send_if_modified(|published| {
            if *published == addresses {
                return false;
            }
            match (&current, addresses.is_empty()) {
                (None, _) => tracing::warn!(
                    kind = "Service",
                    namespace = %key.namespace,
                    name = %key.name,
                    "publish Service not found; Ingress status is not written until it exists"
                ),
                (Some(_), true) => tracing::warn!(
                    kind = "Service",
                    namespace = %key.namespace,
                    name = %key.name,
                    "publish Service has no address yet; Ingress status is not written until it has one"
                ),
                (Some(_), false) => tracing::info!(
                    kind = "Service",
                    namespace = %key.namespace,
                    name = %key.name,
                    addresses = ?addresses,
                    "publish addresses changed"
                ),
            }
            *published = addresses;
            true
        });
    });
    receiver
}

/// Compiles the caches and publishes the result.
struct Publisher {
    caches: Caches,
    options: CompileOptions,
    live: Arc<Live>,
    published: channel::Sender<Option<Arc<Published>>>,
    /// Problems of the last compile, to log only the new ones.
    problems: BTreeSet<Problem>,
}

impl Publisher {
    /// Publishes once every kind has synced, then after each burst of changes, until
    /// `shutdown` is cancelled.
    async fn run(mut self, changes: &Notify, policy: CoalescePolicy, shutdown: &CancellationToken) {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = self.caches.wait_until_synced() => {}
        }
        // The initial lists left a change signal behind. The first compile below reads
        // everything they brought, so the signal would only cause a second, identical compile.
        let _ = changes.notified().now_or_never();
        self.publish().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = policy.next_batch(changes) => {}
            }
            self.publish().await;
        }
    }

    async fn publish(&mut self) {
        let store = self.caches.to_store();
        let options = self.options.clone();
        // The compiler is CPU work that can take milliseconds on a large cluster, so it runs off
        // the async workers and the watches and the proxy keep going meanwhile.
        let compiled = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let (snapshot, report) = compile(&store, &options);
            (store, snapshot, report, started.elapsed())
        })
        .await;
        let (store, snapshot, report, compile_time) = match compiled {
            Ok(compiled) => compiled,
            Err(error) => {
                tracing::error!(
                    error = &error as &dyn std::error::Error,
                    "compile failed with a panic; the previous snapshot keeps serving"
                );
                return;
            }
        };

        self.log_new_problems(&report);
        let routes = count_routes(&snapshot);
        let virtual_hosts = snapshot.hosts.len() + usize::from(snapshot.catch_all.is_some());
        let problems = report.problems.len();
        let errors = report.count(crate::status::Severity::Error);
        let objects = store.len();
        let report = Arc::new(report);
        let generation = self
            .live
            .publish(snapshot, StatusReport::clone(&report), compile_time);
        tracing::info!(
            generation,
            objects,
            virtual_hosts,
            routes,
            problems,
            errors,
            compile_ms = %format_args!("{:.3}", compile_time.as_secs_f64() * 1000.0),
            "published snapshot"
        );
        self.published.send_replace(Some(Arc::new(Published {
            generation,
            store: Arc::new(store),
            report,
        })));
        // The previous store, and the previous snapshot unless a request still uses it,
        // were freed on this thread. They would stay in its allocator cache until it
        // allocates or frees enough again.
        crate::alloc::release_thread_cache();
    }

    /// Logs each problem once, when it first appears.
    fn log_new_problems(&mut self, report: &StatusReport) {
        let current: BTreeSet<Problem> = report.problems.iter().cloned().collect();
        for problem in current.difference(&self.problems) {
            tracing::warn!(
                kind = %problem.object.kind,
                namespace = %problem.object.key.namespace,
                name = %problem.object.key.name,
                field = %problem.field,
                reason = %problem.reason,
                severity = ?problem.severity,
                "{}",
                problem.message
            );
        }
        self.problems = current;
    }
}

/// Counts the routes of a snapshot: path routes and default routes of every virtual host.
fn count_routes(snapshot: &Snapshot) -> usize {
    snapshot
        .hosts
        .iter()
        .map(|(_, virtual_host)| virtual_host)
        .chain(snapshot.catch_all.iter())
        .map(|virtual_host| {
            virtual_host.paths.len() + usize::from(virtual_host.default_route.is_some())
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_validation() {
        type Change = fn(&mut ClusterOptions);
        let cases: [(&str, Change, Option<&str>); 6] = [
            ("defaults are valid", |_| {}, None),
            (
                "empty identity",
                |o| o.identity.clear(),
                Some("invalid option identity: must not be empty"),
            ),
            (
                "empty lease name",
                |o| o.leader_election_lease.clear(),
                Some("invalid option leader_election_lease: must not be empty"),
            ),
            (
                "publish Service without namespace",
                |o| o.publish_service = Some(ObjectKey::new("", "gangway")),
                Some("invalid option publish_service: must be NAMESPACE/NAME"),
            ),
            (
                "renew deadline not below lease duration",
                |o| o.leader_election_timing.renew_deadline = Duration::from_secs(15),
                Some(
                    "invalid option leader_election_timing: renew deadline must be shorter than the lease duration",
                ),
            ),
            (
                "zero retry period",
                |o| o.leader_election_timing.retry_period = Duration::ZERO,
                Some(
                    "invalid option leader_election_timing: retry period must be above zero and shorter than the renew deadline",
                ),
            ),
        ];
        for (name, change, expected) in cases {
            let mut options = ClusterOptions {
                identity: "pod-a".to_owned(),
                ..ClusterOptions::default()
            };
            change(&mut options);
            let error = options.validate().err().map(|error| error.to_string());
            assert_eq!(error.as_deref(), expected, "{name}");
        }
    }
}
