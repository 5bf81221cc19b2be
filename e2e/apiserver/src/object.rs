//! Helpers that read and write `metadata` on untyped JSON objects.

use serde_json::{Map, Value};

/// Returns `metadata.name`, or an empty string when it is missing.
pub fn name(object: &Value) -> &str {
    metadata_str(object, "name")
}

/// Returns `metadata.namespace`, or an empty string when it is missing.
pub fn namespace(object: &Value) -> &str {
    metadata_str(object, "namespace")
}

/// Returns `metadata.resourceVersion`, or an empty string when it is missing.
pub fn resource_version(object: &Value) -> &str {
    metadata_str(object, "resourceVersion")
}

/// Returns the string field `key` of `metadata`, or an empty string.
pub fn metadata_str<'a>(object: &'a Value, key: &str) -> &'a str {
    object
        .get("metadata")
        .and_then(|metadata| metadata.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Returns `metadata` as a mutable map, replacing a missing or non-object value with an
/// empty map. `object` must be a JSON object.
pub fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = Value::Object(Map::new());
    }
    object["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

/// Returns the labels of `object`, skipping any that are not strings.
pub fn labels(object: &Value) -> impl Iterator<Item = (&str, &str)> {
    object
        .get("metadata")
        .and_then(|metadata| metadata.get("labels"))
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|labels| labels.iter())
        .filter_map(|(key, value)| Some((key.as_str(), value.as_str()?)))
}

/// Returns the value at a dotted path such as `spec.nodeName`, as a field selector reads it.
pub fn field_value(object: &Value, path: &str) -> Option<String> {
    let mut current = object;
    for segment in path.split('.') {
        current = current.get(segment)?;
    }
    match current {
        Value::String(text) => Some(text.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Returns the current time as an RFC 3339 timestamp in whole seconds, as Kubernetes
/// writes `creationTimestamp`.
pub fn now_timestamp() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .expect("rounding a timestamp to seconds cannot overflow")
        .to_string()
}

/// Returns five random characters from the alphabet Kubernetes uses for `generateName`.
pub fn random_name_suffix() -> String {
    // The real server leaves out vowels and the digits 0, 1 and 3, so generated names
    // cannot spell words or be mistaken for other characters.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes()[..5]
        .iter()
        .map(|byte| char::from(ALPHABET[usize::from(*byte) % ALPHABET.len()]))
        .collect()
}

/// Returns `object` without `metadata` and `status`, the part whose change bumps
/// `metadata.generation`.
pub fn spec_part(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(fields) = copy.as_object_mut() {
        fields.remove("metadata");
        fields.remove("status");
    }
    copy
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_value_reads_nested_paths() {
        let pod = json!({"spec": {"nodeName": "node-a", "priority": 5}});
        assert_eq!(
            field_value(&pod, "spec.nodeName").as_deref(),
            Some("node-a")
        );
        assert_eq!(field_value(&pod, "spec.priority").as_deref(), Some("5"));
        assert_eq!(field_value(&pod, "status.phase"), None);
    }

    #[test]
    fn random_suffix_has_five_characters() {
        let suffix = random_name_suffix();
        assert_eq!(suffix.len(), 5);
        assert!(suffix.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn timestamp_has_whole_seconds() {
        let timestamp = now_timestamp();
        assert!(timestamp.ends_with('Z'), "{timestamp}");
        assert!(!timestamp.contains('.'), "{timestamp}");
    }
}
