//! `gangway check`: compiles a manifest directory without serving and prints the routing table
//! and every problem.

use std::io::Write;
use std::process::ExitCode;

use serde::Serialize;
use tabwriter::TabWriter;

use crate::cli::{CheckArgs, OutputFormat};
use crate::provider::manifests::compile_directory;
use crate::snapshot::{RouteRow, RouteTable, Snapshot};
use crate::status::{Problem, Severity, StatusReport};

/// Exit code when every problem is a warning, or there is none.
pub const EXIT_OK: u8 = 0;
/// Exit code when at least one problem is an error.
pub const EXIT_PROBLEMS: u8 = 1;
/// Exit code when the directory cannot be read or the output cannot be written.
pub const EXIT_FAILURE: u8 = 2;

/// The JSON document that `--output json` prints.
#[derive(Serialize)]
struct CheckOutput<'a> {
    routes: RouteTable,
    problems: &'a [Problem],
}

/// Runs `gangway check` and returns the process exit code.
pub fn check(args: &CheckArgs) -> ExitCode {
    let options = args.selection.compile_options();
    let (snapshot, report) = match compile_directory(&args.manifests, &options) {
        Ok(compiled) => compiled,
        Err(error) => {
            eprintln!("gangway check: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };

    let printed = match args.output {
        OutputFormat::Text => render_text(&snapshot, &report),
        OutputFormat::Json => render_json(&snapshot, &report),
    };
    let written = printed.and_then(|text| {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(text.as_bytes())?;
        stdout.flush()
    });
    if let Err(error) = written {
        eprintln!("gangway check: failed to write the output: {error}");
        return ExitCode::from(EXIT_FAILURE);
    }

    if report.has_errors() {
        ExitCode::from(EXIT_PROBLEMS)
    } else {
        ExitCode::from(EXIT_OK)
    }
}

/// Renders `{"routes": ..., "problems": [...]}`, pretty-printed.
pub fn render_json(snapshot: &Snapshot, report: &StatusReport) -> std::io::Result<String> {
    let output = CheckOutput {
        routes: snapshot.route_table(),
        problems: &report.problems,
    };
    let mut text = serde_json::to_string_pretty(&output)?;
    text.push('\n');
    Ok(text)
}

/// Renders the routing table as aligned columns, then one problem per line and a count.
pub fn render_text(snapshot: &Snapshot, report: &StatusReport) -> std::io::Result<String> {
    let table = snapshot.route_table();
    let mut text = String::new();
    if table.virtual_hosts.is_empty() {
        text.push_str("No routes.\n");
    } else {
        text.push_str(&render_routes(snapshot, &table)?);
    }

    text.push('\n');
    for problem in &report.problems {
        text.push_str(&problem.to_string());
        text.push('\n');
    }
    let errors = report.count(Severity::Error);
    let warnings = report.count(Severity::Warning);
    text.push_str(&format!(
        "{} {}, {} {}.\n",
        errors,
        plural(errors, "error", "errors"),
        warnings,
        plural(warnings, "warning", "warnings")
    ));
    Ok(text)
}

/// Renders one line per route: host, path, match type, backend and endpoints, TLS Secret and
/// HTTPS redirect.
fn render_routes(snapshot: &Snapshot, table: &RouteTable) -> std::io::Result<String> {
    let mut writer = TabWriter::new(Vec::new()).padding(2);
    writeln!(
        writer,
        "HOST\tPATH\tMATCH\tBACKEND\tENDPOINTS\tTLS SECRET\tHTTPS REDIRECT"
    )?;
    for virtual_host in &table.virtual_hosts {
        let tls_secret = tls_secret_for(snapshot, &virtual_host.host);
        let rows = virtual_host
            .routes
            .iter()
            .chain(virtual_host.default_route.as_ref());
        for route in rows {
            writeln!(
                writer,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                virtual_host.host,
                route.path.as_deref().unwrap_or("(default)"),
                route.path_type.as_deref().unwrap_or("-"),
                describe_action(route),
                describe_endpoints(table, route),
                tls_secret,
                if route.https_redirect { "yes" } else { "no" },
            )?;
        }
    }
    writer.flush()?;
    let bytes = writer
        .into_inner()
        .map_err(|error| std::io::Error::other(error.to_string()))?;
    String::from_utf8(bytes).map_err(std::io::Error::other)
}

/// Returns the Secret that serves `host` over TLS, or `-`. The catch-all shows the Secret of a
/// `tls` entry without hosts, which serves every SNI name that no other entry covers.
fn tls_secret_for(snapshot: &Snapshot, host: &str) -> String {
    let certificate = if host == "*" {
        snapshot.certificates.fallback.as_ref()
    } else {
        snapshot.certificates.hosts.lookup(host)
    };
    certificate.map_or_else(
        || "-".to_owned(),
        |certificate| certificate.secret.to_string(),
    )
}

fn describe_action(route: &RouteRow) -> String {
    match (&route.backend, route.status) {
        (Some(backend), _) => backend.clone(),
        (None, Some(status)) => format!("(responds {status})"),
        (None, None) => "-".to_owned(),
    }
}

fn describe_endpoints(table: &RouteTable, route: &RouteRow) -> String {
    let Some(backend_id) = &route.backend else {
        return "-".to_owned();
    };
    let Some(backend) = table
        .backends
        .iter()
        .find(|backend| &backend.id == backend_id)
    else {
        return "-".to_owned();
    };
    if backend.endpoints.is_empty() {
        // The proxy returns 503 for a backend without endpoints.
        "(none: 503)".to_owned()
    } else {
        backend.endpoints.join(",")
    }
}

fn plural<'a>(count: usize, one: &'a str, many: &'a str) -> &'a str {
    if count == 1 { one } else { many }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::sign::CertifiedKey;

    use super::*;
    use crate::snapshot::{
        Backend, Endpoint, PathMatch, Route, RouteAction, TlsCertificate, UpstreamProtocol,
        VirtualHost,
    };
    use crate::store::{ObjectKey, ObjectRef};

    fn backend(id: &str, service: &str, endpoints: &[&str]) -> Arc<Backend> {
        Arc::new(Backend::new(
            id,
            ObjectKey::new("shop", service),
            80,
            UpstreamProtocol::Http1,
            endpoints
                .iter()
                .map(|address| Endpoint {
                    address: address.parse().unwrap(),
                    terminating: false,
                })
                .collect(),
        ))
    }

    fn route(id: &str, path_match: Option<PathMatch>, action: RouteAction) -> Arc<Route> {
        Arc::new(Route {
            id: id.into(),
            ingress: ObjectKey::new("shop", "shop"),
            path_match,
            action,
            https_redirect: false,
        })
    }

    fn certificate(secret: &str) -> Arc<TlsCertificate> {
        let generated = rcgen::generate_simple_self_signed(vec!["apps.example.test".into()])
            .expect("failed to generate a certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            generated.signing_key.serialize_der(),
        ));
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
        Arc::new(TlsCertificate {
            secret: ObjectKey::new("shop", secret),
            key: Arc::new(CertifiedKey::new(
                vec![generated.cert.der().clone()],
                signing_key,
            )),
        })
    }

    /// Builds a snapshot with an exact host, a wildcard host with TLS and a catch-all.
    fn shop_snapshot() -> Snapshot {
        let web = backend("shop/web:80", "web", &["127.0.0.1:9001", "127.0.0.1:9002"]);
        let api = backend("shop/api:8080", "api", &[]);
        let mut snapshot = Snapshot {
            backends: vec![web.clone(), api.clone()],
            ..Snapshot::default()
        };

        let mut shop = VirtualHost {
            hostname: "shop.example.test".into(),
            ..VirtualHost::default()
        };
        for (path_match, action) in [
            (
                PathMatch::Prefix("/".into()),
                RouteAction::Forward(web.clone()),
            ),
            (
                PathMatch::Prefix("/api".into()),
                RouteAction::Forward(api.clone()),
            ),
            (
                PathMatch::Exact("/health".into()),
                RouteAction::Respond {
                    status: 503,
                    body: "service unavailable".into(),
                },
            ),
        ] {
            let id = format!("ingress/shop/shop/rule/0/path/{}", path_match.path());
            let route = route(&id, Some(path_match.clone()), action);
            shop.paths.insert(&path_match, route).unwrap();
        }
        snapshot
            .hosts
            .insert("shop.example.test", Arc::new(shop))
            .unwrap();

        let mut apps = VirtualHost {
            hostname: "*.apps.example.test".into(),
            ..VirtualHost::default()
        };
        let prefix = PathMatch::Prefix("/".into());
        let redirected = Route {
            id: "ingress/shop/apps/rule/0/path/0".into(),
            ingress: ObjectKey::new("shop", "apps"),
            path_match: Some(prefix.clone()),
            action: RouteAction::Forward(web.clone()),
            https_redirect: true,
        };
        apps.paths.insert(&prefix, Arc::new(redirected)).unwrap();
        snapshot
            .hosts
            .insert("*.apps.example.test", Arc::new(apps))
            .unwrap();
        snapshot
            .certificates
            .hosts
            .insert("*.apps.example.test", certificate("apps-tls"))
            .unwrap();

        snapshot.catch_all = Some(Arc::new(VirtualHost {
            hostname: "*".into(),
            default_route: Some(route(
                "ingress/shop/shop/default-backend",
                None,
                RouteAction::Forward(web),
            )),
            ..VirtualHost::default()
        }));
        snapshot
    }

    #[test]
    fn text_table_is_aligned_and_complete() {
        let report = StatusReport {
            problems: vec![
                Problem::warning(
                    ObjectRef::new("Service", ObjectKey::new("shop", "api")),
                    "",
                    "NoReadyEndpoints",
                    "Service shop/api has no ready endpoint",
                ),
                Problem::error(
                    ObjectRef::new("File", ObjectKey::cluster("typo.yaml")),
                    "",
                    "InvalidManifest",
                    "document 1: invalid YAML",
                ),
            ],
            owned_ingresses: Vec::new(),
        };

        let text = render_text(&shop_snapshot(), &report).unwrap();

        let expected = "\
HOST                 PATH       MATCH   BACKEND         ENDPOINTS                      TLS SECRET     HTTPS REDIRECT
*.apps.example.test  /          Prefix  shop/web:80     127.0.0.1:9001,127.0.0.1:9002  shop/apps-tls  yes
shop.example.test    /          Prefix  shop/web:80     127.0.0.1:9001,127.0.0.1:9002  -              no
shop.example.test    /api       Prefix  shop/api:8080   (none: 503)                    -              no
shop.example.test    /health    Exact   (responds 503)  -                              -              no
*                    (default)  -       shop/web:80     127.0.0.1:9001,127.0.0.1:9002  -              no

warning: Service shop/api: NoReadyEndpoints: Service shop/api has no ready endpoint
error: File typo.yaml: InvalidManifest: document 1: invalid YAML
1 error, 1 warning.
";
        pretty_assertions::assert_eq!(text, expected);
    }

    #[test]
    fn empty_snapshot_says_no_routes() {
        let text = render_text(&Snapshot::default(), &StatusReport::default()).unwrap();

        assert_eq!(text, "No routes.\n\n0 errors, 0 warnings.\n");
    }

    #[test]
    fn json_output_contains_routes_and_problems() {
        let report = StatusReport {
            problems: vec![Problem::error(
                ObjectRef::new("File", ObjectKey::cluster("typo.yaml")),
                "",
                "InvalidManifest",
                "document 1: invalid YAML",
            )],
            owned_ingresses: Vec::new(),
        };

        let text = render_json(&shop_snapshot(), &report).unwrap();
        let document: serde_json::Value = serde_json::from_str(&text).unwrap();

        let hosts = document["routes"]["virtualHosts"].as_array().unwrap();
        assert_eq!(hosts.len(), 3);
        assert_eq!(hosts[0]["host"], "*.apps.example.test");
        assert_eq!(
            document["routes"]["certificates"][0]["secret"],
            "shop/apps-tls"
        );
        assert_eq!(document["problems"][0]["object"]["kind"], "File");
        assert_eq!(document["problems"][0]["severity"], "error");
    }
}
