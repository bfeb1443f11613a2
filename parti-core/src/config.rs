//! Configuration: every knob of the protocol, its default, and the rules between them.
//!
//! ```
//! use std::time::Duration;
//! use parti_core::config::Config;
//!
//! let mut config = Config::default();
//! config.heartbeat_interval = Duration::from_millis(500);
//! config.heartbeat_ttl = Duration::from_millis(1_500);
//! config.validate()?;
//!
//! config.heartbeat_ttl = Duration::from_millis(600); // less than 2 × the interval
//! let err = config.validate().unwrap_err();
//! assert!(err.concerns("heartbeat_ttl"));
//! println!("{err}");
//! # Ok::<(), parti_core::config::ConfigError>(())
//! ```

use std::fmt;
use std::time::Duration;

use crate::store::{BucketSpec, MAX_REPLICAS, StorageKind, check_bucket_name};

/// The names of the four buckets the protocol uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct BucketNames {
    /// Stable worker id claims (TTL: [`Config::id_ttl`]). Default `parti-ids`.
    pub ids: String,
    /// The leader lease (TTL: [`Config::election_ttl`]). Default `parti-election`.
    pub election: String,
    /// Worker heartbeats (TTL: [`Config::heartbeat_ttl`]). Default `parti-heartbeat`.
    pub heartbeat: String,
    /// The second copy of worker heartbeats, written only when
    /// [`Config::writes_two_heartbeats`] (TTL: [`Config::heartbeat_ttl`]). Default
    /// `parti-heartbeat-2`.
    pub second_heartbeat: String,
    /// Published assignments (no TTL). Default `parti-assignment`.
    pub assignment: String,
}

impl BucketNames {
    /// `<prefix>-ids`, `<prefix>-election`, `<prefix>-heartbeat`, `<prefix>-heartbeat-2`,
    /// `<prefix>-assignment`: one set of buckets per fleet, so several fleets can share a
    /// store.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            ids: format!("{prefix}-ids"),
            election: format!("{prefix}-election"),
            heartbeat: format!("{prefix}-heartbeat"),
            second_heartbeat: format!("{prefix}-heartbeat-2"),
            assignment: format!("{prefix}-assignment"),
        }
    }
}

impl Default for BucketNames {
    fn default() -> Self {
        Self::with_prefix("parti")
    }
}

/// Every setting of a parti fleet. All workers of a fleet must use the same values.
///
/// Build it from [`Config::default`] and change fields; [`Config::validate`] checks the rules
/// between them and names every field that breaks one.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Bucket names. Default: `parti-ids`, `parti-election`, `parti-heartbeat`, `parti-heartbeat-2`,
    /// `parti-assignment`.
    pub buckets: BucketNames,
    /// Copies of each bucket on replicated backends (1 to 5). Default 1.
    pub replicas: usize,
    /// Whether each worker writes its heartbeat to two buckets (the second:
    /// [`BucketNames::second_heartbeat`]), so that a replicated store losing the node that
    /// leads one of them costs no lease: a worker is live while either entry is, and the
    /// leader takes it for gone only when both are absent. A second write per heartbeat
    /// interval. `None` (the default): when `replicas` > 1. All workers of a fleet must
    /// agree (see [`Config::writes_two_heartbeats`]).
    pub two_heartbeats: Option<bool>,
    /// Where replicated backends keep bucket data. Default [`StorageKind::File`].
    pub storage: StorageKind,
    /// Lowest worker id number a worker may claim (`worker-<n>`). Default 0.
    pub min_worker_id: u32,
    /// Highest worker id number a worker may claim. Default 999.
    pub max_worker_id: u32,
    /// How long a worker id stays claimed after its last renewal. Renewed every third of it.
    /// Default 30 s.
    ///
    /// A worker with a static identity ([`ManagerBuilder::identity`]) that restarts gets
    /// its id back at once, whatever is left of its claim. Without an identity, a restarted
    /// process is a new worker: after a graceful stop it claims the lowest free id (often
    /// the same one, released at the stop), but after a crash its old claim lives on for up
    /// to this long, so it claims another id and its old partitions move after
    /// `heartbeat_ttl` + `emergency_grace`.
    ///
    /// [`ManagerBuilder::identity`]: crate::runtime::ManagerBuilder::identity
    pub id_ttl: Duration,
    /// How long the partitions of a worker with a static identity wait for a process with
    /// that identity after a graceful stop, before the leader gives them to others. A rolling
    /// update that replaces each worker within it moves no partition (the revoke hooks still
    /// run on stop; the partitions are unowned meanwhile). At most `id_ttl` (the stopped
    /// worker's claim, which marks it as expected back, lives that long). `None` (the
    /// default): `id_ttl`.
    pub restart_grace: Option<Duration>,
    /// How long the leader lease lives after its last renewal; bounds failover time. Renewed
    /// every third of it. Default 6 s.
    pub election_ttl: Duration,
    /// How often a worker publishes its heartbeat — its whole idle cost to the store. The
    /// leader lists heartbeats every half of it only while its heartbeat watch has been
    /// silent for a `heartbeat_ttl` (else every [`Config::backstop_interval`]). Default 1 s.
    pub heartbeat_interval: Duration,
    /// How long a heartbeat lives after its last write: a worker silent this long is gone.
    /// Default 3 s.
    pub heartbeat_ttl: Duration,
    /// Stabilization window after a cold start (from zero workers, or a restart of most of
    /// the fleet) before the first assignment: workers that start within it are counted
    /// in. It ends this long after the leader saw the first worker — or, when workers are
    /// still arriving, a tenth of it after the last one, at most twice this long. Default
    /// 30 s.
    pub cold_start_window: Duration,
    /// Stabilization window after workers join; each further join restarts it (at most
    /// twice this long), so joins spread over time make one rebalance. Default 10 s.
    pub planned_scale_window: Duration,
    /// Fraction of known workers that must vanish together for the change to count as a
    /// fleet restart (wait for them to come back) rather than an emergency. In (0, 1].
    /// Default 0.5.
    pub restart_ratio: f64,
    /// How long a worker must be gone before its loss is an emergency (flapping within it is
    /// not). Default 1 s (one heartbeat interval).
    pub emergency_grace: Duration,
    /// Minimum time between two planned rebalances. Emergencies never wait for it.
    /// Default 10 s.
    pub cooldown: Duration,
    /// How long a worker's revoke hook may drain a partition that moves away before the
    /// worker releases it anyway (the hook's future is then dropped). The new owner gets
    /// the partition only after the release. Default 10 s.
    pub drain_timeout: Duration,
    /// How long before a lease's TTL runs out its holder stops acting on it (self-fencing),
    /// absorbing clock-rate drift and scheduling delay. `None` (the default) uses
    /// max(100 ms, 10 % of the lease's TTL) for each lease.
    pub safety_margin: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            buckets: BucketNames::default(),
            replicas: 1,
            two_heartbeats: None,
            storage: StorageKind::File,
            min_worker_id: 0,
            max_worker_id: 999,
            id_ttl: Duration::from_secs(30),
            restart_grace: None,
            election_ttl: Duration::from_secs(6),
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_ttl: Duration::from_secs(3),
            cold_start_window: Duration::from_secs(30),
            planned_scale_window: Duration::from_secs(10),
            restart_ratio: 0.5,
            emergency_grace: Duration::from_secs(1),
            cooldown: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            safety_margin: None,
        }
    }
}

/// Builder-style setters, one per field, for code outside this crate (the struct is
/// `#[non_exhaustive]`, so it cannot be built with a literal there). Check the result with
/// [`Config::validate`] (the manager does, at start).
///
/// ```
/// use std::time::Duration;
/// use parti_core::config::Config;
///
/// let config = Config::default()
///     .with_heartbeat_interval(Duration::from_millis(500))
///     .with_heartbeat_ttl(Duration::from_secs(2))
///     .with_replicas(3)
///     .with_restart_grace(Duration::from_secs(20));
/// assert!(config.validate().is_ok());
/// assert_eq!(config.restart_grace, Some(Duration::from_secs(20)));
/// ```
impl Config {
    /// Sets [`Config::buckets`]: the bucket names.
    #[must_use]
    pub fn with_buckets(mut self, buckets: BucketNames) -> Self {
        self.buckets = buckets;
        self
    }

    /// Sets [`Config::replicas`]: how many replicas each bucket has.
    #[must_use]
    pub fn with_replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// Sets [`Config::two_heartbeats`]: whether heartbeats go to two buckets.
    #[must_use]
    pub fn with_two_heartbeats(mut self, two_heartbeats: bool) -> Self {
        self.two_heartbeats = Some(two_heartbeats);
        self
    }

    /// Sets [`Config::storage`]: where the buckets are stored.
    #[must_use]
    pub fn with_storage(mut self, storage: StorageKind) -> Self {
        self.storage = storage;
        self
    }

    /// Sets [`Config::min_worker_id`]: the lowest worker id number.
    #[must_use]
    pub fn with_min_worker_id(mut self, min_worker_id: u32) -> Self {
        self.min_worker_id = min_worker_id;
        self
    }

    /// Sets [`Config::max_worker_id`]: the highest worker id number.
    #[must_use]
    pub fn with_max_worker_id(mut self, max_worker_id: u32) -> Self {
        self.max_worker_id = max_worker_id;
        self
    }

    /// Sets [`Config::id_ttl`]: how long a worker id claim lives without renewal.
    #[must_use]
    pub fn with_id_ttl(mut self, id_ttl: Duration) -> Self {
        self.id_ttl = id_ttl;
        self
    }

    /// Sets [`Config::election_ttl`]: how long the leader's lease lives without renewal.
    #[must_use]
    pub fn with_election_ttl(mut self, election_ttl: Duration) -> Self {
        self.election_ttl = election_ttl;
        self
    }

    /// Sets [`Config::heartbeat_interval`]: how often a worker writes its heartbeat.
    #[must_use]
    pub fn with_heartbeat_interval(mut self, heartbeat_interval: Duration) -> Self {
        self.heartbeat_interval = heartbeat_interval;
        self
    }

    /// Sets [`Config::heartbeat_ttl`]: how long a heartbeat lives after its last write.
    #[must_use]
    pub fn with_heartbeat_ttl(mut self, heartbeat_ttl: Duration) -> Self {
        self.heartbeat_ttl = heartbeat_ttl;
        self
    }

    /// Sets [`Config::cold_start_window`]: the stabilization window after a cold start.
    #[must_use]
    pub fn with_cold_start_window(mut self, cold_start_window: Duration) -> Self {
        self.cold_start_window = cold_start_window;
        self
    }

    /// Sets [`Config::planned_scale_window`]: the stabilization window after workers join.
    #[must_use]
    pub fn with_planned_scale_window(mut self, planned_scale_window: Duration) -> Self {
        self.planned_scale_window = planned_scale_window;
        self
    }

    /// Sets [`Config::restart_ratio`]: the share of the fleet that, gone together, counts as a restart.
    #[must_use]
    pub fn with_restart_ratio(mut self, restart_ratio: f64) -> Self {
        self.restart_ratio = restart_ratio;
        self
    }

    /// Sets [`Config::emergency_grace`]: how long a worker must be gone before its loss is an emergency.
    #[must_use]
    pub fn with_emergency_grace(mut self, emergency_grace: Duration) -> Self {
        self.emergency_grace = emergency_grace;
        self
    }

    /// Sets [`Config::cooldown`]: the minimum time between two planned rebalances.
    #[must_use]
    pub fn with_cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// Sets [`Config::drain_timeout`]: how long a revoke hook may drain.
    #[must_use]
    pub fn with_drain_timeout(mut self, drain_timeout: Duration) -> Self {
        self.drain_timeout = drain_timeout;
        self
    }

    /// Sets [`Config::restart_grace`]: how long a parked worker's partitions wait for it (instead of `id_ttl`).
    #[must_use]
    pub fn with_restart_grace(mut self, restart_grace: Duration) -> Self {
        self.restart_grace = Some(restart_grace);
        self
    }

    /// Sets [`Config::safety_margin`]: the self-fencing margin before each lease's end (instead of 10 % of its TTL, at least 100 ms).
    #[must_use]
    pub fn with_safety_margin(mut self, safety_margin: Duration) -> Self {
        self.safety_margin = Some(safety_margin);
        self
    }
}

impl Config {
    /// [`Config::default`] with the protocol timings shortened for a fleet on one machine —
    /// demos, and integration tests against a local nats-server: heartbeats every 250 ms
    /// with a 1 s TTL, a 2 s leader lease, stabilization windows of 1.5 s (cold start) and
    /// 1 s (planned scale), a 1 s cooldown and a 1 s drain timeout.
    ///
    /// TTLs stay at a second or more because NATS keeps its expiry markers at least one
    /// second. Not for production: a one-second pause (a GC, a slow network) would look like
    /// a crash and move partitions.
    ///
    /// ```
    /// use parti_core::config::Config;
    ///
    /// let config = Config::short_timings();
    /// assert!(config.validate().is_ok());
    /// assert!(config.heartbeat_ttl < Config::default().heartbeat_ttl);
    /// ```
    pub fn short_timings() -> Self {
        let ms = Duration::from_millis;
        Self {
            heartbeat_interval: ms(250),
            heartbeat_ttl: ms(1000),
            emergency_grace: ms(250),
            election_ttl: ms(2000),
            id_ttl: ms(5000),
            cold_start_window: ms(1500),
            planned_scale_window: ms(1000),
            cooldown: ms(1000),
            drain_timeout: ms(1000),
            ..Self::default()
        }
    }

    /// Checks every rule and reports all the fields that break one.
    ///
    /// The rules: `heartbeat_interval` > 0; `heartbeat_ttl` ≥ 2 × `heartbeat_interval`;
    /// `id_ttl` ≥ 3 × `heartbeat_interval` and ≥ `heartbeat_ttl`; `restart_grace` ≤
    /// `id_ttl`; `election_ttl` > 0;
    /// `drain_timeout` > 0;
    /// `cooldown` ≤ `planned_scale_window` ≤ `cold_start_window`; `emergency_grace` ≤
    /// `heartbeat_ttl`; `restart_ratio` in (0, 1]; `min_worker_id` ≤ `max_worker_id`;
    /// `replicas` in 1..=5; bucket names valid and distinct; the safety margin of each lease
    /// less than half its TTL.
    ///
    /// # Errors
    /// A [`ConfigError`] listing every [`Violation`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut check = Checker::default();
        let hb = self.heartbeat_interval;

        check.rule(!hb.is_zero(), "heartbeat_interval", || {
            "must be greater than zero".to_owned()
        });
        check.rule(self.heartbeat_ttl >= hb * 2, "heartbeat_ttl", || {
            format!(
                "must be at least 2 × heartbeat_interval ({:?}), got {:?}",
                hb * 2,
                self.heartbeat_ttl
            )
        });
        check.rule(self.id_ttl >= hb * 3, "id_ttl", || {
            format!(
                "must be at least 3 × heartbeat_interval ({:?}), got {:?}",
                hb * 3,
                self.id_ttl
            )
        });
        check.rule(self.id_ttl >= self.heartbeat_ttl, "id_ttl", || {
            format!(
                "must be at least heartbeat_ttl ({:?}), got {:?}",
                self.heartbeat_ttl, self.id_ttl
            )
        });
        check.rule(
            self.effective_restart_grace() <= self.id_ttl,
            "restart_grace",
            || {
                format!(
                    "must be at most id_ttl ({:?}), got {:?}",
                    self.id_ttl,
                    self.effective_restart_grace()
                )
            },
        );
        check.rule(!self.election_ttl.is_zero(), "election_ttl", || {
            "must be greater than zero".to_owned()
        });
        check.rule(!self.drain_timeout.is_zero(), "drain_timeout", || {
            "must be greater than zero".to_owned()
        });
        check.rule(
            self.cooldown <= self.planned_scale_window,
            "cooldown",
            || {
                format!(
                    "must be at most planned_scale_window ({:?}), got {:?}",
                    self.planned_scale_window, self.cooldown
                )
            },
        );
        check.rule(
            self.planned_scale_window <= self.cold_start_window,
            "planned_scale_window",
            || {
                format!(
                    "must be at most cold_start_window ({:?}), got {:?}",
                    self.cold_start_window, self.planned_scale_window
                )
            },
        );
        check.rule(
            self.emergency_grace <= self.heartbeat_ttl,
            "emergency_grace",
            || {
                format!(
                    "must be at most heartbeat_ttl ({:?}), got {:?}",
                    self.heartbeat_ttl, self.emergency_grace
                )
            },
        );
        check.rule(
            self.restart_ratio > 0.0 && self.restart_ratio <= 1.0,
            "restart_ratio",
            || format!("must be in (0, 1], got {}", self.restart_ratio),
        );
        check.rule(
            self.min_worker_id <= self.max_worker_id,
            "max_worker_id",
            || {
                format!(
                    "the worker id range is empty: max_worker_id ({}) is below min_worker_id ({})",
                    self.max_worker_id, self.min_worker_id
                )
            },
        );
        check.rule(
            (1..=MAX_REPLICAS).contains(&self.replicas),
            "replicas",
            || {
                format!(
                    "must be between 1 and {MAX_REPLICAS}, got {}",
                    self.replicas
                )
            },
        );
        self.check_buckets(&mut check);
        self.check_margins(&mut check);
        check.finish()
    }

    fn check_buckets(&self, check: &mut Checker) {
        let named = [
            ("buckets.ids", &self.buckets.ids),
            ("buckets.election", &self.buckets.election),
            ("buckets.heartbeat", &self.buckets.heartbeat),
            ("buckets.second_heartbeat", &self.buckets.second_heartbeat),
            ("buckets.assignment", &self.buckets.assignment),
        ];
        for (i, (field, name)) in named.iter().enumerate() {
            if let Err(err) = check_bucket_name(name) {
                check.violation(field, err.to_string());
            }
            if let Some((other, _)) = named[..i].iter().find(|(_, earlier)| earlier == name) {
                check.violation(
                    field,
                    format!("must differ from {other} (both are {name:?})"),
                );
            }
        }
    }

    fn check_margins(&self, check: &mut Checker) {
        let leases = [
            ("heartbeat_ttl", self.heartbeat_ttl),
            ("election_ttl", self.election_ttl),
            ("id_ttl", self.id_ttl),
        ];
        for (field, ttl) in leases {
            let margin = self.margin_for(ttl);
            if ttl.is_zero() || margin >= ttl / 2 {
                let (field, rule) = match self.safety_margin {
                    Some(_) => (
                        "safety_margin",
                        format!("{margin:?} must be less than half of {field} ({ttl:?})"),
                    ),
                    None => (
                        field,
                        format!(
                            "{ttl:?} must be more than twice its safety margin ({margin:?}, \
                             the default of max(100 ms, 10 % of the TTL))"
                        ),
                    ),
                };
                check.violation(field, rule);
            }
        }
    }

    /// The safety margin of a lease with this TTL: [`Config::safety_margin`] if set, else
    /// max(100 ms, 10 % of `ttl`).
    pub fn margin_for(&self, ttl: Duration) -> Duration {
        self.safety_margin
            .unwrap_or_else(|| (ttl / 10).max(Duration::from_millis(100)))
    }

    /// How long the partitions of a parked worker wait for it: [`Config::restart_grace`],
    /// or `id_ttl` when that is `None`.
    pub fn effective_restart_grace(&self) -> Duration {
        self.restart_grace.unwrap_or(self.id_ttl)
    }

    /// How often a worker renews its id claim: a third of [`Config::id_ttl`].
    pub fn id_renew_interval(&self) -> Duration {
        self.id_ttl / 3
    }

    /// How often the leader renews its lease: a third of [`Config::election_ttl`].
    pub fn election_renew_interval(&self) -> Duration {
        self.election_ttl / 3
    }

    /// How often the leader lists heartbeats as a safety net: half of
    /// [`Config::heartbeat_interval`].
    pub fn heartbeat_poll_interval(&self) -> Duration {
        self.heartbeat_interval / 2
    }

    /// How often a process reads again what its watches keep it informed of — a worker its
    /// assignment record, the leader the heartbeats — as a backstop for a watch that is
    /// alive but behind: ten heartbeat TTLs, and at least 30 s (30 s by default and with
    /// [`Config::short_timings`]). Watches lose nothing (they resume where they were, and
    /// are read after when set up again), and a stalled one is found by its missed idle
    /// heartbeats, so this read is rare: at each heartbeat interval it was most of an idle
    /// fleet's traffic.
    pub fn backstop_interval(&self) -> Duration {
        (self.heartbeat_ttl * 10).max(Duration::from_secs(30))
    }

    /// The bucket of worker id claims, with its TTL, replicas and storage.
    ///
    /// # Errors
    /// [`StoreError::InvalidBucket`](crate::store::StoreError::InvalidBucket) for an invalid
    /// name ([`Config::validate`] reports it too).
    pub fn ids_bucket(&self) -> Result<BucketSpec, crate::store::StoreError> {
        self.spec(&self.buckets.ids, Some(self.id_ttl))
    }

    /// The bucket of the leader lease, with its TTL, replicas and storage.
    ///
    /// # Errors
    /// As [`Config::ids_bucket`].
    pub fn election_bucket(&self) -> Result<BucketSpec, crate::store::StoreError> {
        self.spec(&self.buckets.election, Some(self.election_ttl))
    }

    /// The bucket of heartbeats, with its TTL, replicas and storage.
    ///
    /// # Errors
    /// As [`Config::ids_bucket`].
    pub fn heartbeat_bucket(&self) -> Result<BucketSpec, crate::store::StoreError> {
        self.spec(&self.buckets.heartbeat, Some(self.heartbeat_ttl))
    }

    /// Whether workers write their heartbeat to two buckets: [`Config::two_heartbeats`], or
    /// when that is `None`, whether the buckets are replicated.
    ///
    /// A worker counts its second entry towards its lease only because the leader counts
    /// it too: a fleet must not mix workers that differ here (a leader that lists one
    /// bucket would take a worker riding on the second for gone).
    pub fn writes_two_heartbeats(&self) -> bool {
        self.two_heartbeats.unwrap_or(self.replicas > 1)
    }

    /// The second bucket of heartbeats (see [`Config::writes_two_heartbeats`]), with the
    /// same TTL, replicas and storage as the first.
    ///
    /// # Errors
    /// As [`Config::ids_bucket`].
    pub fn second_heartbeat_bucket(&self) -> Result<BucketSpec, crate::store::StoreError> {
        self.spec(&self.buckets.second_heartbeat, Some(self.heartbeat_ttl))
    }

    /// The bucket of assignments (no TTL), with its replicas and storage.
    ///
    /// # Errors
    /// As [`Config::ids_bucket`].
    pub fn assignment_bucket(&self) -> Result<BucketSpec, crate::store::StoreError> {
        self.spec(&self.buckets.assignment, None)
    }

    fn spec(
        &self,
        name: &str,
        ttl: Option<Duration>,
    ) -> Result<BucketSpec, crate::store::StoreError> {
        let spec = BucketSpec::new(name)?
            .with_replicas(self.replicas)
            .with_storage(self.storage);
        Ok(match ttl {
            Some(ttl) => spec.with_ttl(ttl),
            None => spec,
        })
    }
}

#[derive(Default)]
struct Checker {
    violations: Vec<Violation>,
}

impl Checker {
    fn rule(&mut self, holds: bool, field: &'static str, rule: impl FnOnce() -> String) {
        if !holds {
            self.violation(field, rule());
        }
    }

    fn violation(&mut self, field: &'static str, rule: String) {
        self.violations.push(Violation { field, rule });
    }

    fn finish(self) -> Result<(), ConfigError> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                violations: self.violations,
            })
        }
    }
}

/// One broken configuration rule: the field and what it must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field, as it is named in [`Config`] (`buckets.ids` for nested ones).
    pub field: &'static str,
    /// The rule it breaks, with the values involved.
    pub rule: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` {}", self.field, self.rule)
    }
}

/// A configuration that breaks one or more rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    violations: Vec<Violation>,
}

impl ConfigError {
    /// Every broken rule, in the order [`Config::validate`] checks them.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Whether a broken rule concerns `field`.
    pub fn concerns(&self, field: &str) -> bool {
        self.violations.iter().any(|v| v.field == field)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration: ")?;
        for (i, violation) in self.violations.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            violation.fmt(f)?;
        }
        Ok(())
    }
}

#[cfg(test)]
// Tests change fields one by one, as users outside this crate must (`Config` is
// `#[non_exhaustive]`, so they cannot use struct-update syntax).
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Validates `config` and asserts that exactly `field` is reported, and that the message
    /// names it.
    #[track_caller]
    fn assert_rejects(config: Config, field: &str) {
        let err = config.validate().expect_err("the config must be rejected");
        assert!(err.concerns(field), "{field} not named in {err:?}");
        assert!(
            err.violations().iter().all(|v| v.field == field),
            "only {field} should be reported: {err:?}"
        );
        assert!(
            err.to_string().contains(&format!("`{field}`")),
            "the message must name {field}: {err}"
        );
    }

    #[test]
    fn defaults_are_valid_and_match_the_design() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.id_ttl, Duration::from_secs(30));
        assert_eq!(config.election_ttl, Duration::from_secs(6));
        assert_eq!(config.heartbeat_ttl, Duration::from_secs(3));
        assert_eq!(config.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(config.cold_start_window, Duration::from_secs(30));
        assert_eq!(config.planned_scale_window, Duration::from_secs(10));
        assert_eq!(config.cooldown, Duration::from_secs(10));
        assert_eq!(config.emergency_grace, config.heartbeat_interval);
        assert_eq!(config.restart_ratio, 0.5);
        assert_eq!((config.min_worker_id, config.max_worker_id), (0, 999));
        assert_eq!(config.buckets.ids, "parti-ids");
        assert_eq!(config.buckets.election, "parti-election");
        assert_eq!(config.buckets.heartbeat, "parti-heartbeat");
        assert_eq!(config.buckets.second_heartbeat, "parti-heartbeat-2");
        assert!(!config.writes_two_heartbeats(), "one server: one heartbeat");
        assert!(config.clone().with_replicas(3).writes_two_heartbeats());
        assert!(
            !config
                .clone()
                .with_replicas(3)
                .with_two_heartbeats(false)
                .writes_two_heartbeats()
        );
        assert_eq!(config.buckets.assignment, "parti-assignment");
    }

    #[test]
    fn heartbeat_interval_must_be_positive() {
        let mut config = Config::default();
        config.heartbeat_interval = Duration::ZERO;
        assert_rejects(config, "heartbeat_interval");
    }

    #[test]
    fn heartbeat_ttl_at_least_twice_the_interval() {
        let mut config = Config::default();
        config.heartbeat_ttl = ms(1_999);
        config.emergency_grace = ms(1_000);
        assert_rejects(config.clone(), "heartbeat_ttl");
        config.heartbeat_ttl = ms(2_000);
        config.validate().unwrap();
    }

    #[test]
    fn id_ttl_at_least_three_heartbeat_intervals() {
        let mut config = Config::default();
        config.heartbeat_interval = ms(100);
        config.heartbeat_ttl = ms(200);
        config.emergency_grace = ms(100);
        config.id_ttl = ms(299);
        config.safety_margin = Some(ms(10));
        assert_rejects(config.clone(), "id_ttl");
        config.id_ttl = ms(300);
        config.validate().unwrap();
    }

    #[test]
    fn restart_grace_at_most_id_ttl() {
        let mut config = Config::default();
        config.restart_grace = Some(config.id_ttl + ms(1));
        assert_rejects(config.clone(), "restart_grace");
        config.restart_grace = Some(config.id_ttl);
        config.validate().unwrap();
        config.restart_grace = None;
        assert_eq!(config.effective_restart_grace(), config.id_ttl);
    }

    #[test]
    fn id_ttl_at_least_heartbeat_ttl() {
        let mut config = Config::default();
        config.heartbeat_ttl = Duration::from_secs(10);
        config.id_ttl = Duration::from_secs(9);
        assert_rejects(config, "id_ttl");
    }

    #[test]
    fn election_ttl_must_be_positive() {
        let mut config = Config::default();
        config.election_ttl = Duration::ZERO;
        let err = config.validate().unwrap_err();
        assert!(err.concerns("election_ttl"), "{err}");
        assert!(err.to_string().contains("`election_ttl`"));
    }

    #[test]
    fn drain_timeout_must_be_positive() {
        let mut config = Config::default();
        config.drain_timeout = Duration::ZERO;
        assert_rejects(config, "drain_timeout");
    }

    #[test]
    fn cooldown_at_most_planned_scale_window() {
        let mut config = Config::default();
        config.cooldown = Duration::from_secs(11);
        assert_rejects(config, "cooldown");
    }

    #[test]
    fn planned_scale_window_at_most_cold_start_window() {
        let mut config = Config::default();
        config.planned_scale_window = Duration::from_secs(31);
        config.cooldown = Duration::from_secs(5);
        assert_rejects(config, "planned_scale_window");
    }

    #[test]
    fn emergency_grace_at_most_heartbeat_ttl() {
        let mut config = Config::default();
        config.emergency_grace = ms(3_001);
        assert_rejects(config, "emergency_grace");
    }

    #[test]
    fn restart_ratio_in_zero_one() {
        for ratio in [0.0, -0.1, 1.01, f64::NAN] {
            let mut config = Config::default();
            config.restart_ratio = ratio;
            assert_rejects(config, "restart_ratio");
        }
        let mut config = Config::default();
        config.restart_ratio = 1.0;
        config.validate().unwrap();
    }

    #[test]
    fn worker_id_range_not_empty() {
        let mut config = Config::default();
        config.min_worker_id = 10;
        config.max_worker_id = 9;
        assert_rejects(config.clone(), "max_worker_id");
        config.max_worker_id = 10;
        config.validate().unwrap();
    }

    #[test]
    fn replicas_between_one_and_five() {
        for replicas in [0, 6] {
            let mut config = Config::default();
            config.replicas = replicas;
            assert_rejects(config, "replicas");
        }
    }

    #[test]
    fn bucket_names_must_be_valid() {
        let mut config = Config::default();
        config.buckets.heartbeat = "has.dot".into();
        assert_rejects(config, "buckets.heartbeat");
        let mut config = Config::default();
        config.buckets.ids = String::new();
        assert_rejects(config, "buckets.ids");
    }

    #[test]
    fn bucket_names_must_be_distinct() {
        let mut config = Config::default();
        config.buckets.assignment = config.buckets.election.clone();
        let err = config.validate().unwrap_err();
        assert!(err.concerns("buckets.assignment"), "{err}");
        assert!(err.to_string().contains("buckets.election"), "{err}");
    }

    #[test]
    fn explicit_safety_margin_below_half_of_each_ttl() {
        let mut config = Config::default();
        config.safety_margin = Some(ms(1_500));
        assert_rejects(config.clone(), "safety_margin");
        config.safety_margin = Some(ms(1_499));
        config.validate().unwrap();
    }

    #[test]
    fn default_margin_needs_ttls_above_200ms() {
        let mut config = Config::default();
        config.heartbeat_interval = ms(50);
        config.heartbeat_ttl = ms(150);
        config.emergency_grace = ms(50);
        assert_rejects(config.clone(), "heartbeat_ttl");
        config.heartbeat_ttl = ms(201);
        config.validate().unwrap();
    }

    #[test]
    fn every_violation_is_reported_at_once() {
        let mut config = Config::default();
        config.cooldown = Duration::from_secs(60);
        config.restart_ratio = 2.0;
        config.replicas = 0;
        let err = config.validate().unwrap_err();
        for field in ["cooldown", "restart_ratio", "replicas"] {
            assert!(err.concerns(field), "{field} missing from {err}");
        }
    }

    #[test]
    fn bucket_specs_carry_the_lease_ttls() {
        let mut config = Config::default();
        config.replicas = 3;
        assert_eq!(config.ids_bucket().unwrap().ttl(), Some(config.id_ttl));
        assert_eq!(
            config.election_bucket().unwrap().ttl(),
            Some(config.election_ttl)
        );
        let heartbeat = config.heartbeat_bucket().unwrap();
        assert_eq!(heartbeat.ttl(), Some(config.heartbeat_ttl));
        assert_eq!(heartbeat.replicas(), 3);
        assert_eq!(config.assignment_bucket().unwrap().ttl(), None);
        assert_eq!(
            BucketNames::with_prefix("orders").heartbeat,
            "orders-heartbeat"
        );
    }

    #[test]
    fn derived_intervals() {
        let config = Config::default();
        assert_eq!(config.id_renew_interval(), Duration::from_secs(10));
        assert_eq!(config.election_renew_interval(), Duration::from_secs(2));
        assert_eq!(config.heartbeat_poll_interval(), ms(500));
        assert_eq!(config.backstop_interval(), ms(30_000));
        let slow = Config {
            heartbeat_ttl: ms(10_000),
            ..config.clone()
        };
        assert_eq!(slow.backstop_interval(), ms(100_000));
        assert_eq!(config.margin_for(Duration::from_secs(3)), ms(300));
        assert_eq!(config.margin_for(Duration::from_millis(500)), ms(100));
    }
}
