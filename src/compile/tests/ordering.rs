//! Ordering and merging: oldest Ingress first, conflicts on paths and default backends.

use super::{
    GANGWAY_CLASS, IngressBuilder, JAN, JUN, WEB_80, WEB_ADMIN, WEB_HTTP, WEB_SERVICE,
    compile_manifests, problems_with, route_id, store,
};
use crate::compile::CompileOptions;
use crate::compile::select::{ClassSelector, owned_ingresses};

/// Builds an Ingress with one Prefix path on `host` to `web:80`, created at `created`.
fn timed_ingress(
    namespace: &str,
    name: &str,
    created: Option<&str>,
    host: &str,
    path: &str,
) -> IngressBuilder {
    let builder = IngressBuilder::new(name)
        .namespace(namespace)
        .rule(Some(host), &[("Prefix", path, WEB_80)]);
    match created {
        Some(time) => builder.created(time),
        None => builder,
    }
}

struct OrderRow {
    row: &'static str,
    /// Namespace, name and creation timestamp of each Ingress.
    ingresses: &'static [(&'static str, &'static str, Option<&'static str>)],
    /// `namespace/name`, oldest first.
    expected: &'static [&'static str],
}

const ORDER_ROWS: &[OrderRow] = &[
    OrderRow {
        row: "an older timestamp comes first whatever the name",
        ingresses: &[
            ("default", "aaa-new", Some("2024-06-01T00:00:00Z")),
            ("default", "zzz-old", Some("2024-01-01T00:00:00Z")),
        ],
        expected: &["default/zzz-old", "default/aaa-new"],
    },
    OrderRow {
        row: "an Ingress without timestamp comes after every timestamp",
        ingresses: &[
            ("default", "aaa-untimed", None),
            ("default", "zzz-timed", Some("2030-01-01T00:00:00Z")),
        ],
        expected: &["default/zzz-timed", "default/aaa-untimed"],
    },
    OrderRow {
        row: "equal timestamps order by namespace first",
        ingresses: &[
            ("beta", "aaa", Some("2024-01-01T00:00:00Z")),
            ("alpha", "zzz", Some("2024-01-01T00:00:00Z")),
        ],
        expected: &["alpha/zzz", "beta/aaa"],
    },
    OrderRow {
        row: "equal timestamps in one namespace order by name",
        ingresses: &[
            ("default", "second", Some("2024-01-01T00:00:00Z")),
            ("default", "first", Some("2024-01-01T00:00:00Z")),
        ],
        expected: &["default/first", "default/second"],
    },
    OrderRow {
        row: "Ingresses without timestamps order by namespace, then name",
        ingresses: &[
            ("default", "b", None),
            ("default", "a", None),
            ("apps", "z", None),
        ],
        expected: &["apps/z", "default/a", "default/b"],
    },
];

#[test]
fn ordering_table() {
    let options = CompileOptions::default();
    for row in ORDER_ROWS {
        let mut manifests = GANGWAY_CLASS.to_owned();
        for (namespace, name, created) in row.ingresses {
            let ingress = timed_ingress(namespace, name, *created, "example.com", "/");
            manifests.push_str(&ingress.build());
        }
        let store = store(&manifests);
        let selector = ClassSelector::new(&store, &options);
        let order: Vec<String> = owned_ingresses(&store, &selector)
            .iter()
            .map(|owned| owned.key.to_string())
            .collect();
        assert_eq!(order, row.expected, "row `{}`", row.row);
    }
}

#[test]
fn older_ingress_wins_path_conflict() {
    let manifests = [
        GANGWAY_CLASS,
        WEB_SERVICE,
        &timed_ingress("default", "aaa-new", Some(JUN), "example.com", "/app").build(),
        &timed_ingress("default", "zzz-old", Some(JAN), "example.com", "/app/").build(),
    ]
    .concat();
    let (snapshot, report) = compile_manifests(&manifests);
    assert_eq!(
        route_id(&snapshot, Some("example.com"), "/app").as_deref(),
        Some("ingress/default/zzz-old/rule/0/path/0")
    );
    let conflicts = problems_with(&report, "PathConflict");
    assert_eq!(conflicts.len(), 1, "{:#?}", report.problems);
    assert_eq!(conflicts[0].object.key.name, "aaa-new");
    assert_eq!(conflicts[0].field, "spec.rules[0].http.paths[0].path");
    assert!(
        conflicts[0]
            .message
            .contains("ingress/default/zzz-old/rule/0/path/0"),
        "{}",
        conflicts[0].message
    );
}

#[test]
fn ingresses_merge_into_one_virtual_host() {
    let manifests = [
        GANGWAY_CLASS,
        WEB_SERVICE,
        &timed_ingress("default", "api", None, "example.com", "/api").build(),
        &timed_ingress("default", "site", None, "example.com", "/").build(),
    ]
    .concat();
    let (snapshot, report) = compile_manifests(&manifests);
    assert_eq!(report.problems, vec![]);
    assert_eq!(snapshot.hosts.len(), 1);
    assert_eq!(
        route_id(&snapshot, Some("example.com"), "/api/v1").as_deref(),
        Some("ingress/default/api/rule/0/path/0")
    );
    assert_eq!(
        route_id(&snapshot, Some("example.com"), "/index.html").as_deref(),
        Some("ingress/default/site/rule/0/path/0")
    );
}

#[test]
fn exact_and_prefix_coexist() {
    let manifests = [
        GANGWAY_CLASS,
        WEB_SERVICE,
        &timed_ingress("default", "prefix", None, "example.com", "/foo").build(),
        &IngressBuilder::new("exact")
            .rule(Some("example.com"), &[("Exact", "/foo", WEB_80)])
            .build(),
    ]
    .concat();
    let (snapshot, report) = compile_manifests(&manifests);
    assert_eq!(report.problems, vec![]);
    assert_eq!(
        route_id(&snapshot, Some("example.com"), "/foo").as_deref(),
        Some("ingress/default/exact/rule/0/path/0")
    );
    assert_eq!(
        route_id(&snapshot, Some("example.com"), "/foo/bar").as_deref(),
        Some("ingress/default/prefix/rule/0/path/0")
    );
}

#[test]
fn conflict_within_one_ingress_keeps_first_path() {
    let twice = IngressBuilder::new("twice")
        .rule(Some("example.com"), &[("Prefix", "/a", WEB_80)])
        .rule(
            Some("example.com"),
            &[("ImplementationSpecific", "/a/", WEB_80)],
        )
        .build();
    let manifests = [GANGWAY_CLASS, WEB_SERVICE, &twice].concat();
    let (snapshot, report) = compile_manifests(&manifests);
    assert_eq!(
        route_id(&snapshot, Some("example.com"), "/a").as_deref(),
        Some("ingress/default/twice/rule/0/path/0")
    );
    let conflicts = problems_with(&report, "PathConflict");
    assert_eq!(conflicts.len(), 1, "{:#?}", report.problems);
    assert_eq!(conflicts[0].field, "spec.rules[1].http.paths[0].path");
}

/// Builds an Ingress with only a default backend.
fn default_only(name: &str, created: &str, backend: &str) -> String {
    IngressBuilder::new(name)
        .created(created)
        .default_backend(backend)
        .build()
}

#[test]
fn oldest_default_backend_wins_catch_all() {
    let manifests = [
        GANGWAY_CLASS,
        WEB_SERVICE,
        &default_only("newer", JUN, WEB_ADMIN),
        &default_only("older", JAN, WEB_HTTP),
    ]
    .concat();
    let (snapshot, report) = compile_manifests(&manifests);
    assert_eq!(
        route_id(&snapshot, Some("anything.example"), "/x").as_deref(),
        Some("ingress/default/older/default-backend")
    );
    let conflicts = problems_with(&report, "DefaultBackendConflict");
    assert_eq!(conflicts.len(), 1, "{:#?}", report.problems);
    assert_eq!(conflicts[0].object.key.name, "newer");
    assert_eq!(conflicts[0].field, "spec.defaultBackend");
    assert!(
        conflicts[0]
            .message
            .contains("ingress/default/older/default-backend"),
        "{}",
        conflicts[0].message
    );
}

#[test]
fn same_default_backend_is_not_a_conflict() {
    let manifests = [
        GANGWAY_CLASS,
        WEB_SERVICE,
        &default_only("newer", JUN, WEB_HTTP),
        &default_only("older", JAN, WEB_HTTP),
    ]
    .concat();
    let (_, report) = compile_manifests(&manifests);
    assert_eq!(
        problems_with(&report, "DefaultBackendConflict"),
        Vec::<&crate::status::Problem>::new()
    );
}

#[test]
fn default_backend_serves_hosts_of_its_ingress_only() {
    let shop = IngressBuilder::new("shop")
        .created(JUN)
        .default_backend(WEB_ADMIN)
        .rule(Some("shop.example.com"), &[("Prefix", "/cart", WEB_HTTP)])
        .build();
    let manifests = [
        GANGWAY_CLASS,
        WEB_SERVICE,
        &shop,
        &timed_ingress("default", "blog", Some(JAN), "blog.example.com", "/posts").build(),
    ]
    .concat();
    let (snapshot, report) = compile_manifests(&manifests);
    assert_eq!(report.problems, vec![]);
    assert_eq!(
        route_id(&snapshot, Some("shop.example.com"), "/other").as_deref(),
        Some("ingress/default/shop/default-backend")
    );
    assert_eq!(
        route_id(&snapshot, Some("blog.example.com"), "/other"),
        None
    );
    assert_eq!(
        route_id(&snapshot, Some("unknown.example.com"), "/other").as_deref(),
        Some("ingress/default/shop/default-backend")
    );
}

#[test]
fn empty_ingress_is_a_problem() {
    let manifests = [GANGWAY_CLASS, &IngressBuilder::new("empty").build()].concat();
    let (snapshot, report) = compile_manifests(&manifests);
    let problems = problems_with(&report, "MissingRulesOrDefaultBackend");
    assert_eq!(problems.len(), 1, "{:#?}", report.problems);
    assert_eq!(problems[0].field, "spec");
    assert!(snapshot.catch_all.is_none());
}
