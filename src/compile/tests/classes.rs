//! Class selection: which Ingresses are ours.

use super::{IngressBuilder, WEB_80, WEB_SERVICE, store};
use crate::compile::select::{ClassSelection, ClassSelector};
use crate::compile::{CompileOptions, compile};
use crate::store::ObjectKey;

const OUR_CLASS: &str = "
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: gangway}
spec: {controller: gangway.dev/ingress-controller}
";

const OUR_DEFAULT_CLASS: &str = "
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: gangway
  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}
spec: {controller: gangway.dev/ingress-controller}
";

const OUR_CLASS_WITH_DEFAULT_NOT_TRUE: &str = "
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: gangway
  annotations: {ingressclass.kubernetes.io/is-default-class: \"True\"}
spec: {controller: gangway.dev/ingress-controller}
";

const NGINX_CLASS: &str = "
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: nginx}
spec: {controller: k8s.io/ingress-nginx}
";

const NGINX_DEFAULT_CLASS: &str = "
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: nginx
  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}
spec: {controller: k8s.io/ingress-nginx}
";

/// Builds Ingress `default/<name>` with an optional class name and legacy annotation.
fn classed_ingress(
    name: &str,
    class_name: Option<&str>,
    legacy_annotation: Option<&str>,
) -> String {
    let mut builder = IngressBuilder::new(name)
        .class_name(class_name)
        .default_backend(WEB_80);
    if let Some(value) = legacy_annotation {
        builder = builder.annotation("kubernetes.io/ingress.class", value);
    }
    builder.build()
}

struct ClassRow {
    row: &'static str,
    classes: &'static [&'static str],
    class_name: Option<&'static str>,
    legacy_annotation: Option<&'static str>,
    expected: ClassSelection,
}

const CLASS_ROWS: &[ClassRow] = &[
    ClassRow {
        row: "ingressClassName naming our class is ours",
        classes: &[OUR_CLASS, NGINX_CLASS],
        class_name: Some("gangway"),
        legacy_annotation: None,
        expected: ClassSelection::ClassName,
    },
    ClassRow {
        row: "ingressClassName naming another controller's class is ignored",
        classes: &[OUR_CLASS, NGINX_CLASS],
        class_name: Some("nginx"),
        legacy_annotation: None,
        expected: ClassSelection::ForeignClassName,
    },
    ClassRow {
        row: "ingressClassName naming a class that does not exist is ignored",
        classes: &[OUR_DEFAULT_CLASS],
        class_name: Some("missing"),
        legacy_annotation: None,
        expected: ClassSelection::MissingClass,
    },
    ClassRow {
        row: "legacy annotation equal to our class is ours",
        classes: &[NGINX_CLASS],
        class_name: None,
        legacy_annotation: Some("gangway"),
        expected: ClassSelection::LegacyAnnotation,
    },
    ClassRow {
        row: "legacy annotation naming another class is ignored",
        classes: &[OUR_CLASS],
        class_name: None,
        legacy_annotation: Some("nginx"),
        expected: ClassSelection::ForeignAnnotation,
    },
    ClassRow {
        row: "ingressClassName of another class wins over our legacy annotation",
        classes: &[OUR_CLASS, NGINX_CLASS],
        class_name: Some("nginx"),
        legacy_annotation: Some("gangway"),
        expected: ClassSelection::ForeignClassName,
    },
    ClassRow {
        row: "ingressClassName of our class wins over another legacy annotation",
        classes: &[OUR_CLASS, NGINX_CLASS],
        class_name: Some("gangway"),
        legacy_annotation: Some("nginx"),
        expected: ClassSelection::ClassName,
    },
    ClassRow {
        row: "no class is ours when our class is the default",
        classes: &[OUR_DEFAULT_CLASS, NGINX_CLASS],
        class_name: None,
        legacy_annotation: None,
        expected: ClassSelection::DefaultClass,
    },
    ClassRow {
        row: "no class is ignored when no class is the default",
        classes: &[OUR_CLASS, NGINX_CLASS],
        class_name: None,
        legacy_annotation: None,
        expected: ClassSelection::NoClass,
    },
    ClassRow {
        row: "no class is ignored when only another controller's class is the default",
        classes: &[OUR_CLASS, NGINX_DEFAULT_CLASS],
        class_name: None,
        legacy_annotation: None,
        expected: ClassSelection::NoClass,
    },
    ClassRow {
        row: "another legacy annotation is ignored even when our class is the default",
        classes: &[OUR_DEFAULT_CLASS],
        class_name: None,
        legacy_annotation: Some("nginx"),
        expected: ClassSelection::ForeignAnnotation,
    },
    ClassRow {
        row: "a default-class annotation other than exactly \"true\" does not count",
        classes: &[OUR_CLASS_WITH_DEFAULT_NOT_TRUE],
        class_name: None,
        legacy_annotation: None,
        expected: ClassSelection::NoClass,
    },
    ClassRow {
        row: "no IngressClass at all and no annotation is ignored",
        classes: &[],
        class_name: None,
        legacy_annotation: None,
        expected: ClassSelection::NoClass,
    },
];

#[test]
fn class_selection_table() {
    let options = CompileOptions::default();
    for row in CLASS_ROWS {
        let mut manifests = row.classes.concat();
        manifests.push_str(WEB_SERVICE);
        manifests.push_str(&classed_ingress(
            "app",
            row.class_name,
            row.legacy_annotation,
        ));
        let store = store(&manifests);

        let selector = ClassSelector::new(&store, &options);
        let ingress = &store.ingresses[&ObjectKey::new("default", "app")];
        assert_eq!(selector.select(ingress), row.expected, "row `{}`", row.row);

        let (_, report) = compile(&store, &options);
        let expected_owned = if row.expected.is_ours() {
            vec![ObjectKey::new("default", "app")]
        } else {
            vec![]
        };
        assert_eq!(
            report.owned_ingresses, expected_owned,
            "row `{}`: owned Ingresses",
            row.row
        );
    }
}

#[test]
fn foreign_ingress_is_not_a_problem() {
    let manifests = [
        OUR_CLASS,
        NGINX_CLASS,
        &classed_ingress("app", Some("nginx"), None),
    ]
    .concat();
    let (snapshot, report) = compile(&store(&manifests), &CompileOptions::default());
    assert_eq!(report.problems, vec![]);
    assert!(snapshot.catch_all.is_none());
}

#[test]
fn options_name_the_controller_and_legacy_class() {
    let options = CompileOptions {
        controller_name: "example.com/other".to_owned(),
        ingress_class: "other".to_owned(),
    };
    let manifests = [
        "
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: custom}
spec: {controller: example.com/other}
",
        &classed_ingress("by-class", Some("custom"), None),
        &classed_ingress("by-annotation", None, Some("other")),
        &classed_ingress("default-name", Some("gangway"), None),
    ]
    .concat();
    let (_, report) = compile(&store(&manifests), &options);
    assert_eq!(
        report.owned_ingresses,
        vec![
            ObjectKey::new("default", "by-annotation"),
            ObjectKey::new("default", "by-class"),
        ]
    );
}
