//! What a bucket should look like.

use std::time::Duration;

use super::{StoreError, names};

/// Where a backend keeps a bucket's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StorageKind {
    /// On disk: survives a server restart.
    #[default]
    File,
    /// In the server's memory: faster, lost on restart.
    Memory,
}

/// The description of a bucket: its name, the TTL of its entries, and (for replicated
/// backends) its replicas and storage kind.
///
/// A TTL means every entry expires that long after its *last* write; `None` means entries
/// live until deleted. Buckets keep one value per key (history 1).
///
/// ```
/// use std::time::Duration;
/// use parti_core::store::{BucketSpec, StorageKind};
///
/// let spec = BucketSpec::new("parti-heartbeat")?
///     .with_ttl(Duration::from_secs(3))
///     .with_replicas(3)
///     .with_storage(StorageKind::Memory);
/// assert_eq!(spec.name(), "parti-heartbeat");
/// assert_eq!(spec.ttl(), Some(Duration::from_secs(3)));
/// spec.validate()?;
/// # Ok::<(), parti_core::store::StoreError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BucketSpec {
    name: String,
    ttl: Option<Duration>,
    replicas: usize,
    storage: StorageKind,
}

/// The most replicas a bucket may have (the NATS JetStream limit).
pub const MAX_REPLICAS: usize = 5;

impl BucketSpec {
    /// A bucket with no TTL, one replica, file storage.
    ///
    /// # Errors
    /// [`StoreError::InvalidBucket`] when the name is not a valid bucket name (ASCII letters,
    /// digits, `-` and `_`, at most 64 characters).
    pub fn new(name: impl Into<String>) -> Result<Self, StoreError> {
        let name = name.into();
        names::check_bucket_name(&name)?;
        Ok(Self {
            name,
            ttl: None,
            replicas: 1,
            storage: StorageKind::File,
        })
    }

    /// The same bucket with entries expiring `ttl` after their last write.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The same bucket with `replicas` copies (replicated backends; 1 to [`MAX_REPLICAS`]).
    #[must_use]
    pub fn with_replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// The same bucket with another storage kind (backends that have one).
    #[must_use]
    pub fn with_storage(mut self, storage: StorageKind) -> Self {
        self.storage = storage;
        self
    }

    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long entries live after their last write, if they expire.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// How many copies a replicated backend keeps.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Where a backend keeps the data.
    pub fn storage(&self) -> StorageKind {
        self.storage
    }

    /// Checks the whole specification. Backends call this before opening a bucket.
    ///
    /// # Errors
    /// [`StoreError::InvalidBucket`] naming the rule: a zero TTL, a TTL under one millisecond,
    /// or replicas outside 1 to [`MAX_REPLICAS`].
    pub fn validate(&self) -> Result<(), StoreError> {
        names::check_bucket_name(&self.name)?;
        let invalid = |reason: String| StoreError::InvalidBucket {
            bucket: self.name.clone(),
            reason,
        };
        if let Some(ttl) = self.ttl {
            if ttl < Duration::from_millis(1) {
                return Err(invalid(format!("ttl must be at least 1 ms, got {ttl:?}")));
            }
        }
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            return Err(invalid(format!(
                "replicas must be between 1 and {MAX_REPLICAS}, got {}",
                self.replicas
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let spec = BucketSpec::new("b").unwrap();
        assert_eq!(spec.ttl(), None);
        assert_eq!(spec.replicas(), 1);
        assert_eq!(spec.storage(), StorageKind::File);
        assert!(spec.validate().is_ok());
    }

    #[test]
    fn invalid_specs_say_why() {
        let zero_ttl = BucketSpec::new("b").unwrap().with_ttl(Duration::ZERO);
        let err = zero_ttl.validate().unwrap_err();
        assert!(err.to_string().contains("ttl"), "{err}");
        for replicas in [0, 6] {
            let err = BucketSpec::new("b")
                .unwrap()
                .with_replicas(replicas)
                .validate()
                .unwrap_err();
            assert!(err.to_string().contains("replicas"), "{err}");
        }
        assert!(BucketSpec::new("bad name").is_err());
    }
}
