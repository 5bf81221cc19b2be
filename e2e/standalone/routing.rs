//! Routing: the path examples of the Ingress concepts page, exact and wildcard hosts, rules
//! without host, merging and conflicts, default backends, the global 404, Service ports and
//! IngressClass selection.

use std::fmt::Write;

use crate::support::backends::{echo, echo_services};
use crate::support::clients::{Http1Client, curl, get, wait_for_outcome};
use crate::support::gangway::{Gangway, problem, problems_of};
use crate::support::manifests::{
    Endpoint, INGRESS_CLASS, documents, endpoint_slice, ingress, service,
};

/// Services the path rows route to: path `j` of a row goes to `SERVICES[j]`.
const SERVICES: [&str; 3] = ["first", "second", "third"];

/// One row of the path examples table: the paths of one Ingress, and what requests get.
struct PathRow {
    /// The row as the Ingress concepts page words it.
    case: &'static str,
    /// `(pathType, path)` in order; path `j` forwards to `SERVICES[j]`.
    paths: &'static [(&'static str, &'static str)],
    /// Whether the Ingress has `spec.defaultBackend` (Service `default`).
    default_backend: bool,
    /// `(request path, expected outcome)`.
    requests: &'static [(&'static str, &'static str)],
}

const NO_ROUTE: &str = "404 no-route";

/// Every row of the "Examples" table of the Ingress concepts page, in its order.
const PATH_ROWS: &[PathRow] = &[
    PathRow {
        case: "Prefix / matches all paths",
        paths: &[("Prefix", "/")],
        default_backend: false,
        requests: &[("/", "first"), ("/foo", "first"), ("/aaa/bbb/", "first")],
    },
    PathRow {
        case: "Exact /foo matches /foo",
        paths: &[("Exact", "/foo")],
        default_backend: false,
        requests: &[("/foo", "first")],
    },
    PathRow {
        case: "Exact /foo does not match /bar",
        paths: &[("Exact", "/foo")],
        default_backend: false,
        requests: &[("/bar", NO_ROUTE)],
    },
    PathRow {
        case: "Exact /foo does not match /foo/",
        paths: &[("Exact", "/foo")],
        default_backend: false,
        requests: &[("/foo/", NO_ROUTE)],
    },
    PathRow {
        case: "Exact /foo/ does not match /foo",
        paths: &[("Exact", "/foo/")],
        default_backend: false,
        requests: &[("/foo", NO_ROUTE)],
    },
    PathRow {
        case: "Prefix /foo matches /foo and /foo/",
        paths: &[("Prefix", "/foo")],
        default_backend: false,
        requests: &[("/foo", "first"), ("/foo/", "first")],
    },
    PathRow {
        case: "Prefix /foo/ matches /foo and /foo/",
        paths: &[("Prefix", "/foo/")],
        default_backend: false,
        requests: &[("/foo", "first"), ("/foo/", "first")],
    },
    PathRow {
        case: "Prefix /aaa/bb does not match /aaa/bbb",
        paths: &[("Prefix", "/aaa/bb")],
        default_backend: false,
        requests: &[("/aaa/bbb", NO_ROUTE)],
    },
    PathRow {
        case: "Prefix /aaa/bbb matches /aaa/bbb",
        paths: &[("Prefix", "/aaa/bbb")],
        default_backend: false,
        requests: &[("/aaa/bbb", "first")],
    },
    PathRow {
        case: "Prefix /aaa/bbb/ matches /aaa/bbb, ignoring the trailing slash",
        paths: &[("Prefix", "/aaa/bbb/")],
        default_backend: false,
        requests: &[("/aaa/bbb", "first")],
    },
    PathRow {
        case: "Prefix /aaa/bbb matches /aaa/bbb/ with its trailing slash",
        paths: &[("Prefix", "/aaa/bbb")],
        default_backend: false,
        requests: &[("/aaa/bbb/", "first")],
    },
    PathRow {
        case: "Prefix /aaa/bbb matches the subpath /aaa/bbb/ccc",
        paths: &[("Prefix", "/aaa/bbb")],
        default_backend: false,
        requests: &[("/aaa/bbb/ccc", "first")],
    },
    PathRow {
        case: "Prefix /aaa/bbb does not match the string prefix /aaa/bbbxyz",
        paths: &[("Prefix", "/aaa/bbb")],
        default_backend: false,
        requests: &[("/aaa/bbbxyz", NO_ROUTE)],
    },
    PathRow {
        case: "Prefixes / and /aaa: /aaa/ccc matches /aaa",
        paths: &[("Prefix", "/"), ("Prefix", "/aaa")],
        default_backend: false,
        requests: &[("/aaa/ccc", "second")],
    },
    PathRow {
        case: "Prefixes /, /aaa and /aaa/bbb: /aaa/bbb matches /aaa/bbb",
        paths: &[("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")],
        default_backend: false,
        requests: &[("/aaa/bbb", "third")],
    },
    PathRow {
        case: "Prefixes /, /aaa and /aaa/bbb: /ccc matches /",
        paths: &[("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")],
        default_backend: false,
        requests: &[("/ccc", "first")],
    },
    PathRow {
        case: "Prefix /aaa does not match /ccc, which uses the default backend",
        paths: &[("Prefix", "/aaa")],
        default_backend: true,
        requests: &[("/ccc", "default")],
    },
    PathRow {
        case: "Prefix /foo and Exact /foo: /foo prefers Exact",
        paths: &[("Prefix", "/foo"), ("Exact", "/foo")],
        default_backend: false,
        requests: &[("/foo", "second"), ("/foo/bar", "first")],
    },
];

fn row_host(index: usize) -> String {
    format!("row-{index}.paths.test")
}

fn row_ingress(index: usize, row: &PathRow) -> String {
    let mut yaml = format!(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: row-{index}}}
spec:
  ingressClassName: gangway
"
    );
    if row.default_backend {
        yaml.push_str("  defaultBackend: {service: {name: default, port: {name: http}}}\n");
    }
    writeln!(
        yaml,
        "  rules:\n  - host: {}\n    http:\n      paths:",
        row_host(index)
    )
    .unwrap();
    for (j, (path_type, path)) in row.paths.iter().enumerate() {
        writeln!(
            yaml,
            "      - {{path: {path}, pathType: {path_type}, backend: {{service: {{name: {}, port: {{name: http}}}}}}}}",
            SERVICES[j]
        )
        .unwrap();
    }
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_examples_of_ingress_spec() {
    let (_servers, services) = echo_services(&["first", "second", "third", "default"]).await;
    let ingresses: Vec<String> = PATH_ROWS
        .iter()
        .enumerate()
        .map(|(index, row)| row_ingress(index, row))
        .collect();
    let gangway = Gangway::start(&[
        ("class.yaml", INGRESS_CLASS),
        ("services.yaml", &services),
        ("ingresses.yaml", &documents(&ingresses)),
    ])
    .await;

    let mut client = Http1Client::connect(gangway.http).await.unwrap();
    for (index, row) in PATH_ROWS.iter().enumerate() {
        for (path, expected) in row.requests {
            let reply = client.get(&row_host(index), path).await.unwrap();
            assert_eq!(reply.outcome(), *expected, "{}: request {path}", row.case);
        }
    }
}

const HOSTS_INGRESS: &str = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: hosts}
spec:
  ingressClassName: gangway
  rules:
  - host: foo.bar.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: exact, port: {name: http}}}}
  - host: '*.bar.test'
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: wildcard, port: {name: http}}}}
  - host: api-only.test
    http:
      paths:
      - {path: /api, pathType: Prefix, backend: {service: {name: exact, port: {name: http}}}}
  - http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: catch-all, port: {name: http}}}}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_exact_wildcard_and_catch_all() {
    let (_servers, services) = echo_services(&["exact", "wildcard", "catch-all"]).await;
    let gangway = Gangway::start(&[
        ("class.yaml", INGRESS_CLASS),
        ("services.yaml", &services),
        ("hosts.yaml", HOSTS_INGRESS),
    ])
    .await;
    let port = gangway.http.port();

    let with_port = format!("foo.bar.test:{port}");
    let ip_host = format!("127.0.0.1:{port}");
    // (Host header, path, expected outcome, why)
    let cases: &[(&str, &str, &str, &str)] = &[
        ("foo.bar.test", "/", "exact", "exact host"),
        ("FOO.Bar.TEST", "/", "exact", "host compared without case"),
        (&with_port, "/", "exact", "port ignored"),
        ("foo.bar.test.", "/", "exact", "trailing dot ignored"),
        ("baz.bar.test", "/", "wildcard", "wildcard covers one label"),
        (
            "a.b.bar.test",
            "/",
            "catch-all",
            "wildcard covers only one label",
        ),
        ("bar.test", "/", "catch-all", "wildcard needs one label"),
        (
            "other.test",
            "/x",
            "catch-all",
            "unknown host goes to rules without host",
        ),
        (
            &ip_host,
            "/",
            "catch-all",
            "IP address goes to rules without host",
        ),
        ("api-only.test", "/api/v1", "exact", "path of a host"),
        (
            "api-only.test",
            "/other",
            NO_ROUTE,
            "no fall-through to catch-all",
        ),
    ];
    for (host, path, expected, why) in cases {
        let reply = get(gangway.http, host, path).await;
        assert_eq!(
            reply.outcome(),
            *expected,
            "{why}: Host {host}, path {path}"
        );
    }

    // curl names the host through --resolve, as a client with DNS would.
    let url = format!("http://baz.bar.test:{port}/");
    let resolve = format!("baz.bar.test:{port}:127.0.0.1");
    let reply = curl(&["--resolve", &resolve, &url]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["backend"], "wildcard");

    // An HTTP/1.0 request may carry no Host header at all.
    let url = format!("http://127.0.0.1:{port}/");
    let reply = curl(&["--http1.0", "--header", "Host:", &url]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["backend"], "catch-all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingresses_merge_on_one_host() {
    let (_servers, services) = echo_services(&["cart", "pay"]).await;
    let cart = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop-cart}
spec:
  ingressClassName: gangway
  rules:
  - host: shop.test
    http:
      paths:
      - {path: /cart, pathType: Prefix, backend: {service: {name: cart, port: {name: http}}}}
";
    let pay = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shop-pay}
spec:
  ingressClassName: gangway
  rules:
  - host: shop.test
    http:
      paths:
      - {path: /pay, pathType: Exact, backend: {service: {name: pay, port: {name: http}}}}
";
    let gangway = Gangway::start(&[
        ("class.yaml", INGRESS_CLASS),
        ("services.yaml", &services),
        ("cart.yaml", cart),
        ("pay.yaml", pay),
    ])
    .await;

    assert_eq!(
        get(gangway.http, "shop.test", "/cart/items")
            .await
            .outcome(),
        "cart"
    );
    assert_eq!(
        get(gangway.http, "shop.test", "/pay").await.outcome(),
        "pay"
    );
    assert_eq!(
        get(gangway.http, "shop.test", "/pay/more").await.outcome(),
        NO_ROUTE
    );
    assert_eq!(
        get(gangway.http, "shop.test", "/").await.outcome(),
        NO_ROUTE
    );

    let routes = gangway.routes().await;
    let hosts = routes["virtualHosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1, "one virtual host for shop.test: {routes:#}");
    let ids: Vec<&str> = hosts[0]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|route| route["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "ingress/default/shop-cart/rule/0/path/0",
            "ingress/default/shop-pay/rule/0/path/0"
        ]
    );
    assert_eq!(routes["problems"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_conflict_oldest_ingress_wins() {
    let (_servers, services) = echo_services(&["old", "new"]).await;
    // Names sort opposite to age, so only the timestamps can make `z-old` win.
    let old = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: z-old, creationTimestamp: '2024-01-01T00:00:00Z'}
spec:
  ingressClassName: gangway
  rules:
  - host: docs.test
    http:
      paths:
      - {path: /guide, pathType: Prefix, backend: {service: {name: old, port: {name: http}}}}
";
    let new = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: a-new, creationTimestamp: '2024-06-01T00:00:00Z'}
spec:
  ingressClassName: gangway
  rules:
  - host: docs.test
    http:
      paths:
      - {path: /guide/, pathType: Prefix, backend: {service: {name: new, port: {name: http}}}}
      - {path: /news, pathType: Prefix, backend: {service: {name: new, port: {name: http}}}}
";
    let gangway = Gangway::start(&[
        ("class.yaml", INGRESS_CLASS),
        ("services.yaml", &services),
        ("old.yaml", old),
        ("new.yaml", new),
    ])
    .await;

    assert_eq!(
        get(gangway.http, "docs.test", "/guide").await.outcome(),
        "old"
    );
    assert_eq!(
        get(gangway.http, "docs.test", "/guide/intro")
            .await
            .outcome(),
        "old"
    );
    // The losing Ingress keeps its other paths.
    assert_eq!(
        get(gangway.http, "docs.test", "/news").await.outcome(),
        "new"
    );

    let routes = gangway.routes().await;
    let conflict = problem(&routes, "Ingress", "a-new", "PathConflict");
    assert_eq!(conflict["field"], "spec.rules[0].http.paths[0].path");
    assert_eq!(conflict["severity"], "error");
    let message = conflict["message"].as_str().unwrap();
    assert!(
        message.contains("ingress/default/z-old/rule/0/path/0"),
        "the message names the winning route: {message}"
    );
    assert!(problems_of(&routes, "Ingress", "z-old").is_empty());

    // Once the older Ingress is gone, the newer one takes the path and its problem clears.
    gangway.remove("old.yaml");
    wait_for_outcome(gangway.http, "docs.test", "/guide", "new").await;
    let routes = gangway.routes().await;
    assert!(
        problems_of(&routes, "Ingress", "a-new").is_empty(),
        "{:#}",
        routes["problems"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_backend_serves_unmatched_requests() {
    let (_servers, services) = echo_services(&["fallback", "v1", "api-default"]).await;
    let fallback = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: fallback, creationTimestamp: '2024-01-01T00:00:00Z'}
spec:
  ingressClassName: gangway
  defaultBackend: {service: {name: fallback, port: {name: http}}}
";
    let api = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: api, creationTimestamp: '2024-06-01T00:00:00Z'}
spec:
  ingressClassName: gangway
  defaultBackend: {service: {name: api-default, port: {name: http}}}
  rules:
  - host: api.test
    http:
      paths:
      - {path: /v1, pathType: Prefix, backend: {service: {name: v1, port: {name: http}}}}
";
    let gangway = Gangway::start(&[
        ("class.yaml", INGRESS_CLASS),
        ("services.yaml", &services),
        ("fallback.yaml", fallback),
        ("api.yaml", api),
    ])
    .await;

    // (host, path, expected outcome, why)
    let cases = [
        (
            "unknown.test",
            "/anything",
            "fallback",
            "no rule matches the host",
        ),
        ("127.0.0.1", "/", "fallback", "no host"),
        ("api.test", "/v1/users", "v1", "a path matches"),
        (
            "api.test",
            "/other",
            "api-default",
            "the host's own default backend",
        ),
    ];
    for (host, path, expected, why) in cases {
        assert_eq!(
            get(gangway.http, host, path).await.outcome(),
            expected,
            "{why}: {host}{path}"
        );
    }

    // The newer Ingress lost the catch-all's default route to the older one.
    let routes = gangway.routes().await;
    let conflict = problem(&routes, "Ingress", "api", "DefaultBackendConflict");
    assert_eq!(conflict["field"], "spec.defaultBackend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_gets_global_404() {
    let (_servers, services) = echo_services(&["known"]).await;
    let gangway = Gangway::start(&[
        ("class.yaml", INGRESS_CLASS),
        ("services.yaml", &services),
        ("known.yaml", &ingress("known", "known.test", "known")),
    ])
    .await;

    assert_eq!(
        get(gangway.http, "known.test", "/").await.outcome(),
        "known"
    );
    let reply = get(gangway.http, "unknown.test", "/").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("x-gangway-error"), Some("no-route"));
    assert_eq!(reply.text(), "no route for this request\n");
    assert!(reply.header("x-request-id").is_some());

    // The same over HTTPS, with curl accepting the default certificate.
    let url = format!("https://127.0.0.1:{}/", gangway.https.port());
    let reply = curl(&["--insecure", "--header", "Host: unknown.test", &url]).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("x-gangway-error"), Some("no-route"));

    // With every Ingress gone, every request gets the 404.
    gangway.remove("known.yaml");
    wait_for_outcome(gangway.http, "known.test", "/", NO_ROUTE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_ports_by_name_and_number() {
    let main = echo("main").await;
    let admin = echo("admin").await;
    let unnamed = echo("unnamed").await;
    // One endpoint with two ports: the slice maps each Service port name to a target port.
    let multi = format!(
        "apiVersion: v1
kind: Service
metadata: {{name: multi}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8080}}, {{name: admin, port: 9000, targetPort: admin}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: multi-1
  labels: {{kubernetes.io/service-name: multi}}
addressType: IPv4
ports: [{{name: http, port: {main}, protocol: TCP}}, {{name: admin, port: {admin}, protocol: TCP}}]
endpoints: [{{addresses: [127.0.0.1]}}]
",
        main = main.address.port(),
        admin = admin.address.port(),
    );
    let unnamed_service = documents(&[
        service(
            "unnamed",
            &[crate::support::manifests::ServicePort {
                name: "",
                port: 8080,
                app_protocol: None,
            }],
        ),
        endpoint_slice(
            "unnamed-1",
            "unnamed",
            "",
            &[Endpoint::ready(unnamed.address)],
        ),
    ]);
    // The Ingress comes from the real kubectl, so its output format is what Gangway reads.
    let output = tokio::process::Command::new("kubectl")
        .args(["create", "ingress", "ports", "--class=gangway"])
        .args([
            "--rule=ports.test/by-name*=multi:admin",
            "--rule=ports.test/by-number*=multi:9000",
            "--rule=ports.test/main*=multi:80",
            "--rule=ports.test/unnamed*=unnamed:8080",
            "--rule=ports.test/missing-port=multi:81",
        ])
        .args(["--dry-run=client", "--output=yaml"])
        .output()
        .await
        .expect("failed to run kubectl");
    assert!(
        output.status.success(),
        "kubectl create ingress failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ports_ingress = String::from_utf8(output.stdout).unwrap();
    let gangway = Gangway::start(&[
        ("class.yaml", INGRESS_CLASS),
        ("multi.yaml", &multi),
        ("unnamed.yaml", &unnamed_service),
        ("ports.yaml", &ports_ingress),
    ])
    .await;

    // (path, expected outcome, why)
    let cases = [
        ("/by-name", "admin", "port name admin"),
        (
            "/by-number",
            "admin",
            "port number 9000 is the port named admin",
        ),
        (
            "/main/page",
            "main",
            "port number 80 is the port named http",
        ),
        ("/unnamed/x", "unnamed", "the only port, unnamed"),
        (
            "/missing-port",
            "503 unresolved-backend",
            "the Service has no port 81",
        ),
    ];
    for (path, expected, why) in cases {
        assert_eq!(
            get(gangway.http, "ports.test", path).await.outcome(),
            expected,
            "{why}: {path}"
        );
    }

    let routes = gangway.routes().await;
    let missing = problem(&routes, "Ingress", "ports", "ServicePortNotFound");
    assert_eq!(
        missing["field"],
        "spec.rules[0].http.paths[4].backend.service.port.number"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_class_selection() {
    let (_servers, services) = echo_services(&["app"]).await;
    let classes = "apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: gangway
  annotations: {ingressclass.kubernetes.io/is-default-class: 'true'}
spec: {controller: gangway.dev/ingress-controller}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: other}
spec: {controller: example.com/other-controller}
";
    // (Ingress name, host, class fields, served by Gangway)
    let cases = [
        (
            "class-name",
            "class-name.test",
            "ingressClassName: gangway",
            true,
        ),
        (
            "other-class",
            "other-class.test",
            "ingressClassName: other",
            false,
        ),
        (
            "unknown-class",
            "unknown-class.test",
            "ingressClassName: missing",
            false,
        ),
        ("no-class", "no-class.test", "", true),
    ];
    let annotated = [
        ("legacy", "legacy.test", "gangway", None, true),
        ("legacy-other", "legacy-other.test", "nginx", None, false),
        // spec.ingressClassName wins over the annotation.
        ("both", "both.test", "gangway", Some("other"), false),
    ];
    let mut ingresses = Vec::new();
    for (name, host, class_fields, _) in cases {
        let class_line = if class_fields.is_empty() {
            String::new()
        } else {
            format!("  {class_fields}\n")
        };
        ingresses.push(format!(
            "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}}}
spec:
{class_line}  rules:
  - host: {host}
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: app, port: {{name: http}}}}}}}}
"
        ));
    }
    for (name, host, annotation, class_name, _) in annotated {
        let class_line = class_name
            .map(|class| format!("  ingressClassName: {class}\n"))
            .unwrap_or_default();
        ingresses.push(format!(
            "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  annotations: {{kubernetes.io/ingress.class: {annotation}}}
spec:
{class_line}  rules:
  - host: {host}
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: app, port: {{name: http}}}}}}}}
"
        ));
    }
    let gangway = Gangway::start(&[
        ("classes.yaml", classes),
        ("services.yaml", &services),
        ("ingresses.yaml", &documents(&ingresses)),
    ])
    .await;

    let expectations = cases
        .iter()
        .map(|(name, host, _, served)| (*name, *host, *served))
        .chain(
            annotated
                .iter()
                .map(|(name, host, _, _, served)| (*name, *host, *served)),
        );
    for (name, host, served) in expectations {
        let expected = if served { "app" } else { NO_ROUTE };
        assert_eq!(
            get(gangway.http, host, "/").await.outcome(),
            expected,
            "Ingress {name}"
        );
    }
    let routes = gangway.routes().await;
    for ignored in ["other-class", "unknown-class", "legacy-other", "both"] {
        assert!(
            problems_of(&routes, "Ingress", ignored).is_empty(),
            "another controller's Ingress {ignored} is not Gangway's problem: {:#}",
            routes["problems"]
        );
    }

    // Without the default-class annotation, an Ingress without class is no longer Gangway's.
    gangway.write("classes.yaml", &classes.replace("'true'", "'false'"));
    wait_for_outcome(gangway.http, "no-class.test", "/", NO_ROUTE).await;
    assert_eq!(
        get(gangway.http, "class-name.test", "/").await.outcome(),
        "app"
    );
    assert_eq!(get(gangway.http, "legacy.test", "/").await.outcome(), "app");
}
