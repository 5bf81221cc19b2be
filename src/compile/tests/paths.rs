//! Path matching: every row of the Ingress spec's examples table, through `compile` and
//! `lookup_route`, and the API server's path checks.

use super::{
    GANGWAY_CLASS, IngressBuilder, PathEntry, WEB_ADMIN, WEB_HTTP, WEB_SERVICE, compile_manifests,
    ingress, problems_with, route_id,
};
use crate::compile::validate::{PathError, compile_path_match};
use crate::snapshot::PathMatch;

/// One row of the "Examples" table under "Path types" on the Kubernetes Ingress concepts
/// page: the paths of one Ingress, request paths, and which path serves them.
struct Example {
    row: &'static str,
    paths: &'static [(&'static str, &'static str)],
    requests: &'static [&'static str],
    /// Index into `paths` of the path that serves every request, or `None` for no match.
    expected: Option<usize>,
}

const SPEC_EXAMPLES: &[Example] = &[
    Example {
        row: "Prefix / matches all paths",
        paths: &[("Prefix", "/")],
        requests: &["/", "/foo", "/foo/bar/", "/aaa/bbb/ccc"],
        expected: Some(0),
    },
    Example {
        row: "Exact /foo matches /foo",
        paths: &[("Exact", "/foo")],
        requests: &["/foo"],
        expected: Some(0),
    },
    Example {
        row: "Exact /foo does not match /bar",
        paths: &[("Exact", "/foo")],
        requests: &["/bar"],
        expected: None,
    },
    Example {
        row: "Exact /foo does not match /foo/",
        paths: &[("Exact", "/foo")],
        requests: &["/foo/"],
        expected: None,
    },
    Example {
        row: "Exact /foo/ does not match /foo",
        paths: &[("Exact", "/foo/")],
        requests: &["/foo"],
        expected: None,
    },
    Example {
        row: "Prefix /foo matches /foo and /foo/",
        paths: &[("Prefix", "/foo")],
        requests: &["/foo", "/foo/"],
        expected: Some(0),
    },
    Example {
        row: "Prefix /foo/ matches /foo and /foo/",
        paths: &[("Prefix", "/foo/")],
        requests: &["/foo", "/foo/"],
        expected: Some(0),
    },
    Example {
        row: "Prefix /aaa/bb does not match /aaa/bbb",
        paths: &[("Prefix", "/aaa/bb")],
        requests: &["/aaa/bbb"],
        expected: None,
    },
    Example {
        row: "Prefix /aaa/bbb matches /aaa/bbb",
        paths: &[("Prefix", "/aaa/bbb")],
        requests: &["/aaa/bbb"],
        expected: Some(0),
    },
    Example {
        row: "Prefix /aaa/bbb/ matches /aaa/bbb, ignoring the trailing slash",
        paths: &[("Prefix", "/aaa/bbb/")],
        requests: &["/aaa/bbb"],
        expected: Some(0),
    },
    Example {
        row: "Prefix /aaa/bbb matches /aaa/bbb/ with its trailing slash",
        paths: &[("Prefix", "/aaa/bbb")],
        requests: &["/aaa/bbb/"],
        expected: Some(0),
    },
    Example {
        row: "Prefix /aaa/bbb matches the subpath /aaa/bbb/ccc",
        paths: &[("Prefix", "/aaa/bbb")],
        requests: &["/aaa/bbb/ccc"],
        expected: Some(0),
    },
    Example {
        row: "Prefix /aaa/bbb does not match the string prefix /aaa/bbbxyz",
        paths: &[("Prefix", "/aaa/bbb")],
        requests: &["/aaa/bbbxyz"],
        expected: None,
    },
    Example {
        row: "Prefixes / and /aaa: /aaa/ccc matches the /aaa prefix",
        paths: &[("Prefix", "/"), ("Prefix", "/aaa")],
        requests: &["/aaa/ccc"],
        expected: Some(1),
    },
    Example {
        row: "Prefixes /, /aaa and /aaa/bbb: /aaa/bbb matches the /aaa/bbb prefix",
        paths: &[("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")],
        requests: &["/aaa/bbb"],
        expected: Some(2),
    },
    Example {
        row: "Prefixes /, /aaa and /aaa/bbb: /ccc matches the / prefix",
        paths: &[("Prefix", "/"), ("Prefix", "/aaa"), ("Prefix", "/aaa/bbb")],
        requests: &["/ccc"],
        expected: Some(0),
    },
    Example {
        row: "Prefix /aaa does not match /ccc, which goes to the default backend",
        paths: &[("Prefix", "/aaa")],
        requests: &["/ccc"],
        expected: None,
    },
    Example {
        row: "Prefix /foo and Exact /foo: /foo prefers Exact",
        paths: &[("Prefix", "/foo"), ("Exact", "/foo")],
        requests: &["/foo"],
        expected: Some(1),
    },
];

#[test]
fn spec_examples_table() {
    for example in SPEC_EXAMPLES {
        let paths: Vec<PathEntry<'_>> = example
            .paths
            .iter()
            .map(|(path_type, path)| (*path_type, *path, WEB_HTTP))
            .collect();
        let manifests = [
            GANGWAY_CLASS,
            WEB_SERVICE,
            &ingress("paths", Some("example.com"), &paths),
        ]
        .concat();
        let (snapshot, report) = compile_manifests(&manifests);
        assert_eq!(report.problems, vec![], "row `{}`: problems", example.row);
        let expected = example
            .expected
            .map(|index| format!("ingress/default/paths/rule/0/path/{index}"));
        for request in example.requests {
            assert_eq!(
                route_id(&snapshot, Some("example.com"), request),
                expected,
                "row `{}`, request path `{request}`",
                example.row
            );
        }
    }
}

#[test]
fn unmatched_path_uses_default_backend() {
    // The last-but-one row of the spec table: "No, uses default backend".
    let with_default = IngressBuilder::new("with-default")
        .default_backend(WEB_ADMIN)
        .rule(Some("example.com"), &[("Prefix", "/aaa", WEB_HTTP)])
        .build();
    let manifests = [GANGWAY_CLASS, WEB_SERVICE, &with_default].concat();
    let (snapshot, report) = compile_manifests(&manifests);
    assert_eq!(report.problems, vec![]);
    assert_eq!(
        route_id(&snapshot, Some("example.com"), "/ccc").as_deref(),
        Some("ingress/default/with-default/default-backend")
    );
    assert_eq!(
        route_id(&snapshot, Some("example.com"), "/aaa/x").as_deref(),
        Some("ingress/default/with-default/rule/0/path/0")
    );
}

#[test]
fn implementation_specific_matches_as_prefix() {
    let manifests = [
        GANGWAY_CLASS,
        WEB_SERVICE,
        &ingress(
            "specific",
            Some("example.com"),
            &[("ImplementationSpecific", "/app", WEB_HTTP)],
        ),
    ]
    .concat();
    let (snapshot, _) = compile_manifests(&manifests);
    let expected = Some("ingress/default/specific/rule/0/path/0".to_owned());
    assert_eq!(route_id(&snapshot, Some("example.com"), "/app/x"), expected);
    assert_eq!(route_id(&snapshot, Some("example.com"), "/app"), expected);
    assert_eq!(
        route_id(&snapshot, Some("example.com"), "/application"),
        None
    );
}

/// A row of the path check table: pathType and path in, a match or an error out.
struct PathCheck {
    row: &'static str,
    path_type: &'static str,
    path: Option<&'static str>,
    expected: Result<PathMatch, PathError>,
}

fn path_checks() -> Vec<PathCheck> {
    let exact = |path: &str| Ok(PathMatch::Exact(path.to_owned()));
    let prefix = |path: &str| Ok(PathMatch::Prefix(path.to_owned()));
    let not_absolute = |path: &str| {
        Err(PathError::NotAbsolute {
            path: path.to_owned(),
        })
    };
    vec![
        PathCheck {
            row: "an Exact path is kept as written",
            path_type: "Exact",
            path: Some("/Foo/"),
            expected: exact("/Foo/"),
        },
        PathCheck {
            row: "a Prefix path is kept as written",
            path_type: "Prefix",
            path: Some("/api/"),
            expected: prefix("/api/"),
        },
        PathCheck {
            row: "an ImplementationSpecific path is a Prefix",
            path_type: "ImplementationSpecific",
            path: Some("/api"),
            expected: prefix("/api"),
        },
        PathCheck {
            row: "an ImplementationSpecific path may be empty and matches everything",
            path_type: "ImplementationSpecific",
            path: None,
            expected: prefix("/"),
        },
        PathCheck {
            row: "a relative ImplementationSpecific path is invalid",
            path_type: "ImplementationSpecific",
            path: Some("api"),
            expected: not_absolute("api"),
        },
        PathCheck {
            row: "a Prefix path must not be empty",
            path_type: "Prefix",
            path: None,
            expected: not_absolute(""),
        },
        PathCheck {
            row: "an Exact path must start with a slash",
            path_type: "Exact",
            path: Some("foo"),
            expected: not_absolute("foo"),
        },
        PathCheck {
            row: "a Prefix path must not contain a double slash",
            path_type: "Prefix",
            path: Some("/a//b"),
            expected: Err(PathError::Sequence {
                path: "/a//b".to_owned(),
                sequence: "//",
            }),
        },
        PathCheck {
            row: "a Prefix path must not contain a parent segment",
            path_type: "Prefix",
            path: Some("/a/../b"),
            expected: Err(PathError::Sequence {
                path: "/a/../b".to_owned(),
                sequence: "/../",
            }),
        },
        PathCheck {
            row: "an Exact path must not contain an encoded slash",
            path_type: "Exact",
            path: Some("/a%2Fb"),
            expected: Err(PathError::Sequence {
                path: "/a%2Fb".to_owned(),
                sequence: "%2F",
            }),
        },
        PathCheck {
            row: "a Prefix path must not end with a dot segment",
            path_type: "Prefix",
            path: Some("/a/."),
            expected: Err(PathError::Suffix {
                path: "/a/.".to_owned(),
                suffix: "/.",
            }),
        },
        PathCheck {
            row: "a pathType outside the three values is unsupported",
            path_type: "Regex",
            path: Some("/a.*"),
            expected: Err(PathError::UnsupportedType {
                path_type: "Regex".to_owned(),
            }),
        },
    ]
}

#[test]
fn path_checks_table() {
    for check in path_checks() {
        assert_eq!(
            compile_path_match(check.path_type, check.path),
            check.expected,
            "row `{}`",
            check.row
        );
    }
}

#[test]
fn invalid_path_is_skipped_and_named() {
    let manifests = [
        GANGWAY_CLASS,
        WEB_SERVICE,
        &ingress(
            "mixed",
            Some("example.com"),
            &[
                ("Prefix", "relative", WEB_HTTP),
                ("Prefix", "/ok", WEB_HTTP),
            ],
        ),
    ]
    .concat();
    let (snapshot, report) = compile_manifests(&manifests);
    let invalid = problems_with(&report, "InvalidPath");
    assert_eq!(invalid.len(), 1, "{:#?}", report.problems);
    assert_eq!(invalid[0].field, "spec.rules[0].http.paths[0].path");
    assert!(
        invalid[0].message.contains("`relative`"),
        "{}",
        invalid[0].message
    );
    assert_eq!(
        route_id(&snapshot, Some("example.com"), "/ok").as_deref(),
        Some("ingress/default/mixed/rule/0/path/1")
    );
}
