//! The leader's work in cluster mode: after each published snapshot, write Ingress status and
//! send Events for the compiler's problems.
//!
//! Every replica compiles and serves. [`leader`] elects one replica, and only that replica runs
//! the writers in [`status`] and [`events`]. They read the store and report of the snapshot
//! that is live, so status never runs ahead of routing.

pub mod address;
pub mod events;
pub mod leader;
pub mod retry;
pub mod status;

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::status::StatusReport;
use crate::store::Store;
use address::PublishAddress;
use events::EventWriter;
use status::StatusWriter;

/// Name under which Gangway reports Events and writes status: the IngressClass
/// `spec.controller` value.
pub const CONTROLLER_NAME: &str = "gangway.dev/ingress-controller";

/// A snapshot that went live, with the objects and the report it was compiled from.
#[derive(Debug)]
pub struct Published {
    /// The live snapshot's generation.
    pub generation: u64,
    /// The objects the snapshot was compiled from.
    pub store: Arc<Store>,
    /// The compiler's report for those objects.
    pub report: Arc<StatusReport>,
}

/// Inputs of [`run`]. Each is a channel that contains the latest value.
pub struct ControllerInputs {
    /// Client for status patches and Events.
    pub client: kube::Client,
    /// This replica's identity, the Events' `reportingInstance`.
    pub identity: String,
    /// The last published snapshot; `None` until the first publish.
    pub published: watch::Receiver<Option<Arc<Published>>>,
    /// The addresses to publish, normalized; empty while unknown.
    pub addresses: watch::Receiver<Vec<PublishAddress>>,
    /// Whether this replica leads, from [`leader::LeaderElector`].
    pub leadership: watch::Receiver<bool>,
}

/// Writes status and Events while this replica leads, until `shutdown` is cancelled or the
/// leadership or publish channel closes.
///
/// A sync runs when leadership is gained, a snapshot is published, the addresses change, or a
/// failed write is due for retry. Each sync compares the desired state with the cache, so a
/// retry or a burst of triggers never writes twice what is already there.
pub async fn run(mut inputs: ControllerInputs, shutdown: CancellationToken) {
    let mut status = StatusWriter::new(inputs.client.clone(), CONTROLLER_NAME);
    let mut events = EventWriter::new(inputs.client.clone(), CONTROLLER_NAME, &inputs.identity);
    let mut was_leading = false;
    // A closed address channel has a value that never changes, such as static addresses.
    let mut addresses_open = true;

    loop {
        let next_retry = [status.next_retry(), events.next_retry()]
            .into_iter()
            .flatten()
            .min();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = inputs.leadership.changed() => if changed.is_err() { return },
            changed = inputs.published.changed() => if changed.is_err() { return },
            changed = inputs.addresses.changed(), if addresses_open => {
                addresses_open = changed.is_ok();
            }
            _ = sleep_until(next_retry), if next_retry.is_some() => {}
        }

        let leading = *inputs.leadership.borrow_and_update();
        if !leading {
            if was_leading {
                status.reset();
                events.reset();
            }
            was_leading = false;
            continue;
        }
        was_leading = true;

        let Some(published) = inputs.published.borrow_and_update().clone() else {
            continue;
        };
        let addresses = inputs.addresses.borrow_and_update().clone();
        let leadership = inputs.leadership.clone();
        let still_leading = || *leadership.borrow() && !shutdown.is_cancelled();

        let written = status
            .sync(
                &published.store.ingresses,
                &published.report.owned_ingresses,
                &addresses,
                still_leading,
            )
            .await;
        let sent = events
            .sync(&published.store, &published.report.problems, still_leading)
            .await;
        if written != Default::default() || sent != Default::default() {
            tracing::debug!(
                generation = published.generation,
                status_written = written.written,
                status_failed = written.failed,
                status_deferred = written.deferred,
                events_sent = sent.sent,
                events_failed = sent.failed,
                "synced status and Events"
            );
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
