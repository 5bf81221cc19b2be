//! Class selection: which Ingresses belong to Gangway, and the order in which they compile.

use std::cmp::Ordering;

use foldhash::{HashSet, HashSetExt};
use k8s_openapi::api::networking::v1::Ingress;

use super::CompileOptions;
use crate::store::{ObjectKey, Store};

/// Legacy annotation that named a class before `spec.ingressClassName` existed.
pub(crate) const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Annotation that marks an IngressClass as the cluster default.
pub(crate) const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// Outcome of class selection for one Ingress, with its reason. The first three variants
/// mean ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClassSelection {
    /// `spec.ingressClassName` names one of our IngressClasses.
    ClassName,
    /// No `spec.ingressClassName`, and `kubernetes.io/ingress.class` equals our class.
    LegacyAnnotation,
    /// No class at all, and one of our IngressClasses is the default class.
    DefaultClass,
    /// `spec.ingressClassName` names an IngressClass of another controller.
    ForeignClassName,
    /// `spec.ingressClassName` names an IngressClass that does not exist.
    MissingClass,
    /// `kubernetes.io/ingress.class` names another class.
    ForeignAnnotation,
    /// No class at all, and none of our IngressClasses is the default.
    NoClass,
}

impl ClassSelection {
    /// Returns true when the Ingress is ours.
    pub(crate) fn is_ours(self) -> bool {
        matches!(
            self,
            ClassSelection::ClassName
                | ClassSelection::LegacyAnnotation
                | ClassSelection::DefaultClass
        )
    }
}

/// Our IngressClasses, looked up once per compile.
pub(crate) struct ClassSelector<'a> {
    /// IngressClass names whose `spec.controller` is ours.
    ours: HashSet<&'a str>,
    /// IngressClass names of any controller.
    all: HashSet<&'a str>,
    /// True when one of our IngressClasses carries `is-default-class: "true"`.
    default_is_ours: bool,
    /// The legacy annotation value that selects us.
    legacy_class: &'a str,
}

impl<'a> ClassSelector<'a> {
    /// Indexes the IngressClasses of `store`.
    pub(crate) fn new(store: &'a Store, options: &'a CompileOptions) -> Self {
        let mut ours = HashSet::new();
        let mut all = HashSet::new();
        let mut default_is_ours = false;
        for (key, class) in &store.ingress_classes {
            all.insert(key.name.as_str());
            let controller = class.spec.as_ref().and_then(|s| s.controller.as_deref());
            if controller != Some(options.controller_name.as_str()) {
                continue;
            }
            ours.insert(key.name.as_str());
            let is_default = class
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|value| value == "true");
            default_is_ours |= is_default;
        }
        Self {
            ours,
            all,
            default_is_ours,
            legacy_class: &options.ingress_class,
        }
    }

    /// Decides whether `ingress` is ours. `spec.ingressClassName` wins over the legacy
    /// annotation when both are set, as the Ingress API documents.
    pub(crate) fn select(&self, ingress: &Ingress) -> ClassSelection {
        let class_name = ingress
            .spec
            .as_ref()
            .and_then(|spec| spec.ingress_class_name.as_deref())
            .filter(|name| !name.is_empty());
        if let Some(class_name) = class_name {
            return if self.ours.contains(class_name) {
                ClassSelection::ClassName
            } else if self.all.contains(class_name) {
                ClassSelection::ForeignClassName
            } else {
                ClassSelection::MissingClass
            };
        }
        let annotation = ingress
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION));
        if let Some(annotation) = annotation {
            return if annotation == self.legacy_class {
                ClassSelection::LegacyAnnotation
            } else {
                ClassSelection::ForeignAnnotation
            };
        }
        if self.default_is_ours {
            ClassSelection::DefaultClass
        } else {
            ClassSelection::NoClass
        }
    }
}

/// One of our Ingresses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OwnedIngress<'a> {
    /// Namespace and name.
    pub(crate) key: &'a ObjectKey,
    /// The object.
    pub(crate) ingress: &'a Ingress,
}

/// Returns our Ingresses, oldest first.
///
/// Ordering rule: `metadata.creationTimestamp` ascending, an Ingress without a timestamp after
/// every Ingress with one (a manifest written by hand has none), then namespace, then name.
/// Conflicts on a host, path, default backend or certificate go to the first Ingress in this
/// order, so the oldest configuration keeps working when a newer one collides with it.
pub(crate) fn owned_ingresses<'a>(
    store: &'a Store,
    selector: &ClassSelector<'_>,
) -> Vec<OwnedIngress<'a>> {
    let mut owned: Vec<OwnedIngress<'a>> = store
        .ingresses
        .iter()
        .filter_map(|(key, ingress)| {
            let selection = selector.select(ingress);
            if selection.is_ours() {
                return Some(OwnedIngress { key, ingress });
            }
            tracing::debug!(
                kind = "Ingress",
                namespace = %key.namespace,
                name = %key.name,
                selection = ?selection,
                "ignoring Ingress of another class"
            );
            None
        })
        .collect();
    // Oldest first: creationTimestamp ascending, missing timestamps last, then namespace and
    // name (see `compare_age`).
    owned.sort_by(compare_age);
    owned
}

/// Compares two Ingresses by the ordering rule of [`owned_ingresses`].
pub(crate) fn compare_age(a: &OwnedIngress<'_>, b: &OwnedIngress<'_>) -> Ordering {
    let created_a = a.ingress.metadata.creation_timestamp.as_ref();
    let created_b = b.ingress.metadata.creation_timestamp.as_ref();
    match (created_a, created_b) {
        (Some(a_time), Some(b_time)) => a_time.0.cmp(&b_time.0),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
    .then_with(|| a.key.cmp(b.key))
}
