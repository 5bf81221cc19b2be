//! `gangway demo`: starts echo backends on loopback, writes example manifests for them into a
//! temporary directory, and serves that directory exactly as `gangway run --manifests` does.

pub mod echo;
pub mod manifests;

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::{DemoArgs, LogFormat};
use crate::compile::CompileOptions;
use crate::proxy::ProxyConfig;
use crate::run::{self, Listening, RunError, ServeConfig, Source};

/// How long the echo backends get to finish their connections after the proxy stopped.
const ECHO_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors that stop `gangway demo`.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The echo backends could not start.
    #[error("failed to start the echo backends: {0}")]
    Echo(#[source] std::io::Error),
    /// The temporary manifest directory could not be created.
    #[error("failed to create a temporary directory for the demo manifests: {0}")]
    TempDir(#[source] std::io::Error),
    /// A manifest file could not be written.
    #[error("failed to write the demo manifest {path}: {source}")]
    WriteManifests {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A manifest could not be encoded.
    #[error("failed to encode a demo manifest: {0}")]
    Encode(#[source] serde_json::Error),
    /// The self-signed certificate could not be generated.
    #[error("failed to generate the demo certificate: {0}")]
    Certificate(#[source] rcgen::Error),
    /// Serving failed.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Runs `gangway demo` and returns the process exit code.
pub fn demo(args: DemoArgs) -> ExitCode {
    run::init_logging(LogFormat::Text, None);
    match serve_demo(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "failed to run the demo");
            ExitCode::from(run::EXIT_FAILURE)
        }
    }
}

fn serve_demo(args: &DemoArgs) -> Result<(), DemoError> {
    // The echo backends run on their own runtime, so the serving path below stays the same
    // as `gangway run`.
    let echo_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("gangway-echo")
        .enable_all()
        .build()
        .map_err(DemoError::Echo)?;
    let echo_shutdown = CancellationToken::new();
    let echo_tasks = TaskTracker::new();
    let backends = echo_runtime.block_on(async {
        let echo_a = echo::start("echo-a", echo_shutdown.clone(), &echo_tasks).await?;
        let echo_b = echo::start("echo-b", echo_shutdown.clone(), &echo_tasks).await?;
        Ok(manifests::Backends {
            echo_a: echo_a.address,
            echo_b: echo_b.address,
        })
    });
    let backends = backends.map_err(DemoError::Echo)?;

    // Removed when dropped, which happens on every return below, after the proxy stopped.
    let directory = tempfile::Builder::new()
        .prefix("gangway-demo-")
        .tempdir()
        .map_err(DemoError::TempDir)?;
    manifests::write(directory.path(), &backends)?;
    tracing::info!(directory = %directory.path().display(), "wrote the demo manifests");

    let config = ServeConfig {
        source: Source::Manifests(directory.path().to_owned()),
        compile: CompileOptions::default(),
        proxy: ProxyConfig {
            http_listen: args.http_listen,
            https_listen: args.https_listen,
            worker_threads: run::default_worker_threads(),
            // Redirects name the ports the demo is bound to, as there is no port mapping in
            // front of it; 0 makes the proxy use the bound ports, also when a flag asks for 0.
            http_public_port: 0,
            https_public_port: 0,
            client_header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(75),
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_response_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(5),
            tunnel_idle_timeout: crate::proxy::DEFAULT_TUNNEL_IDLE_TIMEOUT,
            access_log: true,
            park_after: crate::proxy::DEFAULT_PARK_AFTER,
        },
        admin_listen: args.admin_listen,
    };
    let served = run::serve(config, CancellationToken::new(), |listening| {
        print!("{}", instructions(listening, directory.path()));
    });

    echo_shutdown.cancel();
    echo_tasks.close();
    echo_runtime.block_on(async {
        let _ = tokio::time::timeout(ECHO_SHUTDOWN_TIMEOUT, echo_tasks.wait()).await;
    });
    echo_runtime.shutdown_timeout(ECHO_SHUTDOWN_TIMEOUT);
    served?;
    Ok(())
}

/// Returns the text printed once the demo serves: curl lines to try, the admin URLs and how
/// to stop.
pub fn instructions(listening: &Listening, directory: &std::path::Path) -> String {
    let http = listening.http.port();
    let https = listening.https.port();
    let ip = connect_ip(listening.http);
    let tls_ip = connect_ip(listening.https);
    let admin = listening.admin;
    let echo = manifests::ECHO_HOST;
    let wildcard = manifests::WILDCARD_HOST;
    let secure = manifests::SECURE_HOST;

    let mut text = String::new();
    let _ = writeln!(
        text,
        "Gangway demo is serving the manifests in {}",
        directory.display()
    );
    let _ = writeln!(text);
    let _ = writeln!(text, "Try:");
    let _ = writeln!(
        text,
        "  curl --resolve {echo}:{http}:{ip} http://{echo}:{http}/"
    );
    let _ = writeln!(
        text,
        "  curl --resolve {echo}:{http}:{ip} http://{echo}:{http}/b/anything"
    );
    let _ = writeln!(text, "  curl -H 'Host: {wildcard}' http://{ip}:{http}/");
    let _ = writeln!(
        text,
        "  curl -i --resolve {secure}:{http}:{ip} http://{secure}:{http}/"
    );
    let _ = writeln!(
        text,
        "  curl -k --resolve {secure}:{https}:{tls_ip} https://{secure}:{https}/"
    );
    let _ = writeln!(text);
    let _ = writeln!(
        text,
        "The backends also echo WebSocket messages, for example at ws://{echo}:{http}/."
    );
    let _ = writeln!(
        text,
        "Admin: http://{admin}/readyz  http://{admin}/metrics  http://{admin}/debug/routes"
    );
    let _ = writeln!(
        text,
        "Edit the files in that directory to change routes live. Stop with Ctrl-C."
    );
    text
}

/// Returns the IP address a client on this machine connects to for a listener, in the form
/// that curl's `--resolve` and URLs take: loopback for an unspecified address, brackets
/// around IPv6.
fn connect_ip(listener: SocketAddr) -> String {
    match listener.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.to_string(),
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) if ip.is_unspecified() => format!("[{}]", Ipv6Addr::LOCALHOST),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }
}
