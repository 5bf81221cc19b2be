//! `meta.k8s.io/v1` Table responses, which `kubectl get` requests to print columns.

use serde_json::{Value, json};

use crate::object;
use crate::registry::ResourceType;

/// How a column computes its cell from an object.
#[derive(Debug, Clone, Copy)]
pub enum Cell {
    /// A string cell.
    Text(fn(&Value) -> String),
    /// An integer cell.
    Count(fn(&Value) -> usize),
    /// The age of the RFC 3339 timestamp returned, printed like kubectl's AGE column.
    Age(fn(&Value) -> String),
}

/// One table column: its header, its OpenAPI format and how to compute a cell.
#[derive(Debug)]
pub struct Column {
    /// Header, which kubectl prints upper-cased.
    pub name: &'static str,
    /// OpenAPI format, `name` for the column that contains the object name.
    pub format: &'static str,
    /// How to compute the cell.
    pub cell: Cell,
}

impl Column {
    fn render(&self, object: &Value, now: jiff::Timestamp) -> Value {
        match self.cell {
            Cell::Text(text) => json!(text(object)),
            Cell::Count(count) => json!(count(object)),
            Cell::Age(timestamp) => json!(age(&timestamp(object), now)),
        }
    }

    fn openapi_type(&self) -> &'static str {
        match self.cell {
            Cell::Count(_) => "integer",
            Cell::Text(_) | Cell::Age(_) => "string",
        }
    }
}

const NAME: Column = Column {
    name: "Name",
    format: "name",
    cell: Cell::Text(|object| object::name(object).to_string()),
};

const AGE: Column = Column {
    name: "Age",
    format: "",
    cell: Cell::Age(|object| object::metadata_str(object, "creationTimestamp").to_string()),
};

/// Columns of kinds without their own layout.
pub const DEFAULT_COLUMNS: &[Column] = &[NAME, AGE];

/// Namespace columns.
pub const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    string_column("Status", |namespace| {
        text_at(namespace, &["status", "phase"])
    }),
    AGE,
];

/// Service columns.
pub const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    string_column("Type", |service| text_at(service, &["spec", "type"])),
    string_column("Cluster-IP", |service| {
        text_at(service, &["spec", "clusterIP"])
    }),
    string_column("External-IP", service_external_ip),
    string_column("Port(s)", service_ports),
    AGE,
];

/// Secret columns.
pub const SECRET_COLUMNS: &[Column] = &[
    NAME,
    string_column("Type", |secret| text_at(secret, &["type"])),
    Column {
        name: "Data",
        format: "",
        cell: Cell::Count(|secret| secret["data"].as_object().map_or(0, |data| data.len())),
    },
    AGE,
];

/// Ingress columns.
pub const INGRESS_COLUMNS: &[Column] = &[
    NAME,
    string_column("Class", |ingress| {
        or_none(text_at(ingress, &["spec", "ingressClassName"]))
    }),
    string_column("Hosts", ingress_hosts),
    string_column("Address", |ingress| {
        load_balancer_addresses(ingress).join(",")
    }),
    string_column("Ports", |ingress| {
        let has_tls = ingress["spec"]["tls"]
            .as_array()
            .is_some_and(|tls| !tls.is_empty());
        if has_tls {
            "80, 443".into()
        } else {
            "80".into()
        }
    }),
    AGE,
];

/// IngressClass columns.
pub const INGRESS_CLASS_COLUMNS: &[Column] = &[
    NAME,
    string_column("Controller", |class| {
        text_at(class, &["spec", "controller"])
    }),
    string_column("Parameters", |class| {
        or_none(text_at(class, &["spec", "parameters", "name"]))
    }),
    AGE,
];

/// EndpointSlice columns.
pub const ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    NAME,
    string_column("AddressType", |slice| text_at(slice, &["addressType"])),
    string_column("Ports", |slice| {
        join_array(&slice["ports"], |port| {
            port.get("port").map(Value::to_string)
        })
    }),
    string_column("Endpoints", |slice| {
        join_array(&slice["endpoints"], |endpoint| {
            endpoint["addresses"]
                .get(0)
                .and_then(Value::as_str)
                .map(str::to_string)
        })
    }),
    AGE,
];

/// Lease columns.
pub const LEASE_COLUMNS: &[Column] = &[
    NAME,
    string_column("Holder", |lease| {
        text_at(lease, &["spec", "holderIdentity"])
    }),
    AGE,
];

/// Event columns, shared by core `v1` and `events.k8s.io/v1` events.
pub const EVENT_COLUMNS: &[Column] = &[
    Column {
        name: "Last Seen",
        format: "",
        cell: Cell::Age(|event| {
            ["lastTimestamp", "deprecatedLastTimestamp", "eventTime"]
                .iter()
                .filter_map(|field| event[*field].as_str())
                .find(|text| !text.is_empty())
                .unwrap_or_else(|| object::metadata_str(event, "creationTimestamp"))
                .to_string()
        }),
    },
    string_column("Type", |event| text_at(event, &["type"])),
    string_column("Reason", |event| text_at(event, &["reason"])),
    string_column("Object", |event| {
        let regarding = event
            .get("involvedObject")
            .or_else(|| event.get("regarding"));
        let regarding = regarding.unwrap_or(&Value::Null);
        let kind = regarding["kind"].as_str().unwrap_or("").to_lowercase();
        format!("{kind}/{}", regarding["name"].as_str().unwrap_or(""))
    }),
    string_column("Message", |event| {
        let message = event.get("message").or_else(|| event.get("note"));
        message.and_then(Value::as_str).unwrap_or("").to_string()
    }),
];

const fn string_column(name: &'static str, text: fn(&Value) -> String) -> Column {
    Column {
        name,
        format: "",
        cell: Cell::Text(text),
    }
}

fn text_at(object: &Value, path: &[&str]) -> String {
    let mut current = object;
    for key in path {
        current = &current[*key];
    }
    current.as_str().unwrap_or("").to_string()
}

fn or_none(text: String) -> String {
    if text.is_empty() {
        "<none>".into()
    } else {
        text
    }
}

fn join_array(array: &Value, item: fn(&Value) -> Option<String>) -> String {
    let parts: Vec<String> = array
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(item)
        .collect();
    if parts.is_empty() {
        "<unset>".into()
    } else {
        parts.join(",")
    }
}

fn load_balancer_addresses(object: &Value) -> Vec<String> {
    object["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            entry["ip"]
                .as_str()
                .or_else(|| entry["hostname"].as_str())
                .map(str::to_string)
        })
        .collect()
}

fn service_external_ip(service: &Value) -> String {
    let addresses = load_balancer_addresses(service);
    if !addresses.is_empty() {
        return addresses.join(",");
    }
    match service["spec"]["type"].as_str() {
        Some("LoadBalancer") => "<pending>".into(),
        Some("ExternalName") => text_at(service, &["spec", "externalName"]),
        _ => "<none>".into(),
    }
}

fn service_ports(service: &Value) -> String {
    let ports: Vec<String> = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|port| {
            let protocol = port["protocol"].as_str().unwrap_or("TCP");
            match port["nodePort"].as_u64() {
                Some(node_port) => format!("{}:{node_port}/{protocol}", port["port"]),
                None => format!("{}/{protocol}", port["port"]),
            }
        })
        .collect();
    or_none(ports.join(","))
}

fn ingress_hosts(ingress: &Value) -> String {
    let hosts: Vec<&str> = ingress["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|rule| rule["host"].as_str().unwrap_or("*"))
        .collect();
    if hosts.is_empty() {
        "*".into()
    } else {
        hosts.join(",")
    }
}

/// What each Table row carries in `object`, set by the `includeObject` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A `PartialObjectMetadata` with the object's metadata, the default.
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query parameter. Returns `None` for an unknown value.
    pub fn parse(value: Option<&str>) -> Option<Self> {
        match value {
            None | Some("") | Some("Metadata") => Some(IncludeObject::Metadata),
            Some("None") => Some(IncludeObject::None),
            Some("Object") => Some(IncludeObject::Object),
            Some(_) => None,
        }
    }
}

/// Renders objects of one resource type as a `meta.k8s.io/v1` Table.
///
/// `list_metadata` becomes the Table's `metadata` (resourceVersion and continue token).
pub fn render(
    resource: &ResourceType,
    objects: &[Value],
    include: IncludeObject,
    list_metadata: Value,
) -> Value {
    let now = jiff::Timestamp::now();
    let column_definitions: Vec<Value> = resource
        .columns
        .iter()
        .map(|column| {
            json!({
                "name": column.name,
                "type": column.openapi_type(),
                "format": column.format,
                "description": "",
                "priority": 0,
            })
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let cells: Vec<Value> = resource
                .columns
                .iter()
                .map(|column| column.render(object, now))
                .collect();
            let mut row = json!({"cells": cells});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": object["metadata"],
                    });
                }
                IncludeObject::Object => row["object"] = object.clone(),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata,
        "columnDefinitions": column_definitions,
        "rows": rows,
    })
}

/// Returns whether an `Accept` header requests a `meta.k8s.io` Table.
pub fn accepts_table(accept: &str) -> bool {
    // kubectl sends "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"; the
    // first acceptable type wins, and this server always serves Table v1 when asked.
    accept.split(',').next().is_some_and(|first| {
        first
            .split(';')
            .any(|parameter| parameter.trim() == "as=Table")
    })
}

/// Formats the time since an RFC 3339 timestamp as kubectl's AGE column does: seconds
/// below two minutes, then minutes, hours, days and years with coarser steps.
pub fn age(timestamp: &str, now: jiff::Timestamp) -> String {
    let Ok(then) = timestamp.parse::<jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let seconds = now.as_second() - then.as_second();
    human_duration(seconds)
}

fn human_duration(seconds: i64) -> String {
    // Clocks may differ by a second, so -1 still counts as now.
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 2 * 60 {
        return format!("{seconds}s");
    }

    let minutes = seconds / 60;
    if minutes < 10 {
        return with_remainder(minutes, "m", seconds % 60, "s");
    }
    if minutes < 3 * 60 {
        return format!("{minutes}m");
    }

    let hours = minutes / 60;
    if hours < 8 {
        return with_remainder(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }

    let days = hours / 24;
    if days < 8 {
        return with_remainder(days, "d", hours % 24, "h");
    }
    if days < 2 * 365 {
        return format!("{days}d");
    }

    let years = days / 365;
    if years < 8 {
        return with_remainder(years, "y", days % 365, "d");
    }
    format!("{years}y")
}

fn with_remainder(major: i64, major_unit: &str, minor: i64, minor_unit: &str) -> String {
    if minor == 0 {
        format!("{major}{major_unit}")
    } else {
        format!("{major}{major_unit}{minor}{minor_unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_duration_matches_kubectl_steps() {
        let cases = [
            ("just created", 0, "0s"),
            ("one second of clock skew", -1, "0s"),
            ("future beyond skew", -5, "<invalid>"),
            ("under two minutes", 119, "119s"),
            ("minutes with seconds", 5 * 60 + 7, "5m7s"),
            ("whole minutes", 4 * 60, "4m"),
            ("over ten minutes", 42 * 60 + 5, "42m"),
            ("hours with minutes", 3 * 3600 + 20 * 60, "3h20m"),
            ("a day", 30 * 3600, "30h"),
            ("days with hours", 3 * 86400 + 4 * 3600, "3d4h"),
            ("a month", 40 * 86400, "40d"),
            ("years with days", 3 * 365 * 86400 + 10 * 86400, "3y10d"),
            ("a decade", 10 * 365 * 86400, "10y"),
        ];
        for (case, seconds, expected) in cases {
            assert_eq!(human_duration(seconds), expected, "{case}");
        }
    }

    #[test]
    fn accept_header_selects_table() {
        assert!(accepts_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!accepts_table("application/json"));
        assert!(!accepts_table(
            "application/json, application/json;as=Table;v=v1;g=meta.k8s.io"
        ));
    }

    #[test]
    fn service_row_shows_ports_and_address() {
        let resource = crate::registry::lookup("", "v1", "services").unwrap();
        let service = json!({
            "metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.9",
                     "ports": [{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}},
        });
        let table = render(resource, &[service], IncludeObject::Object, json!({}));
        let cells = &table["rows"][0]["cells"];
        assert_eq!(cells[0], "web");
        assert_eq!(cells[1], "LoadBalancer");
        assert_eq!(cells[2], "10.96.0.9");
        assert_eq!(cells[3], "192.0.2.10");
        assert_eq!(cells[4], "80:30080/TCP,53/UDP");
        assert_eq!(table["rows"][0]["object"]["spec"]["type"], "LoadBalancer");
    }
}
