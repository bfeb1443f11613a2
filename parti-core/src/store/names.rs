//! The one place that says which bucket names, keys and key prefixes a store accepts.
//!
//! The rules are those of NATS JetStream KV, the strictest backend, so that a fleet that runs
//! on the memory store runs unchanged on NATS.

use super::StoreError;

/// Checks a bucket name: ASCII letters, digits, `-` and `_`, at most 64 characters.
pub fn check_bucket_name(name: &str) -> Result<(), StoreError> {
    let reason = if name.is_empty() {
        "bucket names must not be empty"
    } else if name.len() > 64 {
        "bucket names must be at most 64 characters"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        "bucket names may only hold ASCII letters, digits, '-' and '_'"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidBucket {
        bucket: name.to_owned(),
        reason: reason.to_owned(),
    })
}

/// Checks a key: ASCII letters, digits and `-/_=.`, not starting or ending with `.`, and no
/// empty `.`-separated token.
pub fn check_key(key: &str) -> Result<(), StoreError> {
    let reason = if key.is_empty() {
        "keys must not be empty"
    } else if let Some(reason) = bad_key_chars(key) {
        reason
    } else if key.starts_with('.') || key.ends_with('.') || key.contains("..") {
        "keys must not start or end with '.' nor contain '..'"
    } else {
        return Ok(());
    };
    Err(StoreError::InvalidKey {
        key: key.to_owned(),
        reason,
    })
}

/// Checks a key prefix for `keys` and `watch`: the characters of a key; may be empty (all
/// keys).
pub fn check_prefix(prefix: &str) -> Result<(), StoreError> {
    match bad_key_chars(prefix) {
        None => Ok(()),
        Some(reason) => Err(StoreError::InvalidKey {
            key: prefix.to_owned(),
            reason,
        }),
    }
}

fn bad_key_chars(s: &str) -> Option<&'static str> {
    let ok = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=' | b'.'));
    (!ok).then_some("keys may only hold ASCII letters, digits and '-', '/', '_', '=', '.'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for good in ["parti-ids", "a", "A_b-9"] {
            assert!(check_bucket_name(good).is_ok(), "{good}");
        }
        for bad in ["", "has.dot", "sp ace", "star*", &"x".repeat(65)] {
            assert!(
                matches!(
                    check_bucket_name(bad),
                    Err(StoreError::InvalidBucket { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn keys() {
        for good in ["worker-0", "leader", "a.b", "x/y=z_1"] {
            assert!(check_key(good).is_ok(), "{good}");
        }
        for bad in ["", ".a", "a.", "a..b", "a b", "a*", "a>", "ü"] {
            assert!(
                matches!(check_key(bad), Err(StoreError::InvalidKey { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn prefixes() {
        for good in ["", "worker-", "a."] {
            assert!(check_prefix(good).is_ok(), "{good}");
        }
        for bad in ["a b", ">", "*"] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }
}
