//! Backends: Service ports, endpoint conditions, appProtocol, and unresolvable backends.

use std::sync::Arc;

use k8s_openapi::api::discovery::v1::{Endpoint as SliceEndpoint, EndpointConditions};

use super::{
    GANGWAY_CLASS, IngressBuilder, WEB_80, WEB_ADMIN, WEB_HTTP, WEB_SERVICE, compile_manifests,
    fixed_status, problems_with,
};
use crate::compile::backend::upstream_protocol;
use crate::compile::endpoints::{EndpointUse, endpoint_use};
use crate::snapshot::{Backend, RouteAction, RouteLookup, Snapshot, UpstreamProtocol};
use crate::status::Severity;

/// Builds an Ingress `default/app` with one Prefix `/` path on `app.example.com` whose
/// backend is the YAML flow mapping `backend`.
fn backend_ingress(backend: &str) -> String {
    IngressBuilder::new("app")
        .rule(Some("app.example.com"), &[("Prefix", "/", backend)])
        .build()
}

/// Returns the backend that serves `/` on `app.example.com`.
fn forwarded_backend(snapshot: &Snapshot) -> Option<Arc<Backend>> {
    match snapshot.lookup_route(Some("app.example.com"), "/") {
        RouteLookup::Matched { route, .. } => match &route.action {
            RouteAction::Forward(backend) => Some(backend.clone()),
            RouteAction::Respond { .. } => None,
        },
        RouteLookup::NotFound => None,
    }
}

fn endpoint_strings(backend: &Backend) -> Vec<String> {
    backend
        .endpoints
        .iter()
        .map(|e| {
            format!(
                "{}{}",
                e.address,
                if e.terminating { " terminating" } else { "" }
            )
        })
        .collect()
}

#[test]
fn port_by_number_and_by_name() {
    for (row, port, expected_id) in [
        (
            "a port number selects the Service port",
            "{number: 80}",
            "default/web:80",
        ),
        (
            "a port name selects the Service port",
            "{name: http}",
            "default/web:http",
        ),
    ] {
        let backend = format!("{{service: {{name: web, port: {port}}}}}");
        let manifests = [GANGWAY_CLASS, WEB_SERVICE, &backend_ingress(&backend)].concat();
        let (snapshot, report) = compile_manifests(&manifests);
        assert_eq!(report.problems, vec![], "row `{row}`");
        let backend = forwarded_backend(&snapshot).expect(row);
        assert_eq!(&*backend.id, expected_id, "row `{row}`");
        assert_eq!(backend.port, 80, "row `{row}`");
        assert_eq!(
            endpoint_strings(&backend),
            vec!["10.0.0.1:8080"],
            "row `{row}`"
        );
    }
}

#[test]
fn routes_share_one_backend() {
    let shared = IngressBuilder::new("shared")
        .default_backend(WEB_ADMIN)
        .rule(Some("a.example.com"), &[("Prefix", "/", WEB_HTTP)])
        .rule(Some("b.example.com"), &[("Prefix", "/", WEB_HTTP)])
        .build();
    let manifests = [GANGWAY_CLASS, WEB_SERVICE, &shared].concat();
    let (snapshot, _) = compile_manifests(&manifests);
    let ids: Vec<&str> = snapshot.backends.iter().map(|b| &*b.id).collect();
    assert_eq!(ids, vec!["default/web:admin", "default/web:http"]);
    let backend_of = |host| match snapshot.lookup_route(Some(host), "/") {
        RouteLookup::Matched { route, .. } => match &route.action {
            RouteAction::Forward(backend) => backend.clone(),
            RouteAction::Respond { .. } => panic!("route of {host} does not forward"),
        },
        RouteLookup::NotFound => panic!("no route for {host}"),
    };
    assert!(Arc::ptr_eq(
        &backend_of("a.example.com"),
        &backend_of("b.example.com")
    ));
    assert!(Arc::ptr_eq(
        &backend_of("a.example.com"),
        &snapshot.backends[1]
    ));
}

struct UnresolvedRow {
    row: &'static str,
    backend: &'static str,
    reason: &'static str,
    field: &'static str,
    message_contains: &'static str,
}

const UNRESOLVED_ROWS: &[UnresolvedRow] = &[
    UnresolvedRow {
        row: "a missing Service",
        backend: "{service: {name: missing, port: {number: 80}}}",
        reason: "ServiceNotFound",
        field: "spec.rules[0].http.paths[0].backend.service.name",
        message_contains: "Service `missing` not found",
    },
    UnresolvedRow {
        row: "a port number the Service does not have",
        backend: "{service: {name: web, port: {number: 8080}}}",
        reason: "ServicePortNotFound",
        field: "spec.rules[0].http.paths[0].backend.service.port.number",
        message_contains: "use one of its ports: 80 (http), 9000 (admin)",
    },
    UnresolvedRow {
        row: "a port name the Service does not have",
        backend: "{service: {name: web, port: {name: grpc}}}",
        reason: "ServicePortNotFound",
        field: "spec.rules[0].http.paths[0].backend.service.port.name",
        message_contains: "has no port `grpc`",
    },
    UnresolvedRow {
        row: "a resource backend",
        backend: "{resource: {apiGroup: k8s.example.com, kind: StorageBucket, name: assets}}",
        reason: "UnsupportedBackend",
        field: "spec.rules[0].http.paths[0].backend.resource",
        message_contains: "supports only Service backends",
    },
    UnresolvedRow {
        row: "an ExternalName Service",
        backend: "{service: {name: external, port: {number: 443}}}",
        reason: "UnsupportedServiceType",
        field: "spec.rules[0].http.paths[0].backend.service.name",
        message_contains: "ExternalName",
    },
    UnresolvedRow {
        row: "both a service and a resource",
        backend: "{service: {name: web, port: {number: 80}}, resource: {kind: StorageBucket, name: assets}}",
        reason: "InvalidBackend",
        field: "spec.rules[0].http.paths[0].backend",
        message_contains: "both `service` and `resource`",
    },
    UnresolvedRow {
        row: "a port with both name and number",
        backend: "{service: {name: web, port: {name: http, number: 80}}}",
        reason: "InvalidBackend",
        field: "spec.rules[0].http.paths[0].backend.service.port",
        message_contains: "set exactly one",
    },
    UnresolvedRow {
        row: "a service without port",
        backend: "{service: {name: web}}",
        reason: "InvalidBackend",
        field: "spec.rules[0].http.paths[0].backend.service.port",
        message_contains: "service port is missing",
    },
    UnresolvedRow {
        row: "a port number above 65535",
        backend: "{service: {name: web, port: {number: 70000}}}",
        reason: "InvalidBackend",
        field: "spec.rules[0].http.paths[0].backend.service.port.number",
        message_contains: "70000",
    },
    UnresolvedRow {
        row: "a port name with upper case",
        backend: "{service: {name: web, port: {name: HTTP}}}",
        reason: "InvalidBackend",
        field: "spec.rules[0].http.paths[0].backend.service.port.name",
        message_contains: "`HTTP`",
    },
    UnresolvedRow {
        row: "a port name of digits only",
        backend: "{service: {name: web, port: {name: \"8080\"}}}",
        reason: "InvalidBackend",
        field: "spec.rules[0].http.paths[0].backend.service.port.name",
        message_contains: "at least one letter",
    },
    UnresolvedRow {
        row: "a Service name that is not a DNS-1035 label",
        backend: "{service: {name: 1web, port: {number: 80}}}",
        reason: "InvalidBackend",
        field: "spec.rules[0].http.paths[0].backend.service.name",
        message_contains: "`1web`",
    },
];

const EXTERNAL_SERVICE: &str = "
---
apiVersion: v1
kind: Service
metadata: {name: external, namespace: default}
spec: {type: ExternalName, externalName: example.org, ports: [{port: 443}]}
";

#[test]
fn unresolved_backend_table() {
    for row in UNRESOLVED_ROWS {
        let manifests = [
            GANGWAY_CLASS,
            WEB_SERVICE,
            EXTERNAL_SERVICE,
            &backend_ingress(row.backend),
        ]
        .concat();
        let (snapshot, report) = compile_manifests(&manifests);
        assert_eq!(
            fixed_status(&snapshot, Some("app.example.com"), "/"),
            Some(503),
            "row `{}`: the route stays and answers 503",
            row.row
        );
        assert_eq!(
            report.problems.len(),
            1,
            "row `{}`: {:#?}",
            row.row,
            report.problems
        );
        let problem = &report.problems[0];
        assert_eq!(problem.reason, row.reason, "row `{}`", row.row);
        assert_eq!(problem.field, row.field, "row `{}`", row.row);
        assert_eq!(problem.severity, Severity::Error, "row `{}`", row.row);
        assert!(
            problem.message.contains(row.message_contains),
            "row `{}`: {}",
            row.row,
            problem.message
        );
        assert!(snapshot.backends.is_empty(), "row `{}`", row.row);
    }
}

#[test]
fn unresolved_backend_does_not_fall_through() {
    let missing = "{service: {name: missing, port: {number: 80}}}";
    let app = IngressBuilder::new("app")
        .rule(
            Some("app.example.com"),
            &[("Prefix", "/", WEB_80), ("Prefix", "/api", missing)],
        )
        .build();
    let manifests = [GANGWAY_CLASS, WEB_SERVICE, &app].concat();
    let (snapshot, _) = compile_manifests(&manifests);
    assert_eq!(
        fixed_status(&snapshot, Some("app.example.com"), "/api/x"),
        Some(503)
    );
    assert_eq!(
        fixed_status(&snapshot, Some("app.example.com"), "/other"),
        None
    );
}

#[test]
fn app_protocol_table() {
    let rows = [
        ("unset speaks HTTP/1.1", None, Some(UpstreamProtocol::Http1)),
        (
            "http speaks HTTP/1.1",
            Some("http"),
            Some(UpstreamProtocol::Http1),
        ),
        (
            "kubernetes.io/ws speaks HTTP/1.1",
            Some("kubernetes.io/ws"),
            Some(UpstreamProtocol::Http1),
        ),
        (
            "kubernetes.io/h2c speaks h2c",
            Some("kubernetes.io/h2c"),
            Some(UpstreamProtocol::H2c),
        ),
        (
            "https speaks TLS",
            Some("https"),
            Some(UpstreamProtocol::Tls),
        ),
        (
            "kubernetes.io/wss speaks TLS",
            Some("kubernetes.io/wss"),
            Some(UpstreamProtocol::Tls),
        ),
        ("an unknown value is not supported", Some("grpc"), None),
        ("values are case-sensitive", Some("HTTPS"), None),
    ];
    for (row, app_protocol, expected) in rows {
        assert_eq!(upstream_protocol(app_protocol), expected, "row `{row}`");
    }
}

#[test]
fn unknown_app_protocol_warns_and_uses_http1() {
    let manifests = [
        GANGWAY_CLASS,
        "
---
apiVersion: v1
kind: Service
metadata: {name: grpc, namespace: default}
spec:
  ports:
  - {name: web, port: 80}
  - {name: rpc, port: 50051, appProtocol: grpc}
",
        &backend_ingress("{service: {name: grpc, port: {name: rpc}}}"),
    ]
    .concat();
    let (snapshot, report) = compile_manifests(&manifests);
    let warnings = problems_with(&report, "UnsupportedAppProtocol");
    assert_eq!(warnings.len(), 1, "{:#?}", report.problems);
    assert_eq!(warnings[0].object.kind, "Service");
    assert_eq!(warnings[0].field, "spec.ports[1].appProtocol");
    assert_eq!(warnings[0].severity, Severity::Warning);
    let backend = forwarded_backend(&snapshot).expect("route forwards");
    assert_eq!(backend.protocol, UpstreamProtocol::Http1);
}

fn conditions(
    ready: Option<bool>,
    serving: Option<bool>,
    terminating: Option<bool>,
) -> SliceEndpoint {
    SliceEndpoint {
        addresses: vec!["10.0.0.1".to_owned()],
        conditions: Some(EndpointConditions {
            ready,
            serving,
            terminating,
        }),
        ..SliceEndpoint::default()
    }
}

#[test]
fn endpoint_conditions_table() {
    let rows = [
        (
            "no conditions at all count as ready",
            SliceEndpoint::default(),
            EndpointUse::Ready,
        ),
        (
            "ready unset counts as ready",
            conditions(None, None, None),
            EndpointUse::Ready,
        ),
        (
            "ready true is ready",
            conditions(Some(true), Some(true), Some(false)),
            EndpointUse::Ready,
        ),
        (
            "ready false is not used",
            conditions(Some(false), None, None),
            EndpointUse::Unused,
        ),
        (
            "serving and terminating is a fallback",
            conditions(Some(false), Some(true), Some(true)),
            EndpointUse::Terminating,
        ),
        (
            "terminating but not serving is not used",
            conditions(Some(false), Some(false), Some(true)),
            EndpointUse::Unused,
        ),
        (
            "serving unset follows ready, so a not-ready terminating endpoint is not used",
            conditions(Some(false), None, Some(true)),
            EndpointUse::Unused,
        ),
        (
            "serving but not terminating and not ready is not used",
            conditions(Some(false), Some(true), Some(false)),
            EndpointUse::Unused,
        ),
    ];
    for (row, endpoint, expected) in rows {
        assert_eq!(endpoint_use(&endpoint), expected, "row `{row}`");
    }
}

/// Service `api` with one named and one unnamed-in-slice port, and EndpointSlices whose
/// endpoint lists vary per test.
fn api_service(slices: &str) -> String {
    format!(
        "
---
apiVersion: v1
kind: Service
metadata: {{name: api, namespace: default}}
spec:
  ports:
  - {{name: http, port: 80, appProtocol: kubernetes.io/h2c}}
{slices}"
    )
}

fn slice(name: &str, address_type: &str, port_name: &str, port: u16, endpoints: &str) -> String {
    format!(
        "
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}
  namespace: default
  labels: {{kubernetes.io/service-name: api}}
addressType: {address_type}
ports: [{{name: \"{port_name}\", port: {port}}}]
endpoints: {endpoints}
"
    )
}

#[test]
fn ready_endpoints_are_merged_sorted_and_deduplicated() {
    let slices = [
        slice(
            "api-1",
            "IPv4",
            "http",
            8080,
            "[{addresses: [10.0.0.9]}, {addresses: [10.0.0.2], conditions: {ready: true}}]",
        ),
        slice(
            "api-2",
            "IPv4",
            "http",
            8080,
            "[{addresses: [10.0.0.2]}, {addresses: [10.0.0.5], conditions: {ready: false}}]",
        ),
        slice(
            "api-3",
            "IPv6",
            "http",
            8080,
            "[{addresses: [\"fd00::1\"]}]",
        ),
        // Another port name: its endpoints serve another Service port.
        slice(
            "api-4",
            "IPv4",
            "metrics",
            9100,
            "[{addresses: [10.0.0.7]}]",
        ),
    ]
    .concat();
    let manifests = [
        GANGWAY_CLASS,
        &api_service(&slices),
        &backend_ingress("{service: {name: api, port: {number: 80}}}"),
    ]
    .concat();
    let (snapshot, report) = compile_manifests(&manifests);
    assert_eq!(report.problems, vec![]);
    let backend = forwarded_backend(&snapshot).expect("route forwards");
    assert_eq!(
        endpoint_strings(&backend),
        vec!["10.0.0.2:8080", "10.0.0.9:8080", "[fd00::1]:8080"]
    );
    assert_eq!(backend.protocol, UpstreamProtocol::H2c);
}

#[test]
fn terminating_endpoints_serve_when_none_is_ready() {
    let slices = slice(
        "api-1",
        "IPv4",
        "http",
        8080,
        "[{addresses: [10.0.0.3], conditions: {ready: false, serving: true, terminating: true}}, \
          {addresses: [10.0.0.4], conditions: {ready: false}}]",
    );
    let manifests = [
        GANGWAY_CLASS,
        &api_service(&slices),
        &backend_ingress("{service: {name: api, port: {number: 80}}}"),
    ]
    .concat();
    let (snapshot, report) = compile_manifests(&manifests);
    let backend = forwarded_backend(&snapshot).expect("route forwards");
    assert_eq!(
        endpoint_strings(&backend),
        vec!["10.0.0.3:8080 terminating"]
    );
    let warnings = problems_with(&report, "NoReadyEndpoints");
    assert_eq!(warnings.len(), 1, "{:#?}", report.problems);
    assert_eq!(warnings[0].severity, Severity::Warning);
    assert!(
        warnings[0].message.contains("1 terminating"),
        "{}",
        warnings[0].message
    );
}

#[test]
fn service_without_endpoints_forwards_and_warns() {
    let manifests = [
        GANGWAY_CLASS,
        &api_service(""),
        &backend_ingress("{service: {name: api, port: {name: http}}}"),
    ]
    .concat();
    let (snapshot, report) = compile_manifests(&manifests);
    let backend = forwarded_backend(&snapshot).expect("route forwards to an empty backend");
    assert!(backend.endpoints.is_empty());
    let warnings = problems_with(&report, "NoReadyEndpoints");
    assert_eq!(warnings.len(), 1, "{:#?}", report.problems);
    assert_eq!(
        warnings[0].field,
        "spec.rules[0].http.paths[0].backend.service.name"
    );
    assert_eq!(warnings[0].severity, Severity::Warning);
    assert!(!report.has_errors());
}

#[test]
fn unnamed_service_port_matches_unnamed_slice_port() {
    let manifests = [
        GANGWAY_CLASS,
        "
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default}
spec: {ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: api-unnamed
  namespace: default
  labels: {kubernetes.io/service-name: api}
addressType: IPv4
ports: [{port: 3000}]
endpoints: [{addresses: [10.0.0.8]}]
",
        &slice(
            "api-empty-name",
            "IPv4",
            "",
            3000,
            "[{addresses: [10.0.0.6]}]",
        ),
        &backend_ingress("{service: {name: api, port: {number: 80}}}"),
    ]
    .concat();
    let (snapshot, report) = compile_manifests(&manifests);
    assert_eq!(report.problems, vec![]);
    let backend = forwarded_backend(&snapshot).expect("route forwards");
    assert_eq!(
        endpoint_strings(&backend),
        vec!["10.0.0.6:3000", "10.0.0.8:3000"]
    );
}

#[test]
fn fqdn_slice_is_reported_and_skipped() {
    let slices = [
        slice(
            "api-fqdn",
            "FQDN",
            "http",
            8080,
            "[{addresses: [db.example.org]}]",
        ),
        slice(
            "api-v4",
            "IPv4",
            "http",
            8080,
            "[{addresses: [10.0.0.1]}, {addresses: [not-an-ip]}]",
        ),
    ]
    .concat();
    let manifests = [
        GANGWAY_CLASS,
        &api_service(&slices),
        &backend_ingress("{service: {name: api, port: {number: 80}}}"),
    ]
    .concat();
    let (snapshot, report) = compile_manifests(&manifests);
    let backend = forwarded_backend(&snapshot).expect("route forwards");
    assert_eq!(endpoint_strings(&backend), vec!["10.0.0.1:8080"]);
    let fqdn = problems_with(&report, "UnsupportedAddressType");
    assert_eq!(fqdn.len(), 1, "{:#?}", report.problems);
    assert_eq!(fqdn[0].object.to_string(), "EndpointSlice default/api-fqdn");
    assert_eq!(fqdn[0].field, "addressType");
    let invalid = problems_with(&report, "InvalidEndpointAddress");
    assert_eq!(invalid.len(), 1, "{:#?}", report.problems);
    assert_eq!(invalid[0].field, "endpoints[1].addresses[0]");
}
