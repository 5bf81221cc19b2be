//! Backoff and log rate limits for calls to the API server that fail again and again.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// Exponential backoff bounds: the first retry waits `initial`, each later one twice as long,
/// up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Wait after the first failure.
    pub initial: Duration,
    /// Upper bound of the wait.
    pub max: Duration,
}

impl Backoff {
    /// 0.5 s doubling to 30 s: quick enough to fix a transient error, slow enough not to load a
    /// struggling API server.
    pub const DEFAULT: Backoff = Backoff {
        initial: Duration::from_millis(500),
        max: Duration::from_secs(30),
    };

    /// Returns the wait after `failures` failures in a row (`failures` >= 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(31);
        self.initial
            .checked_mul(1 << exponent)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// The failure streak of one key.
#[derive(Clone, Copy, Debug)]
struct Streak {
    failures: u32,
    retry_at: Instant,
}

/// Failure streaks by key (an Ingress, an Event), each with its own backoff, so one failing
/// object does not hold back the others.
#[derive(Debug)]
pub struct Failures<K> {
    backoff: Backoff,
    streaks: HashMap<K, Streak>,
}

impl<K: Hash + Eq> Failures<K> {
    /// Creates an empty record.
    pub fn new(backoff: Backoff) -> Self {
        Self {
            backoff,
            streaks: HashMap::new(),
        }
    }

    /// Returns true when `key` has no failure streak or its backoff has passed.
    pub fn is_due(&self, key: &K, now: Instant) -> bool {
        self.streaks
            .get(key)
            .is_none_or(|streak| streak.retry_at <= now)
    }

    /// Records a failure of `key` at `now`. Returns true for the first failure of a streak,
    /// the one worth a log line at warning level.
    pub fn record_failure(&mut self, key: K, now: Instant) -> bool {
        let streak = self.streaks.entry(key).or_insert(Streak {
            failures: 0,
            retry_at: now,
        });
        streak.failures += 1;
        streak.retry_at = now + self.backoff.delay(streak.failures);
        streak.failures == 1
    }

    /// Ends the streak of `key`. Returns how many failures it had, if it had any.
    pub fn record_success(&mut self, key: &K) -> Option<u32> {
        self.streaks.remove(key).map(|streak| streak.failures)
    }

    /// Returns the earliest time at which a key is due again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.streaks.values().map(|streak| streak.retry_at).min()
    }

    /// Forgets keys for which `keep` returns false, such as deleted objects.
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.streaks.retain(|key, _| keep(key));
    }

    /// Forgets every streak.
    pub fn clear(&mut self) {
        self.streaks.clear();
    }

    /// Returns the number of keys in a failure streak.
    pub fn len(&self) -> usize {
        self.streaks.len()
    }

    /// Returns true when no key is in a failure streak.
    pub fn is_empty(&self) -> bool {
        self.streaks.is_empty()
    }
}

/// Lets one log line through per interval and counts the ones it held back, for errors that
/// repeat on every retry (a watch that cannot reconnect, a Lease that cannot be renewed).
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// Creates a limiter that lets the first line through, then one per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Returns `Some(n)` when a line may be logged now, with `n` lines held back since the
    /// last one. Returns `None` when this line should be dropped.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Starts over after a success, so the next failure is logged at once.
    pub fn reset(&mut self) {
        self.last = None;
        self.suppressed = 0;
    }

    /// Returns true when a line has been logged since the last reset.
    pub fn is_failing(&self) -> bool {
        self.last.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_max() {
        let backoff = Backoff::DEFAULT;
        assert_eq!(backoff.delay(1), Duration::from_millis(500));
        assert_eq!(backoff.delay(2), Duration::from_secs(1));
        assert_eq!(backoff.delay(3), Duration::from_secs(2));
        assert_eq!(backoff.delay(7), Duration::from_secs(30));
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn failure_streaks_are_per_key() {
        let start = Instant::now();
        let mut failures = Failures::new(Backoff::DEFAULT);

        assert!(failures.record_failure("a", start), "first failure of a");
        assert!(!failures.record_failure("a", start), "second failure of a");
        assert!(failures.record_failure("b", start), "first failure of b");

        assert!(!failures.is_due(&"a", start + Duration::from_millis(999)));
        assert!(failures.is_due(&"a", start + Duration::from_secs(1)));
        assert!(
            failures.is_due(&"c", start),
            "a key without failures is due"
        );
        assert_eq!(
            failures.next_retry(),
            Some(start + Duration::from_millis(500))
        );

        assert_eq!(failures.record_success(&"a"), Some(2));
        assert_eq!(failures.record_success(&"a"), None);
        assert_eq!(failures.len(), 1);

        failures.retain(|key| *key != "b");
        assert!(failures.is_empty());
        assert_eq!(failures.next_retry(), None);
    }

    #[test]
    fn log_limiter_counts_dropped_lines() {
        let start = Instant::now();
        let mut limiter = LogLimiter::new(Duration::from_secs(30));

        assert_eq!(limiter.allow(start), Some(0));
        assert_eq!(limiter.allow(start + Duration::from_secs(1)), None);
        assert_eq!(limiter.allow(start + Duration::from_secs(29)), None);
        assert_eq!(limiter.allow(start + Duration::from_secs(30)), Some(2));
        assert!(limiter.is_failing());

        limiter.reset();
        assert!(!limiter.is_failing());
        assert_eq!(limiter.allow(start + Duration::from_secs(31)), Some(0));
    }
}
