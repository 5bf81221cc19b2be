//! The compiler's report on its input: problems found in objects, and the Ingresses Gangway
//! owns. The controller turns it into Kubernetes Events and Ingress status; `gangway check`
//! prints it.

use serde::Serialize;

use crate::store::{ObjectKey, ObjectRef};

/// Severity of a problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The object is valid, but something it points to is not ready (for example a Service
    /// with no ready endpoint). `gangway check` still exits 0.
    Warning,
    /// The object, or part of it, is invalid and was not applied as written.
    Error,
}

/// One problem found in one object. The rest of the configuration is compiled as usual.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Problem {
    /// The object the problem is about. For a file that failed to parse, kind is `File` and the
    /// name is the path.
    pub object: ObjectRef,
    /// JSON path of the offending field, such as `spec.rules[0].http.paths[1].backend.service.port.name`.
    /// Empty when the problem is about the whole object.
    pub field: String,
    /// Machine-readable reason in UpperCamelCase, used as the Kubernetes Event reason.
    pub reason: String,
    /// Sentence for humans that names the value and what to do.
    pub message: String,
    /// Error or warning.
    pub severity: Severity,
}

impl Problem {
    /// Builds an error about `field` of `object`.
    pub fn error(
        object: ObjectRef,
        field: impl Into<String>,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            object,
            field: field.into(),
            reason: reason.into(),
            message: message.into(),
            severity: Severity::Error,
        }
    }

    /// Builds a warning about `field` of `object`.
    pub fn warning(
        object: ObjectRef,
        field: impl Into<String>,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(object, field, reason, message)
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let severity = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        if self.field.is_empty() {
            write!(
                f,
                "{severity}: {}: {}: {}",
                self.object, self.reason, self.message
            )
        } else {
            write!(
                f,
                "{severity}: {} {}: {}: {}",
                self.object, self.field, self.reason, self.message
            )
        }
    }
}

/// Report of one compile: problems sorted by object, then field, then reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    /// Problems in the input, each naming its object and field.
    pub problems: Vec<Problem>,
    /// Ingresses that belong to Gangway's class, so their status should carry our address.
    /// Every other Ingress must not.
    pub owned_ingresses: Vec<ObjectKey>,
}

impl StatusReport {
    /// Returns true when at least one problem is an error.
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(|p| p.severity == Severity::Error)
    }

    /// Counts problems of one severity.
    pub fn count(&self, severity: Severity) -> usize {
        self.problems
            .iter()
            .filter(|p| p.severity == severity)
            .count()
    }
}
