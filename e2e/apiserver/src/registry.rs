//! The table of served resource types: one line per kind, read by routing, discovery,
//! the OpenAPI documents and the table printer.

use serde_json::{Map, Value, json};

use crate::object;
use crate::table::{self, Column};

/// Where a resource's objects are stored: the group and plural of the storing type.
///
/// Two resource types share a storage when one is a view of the other, as
/// `events.k8s.io/v1` events are a view of core `v1` events in the real server.
pub type StorageKey = (&'static str, &'static str);

/// Sets server-side defaults on an object being created (no stored object) or updated
/// (the stored object is given), such as a Service's cluster IP.
pub type Defaulter = fn(&mut Value, Option<&Value>, &mut DefaultContext);

/// State that defaulters may draw from, kept by the store.
#[derive(Debug, Default)]
pub struct DefaultContext {
    /// Number of cluster IPs handed out so far.
    pub cluster_ips_allocated: u32,
}

/// A resource type that is stored as another one and converted on the way in and out.
#[derive(Debug)]
pub struct View {
    /// The storing resource type.
    pub storage: StorageKey,
    /// Converts an object of this view to the storing type.
    pub to_storage: fn(Value) -> Value,
    /// Converts a stored object to this view.
    pub from_storage: fn(Value) -> Value,
}

/// One served resource type.
#[derive(Debug)]
pub struct ResourceType {
    /// API group, empty for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Plural resource name used in paths.
    pub plural: &'static str,
    /// Singular resource name, shown in discovery.
    pub singular: &'static str,
    /// Kind of the objects.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names kubectl accepts, such as `svc`.
    pub short_names: &'static [&'static str],
    /// Discovery categories, such as `all`.
    pub categories: &'static [&'static str],
    /// Whether the type has a `/status` subresource. Then writes to the main resource keep
    /// the stored `.status`, and writes to `/status` change only `.status`.
    pub status_subresource: bool,
    /// Field selector labels besides `metadata.name` and `metadata.namespace`.
    pub field_labels: &'static [&'static str],
    /// Table columns for `kubectl get`.
    pub columns: &'static [Column],
    /// Server-side defaults applied on create and update.
    pub defaulter: Option<Defaulter>,
    /// Set when this type is a view of another type's storage.
    pub view: Option<&'static View>,
}

impl ResourceType {
    const fn new(
        group: &'static str,
        version: &'static str,
        plural: &'static str,
        singular: &'static str,
        kind: &'static str,
        namespaced: bool,
    ) -> Self {
        ResourceType {
            group,
            version,
            plural,
            singular,
            kind,
            namespaced,
            short_names: &[],
            categories: &[],
            status_subresource: false,
            field_labels: &[],
            columns: table::DEFAULT_COLUMNS,
            defaulter: None,
            view: None,
        }
    }

    /// Declares a namespaced resource type.
    pub const fn namespaced(
        group: &'static str,
        version: &'static str,
        plural: &'static str,
        singular: &'static str,
        kind: &'static str,
    ) -> Self {
        Self::new(group, version, plural, singular, kind, true)
    }

    /// Declares a cluster-scoped resource type.
    pub const fn cluster(
        group: &'static str,
        version: &'static str,
        plural: &'static str,
        singular: &'static str,
        kind: &'static str,
    ) -> Self {
        Self::new(group, version, plural, singular, kind, false)
    }

    const fn short(mut self, short_names: &'static [&'static str]) -> Self {
        self.short_names = short_names;
        self
    }

    const fn in_all(mut self) -> Self {
        self.categories = &["all"];
        self
    }

    const fn with_status(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    const fn fields(mut self, field_labels: &'static [&'static str]) -> Self {
        self.field_labels = field_labels;
        self
    }

    const fn columns(mut self, columns: &'static [Column]) -> Self {
        self.columns = columns;
        self
    }

    const fn defaults(mut self, defaulter: Defaulter) -> Self {
        self.defaulter = Some(defaulter);
        self
    }

    const fn view_of(mut self, view: &'static View) -> Self {
        self.view = Some(view);
        self
    }

    /// `group/version`, or just `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Key of the storage this type's objects live in.
    pub fn storage(&self) -> StorageKey {
        match self.view {
            Some(view) => view.storage,
            None => (self.group, self.plural),
        }
    }

    /// Converts a request object of this type to its stored form.
    pub fn to_storage(&self, object: Value) -> Value {
        match self.view {
            Some(view) => (view.to_storage)(object),
            None => object,
        }
    }

    /// Converts a stored object to this type.
    pub fn from_storage(&self, object: Value) -> Value {
        match self.view {
            Some(view) => (view.from_storage)(object),
            None => object,
        }
    }

    /// Returns whether `label` may be used in a field selector on this type.
    pub fn supports_field_label(&self, label: &str) -> bool {
        matches!(label, "metadata.name" | "metadata.namespace")
            || self.field_labels.contains(&label)
    }
}

/// Every served resource type. Adding a kind is one line here.
pub static RESOURCES: &[ResourceType] = &[
    ResourceType::cluster("", "v1", "namespaces", "namespace", "Namespace")
        .short(&["ns"])
        .with_status()
        .fields(&["status.phase"])
        .columns(table::NAMESPACE_COLUMNS)
        .defaults(default_namespace),
    ResourceType::namespaced("", "v1", "services", "service", "Service")
        .short(&["svc"])
        .in_all()
        .with_status()
        .columns(table::SERVICE_COLUMNS)
        .defaults(default_service),
    ResourceType::namespaced("", "v1", "endpoints", "endpoints", "Endpoints").short(&["ep"]),
    ResourceType::namespaced("", "v1", "secrets", "secret", "Secret")
        .fields(&["type"])
        .columns(table::SECRET_COLUMNS)
        .defaults(default_secret),
    ResourceType::namespaced("", "v1", "configmaps", "configmap", "ConfigMap").short(&["cm"]),
    ResourceType::namespaced(
        "",
        "v1",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
    )
    .short(&["sa"]),
    ResourceType::namespaced("", "v1", "pods", "pod", "Pod")
        .short(&["po"])
        .in_all()
        .with_status()
        .fields(&[
            "spec.nodeName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
        ]),
    ResourceType::namespaced("", "v1", "events", "event", "Event")
        .short(&["ev"])
        .fields(CORE_EVENT_FIELDS)
        .columns(table::EVENT_COLUMNS),
    ResourceType::namespaced("apps", "v1", "deployments", "deployment", "Deployment")
        .short(&["deploy"])
        .in_all()
        .with_status(),
    ResourceType::namespaced("networking.k8s.io", "v1", "ingresses", "ingress", "Ingress")
        .short(&["ing"])
        .with_status()
        .columns(table::INGRESS_COLUMNS),
    ResourceType::cluster(
        "networking.k8s.io",
        "v1",
        "ingressclasses",
        "ingressclass",
        "IngressClass",
    )
    .columns(table::INGRESS_CLASS_COLUMNS),
    ResourceType::namespaced(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "endpointslice",
        "EndpointSlice",
    )
    .columns(table::ENDPOINT_SLICE_COLUMNS),
    ResourceType::namespaced("coordination.k8s.io", "v1", "leases", "lease", "Lease")
        .columns(table::LEASE_COLUMNS),
    ResourceType::namespaced("events.k8s.io", "v1", "events", "event", "Event")
        .short(&["ev"])
        .fields(&[
            "regarding.kind",
            "regarding.name",
            "regarding.namespace",
            "regarding.uid",
            "reason",
            "type",
            "reportingController",
        ])
        .columns(table::EVENT_COLUMNS)
        .view_of(&EVENTS_V1_VIEW),
    ResourceType::cluster(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "clusterrole",
        "ClusterRole",
    ),
    ResourceType::cluster(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
    ),
    ResourceType::namespaced("rbac.authorization.k8s.io", "v1", "roles", "role", "Role"),
    ResourceType::namespaced(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "rolebinding",
        "RoleBinding",
    ),
    ResourceType::namespaced(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        "PodDisruptionBudget",
    )
    .short(&["pdb"])
    .with_status(),
    ResourceType::namespaced(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        "HorizontalPodAutoscaler",
    )
    .short(&["hpa"])
    .in_all()
    .with_status(),
];

const CORE_EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.name",
    "involvedObject.namespace",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.fieldPath",
    "involvedObject.resourceVersion",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// Looks up the resource type served at `group/version/plural`.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES.iter().find(|resource| {
        resource.group == group && resource.version == version && resource.plural == plural
    })
}

/// Lists the served `(group, version)` pairs in registry order, without repeats.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut pairs: Vec<(&'static str, &'static str)> = Vec::new();
    for resource in RESOURCES {
        if !pairs.contains(&(resource.group, resource.version)) {
            pairs.push((resource.group, resource.version));
        }
    }
    pairs
}

/// Lists the resource types of one group version.
pub fn resources_of(group: &str, version: &str) -> impl Iterator<Item = &'static ResourceType> {
    RESOURCES
        .iter()
        .filter(move |resource| resource.group == group && resource.version == version)
}

fn default_namespace(
    namespace: &mut Value,
    _stored: Option<&Value>,
    _context: &mut DefaultContext,
) {
    // The real server labels every namespace with its own name so that
    // namespaceSelectors can pick a namespace by name.
    let name = object::name(namespace).to_string();
    let metadata = object::metadata_mut(namespace);
    let labels = metadata
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(labels) = labels.as_object_mut() {
        labels.insert("kubernetes.io/metadata.name".into(), Value::String(name));
    }
    if namespace.get("status").is_none_or(Value::is_null) {
        namespace["status"] = json!({"phase": "Active"});
    }
}

fn default_service(service: &mut Value, stored: Option<&Value>, context: &mut DefaultContext) {
    if !service.get("spec").is_some_and(Value::is_object) {
        service["spec"] = json!({});
    }
    let spec = &mut service["spec"];
    // An update that leaves out the allocated cluster IP keeps it, as the real server
    // copies allocated values from the stored Service.
    let unset = |value: Option<&Value>| value.is_none_or(|ip| ip.is_null() || ip == "");
    if let Some(stored) = stored
        && unset(spec.get("clusterIP"))
        && !unset(stored["spec"].get("clusterIP"))
    {
        spec["clusterIP"] = stored["spec"]["clusterIP"].clone();
        spec["clusterIPs"] = stored["spec"]["clusterIPs"].clone();
    }
    if spec.get("type").is_none_or(Value::is_null) {
        spec["type"] = json!("ClusterIP");
    }
    let needs_ip = spec["type"] != "ExternalName" && unset(spec.get("clusterIP"));
    if needs_ip {
        // NOTE: addresses come from a counter in 10.96.0.0/16 and are never reused or
        // routed. They exist so that clients reading spec.clusterIP see a realistic value.
        context.cluster_ips_allocated += 1;
        let index = context.cluster_ips_allocated;
        let address = format!("10.96.{}.{}", (index >> 8) & 0xff, index & 0xff);
        spec["clusterIP"] = json!(address);
        spec["clusterIPs"] = json!([address]);
    }
    if service.get("status").is_none_or(Value::is_null) {
        service["status"] = json!({"loadBalancer": {}});
    }
}

fn default_secret(secret: &mut Value, _stored: Option<&Value>, _context: &mut DefaultContext) {
    if secret.get("type").is_none_or(Value::is_null) {
        secret["type"] = json!("Opaque");
    }
}

static EVENTS_V1_VIEW: View = View {
    storage: ("", "events"),
    to_storage: events_v1_to_core,
    from_storage: core_event_to_events_v1,
};

/// Field renames between `events.k8s.io/v1` (left) and core `v1` (right) Events, as the
/// real server converts them.
const EVENT_FIELD_RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

fn rename_fields(mut object: Value, api_version: &str, from_events_v1: bool) -> Value {
    if let Some(fields) = object.as_object_mut() {
        for (events_v1, core) in EVENT_FIELD_RENAMES {
            let (from, to) = if from_events_v1 {
                (events_v1, core)
            } else {
                (core, events_v1)
            };
            if let Some(value) = fields.remove(*from) {
                fields.insert((*to).to_string(), value);
            }
        }
        fields.insert("apiVersion".into(), json!(api_version));
        fields.insert("kind".into(), json!("Event"));
    }
    object
}

fn events_v1_to_core(event: Value) -> Value {
    rename_fields(event, "v1", true)
}

fn core_event_to_events_v1(event: Value) -> Value {
    rename_fields(event, "events.k8s.io/v1", false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_has_no_duplicate_routes() {
        for (index, resource) in RESOURCES.iter().enumerate() {
            let first = RESOURCES
                .iter()
                .position(|other| {
                    other.group == resource.group
                        && other.version == resource.version
                        && other.plural == resource.plural
                })
                .unwrap();
            assert_eq!(first, index, "{} is listed twice", resource.plural);
        }
    }

    #[test]
    fn events_view_round_trips() {
        let event = json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "e1", "namespace": "default"},
            "regarding": {"kind": "Ingress", "name": "web"},
            "note": "synced",
            "reportingController": "gangway.dev/ingress-controller",
        });
        let resource = lookup("events.k8s.io", "v1", "events").unwrap();
        let stored = resource.to_storage(event.clone());
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(stored["involvedObject"]["name"], "web");
        assert_eq!(stored["message"], "synced");
        assert_eq!(
            stored["reportingComponent"],
            "gangway.dev/ingress-controller"
        );
        assert_eq!(resource.from_storage(stored), event);
    }

    #[test]
    fn service_gets_cluster_ip() {
        let mut context = DefaultContext::default();
        let mut service = json!({"metadata": {"name": "web"}, "spec": {"ports": []}});
        default_service(&mut service, None, &mut context);
        assert_eq!(service["spec"]["type"], "ClusterIP");
        assert_eq!(service["spec"]["clusterIP"], "10.96.0.1");
        let mut headless = json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "None"}});
        default_service(&mut headless, None, &mut context);
        assert_eq!(headless["spec"]["clusterIP"], "None");
    }

    #[test]
    fn service_update_keeps_cluster_ip() {
        let mut context = DefaultContext::default();
        let mut stored = json!({"metadata": {"name": "web"}, "spec": {}});
        default_service(&mut stored, None, &mut context);
        let mut replacement =
            json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 81}]}});
        default_service(&mut replacement, Some(&stored), &mut context);
        assert_eq!(replacement["spec"]["clusterIP"], "10.96.0.1");
        assert_eq!(replacement["spec"]["clusterIPs"], json!(["10.96.0.1"]));
        assert_eq!(replacement["spec"]["type"], "ClusterIP");
    }
}
