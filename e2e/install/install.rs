//! The install, step by step: render and lint the chart, apply it with kubectl, start two
//! replicas with the chart's flags, and check routing, status, Events, readiness, faults of
//! the API server and shutdown through both replicas.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gangway::demo::echo;
use gangway_test_apiserver::{ApiServer, Config};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::chart::{self, controller_args, documents, render, venv_python};
use crate::support::{ChildGuard, free_port};
use crate::tools::{Kubectl, admin_status, eventually, get};

/// Address the test puts into the status of the chart's LoadBalancer Service, as a cloud
/// load balancer controller would (192.0.2.0/24 is reserved for documentation).
const LOAD_BALANCER_IP: &str = "192.0.2.50";
/// Namespace of the applications, apart from the release namespace `gangway`.
const APPS: &str = "apps";
/// How long the API server stays down in the restart step.
const API_SERVER_DOWN: Duration = Duration::from_secs(2);
/// Upper bound on the requests the traffic thread sends while the API server is faulted.
const MAX_TRAFFIC_REQUESTS: usize = 2_000;

/// A `gangway run` process started with the chart's arguments.
struct Replica {
    /// Pod name, kubeconfig user and Lease identity at once.
    name: String,
    process: ChildGuard,
    http_port: u16,
    admin_port: u16,
    log: PathBuf,
}

impl Replica {
    /// Starts the binary with `chart_args`, its listeners moved to free loopback ports, and
    /// the kubeconfig of user `name`. POD_NAME and POD_NAMESPACE are set as the chart sets
    /// them from the downward API.
    fn start(name: &str, chart_args: &[String], kubeconfig: &Path, work_dir: &Path) -> Self {
        let http_port = free_port();
        let https_port = free_port();
        let admin_port = free_port();
        let mut replaced = 0;
        let mut arguments: Vec<String> = chart_args
            .iter()
            .map(|argument| {
                let port = match argument.split_once('=').map(|(flag, _)| flag) {
                    Some("--http-listen") => http_port,
                    Some("--https-listen") => https_port,
                    Some("--admin-listen") => admin_port,
                    _ => return argument.clone(),
                };
                replaced += 1;
                let flag = argument
                    .split_once('=')
                    .map(|(flag, _)| flag)
                    .unwrap_or_default();
                format!("{flag}=127.0.0.1:{port}")
            })
            .collect();
        assert_eq!(
            replaced, 3,
            "the chart no longer passes the three listen flags: {chart_args:?}"
        );
        arguments.push(format!("--kubeconfig={}", kubeconfig.display()));

        let log = work_dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).expect("failed to create a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_gangway"))
            .args(&arguments)
            .env("POD_NAME", name)
            .env("POD_NAMESPACE", "gangway")
            .env_remove("KUBECONFIG")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("failed to start gangway");
        Self {
            name: name.to_owned(),
            process: ChildGuard(child),
            http_port,
            admin_port,
            log,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/readyz` returns 200.
    fn wait_ready(&self) {
        eventually(&format!("{} is ready", self.name), || {
            match admin_status(self.admin_port, "/readyz") {
                code if code == "200" => Ok(()),
                code => Err((code, self.logs())),
            }
        });
    }

    /// Waits until a GET for `host` through this replica returns `expected`.
    fn wait_for_route(&self, host: &str, expected: Expected) {
        let condition = format!("{} returns {expected:?} for {host}", self.name);
        eventually(&condition, || {
            let (code, body) = get(self.http_port, host, "/");
            let matched = match expected {
                Expected::Backend(name) => {
                    code == "200" && backend_of(&body).as_deref() == Some(name)
                }
                Expected::Status(status) => code == status,
            };
            if matched { Ok(()) } else { Err((code, body)) }
        });
    }
}

/// Response that a route is expected to return.
#[derive(Clone, Copy, Debug)]
enum Expected {
    /// 200 from the named echo backend.
    Backend(&'static str),
    /// This status code, without a backend.
    Status(&'static str),
}

/// Returns the `backend` field of an echo reply.
fn backend_of(body: &str) -> Option<String> {
    let reply: Value = serde_json::from_str(body).ok()?;
    reply["backend"].as_str().map(str::to_owned)
}

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {APPS}}}
spec:
  ports: [{{name: http, port: 80}}]
"
    )
}

fn endpoint_slice(service: &str, port: u16) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {service}-1
  namespace: {APPS}
  labels: {{kubernetes.io/service-name: {service}}}
addressType: IPv4
endpoints: [{{addresses: [\"127.0.0.1\"], conditions: {{ready: true}}}}]
ports: [{{name: http, port: {port}, protocol: TCP}}]
"
    )
}

fn ingress(name: &str, host: &str, service: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: {APPS}}}
spec:
  ingressClassName: gangway
  rules:
  - host: {host}
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{name: http}}}}}}}}
"
    )
}

/// Runs the chart's strict Helm lint through its pytest module.
fn lint_chart() {
    let python = venv_python();
    let output = Command::new(python)
        .current_dir(chart::repository_root())
        .args(["-m", "pytest", "-q", "e2e/chart/test_chart_lint.py"])
        .output()
        .expect("failed to run pytest");
    assert!(
        output.status.success(),
        "the chart lint failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Checks that `kubectl get` finds every object of the rendered chart.
fn assert_chart_objects_exist(kubectl: &Kubectl, objects: &[Value]) {
    for object in objects {
        let kind = object["kind"].as_str().expect("every object has a kind");
        let name = object["metadata"]["name"]
            .as_str()
            .expect("every object has a name");
        let mut args = vec!["get", kind, name, "-o", "name"];
        if let Some(namespace) = object["metadata"]["namespace"].as_str() {
            args.extend(["--namespace", namespace]);
        }
        let found = kubectl.ok(&args);
        assert!(
            found.trim().ends_with(&format!("/{name}")),
            "kubectl get {kind} {name} printed {found:?}"
        );
    }
}

/// Waits until `kubectl get` shows the load balancer address in the status of Ingress
/// `name`.
fn wait_for_ingress_address(kubectl: &Kubectl, name: &str) {
    eventually(
        &format!("Ingress {name} has the load balancer address"),
        || {
            let jsonpath = "-o=jsonpath={.status.loadBalancer.ingress[*].ip}";
            match kubectl.run(&["get", "ingress", name, "--namespace", APPS, jsonpath]) {
                Ok(address) if address.trim() == LOAD_BALANCER_IP => Ok(()),
                other => Err(other),
            }
        },
    );
}

/// Users that patched the status of an Ingress, from the API server's request log.
fn ingress_status_writers(server: &ApiServer) -> BTreeSet<String> {
    server
        .requests()
        .into_iter()
        .filter(|request| {
            request.method == "PATCH"
                && request
                    .path
                    .starts_with("/apis/networking.k8s.io/v1/namespaces/")
                && request.path.contains("/ingresses/")
                && request.path.ends_with("/status")
        })
        .map(|request| request.user)
        .collect()
}

/// Sends GETs for `host` through every replica until `stop` is set, and returns the number
/// sent and the failed ones.
fn send_traffic(
    ports: Vec<u16>,
    host: &'static str,
    stop: Arc<AtomicBool>,
) -> (usize, Vec<String>) {
    let mut sent = 0;
    let mut failures = Vec::new();
    while !stop.load(Ordering::Relaxed) && sent < MAX_TRAFFIC_REQUESTS {
        for port in &ports {
            let (code, body) = get(*port, host, "/");
            sent += 1;
            if code != "200" {
                failures.push(format!("port {port}: {code} {body}"));
            }
        }
    }
    (sent, failures)
}

#[test]
fn chart_install_serves_through_both_replicas() {
    // Render and lint with real Helm first, since nothing else works without .venv.
    let manifest = render(&[]);
    let objects = documents(&manifest);
    let chart_args = controller_args(&objects);
    lint_chart();

    let work_dir = tempfile::tempdir().expect("failed to create a temporary directory");
    let work = work_dir.path();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("failed to build a runtime");
    let server = runtime
        .block_on(ApiServer::start(Config::default()))
        .expect("the test API server starts");
    let operator_config = work.join("operator.kubeconfig");
    server
        .write_kubeconfig(&operator_config, "operator")
        .expect("kubeconfig is written");
    let kubectl = Kubectl::new(&operator_config, work);

    let echo_shutdown = CancellationToken::new();
    let echo_tasks = TaskTracker::new();
    let (echo_a, echo_b) = runtime.block_on(async {
        let a = echo::start("echo-a", echo_shutdown.clone(), &echo_tasks).await;
        let b = echo::start("echo-b", echo_shutdown.clone(), &echo_tasks).await;
        (a.expect("echo-a starts"), b.expect("echo-b starts"))
    });

    // The operator installs the chart, as `kubectl apply -f deploy/gangway.yaml` would.
    kubectl.with_file("apply", "gangway", &manifest);
    assert_chart_objects_exist(&kubectl, &objects);
    // A cloud load balancer controller would set this address on the LoadBalancer Service.
    let load_balancer =
        format!(r#"{{"status":{{"loadBalancer":{{"ingress":[{{"ip":"{LOAD_BALANCER_IP}"}}]}}}}}}"#);
    kubectl.ok(&[
        "patch",
        "service",
        "gangway",
        "--namespace",
        "gangway",
        "--subresource=status",
        "--type=merge",
        "--patch",
        &load_balancer,
    ]);

    // The applications.
    let apps = [
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {APPS}}}\n"),
        service("echo-a"),
        endpoint_slice("echo-a", echo_a.address.port()),
        service("echo-b"),
        endpoint_slice("echo-b", echo_b.address.port()),
        ingress("web", "web.example.com", "echo-a"),
        ingress("stable", "stable.example.com", "echo-a"),
    ]
    .join("---\n");
    kubectl.with_file("create", "apps", &apps);

    // Readiness: with the API server down, the first replica serves probes but is not ready.
    runtime.block_on(server.stop());
    let kubeconfig_a = work.join("gangway-a.kubeconfig");
    let kubeconfig_b = work.join("gangway-b.kubeconfig");
    server
        .write_kubeconfig(&kubeconfig_a, "gangway-a")
        .expect("kubeconfig is written");
    server
        .write_kubeconfig(&kubeconfig_b, "gangway-b")
        .expect("kubeconfig is written");
    let mut replica_a = Replica::start("gangway-a", &chart_args, &kubeconfig_a, work);
    eventually("gangway-a returns 200 for /healthz", || match admin_status(
        replica_a.admin_port,
        "/healthz",
    ) {
        code if code == "200" => Ok(()),
        code => Err((code, replica_a.logs())),
    });
    for _ in 0..3 {
        assert_eq!(
            admin_status(replica_a.admin_port, "/readyz"),
            "503",
            "{}",
            replica_a.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    runtime
        .block_on(server.resume())
        .expect("the test API server resumes");
    replica_a.wait_ready();
    let mut replica_b = Replica::start("gangway-b", &chart_args, &kubeconfig_b, work);
    replica_b.wait_ready();
    let replicas = [&replica_a, &replica_b];

    // Routing through both replicas.
    for replica in replicas {
        replica.wait_for_route("web.example.com", Expected::Backend("echo-a"));
        replica.wait_for_route("stable.example.com", Expected::Backend("echo-a"));
        replica.wait_for_route("unknown.example.com", Expected::Status("404"));
    }

    // Status: the address of the publish Service, written by the leader only.
    wait_for_ingress_address(&kubectl, "web");

    // A bad Ingress: its Service is missing, which a Warning Event reports.
    kubectl.with_file(
        "create",
        "broken",
        &ingress("broken", "broken.example.com", "missing"),
    );
    eventually("kubectl get events shows the missing Service", || {
        let events = kubectl.ok(&["get", "events", "--namespace", APPS]);
        let reported = events.lines().any(|line| {
            line.contains("Warning")
                && line.contains("ServiceNotFound")
                && line.contains("ingress/broken")
        });
        if reported { Ok(()) } else { Err(events) }
    });

    // An update with kubectl replace, then a delete.
    kubectl.with_file(
        "replace",
        "web-b",
        &ingress("web", "web.example.com", "echo-b"),
    );
    for replica in replicas {
        replica.wait_for_route("web.example.com", Expected::Backend("echo-b"));
    }
    kubectl.ok(&["delete", "ingress", "web", "--namespace", APPS]);
    for replica in replicas {
        replica.wait_for_route("web.example.com", Expected::Status("404"));
    }

    // Faults: traffic keeps flowing while watches drop and the API server restarts.
    let stop_traffic = Arc::new(AtomicBool::new(false));
    let traffic = {
        let ports = vec![replica_a.http_port, replica_b.http_port];
        let stop = stop_traffic.clone();
        std::thread::spawn(move || send_traffic(ports, "stable.example.com", stop))
    };
    let dropped = server.drop_watches();
    assert!(dropped > 0, "no watch was open to drop");
    kubectl.with_file(
        "create",
        "after-drop",
        &ingress("after-drop", "after-drop.example.com", "echo-b"),
    );
    for replica in replicas {
        replica.wait_for_route("after-drop.example.com", Expected::Backend("echo-b"));
    }
    runtime
        .block_on(server.restart(API_SERVER_DOWN))
        .expect("the test API server restarts");
    kubectl.with_file(
        "create",
        "after-restart",
        &ingress("after-restart", "after-restart.example.com", "echo-a"),
    );
    for replica in replicas {
        replica.wait_for_route("after-restart.example.com", Expected::Backend("echo-a"));
    }
    stop_traffic.store(true, Ordering::Relaxed);
    let (sent, failures) = traffic.join().expect("the traffic thread ends");
    assert!(sent > 0, "no request was sent during the faults");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed during the faults: {failures:?}",
        failures.len()
    );

    // Status after the restart, and every status write from one identity: the Lease holder.
    wait_for_ingress_address(&kubectl, "after-restart");
    let holder = kubectl.ok(&[
        "get",
        "lease",
        "gangway-leader",
        "--namespace",
        "gangway",
        "-o=jsonpath={.spec.holderIdentity}",
    ]);
    let writers = ingress_status_writers(&server);
    assert_eq!(
        writers,
        BTreeSet::from([holder.trim().to_owned()]),
        "status writers and Lease holder"
    );

    // SIGTERM: both stop cleanly.
    for replica in [&mut replica_a, &mut replica_b] {
        let status = replica.process.terminate(Duration::from_secs(30));
        assert!(
            status.success(),
            "{} exited with {status}:\n{}",
            replica.name,
            replica.logs()
        );
    }

    echo_shutdown.cancel();
    runtime.block_on(server.stop());
}
