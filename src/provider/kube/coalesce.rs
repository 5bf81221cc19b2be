//! Coalescing of watch events: a burst of changes compiles once, and a lone change compiles
//! after a short quiet period.

use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// When to compile after changes arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoalescePolicy {
    /// Compile once no change has arrived for this long.
    pub quiet: Duration,
    /// Compile at the latest this long after the first change of a burst, even if changes
    /// keep arriving, so a steady stream of events cannot hold routing back.
    pub max_delay: Duration,
}

impl CoalescePolicy {
    /// 15 ms of quiet, at most 50 ms: a `kubectl apply` of many objects arrives within a few
    /// milliseconds and compiles once, and a single change is live well within 100 ms of its
    /// watch event.
    pub const DEFAULT: CoalescePolicy = CoalescePolicy {
        quiet: Duration::from_millis(15),
        max_delay: Duration::from_millis(50),
    };

    /// Waits for a change on `changes`, then for the end of its burst. Returns the number of
    /// notifications taken.
    ///
    /// `changes` is a [`Notify`] that watchers signal with `notify_one`, which stores one
    /// permit when no task is waiting. So a change that arrives during a compile makes the
    /// next call return after its quiet period instead of being lost.
    pub async fn next_batch(&self, changes: &Notify) -> usize {
        changes.notified().await;
        let deadline = Instant::now() + self.max_delay;
        let mut notifications = 1;
        loop {
            let quiet_end = (Instant::now() + self.quiet).min(deadline);
            tokio::select! {
                _ = changes.notified() => notifications += 1,
                _ = tokio::time::sleep_until(quiet_end) => return notifications,
            }
            if Instant::now() >= deadline {
                return notifications;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Sends a notification at each offset (milliseconds after the start).
    fn notify_at(changes: Arc<Notify>, offsets_ms: Vec<u64>) -> tokio::task::JoinHandle<()> {
        let start = Instant::now();
        tokio::spawn(async move {
            for offset in offsets_ms {
                tokio::time::sleep_until(start + Duration::from_millis(offset)).await;
                changes.notify_one();
            }
        })
    }

    /// Returns when each batch ended (milliseconds after the start) and how many
    /// notifications it took.
    async fn batches(count: usize, changes: &Notify) -> Vec<(u128, usize)> {
        let start = Instant::now();
        let mut ends = Vec::new();
        for _ in 0..count {
            let notifications = CoalescePolicy::DEFAULT.next_batch(changes).await;
            ends.push((start.elapsed().as_millis(), notifications));
        }
        ends
    }

    #[tokio::test(start_paused = true)]
    async fn single_change_ends_after_quiet_period() {
        let changes = Arc::new(Notify::new());
        notify_at(changes.clone(), vec![0]);
        assert_eq!(batches(1, &changes).await, vec![(15, 1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn burst_compiles_once() {
        let changes = Arc::new(Notify::new());
        notify_at(changes.clone(), vec![0, 2, 4, 6, 8, 10]);
        assert_eq!(batches(1, &changes).await, vec![(25, 6)]);
    }

    #[tokio::test(start_paused = true)]
    async fn steady_stream_is_cut_at_max_delay() {
        let changes = Arc::new(Notify::new());
        // A change every 7 ms for 200 ms never leaves 15 ms of quiet. No change falls on a
        // deadline, so the order of simultaneous timers does not matter.
        notify_at(changes.clone(), (0..30).map(|i| i * 7).collect());
        let ends = batches(2, &changes).await;
        assert_eq!(ends[0], (50, 8), "first batch is cut at 50 ms");
        assert_eq!(ends[1].0, 106, "second batch starts at 56 ms");
    }

    #[tokio::test(start_paused = true)]
    async fn separate_changes_compile_separately() {
        let changes = Arc::new(Notify::new());
        notify_at(changes.clone(), vec![0, 100]);
        assert_eq!(batches(2, &changes).await, vec![(15, 1), (115, 1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn change_during_compile_is_kept() {
        let changes = Notify::new();
        changes.notify_one();
        assert_eq!(
            batches(1, &changes).await,
            vec![(15, 1)],
            "a permit stored before the wait starts a batch"
        );
    }
}
