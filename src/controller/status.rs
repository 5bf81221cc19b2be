//! Ingress status: which Ingresses get Gangway's addresses in `status.loadBalancer.ingress`, and
//! the merge patches on the status subresource that put them there or take them away.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, Patch, PatchParams};
use tokio::time::Instant;

use super::address::{self, PublishAddress};
use super::retry::{Backoff, Failures};
use crate::store::ObjectKey;

/// Maximum time for one status patch. kube's client waits up to 295 s for a response, which
/// would stall every other write behind a hung request.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of one status write. Both are retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The API server rejected the patch, or could not be reached.
    #[error("failed to patch the status of Ingress {ingress}")]
    Patch {
        /// The Ingress.
        ingress: ObjectKey,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The patch got no response in time.
    #[error("timed out after {timeout:?} patching the status of Ingress {ingress}")]
    TimedOut {
        /// The Ingress.
        ingress: ObjectKey,
        /// The time waited.
        timeout: Duration,
    },
}

/// One planned write of `status.loadBalancer.ingress`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusWrite {
    /// The Ingress to patch.
    pub ingress: ObjectKey,
    /// The addresses to write; empty clears the list.
    pub addresses: Vec<PublishAddress>,
    /// `metadata.resourceVersion` of the cached Ingress the write was planned from.
    pub resource_version: Option<String>,
}

/// A write that succeeded but that the cache may not show yet, because the watch event that
/// carries it has not arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingWrite {
    /// `metadata.resourceVersion` of the Ingress before the write. While the cache still shows
    /// this version, the planner assumes the written addresses instead of the cached ones.
    pub resource_version: Option<String>,
    /// The addresses written.
    pub addresses: Vec<PublishAddress>,
}

/// Everything the planner reads.
#[derive(Clone, Copy, Debug)]
pub struct StatusInput<'a> {
    /// Every Ingress in the cache.
    pub ingresses: &'a BTreeMap<ObjectKey, Arc<Ingress>>,
    /// The Ingresses of Gangway's class, from the compiler's report.
    pub owned: &'a [ObjectKey],
    /// The addresses to publish, normalized. Empty when they are not known yet (the publish
    /// Service is missing, or its load balancer is still being provisioned): then no owned
    /// Ingress is written, so a known address is never replaced by an empty list.
    pub addresses: &'a [PublishAddress],
    /// Every address this process has published. An Ingress that is not ours and whose status
    /// contains one of them is cleared.
    pub published: &'a BTreeSet<PublishAddress>,
    /// Writes not yet visible in the cache, by Ingress.
    pub pending: &'a HashMap<ObjectKey, PendingWrite>,
}

/// Plans the status writes that make the cache match the report, in Ingress key order.
///
/// An owned Ingress gets exactly `addresses`. An Ingress that is not owned (it left
/// Gangway's class, or never was in it) is cleared only when its status contains an address
/// Gangway published, so the addresses another controller wrote stay untouched. An Ingress
/// whose status already has the planned value is not written.
pub fn plan(input: StatusInput<'_>) -> Vec<StatusWrite> {
    let owned: BTreeSet<&ObjectKey> = input.owned.iter().collect();
    let mut writes = Vec::new();

    for (key, ingress) in input.ingresses {
        let resource_version = ingress.metadata.resource_version.clone();
        let current = match input.pending.get(key) {
            Some(pending) if pending.resource_version == resource_version => {
                pending.addresses.clone()
            }
            _ => current_addresses(ingress),
        };

        let desired = if owned.contains(key) {
            if input.addresses.is_empty() {
                continue;
            }
            input.addresses.to_vec()
        } else if current
            .iter()
            .any(|address| input.published.contains(address))
        {
            Vec::new()
        } else {
            continue;
        };

        if current != desired {
            writes.push(StatusWrite {
                ingress: key.clone(),
                addresses: desired,
                resource_version,
            });
        }
    }
    writes
}

/// Reads the normalized addresses of an Ingress's `status.loadBalancer.ingress`.
fn current_addresses(ingress: &Ingress) -> Vec<PublishAddress> {
    ingress
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|load_balancer| load_balancer.ingress.as_deref())
        .map(address::from_ingress_status)
        .unwrap_or_default()
}

/// Builds the merge patch for the status subresource. A JSON merge patch replaces a list as a
/// whole, so the patch sets the full list; an empty list clears it.
pub fn status_patch(addresses: &[PublishAddress]) -> serde_json::Value {
    let entries: Vec<_> = addresses.iter().map(PublishAddress::to_status).collect();
    serde_json::json!({ "status": { "loadBalancer": { "ingress": entries } } })
}

/// Counts of one sync, for tests and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncOutcome {
    /// Writes that succeeded.
    pub written: usize,
    /// Writes that failed and will be retried.
    pub failed: usize,
    /// Writes held back because their Ingress is still in backoff after a failure.
    pub deferred: usize,
}

/// Writes Ingress status while this replica leads. It keeps the state that outlives one
/// sync: the addresses published so far, the writes the cache does not show yet, and the
/// backoff of failed writes.
pub struct StatusWriter {
    client: kube::Client,
    field_manager: String,
    published: BTreeSet<PublishAddress>,
    pending: HashMap<ObjectKey, PendingWrite>,
    failures: Failures<ObjectKey>,
}

impl StatusWriter {
    /// Creates a writer whose patches are attributed to `field_manager`.
    pub fn new(client: kube::Client, field_manager: impl Into<String>) -> Self {
        Self {
            client,
            field_manager: field_manager.into(),
            // TODO: keep the published addresses across restarts (for example in an annotation
            // on the Lease), so that an Ingress that left Gangway's class while no replica ran
            // is cleared too. Today the set starts empty in each process.
            published: BTreeSet::new(),
            pending: HashMap::new(),
            failures: Failures::new(Backoff::DEFAULT),
        }
    }

    /// Brings the status of every cached Ingress in line with `owned` and `addresses`.
    /// `still_leading` is checked before each write, so a replica that lost the Lease stops
    /// writing at once.
    pub async fn sync(
        &mut self,
        ingresses: &BTreeMap<ObjectKey, Arc<Ingress>>,
        owned: &[ObjectKey],
        addresses: &[PublishAddress],
        still_leading: impl Fn() -> bool,
    ) -> SyncOutcome {
        self.published.extend(addresses.iter().cloned());
        // Forget what the cache has caught up with, and Ingresses that are gone.
        self.pending.retain(|key, pending| {
            ingresses.get(key).is_some_and(|ingress| {
                ingress.metadata.resource_version == pending.resource_version
            })
        });
        self.failures.retain(|key| ingresses.contains_key(key));

        let writes = plan(StatusInput {
            ingresses,
            owned,
            addresses,
            published: &self.published,
            pending: &self.pending,
        });

        let mut outcome = SyncOutcome::default();
        for write in writes {
            if !still_leading() {
                break;
            }
            if !self.failures.is_due(&write.ingress, Instant::now()) {
                outcome.deferred += 1;
                continue;
            }
            match self.write(&write).await {
                Ok(()) => {
                    outcome.written += 1;
                    if let Some(failures) = self.failures.record_success(&write.ingress) {
                        tracing::info!(
                            kind = "Ingress",
                            namespace = %write.ingress.namespace,
                            name = %write.ingress.name,
                            failures,
                            "wrote Ingress status after earlier failures"
                        );
                    }
                    self.pending.insert(
                        write.ingress.clone(),
                        PendingWrite {
                            resource_version: write.resource_version.clone(),
                            addresses: write.addresses.clone(),
                        },
                    );
                }
                // The Ingress was deleted after the snapshot was compiled: nothing to write,
                // and the next sync no longer plans it.
                Err(StatusError::Patch {
                    source: kube::Error::Api(status),
                    ..
                }) if status.code == 404 => {
                    self.failures.record_success(&write.ingress);
                    tracing::debug!(
                        kind = "Ingress",
                        namespace = %write.ingress.namespace,
                        name = %write.ingress.name,
                        "skipped status of an Ingress deleted meanwhile"
                    );
                }
                Err(error) => {
                    outcome.failed += 1;
                    let first = self
                        .failures
                        .record_failure(write.ingress.clone(), Instant::now());
                    if first {
                        tracing::warn!(
                            kind = "Ingress",
                            namespace = %write.ingress.namespace,
                            name = %write.ingress.name,
                            error = &error as &dyn std::error::Error,
                            "failed to write Ingress status, retrying with backoff"
                        );
                    } else {
                        tracing::debug!(
                            kind = "Ingress",
                            namespace = %write.ingress.namespace,
                            name = %write.ingress.name,
                            error = &error as &dyn std::error::Error,
                            "failed to write Ingress status again"
                        );
                    }
                }
            }
        }
        outcome
    }

    async fn write(&self, write: &StatusWrite) -> Result<(), StatusError> {
        let api: Api<Ingress> = Api::namespaced(self.client.clone(), &write.ingress.namespace);
        let params = PatchParams {
            field_manager: Some(self.field_manager.clone()),
            ..PatchParams::default()
        };
        let patch = Patch::Merge(status_patch(&write.addresses));
        let request = api.patch_status(&write.ingress.name, &params, &patch);
        match tokio::time::timeout(WRITE_TIMEOUT, request).await {
            Ok(Ok(_)) => {}
            Ok(Err(source)) => {
                return Err(StatusError::Patch {
                    ingress: write.ingress.clone(),
                    source,
                });
            }
            Err(_) => {
                return Err(StatusError::TimedOut {
                    ingress: write.ingress.clone(),
                    timeout: WRITE_TIMEOUT,
                });
            }
        }
        tracing::info!(
            kind = "Ingress",
            namespace = %write.ingress.namespace,
            name = %write.ingress.name,
            addresses = ?write.addresses,
            "wrote Ingress status"
        );
        Ok(())
    }

    /// Returns the earliest time a failed write is due again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.failures.next_retry()
    }

    /// Drops the backoff and pending writes, when this replica stops leading. The published
    /// addresses are kept: they are still Gangway's if it leads again.
    pub fn reset(&mut self) {
        self.pending.clear();
        self.failures.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(address: &str) -> PublishAddress {
        PublishAddress::Ip(address.to_owned())
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey::new("shop", name)
    }

    /// Builds an Ingress `shop/<name>` at `resource_version` whose status lists `addresses`.
    fn ingress(name: &str, resource_version: &str, addresses: &[&str]) -> Arc<Ingress> {
        let entries: Vec<_> = addresses
            .iter()
            .map(|a| serde_json::json!({"ip": a}))
            .collect();
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": "shop", "resourceVersion": resource_version},
                "status": {"loadBalancer": {"ingress": entries}}
            }))
            .expect("test Ingress is valid"),
        )
    }

    fn cache(ingresses: &[Arc<Ingress>]) -> BTreeMap<ObjectKey, Arc<Ingress>> {
        ingresses
            .iter()
            .map(|i| (key(i.metadata.name.as_deref().unwrap()), i.clone()))
            .collect()
    }

    struct Case {
        ingresses: BTreeMap<ObjectKey, Arc<Ingress>>,
        owned: Vec<ObjectKey>,
        addresses: Vec<PublishAddress>,
        published: BTreeSet<PublishAddress>,
        pending: HashMap<ObjectKey, PendingWrite>,
    }

    impl Case {
        fn plan(&self) -> Vec<(String, Vec<PublishAddress>)> {
            plan(StatusInput {
                ingresses: &self.ingresses,
                owned: &self.owned,
                addresses: &self.addresses,
                published: &self.published,
                pending: &self.pending,
            })
            .into_iter()
            .map(|write| (write.ingress.name, write.addresses))
            .collect()
        }
    }

    fn case(ingresses: &[Arc<Ingress>], owned: &[&str], addresses: &[&str]) -> Case {
        let addresses: Vec<_> = addresses.iter().map(|a| ip(a)).collect();
        Case {
            ingresses: cache(ingresses),
            owned: owned.iter().map(|name| key(name)).collect(),
            published: addresses.iter().cloned().collect(),
            addresses,
            pending: HashMap::new(),
        }
    }

    #[test]
    fn owned_ingress_without_status_is_written() {
        let case = case(&[ingress("web", "1", &[])], &["web"], &["192.0.2.1"]);
        assert_eq!(case.plan(), vec![("web".to_owned(), vec![ip("192.0.2.1")])]);
    }

    #[test]
    fn owned_ingress_with_same_status_is_not_written() {
        let case = case(
            &[ingress("web", "1", &["192.0.2.2", "192.0.2.1"])],
            &["web"],
            &["192.0.2.1", "192.0.2.2"],
        );
        assert_eq!(case.plan(), vec![], "order in the status does not matter");
    }

    #[test]
    fn owned_ingress_with_other_address_is_overwritten() {
        let case = case(
            &[ingress("web", "1", &["198.51.100.1"])],
            &["web"],
            &["192.0.2.1"],
        );
        assert_eq!(case.plan(), vec![("web".to_owned(), vec![ip("192.0.2.1")])]);
    }

    #[test]
    fn unknown_addresses_write_nothing() {
        let case = case(&[ingress("web", "1", &["192.0.2.1"])], &["web"], &[]);
        assert_eq!(case.plan(), vec![]);
    }

    #[test]
    fn ingress_that_left_class_is_cleared() {
        let case = case(&[ingress("old", "1", &["192.0.2.1"])], &[], &["192.0.2.1"]);
        assert_eq!(case.plan(), vec![("old".to_owned(), vec![])]);
    }

    #[test]
    fn previously_published_address_is_cleared() {
        let mut case = case(
            &[ingress("old", "1", &["198.51.100.1"])],
            &[],
            &["192.0.2.1"],
        );
        case.published.insert(ip("198.51.100.1"));
        assert_eq!(case.plan(), vec![("old".to_owned(), vec![])]);
    }

    #[test]
    fn other_controllers_ingress_is_untouched() {
        let case = case(
            &[
                ingress("nginx", "1", &["198.51.100.1"]),
                ingress("bare", "2", &[]),
            ],
            &[],
            &["192.0.2.1"],
        );
        assert_eq!(case.plan(), vec![]);
    }

    #[test]
    fn owned_ingress_missing_from_cache_is_skipped() {
        let case = case(&[], &["deleted"], &["192.0.2.1"]);
        assert_eq!(case.plan(), vec![]);
    }

    #[test]
    fn pending_write_hides_stale_cache() {
        let mut case = case(&[ingress("web", "7", &[])], &["web"], &["192.0.2.1"]);
        case.pending.insert(
            key("web"),
            PendingWrite {
                resource_version: Some("7".to_owned()),
                addresses: vec![ip("192.0.2.1")],
            },
        );
        assert_eq!(case.plan(), vec![], "the write at version 7 is in flight");
    }

    #[test]
    fn pending_write_ignored_after_newer_version() {
        let mut case = case(&[ingress("web", "8", &[])], &["web"], &["192.0.2.1"]);
        case.pending.insert(
            key("web"),
            PendingWrite {
                resource_version: Some("7".to_owned()),
                addresses: vec![ip("192.0.2.1")],
            },
        );
        assert_eq!(
            case.plan(),
            vec![("web".to_owned(), vec![ip("192.0.2.1")])],
            "someone changed the status after our write"
        );
    }

    #[test]
    fn writes_come_in_key_order_with_versions() {
        let case = case(
            &[ingress("b", "5", &[]), ingress("a", "4", &["192.0.2.1"])],
            &["b"],
            &["192.0.2.1"],
        );
        let writes = plan(StatusInput {
            ingresses: &case.ingresses,
            owned: &case.owned,
            addresses: &case.addresses,
            published: &case.published,
            pending: &case.pending,
        });
        assert_eq!(
            writes,
            vec![
                StatusWrite {
                    ingress: key("a"),
                    addresses: vec![],
                    resource_version: Some("4".to_owned()),
                },
                StatusWrite {
                    ingress: key("b"),
                    addresses: vec![ip("192.0.2.1")],
                    resource_version: Some("5".to_owned()),
                },
            ]
        );
    }

    #[test]
    fn status_patch_sets_whole_list() {
        assert_eq!(
            status_patch(&[
                ip("192.0.2.1"),
                PublishAddress::Hostname("lb.example.com".to_owned())
            ]),
            serde_json::json!({"status": {"loadBalancer": {"ingress": [
                {"ip": "192.0.2.1"},
                {"hostname": "lb.example.com"}
            ]}}})
        );
        assert_eq!(
            status_patch(&[]),
            serde_json::json!({"status": {"loadBalancer": {"ingress": []}}})
        );
    }
}
