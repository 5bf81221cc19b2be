//! The compiler: a pure function from a [`Store`] to a [`Snapshot`] and a [`StatusReport`].
//!
//! It reads no clock, does no I/O and knows nothing of where the objects came from, so the
//! manifest directory and the cluster watchers share it, and tests drive it with tables.

use crate::snapshot::Snapshot;
use crate::status::StatusReport;
use crate::store::Store;

/// Settings that decide which objects are ours.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// IngressClasses whose `spec.controller` equals this are ours
    /// (default `gangway.dev/ingress-controller`).
    pub controller_name: String,
    /// Value of the legacy `kubernetes.io/ingress.class` annotation that selects Gangway
    /// (default `gangway`).
    pub ingress_class: String,
}

impl Default for CompileOptions {
    fn default() -> Self {
        Self {
            controller_name: "gangway.dev/ingress-controller".to_owned(),
            ingress_class: "gangway".to_owned(),
        }
    }
}

/// Compiles every object in `store` into a routing snapshot and a report of problems.
///
/// A user's mistake never fails the compile: it becomes a [`crate::status::Problem`] and the
/// affected route answers 503 or is left out, as the Ingress spec says.
pub fn compile(store: &Store, options: &CompileOptions) -> (Snapshot, StatusReport) {
    // TODO: replace this placeholder with the Ingress compiler.
    let _ = (store, options);
    (Snapshot::default(), StatusReport::default())
}
