//! Durable consumer names derived from partition ids: valid characters, bounded length, and
//! no two partitions on one name.

use parti_strategy::PartitionId;

/// The longest part of a name taken from the partition id itself.
const READABLE: usize = 40;

/// The longest durable prefix accepted.
pub(crate) const MAX_PREFIX: usize = 32;

/// Whether `c` may appear in a durable consumer name (NATS forbids whitespace, `.`, `*`,
/// `>`, path separators and control characters; this keeps to a portable subset).
fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Why a durable prefix is unusable, if it is.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        Err("it is empty".into())
    } else if prefix.len() > MAX_PREFIX {
        Err(format!("it is longer than {MAX_PREFIX} characters"))
    } else if let Some(c) = prefix.chars().find(|c| !allowed(*c)) {
        Err(format!(
            "it contains {c:?}: only ASCII letters, digits, '-' and '_' are allowed"
        ))
    } else {
        Ok(())
    }
}

/// The durable name of `partition`: `<prefix>_<readable part>_<hash>`. The readable part is
/// the id with every other character made `_`, cut to 40 characters; the hash (64 bits of
/// FNV-1a over the whole id, in hex) keeps ids that read alike apart.
pub(crate) fn durable_name(prefix: &str, partition: &PartitionId) -> String {
    let id = partition.as_str();
    let readable: String = id
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .take(READABLE)
        .collect();
    format!("{prefix}_{readable}_{:016x}", fnv1a(id.as_bytes()))
}

/// 64-bit FNV-1a: stable across versions and platforms (a durable's name must not change
/// when parti is upgraded, or the new name starts from scratch).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    fn id(s: &str) -> PartitionId {
        PartitionId::parse(s).unwrap()
    }

    #[test]
    fn names_are_readable_and_stable() {
        assert_eq!(
            durable_name("parti", &id("orders.eu.7")),
            format!("parti_orders_eu_7_{:016x}", fnv1a(b"orders.eu.7"))
        );
        // Fixed forever: a changed name would start the durable from scratch.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn ids_that_read_alike_get_different_names() {
        let a = durable_name("p", &id("a.b"));
        let b = durable_name("p", &id("a_b"));
        assert_ne!(a, b);
        assert!(a.starts_with("p_a_b_") && b.starts_with("p_a_b_"));
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("parti-orders_1").is_ok());
        assert!(check_prefix("").is_err());
        assert!(check_prefix("a.b").is_err());
        assert!(check_prefix(&"x".repeat(MAX_PREFIX + 1)).is_err());
    }

    proptest! {
        #[test]
        fn every_name_is_valid_and_bounded(keys in prop::collection::vec("[^.*> \\t\\n\\r]{1,30}", 1..6)) {
            let Ok(partition) = PartitionId::from_keys(&keys) else { return Ok(()) };
            let name = durable_name("parti", &partition);
            prop_assert!(name.chars().all(allowed), "{name}");
            prop_assert!(name.len() <= MAX_PREFIX + 1 + READABLE * 4 + 1 + 16, "{name}");
            prop_assert!(name.chars().count() <= "parti".len() + 1 + READABLE + 1 + 16);
        }

        #[test]
        fn distinct_ids_get_distinct_names(ids in prop::collection::hash_set("[a-z0-9_-]{1,12}(\\.[a-z0-9_-]{1,12}){0,2}", 1..200)) {
            let names: HashSet<String> = ids.iter().map(|s| durable_name("p", &id(s))).collect();
            prop_assert_eq!(names.len(), ids.len());
        }
    }
}
