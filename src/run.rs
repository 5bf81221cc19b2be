//! `gangway run`: wires logging, the provider, the admin listener and the proxy, and shuts
//! them down in order on SIGTERM or SIGINT.

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
use crate::provider::manifests::{ManifestError, ManifestProvider};
use crate::proxy::{self, Proxy, ProxyConfig, ProxyError};

/// Exit code when Gangway fails to start or stops on an error.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a command line that requests something not built yet.
pub const EXIT_USAGE: u8 = 2;

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
    /// The proxy could not start.
    #[error("failed to start the proxy: {0}")]
    Proxy(#[from] ProxyError),
}

/// Everything `serve` needs, resolved from the flags.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The manifest directory.
    pub manifests: PathBuf,
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
    let Some(manifests) = args.manifests.clone() else {
        // TODO: watch the Kubernetes API (Ingresses, IngressClasses, Services,
        // EndpointSlices, Secrets) with kube-rs reflectors when `--manifests` is absent.
        tracing::error!(
            "cluster mode is not built yet: give --manifests DIR to serve a directory of manifests"
        );
        return ExitCode::from(EXIT_USAGE);
    };
    let config = ServeConfig {
        manifests,
        compile: args.selection.compile_options(),
        proxy: proxy_config(&args),
        admin_listen: args.admin_listen,
    };
    match serve(config, CancellationToken::new(), |_| {}) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "failed to run gangway");
            ExitCode::from(EXIT_FAILURE)
        }
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
        access_log: args.access_log,
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

/// Serves the manifests in `config.manifests` until SIGTERM, SIGINT or `shutdown`.
///
/// Order matters: the first snapshot is published before the proxy accepts, so `/readyz`
/// turns 200 only once routes are live. On shutdown the provider and the admin listener stop
/// first, then the proxy drains requests in flight for up to the shutdown timeout.
/// `on_listening` runs once every listener is bound.
pub fn serve(
    config: ServeConfig,
    shutdown: CancellationToken,
    on_listening: impl FnOnce(&Listening),
) -> Result<(), RunError> {
    // The provider, the admin listener and signal handling need little, so one thread serves
    // them. The proxy runs its own worker threads.
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
    let provider = {
        let _context = runtime.enter();
        ManifestProvider::start(&config.manifests, config.compile, live.clone())?
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
        let provider_task = tokio::spawn(provider.run(shutdown.clone()));
        let mut admin_task = tokio::spawn(proxy::admin::serve(
            admin_listener,
            live.clone(),
            shutdown.clone(),
        ));
        // The admin listener ends early only on an accept error. Gangway then stops, because
        // probes that cannot connect would get it restarted anyway.
        let admin_result = tokio::select! {
            () = signals.wait(&shutdown) => None,
            result = &mut admin_task => Some(result),
        };
        shutdown.cancel();
        let admin_result = match admin_result {
            Some(result) => result,
            None => admin_task.await,
        };
        if let Err(error) = provider_task.await {
            tracing::error!(%error, "manifest provider task failed");
        }
        match admin_result {
            Ok(result) => result.map_err(RunError::Admin),
            Err(error) => Err(RunError::Admin(std::io::Error::other(error))),
        }
    });

    proxy.join();
    tracing::info!("gangway stopped");
    stopped
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
