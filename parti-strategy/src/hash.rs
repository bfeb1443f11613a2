//! The one hash strategies use: xxh3, seeded, stable across platforms and releases of the
//! `xxhash-rust` crate (it is a fixed algorithm), so every worker computes the same ring.

/// The 64-bit xxh3 hash of `bytes` with `seed`.
pub(crate) fn hash64(bytes: &[u8], seed: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, seed)
}

/// Hash maps and sets of ids: foldhash is several times faster than the standard SipHash on
/// short strings, and still seeded per process.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// See [`FastMap`].
pub(crate) type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// An empty [`FastMap`] with room for `capacity` entries.
pub(crate) fn map_with_capacity<K, V>(capacity: usize) -> FastMap<K, V> {
    FastMap::with_capacity_and_hasher(capacity, Default::default())
}

/// An empty [`FastSet`] with room for `capacity` entries.
pub(crate) fn set_with_capacity<T>(capacity: usize) -> FastSet<T> {
    FastSet::with_capacity_and_hasher(capacity, Default::default())
}
