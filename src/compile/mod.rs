//! The compiler: a pure function from a [`Store`] to a [`Snapshot`] and a [`StatusReport`].
//!
//! It reads no clock, does no I/O and does not depend on where the objects came from, so the
//! manifest directory and the cluster watchers share it, and tests drive it with tables.
//!
//! Passes, in order, each in its own module:
//! 1. [`select`]: pick our Ingresses by class and order them oldest first.
//! 2. [`tls`]: load the Secrets of `spec.tls` into the certificate table.
//! 3. [`ingress`]: turn rules and default backends into virtual hosts and routes, resolving
//!    each backend through [`backend`] and [`endpoints`].
//!
//! docs/routing.md describes the rules as users see them.

mod backend;
mod endpoints;
mod ingress;
mod problems;
mod select;
mod tls;
mod validate;

#[cfg(test)]
mod tests;

use crate::snapshot::Snapshot;
use crate::status::{Severity, StatusReport};
use crate::store::Store;

use backend::Backends;
use ingress::{Routing, RoutingContext};
use problems::Problems;
use select::ClassSelector;

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
/// affected route responds with 503 or is left out, as the Ingress spec says. The output depends
/// only on the input: the same store gives the same snapshot and report.
pub fn compile(store: &Store, options: &CompileOptions) -> (Snapshot, StatusReport) {
    let mut problems = Problems::default();
    let selector = ClassSelector::new(store, options);
    let owned = select::owned_ingresses(store, &selector);

    let tls = tls::compile_tls(store, &owned, &mut problems);

    let mut backends = Backends::new(store);
    let mut routing = Routing::default();
    let mut context = RoutingContext {
        backends: &mut backends,
        tls: &tls,
        problems: &mut problems,
        routing: &mut routing,
    };
    for ingress in &owned {
        context.compile_ingress(*ingress);
    }

    let snapshot = routing.into_snapshot(tls.certificates);
    tracing::debug!(
        ingresses = owned.len(),
        hosts = snapshot.hosts.len(),
        backends = snapshot.backends.len(),
        errors = problems.count(Severity::Error),
        warnings = problems.count(Severity::Warning),
        "compiled the routing snapshot"
    );

    let mut owned_ingresses: Vec<_> = owned.iter().map(|i| i.key.clone()).collect();
    owned_ingresses.sort();
    let report = StatusReport {
        problems: problems.into_sorted(),
        owned_ingresses,
    };
    (snapshot, report)
}
