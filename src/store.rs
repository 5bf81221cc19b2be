//! The input of the compiler: every Kubernetes object Gangway reads, keyed by namespace and name.
//!
//! A provider (the manifest directory reader, or the cluster watchers) fills a [`Store`]; the
//! compiler reads it and nothing else, so both providers share one compile path.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde::Serialize;

/// Namespace and name of an object. Cluster-scoped objects have an empty namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectKey {
    /// Namespace, or an empty string for cluster-scoped kinds such as IngressClass.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectKey {
    /// Builds a key for a namespaced object.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Builds a key for a cluster-scoped object.
    pub fn cluster(name: impl Into<String>) -> Self {
        Self::new(String::new(), name)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// A kind of object together with its key, used to name the object a problem is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectRef {
    /// Kubernetes kind, such as `Ingress`.
    pub kind: String,
    /// Namespace and name.
    #[serde(flatten)]
    pub key: ObjectKey,
}

impl ObjectRef {
    /// Builds a reference to an object of `kind`.
    pub fn new(kind: impl Into<String>, key: ObjectKey) -> Self {
        Self {
            kind: kind.into(),
            key,
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.key)
    }
}

/// Every object the compiler reads. Values are `Arc`s so that a cluster provider can build a
/// store from its reflector caches without copying objects.
#[derive(Clone, Debug, Default)]
pub struct Store {
    /// IngressClasses (cluster-scoped).
    pub ingress_classes: BTreeMap<ObjectKey, Arc<IngressClass>>,
    /// Ingresses (networking.k8s.io/v1).
    pub ingresses: BTreeMap<ObjectKey, Arc<Ingress>>,
    /// Services (v1).
    pub services: BTreeMap<ObjectKey, Arc<Service>>,
    /// EndpointSlices (discovery.k8s.io/v1), keyed by their own name, not the Service's.
    pub endpoint_slices: BTreeMap<ObjectKey, Arc<EndpointSlice>>,
    /// Secrets. Providers only insert `kubernetes.io/tls` Secrets, but the compiler checks the
    /// type again because a manifest directory can contain anything.
    pub secrets: BTreeMap<ObjectKey, Arc<Secret>>,
}

impl Store {
    /// Returns the total number of objects of every kind.
    pub fn len(&self) -> usize {
        self.ingress_classes.len()
            + self.ingresses.len()
            + self.services.len()
            + self.endpoint_slices.len()
            + self.secrets.len()
    }

    /// Returns true when the store contains no object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
