//! Giving a table's spare room back once most of its entries are gone.
//!
//! A `HashMap` keeps its capacity when entries are removed. The gateway's tables (hubs by
//! topic, membership counts, connections) grow with a connection storm and would keep
//! their peak size for the life of the process: with 19,000 topics that is a few MiB per
//! table, which is most of what an idle gateway kept after every client had left
//! (docs/BENCHMARKS.md, S1 after close).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash};

/// Tables at or below this capacity are left alone: shrinking them saves nothing.
const KEEP_CAPACITY: usize = 1024;

/// The capacity to shrink a table of `len` entries in `capacity` slots to, if it is sparse:
/// under a quarter full. Shrinking to twice the entries means at least `len / 2` removals
/// come before the next shrink, so the rehash is paid for by the removals: O(1) amortised.
fn shrunk_capacity(len: usize, capacity: usize) -> Option<usize> {
    (capacity > KEEP_CAPACITY && len < capacity / 4).then(|| (len * 2).max(KEEP_CAPACITY / 2))
}

/// A table that can give spare capacity back.
pub trait ShrinkWhenSparse {
    /// Shrinks the table if it is under a quarter full (and not small); call after removals.
    fn shrink_when_sparse(&mut self);
}

impl<K: Eq + Hash, V, S: BuildHasher> ShrinkWhenSparse for HashMap<K, V, S> {
    fn shrink_when_sparse(&mut self) {
        if let Some(capacity) = shrunk_capacity(self.len(), self.capacity()) {
            self.shrink_to(capacity);
        }
    }
}

impl<T: Eq + Hash, S: BuildHasher> ShrinkWhenSparse for HashSet<T, S> {
    fn shrink_when_sparse(&mut self) {
        if let Some(capacity) = shrunk_capacity(self.len(), self.capacity()) {
            self.shrink_to(capacity);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_shrinks_once_under_a_quarter_full_and_small_ones_never() {
        let mut map: HashMap<u32, u32> = (0..20_000).map(|n| (n, n)).collect();
        let peak = map.capacity();
        let mut shrunk_at = None;
        for n in 0..20_000 {
            map.remove(&n);
            map.shrink_when_sparse();
            if shrunk_at.is_none() && map.capacity() < peak / 2 {
                shrunk_at = Some(map.len());
            }
        }
        let shrunk_at = shrunk_at.expect("the table never shrank");
        assert!(shrunk_at < peak / 4, "shrank with {shrunk_at} of {peak} slots in use");
        assert!(map.is_empty());
        assert!(map.capacity() <= KEEP_CAPACITY, "an empty table keeps {} slots", map.capacity());

        let mut small: HashSet<u32> = (0..500).collect();
        let capacity = small.capacity();
        small.clear();
        small.shrink_when_sparse();
        assert_eq!(small.capacity(), capacity);
    }

    #[test]
    fn entries_survive_a_shrink() {
        let mut map: HashMap<u32, u32> = (0..10_000).map(|n| (n, n * 3)).collect();
        map.retain(|n, _| n % 10 == 0);
        map.shrink_when_sparse();
        assert!(map.capacity() < 10_000);
        assert_eq!(map.len(), 1_000);
        assert!(map.iter().all(|(n, v)| *v == n * 3));
    }
}
