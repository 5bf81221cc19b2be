//! The real kubectl against the test API server.

mod common;

use common::TestServer;
use serde_json::Value;

const APP: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app: web, tier: front}
spec:
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  labels: {app: web}
spec:
  ingressClassName: gangway
  rules:
  - host: web.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {name: web, port: {number: 80}}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  labels: {app: other}
data:
  mode: fast
"#;

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text)
        .unwrap_or_else(|error| panic!("kubectl printed invalid JSON ({error}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_replace_delete_multi_document_file() {
    let test = TestServer::start().await;
    let file = test.write_file("app.yaml", APP);
    let file = file.to_str().unwrap();

    let created = test.kubectl_ok(&["create", "-f", file]).await;
    assert!(created.contains("service/web created"), "{created}");
    assert!(
        created.contains("ingress.networking.k8s.io/web created"),
        "{created}"
    );
    assert!(created.contains("configmap/settings created"), "{created}");

    let table = test.kubectl_ok(&["get", "svc"]).await;
    let header = table.lines().next().unwrap();
    for column in [
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        "EXTERNAL-IP",
        "PORT(S)",
        "AGE",
    ] {
        assert!(header.contains(column), "missing {column} in {table}");
    }
    assert!(table.contains("80/TCP"), "{table}");

    let ingress = parse_json(
        &test
            .kubectl_ok(&["get", "ingress", "web", "-o", "json"])
            .await,
    );
    assert_eq!(ingress["spec"]["rules"][0]["host"], "web.example.com");
    assert_eq!(ingress["metadata"]["generation"], 1);
    let yaml = test
        .kubectl_ok(&["get", "ingress", "web", "-o", "yaml"])
        .await;
    assert!(yaml.contains("ingressClassName: gangway"), "{yaml}");
    assert!(yaml.contains("kind: Ingress"), "{yaml}");

    let changed = APP.replace("host: web.example.com", "host: www.example.com");
    let changed_file = test.write_file("changed.yaml", &changed);
    let replaced = test
        .kubectl_ok(&["replace", "-f", changed_file.to_str().unwrap()])
        .await;
    assert!(
        replaced.contains("ingress.networking.k8s.io/web replaced"),
        "{replaced}"
    );
    let ingress = parse_json(
        &test
            .kubectl_ok(&["get", "ingress", "web", "-o", "json"])
            .await,
    );
    assert_eq!(ingress["spec"]["rules"][0]["host"], "www.example.com");
    assert_eq!(ingress["metadata"]["generation"], 2);
    let service = parse_json(
        &test
            .kubectl_ok(&["get", "service", "web", "-o", "json"])
            .await,
    );
    assert!(
        service["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.96.")),
        "replace lost the cluster IP: {service}"
    );

    let deleted = test.kubectl_ok(&["delete", "-f", file]).await;
    assert!(deleted.contains("service \"web\" deleted"), "{deleted}");
    let output = test.kubectl(&["get", "ingress", "web"]).await;
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("not found"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_selectors_filter_lists() {
    let test = TestServer::start().await;
    let file = test.write_file("app.yaml", APP);
    test.kubectl_ok(&["create", "-f", file.to_str().unwrap()])
        .await;

    let cases: [(&str, &[&str]); 6] = [
        ("app=web", &["ingress.networking.k8s.io/web", "service/web"]),
        ("app!=web", &["configmap/settings"]),
        ("app in (other,none)", &["configmap/settings"]),
        ("app notin (web)", &["configmap/settings"]),
        ("tier", &["service/web"]),
        (
            "!tier,app",
            &["configmap/settings", "ingress.networking.k8s.io/web"],
        ),
    ];
    for (selector, expected) in cases {
        let output = test
            .kubectl_ok(&[
                "get",
                "services,ingresses,configmaps",
                "-l",
                selector,
                "-o",
                "name",
            ])
            .await;
        let mut names: Vec<&str> = output.lines().collect();
        names.sort_unstable();
        assert_eq!(names, expected, "selector {selector}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_status_subresource() {
    let test = TestServer::start().await;
    let file = test.write_file("app.yaml", APP);
    test.kubectl_ok(&["create", "-f", file.to_str().unwrap()])
        .await;

    let patch = r#"{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.7"}]}}}"#;
    test.kubectl_ok(&[
        "patch",
        "ingress",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        patch,
    ])
    .await;
    let table = test.kubectl_ok(&["get", "ingress", "web"]).await;
    assert!(table.contains("192.0.2.7"), "{table}");

    // A patch of the main resource cannot change status.
    let reset = r#"{"status":{"loadBalancer":{"ingress":[{"ip":"192.0.2.99"}]}}}"#;
    test.kubectl_ok(&["patch", "ingress", "web", "--type=merge", "-p", reset])
        .await;
    let ingress = parse_json(
        &test
            .kubectl_ok(&["get", "ingress", "web", "-o", "json"])
            .await,
    );
    assert_eq!(
        ingress["status"]["loadBalancer"]["ingress"][0]["ip"],
        "192.0.2.7"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_in_missing_namespace_fails() {
    let test = TestServer::start().await;
    let file = test.write_file("app.yaml", APP);
    let output = test
        .kubectl(&["create", "-n", "missing", "-f", file.to_str().unwrap()])
        .await;
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("namespaces \"missing\" not found"),
        "{error}"
    );

    let namespace = test.write_file(
        "namespace.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: missing\n",
    );
    test.kubectl_ok(&["create", "-f", namespace.to_str().unwrap()])
        .await;
    test.kubectl_ok(&["create", "-n", "missing", "-f", file.to_str().unwrap()])
        .await;
    let names = test.kubectl_ok(&["get", "svc", "-A", "-o", "name"]).await;
    assert_eq!(names.trim(), "service/web");
    let table = test.kubectl_ok(&["get", "svc", "-A"]).await;
    assert!(
        table.lines().next().unwrap().starts_with("NAMESPACE"),
        "{table}"
    );
    assert!(table.contains("missing"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_existing_object_conflicts() {
    let test = TestServer::start().await;
    let file = test.write_file("app.yaml", APP);
    test.kubectl_ok(&["create", "-f", file.to_str().unwrap()])
        .await;
    let output = test
        .kubectl(&["create", "-f", file.to_str().unwrap()])
        .await;
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("services \"web\" already exists"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_v1_show_in_get_events() {
    let test = TestServer::start().await;
    let event = r#"
apiVersion: events.k8s.io/v1
kind: Event
metadata:
  name: web.1
eventTime: "2024-01-01T00:00:00.000000Z"
reportingController: gangway.dev/ingress-controller
reportingInstance: gangway-0
action: Sync
reason: Synced
type: Normal
note: ingress synced
regarding:
  apiVersion: networking.k8s.io/v1
  kind: Ingress
  name: web
  namespace: default
"#;
    let file = test.write_file("event.yaml", event);
    test.kubectl_ok(&["create", "-f", file.to_str().unwrap()])
        .await;
    let table = test.kubectl_ok(&["get", "events"]).await;
    assert!(table.contains("ingress/web"), "{table}");
    assert!(table.contains("ingress synced"), "{table}");
    let core = parse_json(
        &test
            .kubectl_ok(&["get", "events.v1.", "web.1", "-o", "json"])
            .await,
    );
    assert_eq!(core["involvedObject"]["name"], "web");
    assert_eq!(core["message"], "ingress synced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_resources_lists_registry() {
    let test = TestServer::start().await;
    let output = test.kubectl_ok(&["api-resources", "-o", "name"]).await;
    for resource in [
        "services",
        "ingresses.networking.k8s.io",
        "ingressclasses.networking.k8s.io",
        "endpointslices.discovery.k8s.io",
        "leases.coordination.k8s.io",
        "horizontalpodautoscalers.autoscaling",
    ] {
        assert!(
            output.lines().any(|line| line == resource),
            "missing {resource}: {output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_body_is_rejected_with_415() {
    // kubectl's generator commands send protobuf, which this server does not decode.
    let test = TestServer::start().await;
    let output = test.kubectl(&["create", "namespace", "team-a"]).await;
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("accepted media types include: application/json"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_merges_keyed_lists() {
    let test = TestServer::start().await;
    let service = |ports: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n{ports}")
    };
    let two_ports = service("  - {name: http, port: 80}\n  - {name: https, port: 443}\n");
    let file = test.write_file("service.yaml", &two_ports);
    let applied = test
        .kubectl_ok(&["apply", "-f", file.to_str().unwrap()])
        .await;
    assert!(applied.contains("service/web created"), "{applied}");

    // Changing one port makes kubectl send a strategic merge patch with a delete
    // directive and an element order.
    let changed = service("  - {name: http, port: 8080}\n  - {name: https, port: 443}\n");
    let file = test.write_file("service.yaml", &changed);
    let applied = test
        .kubectl_ok(&["apply", "-f", file.to_str().unwrap()])
        .await;
    assert!(applied.contains("service/web configured"), "{applied}");
    let stored = parse_json(
        &test
            .kubectl_ok(&["get", "service", "web", "-o", "json"])
            .await,
    );
    let ports: Vec<u64> = stored["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|port| port["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [8080, 443]);

    // kubectl patch defaults to a strategic merge patch: a new port is added.
    test.kubectl_ok(&[
        "patch",
        "service",
        "web",
        "-p",
        r#"{"spec":{"ports":[{"name":"admin","port":9000}]}}"#,
    ])
    .await;
    let stored = parse_json(
        &test
            .kubectl_ok(&["get", "service", "web", "-o", "json"])
            .await,
    );
    assert_eq!(stored["spec"]["ports"].as_array().unwrap().len(), 3);
}
