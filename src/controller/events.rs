//! Kubernetes Events for the compiler's problems: one Warning per distinct problem on an
//! existing object, sent once while the problem persists.

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::time::Instant;

use super::retry::{Backoff, Failures};
use crate::status::Problem;
use crate::store::{ObjectRef, Store};

/// Maximum size of an Event's `note` that the API server accepts (events.k8s.io/v1).
const MAX_NOTE_BYTES: usize = 1024;

/// Maximum length of an Event's `reason` that the API server accepts (events.k8s.io/v1).
const MAX_REASON_BYTES: usize = 128;

/// Maximum time for sending one Event, well below kube's 295 s response timeout so that a
/// hung request cannot stall the other writes.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The `action` of every Event Gangway sends: it compiled the object into routes.
const ACTION: &str = "Compile";

/// Errors of sending one Event. Both are retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The API server rejected the Event, or could not be reached.
    #[error("failed to send Event {reason} about {kind} {object}")]
    Send {
        /// Kind of the object the Event is about.
        kind: String,
        /// Namespace and name of that object.
        object: String,
        /// The Event reason.
        reason: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The request got no response in time.
    #[error("timed out after {timeout:?} sending Event {reason} about {kind} {object}")]
    TimedOut {
        /// Kind of the object the Event is about.
        kind: String,
        /// Namespace and name of that object.
        object: String,
        /// The Event reason.
        reason: String,
        /// The time waited.
        timeout: Duration,
    },
}

/// Identity of an Event for deduplication: the object's uid (a recreated object gets its
/// Events again), the reason and the text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventKey {
    /// `metadata.uid` of the object the Event is about.
    pub uid: String,
    /// The problem's reason.
    pub reason: String,
    /// The Event text: the field, then the message.
    pub note: String,
}

/// An Event to send about one problem.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedEvent {
    /// Identity of the Event.
    pub key: EventKey,
    /// The object the Event is about, with its uid.
    pub regarding: ObjectReference,
}

/// Resolves each problem to an Event about an object in `store`.
///
/// Problems about objects that are not Kubernetes objects (a manifest file) or that are no
/// longer in the cache are skipped: an Event must name an object by uid. Repeats in the
/// report collapse into one Event.
pub fn plan(store: &Store, problems: &[Problem]) -> Vec<PlannedEvent> {
    let mut seen = HashSet::new();
    let mut events = Vec::new();
    for problem in problems {
        let Some(regarding) = object_reference(store, &problem.object, &problem.field) else {
            tracing::debug!(
                kind = %problem.object.kind,
                namespace = %problem.object.key.namespace,
                name = %problem.object.key.name,
                reason = %problem.reason,
                "skipped Event for an object that is not in the cache"
            );
            continue;
        };
        let key = EventKey {
            uid: regarding.uid.clone().unwrap_or_default(),
            reason: truncate(&problem.reason, MAX_REASON_BYTES).to_owned(),
            note: truncate(&note(problem), MAX_NOTE_BYTES).to_owned(),
        };
        if seen.insert(key.clone()) {
            events.push(PlannedEvent { key, regarding });
        }
    }
    events
}

/// Builds the Event text: `<field>: <message>`, or the message alone for a problem about the
/// whole object.
fn note(problem: &Problem) -> String {
    if problem.field.is_empty() {
        problem.message.clone()
    } else {
        format!("{}: {}", problem.field, problem.message)
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Looks up the object a problem names and returns a reference with its uid, or `None` when
/// the kind is not one Gangway caches or the object is gone.
fn object_reference(store: &Store, object: &ObjectRef, field: &str) -> Option<ObjectReference> {
    let key = &object.key;
    let (api_version, metadata) = match object.kind.as_str() {
        "Ingress" => ("networking.k8s.io/v1", &store.ingresses.get(key)?.metadata),
        "IngressClass" => (
            "networking.k8s.io/v1",
            &store.ingress_classes.get(key)?.metadata,
        ),
        "Service" => ("v1", &store.services.get(key)?.metadata),
        "EndpointSlice" => (
            "discovery.k8s.io/v1",
            &store.endpoint_slices.get(key)?.metadata,
        ),
        "Secret" => ("v1", &store.secrets.get(key)?.metadata),
        _ => return None,
    };
    let uid = metadata.uid.clone().filter(|uid| !uid.is_empty())?;
    Some(ObjectReference {
        api_version: Some(api_version.to_owned()),
        kind: Some(object.kind.clone()),
        namespace: metadata.namespace.clone(),
        name: metadata.name.clone(),
        uid: Some(uid),
        field_path: (!field.is_empty()).then(|| field.to_owned()),
        ..ObjectReference::default()
    })
}

/// The set of Events already sent for problems that still persist.
#[derive(Debug, Default)]
pub struct EventDedupe {
    sent: HashSet<EventKey>,
}

impl EventDedupe {
    /// Returns the events of `current` not sent yet. Sent Events whose problem is gone are
    /// dropped from the set, so a problem that comes back is reported again.
    pub fn unsent(&mut self, current: &[PlannedEvent]) -> Vec<PlannedEvent> {
        let keys: HashSet<&EventKey> = current.iter().map(|event| &event.key).collect();
        self.sent.retain(|key| keys.contains(key));
        current
            .iter()
            .filter(|event| !self.sent.contains(&event.key))
            .cloned()
            .collect()
    }

    /// Records that the Event for `key` was sent.
    pub fn mark_sent(&mut self, key: EventKey) {
        self.sent.insert(key);
    }

    /// Clears the set of sent Events.
    pub fn clear(&mut self) {
        self.sent.clear();
    }
}

/// Counts of one sync.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncOutcome {
    /// Events sent.
    pub sent: usize,
    /// Events that failed and will be retried.
    pub failed: usize,
}

/// Sends the Events while this replica leads.
pub struct EventWriter {
    client: kube::Client,
    reporter: Reporter,
    dedupe: EventDedupe,
    failures: Failures<EventKey>,
}

impl EventWriter {
    /// Creates a writer that reports as `controller` (the Events' `reportingController`) from
    /// `instance` (`reportingInstance`, the replica's identity).
    pub fn new(client: kube::Client, controller: &str, instance: &str) -> Self {
        let reporter = Reporter {
            controller: controller.to_owned(),
            instance: Some(instance.to_owned()),
        };
        Self {
            client,
            reporter,
            dedupe: EventDedupe::default(),
            failures: Failures::new(Backoff::DEFAULT),
        }
    }

    /// Sends an Event for each problem not reported yet. `still_leading` is checked before
    /// each Event.
    pub async fn sync(
        &mut self,
        store: &Store,
        problems: &[Problem],
        still_leading: impl Fn() -> bool,
    ) -> SyncOutcome {
        let current = plan(store, problems);
        let keys: HashSet<&EventKey> = current.iter().map(|event| &event.key).collect();
        self.failures.retain(|key| keys.contains(key));

        let mut outcome = SyncOutcome::default();
        for event in self.dedupe.unsent(&current) {
            if !still_leading() {
                break;
            }
            if !self.failures.is_due(&event.key, Instant::now()) {
                continue;
            }
            match self.send(&event).await {
                Ok(()) => {
                    outcome.sent += 1;
                    self.failures.record_success(&event.key);
                    self.dedupe.mark_sent(event.key);
                }
                Err(error) => {
                    outcome.failed += 1;
                    if self.failures.record_failure(event.key, Instant::now()) {
                        tracing::warn!(
                            kind = event.regarding.kind.as_deref().unwrap_or_default(),
                            namespace = event.regarding.namespace.as_deref().unwrap_or_default(),
                            name = event.regarding.name.as_deref().unwrap_or_default(),
                            error = &error as &dyn std::error::Error,
                            "failed to send Event, retrying with backoff"
                        );
                    }
                }
            }
        }
        outcome
    }

    async fn send(&self, event: &PlannedEvent) -> Result<(), EventError> {
        let kube_event = Event {
            type_: EventType::Warning,
            reason: event.key.reason.clone(),
            note: Some(event.key.note.clone()),
            action: ACTION.to_owned(),
            secondary: None,
        };
        let kind = event.regarding.kind.clone().unwrap_or_default();
        let namespace = event.regarding.namespace.clone().unwrap_or_default();
        let name = event.regarding.name.clone().unwrap_or_default();
        let object = crate::store::ObjectKey::new(namespace.clone(), name.clone()).to_string();

        // A fresh Recorder per Event: kube-runtime 4.2's Recorder caches Events by object,
        // reason and action, and turns a second one within 6 minutes into a count increase
        // of the first, keeping the first text. A problem whose message changed would then
        // show its old message. The dedupe in `sync` already sends each problem only once.
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        let request = recorder.publish(&kube_event, &event.regarding);
        match tokio::time::timeout(SEND_TIMEOUT, request).await {
            Ok(Ok(())) => {
                tracing::debug!(
                    kind,
                    namespace,
                    name,
                    reason = %event.key.reason,
                    "sent Event"
                );
                Ok(())
            }
            Ok(Err(source)) => Err(EventError::Send {
                kind,
                object,
                reason: event.key.reason.clone(),
                source,
            }),
            Err(_) => Err(EventError::TimedOut {
                kind,
                object,
                reason: event.key.reason.clone(),
                timeout: SEND_TIMEOUT,
            }),
        }
    }

    /// Returns the earliest time a failed Event is due again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.failures.next_retry()
    }

    /// Clears the record of sent Events when this replica stops leading. A replica that leads again
    /// reports the problems that persist once more, because another leader may have come and
    /// gone in between.
    pub fn reset(&mut self) {
        self.dedupe.clear();
        self.failures.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::ObjectKey;

    fn store_with_ingress(name: &str, uid: &str) -> Store {
        let mut store = Store::default();
        let ingress = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "shop", "uid": uid}
        }))
        .expect("test Ingress is valid");
        store
            .ingresses
            .insert(ObjectKey::new("shop", name), Arc::new(ingress));
        store
    }

    fn problem(name: &str, field: &str, reason: &str, message: &str) -> Problem {
        Problem::error(
            ObjectRef::new("Ingress", ObjectKey::new("shop", name)),
            field,
            reason,
            message,
        )
    }

    #[test]
    fn event_names_object_uid_and_field() {
        let store = store_with_ingress("web", "uid-1");
        let events = plan(
            &store,
            &[problem(
                "web",
                "spec.rules[0].host",
                "InvalidHost",
                "host \"a b\" is not a DNS name",
            )],
        );
        assert_eq!(events.len(), 1);
        let event = &events[0];
        assert_eq!(event.key.uid, "uid-1");
        assert_eq!(event.key.reason, "InvalidHost");
        assert_eq!(
            event.key.note,
            "spec.rules[0].host: host \"a b\" is not a DNS name"
        );
        assert_eq!(event.regarding.kind.as_deref(), Some("Ingress"));
        assert_eq!(
            event.regarding.api_version.as_deref(),
            Some("networking.k8s.io/v1")
        );
        assert_eq!(event.regarding.namespace.as_deref(), Some("shop"));
        assert_eq!(event.regarding.name.as_deref(), Some("web"));
        assert_eq!(
            event.regarding.field_path.as_deref(),
            Some("spec.rules[0].host")
        );
    }

    #[test]
    fn whole_object_problem_note_is_message() {
        let store = store_with_ingress("web", "uid-1");
        let events = plan(&store, &[problem("web", "", "NoRules", "no rules")]);
        assert_eq!(events[0].key.note, "no rules");
        assert_eq!(events[0].regarding.field_path, None);
    }

    #[test]
    fn problems_without_cached_object_are_skipped() {
        let store = store_with_ingress("web", "uid-1");
        let file_problem = Problem::error(
            ObjectRef::new("File", ObjectKey::cluster("/etc/gangway/bad.yaml")),
            "",
            "ParseError",
            "document 1: invalid YAML",
        );
        let events = plan(
            &store,
            &[problem("deleted", "", "NoRules", "no rules"), file_problem],
        );
        assert_eq!(events, vec![]);
    }

    #[test]
    fn repeated_problem_collapses() {
        let store = store_with_ingress("web", "uid-1");
        let same = problem("web", "spec", "Invalid", "bad");
        let events = plan(&store, &[same.clone(), same]);
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn long_note_is_truncated_on_char_boundary() {
        let store = store_with_ingress("web", "uid-1");
        let message = "é".repeat(600);
        let events = plan(&store, &[problem("web", "", "Invalid", &message)]);
        assert!(events[0].key.note.len() <= MAX_NOTE_BYTES);
        assert_eq!(events[0].key.note.len(), 1024);
    }

    #[test]
    fn dedupe_sends_each_problem_once_while_it_persists() {
        let store = store_with_ingress("web", "uid-1");
        let a = problem("web", "spec", "A", "first");
        let b = problem("web", "spec", "B", "second");
        let mut dedupe = EventDedupe::default();

        let round1 = dedupe.unsent(&plan(&store, std::slice::from_ref(&a)));
        assert_eq!(round1.len(), 1);
        for event in round1 {
            dedupe.mark_sent(event.key);
        }

        let round2 = dedupe.unsent(&plan(&store, &[a.clone(), b.clone()]));
        let reasons: Vec<_> = round2.iter().map(|e| e.key.reason.as_str()).collect();
        assert_eq!(reasons, vec!["B"], "A was sent already");
    }

    #[test]
    fn dedupe_resends_problem_that_came_back() {
        let store = store_with_ingress("web", "uid-1");
        let a = problem("web", "spec", "A", "first");
        let mut dedupe = EventDedupe::default();
        for event in dedupe.unsent(&plan(&store, std::slice::from_ref(&a))) {
            dedupe.mark_sent(event.key);
        }

        assert_eq!(dedupe.unsent(&plan(&store, &[])), vec![], "problem fixed");
        assert_eq!(
            dedupe.unsent(&plan(&store, &[a])).len(),
            1,
            "problem is back"
        );
    }

    #[test]
    fn dedupe_resends_for_recreated_object() {
        let a = problem("web", "spec", "A", "first");
        let mut dedupe = EventDedupe::default();
        let before = plan(
            &store_with_ingress("web", "uid-1"),
            std::slice::from_ref(&a),
        );
        for event in dedupe.unsent(&before) {
            dedupe.mark_sent(event.key);
        }

        let after = plan(&store_with_ingress("web", "uid-2"), &[a]);
        assert_eq!(dedupe.unsent(&after).len(), 1, "new uid, new Event");
    }

    #[test]
    fn dedupe_resends_changed_message() {
        let store = store_with_ingress("web", "uid-1");
        let mut dedupe = EventDedupe::default();
        for event in dedupe.unsent(&plan(&store, &[problem("web", "spec", "A", "old")])) {
            dedupe.mark_sent(event.key);
        }
        let changed = dedupe.unsent(&plan(&store, &[problem("web", "spec", "A", "new")]));
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].key.note, "spec: new");
    }
}
