//! Command-line entry point: runs the test API server until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use gangway_test_apiserver::{ApiServer, Config};
use tracing_subscriber::EnvFilter;

/// In-memory Kubernetes API server for end-to-end tests.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Listen address; must be loopback. Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// Write a kubeconfig for the server to this file.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,

    /// User name in the written kubeconfig; the request log records it.
    #[arg(long, default_value = "tester")]
    user: String,

    /// Interval between watch BOOKMARK events, such as `1s` or `500ms`.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    bookmark_interval: Duration,

    /// Number of changes kept for watches to resume from; older resourceVersions get
    /// 410 Gone.
    #[arg(long, default_value_t = 10_000)]
    history_limit: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    let server = ApiServer::start(Config {
        address: args.listen,
        bookmark_interval: args.bookmark_interval,
        history_limit: args.history_limit,
    })
    .await?;
    if let Some(path) = &args.kubeconfig {
        server.write_kubeconfig(path, &args.user)?;
    }
    // The first stdout line is the URL, so scripts can read where the server listens.
    println!("{}", server.url());

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    server.stop().await;
    Ok(())
}
