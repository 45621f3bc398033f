//! The bounded local caches in front of the replica: (kind, string) → id for encoding and
//! (kind, id) → string for decoding.
//!
//! "LRU-ish": each shard keeps a hot and a cold generation of at most half the shard's
//! capacity. Inserts go to hot; when hot is full it becomes cold and the old cold is
//! dropped; a hit in cold moves the entry back to hot. Recently used entries survive at
//! least one full generation, memory never exceeds the capacity, and no per-entry
//! bookkeeping is needed. Cached mappings never go stale: an id never changes meaning.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use hashbrown::{DefaultHashBuilder, Equivalent, HashMap};
use parking_lot::Mutex;

use crate::types::{DictionaryId, TagKind};

const SHARDS: usize = 16;

/// A sharded two-generation cache.
pub(crate) struct GenerationalCache<K, V> {
    shards: Box<[Mutex<Shard<K, V>>]>,
    generation_capacity: usize,
    hasher: DefaultHashBuilder,
}

struct Shard<K, V> {
    hot: HashMap<K, V>,
    cold: HashMap<K, V>,
}

impl<K: Hash + Eq, V: Clone> GenerationalCache<K, V> {
    /// A cache holding at most `capacity` entries (rounded down to a multiple of the
    /// shard count, at least one per generation and shard).
    pub(crate) fn new(capacity: usize) -> Self {
        let generation_capacity = (capacity / SHARDS / 2).max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    hot: HashMap::new(),
                    cold: HashMap::new(),
                })
            })
            .collect();
        Self {
            shards,
            generation_capacity,
            hasher: DefaultHashBuilder::default(),
        }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &Mutex<Shard<K, V>> {
        // Use the high bits: the maps inside the shard hash with their own seeds.
        let index = (self.hasher.hash_one(key) >> 32) as usize % SHARDS;
        &self.shards[index]
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        Q: Hash + Equivalent<K> + ?Sized,
    {
        let mut shard = self.shard(key).lock();
        if let Some(value) = shard.hot.get(key) {
            return Some(value.clone());
        }
        let (key, value) = shard.cold.remove_entry(key)?;
        let out = value.clone();
        self.insert_hot(&mut shard, key, value);
        Some(out)
    }

    pub(crate) fn insert(&self, key: K, value: V) {
        let mut shard = self.shard(&key).lock();
        self.insert_hot(&mut shard, key, value);
    }

    fn insert_hot(&self, shard: &mut Shard<K, V>, key: K, value: V) {
        if shard.hot.len() >= self.generation_capacity && !shard.hot.contains_key(&key) {
            shard.cold = std::mem::take(&mut shard.hot);
            shard.cold.remove(&key);
        }
        shard.hot.insert(key, value);
    }

    /// Entries held now (hot and cold).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock();
                s.hot.len() + s.cold.len()
            })
            .sum()
    }
}

/// Key of the encode cache.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct EncodeKey {
    pub kind: TagKind,
    pub string: Box<str>,
}

/// Borrowed form of [`EncodeKey`], so lookups do not allocate.
pub(crate) struct EncodeQuery<'a> {
    pub kind: TagKind,
    pub string: &'a str,
}

// Both forms must hash identically.
impl Hash for EncodeKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u16(self.kind.get());
        self.string.hash(state);
    }
}

impl Hash for EncodeQuery<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u16(self.kind.get());
        self.string.hash(state);
    }
}

impl Equivalent<EncodeKey> for EncodeQuery<'_> {
    fn equivalent(&self, key: &EncodeKey) -> bool {
        self.kind == key.kind && self.string == &*key.string
    }
}

pub(crate) type EncodeCache = GenerationalCache<EncodeKey, DictionaryId>;
pub(crate) type DecodeCache = GenerationalCache<(TagKind, DictionaryId), Arc<str>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> EncodeKey {
        EncodeKey {
            kind: TagKind::POD,
            string: s.into(),
        }
    }

    fn query(s: &str) -> EncodeQuery<'_> {
        EncodeQuery {
            kind: TagKind::POD,
            string: s,
        }
    }

    #[test]
    fn borrowed_lookup_finds_owned_key() {
        let cache = EncodeCache::new(1024);
        cache.insert(key("checkout"), 7);
        assert_eq!(cache.get(&query("checkout")), Some(7));
        assert_eq!(cache.get(&query("cart")), None);
        let other_kind = EncodeQuery {
            kind: TagKind::ENDPOINT,
            string: "checkout",
        };
        assert_eq!(cache.get(&other_kind), None);
    }

    #[test]
    fn capacity_is_bounded_and_recent_entries_survive() {
        let capacity = 256;
        let cache = EncodeCache::new(capacity);
        for i in 0..10_000u32 {
            cache.insert(key(&format!("s{i}")), i);
            // Keep touching one entry: it must never be evicted.
            assert_eq!(cache.get(&query("s0")), Some(0), "after {i}");
            assert!(cache.len() <= capacity, "len {} at {i}", cache.len());
        }
        assert_eq!(cache.get(&query("s9999")), Some(9999));
        assert_eq!(cache.get(&query("s10")), None);
    }

    #[test]
    fn decode_cache_round_trip() {
        let cache = DecodeCache::new(64);
        cache.insert((TagKind::POD, 3), Arc::from("x"));
        assert_eq!(cache.get(&(TagKind::POD, 3)).as_deref(), Some("x"));
        assert_eq!(cache.get(&(TagKind::NODE, 3)), None);
    }
}
