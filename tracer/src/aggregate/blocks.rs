//! The live blocks of a heap, by address: an open-addressing table whose slot for an address
//! can be fetched into the cache ahead of the event that needs it.
//!
//! A program frees its blocks in an order of its own, so nearly every free is a cache miss in
//! a table of a hundred thousand blocks; reading a recording, the replay knows the next
//! events and has their slots fetched while it works on the current one (see
//! [`LiveTable::prefetch`]). Linear probing, at most half full, with deletion by shifting the
//! following entries back (no tombstones). Addresses are hashed with a seed of the process's
//! own (foldhash), so a hostile recording cannot aim its addresses at one chain.

use std::hash::BuildHasher;

use foldhash::fast::RandomState;

/// One slot: an address (0: empty; no live block starts at 0) and its value.
#[derive(Debug, Clone, Copy)]
struct Slot<V> {
    key: u64,
    value: V,
}

/// Live blocks by address.
#[derive(Debug, Clone)]
pub struct LiveTable<V> {
    slots: Vec<Slot<V>>,
    len: usize,
    hasher: RandomState,
}

/// Slots of an empty table's first allocation.
const FIRST_SLOTS: usize = 64;

impl<V: Copy + Default> Default for LiveTable<V> {
    fn default() -> Self {
        LiveTable {
            slots: Vec::new(),
            len: 0,
            hasher: RandomState::default(),
        }
    }
}

impl<V: Copy + Default> LiveTable<V> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    fn home(&self, key: u64) -> usize {
        self.hasher.hash_one(key) as usize & self.mask()
    }

    /// The slot holding `key`, if any.
    fn find(&self, key: u64) -> Option<usize> {
        if self.slots.is_empty() || key == 0 {
            return None;
        }
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            match self.slots[i].key {
                k if k == key => return Some(i),
                0 => return None,
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Asks the processor to fetch `key`'s slot: an event about to free or replace it is then
    /// a hit. A hint only: nothing changes.
    #[inline]
    pub fn prefetch(&self, key: u64) {
        if self.slots.is_empty() {
            return;
        }
        let slot = &self.slots[self.home(key)];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetching reads nothing architecturally; the address is a live slot's.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                (slot as *const Slot<V>).cast(),
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    pub fn get(&self, key: u64) -> Option<&V> {
        self.find(key).map(|i| &self.slots[i].value)
    }

    pub fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        self.find(key).map(|i| &mut self.slots[i].value)
    }

    pub fn contains_key(&self, key: u64) -> bool {
        self.find(key).is_some()
    }

    /// Sets `key`'s value; returns the value it had. Address 0 is never kept.
    pub fn insert(&mut self, key: u64, value: V) -> Option<V> {
        if key == 0 {
            return None;
        }
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.mask();
        let mut i = self.home(key);
        loop {
            let slot = &mut self.slots[i];
            if slot.key == key {
                return Some(std::mem::replace(&mut slot.value, value));
            }
            if slot.key == 0 {
                *slot = Slot { key, value };
                self.len += 1;
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Takes `key` out; returns its value.
    pub fn remove(&mut self, key: u64) -> Option<V> {
        let mut hole = self.find(key)?;
        let value = self.slots[hole].value;
        let mask = self.mask();
        // Entries after the hole that would no longer be found move back into it.
        let mut i = (hole + 1) & mask;
        while self.slots[i].key != 0 {
            let home = self.home(self.slots[i].key);
            // Whether `home` lies cyclically in (hole, i]: then the entry stays.
            let stays = if hole <= i {
                hole < home && home <= i
            } else {
                hole < home || home <= i
            };
            if !stays {
                self.slots[hole] = self.slots[i];
                hole = i;
            }
            i = (i + 1) & mask;
        }
        self.slots[hole] = Slot {
            key: 0,
            value: V::default(),
        };
        self.len -= 1;
        Some(value)
    }

    pub fn clear(&mut self) {
        self.slots.clear();
        self.len = 0;
    }

    /// Every (address, value), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &V)> + '_ {
        self.slots
            .iter()
            .filter(|s| s.key != 0)
            .map(|s| (s.key, &s.value))
    }

    /// Every address, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> + '_ {
        self.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> + '_ {
        self.slots
            .iter_mut()
            .filter(|s| s.key != 0)
            .map(|s| &mut s.value)
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(FIRST_SLOTS);
        let mut slots = Vec::with_capacity(size);
        // Before the slots are first written: pages already touched stay small.
        advise_huge_pages(slots.as_ptr(), size);
        slots.resize(
            size,
            Slot {
                key: 0,
                value: V::default(),
            },
        );
        let old = std::mem::replace(&mut self.slots, slots);
        self.len = 0;
        for s in old.into_iter().filter(|s| s.key != 0) {
            self.insert(s.key, s.value);
        }
    }
}

/// Asks for huge pages under a large table: its slots are read in no order, and with small
/// pages nearly every read would also miss the TLB. A hint; where the kernel declines (or
/// transparent huge pages are off) nothing changes.
fn advise_huge_pages<T>(slots: *const T, count: usize) {
    const HUGE: usize = 2 << 20;
    let start = slots as usize;
    let end = start + count * size_of::<T>();
    let (from, to) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
    if to > from {
        // SAFETY: the range lies inside our own allocation (its capacity); MADV_HUGEPAGE
        // changes how it is backed, not what it holds.
        unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Against a std map, through growth and thousands of removals (which shift entries back
    /// across the table's wrap-around): the same answers at every step.
    #[test]
    fn agrees_with_a_map_through_inserts_and_removals() {
        let mut t: LiveTable<u64> = LiveTable::default();
        let mut m: HashMap<u64, u64> = HashMap::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for step in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Few distinct addresses: inserts over live ones, removals of absent ones.
            let key = (x % 5_000 + 1) * 16;
            if x.is_multiple_of(3) {
                assert_eq!(t.remove(key), m.remove(&key), "step {step}");
            } else {
                assert_eq!(t.insert(key, step), m.insert(key, step), "step {step}");
            }
            assert_eq!(t.len(), m.len());
            if step.is_multiple_of(10_007) {
                for (k, v) in &m {
                    assert_eq!(t.get(*k), Some(v));
                }
                t.prefetch(key);
            }
        }
        let mut keys: Vec<u64> = t.keys().collect();
        keys.sort_unstable();
        let mut want: Vec<u64> = m.keys().copied().collect();
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(t.insert(0, 1), None);
        assert!(!t.contains_key(0) && t.get(0).is_none());
        t.clear();
        assert!(t.is_empty() && t.get(16).is_none() && t.remove(16).is_none());
        t.prefetch(16);
    }
}
