//! Where the leader gets the set of partitions to assign.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};

use parti_strategy::Partition;
use tokio::sync::watch;

use crate::store::BoxError;

/// The set of partitions the leader assigns. Only the leader reads it: when it computes an
/// assignment, and when any worker calls
/// [`Manager::refresh_partitions`](super::Manager::refresh_partitions). Give every worker a
/// source that agrees (the same configuration, database table or stream listing), since any
/// worker may become the leader.
///
/// Implement it for a dynamic source (a database query, a JetStream stream's subjects); use
/// [`StaticSource`] for a fixed or hand-updated list.
pub trait PartitionSource: Send + Sync + 'static {
    /// The current partitions. An error makes the leader keep the current assignment and try
    /// again shortly.
    fn partitions(&self) -> impl Future<Output = Result<Vec<Partition>, BoxError>> + Send;

    /// Changes of the partitions, for a source that can see them happen (a watched bucket,
    /// say): the leader subscribes once per term, and every value sent makes it re-read the
    /// source at once, as [`Manager::refresh_partitions`](super::Manager::refresh_partitions)
    /// would. The default, `None`: the source changes only when a worker asks for a refresh.
    fn subscribe_changes(&self) -> Option<watch::Receiver<u64>> {
        None
    }
}

/// A partition list held in memory. Clones share the list, so an application (or a test) can
/// keep one to [`set`](StaticSource::set) new contents, then call
/// [`Manager::refresh_partitions`](super::Manager::refresh_partitions).
///
/// ```
/// use parti_core::runtime::{PartitionSource, StaticSource};
/// use parti_strategy::Partition;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let source = StaticSource::numbered("orders", 4)?;
/// assert_eq!(source.partitions().await?.len(), 4);
/// source.set([Partition::from_keys(["orders", "0"])?.with_weight(3)]);
/// assert_eq!(source.partitions().await?[0].weight(), 3);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct StaticSource {
    partitions: Arc<RwLock<Arc<[Partition]>>>,
}

impl StaticSource {
    /// A source holding `partitions`.
    pub fn new(partitions: impl IntoIterator<Item = Partition>) -> Self {
        Self {
            partitions: Arc::new(RwLock::new(partitions.into_iter().collect())),
        }
    }

    /// `count` partitions named `<prefix>.0` to `<prefix>.<count - 1>`, weight 1.
    ///
    /// # Errors
    /// When `prefix` is not a valid partition key.
    pub fn numbered(prefix: &str, count: usize) -> Result<Self, parti_strategy::PartitionIdError> {
        let partitions = (0..count)
            .map(|n| Partition::from_keys([prefix, n.to_string().as_str()]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(partitions))
    }

    /// Replaces the contents (the leader sees them at its next computation; call
    /// `refresh_partitions` to make that now).
    pub fn set(&self, partitions: impl IntoIterator<Item = Partition>) {
        let partitions: Arc<[Partition]> = partitions.into_iter().collect();
        // A poisoned lock only means a writer panicked; the list itself is always whole.
        *self.partitions.write().unwrap_or_else(|e| e.into_inner()) = partitions;
    }

    /// The current contents.
    pub fn get(&self) -> Vec<Partition> {
        self.partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .to_vec()
    }
}

impl PartitionSource for StaticSource {
    async fn partitions(&self) -> Result<Vec<Partition>, BoxError> {
        Ok(self.get())
    }
}

impl fmt::Debug for StaticSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticSource")
            .field("partitions", &self.get().len())
            .finish()
    }
}
