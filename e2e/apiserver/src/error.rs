//! API errors and their `metav1.Status` bodies, worded like the real API server's.

use http::StatusCode;
use serde_json::{Value, json};

/// Names an object in an error: the resource (plural, with its group) and the object name.
#[derive(Debug, Clone)]
pub struct ObjectRef {
    /// API group, empty for the core group.
    pub group: String,
    /// Plural resource name, such as `ingresses`.
    pub resource: String,
    /// Object name.
    pub name: String,
}

impl ObjectRef {
    /// Formats `resource.group "name"` the way Kubernetes messages name an object.
    fn describe(&self) -> String {
        if self.group.is_empty() {
            format!("{} {:?}", self.resource, self.name)
        } else {
            format!("{}.{} {:?}", self.resource, self.group, self.name)
        }
    }

    fn details(&self) -> Value {
        json!({"name": self.name, "group": self.group, "kind": self.resource})
    }
}

/// A failed API request. Each variant maps to one HTTP status code and one `Status` reason.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The object does not exist.
    #[error("{} not found", .0.describe())]
    NotFound(ObjectRef),

    /// A create named an object that already exists.
    #[error("{} already exists", .0.describe())]
    AlreadyExists(ObjectRef),

    /// A write carried a stale `metadata.resourceVersion` or a failed precondition.
    #[error("Operation cannot be fulfilled on {}: {message}", .object.describe())]
    Conflict {
        /// The object written.
        object: ObjectRef,
        /// Why the write conflicts.
        message: String,
    },

    /// The object failed validation. `field` is the JSON path of the bad value.
    #[error("{kind}{} {name:?} is invalid: {field}: {message}", group_suffix(.group))]
    Invalid {
        /// API group of the kind.
        group: String,
        /// Kind of the object.
        kind: String,
        /// Object name, possibly empty.
        name: String,
        /// Path of the invalid field, such as `metadata.name`.
        field: String,
        /// What is wrong with the field.
        message: String,
    },

    /// The request itself is malformed: a bad selector, body or parameter.
    #[error("{0}")]
    BadRequest(String),

    /// A patch could not be applied to the stored object.
    #[error("failed to apply patch: {0}")]
    PatchFailed(String),

    /// The requested resourceVersion or continue token is older than the kept history.
    #[error("{0}")]
    Expired(String),

    /// An exact list asked for a resourceVersion the server has not reached.
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLargeResourceVersion {
        /// The requested resourceVersion.
        requested: u64,
        /// The latest resourceVersion of the store.
        current: u64,
    },

    /// The request carried no valid bearer token.
    #[error("Unauthorized")]
    Unauthorized,

    /// No route matches the path.
    #[error("the server could not find the requested resource")]
    PathNotFound,

    /// The path exists but does not take this HTTP method.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,

    /// The body's media type is not one this server decodes.
    #[error("the body of the request was in an unknown format - accepted media types include: {0}")]
    UnsupportedMediaType(String),

    /// The body is larger than the request size limit.
    #[error("the request body is larger than the limit of {0} bytes")]
    RequestEntityTooLarge(usize),

    /// A failure injected through the fault handle.
    #[error("injected failure with status {code}")]
    Injected {
        /// HTTP status code to return.
        code: StatusCode,
        /// Value of the `Retry-After` header and of `details.retryAfterSeconds`.
        retry_after_seconds: Option<u64>,
    },
}

fn group_suffix(group: &str) -> String {
    if group.is_empty() {
        String::new()
    } else {
        format!(".{group}")
    }
}

impl ApiError {
    /// HTTP status code of the response.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) | ApiError::PathNotFound => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists(_) | ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Invalid { .. } | ApiError::PatchFailed(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Expired(_) => StatusCode::GONE,
            ApiError::TooLargeResourceVersion { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RequestEntityTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Injected { code, .. } => *code,
        }
    }

    /// `Retry-After` header value, if the response carries one.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        match self {
            ApiError::Injected {
                retry_after_seconds,
                ..
            } => *retry_after_seconds,
            ApiError::TooLargeResourceVersion { .. } => Some(1),
            _ => None,
        }
    }

    /// Builds the `metav1.Status` body.
    pub fn to_status(&self) -> Value {
        let code = self.status_code();
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": reason_for(self, code),
            "code": code.as_u16(),
        });
        let details = match self {
            ApiError::NotFound(object)
            | ApiError::AlreadyExists(object)
            | ApiError::Conflict { object, .. } => Some(object.details()),
            ApiError::Invalid {
                group,
                kind,
                name,
                field,
                message,
            } => Some(json!({
                "name": name,
                "group": group,
                "kind": kind,
                "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}],
            })),
            ApiError::TooLargeResourceVersion { .. } => Some(json!({
                "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                "retryAfterSeconds": 1,
            })),
            ApiError::Injected {
                retry_after_seconds: Some(seconds),
                ..
            } => Some(json!({"retryAfterSeconds": seconds})),
            _ => None,
        };
        if let Some(details) = details {
            status["details"] = details;
        }
        status
    }
}

/// Maps an error to the `Status.reason` the real server uses for it.
fn reason_for(error: &ApiError, code: StatusCode) -> &'static str {
    match error {
        ApiError::Expired(_) => "Expired",
        ApiError::AlreadyExists(_) => "AlreadyExists",
        ApiError::Conflict { .. } => "Conflict",
        ApiError::PathNotFound | ApiError::NotFound(_) => "NotFound",
        _ => reason_for_code(code),
    }
}

/// Returns the `Status.reason` that Kubernetes pairs with an HTTP status code.
pub fn reason_for_code(code: StatusCode) -> &'static str {
    match code.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Gone",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_names_group_and_resource() {
        let error = ApiError::NotFound(ObjectRef {
            group: "networking.k8s.io".into(),
            resource: "ingresses".into(),
            name: "web".into(),
        });
        let status = error.to_status();
        assert_eq!(
            status["message"],
            "ingresses.networking.k8s.io \"web\" not found"
        );
        assert_eq!(status["reason"], "NotFound");
        assert_eq!(status["code"], 404);
        assert_eq!(status["details"]["kind"], "ingresses");
    }

    #[test]
    fn injected_rate_limit_carries_retry_after() {
        let error = ApiError::Injected {
            code: StatusCode::TOO_MANY_REQUESTS,
            retry_after_seconds: Some(3),
        };
        let status = error.to_status();
        assert_eq!(status["reason"], "TooManyRequests");
        assert_eq!(status["details"]["retryAfterSeconds"], 3);
        assert_eq!(error.retry_after_seconds(), Some(3));
    }

    #[test]
    fn invalid_names_kind_and_field() {
        let error = ApiError::Invalid {
            group: String::new(),
            kind: "Service".into(),
            name: String::new(),
            field: "metadata.name".into(),
            message: "Required value: name or generateName is required".into(),
        };
        assert_eq!(
            error.to_string(),
            "Service \"\" is invalid: metadata.name: Required value: name or generateName is required"
        );
        assert_eq!(error.to_status()["code"], 422);
    }
}
