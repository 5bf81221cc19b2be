//! The API verbs on the store: create, get, list, update, patch and delete, with the
//! metadata, status and concurrency rules of the real server.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{ApiError, ObjectRef};
use crate::object;
use crate::patch::{self, PatchType};
use crate::registry::{RESOURCES, ResourceType};
use crate::selector::Selectors;
use crate::store::{ObjectKey, Store, StoreError};

/// Storage of namespaces, checked before creating a namespaced object.
const NAMESPACES: (&str, &str) = ("", "namespaces");

/// The object a request addresses: a resource type, a namespace and a name.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Resource type from the path.
    pub resource: &'static ResourceType,
    /// Namespace from the path; `None` for cluster-scoped types and all-namespace lists.
    pub namespace: Option<&'a str>,
    /// Whether the request addresses the `/status` subresource.
    pub status: bool,
}

impl Target<'_> {
    fn key(&self, name: &str) -> ObjectKey {
        ObjectKey {
            namespace: self.namespace.unwrap_or("").to_string(),
            name: name.to_string(),
        }
    }

    fn object_ref(&self, name: &str) -> ObjectRef {
        ObjectRef {
            group: self.resource.group.to_string(),
            resource: self.resource.plural.to_string(),
            name: name.to_string(),
        }
    }

    fn invalid(&self, name: &str, field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            group: self.resource.group.to_string(),
            kind: self.resource.kind.to_string(),
            name: name.to_string(),
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Creates an object. With `dry_run`, validates and returns it without storing it.
pub fn create(
    store: &mut Store,
    target: Target,
    body: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let mut object = prepare_body(target, body)?;
    if !object::resource_version(&object).is_empty() {
        return Err(ApiError::BadRequest(
            "resourceVersion should not be set on objects to be created".into(),
        ));
    }

    let resource = target.resource;
    if let Some(namespace) = target.namespace {
        let namespace_key = ObjectKey {
            namespace: String::new(),
            name: namespace.to_string(),
        };
        if store.get(NAMESPACES, &namespace_key).is_none() {
            return Err(ApiError::NotFound(ObjectRef {
                group: String::new(),
                resource: "namespaces".into(),
                name: namespace.to_string(),
            }));
        }
    }

    let mut name = object::name(&object).to_string();
    if name.is_empty() {
        let prefix = object::metadata_str(&object, "generateName").to_string();
        if prefix.is_empty() {
            return Err(target.invalid(
                "",
                "metadata.name",
                "Required value: name or generateName is required",
            ));
        }
        // Five random characters from 27 make collisions rare; retrying a few times
        // turns a rare collision into a fresh name instead of an error.
        name = (0..8)
            .map(|_| format!("{prefix}{}", object::random_name_suffix()))
            .find(|candidate| {
                store
                    .get(resource.storage(), &target.key(candidate))
                    .is_none()
            })
            .ok_or_else(|| ApiError::AlreadyExists(target.object_ref(&prefix)))?;
        object::metadata_mut(&mut object).insert("name".into(), json!(name));
    }
    validate_name(target, &name)?;
    if store.get(resource.storage(), &target.key(&name)).is_some() {
        return Err(ApiError::AlreadyExists(target.object_ref(&name)));
    }

    let metadata = object::metadata_mut(&mut object);
    metadata.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    metadata.insert("creationTimestamp".into(), json!(object::now_timestamp()));
    metadata.insert("generation".into(), json!(1));
    for server_owned in [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
    ] {
        metadata.remove(server_owned);
    }
    if resource.status_subresource
        && let Some(fields) = object.as_object_mut()
    {
        // Types with a status subresource clear status on create; only the status
        // endpoint may set it, as in the real server.
        fields.remove("status");
    }
    if let Some(defaulter) = resource.defaulter {
        defaulter(&mut object, None, &mut store.defaults);
    }

    commit(store, target, object, dry_run)
}

/// Returns one object.
pub fn get(store: &Store, target: Target, name: &str) -> Result<Value, ApiError> {
    let stored = store
        .get(target.resource.storage(), &target.key(name))
        .ok_or_else(|| ApiError::NotFound(target.object_ref(name)))?;
    Ok(target.resource.from_storage(stored.clone()))
}

/// Query parameters of a list request.
#[derive(Debug, Default)]
pub struct ListParams {
    /// Label and field selectors.
    pub selectors: Selectors,
    /// `limit`: page size, 0 for no limit.
    pub limit: usize,
    /// `continue`: the token from the previous page.
    pub continue_token: Option<String>,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`.
    pub resource_version_match: Option<String>,
}

/// One page of a list.
#[derive(Debug)]
pub struct ListPage {
    /// Objects of the page, converted to the requested type.
    pub items: Vec<Value>,
    /// resourceVersion the page was read at.
    pub revision: u64,
    /// Token for the next page, if there is one.
    pub continue_token: Option<String>,
    /// Number of objects after this page, given when no selector was used.
    pub remaining: Option<usize>,
}

impl ListPage {
    /// Builds the `metadata` of a list or table response.
    pub fn list_metadata(&self) -> Value {
        let mut metadata = json!({"resourceVersion": self.revision.to_string()});
        if let Some(token) = &self.continue_token {
            metadata["continue"] = json!(token);
        }
        if let Some(remaining) = self.remaining {
            metadata["remainingItemCount"] = json!(remaining);
        }
        metadata
    }

    /// Builds the `<Kind>List` response body.
    pub fn to_list(&self, resource: &ResourceType) -> Value {
        json!({
            "kind": format!("{}List", resource.kind),
            "apiVersion": resource.api_version(),
            "metadata": self.list_metadata(),
            "items": self.items,
        })
    }
}

/// Position of a paged list: the resourceVersion it reads at and the last key returned.
#[derive(Debug, Serialize, Deserialize)]
struct ContinueToken {
    #[serde(rename = "rv")]
    revision: u64,
    namespace: String,
    name: String,
}

impl ContinueToken {
    fn encode(&self) -> String {
        let bytes = serde_json::to_vec(self).expect("a continue token always serializes");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn decode(token: &str) -> Result<Self, ApiError> {
        let invalid = || ApiError::BadRequest(format!("continue key is not valid: {token:?}"));
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| invalid())?;
        serde_json::from_slice(&bytes).map_err(|_| invalid())
    }
}

/// Lists objects with the resourceVersion semantics of the real server.
///
/// - unset: the latest state.
/// - `0`: any state. Here that is the latest one, served without paging as the real
///   watch cache serves it.
/// - `N` with `NotOlderThan` (the default): a state at least as new as `N`.
/// - `N` with `Exact`: the state at exactly `N`.
pub fn list(store: &Store, target: Target, params: &ListParams) -> Result<ListPage, ApiError> {
    let storage = target.resource.storage();
    let requested = params
        .resource_version
        .as_deref()
        .filter(|rv| !rv.is_empty());
    let mut limit = params.limit;

    let (revision, start_after, objects) = if let Some(token) = &params.continue_token {
        if requested.is_some_and(|rv| rv != "0") {
            return Err(ApiError::BadRequest(
                "specifying resource version is not allowed when using continue".into(),
            ));
        }
        let token = ContinueToken::decode(token)?;
        let objects = store
            .list_at(storage, target.namespace, token.revision)
            .map_err(|error| match error {
                StoreError::Expired { .. } => ApiError::Expired(
                    "The provided continue parameter is too old to display a consistent list result. \
                     You can start a new list without the continue parameter."
                        .into(),
                ),
                StoreError::TooLarge { .. } => ApiError::BadRequest(format!(
                    "continue key is not valid: resourceVersion {} is in the future",
                    token.revision
                )),
            })?;
        let start = ObjectKey {
            namespace: token.namespace,
            name: token.name,
        };
        (token.revision, Some(start), objects)
    } else {
        match (requested, params.resource_version_match.as_deref()) {
            (None, Some(version_match)) if !version_match.is_empty() => {
                return Err(ApiError::BadRequest(
                    "resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
                ));
            }
            (None, _) => (
                store.revision(),
                None,
                store.list(storage, target.namespace),
            ),
            (Some("0"), Some("Exact")) => {
                return Err(ApiError::BadRequest(
                    "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"".into(),
                ));
            }
            (Some("0"), _) => {
                limit = 0;
                (
                    store.revision(),
                    None,
                    store.list(storage, target.namespace),
                )
            }
            (Some(text), version_match) => {
                let wanted = parse_revision(text)?;
                match version_match.unwrap_or("NotOlderThan") {
                    "Exact" => {
                        let objects = store
                            .list_at(storage, target.namespace, wanted)
                            .map_err(store_error)?;
                        (wanted, None, objects)
                    }
                    "NotOlderThan" | "" => {
                        if wanted > store.revision() {
                            return Err(store_error(StoreError::TooLarge {
                                requested: wanted,
                                current: store.revision(),
                            }));
                        }
                        (
                            store.revision(),
                            None,
                            store.list(storage, target.namespace),
                        )
                    }
                    other => {
                        return Err(ApiError::BadRequest(format!(
                            "unsupported resourceVersionMatch {other:?}: expected Exact or NotOlderThan"
                        )));
                    }
                }
            }
        }
    };

    let mut matching = objects
        .into_iter()
        .filter(|object| {
            start_after
                .as_ref()
                .is_none_or(|start| ObjectKey::of(object) > *start)
        })
        .map(|object| target.resource.from_storage(object))
        .filter(|object| params.selectors.matches(object));

    let items: Vec<Value> = if limit > 0 {
        matching.by_ref().take(limit).collect()
    } else {
        matching.by_ref().collect()
    };
    let rest = matching.count();
    let (continue_token, remaining) = if rest > 0 {
        let last = ObjectKey::of(items.last().expect("a full page is not empty"));
        let token = ContinueToken {
            revision,
            namespace: last.namespace,
            name: last.name,
        };
        let unfiltered = params.selectors.labels == Default::default()
            && params.selectors.fields == Default::default();
        (Some(token.encode()), unfiltered.then_some(rest))
    } else {
        (None, None)
    };
    Ok(ListPage {
        items,
        revision,
        continue_token,
        remaining,
    })
}

/// Parses a resourceVersion parameter.
pub fn parse_revision(text: &str) -> Result<u64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::BadRequest(format!("invalid resource version: {text:?}")))
}

/// Maps a store read failure to the API error the real server returns.
pub fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::Expired { .. } => ApiError::Expired(error.to_string()),
        StoreError::TooLarge { requested, current } => {
            ApiError::TooLargeResourceVersion { requested, current }
        }
    }
}

/// Replaces an object (PUT). A stale `metadata.resourceVersion` gives 409 Conflict; an
/// empty one updates unconditionally, as most built-in types allow.
pub fn update(
    store: &mut Store,
    target: Target,
    name: &str,
    body: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let existing = get(store, target, name)?;
    let object = prepare_body(target, body)?;
    let sent_version = object::resource_version(&object);
    if !sent_version.is_empty() && sent_version != object::resource_version(&existing) {
        return Err(conflict(target, name));
    }
    write_update(store, target, name, existing, object, dry_run)
}

/// Patches an object. An apply patch creates the object when it does not exist.
pub fn patch(
    store: &mut Store,
    target: Target,
    name: &str,
    patch_type: PatchType,
    body: &[u8],
    dry_run: bool,
) -> Result<Value, ApiError> {
    let existing = match get(store, target, name) {
        Ok(existing) => existing,
        Err(ApiError::NotFound(_)) if patch_type == PatchType::Apply && !target.status => {
            let mut applied = patch::parse_apply_body(body)?;
            if object::name(&applied).is_empty() {
                object::metadata_mut(&mut applied).insert("name".into(), json!(name));
            }
            return create(store, target, applied, dry_run);
        }
        Err(error) => return Err(error),
    };
    let patched = patch::apply(patch_type, &existing, body)?;
    let sent_version = object::resource_version(&patched);
    if !sent_version.is_empty() && sent_version != object::resource_version(&existing) {
        return Err(conflict(target, name));
    }
    let patched = prepare_body(target, patched)?;
    write_update(store, target, name, existing, patched, dry_run)
}

/// Shared tail of update and patch: keeps server-owned metadata, applies the status
/// subresource rule, bumps the generation and finishes a pending deletion.
fn write_update(
    store: &mut Store,
    target: Target,
    name: &str,
    existing: Value,
    mut object: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    if object::name(&object) != name {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            object::name(&object)
        )));
    }
    let resource = target.resource;
    if target.status {
        // A status write changes only .status; everything else stays as stored.
        let status = object.get("status").cloned();
        object = existing.clone();
        match status {
            Some(status) => object["status"] = status,
            None => {
                if let Some(fields) = object.as_object_mut() {
                    fields.remove("status");
                }
            }
        }
    } else if resource.status_subresource {
        match existing.get("status") {
            Some(status) => object["status"] = status.clone(),
            None => {
                if let Some(fields) = object.as_object_mut() {
                    fields.remove("status");
                }
            }
        }
    }

    if !target.status
        && let Some(defaulter) = resource.defaulter
    {
        defaulter(&mut object, Some(&existing), &mut store.defaults);
    }

    let old_metadata = existing["metadata"].clone();
    let generation = old_metadata["generation"].as_i64().unwrap_or(1);
    let generation = if object::spec_part(&object) != object::spec_part(&existing) {
        generation + 1
    } else {
        generation
    };
    let metadata = object::metadata_mut(&mut object);
    for server_owned in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match old_metadata.get(server_owned) {
            Some(value) => metadata.insert(server_owned.into(), value.clone()),
            None => metadata.remove(server_owned),
        };
    }
    metadata.insert("generation".into(), json!(generation));
    metadata.insert(
        "resourceVersion".into(),
        old_metadata["resourceVersion"].clone(),
    );
    metadata.remove("managedFields");

    if object == existing {
        // The real server skips writes that change nothing: no new resourceVersion and
        // no watch event.
        return Ok(existing);
    }

    let deleting = !object::metadata_str(&object, "deletionTimestamp").is_empty();
    let has_finalizers = object["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|finalizers| !finalizers.is_empty());
    if deleting && !has_finalizers {
        if dry_run {
            return Ok(object);
        }
        let deleted = store
            .delete(resource.storage(), &target.key(name))
            .expect("the object was read under the same lock");
        return Ok(resource.from_storage(deleted));
    }
    commit(store, target, object, dry_run)
}

fn commit(
    store: &mut Store,
    target: Target,
    object: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    if dry_run {
        return Ok(object);
    }
    let resource = target.resource;
    let stored = store.put(resource.storage(), resource.to_storage(object));
    Ok(resource.from_storage(stored))
}

fn conflict(target: Target, name: &str) -> ApiError {
    ApiError::Conflict {
        object: target.object_ref(name),
        message: "the object has been modified; please apply your changes to the latest version and try again".into(),
    }
}

/// Checks a request body against the path and fills in apiVersion, kind and namespace.
fn prepare_body(target: Target, mut object: Value) -> Result<Value, ApiError> {
    let resource = target.resource;
    if !object.is_object() {
        return Err(ApiError::BadRequest(
            "the request body must be a JSON object".into(),
        ));
    }
    let expected_version = resource.api_version();
    match object.get("apiVersion").and_then(Value::as_str) {
        Some(version) if version != expected_version => {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({version}) does not match the expected API version ({expected_version})"
            )));
        }
        _ => object["apiVersion"] = json!(expected_version),
    }
    match object.get("kind").and_then(Value::as_str) {
        Some(kind) if kind != resource.kind => {
            return Err(ApiError::BadRequest(format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                resource.kind
            )));
        }
        _ => object["kind"] = json!(resource.kind),
    }
    let body_namespace = object::namespace(&object).to_string();
    let metadata = object::metadata_mut(&mut object);
    match target.namespace {
        Some(namespace) => {
            if !body_namespace.is_empty() && body_namespace != namespace {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
            metadata.insert("namespace".into(), json!(namespace));
        }
        None => {
            metadata.remove("namespace");
        }
    }
    Ok(object)
}

/// Validates an object name: a DNS subdomain for most types, any path segment for RBAC
/// types, whose names such as `system:controller` may contain colons.
fn validate_name(target: Target, name: &str) -> Result<(), ApiError> {
    let invalid = |message: &str| {
        target.invalid(
            name,
            "metadata.name",
            format!("Invalid value: {name:?}: {message}"),
        )
    };
    if name == "." || name == ".." || name.contains('/') || name.contains('%') {
        return Err(invalid(
            "may not be '.' or '..' and may not contain '/' or '%'",
        ));
    }
    if target.resource.group == "rbac.authorization.k8s.io" {
        return Ok(());
    }
    let valid_subdomain = name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && label.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
    if !valid_subdomain {
        return Err(invalid(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', \
             and must start and end with an alphanumeric character",
        ));
    }
    Ok(())
}

/// Deletes an object, honouring `DeleteOptions.preconditions` and finalizers.
///
/// Returns the object when finalizers keep it (with `deletionTimestamp` set) and a
/// success `Status` when it is gone, as the real server does for most types.
pub fn delete(
    store: &mut Store,
    target: Target,
    name: &str,
    options: &Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let existing = get(store, target, name)?;
    let preconditions = &options["preconditions"];
    for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
        if let Some(expected) = preconditions[field].as_str() {
            let actual = object::metadata_str(&existing, field);
            if expected != actual {
                return Err(ApiError::Conflict {
                    object: target.object_ref(name),
                    message: format!(
                        "Precondition failed: {label} in precondition: {expected}, {label} in object meta: {actual}"
                    ),
                });
            }
        }
    }
    if dry_run {
        return Ok(deleted_status(target, name, &existing));
    }

    let has_finalizers = existing["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|finalizers| !finalizers.is_empty());
    if has_finalizers {
        if !object::metadata_str(&existing, "deletionTimestamp").is_empty() {
            return Ok(existing);
        }
        let mut pending = existing;
        let metadata = object::metadata_mut(&mut pending);
        metadata.insert("deletionTimestamp".into(), json!(object::now_timestamp()));
        metadata.insert("deletionGracePeriodSeconds".into(), json!(0));
        let resource = target.resource;
        let stored = store.put(resource.storage(), resource.to_storage(pending));
        return Ok(resource.from_storage(stored));
    }

    if target.resource.storage() == NAMESPACES {
        delete_namespace_contents(store, name);
    }
    store.delete(target.resource.storage(), &target.key(name));
    Ok(deleted_status(target, name, &existing))
}

/// Deletes every object in a namespace.
///
/// NOTE: the real server marks the namespace Terminating, and a controller empties it
/// over time. Here its contents go at once, finalizers included, before the namespace.
fn delete_namespace_contents(store: &mut Store, namespace: &str) {
    let mut storages: Vec<_> = RESOURCES
        .iter()
        .filter(|resource| resource.namespaced && resource.view.is_none())
        .map(|resource| resource.storage())
        .collect();
    storages.dedup();
    for storage in storages {
        for object in store.list(storage, Some(namespace)) {
            store.delete(storage, &ObjectKey::of(&object));
        }
    }
}

fn deleted_status(target: Target, name: &str, existing: &Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": name,
            "group": target.resource.group,
            "kind": target.resource.plural,
            "uid": object::metadata_str(existing, "uid"),
        },
    })
}

/// Deletes every object that matches the selectors and returns them as a list.
pub fn delete_collection(
    store: &mut Store,
    target: Target,
    selectors: &Selectors,
    options: &Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let params = ListParams {
        selectors: selectors.clone(),
        ..ListParams::default()
    };
    let page = list(store, target, &params)?;
    let mut deleted = Vec::with_capacity(page.items.len());
    for item in &page.items {
        let key = ObjectKey::of(item);
        let item_target = Target {
            namespace: target
                .namespace
                .or(Some(key.namespace.as_str()))
                .filter(|_| target.resource.namespaced),
            ..target
        };
        delete(store, item_target, &key.name, options, dry_run)?;
        deleted.push(item.clone());
    }
    Ok(json!({
        "kind": format!("{}List", target.resource.kind),
        "apiVersion": target.resource.api_version(),
        "metadata": {"resourceVersion": store.revision().to_string()},
        "items": deleted,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::lookup;

    fn store_with_default_namespace() -> Store {
        let mut store = Store::new(100);
        store.put(NAMESPACES, json!({"metadata": {"name": "default"}}));
        store
    }

    fn ingresses(status: bool) -> Target<'static> {
        Target {
            resource: lookup("networking.k8s.io", "v1", "ingresses").unwrap(),
            namespace: Some("default"),
            status,
        }
    }

    fn ingress(name: &str) -> Value {
        json!({
            "metadata": {"name": name},
            "spec": {"ingressClassName": "gangway"},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}},
        })
    }

    #[test]
    fn create_sets_metadata_and_drops_status() {
        let mut store = store_with_default_namespace();
        let created = create(&mut store, ingresses(false), ingress("web"), false).unwrap();
        assert_eq!(created["apiVersion"], "networking.k8s.io/v1");
        assert_eq!(created["kind"], "Ingress");
        assert_eq!(created["metadata"]["namespace"], "default");
        assert_eq!(created["metadata"]["generation"], 1);
        assert_eq!(created["metadata"]["resourceVersion"], "2");
        assert!(created["metadata"]["uid"].is_string());
        assert!(created.get("status").is_none());
    }

    #[test]
    fn create_rejects_missing_namespace() {
        let mut store = store_with_default_namespace();
        let target = Target {
            namespace: Some("missing"),
            ..ingresses(false)
        };
        let error = create(&mut store, target, ingress("web"), false).unwrap_err();
        assert_eq!(error.to_string(), "namespaces \"missing\" not found");
    }

    #[test]
    fn create_with_generate_name() {
        let mut store = store_with_default_namespace();
        let body = json!({"metadata": {"generateName": "web-"}, "spec": {}});
        let created = create(&mut store, ingresses(false), body, false).unwrap();
        let name = object::name(&created);
        assert!(name.starts_with("web-"), "{name}");
        assert_eq!(name.len(), 9, "{name}");
    }

    #[test]
    fn create_rejects_invalid_name() {
        let mut store = store_with_default_namespace();
        let error = create(&mut store, ingresses(false), ingress("Web_1"), false).unwrap_err();
        assert_eq!(error.status_code(), 422);
    }

    #[test]
    fn update_with_stale_version_conflicts() {
        let mut store = store_with_default_namespace();
        let created = create(&mut store, ingresses(false), ingress("web"), false).unwrap();
        let mut changed = created.clone();
        changed["spec"]["ingressClassName"] = json!("other");
        update(&mut store, ingresses(false), "web", changed.clone(), false).unwrap();
        let error = update(&mut store, ingresses(false), "web", changed, false).unwrap_err();
        assert_eq!(error.status_code(), 409);
    }

    #[test]
    fn update_bumps_generation_only_on_spec_change() {
        let mut store = store_with_default_namespace();
        let created = create(&mut store, ingresses(false), ingress("web"), false).unwrap();
        let mut labelled = created.clone();
        labelled["metadata"]["labels"] = json!({"app": "web"});
        let labelled = update(&mut store, ingresses(false), "web", labelled, false).unwrap();
        assert_eq!(labelled["metadata"]["generation"], 1);
        let mut changed = labelled.clone();
        changed["spec"]["ingressClassName"] = json!("other");
        let changed = update(&mut store, ingresses(false), "web", changed, false).unwrap();
        assert_eq!(changed["metadata"]["generation"], 2);
    }

    #[test]
    fn unchanged_update_keeps_resource_version() {
        let mut store = store_with_default_namespace();
        let created = create(&mut store, ingresses(false), ingress("web"), false).unwrap();
        let again = update(&mut store, ingresses(false), "web", created.clone(), false).unwrap();
        assert_eq!(
            again["metadata"]["resourceVersion"],
            created["metadata"]["resourceVersion"]
        );
        assert_eq!(store.revision(), 2);
    }

    #[test]
    fn status_subresource_changes_only_status() {
        let mut store = store_with_default_namespace();
        create(&mut store, ingresses(false), ingress("web"), false).unwrap();
        let mut body = ingress("web");
        body["spec"]["ingressClassName"] = json!("ignored");
        let written = update(&mut store, ingresses(true), "web", body, false).unwrap();
        assert_eq!(
            written["status"]["loadBalancer"]["ingress"][0]["ip"],
            "192.0.2.1"
        );
        assert_eq!(written["spec"]["ingressClassName"], "gangway");

        let mut main = written.clone();
        main["status"] = json!({"loadBalancer": {}});
        let written = update(&mut store, ingresses(false), "web", main, false).unwrap();
        assert_eq!(
            written["status"]["loadBalancer"]["ingress"][0]["ip"],
            "192.0.2.1"
        );
    }

    #[test]
    fn delete_with_finalizer_waits_for_removal() {
        let mut store = store_with_default_namespace();
        let mut body = ingress("web");
        body["metadata"]["finalizers"] = json!(["gangway.dev/cleanup"]);
        create(&mut store, ingresses(false), body, false).unwrap();
        let pending = delete(&mut store, ingresses(false), "web", &Value::Null, false).unwrap();
        assert!(pending["metadata"]["deletionTimestamp"].is_string());

        let mut released = pending.clone();
        released["metadata"]["finalizers"] = json!([]);
        update(&mut store, ingresses(false), "web", released, false).unwrap();
        assert!(get(&store, ingresses(false), "web").is_err());
    }

    #[test]
    fn delete_checks_preconditions() {
        let mut store = store_with_default_namespace();
        create(&mut store, ingresses(false), ingress("web"), false).unwrap();
        let options = json!({"preconditions": {"uid": "not-the-uid"}});
        let error = delete(&mut store, ingresses(false), "web", &options, false).unwrap_err();
        assert_eq!(error.status_code(), 409);
        let status = delete(&mut store, ingresses(false), "web", &Value::Null, false).unwrap();
        assert_eq!(status["status"], "Success");
    }

    #[test]
    fn list_pages_with_continue_token() {
        let mut store = store_with_default_namespace();
        for name in ["a", "b", "c"] {
            create(&mut store, ingresses(false), ingress(name), false).unwrap();
        }
        let mut params = ListParams {
            limit: 2,
            ..ListParams::default()
        };
        let first = list(&store, ingresses(false), &params).unwrap();
        assert_eq!(first.items.len(), 2);
        assert_eq!(first.remaining, Some(1));
        // A write between pages must not show in the second page: it reads at the
        // first page's resourceVersion.
        create(&mut store, ingresses(false), ingress("d"), false).unwrap();
        params.continue_token = first.continue_token.clone();
        let second = list(&store, ingresses(false), &params).unwrap();
        let names: Vec<&str> = second.items.iter().map(object::name).collect();
        assert_eq!(names, ["c"]);
        assert_eq!(second.continue_token, None);

        store.compact();
        let error = list(&store, ingresses(false), &params).unwrap_err();
        assert_eq!(error.status_code(), 410);
    }

    #[test]
    fn exact_list_reads_the_past() {
        let mut store = store_with_default_namespace();
        create(&mut store, ingresses(false), ingress("a"), false).unwrap();
        create(&mut store, ingresses(false), ingress("b"), false).unwrap();
        let params = ListParams {
            resource_version: Some("2".into()),
            resource_version_match: Some("Exact".into()),
            ..ListParams::default()
        };
        let page = list(&store, ingresses(false), &params).unwrap();
        assert_eq!(page.items.len(), 1);
        assert_eq!(page.revision, 2);
    }
}
