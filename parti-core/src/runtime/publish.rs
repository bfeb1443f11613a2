//! The assignment publisher: the leader's copy of the assignment records, and writing a new
//! assignment as the fewest compare-and-set writes — only the workers whose grants changed,
//! plus deleting the records of workers that left.

use std::collections::{BTreeMap, BTreeSet};

use parti_strategy::{Assignment, PartitionId, WorkerId};

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

    /// The workers that have a record.
    pub(crate) fn workers(&self) -> BTreeSet<WorkerId> {
        self.slots.keys().cloned().collect()
    }

    /// Whether there are no records.
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
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

    /// The tokens of the partitions `worker`'s record grants.
    fn tokens(&self, worker: &WorkerId) -> BTreeMap<&PartitionId, FencingToken> {
        self.slots
            .get(worker)
            .and_then(|slot| slot.record.as_ref())
            .into_iter()
            .flat_map(|record| &record.partitions)
            .map(|grant| (&grant.partition, grant.token))
            .collect()
    }

    /// Writes `next` for `members`: a worker keeps the token of every partition it already
    /// had; new grants get `(term, version)`. Only changed records are written, records of
    /// workers outside `members` are deleted, and every write is a compare-and-set checked
    /// against the lease (`may_write`) first.
    pub(crate) async fn publish<B: Bucket>(
        &mut self,
        bucket: &B,
        next: &Assignment,
        members: &BTreeSet<WorkerId>,
        term: u64,
        lifecycle: Lifecycle,
        may_write: impl Fn() -> bool,
    ) -> Result<Published> {
        let version = self.version + 1;
        let by_worker = next.by_worker();
        let mut writes = Vec::new();
        for worker in members {
            let partitions = by_worker.get(worker).map(Vec::as_slice).unwrap_or_default();
            let tokens = self.tokens(worker);
            let mut grants: Vec<Grant> = partitions
                .iter()
                .map(|partition| Grant {
                    partition: partition.clone(),
                    token: tokens
                        .get(partition)
                        .copied()
                        .unwrap_or(FencingToken { term, version }),
                })
                .collect();
            grants.sort_by(|a, b| a.partition.cmp(&b.partition));
            let unchanged = self
                .slots
                .get(worker)
                .and_then(|slot| slot.record.as_ref())
                .is_some_and(|record| same_partitions(&record.partitions, &grants));
            if !unchanged {
                writes.push((worker.clone(), grants));
            }
        }
        let departed: Vec<WorkerId> = self
            .slots
            .keys()
            .filter(|worker| !members.contains(*worker))
            .cloned()
            .collect();
        let mut done = Published {
            version: self.version,
            ..Published::default()
        };
        if writes.is_empty() && departed.is_empty() {
            return Ok(done);
        }
        for (worker, grants) in writes {
            let record = AssignmentRecord {
                version,
                term,
                lifecycle,
                partitions: grants,
            };
            if !may_write() {
                return Err(Error::LeaseLost);
            }
            let value = record.encode()?;
            let written = match self.slots.get(&worker) {
                Some(slot) => bucket.update(worker.as_str(), value, slot.revision).await,
                None => bucket.create(worker.as_str(), value).await,
            };
            let revision = written.map_err(|e| changed(&worker, e))?;
            self.version = version;
            done.version = version;
            done.written += 1;
            self.slots.insert(
                worker,
                Slot {
                    revision,
                    record: Some(record),
                },
            );
        }
        for worker in departed {
            if !may_write() {
                return Err(Error::LeaseLost);
            }
            let revision = self.slots[&worker].revision;
            bucket
                .delete(worker.as_str(), Some(revision))
                .await
                .map_err(|e| changed(&worker, e))?;
            self.slots.remove(&worker);
            done.deleted += 1;
        }
        Ok(done)
    }
}

fn same_partitions(old: &[Grant], new: &[Grant]) -> bool {
    old.len() == new.len() && old.iter().zip(new).all(|(a, b)| a == b)
}

fn changed(worker: &WorkerId, error: StoreError) -> Error {
    match error {
        StoreError::Conflict { .. } | StoreError::AlreadyExists { .. } => Error::RecordChanged {
            worker_id: worker.clone(),
        },
        other => other.into(),
    }
}
