//! The server handle: listener lifecycle (start, stop, restart on the same address),
//! kubeconfig output and the fault-injection methods tests call in process.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::faults::{FailRule, FaultError, Faults, RequestRecord, StallRule};
use crate::store::Store;
use crate::{object, service};

/// Time in-flight requests get to finish when the server stops, before their
/// connections are cut. Watches end at once because their streams are dropped first.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Namespaces the real server creates at start-up.
const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// A failure to start or configure the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listen address is not on loopback.
    #[error("invalid listen address {0}: the test API server listens only on loopback addresses")]
    NotLoopback(SocketAddr),

    /// Binding the listener failed.
    #[error("failed to listen on {address}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },

    /// A user name cannot be used in a token.
    #[error("invalid user name {0:?}: use lower-case letters, digits and '-'")]
    InvalidUser(String),

    /// Writing the kubeconfig file failed.
    #[error("failed to write kubeconfig {path}")]
    WriteKubeconfig {
        /// The file.
        path: String,
        /// The write error.
        #[source]
        source: std::io::Error,
    },

    /// A fault rule is invalid.
    #[error(transparent)]
    Fault(#[from] FaultError),
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address; port 0 picks a free port. Must be a loopback address.
    pub address: SocketAddr,
    /// Interval between BOOKMARK events on watches that allow them. The real server
    /// sends one about every minute.
    pub bookmark_interval: Duration,
    /// Number of changes kept for watches and exact lists to start from; older
    /// resourceVersions get 410 Gone.
    pub history_limit: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            bookmark_interval: Duration::from_secs(60),
            history_limit: 10_000,
        }
    }
}

/// State shared by the handle, the accept loop and every request.
pub(crate) struct Shared {
    pub(crate) store: Arc<Mutex<Store>>,
    pub(crate) faults: Faults,
    pub(crate) config: Config,
    /// Random secret that every issued bearer token carries.
    pub(crate) token_secret: String,
    /// The bound address, which a restart binds again.
    pub(crate) address: SocketAddr,
    running: tokio::sync::Mutex<Option<Running>>,
    /// Restarts requested by the control endpoint, run by a supervisor task because a
    /// request cannot wait for the stop of its own connection.
    restart_requests: mpsc::UnboundedSender<Duration>,
}

struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// A running in-memory Kubernetes API server. Clones share the same server.
#[derive(Clone)]
pub struct ApiServer {
    pub(crate) shared: Arc<Shared>,
}

impl ApiServer {
    /// Binds the listener and starts serving. The store starts with the namespaces the
    /// real server creates: `default`, `kube-system`, `kube-public` and `kube-node-lease`.
    pub async fn start(config: Config) -> Result<ApiServer, ServerError> {
        if !config.address.ip().is_loopback() {
            return Err(ServerError::NotLoopback(config.address));
        }
        let listener =
            TcpListener::bind(config.address)
                .await
                .map_err(|source| ServerError::Bind {
                    address: config.address,
                    source,
                })?;
        let address = listener.local_addr().map_err(|source| ServerError::Bind {
            address: config.address,
            source,
        })?;

        let mut store = Store::new(config.history_limit);
        for name in SYSTEM_NAMESPACES {
            store.put(
                ("", "namespaces"),
                json!({
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {
                        "name": name,
                        "uid": uuid::Uuid::new_v4().to_string(),
                        "creationTimestamp": object::now_timestamp(),
                        "labels": {"kubernetes.io/metadata.name": name},
                    },
                    "spec": {"finalizers": ["kubernetes"]},
                    "status": {"phase": "Active"},
                }),
            );
        }

        let (restart_requests, restart_receiver) = mpsc::unbounded_channel();
        let server = ApiServer {
            shared: Arc::new(Shared {
                store: Arc::new(Mutex::new(store)),
                faults: Faults::default(),
                config,
                token_secret: uuid::Uuid::new_v4().simple().to_string(),
                address,
                running: tokio::sync::Mutex::new(None),
                restart_requests,
            }),
        };
        tokio::spawn(supervise_restarts(
            Arc::downgrade(&server.shared),
            restart_receiver,
        ));
        server.serve(listener).await;
        tracing::info!(%address, "test API server started");
        Ok(server)
    }

    /// Returns the bound address.
    pub fn address(&self) -> SocketAddr {
        self.shared.address
    }

    /// Returns the base URL, such as `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.address)
    }

    /// Returns the bearer token for `user`. The request log records that user name.
    /// Requests without a token are served too; a token this server did not issue gets
    /// 401 Unauthorized.
    pub fn token(&self, user: &str) -> Result<String, ServerError> {
        let valid = !user.is_empty()
            && user
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(ServerError::InvalidUser(user.to_string()));
        }
        Ok(format!("{user}.{}", self.shared.token_secret))
    }

    /// Returns the user a bearer token belongs to, or `None` when this server did not
    /// issue it.
    pub(crate) fn user_of(&self, token: &str) -> Option<String> {
        let (user, secret) = token.rsplit_once('.')?;
        (secret == self.shared.token_secret && !user.is_empty()).then(|| user.to_string())
    }

    /// Returns a kubeconfig (YAML) with one cluster, one user with a token and one
    /// context named `gangway-test`, whose default namespace is `default`.
    pub fn kubeconfig(&self, user: &str) -> Result<String, ServerError> {
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "gangway-test", "cluster": {"server": self.url()}}],
            "users": [{"name": user, "user": {"token": self.token(user)?}}],
            "contexts": [{
                "name": "gangway-test",
                "context": {"cluster": "gangway-test", "user": user, "namespace": "default"},
            }],
            "current-context": "gangway-test",
            "preferences": {},
        });
        // JSON is valid YAML, and both kubectl and kube-rs read it.
        Ok(serde_json::to_string_pretty(&config).expect("a JSON value always serializes"))
    }

    /// Writes [`ApiServer::kubeconfig`] to `path`.
    pub fn write_kubeconfig(&self, path: &Path, user: &str) -> Result<(), ServerError> {
        let text = self.kubeconfig(user)?;
        std::fs::write(path, text).map_err(|source| ServerError::WriteKubeconfig {
            path: path.display().to_string(),
            source,
        })
    }

    async fn serve(&self, listener: TcpListener) {
        let (shutdown, shutdown_signal) = oneshot::channel();
        let task = tokio::spawn(accept_loop(self.clone(), listener, shutdown_signal));
        *self.shared.running.lock().await = Some(Running { shutdown, task });
    }

    /// Stops serving, as an API server going down: closes the listener, ends every
    /// watch stream and closes every connection (in-flight requests get a short grace
    /// period). The state is kept for [`ApiServer::resume`].
    pub async fn stop(&self) {
        let running = self.shared.running.lock().await.take();
        if let Some(running) = running {
            let _ = running.shutdown.send(());
            if let Err(error) = running.task.await {
                tracing::warn!(%error, "test API server accept loop failed");
            }
            tracing::info!(address = %self.shared.address, "test API server stopped");
        }
    }

    /// Starts serving again on the same address with the same state. Does nothing when
    /// the server is running.
    pub async fn resume(&self) -> Result<(), ServerError> {
        if self.shared.running.lock().await.is_some() {
            return Ok(());
        }
        let address = self.shared.address;
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| ServerError::Bind { address, source })?;
        self.serve(listener).await;
        tracing::info!(%address, "test API server resumed");
        Ok(())
    }

    /// Stops the server, waits `down_for`, and starts it again on the same address with
    /// the same state: an API server restart.
    pub async fn restart(&self, down_for: Duration) -> Result<(), ServerError> {
        self.stop().await;
        tokio::time::sleep(down_for).await;
        self.resume().await
    }

    /// Schedules [`ApiServer::restart`] on another task and returns at once.
    pub(crate) fn request_restart(&self, down_for: Duration) {
        // The supervisor lives as long as `shared`, so the send cannot fail here.
        let _ = self.shared.restart_requests.send(down_for);
    }

    /// Returns whether the listener is open.
    pub async fn is_running(&self) -> bool {
        self.shared.running.lock().await.is_some()
    }

    /// Ends every open watch stream now and returns how many there were. Clients see
    /// their stream end cleanly, as when the real server closes a watch.
    pub fn drop_watches(&self) -> usize {
        let dropped = self.lock_store().drop_watches();
        tracing::info!(dropped, "dropped watch streams");
        dropped
    }

    /// Returns the number of open watch streams.
    pub fn watch_count(&self) -> usize {
        self.lock_store().watch_count()
    }

    /// Forgets the change history, so watches and lists from any earlier
    /// resourceVersion get 410 Gone. Returns the resourceVersion compacted at.
    pub fn compact(&self) -> u64 {
        let mut store = self.lock_store();
        store.compact();
        let revision = store.revision();
        tracing::info!(revision, "compacted history");
        revision
    }

    /// Returns the latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.lock_store().revision()
    }

    /// Fails the next matching requests.
    pub fn fail_requests(&self, rule: FailRule) -> Result<(), ServerError> {
        tracing::info!(?rule, "installing failure fault");
        Ok(self.shared.faults.add_failure(rule)?)
    }

    /// Delays matching requests.
    pub fn stall_requests(&self, rule: StallRule) {
        tracing::info!(?rule, "installing stall fault");
        self.shared.faults.add_stall(rule);
    }

    /// Removes every failure and stall rule.
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// Returns the request log: every API request handled so far, oldest first. Control
    /// requests under `/_gangway/` are left out.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.faults.requests()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        self.shared.faults.clear_requests();
    }

    pub(crate) fn lock_store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.store.lock().expect("store lock poisoned")
    }
}

async fn supervise_restarts(shared: Weak<Shared>, mut requests: mpsc::UnboundedReceiver<Duration>) {
    while let Some(down_for) = requests.recv().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let server = ApiServer { shared };
        if let Err(error) = server.restart(down_for).await {
            tracing::error!(%error, "failed to restart the test API server");
        }
    }
}

async fn accept_loop(
    server: ApiServer,
    listener: TcpListener,
    mut shutdown: oneshot::Receiver<()>,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let handler = server.clone();
                    let service = service_fn(move |request| {
                        let handler = handler.clone();
                        async move { Ok::<_, std::convert::Infallible>(service::handle(handler, request).await) }
                    });
                    let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    let connection = graceful.watch(connection);
                    connections.spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%peer, %error, "connection ended with an error");
                        }
                    });
                }
                Err(error) => {
                    // Accept fails on resource exhaustion (EMFILE); back off briefly
                    // instead of spinning.
                    tracing::warn!(%error, "failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    server.lock_store().drop_watches();
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(STOP_GRACE) => {
            tracing::debug!("cutting connections still busy after the stop grace period");
        }
    }
    connections.shutdown().await;
}
