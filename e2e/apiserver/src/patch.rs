//! PATCH bodies: JSON patch (RFC 6902), merge patch (RFC 7386), strategic merge patch
//! with the merge keys of built-in kinds, and server-side apply read as a merge patch.

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
            let patch: Value = serde_json::from_slice(body).map_err(|error| {
                ApiError::BadRequest(format!("invalid strategic merge patch: {error}"))
            })?;
            strategic_merge(&mut patched, &patch);
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

/// Returns the patch merge key of a list field, for the lists of built-in kinds that the
/// Kubernetes API merges by key. Other lists are atomic: a patch replaces them.
///
/// NOTE: the key is looked up by field name alone, not by the field's place in the
/// schema. That matches the built-in kinds this server serves, but a field of the same
/// name with another key elsewhere would merge wrongly.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "conditions" => Some("type"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "ownerReferences" => Some("uid"),
        // Container ports merge by containerPort, Service ports by port.
        "ports" if items.iter().any(|item| item.get("containerPort").is_some()) => {
            Some("containerPort")
        }
        "ports" if items.iter().any(|item| item.get("port").is_some()) => Some("port"),
        _ => None,
    }
}

/// Lists of strings that merge as sets.
const MERGED_PRIMITIVE_LISTS: &[&str] = &["finalizers"];

/// Applies a strategic merge patch: a merge patch whose keyed lists merge element by
/// element, with the `$patch`, `$retainKeys`, `$setElementOrder` and
/// `$deleteFromPrimitiveList` directives.
fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = without_directives(patch);
        return;
    };
    if fields.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = without_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    let object = target
        .as_object_mut()
        .expect("target was just made an object");

    for (key, value) in fields {
        if key.starts_with('$') {
            continue;
        }
        match value {
            Value::Null => {
                object.remove(key);
            }
            Value::Object(inner) => {
                if inner.get("$patch").and_then(Value::as_str) == Some("delete") {
                    object.remove(key);
                    continue;
                }
                strategic_merge(object.entry(key.clone()).or_insert(Value::Null), value);
            }
            Value::Array(items) => {
                let merged = merge_list(key, object.get(key), items);
                object.insert(key.clone(), merged);
            }
            _ => {
                object.insert(key.clone(), value.clone());
            }
        }
    }

    for (key, value) in fields {
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/")
            && let Some(Value::Array(list)) = object.get_mut(field)
        {
            let removed = value.as_array().map(Vec::as_slice).unwrap_or_default();
            list.retain(|item| !removed.contains(item));
        }
        if let Some(field) = key.strip_prefix("$setElementOrder/")
            && let (Some(Value::Array(list)), Some(order)) =
                (object.get_mut(field), value.as_array())
        {
            sort_by_order(field, list, order);
        }
    }
    if let Some(retained) = fields.get("$retainKeys").and_then(Value::as_array) {
        object.retain(|key, _| retained.iter().any(|kept| kept == key));
    }
}

/// Merges a patch list into a stored list: by merge key, as a set, or by replacing it.
fn merge_list(field: &str, stored: Option<&Value>, items: &[Value]) -> Value {
    let replace = items
        .iter()
        .any(|item| item.get("$patch").and_then(Value::as_str) == Some("replace"));
    let stored_items = stored.and_then(Value::as_array);
    let Some(stored_items) = stored_items.filter(|_| !replace) else {
        return without_directives(&Value::Array(
            items
                .iter()
                .filter(|item| item.get("$patch").is_none())
                .cloned()
                .collect(),
        ));
    };

    if MERGED_PRIMITIVE_LISTS.contains(&field) {
        let mut merged = stored_items.clone();
        for item in items {
            if !merged.contains(item) {
                merged.push(item.clone());
            }
        }
        return Value::Array(merged);
    }

    let Some(key) = merge_key(field, items) else {
        return without_directives(&Value::Array(items.to_vec()));
    };
    let mut merged = stored_items.clone();
    for item in items {
        let position = merged
            .iter()
            .position(|existing| existing.get(key) == item.get(key));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(index), true) => {
                merged.remove(index);
            }
            (None, true) => {}
            (Some(index), false) => strategic_merge(&mut merged[index], item),
            (None, false) => merged.push(without_directives(item)),
        }
    }
    Value::Array(merged)
}

/// Orders a keyed list as `$setElementOrder` lists it. Elements it leaves out go last.
fn sort_by_order(field: &str, list: &mut [Value], order: &[Value]) {
    let Some(key) = merge_key(field, order) else {
        return;
    };
    let rank = |item: &Value| {
        order
            .iter()
            .position(|entry| entry.get(key) == item.get(key))
            .unwrap_or(order.len())
    };
    list.sort_by_key(rank);
}

/// Returns a copy of `value` without strategic merge patch directives, the keys that
/// start with `$`.
fn without_directives(value: &Value) -> Value {
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .filter(|(key, _)| !key.starts_with('$'))
                .map(|(key, value)| (key.clone(), without_directives(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_directives).collect()),
        other => other.clone(),
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
    fn strategic_merge_by_key_and_directives() {
        let cases = [
            (
                "keyed element merges",
                r#"{"spec": {"ports": [{"port": 443, "name": "https"}]}}"#,
                json!([{"port": 80}, {"port": 443, "name": "https"}]),
            ),
            (
                "new keyed element is appended",
                r#"{"spec": {"ports": [{"port": 8080}]}}"#,
                json!([{"port": 80}, {"port": 443}, {"port": 8080}]),
            ),
            (
                "delete directive removes element",
                r#"{"spec": {"ports": [{"$patch": "delete", "port": 80}]}}"#,
                json!([{"port": 443}]),
            ),
            (
                "replace directive replaces list",
                r#"{"spec": {"ports": [{"$patch": "replace"}, {"port": 9090}]}}"#,
                json!([{"port": 9090}]),
            ),
            (
                "element order directive sorts",
                r#"{"spec": {"$setElementOrder/ports": [{"port": 443}, {"port": 80}]}}"#,
                json!([{"port": 443}, {"port": 80}]),
            ),
            (
                "kubectl apply port change",
                r#"{"spec": {"$setElementOrder/ports": [{"port": 82}, {"port": 443}],
                    "ports": [{"port": 82}, {"$patch": "delete", "port": 80}]}}"#,
                json!([{"port": 82}, {"port": 443}]),
            ),
        ];
        for (case, body, expected) in cases {
            let patched = apply(PatchType::StrategicMerge, &service(), body.as_bytes()).unwrap();
            assert_eq!(patched["spec"]["ports"], expected, "{case}");
        }
    }

    #[test]
    fn strategic_merge_atomic_lists_and_finalizers() {
        let ingress = json!({"metadata": {"finalizers": ["a"]},
                             "spec": {"rules": [{"host": "a.example.com"}, {"host": "b.example.com"}]}});
        let body = br#"{"metadata": {"finalizers": ["b"]}, "spec": {"rules": [{"host": "c.example.com"}]}}"#;
        let patched = apply(PatchType::StrategicMerge, &ingress, body).unwrap();
        assert_eq!(patched["spec"]["rules"], json!([{"host": "c.example.com"}]));
        assert_eq!(patched["metadata"]["finalizers"], json!(["a", "b"]));

        let body = br#"{"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}"#;
        let patched = apply(PatchType::StrategicMerge, &patched, body).unwrap();
        assert_eq!(patched["metadata"]["finalizers"], json!(["b"]));

        let body = br#"{"spec": {"$retainKeys": ["rules"], "rules": null, "defaultBackend": {"service": {"name": "web"}}}}"#;
        let patched = apply(PatchType::StrategicMerge, &ingress, body).unwrap();
        assert_eq!(patched["spec"], json!({}));
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
