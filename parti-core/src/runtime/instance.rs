//! Identifying one process start.

use std::fmt;
use std::hash::{BuildHasher, Hasher};

/// A random id for one start of one process, written in every record it owns so that a
/// restarted worker (same worker id, new instance) can be told from its previous life.
///
/// ```
/// use parti_core::runtime::InstanceId;
///
/// let a = InstanceId::generate();
/// let b = InstanceId::generate();
/// assert_ne!(a, b);
/// assert_eq!(a.as_str().len(), 16);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceId(String);

impl InstanceId {
    /// A fresh random id (64 bits from the standard library's randomly keyed hasher, mixed
    /// with the process id and the time).
    pub fn generate() -> Self {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        if let Ok(since_epoch) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)
        {
            hasher.write_u128(since_epoch.as_nanos());
        }
        Self(format!("{:016x}", hasher.finish()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
