//! The object store: every object keyed by storage, namespace and name, one global
//! resourceVersion counter as etcd keeps, a bounded change history and the open watches.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::object;
use crate::registry::{DefaultContext, StorageKey};

/// A read that the store's history cannot serve.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The requested resourceVersion is older than the oldest kept change.
    #[error("too old resource version: {requested} ({oldest})")]
    Expired {
        /// The requested resourceVersion.
        requested: u64,
        /// The oldest resourceVersion a read can start from.
        oldest: u64,
    },

    /// The requested resourceVersion has not been reached yet.
    #[error("too large resource version: {requested}, current: {current}")]
    TooLarge {
        /// The requested resourceVersion.
        requested: u64,
        /// The latest resourceVersion.
        current: u64,
    },
}

/// Namespace and name of an object; cluster-scoped objects have an empty namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Object name.
    pub name: String,
}

impl ObjectKey {
    /// Builds the key of `object` from its metadata.
    pub fn of(object: &Value) -> Self {
        ObjectKey {
            namespace: object::namespace(object).to_string(),
            name: object::name(object).to_string(),
        }
    }
}

/// The type of a change, named as watch events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// The object was created.
    Added,
    /// The object was updated.
    Modified,
    /// The object was deleted.
    Deleted,
}

impl ChangeType {
    /// Returns the watch event type: `ADDED`, `MODIFIED` or `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One committed write, kept in the history and sent to watches.
#[derive(Debug)]
pub struct Change {
    /// resourceVersion the write got.
    pub revision: u64,
    /// Storage of the object.
    pub storage: StorageKey,
    /// Key of the object.
    pub key: ObjectKey,
    /// What happened.
    pub change_type: ChangeType,
    /// The object after the write. For a deletion, the last state with the deletion's
    /// resourceVersion, as the real server reports it.
    pub object: Value,
    /// The object before the write, absent for a creation.
    pub previous: Option<Value>,
}

/// Identifies an open watch in the store.
pub type WatchId = u64;

struct WatchEntry {
    storage: StorageKey,
    namespace: Option<String>,
    sender: mpsc::UnboundedSender<Arc<Change>>,
}

/// The store. Callers hold it behind one mutex, so every operation is atomic.
pub struct Store {
    revision: u64,
    objects: HashMap<StorageKey, BTreeMap<ObjectKey, Value>>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// A read at a resourceVersion below this one needs changes that are gone.
    oldest_revision: u64,
    watches: HashMap<WatchId, WatchEntry>,
    next_watch_id: WatchId,
    /// State for server-side defaults.
    pub defaults: DefaultContext,
}

impl Store {
    /// Creates an empty store that keeps at most `history_limit` changes.
    pub fn new(history_limit: usize) -> Self {
        Store {
            revision: 0,
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            oldest_revision: 0,
            watches: HashMap::new(),
            next_watch_id: 0,
            defaults: DefaultContext::default(),
        }
    }

    /// Returns the latest resourceVersion.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Returns the oldest resourceVersion a watch or an exact list can start from.
    pub fn oldest_revision(&self) -> u64 {
        self.oldest_revision
    }

    /// Returns one object.
    pub fn get(&self, storage: StorageKey, key: &ObjectKey) -> Option<&Value> {
        self.objects.get(&storage)?.get(key)
    }

    /// Returns the current objects of a storage, in one namespace or all, sorted by
    /// namespace and name.
    pub fn list(&self, storage: StorageKey, namespace: Option<&str>) -> Vec<Value> {
        let Some(objects) = self.objects.get(&storage) else {
            return Vec::new();
        };
        objects
            .iter()
            .filter(|(key, _)| namespace.is_none_or(|namespace| key.namespace == namespace))
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Returns the objects as they were at `revision`, by undoing the later changes.
    pub fn list_at(
        &self,
        storage: StorageKey,
        namespace: Option<&str>,
        revision: u64,
    ) -> Result<Vec<Value>, StoreError> {
        if revision > self.revision {
            return Err(StoreError::TooLarge {
                requested: revision,
                current: self.revision,
            });
        }
        if revision < self.oldest_revision {
            return Err(StoreError::Expired {
                requested: revision,
                oldest: self.oldest_revision,
            });
        }
        let mut objects: BTreeMap<ObjectKey, Value> =
            self.objects.get(&storage).cloned().unwrap_or_default();
        for change in self.history.iter().rev() {
            if change.revision <= revision {
                break;
            }
            if change.storage != storage {
                continue;
            }
            match &change.previous {
                Some(previous) => objects.insert(change.key.clone(), previous.clone()),
                None => objects.remove(&change.key),
            };
        }
        Ok(objects
            .into_iter()
            .filter(|(key, _)| namespace.is_none_or(|namespace| key.namespace == namespace))
            .map(|(_, object)| object)
            .collect())
    }

    /// Returns the changes after `revision` in one storage, oldest first.
    pub fn changes_since(
        &self,
        storage: StorageKey,
        namespace: Option<&str>,
        revision: u64,
    ) -> Result<Vec<Arc<Change>>, StoreError> {
        if revision < self.oldest_revision {
            return Err(StoreError::Expired {
                requested: revision,
                oldest: self.oldest_revision,
            });
        }
        Ok(self
            .history
            .iter()
            .filter(|change| change.revision > revision && change.storage == storage)
            .filter(|change| namespace.is_none_or(|namespace| change.key.namespace == namespace))
            .cloned()
            .collect())
    }

    /// Writes `object` under the next resourceVersion and returns the stored copy.
    pub fn put(&mut self, storage: StorageKey, mut object: Value) -> Value {
        self.revision += 1;
        let revision = self.revision;
        object::metadata_mut(&mut object)
            .insert("resourceVersion".into(), json!(revision.to_string()));
        let key = ObjectKey::of(&object);
        let previous = self
            .objects
            .entry(storage)
            .or_default()
            .insert(key.clone(), object.clone());
        let change_type = if previous.is_some() {
            ChangeType::Modified
        } else {
            ChangeType::Added
        };
        self.record(Change {
            revision,
            storage,
            key,
            change_type,
            object: object.clone(),
            previous,
        });
        object
    }

    /// Deletes an object under the next resourceVersion and returns its last state.
    pub fn delete(&mut self, storage: StorageKey, key: &ObjectKey) -> Option<Value> {
        let previous = self.objects.get_mut(&storage)?.remove(key)?;
        self.revision += 1;
        let revision = self.revision;
        let mut object = previous.clone();
        object::metadata_mut(&mut object)
            .insert("resourceVersion".into(), json!(revision.to_string()));
        self.record(Change {
            revision,
            storage,
            key: key.clone(),
            change_type: ChangeType::Deleted,
            object: object.clone(),
            previous: Some(previous),
        });
        Some(object)
    }

    fn record(&mut self, change: Change) {
        let change = Arc::new(change);
        // A closed receiver belongs to a watch that ended. Dropping its entry here keeps
        // the table from growing when a watch task could not unregister itself.
        self.watches.retain(|_, watch| {
            let relevant = watch.storage == change.storage
                && watch
                    .namespace
                    .as_deref()
                    .is_none_or(|namespace| namespace == change.key.namespace);
            !relevant || watch.sender.send(Arc::clone(&change)).is_ok()
        });
        self.history.push_back(change);
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.oldest_revision = dropped.revision;
            }
        }
    }

    /// Opens a watch on one storage, in one namespace or all. Changes committed after
    /// this call arrive on the returned receiver.
    pub fn subscribe(
        &mut self,
        storage: StorageKey,
        namespace: Option<&str>,
    ) -> (WatchId, mpsc::UnboundedReceiver<Arc<Change>>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.next_watch_id += 1;
        let id = self.next_watch_id;
        self.watches.insert(
            id,
            WatchEntry {
                storage,
                namespace: namespace.map(str::to_string),
                sender,
            },
        );
        (id, receiver)
    }

    /// Closes one watch.
    pub fn unsubscribe(&mut self, id: WatchId) {
        self.watches.remove(&id);
    }

    /// Closes every open watch and returns how many there were. Each watch stream ends
    /// after sending what it has already received.
    pub fn drop_watches(&mut self) -> usize {
        let count = self.watches.len();
        self.watches.clear();
        count
    }

    /// Returns the number of open watches.
    pub fn watch_count(&self) -> usize {
        self.watches.len()
    }

    /// Forgets the whole change history, as an etcd compaction at the latest revision
    /// does: reads from any earlier resourceVersion then fail with 410 Gone.
    pub fn compact(&mut self) {
        self.history.clear();
        self.oldest_revision = self.revision;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PODS: StorageKey = ("", "pods");

    fn pod(name: &str, phase: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default"}, "status": {"phase": phase}})
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    #[test]
    fn resource_versions_are_global_and_increasing() {
        let mut store = Store::new(10);
        let first = store.put(PODS, pod("a", "Pending"));
        let other = store.put(
            ("", "services"),
            json!({"metadata": {"name": "s", "namespace": "default"}}),
        );
        let second = store.put(PODS, pod("a", "Running"));
        assert_eq!(object::resource_version(&first), "1");
        assert_eq!(object::resource_version(&other), "2");
        assert_eq!(object::resource_version(&second), "3");
        assert_eq!(store.revision(), 3);
    }

    #[test]
    fn list_at_undoes_later_changes() {
        let mut store = Store::new(10);
        store.put(PODS, pod("a", "Pending"));
        store.put(PODS, pod("b", "Pending"));
        store.put(PODS, pod("a", "Running"));
        store.delete(PODS, &key("b"));

        let at_two = store.list_at(PODS, None, 2).unwrap();
        assert_eq!(at_two.len(), 2);
        assert_eq!(at_two[0]["status"]["phase"], "Pending");
        let now = store.list_at(PODS, None, 4).unwrap();
        assert_eq!(now.len(), 1);
        assert_eq!(now[0]["status"]["phase"], "Running");
        assert_eq!(
            store.list_at(PODS, None, 9),
            Err(StoreError::TooLarge {
                requested: 9,
                current: 4
            })
        );
    }

    #[test]
    fn bounded_history_expires_old_revisions() {
        let mut store = Store::new(2);
        for phase in ["a", "b", "c", "d"] {
            store.put(PODS, pod("a", phase));
        }
        assert_eq!(store.oldest_revision(), 2);
        assert!(store.changes_since(PODS, None, 1).is_err());
        let changes = store.changes_since(PODS, None, 2).unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].revision, 3);
    }

    #[test]
    fn compaction_expires_everything_before_now() {
        let mut store = Store::new(100);
        store.put(PODS, pod("a", "Pending"));
        store.put(PODS, pod("a", "Running"));
        store.compact();
        assert_eq!(
            store.changes_since(PODS, None, 1).unwrap_err(),
            StoreError::Expired {
                requested: 1,
                oldest: 2
            }
        );
        assert!(store.changes_since(PODS, None, 2).unwrap().is_empty());
    }

    #[test]
    fn watches_receive_only_their_storage_and_namespace() {
        let mut store = Store::new(10);
        let (_, mut all_pods) = store.subscribe(PODS, None);
        let (_, mut other_namespace) = store.subscribe(PODS, Some("kube-system"));
        store.put(PODS, pod("a", "Pending"));
        store.put(
            ("", "services"),
            json!({"metadata": {"name": "s", "namespace": "default"}}),
        );
        store.delete(PODS, &key("a"));

        let added = all_pods.try_recv().unwrap();
        assert_eq!(added.change_type, ChangeType::Added);
        let deleted = all_pods.try_recv().unwrap();
        assert_eq!(deleted.change_type, ChangeType::Deleted);
        assert_eq!(object::resource_version(&deleted.object), "3");
        assert!(all_pods.try_recv().is_err());
        assert!(other_namespace.try_recv().is_err());

        assert_eq!(store.drop_watches(), 2);
        assert!(matches!(
            all_pods.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
    }
}
