//! The assignment publisher: the leader's copy of the assignment records, and writing the
//! steps of the [handoff planner](crate::decide::Handoff) as compare-and-set writes — only
//! the records that change.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::{StreamExt, stream};
use parti_strategy::{Assignment, PartitionId, WorkerId};

use crate::decide::{Committed, RecordChange, Step, StoredRecord};
use crate::store::{Bucket, Revision, StoreError};
use crate::wire::{
    AssignmentRecord, FencingToken, Grant, Lifecycle, WORKER_ID_PREFIX, WireRecord, worker_number,
};
use crate::{Error, Result};

/// One worker's record as the leader last read or wrote it.
#[derive(Debug, Clone)]
struct Slot {
    revision: Revision,
    /// `None` when the stored value is unreadable (it is overwritten at the next publish).
    record: Option<AssignmentRecord>,
}

/// What one publish did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Published {
    /// The version written (unchanged when nothing was written).
    pub(crate) version: u64,
    /// Records created or updated.
    pub(crate) written: usize,
    /// Records deleted.
    pub(crate) deleted: usize,
}

/// The leader's view of the assignment bucket.
#[derive(Debug, Clone, Default)]
pub(crate) struct Records {
    slots: BTreeMap<WorkerId, Slot>,
    /// The highest version in any record (the next publish writes a higher one).
    version: u64,
}

impl Records {
    /// Reads every record. Unreadable ones are reported through `corrupt` and will be
    /// overwritten.
    pub(crate) async fn load<B: Bucket>(
        bucket: &B,
        mut corrupt: impl FnMut(Error),
    ) -> Result<Self> {
        let mut records = Self::default();
        for entry in bucket.entries(WORKER_ID_PREFIX).await? {
            if worker_number(&entry.key).is_none() {
                continue;
            }
            let record = match AssignmentRecord::decode(&entry.value) {
                Ok(record) => {
                    records.version = records.version.max(record.version);
                    Some(record)
                }
                Err(source) => {
                    corrupt(Error::Corrupt {
                        bucket: bucket.name().to_owned(),
                        key: entry.key.clone(),
                        source,
                    });
                    None
                }
            };
            records.slots.insert(
                WorkerId::new(&entry.key),
                Slot {
                    revision: entry.revision,
                    record,
                },
            );
        }
        Ok(records)
    }

    /// Who owns what according to the records (a partition in two records — a half-done
    /// change — goes to the first worker by id; the next rebalance settles it).
    pub(crate) fn assignment(&self) -> Assignment {
        let mut assignment = Assignment::new();
        for (worker, slot) in &self.slots {
            for grant in slot.record.iter().flat_map(|r| &r.partitions) {
                if assignment.owner(&grant.partition).is_none() {
                    assignment.assign(grant.partition.clone(), worker.clone());
                }
            }
        }
        assignment
    }

    /// Whether the records grant exactly `partitions`, each once.
    pub(crate) fn covers_exactly(&self, partitions: &BTreeSet<PartitionId>) -> bool {
        let mut seen = 0;
        for slot in self.slots.values() {
            let Some(record) = &slot.record else {
                return false;
            };
            for grant in &record.partitions {
                if !partitions.contains(&grant.partition) {
                    return false;
                }
                seen += 1;
            }
        }
        seen == partitions.len()
    }

    /// Each record, for the handoff planner. An unreadable record counts as granting
    /// nothing at a version no heartbeat can reach, for no known process, so only its
    /// worker's absence (or a rewrite) settles it.
    pub(crate) fn contents(&self) -> Vec<StoredRecord> {
        self.slots
            .iter()
            .map(|(worker, slot)| match &slot.record {
                Some(record) => StoredRecord {
                    worker: worker.clone(),
                    version: record.version,
                    holder: Some(record.holder),
                    partitions: record
                        .partitions
                        .iter()
                        .map(|g| g.partition.clone())
                        .collect(),
                },
                None => StoredRecord {
                    worker: worker.clone(),
                    version: u64::MAX,
                    holder: None,
                    partitions: BTreeSet::new(),
                },
            })
            .collect()
    }

    /// The highest leader term any record was written under.
    pub(crate) fn highest_term(&self) -> u64 {
        self.slots
            .values()
            .filter_map(|slot| slot.record.as_ref())
            .map(|record| record.term)
            .max()
            .unwrap_or(0)
    }

    /// The highest version written or seen.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Makes the next version at least `version + 1` (a worker reported having applied
    /// `version`, perhaps of a record deleted since: versions must not repeat).
    pub(crate) fn raise_version(&mut self, version: u64) {
        self.version = self.version.max(version);
    }

    /// The tokens of the partitions `worker`'s record grants to heartbeat session `holder`
    /// (none if it was written for another session: a grant's token is never handed to a
    /// second one).
    fn tokens(&self, worker: &WorkerId, holder: u64) -> BTreeMap<&PartitionId, FencingToken> {
        self.slots
            .get(worker)
            .and_then(|slot| slot.record.as_ref())
            .filter(|record| record.holder == holder)
            .into_iter()
            .flat_map(|record| &record.partitions)
            .map(|grant| (&grant.partition, grant.token))
            .collect()
    }

    /// Writes one handoff step, all at one new version, recording in `committed` every write
    /// as it lands (for the planner). Each record is written for the heartbeat session
    /// `holders` names; it keeps the token of every partition its record already granted to
    /// that session, and new grants get `(term, version)`. Every write is a compare-and-set,
    /// checked against the lease (`may_write`) first. On an error the caller re-reads the
    /// records and reconciles the planner.
    pub(crate) async fn write<B: Bucket>(
        &mut self,
        bucket: &B,
        step: &Step,
        holders: &BTreeMap<WorkerId, u64>,
        committed: &mut Vec<Committed>,
        (term, lifecycle): (u64, Lifecycle),
        may_write: impl Fn() -> bool,
    ) -> Result<Published> {
        let version = self.version + 1;
        let mut done = Published {
            version: self.version,
            ..Published::default()
        };
        // Every change of a step is safe on its own (the planner only puts together what may
        // land in any order), so they are written at once, a bounded number at a time: a
        // step of a cold start or of a new leader touches every worker's record.
        let mut planned = Vec::with_capacity(step.len());
        for (worker, change) in step {
            let write = match change {
                RecordChange::Write(partitions) => {
                    let holder = holders.get(worker).copied().unwrap_or(0);
                    let tokens = self.tokens(worker, holder);
                    let record = AssignmentRecord {
                        version,
                        term,
                        holder,
                        lifecycle,
                        partitions: partitions
                            .iter()
                            .map(|partition| Grant {
                                partition: partition.clone(),
                                token: tokens
                                    .get(partition)
                                    .copied()
                                    .unwrap_or(FencingToken { term, version }),
                            })
                            .collect(),
                    };
                    let value = record.encode()?;
                    let expected = self.slots.get(worker).map(|slot| slot.revision);
                    Planned::Write {
                        record,
                        value,
                        expected,
                    }
                }
                RecordChange::Delete => match self.slots.get(worker) {
                    Some(slot) => Planned::Delete(slot.revision),
                    None => Planned::Nothing,
                },
            };
            planned.push((worker.clone(), change.clone(), write));
        }
        let may_write = &may_write;
        let outcomes: Vec<_> = stream::iter(planned)
            .map(|(worker, change, write)| async move {
                if !may_write() {
                    return (worker, change, Err(Error::LeaseLost));
                }
                let key = worker.as_str();
                let to_error = |e| changed(&worker, e);
                let outcome = match write {
                    Planned::Write {
                        record,
                        value,
                        expected,
                    } => {
                        let written = match expected {
                            Some(revision) => bucket.update(key, value, revision).await,
                            None => bucket.create(key, value).await,
                        };
                        written
                            .map(|revision| Landed::Written(revision, record))
                            .map_err(to_error)
                    }
                    Planned::Delete(revision) => bucket
                        .delete(key, Some(revision))
                        .await
                        .map(|()| Landed::Deleted)
                        .map_err(to_error),
                    Planned::Nothing => Ok(Landed::Nothing),
                };
                (worker, change, outcome)
            })
            .buffer_unordered(WRITES_IN_FLIGHT)
            .collect()
            .await;
        let mut failure = None;
        for (worker, change, outcome) in outcomes {
            match outcome {
                Ok(Landed::Written(revision, record)) => {
                    self.version = version;
                    done.version = version;
                    done.written += 1;
                    self.slots.insert(
                        worker.clone(),
                        Slot {
                            revision,
                            record: Some(record),
                        },
                    );
                }
                Ok(Landed::Deleted) => {
                    self.slots.remove(&worker);
                    done.deleted += 1;
                }
                Ok(Landed::Nothing) => {}
                Err(e) => {
                    failure.get_or_insert(e);
                    continue;
                }
            }
            committed.push((worker, change, version));
        }
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(done)
    }
}

/// Record writes of one step in flight at once.
const WRITES_IN_FLIGHT: usize = 32;

/// One change of a step, ready to be written.
enum Planned {
    Write {
        record: AssignmentRecord,
        value: bytes::Bytes,
        /// The revision to update at (`None`: create).
        expected: Option<Revision>,
    },
    Delete(Revision),
    /// A deletion of a record that is not there.
    Nothing,
}

/// What a change did.
enum Landed {
    Written(Revision, AssignmentRecord),
    Deleted,
    Nothing,
}

fn changed(worker: &WorkerId, error: StoreError) -> Error {
    match error {
        StoreError::Conflict { .. } | StoreError::AlreadyExists { .. } => Error::RecordChanged {
            worker_id: worker.clone(),
        },
        other => other.into(),
    }
}
