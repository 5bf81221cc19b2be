//! The standalone provider: reads Kubernetes manifests from a directory, watches it, and
//! publishes a new snapshot after each change.
//!
//! Each file keeps its last valid objects, so a file saved half-written or with a typo does not
//! take its routes down: the previous version stays in effect and the file gets a problem until
//! it parses again.

mod scan;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::compile::{CompileOptions, compile};
use crate::live::Live;
use crate::snapshot::Snapshot;
use crate::status::{Problem, Severity, StatusReport};
use crate::store::{ObjectKey, ObjectRef, Store};

pub use scan::{Changes, FILE_KIND, ManifestSet, file_ref};

/// How long the provider collects further events after the first one before it rescans. One
/// editor save produces several events (create, modify, close, rename) within a few
/// milliseconds, and this window folds them into one publish while keeping a change live well
/// within 100 ms.
pub const COALESCE_WINDOW: Duration = Duration::from_millis(20);

/// Errors of the manifest provider.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest directory cannot be read.
    #[error("failed to read the manifest directory {path}: {source}")]
    ReadDirectory {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The manifest path exists but is not a directory.
    #[error("failed to read the manifest directory {path}: not a directory")]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// The thread that reads and compiles the manifests could not be started.
    #[error("failed to start the thread that reads the manifest directory {path}: {source}")]
    Thread {
        /// The directory.
        path: PathBuf,
        /// The I/O error from spawning the thread.
        #[source]
        source: std::io::Error,
    },
    /// The file watcher could not be set up.
    #[error("failed to watch the manifest directory {path}: {source}")]
    Watch {
        /// The directory.
        path: PathBuf,
        /// The watcher error.
        #[source]
        source: notify::Error,
    },
}

/// Reads every manifest under `dir` once, compiles it, and returns the snapshot and the report
/// with the file problems merged in. `gangway check` uses this; the provider does the same on
/// each change.
pub fn compile_directory(
    dir: &Path,
    options: &CompileOptions,
) -> Result<(Snapshot, StatusReport), ManifestError> {
    let mut set = ManifestSet::new(dir)?;
    set.rescan(&Changes::default())?;
    let (store, file_problems) = set.build();
    Ok(compile_store(&store, file_problems, options))
}

/// Compiles `store` and merges the file problems into the report, keeping it sorted.
fn compile_store(
    store: &Store,
    file_problems: Vec<Problem>,
    options: &CompileOptions,
) -> (Snapshot, StatusReport) {
    let (snapshot, mut report) = compile(store, options);
    report.problems.extend(file_problems);
    report
        .problems
        .extend(missing_class_problem(store, options));
    report.problems.sort();
    (snapshot, report)
}

/// Returns a warning when the directory has Ingresses but no IngressClass of Gangway's. Only
/// Ingresses with the legacy class annotation are served then, which surprises a first
/// standalone run. A cluster usually has the class from the chart, so cluster mode skips it.
fn missing_class_problem(store: &Store, options: &CompileOptions) -> Option<Problem> {
    let has_class = store.ingress_classes.values().any(|class| {
        class
            .spec
            .as_ref()
            .and_then(|spec| spec.controller.as_deref())
            == Some(options.controller_name.as_str())
    });
    if has_class || store.ingresses.is_empty() {
        return None;
    }
    Some(Problem::warning(
        // About IngressClasses in general, none in particular.
        ObjectRef::new("IngressClass", ObjectKey::cluster("*")),
        "",
        "NoIngressClass",
        format!(
            "no IngressClass has spec.controller {}, so only Ingresses with the \
             kubernetes.io/ingress.class annotation are served; add an IngressClass \
             like the one in examples/standalone/gangway.yaml",
            options.controller_name
        ),
    ))
}

/// Watches a manifest directory and publishes a snapshot to [`Live`] after each change.
///
/// Reading, parsing and compiling run on a thread of their own, because a large directory
/// takes seconds to compile and the task that follows changes shares its runtime thread with
/// the admin listener, whose `/healthz` must keep responding meanwhile.
pub struct ManifestProvider {
    root: PathBuf,
    // Dropping the watcher stops its thread and closes `events`, so it lives as long as the
    // provider.
    _watcher: RecommendedWatcher,
    events: mpsc::UnboundedReceiver<notify::Result<Event>>,
    /// Coalesced changes for the publisher thread. Dropping the sender ends that thread once
    /// its current rescan is done.
    changes: std::sync::mpsc::Sender<Changes>,
    /// Cancelled when the provider stops, so that a rescan still running publishes nothing.
    stopped: CancellationToken,
    /// The publisher thread, joined only after it ended on its own, to pass its panic on.
    publisher: Option<std::thread::JoinHandle<()>>,
}

impl ManifestProvider {
    /// Starts watching `dir` recursively, then reads every manifest and publishes the first
    /// snapshot, so that a change made during the first read is not missed. Returns once the
    /// first snapshot is live; [`Self::run`] then follows changes.
    pub fn start(
        dir: &Path,
        options: CompileOptions,
        live: Arc<Live>,
    ) -> Result<Self, ManifestError> {
        let mut set = ManifestSet::new(dir)?;
        let root = set.root().to_owned();
        let (sender, events) = mpsc::unbounded_channel();
        // notify calls this on its own thread. A send fails only once the provider, which owns
        // the receiver, is dropped.
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = sender.send(event);
        })
        .map_err(|source| ManifestError::Watch {
            path: root.clone(),
            source,
        })?;
        watcher
            .watch(&root, RecursiveMode::Recursive)
            .map_err(|source| ManifestError::Watch {
                path: root.clone(),
                source,
            })?;
        set.rescan(&Changes::default())?;
        tracing::info!(
            directory = %root.display(),
            files = set.file_count(),
            "watching the manifest directory"
        );
        let mut publisher = Publisher {
            set,
            options,
            live,
            logged_problems: BTreeSet::new(),
        };
        publisher.publish();

        let (changes, pending) = std::sync::mpsc::channel();
        let stopped = CancellationToken::new();
        let stop = stopped.clone();
        let publisher = std::thread::Builder::new()
            .name("gangway-manifests".to_owned())
            .spawn(move || publisher.follow(&pending, &stop))
            .map_err(|source| ManifestError::Thread {
                path: root.clone(),
                source,
            })?;
        Ok(Self {
            root,
            _watcher: watcher,
            events,
            changes,
            stopped,
            publisher: Some(publisher),
        })
    }

    /// Follows changes until `shutdown` is cancelled: collects events for
    /// [`COALESCE_WINDOW`] and hands them to the publisher thread, which rescans and
    /// publishes when something changed. Returns without waiting for a rescan in progress,
    /// which then publishes nothing.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let mut changes = Changes::default();
            let relevant = tokio::select! {
                () = shutdown.cancelled() => break,
                event = self.events.recv() => match event {
                    Some(event) => self.note_event(event, &mut changes),
                    None => break,
                },
            };
            if !relevant {
                continue;
            }
            // A fixed window from the first event, so a steady stream of writes cannot delay
            // the publish indefinitely.
            let deadline = tokio::time::Instant::now() + COALESCE_WINDOW;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep_until(deadline) => break,
                    event = self.events.recv() => match event {
                        Some(event) => {
                            self.note_event(event, &mut changes);
                        }
                        None => break,
                    },
                }
            }
            if self.changes.send(changes).is_err() {
                // The publisher thread ends while the sender lives only when a rescan
                // panicked. Resuming the panic here fails the provider task, so `serve` stops
                // with an error.
                if let Some(publisher) = self.publisher.take()
                    && let Err(panic) = publisher.join()
                {
                    std::panic::resume_unwind(panic);
                }
                break;
            }
        }
        tracing::info!(directory = %self.root.display(), "stopped watching the manifest directory");
    }

    /// Adds the paths of one watcher event to `changes`. Watcher errors and overflowed event
    /// queues ask for a full rescan, since events may have been lost. Returns false for events
    /// that cannot change a file, which need no rescan.
    fn note_event(&self, event: notify::Result<Event>, changes: &mut Changes) -> bool {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(directory = %self.root.display(), %error, "manifest watcher failed; rescanning the whole directory");
                changes.all = true;
                return true;
            }
        };
        if event.need_rescan() {
            tracing::warn!(directory = %self.root.display(), "manifest watcher lost events; rescanning the whole directory");
            changes.all = true;
            return true;
        }
        // Opening and reading files, our own rescans included, changes nothing.
        if let EventKind::Access(kind) = event.kind
            && kind != AccessKind::Close(AccessMode::Write)
        {
            return false;
        }
        for path in event.paths {
            if let Ok(relative) = path.strip_prefix(&self.root) {
                changes.paths.insert(relative.to_owned());
            }
        }
        // Even an event that names no file below the root triggers a relisting.
        true
    }
}

impl Drop for ManifestProvider {
    fn drop(&mut self) {
        self.stopped.cancel();
    }
}

/// The files of the directory with the state of the last publish. It lives on the publisher
/// thread once the provider has started.
struct Publisher {
    set: ManifestSet,
    options: CompileOptions,
    live: Arc<Live>,
    /// Problems of the last publish, so each one is logged once when it appears.
    logged_problems: BTreeSet<Problem>,
}

impl Publisher {
    /// Rescans for each batch of changes from `pending` until the provider drops its sender
    /// or `stopped` is cancelled. Changes that arrived during a rescan are merged into one
    /// batch, so a burst of edits to a large directory costs one more rescan, not one each.
    fn follow(mut self, pending: &std::sync::mpsc::Receiver<Changes>, stopped: &CancellationToken) {
        while let Ok(mut changes) = pending.recv() {
            for more in pending.try_iter() {
                changes.all |= more.all;
                changes.paths.extend(more.paths);
            }
            if stopped.is_cancelled() {
                break;
            }
            self.refresh(&changes, stopped);
        }
    }

    /// Rescans and publishes when the files changed, unless `stopped` was cancelled
    /// meanwhile.
    fn refresh(&mut self, changes: &Changes, stopped: &CancellationToken) {
        match self.set.rescan(changes) {
            Ok(true) if stopped.is_cancelled() => {
                tracing::debug!("the manifest provider stopped during a rescan; not publishing");
            }
            Ok(true) => self.publish(),
            Ok(false) => {
                tracing::debug!("manifest events changed no file content; not publishing");
            }
            Err(error) => {
                // TODO: watch the directory again when it is deleted and created anew; until
                // then, changes after such a re-creation are seen only after a restart.
                tracing::error!(%error, "failed to rescan the manifest directory; keeping the last snapshot");
            }
        }
    }

    /// Compiles the current objects and publishes the snapshot.
    fn publish(&mut self) {
        let started = Instant::now();
        let (store, file_problems) = self.set.build();
        let (snapshot, report) = compile_store(&store, file_problems, &self.options);
        let compile_time = started.elapsed();

        let routes = count_routes(&snapshot);
        let problems: BTreeSet<Problem> = report.problems.iter().cloned().collect();
        let errors = report.count(Severity::Error);
        let warnings = report.count(Severity::Warning);
        let generation = self.live.publish(snapshot, report, compile_time);
        tracing::info!(
            generation,
            objects = store.len(),
            routes,
            problems = problems.len(),
            errors,
            warnings,
            compile_time_us = compile_time.as_micros() as u64,
            "published snapshot"
        );
        self.log_problem_changes(problems);
        // The compile's garbage and the previous snapshot would stay in this thread's
        // allocator cache until the thread allocates again, at the next publish.
        drop(store);
        crate::alloc::release_thread_cache();
    }

    /// Logs problems that are new since the last publish, and those that went away.
    fn log_problem_changes(&mut self, problems: BTreeSet<Problem>) {
        for problem in problems.difference(&self.logged_problems) {
            tracing::warn!(
                kind = problem.object.kind.as_str(),
                namespace = problem.object.key.namespace.as_str(),
                name = problem.object.key.name.as_str(),
                field = problem.field.as_str(),
                reason = problem.reason.as_str(),
                severity = ?problem.severity,
                "{}",
                problem.message
            );
        }
        for problem in self.logged_problems.difference(&problems) {
            tracing::info!(
                kind = problem.object.kind.as_str(),
                namespace = problem.object.key.namespace.as_str(),
                name = problem.object.key.name.as_str(),
                field = problem.field.as_str(),
                reason = problem.reason.as_str(),
                "problem resolved"
            );
        }
        self.logged_problems = problems;
    }
}

/// Counts the routes of a snapshot: every path, and every default route.
pub fn count_routes(snapshot: &Snapshot) -> usize {
    snapshot
        .hosts
        .iter()
        .map(|(_, virtual_host)| virtual_host)
        .chain(snapshot.catch_all.as_ref())
        .map(|virtual_host| {
            virtual_host.paths.len() + usize::from(virtual_host.default_route.is_some())
        })
        .sum()
}
