//! Parsing of manifest files: multi-document YAML or JSON, `kind: List` included, into the
//! objects the compiler reads.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::{DefaultMessageFormatter, MessageFormatter};

use crate::store::{ObjectKey, ObjectRef, Store};

/// Namespace given to namespaced objects that name none, as `kubectl apply` does.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Maximum number of YAML nodes (mappings, sequences and scalars) in one document.
/// serde-saphyr's default of 250,000 guards against hostile input and stops a `kind: List`
/// at about 4,000 Ingresses. Manifests here come from the operator, so the limit only bounds
/// memory. At about 100 bytes per node it allows documents of several hundred MB.
const MAX_NODES_PER_DOCUMENT: usize = 4_000_000;

/// Maximum number of parser events that YAML aliases may replay in one file, which bounds the
/// "billion laughs" attack. The limit covers the whole file because its documents are parsed
/// one at a time. Under serde-saphyr's default, 1,000,000 replayed events per document,
/// `gangway check` took 10.8 s in a debug build to reject the nine-level file of the
/// standalone test `hostile_files_do_not_crash`. Under a cap of 100,000 per document, a file
/// of 1,000 five-level documents took 48 s in a release build. Both are now rejected in
/// 0.02 s (debug build, 2-core AMD EPYC machine), before the deserializer expands any alias.
/// Real manifests rarely use anchors; this still lets a file repeat a 100-node block a
/// thousand times.
const MAX_ALIAS_EVENTS_PER_FILE: usize = 100_000;

/// One object Gangway reads.
#[derive(Clone, Debug)]
pub enum Object {
    /// networking.k8s.io/v1 IngressClass.
    IngressClass(Arc<IngressClass>),
    /// networking.k8s.io/v1 Ingress.
    Ingress(Arc<Ingress>),
    /// v1 Service.
    Service(Arc<Service>),
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice(Arc<EndpointSlice>),
    /// v1 Secret.
    Secret(Arc<Secret>),
}

impl Object {
    /// Returns the kind and key of the object.
    pub fn object_ref(&self) -> ObjectRef {
        let (kind, metadata) = match self {
            Object::IngressClass(o) => ("IngressClass", &o.metadata),
            Object::Ingress(o) => ("Ingress", &o.metadata),
            Object::Service(o) => ("Service", &o.metadata),
            Object::EndpointSlice(o) => ("EndpointSlice", &o.metadata),
            Object::Secret(o) => ("Secret", &o.metadata),
        };
        ObjectRef::new(
            kind,
            ObjectKey::new(
                metadata.namespace.clone().unwrap_or_default(),
                metadata.name.clone().unwrap_or_default(),
            ),
        )
    }

    /// Inserts the object into `store`, replacing an object of the same kind and key.
    /// Returns true when an object was replaced.
    pub fn insert_into(self, store: &mut Store) -> bool {
        let key = self.object_ref().key;
        match self {
            Object::IngressClass(o) => store.ingress_classes.insert(key, o).is_some(),
            Object::Ingress(o) => store.ingresses.insert(key, o).is_some(),
            Object::Service(o) => store.services.insert(key, o).is_some(),
            Object::EndpointSlice(o) => store.endpoint_slices.insert(key, o).is_some(),
            Object::Secret(o) => store.secrets.insert(key, o).is_some(),
        }
    }
}

/// A document that could not be read. The message names the document (1-based, in file
/// order) and, where the parser reports it, the line or the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("document {document}: {message}")]
pub struct ParseError {
    /// 1-based index of the document in the file.
    pub document: usize,
    /// Description of the error, naming the line or field.
    pub message: String,
}

/// The objects of one file, and the documents that failed.
#[derive(Debug, Default)]
pub struct ParsedFile {
    /// Objects of the kinds Gangway reads, in file order. Other kinds are skipped.
    pub objects: Vec<Object>,
    /// Documents that failed to parse.
    pub errors: Vec<ParseError>,
}

/// Parses the contents of one manifest file.
///
/// YAML streams are split on `---` lines the way kubectl's YAML reader splits them, so an
/// error names its document and the other documents still parse. JSON is a subset of YAML
/// and goes through the same path. Objects without a namespace get `default`.
pub fn parse_manifests(text: &str) -> ParsedFile {
    parse_with_limit(text, MAX_NODES_PER_DOCUMENT)
}

fn parse_with_limit(text: &str, max_nodes: usize) -> ParsedFile {
    let mut parsed = ParsedFile::default();
    // What is left of the file's alias budget. Each document is charged before it is
    // deserialized, so one that fails later is charged too.
    let mut alias_events_left = MAX_ALIAS_EVENTS_PER_FILE;
    for (index, (first_line, document)) in split_documents(text).into_iter().enumerate() {
        let number = index + 1;
        let replayed = replayed_events(document, alias_events_left);
        if replayed > alias_events_left {
            parsed.errors.push(ParseError {
                document: number,
                message: alias_limit_message(first_line),
            });
            break;
        }
        // serde-saphyr's own count stops the parse too, should the two counts differ.
        let backstop = alias_events_left;
        alias_events_left -= replayed;
        // Every node produces at least one parser event, and a mapping or sequence two.
        let options = serde_saphyr::options!(
            budget: serde_saphyr::budget!(max_nodes: max_nodes, max_events: max_nodes * 4),
            alias_limits: serde_saphyr::alias_limits!(
                max_total_replayed_events: backstop,
            ),
        );
        let value: Value = match serde_saphyr::from_str_with_options(document, options) {
            Ok(value) => value,
            Err(error) => {
                parsed.errors.push(ParseError {
                    document: number,
                    message: yaml_error_message(&error, first_line, max_nodes),
                });
                if is_alias_limit(&error) {
                    break;
                }
                continue;
            }
        };
        if value.is_null() {
            continue;
        }
        if let Err(message) = collect_value(value, &mut parsed.objects) {
            parsed.errors.push(ParseError {
                document: number,
                message,
            });
        }
    }
    parsed
}

/// Splits a YAML stream into documents on lines that consist of `---` (optionally followed by
/// a comment or content after a space). Returns each document with its 1-based first line.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut documents = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (line_index, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        let is_separator =
            trimmed == "---" || trimmed.starts_with("--- ") || trimmed.starts_with("---\t");
        if is_separator {
            documents.push((start_line, &text[start..offset]));
            // Content after `--- ` belongs to the next document, so keep it.
            start = offset + 3;
            start_line = line_index + 1;
        }
        offset += line.len();
    }
    documents.push((start_line, &text[start..]));
    documents
        .into_iter()
        .filter(|(_, document)| {
            document
                .lines()
                .any(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        })
        .collect()
}

/// Describes a YAML syntax error with its line counted from the start of the file. The parser
/// reads one document at a time and counts lines from the document's start.
fn yaml_error_message(error: &serde_saphyr::Error, first_line: usize, max_nodes: usize) -> String {
    if let serde_saphyr::Error::Budget { breach, .. } = error.without_snippet() {
        let limit = match breach {
            BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. } => {
                format!("has more than {max_nodes} YAML nodes")
            }
            other => format!("exceeds a parser limit ({other:?})"),
        };
        return format!(
            "the document that starts at line {first_line} {limit}; \
             split it into several documents or files"
        );
    }
    if is_alias_limit(error) {
        return alias_limit_message(first_line);
    }
    let message = DefaultMessageFormatter.format_message(error);
    let message = first_line_of(&message);
    match error.location() {
        Some(location) if location.line() > 0 => {
            let line = first_line as u64 + location.line() - 1;
            format!(
                "invalid YAML at line {line}, column {}: {message}",
                location.column()
            )
        }
        _ => format!("invalid YAML in the document that starts at line {first_line}: {message}"),
    }
}

/// Returns the number of parser events that serde-saphyr replays for the aliases of
/// `document`, counted from the parser's events without expanding anything. Counting stops
/// once it passes `limit`, and at a syntax error, which the deserializer then reports.
///
/// A document without `&` defines no anchor, so it replays nothing and is not read twice.
fn replayed_events(document: &str, limit: usize) -> usize {
    use serde_saphyr::granit_parser::{Event, Parser};

    if !document.contains('&') {
        return 0;
    }
    // Events of each anchored node, aliases inside it expanded; anchor id 0 means none.
    let mut sizes: HashMap<usize, usize> = HashMap::new();
    // Open sequences and mappings: their anchor and events so far.
    let mut open: Vec<(usize, usize)> = Vec::new();
    let mut replayed = 0usize;
    for item in Parser::new_from_str(document) {
        let Ok((event, _)) = item else { break };
        let finished = match event {
            Event::Scalar(_, _, anchor, _) => Some((anchor, 1)),
            Event::SequenceStart(_, anchor, _) | Event::MappingStart(_, anchor, _) => {
                open.push((anchor, 1));
                None
            }
            Event::SequenceEnd | Event::MappingEnd => open
                .pop()
                .map(|(anchor, size)| (anchor, size.saturating_add(1))),
            Event::Alias(id) => {
                let size = sizes.get(&id).copied().unwrap_or(0);
                replayed = replayed.saturating_add(size);
                Some((0, size))
            }
            _ => None,
        };
        if let Some((anchor, size)) = finished {
            if anchor != 0 {
                sizes.insert(anchor, size);
            }
            if let Some(parent) = open.last_mut() {
                parent.1 = parent.1.saturating_add(size);
            }
        }
        if replayed > limit {
            break;
        }
    }
    replayed
}

/// Describes a file whose aliases went over [`MAX_ALIAS_EVENTS_PER_FILE`] in the document at
/// `first_line`.
fn alias_limit_message(first_line: usize) -> String {
    format!(
        "YAML aliases in this file expand to more than {MAX_ALIAS_EVENTS_PER_FILE} parser \
         events by the document that starts at line {first_line}, a limit against alias bombs; \
         later documents were not read. Write the repeated parts out or use fewer aliases"
    )
}

/// Returns true when `error` reports the alias replay limit. serde-saphyr wraps an error
/// raised inside an aliased node in `AliasError`, which keeps only the message. So the
/// message is matched, and if its wording changes, the parser's own message is shown.
fn is_alias_limit(error: &serde_saphyr::Error) -> bool {
    match error.without_snippet() {
        serde_saphyr::Error::AliasReplayLimitExceeded { .. } => true,
        serde_saphyr::Error::AliasError { msg, .. } => msg.contains("alias replay limit exceeded"),
        _ => false,
    }
}

fn first_line_of(message: &str) -> &str {
    message.lines().next().unwrap_or(message)
}

/// Adds the objects in one document to `out`: a single object, or the items of a `List`.
fn collect_value(value: Value, out: &mut Vec<Object>) -> Result<(), String> {
    let Value::Object(map) = &value else {
        return Err("expected a Kubernetes object (a mapping with apiVersion and kind)".into());
    };
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let kind = kind.as_str();
    if kind.is_empty() {
        return Err("missing field `kind`".into());
    }
    if api_version.is_empty() {
        return Err(format!("{kind}: missing field `apiVersion`"));
    }
    if kind == "List" || kind.ends_with("List") && map.contains_key("items") {
        let Some(Value::Array(items)) = map.get("items").cloned() else {
            return Err(format!("{kind}: field `items` must be a list"));
        };
        for (index, item) in items.into_iter().enumerate() {
            collect_value(item, out).map_err(|message| format!("items[{index}]: {message}"))?;
        }
        return Ok(());
    }
    let object = match (api_version.as_str(), kind) {
        ("networking.k8s.io/v1", "IngressClass") => {
            Object::IngressClass(Arc::new(decode::<IngressClass>(value, kind, false)?))
        }
        ("networking.k8s.io/v1", "Ingress") => {
            Object::Ingress(Arc::new(decode::<Ingress>(value, kind, true)?))
        }
        ("v1", "Service") => Object::Service(Arc::new(decode::<Service>(value, kind, true)?)),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            Object::EndpointSlice(Arc::new(decode::<EndpointSlice>(value, kind, true)?))
        }
        ("v1", "Secret") => Object::Secret(Arc::new(decode::<Secret>(value, kind, true)?)),
        _ => return Ok(()),
    };
    out.push(object);
    Ok(())
}

/// Decodes one object, naming the failing field, and fills in the default namespace.
fn decode<K>(value: Value, kind: &str, namespaced: bool) -> Result<K, String>
where
    K: DeserializeOwned
        + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
{
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let namespace = value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|namespace| !namespace.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE);
    let label = match (name.is_empty(), namespaced) {
        (true, _) => kind.to_owned(),
        (false, true) => format!("{kind} {namespace}/{name}"),
        (false, false) => format!("{kind} {name}"),
    };
    let mut object: K = serde_path_to_error::deserialize(value).map_err(|error| {
        format!(
            "{label}: invalid field `{}`: {}",
            error.path(),
            error.inner()
        )
    })?;
    let metadata = object.metadata_mut();
    if metadata.name.as_deref().unwrap_or("").is_empty() {
        return Err(format!("{kind}: missing field `metadata.name`"));
    }
    if namespaced {
        if metadata.namespace.as_deref().unwrap_or("").is_empty() {
            metadata.namespace = Some(DEFAULT_NAMESPACE.to_owned());
        }
    } else {
        metadata.namespace = None;
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_with_list() {
        let text = r#"
# leading comment
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: List
items:
- apiVersion: networking.k8s.io/v1
  kind: IngressClass
  metadata: {name: gangway}
  spec: {controller: gangway.dev/ingress-controller}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: ignored}
---
---
"#;
        let parsed = parse_manifests(text);
        assert_eq!(parsed.errors, vec![]);
        let refs: Vec<String> = parsed
            .objects
            .iter()
            .map(|o| o.object_ref().to_string())
            .collect();
        assert_eq!(refs, vec!["Service default/web", "IngressClass gangway"]);
    }

    #[test]
    fn json_document() {
        let text = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"tls","namespace":"web"},"type":"kubernetes.io/tls"}"#;
        let parsed = parse_manifests(text);
        assert_eq!(parsed.errors, vec![]);
        assert_eq!(parsed.objects[0].object_ref().to_string(), "Secret web/tls");
    }

    #[test]
    fn bad_document_is_named_and_others_parse() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\nkind: [unclosed\n---\napiVersion: v1\nkind: Service\nmetadata: {name: b}\n";
        let parsed = parse_manifests(text);
        assert_eq!(parsed.objects.len(), 2);
        assert_eq!(parsed.errors.len(), 1);
        assert_eq!(parsed.errors[0].document, 2);
        assert!(
            parsed.errors[0].message.contains("line 5,"),
            "{}",
            parsed.errors[0]
        );
    }

    #[test]
    fn wrong_field_type_names_the_field() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: eighty}]}\n";
        let parsed = parse_manifests(text);
        assert_eq!(parsed.errors.len(), 1);
        let message = &parsed.errors[0].message;
        assert!(message.contains("Service default/web"), "{message}");
        assert!(message.contains("spec.ports[0].port"), "{message}");

        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ports: [{port: eighty}]}\n";
        let message = &parse_manifests(text).errors[0].message;
        assert!(message.contains("Service shop/web"), "{message}");
    }

    fn ingress_list(items: usize) -> String {
        let mut text = String::from("apiVersion: v1\nkind: List\nitems:\n");
        for i in 0..items {
            text.push_str(&format!(
                "- apiVersion: networking.k8s.io/v1\n  kind: Ingress\n  \
                 metadata: {{name: web-{i}, namespace: apps}}\n  \
                 spec:\n    rules:\n    - host: web-{i}.example.com\n      http:\n        \
                 paths:\n        - path: /\n          pathType: Prefix\n          \
                 backend: {{service: {{name: web, port: {{number: 80}}}}}}\n"
            ));
        }
        text
    }

    #[test]
    fn list_beyond_the_default_parser_budget_parses() {
        // About 40 nodes per item: 10,000 items are 400,000 nodes, above serde-saphyr's
        // default limit of 250,000.
        let parsed = parse_manifests(&ingress_list(10_000));
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(parsed.objects.len(), 10_000);
    }

    #[test]
    fn document_over_the_node_limit_names_the_limit() {
        let text = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: a}}\n---\n{}",
            ingress_list(50)
        );
        let parsed = parse_with_limit(&text, 1_000);
        assert_eq!(parsed.objects.len(), 1, "the small document still parses");
        assert_eq!(parsed.errors.len(), 1);
        let error = &parsed.errors[0];
        assert_eq!(error.document, 2);
        // The `---` line counts as the document's first line, as in other parse errors.
        assert_eq!(
            error.message,
            "the document that starts at line 4 has more than 1000 YAML nodes; \
             split it into several documents or files"
        );
    }

    /// Returns a ConfigMap document whose `data` contains `levels` anchors, each a sequence of
    /// ten aliases of the one before: the last one expands to 10^levels scalars.
    fn nested_aliases(levels: usize) -> String {
        let mut text = String::from(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n",
        );
        for level in 1..levels {
            let items = vec![format!("*a{}", level - 1); 10].join(", ");
            text.push_str(&format!("  a{level}: &a{level} [{items}]\n"));
        }
        text
    }

    #[test]
    fn aliases_within_the_replay_limit_parse() {
        // 10^4 scalars, 13,560 replayed events.
        let parsed = parse_manifests(&nested_aliases(4));

        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(parsed.objects.len(), 0, "a ConfigMap is skipped");
    }

    #[test]
    fn alias_bomb_stops_at_the_replay_limit() {
        // 10^5 scalars, 135,780 replayed events: over the limit, under serde-saphyr's default
        // of 1,000,000.
        let parsed = parse_manifests(&nested_aliases(5));

        assert_eq!(parsed.errors.len(), 1);
        assert_eq!(
            parsed.errors[0].message,
            "YAML aliases in this file expand to more than 100000 parser events by the document \
             that starts at line 1, a limit against alias bombs; later documents were not read. \
             Write the repeated parts out or use fewer aliases"
        );
    }

    #[test]
    fn alias_limit_counts_the_whole_file() {
        // Each document expands to 10^4 scalars, well under the limit, but twelve of them
        // together are over it. Parsing stops at the first document over the limit.
        let plain = "apiVersion: v1\nkind: Service\nmetadata: {name: plain}\n";
        let mut text = String::new();
        for _ in 0..12 {
            text.push_str(&nested_aliases(4));
            text.push_str("---\n");
        }
        text.push_str(plain);

        let parsed = parse_manifests(&text);

        // Each document replays 13,560 events (120, 1,220 and 12,220 for its three levels of
        // aliases), so seven fit in the budget and the eighth does not.
        assert_eq!(parsed.errors.len(), 1, "{:?}", parsed.errors);
        assert_eq!(parsed.errors[0].document, 8);
        assert!(
            parsed.errors[0].message.starts_with(
                "YAML aliases in this file expand to more than 100000 parser events by the \
                 document that starts at line 63,"
            ),
            "{}",
            parsed.errors[0].message
        );
        assert!(parsed.objects.is_empty());
    }

    #[test]
    fn replayed_events_counted_without_expanding() {
        // A sequence replays its start, its items and its end.
        assert_eq!(
            replayed_events("a: &x [1, 2]\nb: *x\nc: *x\n", usize::MAX),
            8
        );
        // YAML 1.2 lets a flow mapping value follow the `:` of a quoted key directly.
        assert_eq!(replayed_events("{\"a\": &x [1], \"b\":*x}", usize::MAX), 3);
        // An alias inside an anchored node counts again each time that node is replayed:
        // `b` replays 2 × 3 events, and `c` replays all 8 of `b`.
        assert_eq!(
            replayed_events("a: &x [1]\nb: &y [*x, *x]\nc: *y\n", usize::MAX),
            14
        );
        // Without `&` nothing is replayed, whatever the `*`.
        assert_eq!(
            replayed_events("path: /api/*\nhost: \"*.example.com\"\n", 0),
            0
        );
    }

    /// Returns `nested_aliases(4)` with `copies` more aliases of its last anchor, then
    /// `tail`. It replays about 13,600 + 12,200 × `copies` events: 99,000 for seven copies.
    fn replaying_document(copies: usize, tail: &str) -> String {
        let mut text = nested_aliases(4);
        text.push_str(&format!("  b: [{}]\n", vec!["*a3"; copies].join(", ")));
        text.push_str(tail);
        text
    }

    fn is_alias_limit_message(error: &ParseError) -> bool {
        error.message.contains("a limit against alias bombs")
    }

    #[test]
    fn alias_limit_charges_documents_that_fail() {
        // The first document replays about 99,000 events and only then reaches a syntax
        // error. With the second one the file replays about 149,000.
        let text = [
            replaying_document(7, "  c: [unclosed\n"),
            replaying_document(3, ""),
        ]
        .join("---\n");

        let parsed = parse_manifests(&text);

        assert!(
            parsed.errors.iter().any(is_alias_limit_message),
            "no document was stopped by the alias limit: {:?}",
            parsed.errors
        );
        assert_eq!(parsed.errors.len(), 2, "{:?}", parsed.errors);
    }

    #[test]
    fn alias_limit_charges_merged_aliases() {
        // A 500-key mapping merged 60 times into one mapping replays about 60,000 events,
        // but the merged value contains its 500 keys once. With the second document the file
        // replays about 110,000 events.
        let keys: Vec<String> = (0..500).map(|key| format!("k{key}: v")).collect();
        let merges = vec!["*m"; 60].join(", ");
        let document = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: a}}\n\
             base: &m {{{}}}\ndata: {{<<: [{merges}]}}\n",
            keys.join(", ")
        );
        let text = [document, replaying_document(3, "")].join("---\n");

        let parsed = parse_manifests(&text);

        assert!(
            parsed.errors.iter().any(is_alias_limit_message),
            "two documents replayed about 110,000 events unstopped: {:?}",
            parsed.errors
        );
    }

    #[test]
    fn alias_limit_charges_aliases_after_json_keys() {
        // About 95,000 replayed events, as in `replaying_document`, but every alias follows
        // `":`, and the second document replays about 50,000 more.
        let mut document = String::from(
            "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"a\"},\n",
        );
        document.push_str("\"a0\": &a0 [x, x, x, x, x, x, x, x, x, x],\n");
        for level in 1..4 {
            let items: Vec<String> = (0..10)
                .map(|i| format!("\"k{i}\":*a{}", level - 1))
                .collect();
            document.push_str(&format!(
                "\"a{level}\": &a{level} {{{}}},\n",
                items.join(", ")
            ));
        }
        let copies: Vec<String> = (0..6).map(|i| format!("\"b{i}\":*a3")).collect();
        document.push_str(&format!("\"b\": {{{}}}}}\n", copies.join(", ")));
        assert!(
            serde_saphyr::from_str::<Value>(&document).is_ok(),
            "{document}"
        );
        let text = [document, replaying_document(3, "")].join("---\n");

        let parsed = parse_manifests(&text);

        assert!(
            parsed.errors.iter().any(is_alias_limit_message),
            "two documents replayed about 145,000 events unstopped: {:?}",
            parsed.errors
        );
    }

    #[test]
    fn missing_name_is_an_error() {
        let parsed = parse_manifests("apiVersion: v1\nkind: Service\nmetadata: {}\n");
        assert_eq!(parsed.objects.len(), 0);
        assert!(parsed.errors[0].message.contains("metadata.name"));
    }
}
