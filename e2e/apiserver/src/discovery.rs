//! Discovery documents (`/version`, `/api`, `/apis`, resource lists) and the minimal
//! OpenAPI v3 documents kubectl reads before it sends a create or replace.
//!
//! Discovery is served in the legacy JSON format only. kubectl 1.32 first asks for the
//! aggregated format (`application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`)
//! and falls back to the legacy documents when the response is plain `application/json`.

use serde_json::{Value, json};

use crate::registry::{self, ResourceType};

/// Kubernetes version this server reports, the one its behaviour follows.
pub const KUBERNETES_MINOR: &str = "32";

/// Verbs every served resource supports.
const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Verbs of a `/status` subresource.
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

/// The `/version` document.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBERNETES_MINOR,
        "gitVersion": format!("v1.{KUBERNETES_MINOR}.0-gangway-test"),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

/// The `/api` document. `address` is the server's `host:port`.
pub fn core_versions(address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    })
}

fn api_group(group: &str) -> Option<Value> {
    let versions: Vec<Value> = registry::group_versions()
        .into_iter()
        .filter(|(candidate, _)| *candidate == group)
        .map(|(group, version)| json!({"groupVersion": format!("{group}/{version}"), "version": version}))
        .collect();
    let preferred = versions.first()?.clone();
    Some(json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": versions,
        "preferredVersion": preferred,
    }))
}

/// The `/apis` document: every named group.
pub fn group_list() -> Value {
    let mut names: Vec<&str> = Vec::new();
    for (group, _) in registry::group_versions() {
        if !group.is_empty() && !names.contains(&group) {
            names.push(group);
        }
    }
    let groups: Vec<Value> = names.into_iter().filter_map(api_group).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// The `/apis/<group>` document, or `None` for an unknown group.
pub fn group(group: &str) -> Option<Value> {
    if group.is_empty() {
        return None;
    }
    api_group(group)
}

/// The `APIResourceList` of one group version, or `None` when it is not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for resource in registry::resources_of(group, version) {
        let mut entry = json!({
            "name": resource.plural,
            "singularName": resource.singular,
            "namespaced": resource.namespaced,
            "kind": resource.kind,
            "verbs": VERBS,
        });
        if !resource.short_names.is_empty() {
            entry["shortNames"] = json!(resource.short_names);
        }
        if !resource.categories.is_empty() {
            entry["categories"] = json!(resource.categories);
        }
        resources.push(entry);
        if resource.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", resource.plural),
                "singularName": "",
                "namespaced": resource.namespaced,
                "kind": resource.kind,
                "verbs": STATUS_VERBS,
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

/// Path of a group version in OpenAPI v3 and discovery: `api/v1` or `apis/<group>/<version>`.
fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The `/openapi/v3` index: one entry per group version.
pub fn openapi_index() -> Value {
    let mut paths = serde_json::Map::new();
    for (group, version) in registry::group_versions() {
        let path = group_version_path(group, version);
        // The real server appends a content hash so clients can cache; a constant
        // per build is enough because the documents never change at run time.
        let url = format!("/openapi/v3/{path}?hash=gangway-test-{KUBERNETES_MINOR}");
        paths.insert(path, json!({"serverRelativeURL": url}));
    }
    json!({"paths": paths})
}

/// The OpenAPI v3 document of one group version, or `None` when it is not served.
///
/// NOTE: the document lists only operations and their parameters, no schemas. It exists
/// so kubectl sees that the server does `fieldValidation` itself and skips client-side
/// schema validation; `kubectl explain` finds nothing in it.
pub fn openapi_document(group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    for resource in registry::resources_of(group, version) {
        let (collection, item) = resource_paths(resource);
        let gvk =
            json!({"group": resource.group, "version": resource.version, "kind": resource.kind});
        paths.insert(
            collection,
            json!({
                "get": operation(&gvk, &format!("list{}", resource.kind), "list"),
                "post": operation(&gvk, &format!("create{}", resource.kind), "post"),
            }),
        );
        paths.insert(
            item,
            json!({
                "get": operation(&gvk, &format!("read{}", resource.kind), "get"),
                "put": operation(&gvk, &format!("replace{}", resource.kind), "put"),
                "patch": operation(&gvk, &format!("patch{}", resource.kind), "patch"),
                "delete": operation(&gvk, &format!("delete{}", resource.kind), "delete"),
            }),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{KUBERNETES_MINOR}.0")},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

fn resource_paths(resource: &ResourceType) -> (String, String) {
    let base = format!("/{}", group_version_path(resource.group, resource.version));
    let collection = if resource.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", resource.plural)
    } else {
        format!("{base}/{}", resource.plural)
    };
    let item = format!("{collection}/{{name}}");
    (collection, item)
}

fn operation(gvk: &Value, operation_id: &str, action: &str) -> Value {
    let mut parameters =
        vec![json!({"name": "dryRun", "in": "query", "schema": {"type": "string"}})];
    if matches!(action, "post" | "put" | "patch") {
        // kubectl looks for this parameter on the PATCH operation of a kind to decide
        // whether the server validates fields.
        parameters
            .push(json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}));
        parameters
            .push(json!({"name": "fieldManager", "in": "query", "schema": {"type": "string"}}));
    }
    json!({
        "operationId": operation_id,
        "parameters": parameters,
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_list_includes_status_subresource() {
        let list = resource_list("networking.k8s.io", "v1").unwrap();
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|resource| resource["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"ingresses"));
        assert!(names.contains(&"ingresses/status"));
        assert!(names.contains(&"ingressclasses"));
        assert!(!names.contains(&"ingressclasses/status"));
    }

    #[test]
    fn group_list_has_no_core_group() {
        let list = group_list();
        let groups = list["groups"].as_array().unwrap();
        assert!(groups.iter().all(|group| group["name"] != ""));
        assert!(
            groups
                .iter()
                .any(|group| group["name"] == "coordination.k8s.io")
        );
    }

    #[test]
    fn openapi_patch_operation_declares_field_validation() {
        let document = openapi_document("", "v1").unwrap();
        let patch = &document["paths"]["/api/v1/namespaces/{namespace}/services/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Service");
        let parameters = patch["parameters"].as_array().unwrap();
        assert!(
            parameters
                .iter()
                .any(|parameter| parameter["name"] == "fieldValidation")
        );
    }
}
