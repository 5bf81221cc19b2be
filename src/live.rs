//! The live snapshot: published by a provider after each compile, read by the proxy and the
//! admin listener.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::status::{Severity, StatusReport};

/// Holds the snapshot that serves traffic and the report of the compile that built it.
pub struct Live {
    snapshot: ArcSwap<Snapshot>,
    report: ArcSwap<StatusReport>,
    generation: AtomicU64,
    ready: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Live {
    /// Creates a holder with an empty snapshot (generation 0) that is not ready yet.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            report: ArcSwap::from_pointee(StatusReport::default()),
            generation: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            metrics,
        }
    }

    /// Numbers `snapshot` with the next generation and swaps it in; requests that start after
    /// this call see it. Marks the process ready. Returns the generation.
    pub fn publish(
        &self,
        mut snapshot: Snapshot,
        report: StatusReport,
        compile_time: Duration,
    ) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        snapshot.generation = generation;
        self.metrics
            .configuration_problems
            .set(report.problems.len() as i64);
        self.metrics
            .configuration_errors
            .set(report.count(Severity::Error) as i64);
        self.metrics
            .compile_duration
            .observe(compile_time.as_secs_f64());
        self.metrics.snapshot_generation.set(generation as i64);
        self.snapshot.store(Arc::new(snapshot));
        self.report.store(Arc::new(report));
        self.ready.store(true, Ordering::Release);
        generation
    }

    /// Returns the live snapshot. The proxy calls this once per request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Returns the report of the compile that built the live snapshot.
    pub fn report(&self) -> Arc<StatusReport> {
        self.report.load_full()
    }

    /// Returns true once a snapshot has been published.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Returns the shared metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }
}
