//! Bad input: YAML that does not parse, objects that fail validation or point at nothing,
//! and hostile files. Each problem must name its file or object and field, and every other
//! route must keep serving.

use std::time::{Duration, Instant};

use crate::support::backends::{TestServer, echo_services};
use crate::support::clients::{curl, get, wait_for_outcome};
use crate::support::gangway::{Gangway, problem, problems_of};
use crate::support::manifests::{INGRESS_CLASS, documents, ingress, tls_secret, tls_secret_pem};
use crate::support::tls::TestCa;

/// Starts Gangway with a good Ingress (`good.test` to echo backend `app`) next to `files`.
async fn start_next_to_good(files: &[(&str, &str)]) -> (Gangway, Vec<TestServer>) {
    let (servers, services) = echo_services(&["app"]).await;
    let good = ingress("good", "good.test", "app");
    let mut all = vec![
        ("class.yaml", INGRESS_CLASS),
        ("services.yaml", services.as_str()),
        ("good.yaml", good.as_str()),
    ];
    all.extend_from_slice(files);
    (Gangway::start(&all).await, servers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_syntax_error_names_file() {
    let broken = "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: broken
spec: {}
";
    let (gangway, _servers) = start_next_to_good(&[("team/broken.yaml", broken)]).await;

    assert_eq!(get(gangway.http, "good.test", "/").await.outcome(), "app");
    let routes = gangway.routes().await;
    let invalid = problem(&routes, "File", "team/broken.yaml", "InvalidManifest");
    assert_eq!(invalid["severity"], "error");
    let message = invalid["message"].as_str().unwrap();
    assert!(
        message.contains("line"),
        "the message names the line: {message}"
    );

    let logged = gangway
        .wait_for_log_record(|record| {
            record["level"] == "WARN"
                && record["reason"] == "InvalidManifest"
                && record["name"] == "team/broken.yaml"
        })
        .await;
    assert!(logged, "no warning log line names the file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_objects_reported_others_serve() {
    let ca = TestCa::new();
    let leaf = ca.issue(&["bad-key.test"]);
    // A key that is PEM on the outside but no key inside. Its text must never be echoed.
    let key_marker = "TUFMRk9STUVEIEtFWSBNQVRFUklBTA";
    let malformed_key =
        format!("-----BEGIN PRIVATE KEY-----\n{key_marker}==\n-----END PRIVATE KEY-----\n");
    let secrets = documents(&[
        tls_secret("good-tls", &ca.issue(&["missing-secret.test"])),
        tls_secret_pem("bad-key-tls", &leaf.certificate_pem, &malformed_key),
    ]);
    let path = |path: &str, service: &str, port: &str| {
        format!(
            "      - {{path: {path}, pathType: Prefix, backend: {{service: {{name: {service}, port: {port}}}}}}}"
        )
    };
    let ingress_with = |name: &str, extra_spec: &str, host: &str, paths: &[String]| {
        format!(
            "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}}}
spec:
  ingressClassName: gangway
{extra_spec}  rules:
  - host: {host}
    http:
      paths:
{}
",
            paths.join("\n")
        )
    };
    let invalid = documents(&[
        ingress_with(
            "bad-port",
            "",
            "bad-port.test",
            &[
                path("/", "app", "{name: http}"),
                path("/admin", "app", "{name: Bad_Name}"),
            ],
        ),
        ingress_with(
            "missing-service",
            "",
            "missing-service.test",
            &[path("/", "nowhere", "{name: http}")],
        ),
        ingress_with(
            "missing-secret",
            "  tls: [{hosts: [missing-secret.test], secretName: nope}]\n",
            "missing-secret.test",
            &[path("/", "app", "{name: http}")],
        ),
        ingress_with(
            "bad-key",
            "  tls: [{hosts: [bad-key.test], secretName: bad-key-tls}]\n",
            "bad-key.test",
            &[path("/", "app", "{name: http}")],
        ),
        ingress_with(
            "bad-host",
            "",
            "Bad_Host.test",
            &[path("/", "app", "{name: http}")],
        ),
    ]);
    // Two Ingresses on one path; without timestamps the name decides, so `conflict-a` wins.
    let conflicting = documents(&[
        ingress_with(
            "conflict-a",
            "",
            "conflict.test",
            &[path("/x", "app", "{name: http}")],
        ),
        ingress_with(
            "conflict-b",
            "",
            "conflict.test",
            &[path("/x/", "app", "{name: http}")],
        ),
    ]);
    let (gangway, _servers) = start_next_to_good(&[
        ("secrets.yaml", &secrets),
        ("invalid.yaml", &invalid),
        ("conflicting.yaml", &conflicting),
    ])
    .await;

    let routes = gangway.routes().await;
    // (Ingress, reason, field)
    let expected = [
        (
            "bad-port",
            "InvalidBackend",
            "spec.rules[0].http.paths[1].backend.service.port.name",
        ),
        (
            "missing-service",
            "ServiceNotFound",
            "spec.rules[0].http.paths[0].backend.service.name",
        ),
        ("missing-secret", "SecretNotFound", "spec.tls[0].secretName"),
        ("bad-key", "InvalidTlsSecret", "spec.tls[0].secretName"),
        ("bad-host", "InvalidHost", "spec.rules[0].host"),
        (
            "conflict-b",
            "PathConflict",
            "spec.rules[0].http.paths[0].path",
        ),
    ];
    for (name, reason, field) in expected {
        let found = problem(&routes, "Ingress", name, reason);
        assert_eq!(found["field"], field, "{name} {reason}");
        assert_eq!(found["object"]["namespace"], "default", "{name} {reason}");
    }

    // (host, path, expected outcome): the invalid parts respond with 503, the rest serves.
    let cases = [
        ("good.test", "/", "app"),
        ("bad-port.test", "/", "app"),
        ("bad-port.test", "/admin", "503 unresolved-backend"),
        ("missing-service.test", "/", "503 unresolved-backend"),
        ("conflict.test", "/x", "app"),
    ];
    for (host, path, outcome) in cases {
        assert_eq!(
            get(gangway.http, host, path).await.outcome(),
            outcome,
            "{host}{path}"
        );
    }

    // A host whose Secret is missing or broken still redirects to HTTPS, where the proxy
    // serves its default certificate.
    let https_port = gangway.https.port();
    for host in ["missing-secret.test", "bad-key.test"] {
        assert_eq!(get(gangway.http, host, "/").await.status, 308, "{host}");
        let resolve = format!("{host}:{https_port}:127.0.0.1");
        let url = format!("https://{host}:{https_port}/");
        let reply = curl(&["--insecure", "--resolve", &resolve, &url]).await;
        assert_eq!(reply.status, 200, "{host}");
    }

    // Secret material stays out of the routing table and the logs.
    let routes_text = routes.to_string();
    assert!(
        !routes_text.contains(key_marker),
        "/debug/routes shows the key"
    );
    assert!(
        !gangway.logs().iter().any(|line| line.contains(key_marker)),
        "a log line shows the key"
    );
    let leaf_key_body = leaf.key_pem.lines().nth(1).unwrap();
    assert!(!routes_text.contains(leaf_key_body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_rewrite_keeps_last_good_routes() {
    let (servers, services) = echo_services(&["app"]).await;
    let gangway = Gangway::start(&[
        ("class.yaml", INGRESS_CLASS),
        ("services.yaml", &services),
        ("site.yaml", &ingress("site", "kept.test", "app")),
    ])
    .await;
    assert_eq!(get(gangway.http, "kept.test", "/").await.outcome(), "app");

    // Neither a syntax error nor a field of the wrong type takes the routes down.
    let broken_versions = [
        (
            "a syntax error",
            "kind: Ingress\nmetadata: [unclosed\n".to_owned(),
        ),
        (
            "a wrong field type",
            ingress("site", "renamed.test", "app")
                .replace("pathType: Prefix", "pathType: [Prefix]"),
        ),
    ];
    for (what, content) in broken_versions {
        let routes = gangway
            .write_and_wait("site.yaml", content.as_bytes())
            .await;
        let invalid = problem(&routes, "File", "site.yaml", "InvalidManifest");
        let message = invalid["message"].as_str().unwrap();
        assert!(message.contains("last valid version"), "{what}: {message}");
        assert_eq!(
            get(gangway.http, "kept.test", "/").await.outcome(),
            "app",
            "{what}"
        );
        assert_eq!(
            get(gangway.http, "renamed.test", "/").await.outcome(),
            "404 no-route",
            "{what}"
        );
    }

    // The fixed file replaces the old routes and clears the problem.
    gangway.write("site.yaml", &ingress("site", "renamed.test", "app"));
    wait_for_outcome(gangway.http, "renamed.test", "/", "app").await;
    assert_eq!(
        get(gangway.http, "kept.test", "/").await.outcome(),
        "404 no-route"
    );
    let routes = gangway.routes().await;
    assert!(
        problems_of(&routes, "File", "site.yaml").is_empty(),
        "{:#}",
        routes["problems"]
    );
    drop(servers);
}

/// Returns `len` bytes from a fixed xorshift sequence: binary garbage, NUL bytes and invalid
/// UTF-8 included, the same on every run.
fn garbage(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Returns a ConfigMap whose `data` contains `value`: a kind Gangway skips, so only the parser
/// reads the value.
fn config_map(name: &str, value: &str) -> Vec<u8> {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata:\n{value}\n")
        .into_bytes()
}

/// Returns `data` entries whose aliases expand to 10^9 strings (the "billion laughs" attack).
fn alias_bomb() -> String {
    let mut yaml = String::from("  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for level in 1..10 {
        let previous = format!("*a{}", level - 1);
        let items = [previous.as_str(); 10].join(", ");
        yaml.push_str(&format!("  a{level}: &a{level} [{items}]\n"));
    }
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_files_do_not_crash() {
    let (mut gangway, _servers) = start_next_to_good(&[]).await;

    let huge_value = format!("  blob: {}", "x".repeat(32 * 1024 * 1024));
    let deep_value = format!("  deep: {}{}", "[".repeat(200_000), "]".repeat(200_000));
    // (file, content, whether the file must get a problem)
    let files: Vec<(&str, Vec<u8>, bool)> = vec![
        ("garbage.yaml", garbage(1024 * 1024), true),
        ("deep.yaml", config_map("deep", &deep_value), true),
        ("aliases.yaml", config_map("aliases", &alias_bomb()), true),
        ("huge.yaml", config_map("huge", &huge_value), false),
    ];
    for (name, content, reported) in files {
        let started = Instant::now();
        let generation = gangway.generation().await;
        gangway.write_bytes(name, &content);
        // Traffic keeps flowing while Gangway reads the file.
        while started.elapsed() < Duration::from_millis(300) {
            assert_eq!(
                get(gangway.http, "good.test", "/").await.outcome(),
                "app",
                "{name}"
            );
        }
        let routes = gangway.wait_for_newer(generation).await;
        assert!(gangway.is_running(), "gangway exited after {name}");
        assert_eq!(
            get(gangway.http, "good.test", "/").await.outcome(),
            "app",
            "{name}"
        );
        let problems = problems_of(&routes, "File", name);
        if reported {
            assert_eq!(problems.len(), 1, "{name}: {:#}", routes["problems"]);
            assert_eq!(problems[0]["reason"], "InvalidManifest");
        } else {
            assert!(problems.is_empty(), "{name}: {problems:#?}");
        }
        // A problem message quotes at most a little of the file.
        let size = routes.to_string().len();
        assert!(
            size < 64 * 1024,
            "{name}: /debug/routes grew to {size} bytes"
        );
    }
    let healthz = get(gangway.admin, "admin", "/healthz").await;
    assert_eq!(healthz.status, 200);
}
