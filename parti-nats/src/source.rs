//! A partition source kept in a JetStream KV bucket, watched so the leader refreshes by
//! itself when it changes.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use parti_core::runtime::PartitionSource;
use parti_core::store::{BoxError, Bucket, BucketSpec, Revision, Store, StoreResult, WatchFrom};
use parti_strategy::{Partition, PartitionId};
use tokio::sync::watch;

use crate::{NatsBucket, NatsStore};

/// Partitions kept in a KV bucket: one key per partition (its id, `orders.eu.7`), its value
/// the partition's weight in decimal (`3`; empty means 1). Add and remove them with
/// [`add`](Self::add) and [`remove`](Self::remove), or with the `nats` tool
/// (`nats kv put parti-partitions orders.eu.7 3`): the leader of a fleet using this source
/// sees every change through a watch and rebalances at once.
///
/// An entry that is not a partition (a key that is no partition id, a weight that is no
/// positive number) is reported once — until it changes — and skipped, never a panic.
///
/// ```no_run
/// use parti_nats::{KvPartitionSource, NatsStore};
/// use parti_strategy::Partition;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = NatsStore::connect("nats://127.0.0.1:4222").await?;
/// let source = KvPartitionSource::open(&store, "orders-partitions").await?;
/// source.add(&Partition::from_keys(["orders", "eu", "7"])?.with_weight(2)).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct KvPartitionSource {
    bucket: NatsBucket,
    /// The bad entries reported, as (key, revision): each is reported once.
    reported: Arc<Mutex<BTreeSet<(String, u64)>>>,
}

/// An entry of the bucket that is not a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEntry {
    /// Its key.
    pub key: String,
    /// Why it is skipped.
    pub reason: String,
}

impl KvPartitionSource {
    /// Opens the bucket `name` (created if absent: no TTL, history 1, one replica).
    ///
    /// # Errors
    /// As [`Store::bucket`].
    pub async fn open(store: &NatsStore, name: &str) -> StoreResult<Self> {
        Self::open_spec(store, &BucketSpec::new(name)?).await
    }

    /// Opens the bucket `spec` describes (for replicas or storage other than the default).
    ///
    /// # Errors
    /// As [`Store::bucket`].
    pub async fn open_spec(store: &NatsStore, spec: &BucketSpec) -> StoreResult<Self> {
        Ok(Self {
            bucket: store.bucket(spec).await?,
            reported: Arc::default(),
        })
    }

    /// Adds `partition` if it is not there yet (compare-and-set: two adds of one partition
    /// cannot both succeed).
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`](parti_core::store::StoreError::AlreadyExists) when it
    /// is there; [`StoreError::InvalidKey`](parti_core::store::StoreError::InvalidKey) for
    /// an id that is no valid KV key; transient errors when the server does not answer.
    pub async fn add(&self, partition: &Partition) -> StoreResult<Revision> {
        self.bucket
            .create(partition.id().as_str(), weight_value(partition.weight()))
            .await
    }

    /// Sets the weight of a partition that is at `expected` (the revision [`add`](Self::add)
    /// or an earlier `set_weight` returned).
    ///
    /// # Errors
    /// [`StoreError::Conflict`](parti_core::store::StoreError::Conflict) when it changed
    /// since, or is gone.
    pub async fn set_weight(
        &self,
        partition: &PartitionId,
        weight: u32,
        expected: Revision,
    ) -> StoreResult<Revision> {
        self.bucket
            .update(partition.as_str(), weight_value(weight), expected)
            .await
    }

    /// Removes a partition (nothing happens if it is not there).
    ///
    /// # Errors
    /// Transient errors when the server does not answer.
    pub async fn remove(&self, partition: &PartitionId) -> StoreResult<()> {
        self.bucket.delete(partition.as_str(), None).await
    }

    /// Every partition in the bucket, and the entries that are not partitions.
    ///
    /// # Errors
    /// When the bucket cannot be read.
    pub async fn list(&self) -> StoreResult<(Vec<Partition>, Vec<BadEntry>)> {
        let mut partitions = Vec::new();
        let mut bad = Vec::new();
        for entry in self.bucket.entries("").await? {
            match parse(&entry.key, &entry.value) {
                Ok(partition) => partitions.push(partition),
                Err(reason) => {
                    let first = self
                        .reported
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert((entry.key.clone(), entry.revision.get()));
                    if first {
                        tracing::warn!(
                            bucket = self.bucket.name(),
                            key = %entry.key,
                            "skipping an entry that is not a partition: {reason}"
                        );
                    }
                    bad.push(BadEntry {
                        key: entry.key,
                        reason,
                    });
                }
            }
        }
        Ok((partitions, bad))
    }
}

impl PartitionSource for KvPartitionSource {
    async fn partitions(&self) -> Result<Vec<Partition>, BoxError> {
        Ok(self.list().await?.0)
    }

    /// A watch of the bucket, for as long as the leader holds the receiver: every change
    /// bumps the value. A failed watch is set up again after a second (and counts as a
    /// change: what happened meanwhile is unknown).
    fn subscribe_changes(&self) -> Option<watch::Receiver<u64>> {
        let (changes, receiver) = watch::channel(0u64);
        let bucket = self.bucket.clone();
        tokio::spawn(async move {
            let bump = |changes: &watch::Sender<u64>| changes.send_modify(|n| *n += 1);
            loop {
                let watched = tokio::select! {
                    () = changes.closed() => return,
                    watched = bucket.watch("", WatchFrom::Now) => watched,
                };
                if let Ok(mut events) = watched {
                    loop {
                        tokio::select! {
                            () = changes.closed() => return,
                            event = events.next() => match event {
                                Some(Ok(_)) => bump(&changes),
                                Some(Err(_)) | None => break,
                            },
                        }
                    }
                }
                bump(&changes);
                tokio::select! {
                    () = changes.closed() => return,
                    () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
            }
        });
        Some(receiver)
    }
}

impl fmt::Debug for KvPartitionSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvPartitionSource")
            .field("bucket", &self.bucket.name())
            .finish()
    }
}

fn weight_value(weight: u32) -> Bytes {
    Bytes::from(weight.to_string())
}

/// The partition an entry stands for, or why it stands for none.
fn parse(key: &str, value: &[u8]) -> Result<Partition, String> {
    let id = PartitionId::parse(key).map_err(|e| e.to_string())?;
    let text = std::str::from_utf8(value)
        .map_err(|_| "its value is not text (a weight in decimal)".to_owned())?
        .trim();
    let weight = if text.is_empty() {
        1
    } else {
        match text.parse::<u32>() {
            Ok(0) | Err(_) => {
                return Err(format!(
                    "its value {text:?} is not a weight (a positive whole number)"
                ));
            }
            Ok(weight) => weight,
        }
    };
    Ok(Partition::from(id).with_weight(weight))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_to_partitions_or_say_why_not() {
        let p = parse("orders.eu.7", b"3").unwrap();
        assert_eq!(p.id().as_str(), "orders.eu.7");
        assert_eq!(p.weight(), 3);
        assert_eq!(parse("a", b"").unwrap().weight(), 1);
        assert_eq!(parse("a", b" 2\n").unwrap().weight(), 2);
        assert!(parse("a", b"0").unwrap_err().contains("not a weight"));
        assert!(parse("a", b"heavy").unwrap_err().contains("not a weight"));
        assert!(parse("a", &[0xff, 0xfe]).unwrap_err().contains("not text"));
        assert!(parse("a..b", b"1").is_err());
    }
}
