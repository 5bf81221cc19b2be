//! Watch streams: newline-delimited JSON watch events with the start, bookmark, selector
//! and expiry semantics of the real server.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use crate::error::ApiError;
use crate::object;
use crate::registry::ResourceType;
use crate::selector::Selectors;
use crate::store::{Change, ChangeType, Store, StoreError, WatchId};
use crate::table::{self, IncludeObject};
use crate::verbs::parse_revision;

/// Annotation on the bookmark that ends the initial events of a streaming list.
const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

/// Events buffered between the watch task and the connection.
const BODY_BUFFER: usize = 64;

/// Query parameters of a watch request.
#[derive(Debug, Default)]
pub struct WatchParams {
    /// Namespace from the path, `None` for all namespaces or a cluster-scoped type.
    pub namespace: Option<String>,
    /// Object name from a legacy `/watch/.../<name>` path.
    pub name: Option<String>,
    /// Label and field selectors.
    pub selectors: Selectors,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`.
    pub resource_version_match: Option<String>,
    /// `sendInitialEvents`.
    pub send_initial_events: Option<bool>,
    /// `allowWatchBookmarks`.
    pub allow_bookmarks: bool,
    /// `timeoutSeconds`.
    pub timeout: Option<Duration>,
    /// Set when the client asked for Table events.
    pub table: Option<IncludeObject>,
}

/// Response body of a watch: chunks sent by the watch task.
pub struct WatchBody {
    receiver: mpsc::Receiver<Bytes>,
}

impl Body for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.receiver
            .poll_recv(context)
            .map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Where a watch starts.
enum Start {
    /// Synthetic ADDED events for these objects, then changes after `revision`.
    /// `bookmark` is set when the client asked for the initial-events-end bookmark.
    Initial {
        objects: Vec<Value>,
        revision: u64,
        bookmark: bool,
    },
    /// The kept changes after `revision`, then live ones.
    Replay {
        changes: Vec<Arc<Change>>,
        revision: u64,
    },
    /// The requested resourceVersion is too old: one ERROR event, then the end.
    Expired(ApiError),
}

/// What a running watch needs.
struct Watch {
    resource: &'static ResourceType,
    params: WatchParams,
    store: Arc<Mutex<Store>>,
    id: WatchId,
    bookmark_interval: Duration,
    /// Highest resourceVersion this watch has sent or passed over.
    revision: u64,
}

/// Opens a watch and returns its response body.
///
/// Bad parameters return an `ApiError` before the stream starts. An expired
/// resourceVersion becomes an ERROR event in the stream, as the real server sends it.
pub fn start(
    store: &Arc<Mutex<Store>>,
    resource: &'static ResourceType,
    params: WatchParams,
    bookmark_interval: Duration,
) -> Result<WatchBody, ApiError> {
    let requested = params
        .resource_version
        .as_deref()
        .filter(|text| !text.is_empty());
    let start_with_state = requested.is_none_or(|text| text == "0");
    let send_initial = params.send_initial_events.unwrap_or(start_with_state);
    if params.send_initial_events == Some(true) {
        if params.resource_version_match.as_deref() != Some("NotOlderThan") {
            return Err(ApiError::BadRequest(
                "sendInitialEvents requires resourceVersionMatch=NotOlderThan".into(),
            ));
        }
        if !params.allow_bookmarks {
            return Err(ApiError::BadRequest(
                "sendInitialEvents requires allowWatchBookmarks=true".into(),
            ));
        }
    }
    let requested_revision = match requested {
        Some(text) => parse_revision(text)?,
        None => 0,
    };

    let (id, receiver, start) = {
        let mut store = store.lock().expect("store lock poisoned");
        let storage = resource.storage();
        let namespace = params.namespace.as_deref();
        let start = if send_initial {
            if requested_revision > store.revision() {
                return Err(crate::verbs::store_error(StoreError::TooLarge {
                    requested: requested_revision,
                    current: store.revision(),
                }));
            }
            Start::Initial {
                objects: store.list(storage, namespace),
                revision: store.revision(),
                bookmark: params.send_initial_events == Some(true),
            }
        } else {
            match store.changes_since(storage, namespace, requested_revision) {
                Ok(changes) => Start::Replay {
                    changes,
                    revision: requested_revision,
                },
                Err(error) => Start::Expired(ApiError::Expired(error.to_string())),
            }
        };
        let (id, receiver) = store.subscribe(storage, namespace);
        (id, receiver, start)
    };

    let (sender, body_receiver) = mpsc::channel(BODY_BUFFER);
    let watch = Watch {
        resource,
        params,
        store: Arc::clone(store),
        id,
        bookmark_interval,
        revision: 0,
    };
    tokio::spawn(watch.run(start, receiver, sender));
    Ok(WatchBody {
        receiver: body_receiver,
    })
}

impl Watch {
    async fn run(
        mut self,
        start: Start,
        mut changes: mpsc::UnboundedReceiver<Arc<Change>>,
        sender: mpsc::Sender<Bytes>,
    ) {
        let finished = self.stream(start, &mut changes, &sender).await;
        tracing::debug!(
            kind = self.resource.kind,
            namespace = self.params.namespace.as_deref().unwrap_or(""),
            reason = finished,
            "watch ended"
        );
        self.store
            .lock()
            .expect("store lock poisoned")
            .unsubscribe(self.id);
    }

    /// Sends events until the watch ends, and returns why it ended.
    async fn stream(
        &mut self,
        start: Start,
        changes: &mut mpsc::UnboundedReceiver<Arc<Change>>,
        sender: &mpsc::Sender<Bytes>,
    ) -> &'static str {
        match start {
            Start::Expired(error) => {
                let _ = sender.send(encode("ERROR", &error.to_status())).await;
                return "resource version expired";
            }
            Start::Initial {
                objects,
                revision,
                bookmark,
            } => {
                self.revision = revision;
                for stored in objects {
                    let object = self.resource.from_storage(stored);
                    if self.matches(&object) && !self.send(sender, "ADDED", object).await {
                        return "client went away";
                    }
                }
                if bookmark {
                    let mut marker = self.bookmark_object(revision);
                    marker["metadata"]["annotations"] = json!({INITIAL_EVENTS_END: "true"});
                    if sender.send(encode("BOOKMARK", &marker)).await.is_err() {
                        return "client went away";
                    }
                }
            }
            Start::Replay {
                changes: replay,
                revision,
            } => {
                self.revision = revision;
                for change in replay {
                    if !self.forward(sender, &change).await {
                        return "client went away";
                    }
                }
            }
        }

        let deadline = self.params.timeout.map(|timeout| Instant::now() + timeout);
        let mut bookmarks = tokio::time::interval_at(
            Instant::now() + self.bookmark_interval,
            self.bookmark_interval,
        );
        bookmarks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Some(change) => {
                        if !self.forward(sender, &change).await {
                            return "client went away";
                        }
                    }
                    None => return "watch dropped by the server",
                },
                _ = bookmarks.tick(), if self.params.allow_bookmarks => {
                    if !self.send_bookmark(changes, sender).await {
                        return "client went away";
                    }
                }
                _ = sleep_until_deadline(deadline) => return "timeout reached",
                _ = sender.closed() => return "client went away",
            }
        }
    }

    /// Sends a BOOKMARK with a resourceVersion this watch has fully delivered.
    async fn send_bookmark(
        &mut self,
        changes: &mut mpsc::UnboundedReceiver<Arc<Change>>,
        sender: &mpsc::Sender<Bytes>,
    ) -> bool {
        // The store sends each change under its lock before that lock is released, so
        // once the latest revision is read, every change up to it is already queued
        // here. Forwarding the queue first makes the bookmark truthful.
        let latest = self.store.lock().expect("store lock poisoned").revision();
        while let Ok(change) = changes.try_recv() {
            if !self.forward(sender, &change).await {
                return false;
            }
        }
        self.revision = self.revision.max(latest);
        let marker = self.bookmark_object(self.revision);
        sender.send(encode("BOOKMARK", &marker)).await.is_ok()
    }

    /// Sends the watch event a change produces for this watch, if any.
    async fn forward(&mut self, sender: &mpsc::Sender<Bytes>, change: &Change) -> bool {
        if change.revision <= self.revision {
            return true;
        }
        self.revision = change.revision;
        let object = self.resource.from_storage(change.object.clone());
        let now_matches = self.matches(&object);
        let event = match change.change_type {
            ChangeType::Added => now_matches.then_some(("ADDED", object)),
            ChangeType::Deleted => now_matches.then_some(("DELETED", object)),
            ChangeType::Modified => {
                let previous = change
                    .previous
                    .clone()
                    .map(|previous| self.resource.from_storage(previous));
                let matched_before = previous
                    .as_ref()
                    .is_some_and(|previous| self.matches(previous));
                match (matched_before, now_matches) {
                    (true, true) => Some(("MODIFIED", object)),
                    (false, true) => Some(("ADDED", object)),
                    (true, false) => {
                        // An object leaving the selector is reported as deleted, with its
                        // last matching content and this change's resourceVersion.
                        let mut last = previous.expect("matched_before implies a previous object");
                        object::metadata_mut(&mut last)
                            .insert("resourceVersion".into(), json!(change.revision.to_string()));
                        Some(("DELETED", last))
                    }
                    (false, false) => None,
                }
            }
        };
        match event {
            Some((event_type, object)) => self.send(sender, event_type, object).await,
            None => true,
        }
    }

    fn matches(&self, object: &Value) -> bool {
        self.params
            .name
            .as_deref()
            .is_none_or(|name| object::name(object) == name)
            && self.params.selectors.matches(object)
    }

    async fn send(&self, sender: &mpsc::Sender<Bytes>, event_type: &str, object: Value) -> bool {
        let object = match self.params.table {
            Some(include) => {
                let metadata = json!({"resourceVersion": object::resource_version(&object)});
                table::render(self.resource, &[object], include, metadata)
            }
            None => object,
        };
        sender.send(encode(event_type, &object)).await.is_ok()
    }

    fn bookmark_object(&self, revision: u64) -> Value {
        json!({
            "kind": self.resource.kind,
            "apiVersion": self.resource.api_version(),
            "metadata": {"resourceVersion": revision.to_string(), "creationTimestamp": null},
        })
    }
}

async fn sleep_until_deadline(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn encode(event_type: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": event_type, "object": object}))
        .expect("a JSON value always serializes");
    line.push(b'\n');
    Bytes::from(line)
}
