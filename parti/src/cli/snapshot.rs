//! A read-only snapshot of a fleet: what its four buckets say, decoded and put side by side.
//! Reading never creates or changes a bucket ([`NatsStore::open_existing`]).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parti_core::config::BucketNames;
use parti_core::decide::ManagerState;
use parti_core::store::{Bucket, StoreError};
use parti_core::wire::{
    AssignmentRecord, Heartbeat, IdClaim, LEADER_KEY, LeaderRecord, WireRecord, worker_number,
};
use parti_nats::{NatsBucket, NatsStore};
use serde::Serialize;

/// Why a snapshot could not be taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SnapshotError {
    /// A bucket of the fleet does not exist.
    #[error(
        "no parti fleet here: bucket `{bucket}` does not exist (is --prefix right? nothing \
         was created)"
    )]
    Absent { bucket: String },
    /// The server could not be read.
    #[error("reading bucket `{bucket}` failed: {source}")]
    Store {
        bucket: String,
        #[source]
        source: StoreError,
    },
}

/// The fleet as its buckets show it at one moment.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Fleet {
    /// The bucket names read.
    pub(crate) buckets: Buckets,
    /// The leader, if its lease is live.
    pub(crate) leader: Option<Leader>,
    /// The highest assignment version published (0: none).
    pub(crate) published_version: u64,
    /// Every worker seen in any bucket, by id number.
    pub(crate) workers: Vec<Worker>,
    /// Partitions assigned, and to whom.
    pub(crate) partitions: BTreeMap<String, Owner>,
    /// Values that could not be decoded, or that belong to nobody.
    pub(crate) problems: Vec<Problem>,
}

/// The names of the buckets a snapshot read.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Buckets {
    pub(crate) ids: String,
    pub(crate) election: String,
    pub(crate) heartbeat: String,
    pub(crate) assignment: String,
}

/// The leader as the election bucket says.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Leader {
    pub(crate) worker: String,
    pub(crate) instance: String,
    pub(crate) term: u64,
    pub(crate) phase: &'static str,
}

/// One worker as the ids, heartbeat and assignment buckets say.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Worker {
    pub(crate) id: String,
    /// The process instance (from its heartbeat, else its claim).
    pub(crate) instance: Option<String>,
    pub(crate) identity: Option<String>,
    pub(crate) host: Option<String>,
    /// Seconds since its last heartbeat was stored (`None`: no live heartbeat).
    pub(crate) heartbeat_age_secs: Option<f64>,
    /// The assignment version it reports applied.
    pub(crate) applied_version: Option<u64>,
    /// The version of its assignment record.
    pub(crate) record_version: Option<u64>,
    /// How many versions its record is ahead of what it applied.
    pub(crate) lag: u64,
    /// `stable`, `applying`, `waiting` (live, no record for it yet), `parked` (stopped,
    /// expected back), `silent` (claimed, no heartbeat: starting, or crashed and its claim
    /// not yet expired), `gone` (a record only).
    pub(crate) state: &'static str,
    /// Partitions in its record.
    pub(crate) partitions: usize,
}

/// Who a partition is assigned to.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Owner {
    pub(crate) worker: String,
    pub(crate) term: u64,
    pub(crate) version: u64,
    /// Whether the worker reports that version (or a later one) applied: it holds the
    /// partition, rather than being about to.
    pub(crate) applied: bool,
    /// When the record that carries the grant was last written, in ms since the epoch.
    pub(crate) record_written_unix_ms: u64,
}

/// A value the snapshot could not use.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Problem {
    pub(crate) bucket: String,
    pub(crate) key: String,
    pub(crate) problem: String,
}

/// One decoded entry with the time it was stored.
struct Read<T> {
    value: T,
    revision: u64,
    stored: SystemTime,
}

/// The fleet's four buckets, opened read-only.
pub(crate) struct FleetBuckets {
    names: BucketNames,
    ids: NatsBucket,
    election: NatsBucket,
    heartbeat: NatsBucket,
    assignment: NatsBucket,
}

impl FleetBuckets {
    /// Opens the buckets of the fleet with `prefix`; an absent one is an error that says so.
    pub(crate) async fn open(store: &NatsStore, prefix: &str) -> Result<Self, SnapshotError> {
        let names = BucketNames::with_prefix(prefix);
        let open = |name: String| async move {
            match store.open_existing(&name).await {
                Ok(Some(bucket)) => Ok(bucket),
                Ok(None) => Err(SnapshotError::Absent { bucket: name }),
                Err(source) => Err(SnapshotError::Store {
                    bucket: name,
                    source,
                }),
            }
        };
        Ok(Self {
            ids: open(names.ids.clone()).await?,
            election: open(names.election.clone()).await?,
            heartbeat: open(names.heartbeat.clone()).await?,
            assignment: open(names.assignment.clone()).await?,
            names,
        })
    }

    /// The buckets, for watching.
    pub(crate) fn all(&self) -> [&NatsBucket; 4] {
        [&self.ids, &self.election, &self.heartbeat, &self.assignment]
    }

    /// Reads every key of one bucket, decoding each value; undecodable ones become problems.
    async fn read_all<T: WireRecord>(
        bucket: &NatsBucket,
        problems: &mut Vec<Problem>,
    ) -> Result<BTreeMap<String, Read<T>>, SnapshotError> {
        let failed = |source| SnapshotError::Store {
            bucket: bucket.name().to_owned(),
            source,
        };
        let mut read = BTreeMap::new();
        for key in bucket.keys("").await.map_err(failed)? {
            // Gone between the listing and the read: nothing to show.
            let Some((entry, stored)) = bucket.get_with_time(&key).await.map_err(failed)? else {
                continue;
            };
            match T::decode(&entry.value) {
                Ok(value) => {
                    read.insert(
                        key,
                        Read {
                            value,
                            revision: entry.revision.get(),
                            stored,
                        },
                    );
                }
                Err(e) => problems.push(Problem {
                    bucket: bucket.name().to_owned(),
                    key,
                    problem: e.to_string(),
                }),
            }
        }
        Ok(read)
    }

    /// Reads everything and puts it side by side.
    pub(crate) async fn snapshot(&self) -> Result<Fleet, SnapshotError> {
        let mut problems = Vec::new();
        let now = SystemTime::now();
        let mut election = Self::read_all::<LeaderRecord>(&self.election, &mut Vec::new()).await?;
        let leader = election.remove(LEADER_KEY).map(|read| Leader {
            worker: read.value.worker_id.to_string(),
            instance: read.value.instance_id.clone(),
            term: read.value.term_at(read.revision),
            // The workers' state names: the phase is what their state mirrors.
            phase: ManagerState::from(read.value.phase).as_str(),
        });
        let claims = Self::read_all::<IdClaim>(&self.ids, &mut problems).await?;
        let beats = Self::read_all::<Heartbeat>(&self.heartbeat, &mut problems).await?;
        let records = Self::read_all::<AssignmentRecord>(&self.assignment, &mut problems).await?;

        let mut ids: Vec<&String> = claims
            .keys()
            .chain(beats.keys())
            .chain(records.keys())
            .collect();
        ids.sort_by_key(|id| (worker_number(id), (*id).clone()));
        ids.dedup();
        let mut workers = Vec::new();
        let mut partitions = BTreeMap::new();
        for id in ids {
            let (claim, beat, record) = (claims.get(id), beats.get(id), records.get(id));
            if worker_number(id).is_none() {
                problems.push(Problem {
                    bucket: self.names.heartbeat.clone(),
                    key: id.clone(),
                    problem: "not a worker id (worker-<n>)".into(),
                });
                continue;
            }
            let applied = beat.map(|b| b.value.applied_version);
            let record_version = record.map(|r| r.value.version);
            let lag = match (record_version, applied) {
                (Some(published), Some(applied)) => published.saturating_sub(applied),
                _ => 0,
            };
            let state = match (claim, beat, record) {
                (_, Some(_), Some(_)) if lag == 0 => "stable",
                (_, Some(_), Some(_)) => "applying",
                (_, Some(_), None) => "waiting",
                (Some(c), None, _) if c.value.parked => "parked",
                (Some(_), None, _) => "silent",
                (None, None, _) => "gone",
            };
            if claim.is_none() && beat.is_some() {
                problems.push(Problem {
                    bucket: self.names.heartbeat.clone(),
                    key: id.clone(),
                    problem: "a heartbeat under an id nobody claimed: it is no worker".into(),
                });
            }
            if let Some(record) = record {
                for grant in &record.value.partitions {
                    partitions.insert(
                        grant.partition.to_string(),
                        Owner {
                            worker: id.clone(),
                            term: grant.token.term,
                            version: grant.token.version,
                            applied: applied.is_some_and(|a| a >= grant.token.version),
                            record_written_unix_ms: unix_ms(record.stored),
                        },
                    );
                }
            }
            workers.push(Worker {
                id: id.clone(),
                instance: beat
                    .map(|b| b.value.instance_id.clone())
                    .or_else(|| claim.map(|c| c.value.instance_id.clone())),
                identity: claim.and_then(|c| c.value.identity.clone()),
                host: claim.map(|c| c.value.host.clone()),
                heartbeat_age_secs: beat.map(|b| age(now, b.stored).as_secs_f64()),
                applied_version: applied,
                record_version,
                lag,
                state,
                partitions: record.map_or(0, |r| r.value.partitions.len()),
            });
        }
        Ok(Fleet {
            buckets: Buckets {
                ids: self.names.ids.clone(),
                election: self.names.election.clone(),
                heartbeat: self.names.heartbeat.clone(),
                assignment: self.names.assignment.clone(),
            },
            leader,
            published_version: records.values().map(|r| r.value.version).max().unwrap_or(0),
            workers,
            partitions,
            problems,
        })
    }
}

fn age(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or_default()
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
