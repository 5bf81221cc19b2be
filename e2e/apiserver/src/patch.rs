//! PATCH bodies: JSON patch (RFC 6902), merge patch (RFC 7386), strategic merge patch
//! read as a merge patch, and server-side apply read as a merge patch.

use serde_json::Value;

use crate::error::ApiError;

/// The patch formats, named by their request media types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`.
    Json,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
    /// `application/apply-patch+yaml`.
    Apply,
}

/// Media types accepted on PATCH, for the 415 message.
const ACCEPTED: &str = "application/json-patch+json, application/merge-patch+json, \
                        application/strategic-merge-patch+json, application/apply-patch+yaml";

impl PatchType {
    /// Reads the patch format from a `Content-Type` header, ignoring parameters.
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        match media_type {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::StrategicMerge),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchType::Apply),
            _ => Err(ApiError::UnsupportedMediaType(ACCEPTED.into())),
        }
    }
}

/// Applies a patch body to `existing` and returns the patched object.
pub fn apply(patch_type: PatchType, existing: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let mut patched = existing.clone();
    match patch_type {
        PatchType::Json => {
            let operations: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|error| ApiError::BadRequest(format!("invalid JSON patch: {error}")))?;
            json_patch::patch(&mut patched, &operations)
                .map_err(|error| ApiError::PatchFailed(error.to_string()))?;
        }
        PatchType::Merge => {
            let patch: Value = serde_json::from_slice(body)
                .map_err(|error| ApiError::BadRequest(format!("invalid merge patch: {error}")))?;
            json_patch::merge(&mut patched, &patch);
        }
        PatchType::StrategicMerge => {
            // NOTE: a strategic merge patch is applied as a merge patch, so a list in the
            // patch replaces the stored list instead of being merged by its patch merge
            // key, and directives ($patch, $retainKeys, $setElementOrder/...) are dropped
            // unread.
            let mut patch: Value = serde_json::from_slice(body).map_err(|error| {
                ApiError::BadRequest(format!("invalid strategic merge patch: {error}"))
            })?;
            strip_directives(&mut patch);
            json_patch::merge(&mut patched, &patch);
        }
        PatchType::Apply => {
            // NOTE: server-side apply is applied as a merge patch without field
            // ownership: fields left out of the applied configuration are kept, and
            // managers never conflict.
            let applied = parse_apply_body(body)?;
            json_patch::merge(&mut patched, &applied);
        }
    }
    Ok(patched)
}

/// Parses an apply body, which is YAML or JSON (JSON being a subset of YAML).
pub fn parse_apply_body(body: &[u8]) -> Result<Value, ApiError> {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        return Ok(value);
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::BadRequest("the apply patch is not UTF-8 text".into()))?;
    serde_saphyr::from_str::<Value>(text)
        .map_err(|error| ApiError::BadRequest(format!("invalid apply patch YAML: {error}")))
}

/// Removes strategic merge patch directives, the keys that start with `$`.
fn strip_directives(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            fields.retain(|key, _| !key.starts_with('$'));
            fields.values_mut().for_each(strip_directives);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service() -> Value {
        json!({"metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}},
               "spec": {"ports": [{"port": 80}, {"port": 443}]}})
    }

    #[test]
    fn merge_patch_removes_null_fields() {
        let body = br#"{"metadata": {"labels": {"tier": null, "zone": "a"}}}"#;
        let patched = apply(PatchType::Merge, &service(), body).unwrap();
        assert_eq!(
            patched["metadata"]["labels"],
            json!({"app": "web", "zone": "a"})
        );
    }

    #[test]
    fn json_patch_failed_test_is_unprocessable() {
        let body = br#"[{"op": "test", "path": "/metadata/name", "value": "db"}]"#;
        let error = apply(PatchType::Json, &service(), body).unwrap_err();
        assert_eq!(error.status_code(), 422);
        let body = br#"[{"op": "replace", "path": "/spec/ports/0/port", "value": 8080}]"#;
        let patched = apply(PatchType::Json, &service(), body).unwrap();
        assert_eq!(patched["spec"]["ports"][0]["port"], 8080);
    }

    #[test]
    fn strategic_merge_replaces_lists_and_drops_directives() {
        let body = br#"{"spec": {"ports": [{"port": 8080}], "$retainKeys": ["ports"]}}"#;
        let patched = apply(PatchType::StrategicMerge, &service(), body).unwrap();
        assert_eq!(patched["spec"], json!({"ports": [{"port": 8080}]}));
    }

    #[test]
    fn apply_reads_yaml() {
        let body = b"metadata:\n  labels:\n    zone: a\n";
        let patched = apply(PatchType::Apply, &service(), body).unwrap();
        assert_eq!(patched["metadata"]["labels"]["zone"], "a");
        assert_eq!(patched["metadata"]["labels"]["app"], "web");
    }

    #[test]
    fn unknown_media_type_is_rejected() {
        let error = PatchType::from_content_type("text/plain").unwrap_err();
        assert_eq!(error.status_code(), 415);
        assert_eq!(
            PatchType::from_content_type("application/merge-patch+json; charset=utf-8").unwrap(),
            PatchType::Merge
        );
    }
}
