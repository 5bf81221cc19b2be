//! The list of problems one compile collects, logged once each at debug level.

use crate::status::{Problem, Severity};
use crate::store::{ObjectKey, ObjectRef};

/// Problems found so far. The caller that publishes the snapshot reports them (status,
/// Events, `gangway check`), so the compiler logs them only at debug level.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    list: Vec<Problem>,
}

impl Problems {
    /// Adds an error about `field` of the Ingress `ingress`.
    pub(crate) fn ingress_error(
        &mut self,
        ingress: &ObjectKey,
        field: impl Into<String>,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.push(Problem::error(
            ObjectRef::new("Ingress", ingress.clone()),
            field,
            reason,
            message,
        ));
    }

    /// Adds a warning about `field` of the Ingress `ingress`.
    pub(crate) fn ingress_warning(
        &mut self,
        ingress: &ObjectKey,
        field: impl Into<String>,
        reason: &str,
        message: impl Into<String>,
    ) {
        self.push(Problem::warning(
            ObjectRef::new("Ingress", ingress.clone()),
            field,
            reason,
            message,
        ));
    }

    /// Adds a problem about any object.
    pub(crate) fn push(&mut self, problem: Problem) {
        tracing::debug!(
            kind = %problem.object.kind,
            namespace = %problem.object.key.namespace,
            name = %problem.object.key.name,
            field = %problem.field,
            reason = %problem.reason,
            severity = ?problem.severity,
            "{}",
            problem.message
        );
        self.list.push(problem);
    }

    /// Returns the number of problems of `severity` so far.
    pub(crate) fn count(&self, severity: Severity) -> usize {
        self.list.iter().filter(|p| p.severity == severity).count()
    }

    /// Returns the problems sorted by object, field, reason (then message and severity, so the
    /// order is total), without duplicates. A problem about a shared object, such as an
    /// EndpointSlice with an unsupported address type, is found once per backend that reads it.
    pub(crate) fn into_sorted(self) -> Vec<Problem> {
        let mut list = self.list;
        list.sort();
        list.dedup();
        list
    }
}
