//! Test harness: an in-memory API server, Gangway instances running cluster mode against it,
//! and helpers to change objects and wait for an outcome.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gangway::controller::leader::LeaseTiming;
use gangway::live::Live;
use gangway::metrics::Metrics;
use gangway::provider::kube::{ClusterError, ClusterOptions};
use gangway::provider::parse::{Object, parse_manifests};
use gangway::snapshot::RouteTable;
use gangway_test_apiserver::{ApiServer, Config, RequestRecord};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Upper bound of every wait for an outcome. Generous because the watchers' backoff after an
/// API server restart grows to a few seconds, and the machine may be busy with other builds.
pub const WAIT: Duration = Duration::from_secs(30);

/// Interval between checks while waiting.
const POLL: Duration = Duration::from_millis(25);

/// Name of the leader election Lease in the tests; its namespace is `default`.
pub const LEASE: &str = "gangway-leader";

/// Election timing for tests: the same rules as production, 5 times faster, so a takeover
/// after a crash takes about 3 s instead of 15 s.
pub const FAST_ELECTION: LeaseTiming = LeaseTiming {
    lease_duration: Duration::from_secs(3),
    renew_deadline: Duration::from_secs(2),
    retry_period: Duration::from_millis(250),
};

/// Sends the logs of the code under test to the test output when `RUST_LOG` is set.
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// An API server with a client for the test itself.
pub struct Cluster {
    /// The in-memory API server.
    pub server: ApiServer,
    /// Client of the user `tester`.
    pub client: kube::Client,
    directory: tempfile::TempDir,
}

impl Cluster {
    /// Starts an API server on a free loopback port, with bookmarks every second.
    pub async fn start() -> Cluster {
        init_logs();
        let config = Config {
            bookmark_interval: Duration::from_secs(1),
            ..Config::default()
        };
        let server = ApiServer::start(config)
            .await
            .expect("test API server starts");
        let directory = tempfile::tempdir().expect("temporary directory is created");
        let client = client_for(&server, directory.path(), "tester").await;
        Cluster {
            server,
            client,
            directory,
        }
    }

    /// Writes a kubeconfig for `user` and returns its path. The request log records each
    /// request's user, so the Gangway instances can be told apart.
    pub fn kubeconfig(&self, user: &str) -> PathBuf {
        write_kubeconfig(&self.server, self.directory.path(), user)
    }

    /// Returns cluster-mode options for an instance named `identity`, which is also its
    /// user name in the request log: static address 192.0.2.10, fast election timing.
    pub fn options(&self, identity: &str) -> ClusterOptions {
        ClusterOptions {
            kubeconfig: Some(self.kubeconfig(identity)),
            publish_address: vec!["192.0.2.10".to_owned()],
            leader_election_namespace: "default".to_owned(),
            leader_election_lease: LEASE.to_owned(),
            identity: identity.to_owned(),
            leader_election_timing: FAST_ELECTION,
            ..ClusterOptions::default()
        }
    }

    /// Creates every object of a YAML manifest, or replaces it when it exists.
    pub async fn apply(&self, yaml: &str) {
        let parsed = parse_manifests(yaml);
        assert!(
            parsed.errors.is_empty(),
            "test manifest parses: {:?}",
            parsed.errors
        );
        for object in parsed.objects {
            match object {
                Object::IngressClass(o) => self.put(Api::all(self.client.clone()), &*o).await,
                Object::Ingress(o) => self.put(self.api(&*o), &*o).await,
                Object::Service(o) => self.put(self.api(&*o), &*o).await,
                Object::EndpointSlice(o) => self.put(self.api(&*o), &*o).await,
                Object::Secret(o) => self.put(self.api(&*o), &*o).await,
            }
        }
    }

    /// Creates or replaces one typed object.
    pub async fn apply_object<K>(&self, object: &K)
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug,
    {
        self.put(self.api(object), object).await;
    }

    fn api<K>(&self, object: &K) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    {
        let namespace = object.namespace().unwrap_or_else(|| "default".to_owned());
        Api::namespaced(self.client.clone(), &namespace)
    }

    async fn put<K>(&self, api: Api<K>, object: &K)
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        let name = object.name_any();
        let mut object = object.clone();
        match api.get_opt(&name).await.expect("get before apply") {
            Some(existing) => {
                object.meta_mut().resource_version = existing.resource_version();
                api.replace(&name, &PostParams::default(), &object)
                    .await
                    .unwrap_or_else(|error| panic!("replace {name}: {error}"));
            }
            None => {
                api.create(&PostParams::default(), &object)
                    .await
                    .unwrap_or_else(|error| panic!("create {name}: {error}"));
            }
        }
    }

    /// Deletes a namespaced object.
    pub async fn delete<K>(&self, namespace: &str, name: &str)
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        Api::<K>::namespaced(self.client.clone(), namespace)
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|error| panic!("delete {namespace}/{name}: {error}"));
    }

    /// Creates a namespace.
    pub async fn create_namespace(&self, name: &str) {
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
                .expect("namespace is valid");
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|error| panic!("create namespace {name}: {error}"));
    }

    /// Returns a namespaced object, or `None` when it does not exist.
    pub async fn get<K>(&self, namespace: &str, name: &str) -> Option<K>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        Api::<K>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .unwrap_or_else(|error| panic!("get {namespace}/{name}: {error}"))
    }

    /// Returns the holder of the leader election Lease, `None` when it has none.
    pub async fn lease_holder(&self) -> Option<String> {
        let lease: Option<Lease> = self.get("default", LEASE).await;
        lease
            .and_then(|lease| lease.spec)
            .and_then(|spec| spec.holder_identity)
            .filter(|holder| !holder.is_empty())
    }

    /// Returns the `(ip, hostname)` pairs of the status of Ingress `default/<name>`, empty
    /// when it has none or does not exist.
    pub async fn ingress_status(&self, name: &str) -> Vec<(String, String)> {
        let ingress: Option<Ingress> = self.get("default", name).await;
        ingress
            .and_then(|ingress| ingress.status)
            .and_then(|status| status.load_balancer)
            .and_then(|load_balancer| load_balancer.ingress)
            .unwrap_or_default()
            .into_iter()
            .map(|entry| {
                (
                    entry.ip.unwrap_or_default(),
                    entry.hostname.unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Waits until the status of Ingress `default/<name>` equals `expected`.
    pub async fn wait_for_ingress_status(&self, name: &str, expected: &[(String, String)]) {
        eventually_async(
            &format!("Ingress {name} has status {expected:?}"),
            || async {
                let found = self.ingress_status(name).await;
                if found == expected {
                    Ok(())
                } else {
                    Err(found)
                }
            },
        )
        .await;
    }

    /// Returns the requests in the log that match `method` and contain `path_part`.
    pub fn requests(&self, method: &str, path_part: &str) -> Vec<RequestRecord> {
        self.server
            .requests()
            .into_iter()
            .filter(|request| request.method == method && request.path.contains(path_part))
            .collect()
    }
}

fn write_kubeconfig(server: &ApiServer, directory: &Path, user: &str) -> PathBuf {
    let path = directory.join(format!("{user}.kubeconfig"));
    server
        .write_kubeconfig(&path, user)
        .expect("kubeconfig is written");
    path
}

async fn client_for(server: &ApiServer, directory: &Path, user: &str) -> kube::Client {
    let path = write_kubeconfig(server, directory, user);
    let kubeconfig = Kubeconfig::read_from(path).expect("kubeconfig reads");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    kube::Client::try_from(config).expect("client builds")
}

/// A Gangway instance in cluster mode, as `gangway run` starts it.
pub struct Gangway {
    /// The live snapshot the instance publishes.
    pub live: Arc<Live>,
    /// The instance's identity and user name.
    pub identity: String,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ClusterError>>,
}

impl Gangway {
    /// Starts `gangway::provider::kube::run` with `options` on a new task.
    pub fn start(options: ClusterOptions) -> Gangway {
        let live = Arc::new(Live::new(Arc::new(Metrics::new())));
        let shutdown = CancellationToken::new();
        let identity = options.identity.clone();
        let task = tokio::spawn(gangway::provider::kube::run(
            options,
            live.clone(),
            shutdown.clone(),
        ));
        Gangway {
            live,
            identity,
            shutdown,
            task,
        }
    }

    /// Returns the routing table of the live snapshot.
    pub fn route_table(&self) -> RouteTable {
        self.live.snapshot().route_table()
    }

    /// Waits until the hosts of the live snapshot are `expected`.
    pub async fn wait_for_hosts(&self, expected: &[&str]) {
        eventually(
            &format!("{} serves hosts {expected:?}", self.identity),
            || {
                let found = hosts(&self.route_table());
                (found == expected).then_some(()).ok_or(found)
            },
        )
        .await;
    }

    /// Waits until the instance has published its first snapshot.
    pub async fn wait_ready(&self) {
        eventually(&format!("{} is ready", self.identity), || {
            self.live.is_ready().then_some(()).ok_or("not ready")
        })
        .await;
    }

    /// Stops the instance as a SIGTERM would, and checks that `run` returned `Ok`.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("cluster mode stops within 15 s")
            .expect("cluster mode task does not panic");
        result.expect("cluster mode returns Ok");
    }

    /// Ends the instance without any cleanup, as a killed process: the Lease is not released.
    pub fn crash(self) {
        self.task.abort();
    }
}

/// Polls `check` until it returns `Ok`, and returns its value. Panics after [`WAIT`] with
/// `what` and the last `Err` value, which should describe the state seen.
pub async fn eventually<T, E: std::fmt::Debug>(
    what: &str,
    mut check: impl FnMut() -> Result<T, E>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match check() {
            Ok(value) => return value,
            Err(state) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {WAIT:?} waiting until {what}; last state: {state:?}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Polls the async `check` until it returns `Ok`, like [`eventually`].
pub async fn eventually_async<T, E, F>(what: &str, mut check: impl FnMut() -> F) -> T
where
    E: std::fmt::Debug,
    F: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(state) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {WAIT:?} waiting until {what}; last state: {state:?}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Returns the hosts of a routing table in order, the catch-all `*` last.
pub fn hosts(table: &RouteTable) -> Vec<String> {
    table
        .virtual_hosts
        .iter()
        .map(|virtual_host| virtual_host.host.clone())
        .collect()
}

/// Returns the endpoints of the backend `id`, or `None` when the table has no such backend.
pub fn endpoints(table: &RouteTable, id: &str) -> Option<Vec<String>> {
    table
        .backends
        .iter()
        .find(|backend| backend.id == id)
        .map(|backend| backend.endpoints.clone())
}
