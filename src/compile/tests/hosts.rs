//! Hosts: the API server's host checks, wildcard matching and the catch-all.

use super::{
    GANGWAY_CLASS, IngressBuilder, WEB_80, WEB_HTTP, WEB_SERVICE, compile_manifests, ingress,
    problems_with, route_id,
};
use crate::compile::validate::{HostError, HostName};

struct HostCheck {
    row: &'static str,
    host: &'static str,
    expected: Result<&'static str, HostError>,
}

fn host_checks() -> Vec<HostCheck> {
    vec![
        HostCheck {
            row: "a lower-case DNS name is valid",
            host: "foo.bar.com",
            expected: Ok("foo.bar.com"),
        },
        HostCheck {
            row: "a single label is valid",
            host: "localhost",
            expected: Ok("localhost"),
        },
        HostCheck {
            row: "a wildcard of one label is valid",
            host: "*.foo.com",
            expected: Ok("*.foo.com"),
        },
        HostCheck {
            row: "labels may contain hyphens inside",
            host: "my-app.example-1.com",
            expected: Ok("my-app.example-1.com"),
        },
        HostCheck {
            row: "an IPv4 address is invalid",
            host: "192.0.2.1",
            expected: Err(HostError::IpAddress),
        },
        HostCheck {
            row: "an IPv6 address is invalid",
            host: "2001:db8::1",
            expected: Err(HostError::IpAddress),
        },
        HostCheck {
            row: "a host with a port is invalid",
            host: "foo.com:8080",
            expected: Err(HostError::Port {
                port: "8080".to_owned(),
            }),
        },
        HostCheck {
            row: "a host with upper case is invalid",
            host: "Foo.com",
            expected: Err(HostError::UpperCase {
                lower: "foo.com".to_owned(),
            }),
        },
        HostCheck {
            row: "a wildcard in the middle is invalid",
            host: "foo.*.com",
            expected: Err(HostError::Wildcard),
        },
        HostCheck {
            row: "a wildcard without a dot is invalid",
            host: "*foo.com",
            expected: Err(HostError::Wildcard),
        },
        HostCheck {
            row: "a lone asterisk is invalid",
            host: "*",
            expected: Err(HostError::Wildcard),
        },
        HostCheck {
            row: "a trailing dot is invalid",
            host: "foo.com.",
            expected: Err(HostError::Syntax),
        },
        HostCheck {
            row: "a label starting with a hyphen is invalid",
            host: "-foo.com",
            expected: Err(HostError::Syntax),
        },
        HostCheck {
            row: "an underscore is invalid",
            host: "foo_bar.com",
            expected: Err(HostError::Syntax),
        },
    ]
}

#[test]
fn host_checks_table() {
    for check in host_checks() {
        let parsed = HostName::parse(check.host);
        assert_eq!(
            parsed.as_ref().map(HostName::as_str).map_err(Clone::clone),
            check.expected,
            "row `{}`",
            check.row
        );
    }
}

#[test]
fn host_longer_than_253_is_invalid() {
    let host = format!("{}.com", "a".repeat(250));
    assert_eq!(
        HostName::parse(&host),
        Err(HostError::TooLong { length: 254 })
    );
}

/// The host wildcard table of the Kubernetes Ingress concepts page, plus an exact host.
#[test]
fn wildcard_host_table() {
    let manifests = [
        GANGWAY_CLASS,
        WEB_SERVICE,
        &ingress("wildcard", Some("*.foo.com"), &[("Prefix", "/", WEB_HTTP)]),
    ]
    .concat();
    let (snapshot, report) = compile_manifests(&manifests);
    assert_eq!(report.problems, vec![]);
    let wildcard_route = Some("ingress/default/wildcard/rule/0/path/0".to_owned());
    let rows = [
        (
            "bar.foo.com matches based on shared suffix",
            "bar.foo.com",
            wildcard_route.clone(),
        ),
        (
            "baz.bar.foo.com does not match: one label only",
            "baz.bar.foo.com",
            None,
        ),
        ("foo.com does not match: one label only", "foo.com", None),
        (
            "a Host header port is ignored",
            "bar.foo.com:8080",
            wildcard_route.clone(),
        ),
        (
            "a Host header is compared case-insensitively",
            "BAR.Foo.com",
            wildcard_route,
        ),
    ];
    for (row, host, expected) in rows {
        assert_eq!(
            route_id(&snapshot, Some(host), "/"),
            expected,
            "row `{row}`"
        );
    }
}

#[test]
fn exact_host_wins_over_wildcard() {
    let manifests = [
        GANGWAY_CLASS,
        WEB_SERVICE,
        &ingress("wildcard", Some("*.foo.com"), &[("Prefix", "/", WEB_HTTP)]),
        &ingress("exact", Some("bar.foo.com"), &[("Prefix", "/", WEB_HTTP)]),
    ]
    .concat();
    let (snapshot, _) = compile_manifests(&manifests);
    assert_eq!(
        route_id(&snapshot, Some("bar.foo.com"), "/").as_deref(),
        Some("ingress/default/exact/rule/0/path/0")
    );
    assert_eq!(
        route_id(&snapshot, Some("baz.foo.com"), "/").as_deref(),
        Some("ingress/default/wildcard/rule/0/path/0")
    );
}

#[test]
fn rule_without_host_serves_unknown_hosts() {
    let manifests = [
        GANGWAY_CLASS,
        WEB_SERVICE,
        &ingress("any-host", None, &[("Prefix", "/", WEB_HTTP)]),
    ]
    .concat();
    let (snapshot, _) = compile_manifests(&manifests);
    let expected = Some("ingress/default/any-host/rule/0/path/0".to_owned());
    assert_eq!(route_id(&snapshot, Some("unknown.example"), "/x"), expected);
    assert_eq!(route_id(&snapshot, None, "/x"), expected);
    assert_eq!(
        snapshot.catch_all.as_ref().map(|v| v.hostname.as_str()),
        Some("*")
    );
}

#[test]
fn matched_host_skips_catch_all() {
    let manifests = [
        GANGWAY_CLASS,
        WEB_SERVICE,
        &ingress(
            "named",
            Some("app.example.com"),
            &[("Prefix", "/api", WEB_HTTP)],
        ),
        &ingress("any-host", None, &[("Prefix", "/", WEB_HTTP)]),
    ]
    .concat();
    let (snapshot, _) = compile_manifests(&manifests);
    assert_eq!(route_id(&snapshot, Some("app.example.com"), "/other"), None);
    assert_eq!(
        route_id(&snapshot, Some("other.example.com"), "/other").as_deref(),
        Some("ingress/default/any-host/rule/0/path/0")
    );
}

#[test]
fn invalid_host_skips_only_its_rule() {
    let messy = IngressBuilder::new("hosts")
        .rule(Some("App.Example.com"), &[("Prefix", "/", WEB_80)])
        .rule(Some("192.0.2.10"), &[("Prefix", "/", WEB_80)])
        .rule(Some("ok.example.com"), &[("Prefix", "/", WEB_80)])
        .build();
    let manifests = [GANGWAY_CLASS, WEB_SERVICE, &messy].concat();
    let (snapshot, report) = compile_manifests(&manifests);

    let invalid = problems_with(&report, "InvalidHost");
    let fields: Vec<&str> = invalid.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, vec!["spec.rules[0].host", "spec.rules[1].host"]);
    assert!(
        invalid[0].message.contains("app.example.com"),
        "{}",
        invalid[0].message
    );
    assert!(
        invalid[1].message.contains("not an IP address"),
        "{}",
        invalid[1].message
    );
    assert_eq!(
        route_id(&snapshot, Some("ok.example.com"), "/").as_deref(),
        Some("ingress/default/hosts/rule/2/path/0")
    );
    assert_eq!(snapshot.hosts.len(), 1);
}

#[test]
fn rule_without_http_claims_its_host() {
    let manifests = [
        GANGWAY_CLASS,
        WEB_SERVICE,
        &IngressBuilder::new("bare-host")
            .host_only_rule("bare.example.com")
            .build(),
        &ingress("any-host", None, &[("Prefix", "/", WEB_HTTP)]),
    ]
    .concat();
    let (snapshot, report) = compile_manifests(&manifests);
    assert_eq!(report.problems, vec![]);
    assert_eq!(route_id(&snapshot, Some("bare.example.com"), "/"), None);
}
