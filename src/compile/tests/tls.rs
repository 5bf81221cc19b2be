//! TLS: Secret loading errors, certificate selection by SNI, and HTTPS redirects.
//!
//! Certificates are generated with rcgen for each test; they are test keys only.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{
    GANGWAY_CLASS, IngressBuilder, JAN, JUN, WEB_80, WEB_ADMIN, WEB_HTTP, WEB_SERVICE,
    compile_manifests, problems_with, store,
};
use crate::compile::{CompileOptions, compile};
use crate::snapshot::{RouteLookup, Snapshot};
use crate::status::Severity;
use crate::store::ObjectKey;

/// A self-signed certificate and its key, both PEM.
struct TestCertificate {
    certificate: String,
    key: String,
}

fn test_certificate(hosts: &[&str]) -> TestCertificate {
    let names: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
    let generated =
        rcgen::generate_simple_self_signed(names).expect("rcgen generates a certificate");
    TestCertificate {
        certificate: generated.cert.pem(),
        key: generated.signing_key.serialize_pem(),
    }
}

/// Indents a PEM block for a YAML block scalar under `stringData`.
fn indent(pem: &str) -> String {
    pem.lines().map(|line| format!("    {line}\n")).collect()
}

/// Builds a Secret `default/<name>` of `secret_type` with the given `stringData` entries.
fn secret(name: &str, secret_type: &str, entries: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        "
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}, namespace: default}}
type: {secret_type}
stringData:
"
    );
    for (key, value) in entries {
        yaml.push_str(&format!("  {key}: |\n{}", indent(value)));
    }
    if entries.is_empty() {
        yaml.push_str("  unrelated: value\n");
    }
    yaml
}

fn tls_secret(name: &str, certificate: &TestCertificate) -> String {
    secret(
        name,
        "kubernetes.io/tls",
        &[
            ("tls.crt", &certificate.certificate),
            ("tls.key", &certificate.key),
        ],
    )
}

/// Builds an Ingress `default/<name>` routing `/` of `host` to `web:80`, with the given
/// `spec.tls` section (a YAML flow sequence) and annotations.
fn tls_ingress(
    name: &str,
    created: &str,
    host: Option<&str>,
    tls: &str,
    annotations: &[(&str, &str)],
) -> String {
    let mut builder = IngressBuilder::new(name)
        .created(created)
        .tls(tls)
        .rule(host, &[("Prefix", "/", WEB_80)]);
    for (key, value) in annotations {
        builder = builder.annotation(key, value);
    }
    builder.build()
}

fn certificate_secret(snapshot: &Snapshot, server_name: Option<&str>) -> Option<String> {
    snapshot
        .certificates
        .lookup(server_name)
        .map(|certificate| certificate.secret.to_string())
}

fn redirects(snapshot: &Snapshot, host: &str, path: &str) -> bool {
    match snapshot.lookup_route(Some(host), path) {
        RouteLookup::Matched { route, .. } => route.https_redirect,
        RouteLookup::NotFound => panic!("no route for {host}{path}"),
    }
}

struct SecretRow {
    row: &'static str,
    secret: String,
    reason: &'static str,
    message_contains: &'static str,
}

fn secret_rows(good: &TestCertificate, other: &TestCertificate) -> Vec<SecretRow> {
    let truncated_certificate = good
        .certificate
        .lines()
        .take(3)
        .collect::<Vec<_>>()
        .join("\n");
    let garbage_certificate =
        "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n";
    vec![
        SecretRow {
            row: "a missing Secret",
            secret: String::new(),
            reason: "SecretNotFound",
            message_contains: "Secret `site-tls` not found in namespace `default`",
        },
        SecretRow {
            row: "a Secret of type Opaque",
            secret: secret(
                "site-tls",
                "Opaque",
                &[("tls.crt", &good.certificate), ("tls.key", &good.key)],
            ),
            reason: "InvalidSecretType",
            message_contains: "has type `Opaque`",
        },
        SecretRow {
            row: "a Secret without tls.key",
            secret: secret(
                "site-tls",
                "kubernetes.io/tls",
                &[("tls.crt", &good.certificate)],
            ),
            reason: "InvalidTlsSecret",
            message_contains: "no `tls.key`",
        },
        SecretRow {
            row: "a Secret without tls.crt",
            secret: secret("site-tls", "kubernetes.io/tls", &[("tls.key", &good.key)]),
            reason: "InvalidTlsSecret",
            message_contains: "no `tls.crt`",
        },
        SecretRow {
            row: "a certificate cut off before its END line",
            secret: secret(
                "site-tls",
                "kubernetes.io/tls",
                &[("tls.crt", &truncated_certificate), ("tls.key", &good.key)],
            ),
            reason: "InvalidTlsSecret",
            message_contains: "has no matching `-----END` line",
        },
        SecretRow {
            row: "tls.crt holding a key instead of a certificate",
            secret: secret(
                "site-tls",
                "kubernetes.io/tls",
                &[("tls.crt", &good.key), ("tls.key", &good.key)],
            ),
            reason: "InvalidTlsSecret",
            message_contains: "no PEM section of the expected type",
        },
        SecretRow {
            row: "tls.key holding a certificate instead of a key",
            secret: secret(
                "site-tls",
                "kubernetes.io/tls",
                &[
                    ("tls.crt", &good.certificate),
                    ("tls.key", &good.certificate),
                ],
            ),
            reason: "InvalidTlsSecret",
            message_contains: "failed to read `tls.key`",
        },
        SecretRow {
            row: "a certificate block that is not a certificate",
            secret: secret(
                "site-tls",
                "kubernetes.io/tls",
                &[("tls.crt", garbage_certificate), ("tls.key", &good.key)],
            ),
            reason: "InvalidTlsSecret",
            message_contains: "failed to parse the certificate",
        },
        SecretRow {
            row: "a key of another certificate",
            secret: secret(
                "site-tls",
                "kubernetes.io/tls",
                &[("tls.crt", &good.certificate), ("tls.key", &other.key)],
            ),
            reason: "InvalidTlsSecret",
            message_contains: "does not match the certificate",
        },
    ]
}

#[test]
fn secret_errors_table() {
    let good = test_certificate(&["site.example.com"]);
    let other = test_certificate(&["other.example.com"]);
    let key_body: Vec<&str> = good
        .key
        .lines()
        .chain(other.key.lines())
        .filter(|line| !line.starts_with("-----"))
        .collect();
    for row in secret_rows(&good, &other) {
        let manifests = [
            GANGWAY_CLASS,
            WEB_SERVICE,
            &row.secret,
            &tls_ingress(
                "site",
                JAN,
                Some("site.example.com"),
                "[{hosts: [site.example.com], secretName: site-tls}]",
                &[],
            ),
        ]
        .concat();
        let (snapshot, report) = compile_manifests(&manifests);
        assert_eq!(
            report.problems.len(),
            1,
            "row `{}`: {:#?}",
            row.row,
            report.problems
        );
        let problem = &report.problems[0];
        assert_eq!(problem.field, "spec.tls[0].secretName", "row `{}`", row.row);
        assert_eq!(problem.reason, row.reason, "row `{}`", row.row);
        assert_eq!(problem.severity, Severity::Error, "row `{}`", row.row);
        assert!(
            problem.message.contains(row.message_contains),
            "row `{}`: {}",
            row.row,
            problem.message
        );
        assert!(
            key_body.iter().all(|line| !problem.message.contains(line)),
            "row `{}`: the message quotes key material",
            row.row
        );
        assert_eq!(
            certificate_secret(&snapshot, Some("site.example.com")),
            None,
            "row `{}`: the host gets no certificate",
            row.row
        );
        assert!(
            redirects(&snapshot, "site.example.com", "/"),
            "row `{}`: the host still redirects to HTTPS",
            row.row
        );
    }
}

#[test]
fn secret_from_data_bytes_loads() {
    let generated = test_certificate(&["site.example.com"]);
    let manifests = [
        GANGWAY_CLASS,
        WEB_SERVICE,
        &tls_ingress(
            "site",
            JAN,
            Some("site.example.com"),
            "[{hosts: [site.example.com], secretName: site-tls}]",
            &[],
        ),
    ]
    .concat();
    let mut store = store(&manifests);
    let data = BTreeMap::from([
        (
            "tls.crt".to_owned(),
            ByteString(generated.certificate.into_bytes()),
        ),
        ("tls.key".to_owned(), ByteString(generated.key.into_bytes())),
    ]);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("site-tls".to_owned()),
            namespace: Some("default".to_owned()),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data),
        ..Secret::default()
    };
    store
        .secrets
        .insert(ObjectKey::new("default", "site-tls"), Arc::new(secret));
    let (snapshot, report) = compile(&store, &CompileOptions::default());
    assert_eq!(report.problems, vec![]);
    assert_eq!(
        certificate_secret(&snapshot, Some("site.example.com")).as_deref(),
        Some("default/site-tls")
    );
}

#[test]
fn wildcard_certificate_covers_one_label() {
    let wildcard = test_certificate(&["*.example.com"]);
    let manifests = [
        GANGWAY_CLASS,
        WEB_SERVICE,
        &tls_secret("wildcard-tls", &wildcard),
        &tls_ingress(
            "wildcard",
            JAN,
            Some("*.example.com"),
            "[{hosts: [\"*.example.com\"], secretName: wildcard-tls}]",
            &[],
        ),
    ]
    .concat();
    let (snapshot, report) = compile_manifests(&manifests);
    assert_eq!(report.problems, vec![]);
    let rows = [
        (
            "one label below matches",
            Some("app.example.com"),
            Some("default/wildcard-tls"),
        ),
        (
            "SNI is compared case-insensitively",
            Some("APP.example.com"),
            Some("default/wildcard-tls"),
        ),
        (
            "the parent domain does not match",
            Some("example.com"),
            None,
        ),
        (
            "two labels below do not match",
            Some("a.b.example.com"),
            None,
        ),
        ("no SNI gets no certificate without a fallback", None, None),
    ];
    for (row, server_name, expected) in rows {
        assert_eq!(
            certificate_secret(&snapshot, server_name).as_deref(),
            expected,
            "row `{row}`"
        );
    }
}

#[test]
fn tls_entry_without_hosts_is_the_fallback() {
    let fallback = test_certificate(&["fallback.example.com"]);
    let site = test_certificate(&["site.example.com"]);
    let manifests = [
        GANGWAY_CLASS,
        WEB_SERVICE,
        &tls_secret("fallback-tls", &fallback),
        &tls_secret("site-tls", &site),
        &tls_ingress(
            "site",
            JAN,
            Some("site.example.com"),
            "[{secretName: fallback-tls}, {hosts: [site.example.com], secretName: site-tls}]",
            &[],
        ),
    ]
    .concat();
    let (snapshot, report) = compile_manifests(&manifests);
    assert_eq!(report.problems, vec![]);
    let rows = [
        (
            "a listed host gets its own certificate",
            Some("site.example.com"),
            "default/site-tls",
        ),
        (
            "an unknown host gets the fallback",
            Some("unknown.example.com"),
            "default/fallback-tls",
        ),
        ("no SNI gets the fallback", None, "default/fallback-tls"),
    ];
    for (row, server_name, expected) in rows {
        assert_eq!(
            certificate_secret(&snapshot, server_name).as_deref(),
            Some(expected),
            "row `{row}`"
        );
    }
    assert_eq!(
        snapshot.route_table().fallback_certificate.as_deref(),
        Some("default/fallback-tls")
    );
}

#[test]
fn oldest_ingress_wins_certificate_conflict() {
    let old = test_certificate(&["site.example.com"]);
    let new = test_certificate(&["site.example.com"]);
    let manifests = [
        GANGWAY_CLASS,
        WEB_SERVICE,
        &tls_secret("old-tls", &old),
        &tls_secret("new-tls", &new),
        &tls_ingress(
            "newer",
            JUN,
            Some("site.example.com"),
            "[{hosts: [site.example.com], secretName: new-tls}, {secretName: new-tls}]",
            &[],
        ),
        &tls_ingress(
            "older",
            JAN,
            Some("site.example.com"),
            "[{hosts: [site.example.com], secretName: old-tls}, {secretName: old-tls}]",
            &[],
        ),
        &tls_ingress(
            "same-secret",
            JUN,
            Some("site.example.com"),
            "[{hosts: [site.example.com], secretName: old-tls}]",
            &[],
        ),
    ]
    .concat();
    let (snapshot, report) = compile_manifests(&manifests);
    assert_eq!(
        certificate_secret(&snapshot, Some("site.example.com")).as_deref(),
        Some("default/old-tls")
    );
    assert_eq!(
        certificate_secret(&snapshot, Some("unknown.example.com")).as_deref(),
        Some("default/old-tls")
    );
    let conflicts = problems_with(&report, "CertificateConflict");
    let fields: Vec<(&str, &str)> = conflicts
        .iter()
        .map(|p| (p.object.key.name.as_str(), p.field.as_str()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("newer", "spec.tls[0].hosts[0]"),
            ("newer", "spec.tls[1].secretName")
        ]
    );
    assert!(
        conflicts[0].message.contains("`default/old-tls`"),
        "{}",
        conflicts[0].message
    );
}

#[test]
fn broken_older_secret_leaves_host_to_newer_ingress() {
    let new = test_certificate(&["site.example.com"]);
    let manifests = [
        GANGWAY_CLASS,
        WEB_SERVICE,
        &tls_secret("new-tls", &new),
        &tls_ingress(
            "older",
            JAN,
            Some("site.example.com"),
            "[{hosts: [site.example.com], secretName: missing-tls}]",
            &[],
        ),
        &tls_ingress(
            "newer",
            JUN,
            Some("site.example.com"),
            "[{hosts: [site.example.com], secretName: new-tls}]",
            &[],
        ),
    ]
    .concat();
    let (snapshot, report) = compile_manifests(&manifests);
    assert_eq!(
        certificate_secret(&snapshot, Some("site.example.com")).as_deref(),
        Some("default/new-tls")
    );
    assert_eq!(problems_with(&report, "SecretNotFound").len(), 1);
    assert_eq!(problems_with(&report, "CertificateConflict").len(), 0);
}

#[test]
fn invalid_tls_host_is_named() {
    let manifests = [
        GANGWAY_CLASS,
        WEB_SERVICE,
        &tls_ingress(
            "site",
            JAN,
            Some("site.example.com"),
            "[{hosts: [\"Site.example.com\"]}]",
            &[],
        ),
    ]
    .concat();
    let (_, report) = compile_manifests(&manifests);
    let invalid = problems_with(&report, "InvalidHost");
    assert_eq!(invalid.len(), 1, "{:#?}", report.problems);
    assert_eq!(invalid[0].field, "spec.tls[0].hosts[0]");
    let missing_name = problems_with(&report, "MissingSecretName");
    assert_eq!(missing_name.len(), 1, "{:#?}", report.problems);
    assert_eq!(missing_name[0].severity, Severity::Warning);
}

struct RedirectRow {
    row: &'static str,
    annotations: &'static [(&'static str, &'static str)],
    tls_host: &'static str,
    rule_host: &'static str,
    expected: bool,
}

const REDIRECT_ROWS: &[RedirectRow] = &[
    RedirectRow {
        row: "a host listed in spec.tls redirects",
        annotations: &[],
        tls_host: "site.example.com",
        rule_host: "site.example.com",
        expected: true,
    },
    RedirectRow {
        row: "a host not listed in any spec.tls does not redirect",
        annotations: &[],
        tls_host: "other.example.com",
        rule_host: "site.example.com",
        expected: false,
    },
    RedirectRow {
        row: "a wildcard TLS host covers an exact rule host",
        annotations: &[],
        tls_host: "\"*.example.com\"",
        rule_host: "site.example.com",
        expected: true,
    },
    RedirectRow {
        row: "gangway.dev/ssl-redirect false turns the redirect off",
        annotations: &[("gangway.dev/ssl-redirect", "false")],
        tls_host: "site.example.com",
        rule_host: "site.example.com",
        expected: false,
    },
    RedirectRow {
        row: "nginx.ingress.kubernetes.io/ssl-redirect false turns the redirect off",
        annotations: &[("nginx.ingress.kubernetes.io/ssl-redirect", "false")],
        tls_host: "site.example.com",
        rule_host: "site.example.com",
        expected: false,
    },
    RedirectRow {
        row: "gangway.dev/ssl-redirect wins over the ingress-nginx annotation",
        annotations: &[
            ("gangway.dev/ssl-redirect", "true"),
            ("nginx.ingress.kubernetes.io/ssl-redirect", "false"),
        ],
        tls_host: "site.example.com",
        rule_host: "site.example.com",
        expected: true,
    },
    RedirectRow {
        row: "ssl-redirect true does not force a redirect without TLS",
        annotations: &[("gangway.dev/ssl-redirect", "true")],
        tls_host: "other.example.com",
        rule_host: "site.example.com",
        expected: false,
    },
];

#[test]
fn redirect_table() {
    for row in REDIRECT_ROWS {
        let manifests = [
            GANGWAY_CLASS,
            WEB_SERVICE,
            &tls_ingress(
                "site",
                JAN,
                Some(row.rule_host),
                &format!("[{{hosts: [{}], secretName: site-tls}}]", row.tls_host),
                row.annotations,
            ),
        ]
        .concat();
        let (snapshot, _) = compile_manifests(&manifests);
        assert_eq!(
            redirects(&snapshot, row.rule_host, "/"),
            row.expected,
            "row `{}`",
            row.row
        );
    }
}

#[test]
fn tls_host_of_another_ingress_redirects() {
    let manifests = [
        GANGWAY_CLASS,
        WEB_SERVICE,
        &tls_ingress(
            "tls-only",
            JAN,
            Some("other.example.com"),
            "[{hosts: [site.example.com]}]",
            &[],
        ),
        &tls_ingress("plain", JUN, Some("site.example.com"), "[]", &[]),
    ]
    .concat();
    let (snapshot, _) = compile_manifests(&manifests);
    assert!(redirects(&snapshot, "site.example.com", "/"));
}

#[test]
fn invalid_redirect_annotation_warns() {
    let manifests = [
        GANGWAY_CLASS,
        WEB_SERVICE,
        &tls_ingress(
            "site",
            JAN,
            Some("site.example.com"),
            "[{hosts: [site.example.com]}]",
            &[("gangway.dev/ssl-redirect", "no")],
        ),
    ]
    .concat();
    let (snapshot, report) = compile_manifests(&manifests);
    let warnings = problems_with(&report, "InvalidAnnotation");
    assert_eq!(warnings.len(), 1, "{:#?}", report.problems);
    assert_eq!(
        warnings[0].field,
        "metadata.annotations[gangway.dev/ssl-redirect]"
    );
    assert_eq!(warnings[0].severity, Severity::Warning);
    assert!(redirects(&snapshot, "site.example.com", "/"));
}

#[test]
fn catch_all_never_redirects() {
    let site = IngressBuilder::new("site")
        .tls("[{hosts: [site.example.com]}]")
        .default_backend(WEB_ADMIN)
        .rule(Some("site.example.com"), &[("Prefix", "/app", WEB_HTTP)])
        .rule(None, &[("Prefix", "/any", WEB_HTTP)])
        .build();
    let manifests = [GANGWAY_CLASS, WEB_SERVICE, &site].concat();
    let (snapshot, _) = compile_manifests(&manifests);
    let rows = [
        (
            "a path route on the TLS host redirects",
            "site.example.com",
            "/app",
            true,
        ),
        (
            "the default route on the TLS host redirects",
            "site.example.com",
            "/other",
            true,
        ),
        (
            "a catch-all path route does not redirect",
            "unknown.example.com",
            "/any",
            false,
        ),
        (
            "the catch-all default route does not redirect",
            "unknown.example.com",
            "/other",
            false,
        ),
    ];
    for (row, host, path, expected) in rows {
        assert_eq!(redirects(&snapshot, host, path), expected, "row `{row}`");
    }
}
