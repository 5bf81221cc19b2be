//! `gangway run`: wires logging, the provider (a manifest directory or the Kubernetes API),
//! the admin listener and the proxy, and shuts them down in order on SIGTERM or SIGINT.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::cli::{LogFormat, RunArgs};
use crate::compile::CompileOptions;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::provider::kube::{self as cluster, ClusterError, ClusterOptions};
use crate::provider::manifests::{ManifestError, ManifestProvider};
use crate::proxy::{self, Proxy, ProxyConfig, ProxyError};

/// Exit code when Gangway fails to start or stops on an error.
pub const EXIT_FAILURE: u8 = 1;

/// Errors that stop `gangway run`.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The control-plane runtime could not be built.
    #[error("failed to start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The SIGTERM and SIGINT handlers could not be installed.
    #[error("failed to install the signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The admin listener could not bind its address.
    #[error("failed to listen on the admin address {address}: {source}")]
    AdminListen {
        /// `--admin-listen`.
        address: SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// The admin listener failed while serving.
    #[error("failed to serve the admin listener: {0}")]
    Admin(#[source] std::io::Error),
    /// The manifest provider could not start.
    #[error(transparent)]
    Manifests(#[from] ManifestError),
    /// Cluster mode could not start, for example on an unreadable kubeconfig.
    #[error("failed to start cluster mode")]
    Cluster(#[from] ClusterError),
    /// The provider task panicked.
    #[error("the provider task failed: {0}")]
    ProviderTask(#[source] tokio::task::JoinError),
    /// The proxy could not start.
    #[error("failed to start the proxy: {0}")]
    Proxy(#[from] ProxyError),
}

/// Source of the objects that `serve` routes traffic for.
#[derive(Clone, Debug)]
pub enum Source {
    /// A manifest directory, reloaded on every change (standalone mode).
    Manifests(PathBuf),
    /// The Kubernetes API (cluster mode). `ServeConfig::compile` replaces the options'
    /// `compile` field, so both modes select objects the same way.
    Cluster(Box<ClusterOptions>),
}

/// Everything `serve` needs, resolved from the flags.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Source of the objects.
    pub source: Source,
    /// Options that select Gangway's objects.
    pub compile: CompileOptions,
    /// Listeners, timeouts and threads of the proxy.
    pub proxy: ProxyConfig,
    /// Address of the admin listener.
    pub admin_listen: SocketAddr,
}

/// The addresses that `serve` listens on, which differ from the flags when a flag gives
/// port 0.
#[derive(Clone, Copy, Debug)]
pub struct Listening {
    /// Plain HTTP listener.
    pub http: SocketAddr,
    /// HTTPS listener.
    pub https: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
}

/// Runs `gangway run` and returns the process exit code.
pub fn run(args: RunArgs) -> ExitCode {
    init_logging(args.log_format, args.log_level.as_deref());
    let source = match &args.manifests {
        Some(directory) => Source::Manifests(directory.clone()),
        None => Source::Cluster(Box::new(cluster_options(&args))),
    };
    let config = ServeConfig {
        source,
        compile: args.selection.compile_options(),
        proxy: proxy_config(&args),
        admin_listen: args.admin_listen,
    };
    match serve(config, CancellationToken::new(), |_| {}) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // As a `dyn Error`, the log line also carries the causes, such as the I/O error
            // behind an unreadable kubeconfig.
            tracing::error!(
                error = &error as &dyn std::error::Error,
                "failed to run gangway"
            );
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Builds the cluster-mode settings from the flags and from the POD_NAME and POD_NAMESPACE
/// variables that the chart sets from the downward API.
pub fn cluster_options(args: &RunArgs) -> ClusterOptions {
    let flags = &args.cluster;
    ClusterOptions {
        kubeconfig: flags.kubeconfig.clone(),
        watch_namespace: flags.watch_namespace.clone(),
        compile: args.selection.compile_options(),
        publish_service: flags.publish_service.clone(),
        publish_address: flags.publish_address.clone(),
        leader_election_namespace: flags
            .leader_election_namespace(std::env::var("POD_NAMESPACE").ok()),
        leader_election_lease: flags.leader_election_lease.clone(),
        // `default_identity` reads POD_NAME first.
        identity: cluster::default_identity(),
        ..ClusterOptions::default()
    }
}

/// Builds the proxy settings from the flags.
pub fn proxy_config(args: &RunArgs) -> ProxyConfig {
    ProxyConfig {
        http_listen: args.http_listen,
        https_listen: args.https_listen,
        worker_threads: args
            .worker_threads
            .map(usize::from)
            .unwrap_or_else(default_worker_threads),
        http_public_port: args.http_public_port,
        https_public_port: args.https_public_port,
        client_header_timeout: args.client_header_timeout,
        idle_timeout: args.idle_timeout,
        upstream_connect_timeout: args.upstream_connect_timeout,
        upstream_response_timeout: args.upstream_response_timeout,
        shutdown_timeout: args.shutdown_timeout,
        tunnel_idle_timeout: args.tunnel_idle_timeout,
        access_log: args.access_log,
        park_after: crate::proxy::DEFAULT_PARK_AFTER,
    }
}

/// Returns the number of CPUs this process may use, or 1 when it cannot be found.
pub fn default_worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Installs the global tracing subscriber, writing to stderr. `filter` is an EnvFilter
/// directive; without it, RUST_LOG applies, and `info` when RUST_LOG is unset or invalid.
/// Does nothing when a subscriber is already installed.
pub fn init_logging(format: LogFormat, filter: Option<&str>) {
    let filter = match filter {
        Some(directive) => EnvFilter::builder().parse_lossy(directive),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // Colors only help a person at a terminal; in files and log collectors they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // Only a second call in one process fails, as in-process tests do; the first one wins.
    let _ = installed;
}

/// Serves the objects of `config.source` until SIGTERM, SIGINT or `shutdown`.
///
/// `/readyz` turns 200 only once a snapshot is live: the manifest provider publishes its
/// first snapshot before the proxy accepts, and cluster mode publishes once every watch has
/// listed. On shutdown the provider and the admin listener stop first, then the proxy drains
/// requests in flight for up to the shutdown timeout. `on_listening` runs once every listener
/// is bound. A provider that stops on its own (cluster mode with an unusable kubeconfig) stops
/// everything and its error is returned.
pub fn serve(
    config: ServeConfig,
    shutdown: CancellationToken,
    on_listening: impl FnOnce(&Listening),
) -> Result<(), RunError> {
    // The provider's event loop, the admin listener and signal handling need little, so one
    // thread serves them. The manifest provider reads and compiles on a thread of its own, and
    // the proxy runs its own worker threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("gangway-control")
        .build()
        .map_err(RunError::Runtime)?;
    let signals = {
        let _context = runtime.enter();
        ShutdownSignals::install()?
    };

    let live = Arc::new(Live::new(Arc::new(Metrics::new())));
    let admin_listener = runtime
        .block_on(TcpListener::bind(config.admin_listen))
        .map_err(|source| RunError::AdminListen {
            address: config.admin_listen,
            source,
        })?;
    let admin_address = admin_listener
        .local_addr()
        .map_err(|source| RunError::AdminListen {
            address: config.admin_listen,
            source,
        })?;
    let provider = match config.source {
        Source::Manifests(directory) => {
            // TODO: serve the admin listener during this first read as well, so that
            // `/healthz` answers while a large directory loads at start. Until then its
            // connections wait in the listen queue, and later reads run off this thread.
            let _context = runtime.enter();
            Provider::Manifests(ManifestProvider::start(
                &directory,
                config.compile,
                live.clone(),
            )?)
        }
        Source::Cluster(mut options) => {
            options.compile = config.compile;
            Provider::Cluster(options)
        }
    };

    let default_certificate = proxy::generate_default_certificate()?;
    let proxy = Proxy::start(
        config.proxy,
        live.clone(),
        default_certificate,
        shutdown.clone(),
    )?;
    let listening = Listening {
        http: proxy.http_addr(),
        https: proxy.https_addr(),
        admin: admin_address,
    };
    tracing::info!(
        http = %listening.http,
        https = %listening.https,
        admin = %listening.admin,
        "gangway is serving"
    );
    on_listening(&listening);

    let stopped = runtime.block_on(async {
        let mut provider_task = tokio::spawn(provider.run(live.clone(), shutdown.clone()));
        let mut admin_task = tokio::spawn(proxy::admin::serve(
            admin_listener,
            live.clone(),
            shutdown.clone(),
        ));
        // The admin listener ends early only on an accept error, and the provider only when
        // it cannot start. Gangway then stops: probes that cannot connect would get it
        // restarted anyway, and a replica that never gets routes should not look alive.
        let early = tokio::select! {
            () = signals.wait(&shutdown) => Early::Signal,
            result = &mut admin_task => Early::Admin(result),
            result = &mut provider_task => Early::Provider(result),
        };
        shutdown.cancel();
        let (admin_result, provider_result) = match early {
            Early::Signal => (admin_task.await, provider_task.await),
            Early::Admin(admin) => (admin, provider_task.await),
            Early::Provider(provider) => (admin_task.await, provider),
        };
        let provider_result = match provider_result {
            Ok(result) => result,
            Err(error) => Err(RunError::ProviderTask(error)),
        };
        let admin_result = match admin_result {
            Ok(result) => result.map_err(RunError::Admin),
            Err(error) => Err(RunError::Admin(std::io::Error::other(error))),
        };
        provider_result.and(admin_result)
    });

    proxy.join();
    tracing::info!("gangway stopped");
    stopped
}

/// The running provider: the manifest watcher, or the settings of cluster mode, which
/// connects once `run` starts.
enum Provider {
    Manifests(ManifestProvider),
    Cluster(Box<ClusterOptions>),
}

impl Provider {
    /// Runs until `shutdown` is cancelled. Returns early only when cluster mode cannot start.
    async fn run(self, live: Arc<Live>, shutdown: CancellationToken) -> Result<(), RunError> {
        match self {
            Self::Manifests(provider) => {
                provider.run(shutdown).await;
                Ok(())
            }
            Self::Cluster(options) => Ok(cluster::run(*options, live, shutdown).await?),
        }
    }
}

/// Event that ended the wait for a stop signal.
enum Early<A, P> {
    Signal,
    Admin(A),
    Provider(P),
}

/// Handlers for SIGTERM and SIGINT, installed before anything starts so that a signal during
/// start-up also leads to a clean stop.
struct ShutdownSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl ShutdownSignals {
    /// Installs the handlers. Must run inside a tokio runtime.
    fn install() -> Result<Self, RunError> {
        Ok(Self {
            terminate: signal(SignalKind::terminate()).map_err(RunError::Signals)?,
            interrupt: signal(SignalKind::interrupt()).map_err(RunError::Signals)?,
        })
    }

    /// Waits for SIGTERM, SIGINT or the cancellation of `shutdown`, and logs which came.
    async fn wait(mut self, shutdown: &CancellationToken) {
        tokio::select! {
            _ = self.terminate.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
            _ = self.interrupt.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
            () = shutdown.cancelled() => tracing::info!("shutting down"),
        }
    }
}
