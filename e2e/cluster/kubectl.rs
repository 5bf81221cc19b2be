//! The operator's view: objects applied with the real `kubectl`, and the status and Events
//! Gangway writes read back with it.

use std::path::Path;
use std::time::Duration;

use crate::fixtures::{GANGWAY_CLASS, endpoint_slice, ingress, service};
use crate::harness::{Cluster, Gangway, eventually, eventually_async};

/// Maximum time for one kubectl call.
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `kubectl --kubeconfig <kubeconfig> <args>` and returns its standard output, or its
/// standard error when it fails.
async fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<String, String> {
    let mut command = tokio::process::Command::new("kubectl");
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .kill_on_drop(true);
    let output = tokio::time::timeout(KUBECTL_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("kubectl {args:?} timed out after {KUBECTL_TIMEOUT:?}"))
        .unwrap_or_else(|error| panic!("kubectl {args:?} failed to start: {error}"));
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_workflow() {
    let cluster = Cluster::start().await;
    let kubeconfig = cluster.kubeconfig("operator");
    let directory = tempfile::tempdir().expect("temporary directory is created");
    let app = directory.path().join("app.yaml");
    let manifests = [
        GANGWAY_CLASS.to_owned(),
        service("default", "web"),
        endpoint_slice("default", "web", &["10.0.0.1"]),
        ingress("default", "web", "gangway", "web.example.com", "web"),
    ]
    .join("---\n");
    std::fs::write(&app, manifests).expect("manifest is written");
    let app_path = app.to_str().expect("temporary path is UTF-8");
    kubectl(&kubeconfig, &["apply", "-f", app_path])
        .await
        .expect("kubectl apply succeeds");

    let gangway = Gangway::start(cluster.options("gangway-a"));
    gangway.wait_for_hosts(&["web.example.com"]).await;
    eventually_async("kubectl shows the Ingress address", || async {
        let jsonpath = "-o=jsonpath={.status.loadBalancer.ingress[*].ip}";
        let output = kubectl(&kubeconfig, &["get", "ingress", "web", jsonpath]).await;
        match output {
            Ok(address) if address.trim() == "192.0.2.10" => Ok(()),
            other => Err(other),
        }
    })
    .await;

    // A broken Ingress shows up in `kubectl get events`, and deleting it removes its routes
    // and its problem.
    let broken = directory.path().join("broken.yaml");
    std::fs::write(
        &broken,
        ingress("default", "broken", "gangway", "Upper.Example.com", "web"),
    )
    .expect("manifest is written");
    let broken_path = broken.to_str().expect("temporary path is UTF-8");
    kubectl(&kubeconfig, &["apply", "-f", broken_path])
        .await
        .expect("kubectl apply succeeds");
    let event = eventually_async("kubectl shows an InvalidHost Event", || async {
        let output = kubectl(&kubeconfig, &["get", "events", "-o", "json"]).await?;
        let list: serde_json::Value =
            serde_json::from_str(&output).map_err(|error| error.to_string())?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        items
            .into_iter()
            .find(|event| event["reason"] == "InvalidHost")
            .ok_or_else(|| format!("{} Events, none InvalidHost", list["items"]))
    })
    .await;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["involvedObject"]["name"], "broken");
    assert_eq!(event["involvedObject"]["kind"], "Ingress");

    kubectl(&kubeconfig, &["delete", "-f", broken_path])
        .await
        .expect("kubectl delete succeeds");
    eventually("the problem is gone", || {
        let report = gangway.live.report();
        let reasons: Vec<String> = report.problems.iter().map(|p| p.reason.clone()).collect();
        reasons.is_empty().then_some(()).ok_or(reasons)
    })
    .await;

    gangway.stop().await;
}
