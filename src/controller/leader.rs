//! Leader election on a coordination.k8s.io/v1 Lease, with the timing and rules of client-go's
//! `leaderelection` package.
//!
//! Every replica serves traffic; only the leader writes Ingress status and Events. A replica
//! takes the Lease when it has no holder, or when its holder has not renewed it for
//! `leaseDurationSeconds`. That time is measured on this replica's monotonic clock from when it
//! last saw the record change, so clock skew between nodes does not matter. Every write is a `PUT`
//! carrying the `resourceVersion` that was read, so when two replicas race for the Lease the
//! API server accepts one and rejects the other with 409 Conflict.
//!
//! kube-leader-election 0.44 (kube 4) takes an expired Lease with a merge patch that carries no
//! resourceVersion, so two racing replicas can both believe they lead; kube-lease-manager 0.12
//! relies on server-side apply conflicts. Neither was used, for those reasons.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::retry::LogLimiter;

/// How long leadership lasts and how often replicas act on the Lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long others wait after the last renewal before they take the Lease.
    pub lease_duration: Duration,
    /// How long the leader keeps leading while its renewals fail. Shorter than
    /// `lease_duration`, so the old leader stops writing before another can take over.
    pub renew_deadline: Duration,
    /// Wait between attempts to take or renew the Lease.
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    /// client-go's defaults: lease duration 15 s, renew deadline 10 s, retry period 2 s.
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Location of the Lease, this replica's identity, and the timing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// `spec.holderIdentity` while this replica leads; unique per replica.
    pub identity: String,
    /// Durations of the election.
    pub timing: LeaseTiming,
}

/// Errors of one attempt to take, renew or release the Lease. All are retried.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The `GET` of the Lease failed.
    #[error("failed to read Lease {namespace}/{name}")]
    Read {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// The API error, boxed because `kube::Error` is large.
        #[source]
        source: Box<kube::Error>,
    },
    /// The attempt took longer than its time budget.
    #[error("timed out after {timeout:?} reading or writing Lease {namespace}/{name}")]
    TimedOut {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// The budget that ran out.
        timeout: Duration,
    },
    /// The `POST` or `PUT` of the Lease failed with something other than a conflict.
    #[error("failed to write Lease {namespace}/{name}")]
    Write {
        /// Namespace of the Lease.
        namespace: String,
        /// Name of the Lease.
        name: String,
        /// The API error, boxed because `kube::Error` is large.
        #[source]
        source: Box<kube::Error>,
    },
}

/// Action on the Lease as read, decided by [`decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create it with us as holder.
    Create,
    /// We hold the Lease: renew it.
    Renew,
    /// The Lease has no holder, or its holder let it expire: take it.
    Acquire,
    /// Someone else holds a valid Lease.
    Follow {
        /// The holder's identity.
        holder: String,
    },
}

/// The last Lease record seen, and when it was first seen in that form.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// The spec as read.
    pub spec: LeaseSpec,
    /// This replica's clock when the spec was first read with these values.
    pub observed_at: Instant,
}

impl Observation {
    /// Records `spec` read at `now`: the observation time moves only when the spec changed,
    /// so a holder that stops renewing is seen to expire.
    pub fn update(previous: Option<Observation>, spec: LeaseSpec, now: Instant) -> Observation {
        match previous {
            Some(previous) if previous.spec == spec => previous,
            _ => Observation {
                spec,
                observed_at: now,
            },
        }
    }
}

/// Returns a holder identity, treating an empty string as no holder, as client-go does.
fn holder(spec: &LeaseSpec) -> Option<&str> {
    spec.holder_identity.as_deref().filter(|h| !h.is_empty())
}

/// Decides what to do with the Lease read at `now`. `observation` is `None` when no Lease
/// exists. `default_duration` applies when the Lease names no duration.
pub fn decide(
    observation: Option<&Observation>,
    identity: &str,
    now: Instant,
    default_duration: Duration,
) -> Decision {
    let Some(observation) = observation else {
        return Decision::Create;
    };
    let spec = &observation.spec;
    match holder(spec) {
        Some(holder) if holder == identity => Decision::Renew,
        Some(holder) => {
            let duration = spec
                .lease_duration_seconds
                .and_then(|seconds| u64::try_from(seconds).ok())
                .map(Duration::from_secs)
                .unwrap_or(default_duration);
            if now < observation.observed_at + duration {
                Decision::Follow {
                    holder: holder.to_owned(),
                }
            } else {
                Decision::Acquire
            }
        }
        None => Decision::Acquire,
    }
}

/// Builds the spec to write for `decision` (`Create`, `Renew` or `Acquire`) at wall-clock
/// time `now`. A renewal keeps `acquireTime` and the transition count; taking the Lease from
/// someone else, or from no one, counts one transition.
pub fn next_spec(
    current: Option<&LeaseSpec>,
    decision: &Decision,
    settings: &LeaseSettings,
    now: Timestamp,
) -> LeaseSpec {
    // The API stores whole seconds; a sub-second duration (in tests) rounds up to 1 s.
    let seconds = settings.timing.lease_duration.as_secs().max(1);
    let duration_seconds = i32::try_from(seconds).unwrap_or(i32::MAX);
    let time = Some(MicroTime(now));
    match (decision, current) {
        (Decision::Renew, Some(current)) => LeaseSpec {
            renew_time: time,
            lease_duration_seconds: Some(duration_seconds),
            holder_identity: Some(settings.identity.clone()),
            ..current.clone()
        },
        (Decision::Acquire, Some(current)) => LeaseSpec {
            holder_identity: Some(settings.identity.clone()),
            lease_duration_seconds: Some(duration_seconds),
            acquire_time: time.clone(),
            renew_time: time,
            lease_transitions: Some(current.lease_transitions.unwrap_or(0) + 1),
            ..current.clone()
        },
        _ => LeaseSpec {
            holder_identity: Some(settings.identity.clone()),
            lease_duration_seconds: Some(duration_seconds),
            acquire_time: time.clone(),
            renew_time: time,
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        },
    }
}

/// Builds the spec that gives the Lease up: no holder and a 1 s duration, as client-go's
/// `ReleaseOnCancel` writes, so the next replica takes it at its next attempt.
pub fn released_spec(current: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        ..current.clone()
    }
}

/// Takes part in the election and publishes whether this replica leads.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    observation: Option<Observation>,
    leading: bool,
    /// When the Lease was last written successfully by us.
    last_renewal: Option<Instant>,
    errors: LogLimiter,
}

impl LeaderElector {
    /// Creates an elector for the Lease in `settings`.
    pub fn new(client: kube::Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observation: None,
            leading: false,
            last_renewal: None,
            errors: LogLimiter::new(Duration::from_secs(30)),
        }
    }

    /// Runs the election until `shutdown` is cancelled, sending `true` on `leadership` while
    /// this replica leads. On shutdown the leader sends `false` first, then releases the Lease.
    pub async fn run(mut self, leadership: watch::Sender<bool>, shutdown: CancellationToken) {
        tracing::info!(
            namespace = %self.settings.namespace,
            lease = %self.settings.name,
            identity = %self.settings.identity,
            "joining leader election"
        );
        loop {
            let budget = self.attempt_budget(Instant::now());
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => break,
                attempt = tokio::time::timeout(budget, self.try_acquire_or_renew()) => {
                    attempt.unwrap_or_else(|_| Err(LeaderError::TimedOut {
                        namespace: self.settings.namespace.clone(),
                        name: self.settings.name.clone(),
                        timeout: budget,
                    }))
                }
            };
            self.handle_attempt(attempt, &leadership);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.settings.timing.retry_period) => {}
            }
        }

        if self.leading {
            self.set_leading(false, "shutting down", &leadership);
            match self.release().await {
                Ok(()) => tracing::info!(
                    namespace = %self.settings.namespace,
                    lease = %self.settings.name,
                    "released Lease"
                ),
                Err(error) => tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "failed to release Lease; another replica takes it once it expires"
                ),
            }
        }
    }

    /// Returns how long one attempt may take: half the renew deadline, and for the leader no
    /// longer than what is left of its renew deadline. A hung request to the API server then
    /// cannot keep a replica leading past the deadline, which is what keeps the old leader's
    /// writes from overlapping the next leader's.
    fn attempt_budget(&self, now: Instant) -> Duration {
        let budget = self.settings.timing.renew_deadline / 2;
        match (self.leading, self.last_renewal) {
            (true, Some(last)) => {
                let deadline = last + self.settings.timing.renew_deadline;
                budget.min(deadline.saturating_duration_since(now))
            }
            _ => budget,
        }
    }

    fn handle_attempt(
        &mut self,
        attempt: Result<bool, LeaderError>,
        leadership: &watch::Sender<bool>,
    ) {
        let now = Instant::now();
        match attempt {
            Ok(true) => {
                self.last_renewal = Some(now);
                if self.errors.is_failing() {
                    tracing::info!(lease = %self.settings.name, "Lease reachable again");
                    self.errors.reset();
                }
                self.set_leading(true, "took or renewed the Lease", leadership);
            }
            Ok(false) => {
                if self.errors.is_failing() {
                    self.errors.reset();
                }
                self.set_leading(false, "another replica holds the Lease", leadership);
            }
            Err(error) => {
                if let Some(suppressed) = self.errors.allow(now) {
                    tracing::warn!(
                        error = &error as &dyn std::error::Error,
                        suppressed,
                        "leader election attempt failed"
                    );
                }
                let deadline_passed = self.last_renewal.is_none_or(|last| {
                    now.duration_since(last) >= self.settings.timing.renew_deadline
                });
                if self.leading && deadline_passed {
                    self.set_leading(
                        false,
                        "failed to renew the Lease within the renew deadline",
                        leadership,
                    );
                }
            }
        }
    }

    /// Publishes a leadership change and logs it with `reason`.
    fn set_leading(&mut self, leading: bool, reason: &str, leadership: &watch::Sender<bool>) {
        if self.leading == leading {
            return;
        }
        self.leading = leading;
        let holder = self
            .observation
            .as_ref()
            .and_then(|observation| holder(&observation.spec))
            .unwrap_or_default()
            .to_owned();
        if leading {
            tracing::info!(
                namespace = %self.settings.namespace,
                lease = %self.settings.name,
                identity = %self.settings.identity,
                reason,
                "became leader"
            );
        } else {
            tracing::info!(
                namespace = %self.settings.namespace,
                lease = %self.settings.name,
                identity = %self.settings.identity,
                holder,
                reason,
                "stopped leading"
            );
        }
        leadership.send_replace(leading);
    }

    /// Reads the Lease once and creates, renews or takes it when the rules allow. Returns
    /// whether this replica holds the Lease afterwards; a lost race returns `Ok(false)`.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaderError> {
        let lease = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(|source| LeaderError::Read {
                namespace: self.settings.namespace.clone(),
                name: self.settings.name.clone(),
                source: Box::new(source),
            })?;
        let now = Instant::now();
        self.observation = lease.as_ref().map(|lease| {
            Observation::update(
                self.observation.take(),
                lease.spec.clone().unwrap_or_default(),
                now,
            )
        });

        let decision = decide(
            self.observation.as_ref(),
            &self.settings.identity,
            now,
            self.settings.timing.lease_duration,
        );
        if let Decision::Follow { .. } = decision {
            return Ok(false);
        }

        let spec = next_spec(
            self.observation.as_ref().map(|o| &o.spec),
            &decision,
            &self.settings,
            Timestamp::now(),
        );
        let written = match lease {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.settings.name.clone()),
                        namespace: Some(self.settings.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                // The resourceVersion read above stays in the object, so the PUT fails with
                // 409 Conflict if anyone wrote the Lease since.
                lease.spec = Some(spec);
                self.api
                    .replace(&self.settings.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(lease) => {
                self.observation = Some(Observation {
                    spec: lease.spec.unwrap_or_default(),
                    observed_at: Instant::now(),
                });
                if decision == Decision::Acquire || decision == Decision::Create {
                    tracing::debug!(lease = %self.settings.name, ?decision, "took Lease");
                }
                Ok(true)
            }
            // Another replica created or wrote the Lease first.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(source) => Err(LeaderError::Write {
                namespace: self.settings.namespace.clone(),
                name: self.settings.name.clone(),
                source: Box::new(source),
            }),
        }
    }

    /// Gives the Lease up if this replica still holds it.
    pub async fn release(&mut self) -> Result<(), LeaderError> {
        let read_error = |source| LeaderError::Read {
            namespace: self.settings.namespace.clone(),
            name: self.settings.name.clone(),
            source: Box::new(source),
        };
        let Some(mut lease) = self
            .api
            .get_opt(&self.settings.name)
            .await
            .map_err(read_error)?
        else {
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if holder(&spec) != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        lease.spec = Some(released_spec(&spec, Timestamp::now()));
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            // Someone wrote the Lease since the read, so it is no longer ours to release.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(source) => Err(LeaderError::Write {
                namespace: self.settings.namespace.clone(),
                name: self.settings.name.clone(),
                source: Box::new(source),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, duration: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: duration,
            lease_transitions: Some(3),
            acquire_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
            ..LeaseSpec::default()
        }
    }

    fn settings() -> LeaseSettings {
        LeaseSettings {
            namespace: "gangway-system".to_owned(),
            name: "gangway-leader".to_owned(),
            identity: "pod-a".to_owned(),
            timing: LeaseTiming::default(),
        }
    }

    const DEFAULT: Duration = Duration::from_secs(15);

    #[test]
    fn missing_lease_is_created() {
        assert_eq!(
            decide(None, "pod-a", Instant::now(), DEFAULT),
            Decision::Create
        );
    }

    #[test]
    fn own_lease_is_renewed() {
        let now = Instant::now();
        let observation = Observation::update(None, spec(Some("pod-a"), Some(15)), now);
        assert_eq!(
            decide(Some(&observation), "pod-a", now, DEFAULT),
            Decision::Renew
        );
    }

    #[test]
    fn free_lease_is_taken() {
        let now = Instant::now();
        for holder in [None, Some("")] {
            let observation = Observation::update(None, spec(holder, Some(1)), now);
            assert_eq!(
                decide(Some(&observation), "pod-a", now, DEFAULT),
                Decision::Acquire,
                "holder {holder:?}"
            );
        }
    }

    #[test]
    fn valid_foreign_lease_is_followed() {
        let start = Instant::now();
        let observation = Observation::update(None, spec(Some("pod-b"), Some(15)), start);
        assert_eq!(
            decide(
                Some(&observation),
                "pod-a",
                start + Duration::from_secs(14),
                DEFAULT
            ),
            Decision::Follow {
                holder: "pod-b".to_owned()
            }
        );
    }

    #[test]
    fn foreign_lease_expires_after_unchanged_duration() {
        let start = Instant::now();
        let first = Observation::update(None, spec(Some("pod-b"), Some(15)), start);
        // The same record read again later keeps the first observation time.
        let again = Observation::update(
            Some(first.clone()),
            spec(Some("pod-b"), Some(15)),
            start + Duration::from_secs(10),
        );
        assert_eq!(again.observed_at, start);
        assert_eq!(
            decide(
                Some(&again),
                "pod-a",
                start + Duration::from_secs(15),
                DEFAULT
            ),
            Decision::Acquire
        );
    }

    #[test]
    fn renewed_foreign_lease_restarts_expiry() {
        let start = Instant::now();
        let first = Observation::update(None, spec(Some("pod-b"), Some(15)), start);
        let mut renewed_spec = spec(Some("pod-b"), Some(15));
        renewed_spec.renew_time = Some(MicroTime(Timestamp::now()));
        let renewed =
            Observation::update(Some(first), renewed_spec, start + Duration::from_secs(10));
        assert_eq!(
            decide(
                Some(&renewed),
                "pod-a",
                start + Duration::from_secs(20),
                DEFAULT
            ),
            Decision::Follow {
                holder: "pod-b".to_owned()
            }
        );
    }

    #[test]
    fn lease_without_duration_uses_default() {
        let start = Instant::now();
        let observation = Observation::update(None, spec(Some("pod-b"), None), start);
        let before = start + DEFAULT - Duration::from_millis(1);
        assert!(matches!(
            decide(Some(&observation), "pod-a", before, DEFAULT),
            Decision::Follow { .. }
        ));
        assert_eq!(
            decide(Some(&observation), "pod-a", start + DEFAULT, DEFAULT),
            Decision::Acquire
        );
    }

    #[test]
    fn renewal_keeps_acquire_time_and_transitions() {
        let now = Timestamp::now();
        let current = spec(Some("pod-a"), Some(15));
        let next = next_spec(Some(&current), &Decision::Renew, &settings(), now);
        assert_eq!(next.holder_identity.as_deref(), Some("pod-a"));
        assert_eq!(next.acquire_time, current.acquire_time);
        assert_eq!(next.renew_time, Some(MicroTime(now)));
        assert_eq!(next.lease_transitions, Some(3));
        assert_eq!(next.lease_duration_seconds, Some(15));
    }

    #[test]
    fn acquisition_counts_transition() {
        let now = Timestamp::now();
        let current = spec(Some("pod-b"), Some(15));
        let next = next_spec(Some(&current), &Decision::Acquire, &settings(), now);
        assert_eq!(next.holder_identity.as_deref(), Some("pod-a"));
        assert_eq!(next.acquire_time, Some(MicroTime(now)));
        assert_eq!(next.renew_time, Some(MicroTime(now)));
        assert_eq!(next.lease_transitions, Some(4));
    }

    #[test]
    fn creation_starts_at_zero_transitions() {
        let now = Timestamp::now();
        let next = next_spec(None, &Decision::Create, &settings(), now);
        assert_eq!(next.holder_identity.as_deref(), Some("pod-a"));
        assert_eq!(next.lease_transitions, Some(0));
        assert_eq!(next.lease_duration_seconds, Some(15));
    }

    #[test]
    fn release_clears_holder() {
        let now = Timestamp::now();
        let released = released_spec(&spec(Some("pod-a"), Some(15)), now);
        assert_eq!(released.holder_identity, None);
        assert_eq!(released.lease_duration_seconds, Some(1));
        assert_eq!(released.lease_transitions, Some(3));
    }
}
