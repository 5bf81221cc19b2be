//! Tests of the compiler: table tests per rule, golden files for whole scenarios.
//!
//! Fixtures are YAML manifests parsed with the same parser as the manifest provider, so a
//! test reads like the configuration a user would write. Each fixture starts with `---`, so
//! fixtures concatenate into one multi-document manifest.

mod backends;
mod classes;
mod golden;
mod hosts;
mod ordering;
mod paths;
mod scale;
mod tls;

use crate::compile::{CompileOptions, compile};
use crate::provider::parse::parse_manifests;
use crate::snapshot::{RouteAction, RouteLookup, Snapshot};
use crate::status::{Problem, StatusReport};
use crate::store::Store;

/// Our IngressClass, which is not the default class.
const GANGWAY_CLASS: &str = "
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: gangway}
spec: {controller: gangway.dev/ingress-controller}
";

/// Service `web` in `default` with ports `http` (80) and `admin` (9000), and one ready
/// endpoint behind both.
const WEB_SERVICE: &str = "
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: admin, port: 9000, targetPort: 9090}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: default
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports:
- {name: http, port: 8080}
- {name: admin, port: 9090}
endpoints:
- addresses: [10.0.0.1]
";

/// Parses manifests into a store; fails the test on any parse error, which would mean a
/// broken fixture rather than a compiler bug.
fn store(manifests: &str) -> Store {
    let parsed = parse_manifests(manifests);
    assert!(
        parsed.errors.is_empty(),
        "fixture does not parse: {:?}",
        parsed.errors
    );
    let mut store = Store::default();
    for object in parsed.objects {
        object.insert_into(&mut store);
    }
    store
}

/// Compiles manifests with the default options.
fn compile_manifests(manifests: &str) -> (Snapshot, StatusReport) {
    compile(&store(manifests), &CompileOptions::default())
}

/// Returns the id of the route that serves `host` and `path`, or `None` for a 404.
fn route_id(snapshot: &Snapshot, host: Option<&str>, path: &str) -> Option<String> {
    match snapshot.lookup_route(host, path) {
        RouteLookup::Matched { route, .. } => Some(route.id.to_string()),
        RouteLookup::NotFound => None,
    }
}

/// Returns the fixed status of the route that serves `host` and `path`, or `None` when it
/// forwards or nothing matches.
fn fixed_status(snapshot: &Snapshot, host: Option<&str>, path: &str) -> Option<u16> {
    match snapshot.lookup_route(host, path) {
        RouteLookup::Matched { route, .. } => match &route.action {
            RouteAction::Respond { status, .. } => Some(*status),
            RouteAction::Forward(_) => None,
        },
        RouteLookup::NotFound => None,
    }
}

/// Returns the problems with `reason`.
fn problems_with<'r>(report: &'r StatusReport, reason: &str) -> Vec<&'r Problem> {
    report
        .problems
        .iter()
        .filter(|problem| problem.reason == reason)
        .collect()
}

/// Backend to port `http` (80) of Service `web`.
const WEB_HTTP: &str = "{service: {name: web, port: {name: http}}}";
/// Backend to port 80 of Service `web`, by number.
const WEB_80: &str = "{service: {name: web, port: {number: 80}}}";
/// Backend to port `admin` (9000) of Service `web`.
const WEB_ADMIN: &str = "{service: {name: web, port: {name: admin}}}";

/// A creation timestamp older than [`JUN`].
const JAN: &str = "2024-01-01T00:00:00Z";
/// A creation timestamp newer than [`JAN`].
const JUN: &str = "2024-06-01T00:00:00Z";

/// One `http.paths[]` entry: pathType, path and backend (a YAML flow mapping).
type PathEntry<'a> = (&'a str, &'a str, &'a str);

/// Builder of an Ingress manifest, by default `default/<name>` of class `gangway`.
struct IngressBuilder {
    name: String,
    namespace: String,
    created: Option<String>,
    annotations: Vec<(String, String)>,
    class_name: Option<String>,
    tls: Option<String>,
    default_backend: Option<String>,
    rules: Vec<String>,
}

impl IngressBuilder {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            namespace: "default".to_owned(),
            created: None,
            annotations: Vec::new(),
            class_name: Some("gangway".to_owned()),
            tls: None,
            default_backend: None,
            rules: Vec::new(),
        }
    }

    fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_owned();
        self
    }

    /// Sets `metadata.creationTimestamp`, such as `2024-01-01T00:00:00Z`.
    fn created(mut self, time: &str) -> Self {
        self.created = Some(time.to_owned());
        self
    }

    fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sets `spec.ingressClassName`, or removes it with `None`.
    fn class_name(mut self, class_name: Option<&str>) -> Self {
        self.class_name = class_name.map(str::to_owned);
        self
    }

    /// Sets `spec.tls` to a YAML flow sequence.
    fn tls(mut self, tls: &str) -> Self {
        self.tls = Some(tls.to_owned());
        self
    }

    /// Sets `spec.defaultBackend` to a YAML flow mapping.
    fn default_backend(mut self, backend: &str) -> Self {
        self.default_backend = Some(backend.to_owned());
        self
    }

    /// Adds a rule with `http.paths`; `host` `None` leaves the host out.
    fn rule(mut self, host: Option<&str>, paths: &[PathEntry<'_>]) -> Self {
        let mut rule = String::from("  - ");
        if let Some(host) = host {
            rule.push_str(&format!("host: \"{host}\"\n    "));
        }
        rule.push_str("http:\n      paths:");
        if paths.is_empty() {
            rule.push_str(" []");
        }
        rule.push('\n');
        for (path_type, path, backend) in paths {
            rule.push_str(&format!(
                "      - {{pathType: {path_type}, path: \"{path}\", backend: {backend}}}\n"
            ));
        }
        self.rules.push(rule);
        self
    }

    /// Adds a rule with a host and no `http` section.
    fn host_only_rule(mut self, host: &str) -> Self {
        self.rules.push(format!("  - host: \"{host}\"\n"));
        self
    }

    fn build(&self) -> String {
        let mut yaml = format!(
            "\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {}\n  namespace: {}\n",
            self.name, self.namespace
        );
        if let Some(created) = &self.created {
            yaml.push_str(&format!("  creationTimestamp: \"{created}\"\n"));
        }
        if !self.annotations.is_empty() {
            yaml.push_str("  annotations:\n");
            for (key, value) in &self.annotations {
                yaml.push_str(&format!("    {key}: \"{value}\"\n"));
            }
        }
        yaml.push_str("spec:\n");
        if let Some(class_name) = &self.class_name {
            yaml.push_str(&format!("  ingressClassName: {class_name}\n"));
        }
        if let Some(tls) = &self.tls {
            yaml.push_str(&format!("  tls: {tls}\n"));
        }
        if let Some(backend) = &self.default_backend {
            yaml.push_str(&format!("  defaultBackend: {backend}\n"));
        }
        if !self.rules.is_empty() {
            yaml.push_str("  rules:\n");
            for rule in &self.rules {
                yaml.push_str(rule);
            }
        }
        yaml
    }
}

/// Builds Ingress `default/<name>` of class `gangway` with one rule.
fn ingress(name: &str, host: Option<&str>, paths: &[PathEntry<'_>]) -> String {
    IngressBuilder::new(name).rule(host, paths).build()
}
