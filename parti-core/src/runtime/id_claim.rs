//! Stable worker ids: claim the lowest free `worker-<n>` (or, with a static identity, the
//! id whose claim carries it), renew by compare-and-set, release by delete-at-revision or,
//! with an identity, park.
//!
//! Renewing with compare-and-set is what keeps an id exclusive: a worker whose claim expired
//! while it was paused cannot overwrite the claim of the worker that took the id since (the
//! earlier Go implementation renewed with a blind put and could).

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parti_strategy::WorkerId;

use super::InstanceId;
use crate::config::Config;
use crate::decide::Backoff;
use crate::store::{Bucket, Revision, StoreError};
use crate::wire::{IdClaim, WORKER_ID_PREFIX, WireRecord, worker_id, worker_number};
use crate::{Error, Result};

/// How often a claim at the start looks again when an identity's claim changed under it.
const CLAIM_ATTEMPTS: u32 = 5;

/// After losing the race for an id, a claimer waits a jittered backoff from here (growing
/// to [`CONTENDED_CAP`]), lists the ids again and claims the lowest free one: claimers
/// starting together spread out in time instead of all racing for every next id (which
/// costs a failed write and a read per claimer per id: about 40,000 requests for 200
/// workers started at once).
const CONTENDED_BASE: Duration = Duration::from_millis(4);
/// The longest wait between two tries of a claimer that keeps losing races.
const CONTENDED_CAP: Duration = Duration::from_millis(250);
/// After this many lost races a claimer stops waiting and tries each next free id at once,
/// so that it gets one however many others keep starting.
const CONTENDED_ROUNDS: u32 = 12;

/// What one look at the ids gave.
enum Claim {
    Claimed(ClaimedId),
    /// Another claimer took the id this one tried first: look again after a while.
    Contended,
}

/// A claimed id and the revision of the claim's last write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedId {
    worker_id: WorkerId,
    revision: Revision,
}

impl ClaimedId {
    /// The worker id.
    pub fn worker_id(&self) -> &WorkerId {
        &self.worker_id
    }

    /// The revision of the claim's last write (what the next renewal expects).
    pub fn revision(&self) -> Revision {
        self.revision
    }
}

/// The name of the host this process runs on, for operators (`parti status`): `HOSTNAME`
/// when the environment exports it, else the kernel's (Linux), else `unknown`.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Claims, renews and releases stable worker ids in the ids bucket.
///
/// ```
/// use parti_core::config::Config;
/// use parti_core::runtime::{IdClaimer, InstanceId};
/// use parti_core::store::{MemoryStore, Store};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> parti_core::Result<()> {
/// let config = Config::default();
/// let store = MemoryStore::new();
/// let ids = store.bucket(&config.ids_bucket()?).await?;
/// let first = IdClaimer::new(ids.clone(), &config, InstanceId::generate(), None);
/// let second = IdClaimer::new(ids, &config, InstanceId::generate(), None);
///
/// let mut a = first.claim().await?;
/// let b = second.claim().await?;
/// assert_eq!((a.worker_id().as_str(), b.worker_id().as_str()), ("worker-0", "worker-1"));
/// first.renew(&mut a).await?;
/// first.release(&a).await?;
/// assert_eq!(second.claim().await?.worker_id().as_str(), "worker-0"); // reused
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct IdClaimer<B> {
    bucket: B,
    min: u32,
    max: u32,
    record: IdClaim,
}

impl<B: Bucket> IdClaimer<B> {
    /// A claimer for the id range of `config`, writing claims for `instance` with its
    /// static `identity`, if it has one.
    pub fn new(bucket: B, config: &Config, instance: InstanceId, identity: Option<String>) -> Self {
        let since_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Self {
            bucket,
            min: config.min_worker_id,
            max: config.max_worker_id,
            record: IdClaim {
                instance_id: instance.to_string(),
                host: host_name(),
                since_unix_ms,
                identity,
                parked: false,
            },
        }
    }

    /// The static identity claims are made for, if any.
    pub fn identity(&self) -> Option<&str> {
        self.record.identity.as_deref()
    }

    /// Claims an id at the start of a process: with a static identity, the id whose claim
    /// carries it — taken over whoever holds it (the newest process of an identity wins, as
    /// a restarted one replaces its predecessor) — else the lowest free id of the range.
    /// When another worker takes that id between the listing and the claim, the claimer
    /// waits a moment (jittered, growing) and looks again, so that workers starting
    /// together spread out instead of all racing for each next id.
    ///
    /// # Errors
    /// [`Error::NoFreeWorkerId`] when every id is claimed; store errors (transient ones are
    /// worth retrying).
    pub async fn claim(&self) -> Result<ClaimedId> {
        self.claim_as(true, None).await
    }

    /// Claims an id again after this process lost `previous` (an outage longer than
    /// `id_ttl`, say): `previous` again if it is free, so the worker keeps its id (and its
    /// partitions) when nobody took it meanwhile; otherwise like [`claim`](Self::claim) — but
    /// an identity's claim held by another running process is not taken over (that process
    /// replaced this one).
    ///
    /// # Errors
    /// [`Error::IdentityInUse`] when another running process holds this identity's claim;
    /// otherwise as [`claim`](Self::claim).
    pub async fn reclaim(&self, previous: &WorkerId) -> Result<ClaimedId> {
        self.claim_as(false, Some(previous)).await
    }

    async fn claim_as(&self, take_over: bool, previous: Option<&WorkerId>) -> Result<ClaimedId> {
        // An identity's claim changed between its listing and the take-over (its previous
        // process renewed it, or another one took it at the same instant): look again.
        let mut attempts = 0;
        let mut lost_races = 0;
        let mut contended = Backoff::new(CONTENDED_BASE, CONTENDED_CAP, self.seed());
        loop {
            let wait = lost_races < CONTENDED_ROUNDS;
            match self.claim_once(take_over, previous, wait).await {
                Ok(Claim::Claimed(claimed)) => return Ok(claimed),
                Ok(Claim::Contended) => {
                    lost_races += 1;
                    tokio::time::sleep(contended.next_delay()).await;
                }
                Err(Error::Store(StoreError::Conflict { .. })) if attempts < CLAIM_ATTEMPTS => {
                    attempts += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A number that differs between processes, for the jitter of [`Claim::Contended`].
    fn seed(&self) -> u64 {
        self.record
            .instance_id
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            })
    }

    /// One look at the ids and a claim; with `wait`, an id lost to another claimer ends the
    /// look ([`Claim::Contended`]) instead of the next free id being tried at once.
    async fn claim_once(
        &self,
        take_over: bool,
        previous: Option<&WorkerId>,
        wait: bool,
    ) -> Result<Claim> {
        let value = self.record.encode()?;
        let taken: BTreeSet<u32> = match self.identity() {
            None => self
                .bucket
                .keys(WORKER_ID_PREFIX)
                .await?
                .iter()
                .filter_map(|key| worker_number(key))
                .collect(),
            Some(identity) => {
                let entries = self.bucket.entries(WORKER_ID_PREFIX).await?;
                let own = entries.iter().find_map(|entry| {
                    let claim = IdClaim::decode(&entry.value).ok()?;
                    (claim.identity.as_deref() == Some(identity)).then_some((entry, claim))
                });
                if let Some((entry, claim)) = own {
                    let worker_id = WorkerId::new(&entry.key);
                    let ours = claim.instance_id == self.record.instance_id;
                    if !(take_over || ours || claim.parked) {
                        return Err(Error::IdentityInUse {
                            identity: identity.to_owned(),
                            worker_id,
                            instance: claim.instance_id,
                        });
                    }
                    let revision = self
                        .bucket
                        .update(&entry.key, value, entry.revision)
                        .await?;
                    return Ok(Claim::Claimed(ClaimedId {
                        worker_id,
                        revision,
                    }));
                }
                entries
                    .iter()
                    .filter_map(|entry| worker_number(&entry.key))
                    .collect()
            }
        };
        let previous = previous
            .and_then(|id| worker_number(id.as_str()))
            .filter(|n| (self.min..=self.max).contains(n) && !taken.contains(n));
        let free = (self.min..=self.max).filter(|n| !taken.contains(n));
        for n in previous.into_iter().chain(free) {
            let id = worker_id(n);
            match self.bucket.create(id.as_str(), value.clone()).await {
                Ok(revision) => {
                    return Ok(Claim::Claimed(ClaimedId {
                        worker_id: id,
                        revision,
                    }));
                }
                Err(StoreError::AlreadyExists { .. }) if wait => return Ok(Claim::Contended),
                Err(StoreError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::NoFreeWorkerId {
            min: self.min,
            max: self.max,
        })
    }

    /// Renews the claim by compare-and-set on its last revision. A claim found gone (its
    /// bucket lost) is claimed again if nobody took the id meanwhile. A claim found at a
    /// later revision but still this process's — a renewal whose outcome was unknown (it
    /// timed out) landed after all — is renewed again at that revision: the id was never
    /// anyone else's. (Taking it for lost cost a worker its id, and its partitions, when a
    /// NATS node died under a renewal.) Either way the claim's TTL then runs from a write
    /// acknowledged after this call began, never from the earlier one that landed unseen.
    ///
    /// # Errors
    /// [`Error::IdLost`] when the claim changed or vanished (the id must no longer be
    /// used); store errors otherwise (transient ones are worth retrying while the claim's
    /// TTL lasts).
    pub async fn renew(&self, claimed: &mut ClaimedId) -> Result<()> {
        let value = self.record.encode()?;
        match self
            .bucket
            .update(claimed.worker_id.as_str(), value, claimed.revision)
            .await
        {
            Ok(revision) => {
                claimed.revision = revision;
                Ok(())
            }
            Err(StoreError::Conflict { .. }) => {
                let key = claimed.worker_id.as_str();
                let renewed = match self.bucket.get(key).await? {
                    // Gone with its bucket (created again since)? Then nobody took it:
                    // claim it again.
                    None => self.bucket.create(key, self.record.encode()?).await.ok(),
                    // Still this process's claim: an earlier renewal landed unseen.
                    Some(entry) if self.holds(&entry.value) => {
                        let value = self.record.encode()?;
                        match self.bucket.update(key, value, entry.revision).await {
                            Ok(revision) => Some(revision),
                            Err(StoreError::Conflict { .. }) => None,
                            Err(e) => {
                                // Renewed at the revision found by the next try.
                                claimed.revision = entry.revision;
                                return Err(e.into());
                            }
                        }
                    }
                    // Anything else there is another worker's claim.
                    Some(_) => None,
                };
                match renewed {
                    Some(revision) => {
                        claimed.revision = revision;
                        Ok(())
                    }
                    None => Err(Error::IdLost {
                        worker_id: claimed.worker_id.clone(),
                    }),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `value` is a claim of this process.
    fn holds(&self, value: &[u8]) -> bool {
        IdClaim::decode(value).is_ok_and(|claim| claim.instance_id == self.record.instance_id)
    }

    /// Releases the claim if it is still this worker's (delete at its revision), so the id
    /// is free at once instead of after its TTL. A claim already lost is left alone.
    ///
    /// # Errors
    /// Store errors other than the claim having changed.
    pub async fn release(&self, claimed: &ClaimedId) -> Result<()> {
        match self
            .bucket
            .delete(claimed.worker_id.as_str(), Some(claimed.revision))
            .await
        {
            // Changed, or gone with its bucket: not ours to release any more.
            Ok(()) | Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Parks the claim of a worker with a static identity that stops gracefully: the claim
    /// is marked as expected back and left to expire by its TTL instead of released, so the
    /// leader keeps the worker's partitions for it (for `restart_grace`) and a process with
    /// the same identity takes the id back. A claim already lost is left alone.
    ///
    /// # Errors
    /// Store errors other than the claim having changed.
    pub async fn park(&self, claimed: &ClaimedId) -> Result<()> {
        let parked = IdClaim {
            parked: true,
            ..self.record.clone()
        };
        match self
            .bucket
            .update(
                claimed.worker_id.as_str(),
                parked.encode()?,
                claimed.revision,
            )
            .await
        {
            Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::task::JoinSet;

    use super::*;
    use crate::store::{Fault, MemoryBucket, MemoryStore, Store};

    async fn setup(config: &Config) -> (MemoryStore, MemoryBucket) {
        let store = MemoryStore::new();
        let bucket = store.bucket(&config.ids_bucket().unwrap()).await.unwrap();
        (store, bucket)
    }

    fn claimer(bucket: &MemoryBucket, config: &Config) -> IdClaimer<MemoryBucket> {
        IdClaimer::new(bucket.clone(), config, InstanceId::generate(), None)
    }

    /// The id a new worker claims.
    async fn claim_next(bucket: &MemoryBucket, config: &Config) -> String {
        let claimed = claimer(bucket, config).claim().await.unwrap();
        claimed.worker_id().as_str().to_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn ids_are_claimed_lowest_first_and_reused_after_release() {
        let config = Config::default();
        let (_, bucket) = setup(&config).await;
        let a = claimer(&bucket, &config).claim().await.unwrap();
        let b = claimer(&bucket, &config).claim().await.unwrap();
        let c = claimer(&bucket, &config).claim().await.unwrap();
        let names: Vec<&str> = [&a, &b, &c]
            .iter()
            .map(|c| c.worker_id().as_str())
            .collect();
        assert_eq!(names, ["worker-0", "worker-1", "worker-2"]);
        claimer(&bucket, &config).release(&b).await.unwrap();
        assert_eq!(claim_next(&bucket, &config).await, "worker-1");
    }

    #[tokio::test(start_paused = true)]
    async fn renewals_keep_a_claim_alive_and_an_unrenewed_one_expires() {
        let config = Config::default();
        let (_, bucket) = setup(&config).await;
        let renewing = claimer(&bucket, &config);
        let mut kept = renewing.claim().await.unwrap();
        let idle = claimer(&bucket, &config).claim().await.unwrap();
        assert_eq!(idle.worker_id().as_str(), "worker-1");
        for _ in 0..6 {
            tokio::time::sleep(config.id_renew_interval()).await;
            renewing.renew(&mut kept).await.unwrap();
        }
        // Two id TTLs later, worker-0 is still claimed and worker-1 has expired.
        let next = claimer(&bucket, &config).claim().await.unwrap();
        assert_eq!(next.worker_id().as_str(), "worker-1");
    }

    /// A renewal that timed out but took effect leaves the claim at a revision this worker
    /// never saw acknowledged: the next renewal finds its own claim there and renews it,
    /// rather than taking the id for lost. (Without that, a worker lost its id — and its
    /// partitions — when a NATS node died under a renewal.)
    #[tokio::test(start_paused = true)]
    async fn a_renewal_that_landed_unseen_keeps_the_id() {
        let config = Config::default();
        let (store, bucket) = setup(&config).await;
        let renewing = claimer(&bucket, &config);
        let mut claimed = renewing.claim().await.unwrap();
        store.fail_next(1, Fault::Timeout { applied: true });
        let err = renewing.renew(&mut claimed).await.unwrap_err();
        assert!(
            matches!(err, Error::Store(StoreError::OutcomeUnknown { .. })),
            "{err:?}"
        );
        renewing.renew(&mut claimed).await.unwrap();
        let key = claimed.worker_id().as_str();
        let entry = bucket.get(key).await.unwrap().unwrap();
        assert_eq!(entry.revision, claimed.revision(), "renewed, and known at");
        // And the next renewal goes through as usual.
        renewing.renew(&mut claimed).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_after_the_id_was_taken_over_reports_it_lost() {
        let config = Config::default();
        let (_, bucket) = setup(&config).await;
        let paused = claimer(&bucket, &config);
        let mut stale = paused.claim().await.unwrap();
        // The worker pauses past its TTL; another takes the id.
        tokio::time::sleep(config.id_ttl).await;
        let thief = claimer(&bucket, &config).claim().await.unwrap();
        assert_eq!(thief.worker_id(), stale.worker_id());
        let err = paused.renew(&mut stale).await.unwrap_err();
        assert!(matches!(err, Error::IdLost { .. }), "{err:?}");
        // Releasing the lost claim must not delete the new owner's.
        paused.release(&stale).await.unwrap();
        let entry = bucket
            .get(thief.worker_id().as_str())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(entry.revision, thief.revision());
    }

    fn with_identity(
        bucket: &MemoryBucket,
        config: &Config,
        identity: &str,
    ) -> IdClaimer<MemoryBucket> {
        IdClaimer::new(
            bucket.clone(),
            config,
            InstanceId::generate(),
            Some(identity.to_owned()),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_renewed_between_the_listing_and_the_take_over_is_looked_at_again() {
        let config = Config::default();
        let (store, bucket) = setup(&config).await;
        let running = with_identity(&bucket, &config, "pod-a");
        let mut old = running.claim().await.unwrap();
        // The new process's link is slow: its take-over lands 200 ms after it listed.
        let slow = store.connect();
        slow.set_latency(Duration::from_millis(100));
        let slow_bucket = slow.bucket(&config.ids_bucket().unwrap()).await.unwrap();
        let starting = tokio::spawn(async move {
            with_identity(&slow_bucket, &Config::default(), "pod-a")
                .claim()
                .await
        });
        // Meanwhile the running process renews: the take-over's revision is stale.
        tokio::time::sleep(Duration::from_millis(150)).await;
        running.renew(&mut old).await.unwrap();
        let new = starting
            .await
            .unwrap()
            .expect("looked again and took the claim over");
        assert_eq!(new.worker_id(), old.worker_id());
        let err = running.renew(&mut old).await.unwrap_err();
        assert!(matches!(err, Error::IdLost { .. }), "{err:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_identity_gets_its_id_back_at_once_after_a_crash() {
        let config = Config::default();
        let (_, bucket) = setup(&config).await;
        claim_next(&bucket, &config).await; // worker-0, someone else
        let crashed = with_identity(&bucket, &config, "pod-a")
            .claim()
            .await
            .unwrap();
        assert_eq!(crashed.worker_id().as_str(), "worker-1");
        // The process crashed: its claim lives on. A restart with the same identity takes
        // it over at once; one without an identity would have got another id.
        let restarted = with_identity(&bucket, &config, "pod-a")
            .claim()
            .await
            .unwrap();
        assert_eq!(restarted.worker_id(), crashed.worker_id());
        assert_eq!(claim_next(&bucket, &config).await, "worker-2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_process_that_lost_its_identity_to_a_newer_one_does_not_take_it_back() {
        let config = Config::default();
        let (_, bucket) = setup(&config).await;
        let old = with_identity(&bucket, &config, "pod-a");
        let mut old_claim = old.claim().await.unwrap();
        let new = with_identity(&bucket, &config, "pod-a");
        new.claim().await.unwrap();
        assert!(matches!(
            old.renew(&mut old_claim).await.unwrap_err(),
            Error::IdLost { .. }
        ));
        let err = old.reclaim(old_claim.worker_id()).await.unwrap_err();
        assert!(
            matches!(&err, Error::IdentityInUse { identity, worker_id, .. }
                if identity == "pod-a" && worker_id.as_str() == "worker-0"),
            "{err:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_parked_claim_stays_until_its_identity_takes_it_back() {
        let config = Config::default();
        let (_, bucket) = setup(&config).await;
        let stopping = with_identity(&bucket, &config, "pod-a");
        let claimed = stopping.claim().await.unwrap();
        stopping.park(&claimed).await.unwrap();
        let entry = bucket
            .get("worker-0")
            .await
            .unwrap()
            .expect("still claimed");
        assert!(IdClaim::decode(&entry.value).unwrap().parked);
        // Nobody else gets the id meanwhile; the identity does, also as a reclaim.
        assert_eq!(claim_next(&bucket, &config).await, "worker-1");
        let back = with_identity(&bucket, &config, "pod-a")
            .reclaim(&worker_id(5))
            .await
            .unwrap();
        assert_eq!(back.worker_id().as_str(), "worker-0");
        let entry = bucket.get("worker-0").await.unwrap().unwrap();
        assert!(!IdClaim::decode(&entry.value).unwrap().parked);
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_that_vanished_is_claimed_again_by_its_renewal() {
        let config = Config::default();
        let (_, bucket) = setup(&config).await;
        let ids = claimer(&bucket, &config);
        let mut claimed = ids.claim().await.unwrap();
        // Gone (as with its bucket), nobody else took it: the renewal claims it again.
        bucket.delete("worker-0", None).await.unwrap();
        ids.renew(&mut claimed).await.unwrap();
        let entry = bucket
            .get("worker-0")
            .await
            .unwrap()
            .expect("claimed again");
        assert_eq!(entry.revision, claimed.revision());
        // Taken meanwhile: lost.
        bucket.delete("worker-0", None).await.unwrap();
        claimer(&bucket, &config).claim().await.unwrap();
        assert!(matches!(
            ids.renew(&mut claimed).await.unwrap_err(),
            Error::IdLost { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_id_is_claimed_again_if_still_free() {
        let config = Config::default();
        let (_, bucket) = setup(&config).await;
        let claims: Vec<_> = (0..3).map(|_| claimer(&bucket, &config)).collect();
        let mut ids = Vec::new();
        for c in &claims {
            ids.push(c.claim().await.unwrap());
        }
        // An outage longer than id_ttl: every claim expires. worker-2 comes back first and
        // gets worker-2 again, not the lowest free id.
        tokio::time::sleep(config.id_ttl).await;
        let back = claims[2].reclaim(ids[2].worker_id()).await.unwrap();
        assert_eq!(back.worker_id().as_str(), "worker-2");
        // Taken meanwhile: the lowest free one.
        let other = claims[0].reclaim(&worker_id(2)).await.unwrap();
        assert_eq!(other.worker_id().as_str(), "worker-0");
    }

    #[tokio::test(start_paused = true)]
    async fn an_exhausted_range_is_a_clear_error() {
        let config = Config {
            min_worker_id: 3,
            max_worker_id: 4,
            ..Config::default()
        };
        let (_, bucket) = setup(&config).await;
        assert_eq!(claim_next(&bucket, &config).await, "worker-3");
        assert_eq!(claim_next(&bucket, &config).await, "worker-4");
        let err = claimer(&bucket, &config).claim().await.unwrap_err();
        assert!(
            matches!(err, Error::NoFreeWorkerId { min: 3, max: 4 }),
            "{err:?}"
        );
        assert!(err.to_string().contains("worker-3 to worker-4"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hundred_workers_claiming_at_once_get_the_hundred_lowest_ids() {
        let config = Config::default();
        let (store, _) = setup(&config).await;
        let mut tasks = JoinSet::new();
        for _ in 0..100 {
            let connection = store.connect();
            // Latency makes every claimer list the keys before any creates: they all race
            // for the same ids and the losers must move on.
            connection.set_latency(Duration::from_millis(1));
            let config = config.clone();
            tasks.spawn(async move {
                let bucket = connection
                    .bucket(&config.ids_bucket().unwrap())
                    .await
                    .unwrap();
                IdClaimer::new(bucket, &config, InstanceId::generate(), None)
                    .claim()
                    .await
                    .unwrap()
            });
        }
        let mut ids = BTreeSet::new();
        while let Some(claimed) = tasks.join_next().await {
            ids.insert(claimed.unwrap().worker_id().clone());
        }
        let expected: BTreeSet<WorkerId> = (0..100).map(worker_id).collect();
        assert_eq!(ids, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_store_errors_surface_as_transient() {
        let config = Config::default();
        let (store, bucket) = setup(&config).await;
        let ids = claimer(&bucket, &config);
        let mut claimed = ids.claim().await.unwrap();
        store.fail_next(1, Fault::Unavailable);
        let err = ids.renew(&mut claimed).await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        // The claim is intact and the next renewal works.
        ids.renew(&mut claimed).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(
            bucket
                .get(claimed.worker_id().as_str())
                .await
                .unwrap()
                .is_some()
        );
    }
}
