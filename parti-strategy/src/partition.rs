//! Partitions: what gets assigned.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The separator between the keys of a [`PartitionId`], in both its string and subject forms.
pub const KEY_SEPARATOR: char = '.';

/// The identity of a partition, built from one or more keys.
///
/// Its canonical string form is its keys joined by `.` (for example `orders.eu.7`). Because
/// every key is a valid NATS subject token (non-empty, no `.`, `*`, `>`, whitespace or control
/// characters), the string form is also a valid subject suffix: see [`PartitionId::subject`].
/// The form is stable: it is what is stored in assignment records and what [`fmt::Display`]
/// prints, and parsing it back with [`str::parse`] gives the same id.
///
/// Cloning is cheap (a reference-counted string).
///
/// ```
/// use parti_strategy::PartitionId;
///
/// let id = PartitionId::from_keys(["orders", "eu", "7"])?;
/// assert_eq!(id.as_str(), "orders.eu.7");
/// assert_eq!(id.keys().collect::<Vec<_>>(), ["orders", "eu", "7"]);
/// assert_eq!(id.subject("work"), "work.orders.eu.7");
/// assert_eq!("orders.eu.7".parse::<PartitionId>()?, id);
/// assert!(PartitionId::new("has space").is_err());
/// # Ok::<(), parti_strategy::PartitionIdError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "String", into = "String"))]
pub struct PartitionId(Arc<str>);

impl PartitionId {
    /// A partition id made of a single key.
    ///
    /// # Errors
    /// [`PartitionIdError`] when `key` is empty or holds a character that cannot appear in a
    /// subject token (`.`, `*`, `>`, whitespace, control characters).
    pub fn new(key: impl AsRef<str>) -> Result<Self, PartitionIdError> {
        let key = key.as_ref();
        check_key(key)?;
        Ok(Self(Arc::from(key)))
    }

    /// A partition id made of several keys, in order.
    ///
    /// # Errors
    /// [`PartitionIdError`] when there are no keys or one of them is invalid (see
    /// [`PartitionId::new`]).
    pub fn from_keys<I, K>(keys: I) -> Result<Self, PartitionIdError>
    where
        I: IntoIterator<Item = K>,
        K: AsRef<str>,
    {
        let mut joined = String::new();
        for key in keys {
            let key = key.as_ref();
            check_key(key)?;
            if !joined.is_empty() {
                joined.push(KEY_SEPARATOR);
            }
            joined.push_str(key);
        }
        if joined.is_empty() {
            return Err(PartitionIdError {
                input: String::new(),
                reason: "a partition id needs at least one key",
            });
        }
        Ok(Self(Arc::from(joined)))
    }

    /// Parses the canonical string form (keys joined by `.`).
    ///
    /// # Errors
    /// [`PartitionIdError`] when the string is empty, has an empty key (`a..b`, `.a`, `a.`) or a
    /// key with a forbidden character.
    pub fn parse(s: &str) -> Result<Self, PartitionIdError> {
        Self::from_keys(s.split(KEY_SEPARATOR)).map_err(|mut e| {
            e.input = s.to_owned();
            e
        })
    }

    /// The canonical string form: the keys joined by `.`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The keys this id is built from, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.split(KEY_SEPARATOR)
    }

    /// The NATS subject for this partition under `prefix`: `<prefix>.<keys joined by '.'>`.
    ///
    /// An empty prefix gives the id's string form alone.
    pub fn subject(&self, prefix: &str) -> String {
        if prefix.is_empty() {
            return self.0.to_string();
        }
        let mut subject = String::with_capacity(prefix.len() + 1 + self.0.len());
        subject.push_str(prefix);
        subject.push(KEY_SEPARATOR);
        subject.push_str(&self.0);
        subject
    }
}

fn check_key(key: &str) -> Result<(), PartitionIdError> {
    let reason = if key.is_empty() {
        "partition keys must not be empty"
    } else if key.contains(KEY_SEPARATOR) {
        "partition keys must not contain '.' (it separates keys)"
    } else if key.contains(['*', '>']) {
        "partition keys must not contain the subject wildcards '*' or '>'"
    } else if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "partition keys must not contain whitespace or control characters"
    } else {
        return Ok(());
    };
    Err(PartitionIdError {
        input: key.to_owned(),
        reason,
    })
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PartitionId({:?})", &*self.0)
    }
}

impl FromStr for PartitionId {
    type Err = PartitionIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for PartitionId {
    type Error = PartitionIdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl TryFrom<&str> for PartitionId {
    type Error = PartitionIdError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl From<PartitionId> for String {
    fn from(id: PartitionId) -> Self {
        id.0.to_string()
    }
}

impl AsRef<str> for PartitionId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A partition id or key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid partition id {input:?}: {reason}")]
pub struct PartitionIdError {
    input: String,
    reason: &'static str,
}

impl PartitionIdError {
    /// The rejected input.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// Why it was rejected.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

/// A partition to assign: its id and its weight (how much work it is, relative to others).
///
/// The weight defaults to 1. A weight of 0 is representable (it may arrive from a partition
/// source) but every strategy rejects it with
/// [`StrategyError::InvalidWeight`](crate::StrategyError::InvalidWeight).
///
/// ```
/// use parti_strategy::Partition;
///
/// let p = Partition::new("tenant-42")?.with_weight(3);
/// assert_eq!(p.id().as_str(), "tenant-42");
/// assert_eq!(p.weight(), 3);
/// # Ok::<(), parti_strategy::PartitionIdError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Partition {
    id: PartitionId,
    weight: u32,
}

impl Partition {
    /// A partition with a single key and weight 1.
    ///
    /// # Errors
    /// [`PartitionIdError`] when the key is invalid (see [`PartitionId::new`]).
    pub fn new(key: impl AsRef<str>) -> Result<Self, PartitionIdError> {
        PartitionId::new(key).map(Self::from)
    }

    /// A partition with several keys and weight 1.
    ///
    /// # Errors
    /// [`PartitionIdError`] when a key is invalid or there are none.
    pub fn from_keys<I, K>(keys: I) -> Result<Self, PartitionIdError>
    where
        I: IntoIterator<Item = K>,
        K: AsRef<str>,
    {
        PartitionId::from_keys(keys).map(Self::from)
    }

    /// The same partition with another weight.
    #[must_use]
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The partition's id.
    pub fn id(&self) -> &PartitionId {
        &self.id
    }

    /// The partition's weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }
}

impl From<PartitionId> for Partition {
    fn from(id: PartitionId) -> Self {
        Self { id, weight: 1 }
    }
}

impl fmt::Debug for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Partition({:?}, weight {})",
            self.id.as_str(),
            self.weight
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_key_round_trips_through_its_string_form() {
        let id = PartitionId::new("p-1").unwrap();
        assert_eq!(id.to_string(), "p-1");
        assert_eq!(id.as_str().parse::<PartitionId>().unwrap(), id);
    }

    #[test]
    fn several_keys_join_with_dots_and_split_back() {
        let id = PartitionId::from_keys(["a", "b-2", "c_3"]).unwrap();
        assert_eq!(id.as_str(), "a.b-2.c_3");
        assert_eq!(id.keys().collect::<Vec<_>>(), ["a", "b-2", "c_3"]);
        assert_eq!(PartitionId::parse("a.b-2.c_3").unwrap(), id);
    }

    #[test]
    fn subject_form_prefixes_the_keys() {
        let id = PartitionId::from_keys(["eu", "7"]).unwrap();
        assert_eq!(id.subject("orders"), "orders.eu.7");
        assert_eq!(id.subject(""), "eu.7");
    }

    #[test]
    fn bad_keys_are_rejected_with_the_reason() {
        for bad in ["", "a.b", "a*", ">", "a b", "tab\t", "nl\n", "\u{7}"] {
            let err = PartitionId::new(bad).unwrap_err();
            assert_eq!(err.input(), bad);
            assert!(!err.reason().is_empty());
        }
        assert!(PartitionId::from_keys(Vec::<&str>::new()).is_err());
        for bad in ["", ".a", "a.", "a..b", "a.*"] {
            let err = PartitionId::parse(bad).unwrap_err();
            assert_eq!(err.input(), bad, "the error names the whole input");
        }
    }

    #[test]
    fn unicode_keys_are_allowed() {
        let id = PartitionId::from_keys(["größe", "東京"]).unwrap();
        assert_eq!(id.as_str().parse::<PartitionId>().unwrap(), id);
    }

    #[test]
    fn partitions_default_to_weight_one() {
        let p = Partition::new("x").unwrap();
        assert_eq!(p.weight(), 1);
        assert_eq!(p.with_weight(0).weight(), 0);
    }
}
