//! The command line: `gangway run`, `gangway check` and `gangway demo`.
//!
//! Every flag can also be set with an environment variable named `GANGWAY_` followed by the
//! flag in upper snake case, such as `GANGWAY_HTTP_LISTEN` for `--http-listen`. A flag on the
//! command line wins over the variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::compile::CompileOptions;
use crate::store::ObjectKey;

/// Gangway: a Kubernetes ingress controller with an in-process proxy.
#[derive(Debug, Parser)]
#[command(name = "gangway", version, about, propagate_version = true)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve traffic for the Ingresses of a Kubernetes cluster, or of a manifest directory
    /// with `--manifests`, following every change.
    // Boxed because it is many times larger than the other variants.
    Run(Box<RunArgs>),
    /// Compile a manifest directory without serving, print the routing table and every
    /// problem, and exit 1 when any problem is an error.
    Check(CheckArgs),
    /// Start echo backends and serve example Ingresses for them on loopback, to try Gangway
    /// with curl.
    Demo(DemoArgs),
}

/// Flags that select the Ingresses Gangway serves.
#[derive(Clone, Debug, Args)]
pub struct SelectionArgs {
    /// Ingress class name that selects Gangway in the legacy `kubernetes.io/ingress.class`
    /// annotation.
    #[arg(long, env = "GANGWAY_INGRESS_CLASS", default_value = "gangway")]
    pub ingress_class: String,

    /// IngressClass `spec.controller` value that marks an IngressClass as Gangway's.
    #[arg(
        long,
        env = "GANGWAY_CONTROLLER_NAME",
        default_value = "gangway.dev/ingress-controller"
    )]
    pub controller_name: String,
}

impl SelectionArgs {
    /// Returns the compiler options these flags select.
    pub fn compile_options(&self) -> CompileOptions {
        CompileOptions {
            controller_name: self.controller_name.clone(),
            ingress_class: self.ingress_class.clone(),
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `gangway run`.
#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// Directory of Kubernetes manifests (YAML or JSON, read recursively) to serve without a
    /// cluster. Without it, Gangway reads from the Kubernetes API.
    #[arg(
        long,
        env = "GANGWAY_MANIFESTS",
        value_name = "DIR",
        conflicts_with = CLUSTER_GROUP
    )]
    pub manifests: Option<PathBuf>,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Address of the plain HTTP listener.
    #[arg(long, env = "GANGWAY_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub http_listen: SocketAddr,

    /// Address of the HTTPS listener.
    #[arg(long, env = "GANGWAY_HTTPS_LISTEN", default_value = "0.0.0.0:8443")]
    pub https_listen: SocketAddr,

    /// Address of the admin listener (/healthz, /readyz, /metrics, /debug/routes).
    #[arg(long, env = "GANGWAY_ADMIN_LISTEN", default_value = "127.0.0.1:9180")]
    pub admin_listen: SocketAddr,

    /// Port that clients use for plain HTTP, as seen in front of any port mapping; sent in
    /// X-Forwarded-Port. 0 means the port the HTTP listener is bound to.
    #[arg(long, env = "GANGWAY_HTTP_PUBLIC_PORT", default_value_t = 80)]
    pub http_public_port: u16,

    /// Port that clients use for HTTPS, as seen in front of any port mapping; used in
    /// redirects from HTTP to HTTPS and sent in X-Forwarded-Port. 0 means the port the HTTPS
    /// listener is bound to.
    #[arg(long, env = "GANGWAY_HTTPS_PUBLIC_PORT", default_value_t = 443)]
    pub https_public_port: u16,

    #[command(flatten)]
    pub selection: SelectionArgs,

    /// Threads that serve traffic [default: the number of CPUs].
    #[arg(long, env = "GANGWAY_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,

    /// Log line format.
    #[arg(long, env = "GANGWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, as a tracing EnvFilter directive such as `info` or `gangway=debug`
    /// [default: RUST_LOG when set, otherwise `info`].
    #[arg(long, env = "GANGWAY_LOG_LEVEL", value_parser = parse_log_filter)]
    pub log_level: Option<String>,

    /// Log one line per proxied request.
    #[arg(
        long,
        env = "GANGWAY_ACCESS_LOG",
        action = ArgAction::Set,
        default_value_t = true,
        value_name = "true|false"
    )]
    pub access_log: bool,

    /// Time a client has to send its first complete request head after connecting.
    #[arg(long, env = "GANGWAY_CLIENT_HEADER_TIMEOUT", default_value = "60s", value_parser = parse_timeout)]
    pub client_header_timeout: Duration,

    /// Time an idle client connection stays open between requests; the next request head
    /// must arrive within it. 0 turns keep-alive off: an HTTP/1 connection closes after its
    /// first response, an HTTP/2 connection within a second after its streams end.
    #[arg(long, env = "GANGWAY_IDLE_TIMEOUT", default_value = "75s", value_parser = parse_timeout_or_zero)]
    pub idle_timeout: Duration,

    /// Time allowed to open a connection to an upstream endpoint.
    #[arg(long, env = "GANGWAY_UPSTREAM_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_timeout)]
    pub upstream_connect_timeout: Duration,

    /// Time allowed for an upstream to send the response head after the request was sent.
    #[arg(long, env = "GANGWAY_UPSTREAM_RESPONSE_TIMEOUT", default_value = "60s", value_parser = parse_timeout)]
    pub upstream_response_timeout: Duration,

    /// Time that requests in flight get to finish after SIGTERM or SIGINT. 0 cuts them at
    /// once.
    #[arg(long, env = "GANGWAY_SHUTDOWN_TIMEOUT", default_value = "25s", value_parser = parse_timeout_or_zero)]
    pub shutdown_timeout: Duration,

    /// Time an upgraded connection, such as a WebSocket, may carry no bytes in either
    /// direction before it is closed.
    #[arg(long, env = "GANGWAY_TUNNEL_IDLE_TIMEOUT", default_value = "1h", value_parser = parse_timeout)]
    pub tunnel_idle_timeout: Duration,
}

/// Group id of the cluster-mode flags, which `--manifests` conflicts with.
const CLUSTER_GROUP: &str = "cluster";

/// Flags of `gangway run` that only apply in cluster mode, without `--manifests`.
#[derive(Clone, Debug, Default, Args)]
#[group(id = CLUSTER_GROUP, multiple = true)]
pub struct ClusterArgs {
    /// Kubeconfig file to use [default: KUBECONFIG, then ~/.kube/config, then the in-cluster
    /// service account].
    #[arg(long, env = "GANGWAY_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Watch Ingresses, Services, EndpointSlices and Secrets in this namespace only
    /// [default: all namespaces]. IngressClasses are always watched cluster-wide.
    #[arg(long, env = "GANGWAY_WATCH_NAMESPACE", value_name = "NAMESPACE", value_parser = parse_name)]
    pub watch_namespace: Option<String>,

    /// Service whose addresses go into the `status.loadBalancer` of Gangway's Ingresses.
    #[arg(
        long,
        env = "GANGWAY_PUBLISH_SERVICE",
        value_name = "NAMESPACE/NAME",
        value_parser = parse_publish_service
    )]
    pub publish_service: Option<ObjectKey>,

    /// Fixed address for the status of Gangway's Ingresses: an IP address, or else a host
    /// name. Repeat the flag or separate addresses with commas. Replaces --publish-service.
    #[arg(
        long,
        env = "GANGWAY_PUBLISH_ADDRESS",
        value_name = "ADDRESS",
        value_delimiter = ',',
        value_parser = parse_publish_address
    )]
    pub publish_address: Vec<String>,

    /// Namespace of the leader election Lease [default: POD_NAMESPACE, else `default`].
    #[arg(long, env = "GANGWAY_LEADER_ELECTION_NAMESPACE", value_name = "NAMESPACE", value_parser = parse_name)]
    pub leader_election_namespace: Option<String>,

    /// Name of the leader election Lease. Replicas that share it elect one leader, which
    /// alone writes Ingress status and Events.
    #[arg(
        long,
        env = "GANGWAY_LEADER_ELECTION_LEASE",
        value_name = "NAME",
        default_value = "gangway-leader",
        value_parser = parse_name
    )]
    pub leader_election_lease: String,
}

impl ClusterArgs {
    /// Returns the `--leader-election-namespace` value, else the non-empty `pod_namespace`
    /// (the chart sets POD_NAMESPACE from the downward API), else `default`.
    pub fn leader_election_namespace(&self, pod_namespace: Option<String>) -> String {
        self.leader_election_namespace
            .clone()
            .or(pod_namespace.filter(|namespace| !namespace.is_empty()))
            .unwrap_or_else(|| "default".to_owned())
    }
}

/// Output format of `gangway check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// An aligned routing table, then one problem per line.
    Text,
    /// `{"routes": <routing table>, "problems": [...]}`.
    Json,
}

/// Flags of `gangway check`.
#[derive(Clone, Debug, Args)]
pub struct CheckArgs {
    /// Directory of Kubernetes manifests (YAML or JSON, read recursively) to check.
    #[arg(long, env = "GANGWAY_MANIFESTS", value_name = "DIR")]
    pub manifests: PathBuf,

    #[command(flatten)]
    pub selection: SelectionArgs,

    /// Output format.
    #[arg(long, env = "GANGWAY_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// Flags of `gangway demo`.
#[derive(Clone, Debug, Args)]
pub struct DemoArgs {
    /// Address of the plain HTTP listener.
    #[arg(long, env = "GANGWAY_HTTP_LISTEN", default_value = "127.0.0.1:8080")]
    pub http_listen: SocketAddr,

    /// Address of the HTTPS listener.
    #[arg(long, env = "GANGWAY_HTTPS_LISTEN", default_value = "127.0.0.1:8443")]
    pub https_listen: SocketAddr,

    /// Address of the admin listener (/healthz, /readyz, /metrics, /debug/routes).
    #[arg(long, env = "GANGWAY_ADMIN_LISTEN", default_value = "127.0.0.1:9180")]
    pub admin_listen: SocketAddr,
}

/// Checks a `--log-level` value early, so a typo is a usage error instead of a failure at
/// start.
fn parse_log_filter(value: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(value)
        .map(|_| value.to_owned())
        .map_err(|error| format!("invalid log filter: {error}"))
}

/// Longest accepted timeout. Deadlines are computed as `Instant` plus the timeout, and the
/// parking lot measures idle time on a clock that wraps after about 49 days, so a longer
/// value would overflow or never expire.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// Parses a timeout such as `75s` or `2m`: more than zero and at most [`MAX_TIMEOUT`]. A
/// zero connect, response or header timeout would fail every request.
fn parse_timeout(value: &str) -> Result<Duration, String> {
    let timeout = parse_timeout_or_zero(value)?;
    if timeout.is_zero() {
        return Err(format!("invalid duration {value:?}: must be more than 0"));
    }
    Ok(timeout)
}

/// Parses a timeout that may also be zero: an idle timeout of zero turns keep-alive off, and
/// a shutdown timeout of zero cuts requests in flight at once.
fn parse_timeout_or_zero(value: &str) -> Result<Duration, String> {
    let timeout = humantime::parse_duration(value)
        .map_err(|error| format!("invalid duration {value:?}: {error}"))?;
    if timeout > MAX_TIMEOUT {
        return Err(format!("invalid duration {value:?}: must be at most 24h"));
    }
    Ok(timeout)
}

/// Checks a namespace or object name: a non-empty name without `/`, as the API server
/// accepts in a URL path segment.
fn parse_name(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if value.contains('/') {
        return Err(format!("invalid name {value:?}: must not contain '/'"));
    }
    Ok(value.to_owned())
}

/// Parses `--publish-service NAMESPACE/NAME`.
fn parse_publish_service(value: &str) -> Result<ObjectKey, String> {
    let usage =
        || format!("invalid Service {value:?}: expected NAMESPACE/NAME, such as gangway/gangway");
    let (namespace, name) = value.split_once('/').ok_or_else(usage)?;
    if namespace.is_empty() || name.is_empty() || name.contains('/') {
        return Err(usage());
    }
    Ok(ObjectKey::new(namespace, name))
}

/// Checks one `--publish-address` value, so that a stray comma is a usage error instead of an
/// empty address in Ingress status.
fn parse_publish_address(value: &str) -> Result<String, String> {
    let address = value.trim();
    if address.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if address.contains(char::is_whitespace) {
        return Err(format!(
            "invalid address {value:?}: must not contain spaces"
        ));
    }
    Ok(address.to_owned())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(arguments: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("gangway").chain(arguments.iter().copied()))
    }

    fn run_args(arguments: &[&str]) -> RunArgs {
        match parse(arguments).unwrap().command {
            Command::Run(args) => *args,
            other => panic!("expected run, parsed {other:?}"),
        }
    }

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_defaults() {
        let args = run_args(&["run"]);

        assert_eq!(args.manifests, None);
        assert_eq!(args.http_listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(args.https_listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(args.admin_listen, "127.0.0.1:9180".parse().unwrap());
        assert_eq!(args.http_public_port, 80);
        assert_eq!(args.https_public_port, 443);
        assert_eq!(args.selection.ingress_class, "gangway");
        assert_eq!(
            args.selection.controller_name,
            "gangway.dev/ingress-controller"
        );
        assert_eq!(args.worker_threads, None);
        assert_eq!(args.log_format, LogFormat::Text);
        assert_eq!(args.log_level, None);
        assert!(args.access_log);
        assert_eq!(args.client_header_timeout, Duration::from_secs(60));
        assert_eq!(args.idle_timeout, Duration::from_secs(75));
        assert_eq!(args.upstream_connect_timeout, Duration::from_secs(5));
        assert_eq!(args.upstream_response_timeout, Duration::from_secs(60));
        assert_eq!(args.shutdown_timeout, Duration::from_secs(25));
        assert_eq!(args.tunnel_idle_timeout, Duration::from_secs(3600));
        assert_eq!(args.cluster.kubeconfig, None);
        assert_eq!(args.cluster.watch_namespace, None);
        assert_eq!(args.cluster.publish_service, None);
        assert!(args.cluster.publish_address.is_empty());
        assert_eq!(args.cluster.leader_election_namespace, None);
        assert_eq!(args.cluster.leader_election_lease, "gangway-leader");
    }

    #[test]
    fn cluster_flags_are_parsed() {
        let args = run_args(&[
            "run",
            "--kubeconfig",
            "/etc/gangway/kubeconfig",
            "--watch-namespace",
            "apps",
            "--publish-service",
            "gangway/gangway",
            "--publish-address",
            "203.0.113.7,edge.example.com",
            "--publish-address",
            "2001:db8::7",
            "--leader-election-namespace",
            "gangway",
            "--leader-election-lease",
            "edge-leader",
        ]);

        let cluster = &args.cluster;
        assert_eq!(
            cluster.kubeconfig,
            Some(PathBuf::from("/etc/gangway/kubeconfig"))
        );
        assert_eq!(cluster.watch_namespace.as_deref(), Some("apps"));
        assert_eq!(
            cluster.publish_service,
            Some(ObjectKey::new("gangway", "gangway"))
        );
        assert_eq!(
            cluster.publish_address,
            ["203.0.113.7", "edge.example.com", "2001:db8::7"]
        );
        assert_eq!(
            cluster.leader_election_namespace.as_deref(),
            Some("gangway")
        );
        assert_eq!(cluster.leader_election_lease, "edge-leader");
    }

    #[test]
    fn lease_namespace_falls_back() {
        let unset = ClusterArgs::default();
        let set = ClusterArgs {
            leader_election_namespace: Some("edge".to_owned()),
            ..ClusterArgs::default()
        };

        assert_eq!(unset.leader_election_namespace(None), "default");
        assert_eq!(
            unset.leader_election_namespace(Some(String::new())),
            "default"
        );
        assert_eq!(
            unset.leader_election_namespace(Some("gangway".to_owned())),
            "gangway"
        );
        assert_eq!(
            set.leader_election_namespace(Some("gangway".to_owned())),
            "edge"
        );
    }

    #[test]
    fn manifests_conflict_with_cluster_flags() {
        let cluster_flags: &[&[&str]] = &[
            &["--kubeconfig", "/tmp/kubeconfig"],
            &["--watch-namespace", "apps"],
            &["--publish-service", "gangway/gangway"],
            &["--publish-address", "203.0.113.7"],
            &["--leader-election-namespace", "gangway"],
            &["--leader-election-lease", "edge-leader"],
        ];
        for flag in cluster_flags {
            let arguments: Vec<&str> = ["run", "--manifests", "/srv/manifests"]
                .into_iter()
                .chain(flag.iter().copied())
                .collect();
            let error = parse(&arguments).expect_err(&format!("{arguments:?} parsed"));
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{arguments:?}"
            );
        }
    }

    #[test]
    fn run_flags_are_parsed() {
        let args = run_args(&[
            "run",
            "--manifests",
            "/srv/manifests",
            "--http-listen",
            "127.0.0.1:1080",
            "--worker-threads",
            "3",
            "--log-format",
            "json",
            "--log-level",
            "gangway=debug,info",
            "--access-log",
            "false",
            "--idle-timeout",
            "1m 30s",
            "--upstream-connect-timeout",
            "250ms",
        ]);

        assert_eq!(args.manifests, Some(PathBuf::from("/srv/manifests")));
        assert_eq!(args.http_listen, "127.0.0.1:1080".parse().unwrap());
        assert_eq!(args.worker_threads, Some(3));
        assert_eq!(args.log_format, LogFormat::Json);
        assert_eq!(args.log_level.as_deref(), Some("gangway=debug,info"));
        assert!(!args.access_log);
        assert_eq!(args.idle_timeout, Duration::from_secs(90));
        assert_eq!(args.upstream_connect_timeout, Duration::from_millis(250));
    }

    #[test]
    fn timeout_of_24h_accepted() {
        let args = run_args(&["run", "--idle-timeout", "24h"]);

        assert_eq!(args.idle_timeout, MAX_TIMEOUT);
    }

    #[test]
    fn zero_idle_and_shutdown_timeouts_accepted() {
        let args = run_args(&["run", "--idle-timeout", "0s", "--shutdown-timeout", "0s"]);

        assert_eq!(args.idle_timeout, Duration::ZERO);
        assert_eq!(args.shutdown_timeout, Duration::ZERO);
    }

    #[test]
    fn invalid_values_are_usage_errors() {
        let cases: &[(&str, &[&str])] = &[
            ("duration without unit", &["run", "--idle-timeout", "75"]),
            ("idle timeout over 24h", &["run", "--idle-timeout", "25h"]),
            (
                "shutdown timeout that overflows",
                &["run", "--shutdown-timeout", "600000000y"],
            ),
            (
                "zero header timeout",
                &["run", "--client-header-timeout", "0s"],
            ),
            (
                "zero connect timeout",
                &["run", "--upstream-connect-timeout", "0ms"],
            ),
            (
                "zero response timeout",
                &["run", "--upstream-response-timeout", "0s"],
            ),
            (
                "zero tunnel timeout",
                &["run", "--tunnel-idle-timeout", "0s"],
            ),
            ("address without port", &["run", "--http-listen", "0.0.0.0"]),
            ("zero worker threads", &["run", "--worker-threads", "0"]),
            ("access log as yes", &["run", "--access-log", "yes"]),
            ("unknown log format", &["run", "--log-format", "xml"]),
            (
                "invalid log filter",
                &["run", "--log-level", "gangway=loud"],
            ),
            (
                "publish Service without namespace",
                &["run", "--publish-service", "gangway"],
            ),
            (
                "publish Service with empty name",
                &["run", "--publish-service", "gangway/"],
            ),
            (
                "publish Service with two slashes",
                &["run", "--publish-service", "a/b/c"],
            ),
            (
                "empty publish address",
                &["run", "--publish-address", "203.0.113.7,"],
            ),
            ("empty watch namespace", &["run", "--watch-namespace", ""]),
            ("check without directory", &["check"]),
            (
                "unknown check output",
                &["check", "--manifests", ".", "--output", "yaml"],
            ),
        ];
        for (name, arguments) in cases {
            assert!(parse(arguments).is_err(), "{name}: {arguments:?} parsed");
        }
    }

    #[test]
    fn check_and_demo_defaults() {
        match parse(&["check", "--manifests", "examples"])
            .unwrap()
            .command
        {
            Command::Check(args) => {
                assert_eq!(args.manifests, PathBuf::from("examples"));
                assert_eq!(args.output, OutputFormat::Text);
                assert_eq!(args.selection.ingress_class, "gangway");
            }
            other => panic!("expected check, parsed {other:?}"),
        }
        match parse(&["demo"]).unwrap().command {
            Command::Demo(args) => {
                assert_eq!(args.http_listen, "127.0.0.1:8080".parse().unwrap());
                assert_eq!(args.https_listen, "127.0.0.1:8443".parse().unwrap());
                assert_eq!(args.admin_listen, "127.0.0.1:9180".parse().unwrap());
            }
            other => panic!("expected demo, parsed {other:?}"),
        }
    }
}
