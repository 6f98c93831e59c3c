//! User-space allocations: per function, per call site, live blocks, leaks.
//!
//! Fed with the outermost allocator calls the eBPF side reports. A call site is the user stack
//! at the call together with the direct caller (see [`SiteKey`]); stacks are symbolized only
//! when a report is made.
//!
//! With `--sample`, only sampled calls arrive: a block of `b` bytes was sampled with
//! probability `p = 1 - exp(-b / mean)`, so it stands for `1/p` blocks and `b/p` bytes
//! (Horvitz-Thompson estimates, unbiased), whose variance `(1-p)/p²·b²` is summed per site for
//! the error of the estimate.

use std::collections::{BTreeSet, HashMap};

use foldhash::HashMap as FastMap;

use super::{blocks::LiveTable, threads::Threads};

use crate::events::{AllocCall, BlockKind, CheckOutcome, LeakCheck, LeakKind};
use serde::Serialize;
use tracer_common::{AllocEvent, AllocFn};

#[derive(Debug, Clone, Copy, Default)]
struct ThreadState {
    last_alloc: u64,
}

/// A site's place in [`HeapStats::sites`]: sites are interned once, at their first allocation,
/// and every other per-site state (the join's paths) is indexed by it.
pub type SiteId = u32;

/// Where an allocation was made: the stack-trace id and the return address into the caller.
/// Both are needed: the stack walk from inside the allocator misses the direct caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SiteKey {
    pub stack_id: i32,
    pub caller: u64,
}

/// Statistics of one call site.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SiteStats {
    pub allocs: u64,
    pub bytes: u64,
    pub frees: u64,
    pub live_bytes: u64,
    pub peak_live_bytes: u64,
    /// Freed again before the thread's next allocation (heaptrack's definition).
    pub temporary: u64,
    #[serde(skip)]
    pub live_count: u64,
    /// Sampling: the variance of the `bytes` estimate.
    #[serde(skip)]
    pub bytes_variance: f64,
    /// `realloc` calls here that moved the block (the new address differs from the old),
    /// the bytes they copied (the old block, or the new one when it shrank) and the sizes they
    /// moved to.
    #[serde(skip_serializing_if = "is_zero")]
    pub realloc_moves: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub realloc_copied_bytes: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub realloc_moved_to_bytes: u64,
    /// Of those moves, the blocks moved (a block and what realloc moved it to are one), and
    /// the most times one of them moved: 50,000 blocks moved once each, or one moved 99 times.
    #[serde(skip_serializing_if = "is_zero")]
    pub realloc_moved_blocks: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub realloc_most_moves: u64,
    /// Nanoseconds spent in the allocator calls that made its blocks, entry to return, as
    /// measured while traced (the probes' own cost included).
    #[serde(skip_serializing_if = "is_zero")]
    pub call_ns: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Eq for SiteStats {}

impl SiteStats {
    /// Adds another site's statistics to this one, as reports merge sites that resolve to the
    /// same frames. The peak becomes the sum of the peaks: an upper bound, as the two need not
    /// have peaked together.
    pub fn merge(&mut self, o: &SiteStats) {
        self.allocs = self.allocs.saturating_add(o.allocs);
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.frees = self.frees.saturating_add(o.frees);
        self.live_bytes = self.live_bytes.saturating_add(o.live_bytes);
        self.peak_live_bytes = self.peak_live_bytes.saturating_add(o.peak_live_bytes);
        self.temporary = self.temporary.saturating_add(o.temporary);
        self.live_count = self.live_count.saturating_add(o.live_count);
        self.bytes_variance += o.bytes_variance;
        self.realloc_moves = self.realloc_moves.saturating_add(o.realloc_moves);
        self.realloc_copied_bytes = self
            .realloc_copied_bytes
            .saturating_add(o.realloc_copied_bytes);
        self.realloc_moved_to_bytes = self
            .realloc_moved_to_bytes
            .saturating_add(o.realloc_moved_to_bytes);
        self.realloc_moved_blocks = self
            .realloc_moved_blocks
            .saturating_add(o.realloc_moved_blocks);
        self.realloc_most_moves = self.realloc_most_moves.max(o.realloc_most_moves);
        self.call_ns = self.call_ns.saturating_add(o.call_ns);
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct LiveBlock {
    size: u64,
    site: u32,
    /// How many times realloc moved this block's contents to get here (the low
    /// [`MOVE_BITS`]), and what the last leak check found it to be (the bits above): in the
    /// padding after `site`, no bigger a block.
    tag: u32,
    ts_ns: u64,
}

/// Bits of [`LiveBlock::tag`] that count moves; more moves than they hold stay at the most.
const MOVE_BITS: u32 = 29;
const MOST_MOVES: u32 = (1 << MOVE_BITS) - 1;

impl LiveBlock {
    fn moves(&self) -> u32 {
        self.tag & MOST_MOVES
    }

    /// What the last leak check found; None when no check saw this block.
    fn kind(&self) -> Option<LeakKind> {
        match self.tag >> MOVE_BITS {
            1 => Some(LeakKind::Lost),
            2 => Some(LeakKind::Indirect),
            3 => Some(LeakKind::Possible),
            4 => Some(LeakKind::Reachable),
            _ => None,
        }
    }

    fn set_kind(&mut self, kind: LeakKind) {
        let bits = match kind {
            LeakKind::Lost => 1,
            LeakKind::Indirect => 2,
            LeakKind::Possible => 3,
            LeakKind::Reachable => 4,
        };
        self.tag = self.moves() | (bits << MOVE_BITS);
    }
}

/// How many blocks, and how many bytes, a sampled block of `bytes` stands for when one is
/// sampled per `mean` bytes on average (`mean` 0: exact, one block), and the variance of the
/// bytes estimate.
pub fn sample_weight(bytes: u64, mean: u64) -> (f64, f64) {
    if mean == 0 {
        return (1.0, 0.0);
    }
    let p = -(-(bytes.max(1) as f64) / mean as f64).exp_m1();
    if p <= 0.0 {
        return (1.0, 0.0);
    }
    let w = 1.0 / p;
    let b = bytes as f64;
    (w, (w * w - w) * b * b)
}

/// `x` scaled by `w`, rounded to a count.
fn scaled(x: u64, w: f64) -> u64 {
    if w == 1.0 {
        x
    } else {
        (x as f64 * w).round() as u64
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FuncStats {
    pub calls: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FreeStats {
    pub calls: u64,
    /// Frees of blocks not seen allocated (allocated before attaching, or by an unprobed
    /// allocator): not errors.
    pub unknown: u64,
    /// `free(NULL)`.
    pub null: u64,
}

/// Live blocks of one site at the end: what leaked.
#[derive(Debug, Clone, PartialEq)]
pub struct Leak {
    pub site: SiteKey,
    pub count: u64,
    pub bytes: u64,
    pub oldest_age_ms: f64,
    /// Sampling: the variance of the `bytes` estimate.
    pub bytes_variance: f64,
    /// Bytes of the blocks seen (with sampling, `bytes` is the estimate they stand for).
    pub seen_bytes: u64,
    /// What the last leak check found these blocks to be; None: no check saw them.
    pub kind: Option<LeakKind>,
}

/// Number of power-of-two size buckets: sizes up to 2^63.
const BUCKETS: usize = 64;

#[derive(Debug, Clone)]
pub struct HeapStats {
    funcs: [FuncStats; AllocFn::ALL.len()],
    pub free: FreeStats,
    pub operator_delete: FreeStats,
    pub failed: u64,
    pub live_bytes: u64,
    pub peak_live_bytes: u64,
    histogram: [u64; BUCKETS],
    /// Live blocks by address (hashed: an allocation and a free are one lookup each).
    live: LiveTable<LiveBlock>,
    /// The live blocks' addresses in order, kept only once a query by any address inside a
    /// block came (a page fault: see [`Self::block_at`]); runs without faults never pay for it.
    by_address: Option<BTreeSet<u64>>,
    sites: Vec<(SiteKey, SiteStats)>,
    site_index: FastMap<SiteKey, u32>,
    /// Per thread that made allocator calls: the block it allocated last, while it is still
    /// the last (0: none).
    threads: Threads<ThreadState>,
    /// `--sample`: mean bytes between sampled allocations (0: every call is seen).
    sample_bytes: u64,
    /// Allocating calls seen (with sampling, the sampled ones).
    pub seen_calls: u64,
    /// The last leak check of this heap, and how many ran.
    pub check: Option<LeakCheck>,
    pub checks: u32,
}

impl Default for HeapStats {
    fn default() -> Self {
        HeapStats {
            funcs: Default::default(),
            free: FreeStats::default(),
            operator_delete: FreeStats::default(),
            failed: 0,
            live_bytes: 0,
            peak_live_bytes: 0,
            histogram: [0; BUCKETS],
            live: LiveTable::default(),
            by_address: None,
            sites: Vec::new(),
            site_index: FastMap::default(),
            threads: Threads::default(),
            sample_bytes: 0,
            seen_calls: 0,
            check: None,
            checks: 0,
        }
    }
}

/// The bucket of a request: the smallest power of two at least `bytes`.
fn bucket(bytes: u64) -> usize {
    bytes
        .max(1)
        .checked_next_power_of_two()
        .map_or(BUCKETS - 1, |p| p.trailing_zeros() as usize)
}

impl HeapStats {
    /// Statistics of a run that sampled one allocation per `mean` bytes on average.
    pub fn sampled(mean: u64) -> Self {
        HeapStats {
            sample_bytes: mean,
            ..Default::default()
        }
    }

    /// `--sample`'s mean interval in bytes, or 0.
    pub fn sample_bytes(&self) -> u64 {
        self.sample_bytes
    }

    pub fn on_alloc(&mut self, e: &AllocCall) -> Option<SiteId> {
        let tid = e.header.tid;
        self.threads.get_mut(tid);
        let func = e.func;
        if func.is_free() {
            let stats = if func == AllocFn::Free {
                &mut self.free
            } else {
                &mut self.operator_delete
            };
            if e.ptr == 0 {
                stats.calls += 1;
                stats.null += 1;
            } else if let Some(weight) = self.release(e.ptr, tid) {
                let stats = if func == AllocFn::Free {
                    &mut self.free
                } else {
                    &mut self.operator_delete
                };
                stats.calls = stats.calls.saturating_add(weight);
            } else {
                let stats = if func == AllocFn::Free {
                    &mut self.free
                } else {
                    &mut self.operator_delete
                };
                stats.calls += 1;
                stats.unknown += 1;
            }
            return None;
        }
        let bytes = e.nmemb.saturating_mul(e.size);
        self.seen_calls += 1;
        let (w, _) = sample_weight(bytes, self.sample_bytes);
        let f = &mut self.funcs[func as usize - 1];
        f.calls = f.calls.saturating_add(scaled(1, w));
        f.bytes = f.bytes.saturating_add(scaled(bytes, w));
        let resizes = matches!(func, AllocFn::Realloc | AllocFn::Reallocarray);
        if e.ptr == 0 {
            if resizes && bytes == 0 && e.old_ptr != 0 {
                // glibc's realloc(p, 0) frees p and returns NULL: a free, not a failure.
                self.release(e.old_ptr, tid);
            } else {
                // A failed call leaves any old block where it was.
                self.failed = self.failed.saturating_add(scaled(1, w));
            }
            return None;
        }
        // A block that moved: its old bytes were copied (as far as both hold them).
        let moved = (resizes && e.old_ptr != 0 && e.old_ptr != e.ptr)
            .then(|| self.live.get(e.old_ptr).map(|b| (b.size, b.moves())))
            .flatten();
        if resizes && e.old_ptr != 0 {
            self.release(e.old_ptr, tid);
        }
        let moves = moved.map_or(0, |(_, m)| m.saturating_add(1).min(MOST_MOVES));
        let site = self.record(e, bytes, moves);
        if let Some((old, before)) = moved {
            let s = &mut self.sites[site as usize].1;
            s.realloc_moves = s.realloc_moves.saturating_add(scaled(1, w));
            if before == 0 {
                s.realloc_moved_blocks = s.realloc_moved_blocks.saturating_add(scaled(1, w));
            }
            s.realloc_most_moves = s.realloc_most_moves.max(u64::from(moves));
            s.realloc_copied_bytes = s
                .realloc_copied_bytes
                .saturating_add(scaled(old.min(bytes), w));
            s.realloc_moved_to_bytes = s.realloc_moved_to_bytes.saturating_add(scaled(bytes, w));
        }
        Some(site)
    }

    /// Fetches the live-block slots of `ptr` and `old_ptr` into the cache, for an allocator
    /// event a few events ahead.
    pub fn prefetch(&self, ptr: u64, old_ptr: u64) {
        self.live.prefetch(ptr);
        if old_ptr != 0 {
            self.live.prefetch(old_ptr);
        }
    }

    /// Records a new live block; returns its site's index.
    fn record(&mut self, e: &AllocEvent, bytes: u64, moves: u32) -> SiteId {
        let key = SiteKey {
            stack_id: e.stack_id,
            caller: e.caller,
        };
        let next = self.sites.len() as u32;
        let site = *self.site_index.entry(key).or_insert(next);
        if site == next {
            self.sites.push((key, SiteStats::default()));
        }
        // One probe of the table: the new block goes in, and an old one at its address (handed
        // out again without a free we saw) is a stale record, released.
        let block = LiveBlock {
            size: bytes,
            site,
            tag: moves,
            ts_ns: e.header.ts_ns,
        };
        match self.live.insert(e.ptr, block) {
            Some(stale) => {
                self.released(e.ptr, stale, u32::MAX);
            }
            None => {
                if let Some(index) = self.by_address.as_mut() {
                    index.insert(e.ptr);
                }
            }
        }
        let (w, variance) = sample_weight(bytes, self.sample_bytes);
        let (count, est) = (scaled(1, w), scaled(bytes, w));
        let s = &mut self.sites[site as usize].1;
        s.allocs = s.allocs.saturating_add(count);
        s.bytes = s.bytes.saturating_add(est);
        s.bytes_variance += variance;
        s.live_bytes = s.live_bytes.saturating_add(est);
        s.live_count += 1;
        s.peak_live_bytes = s.peak_live_bytes.max(s.live_bytes);
        // Entry to return; 0 when the entry time is not known.
        if e.enter_ns > 0 && e.enter_ns <= e.header.ts_ns {
            s.call_ns = s
                .call_ns
                .saturating_add(scaled(e.header.ts_ns - e.enter_ns, w));
        }
        self.live_bytes = self.live_bytes.saturating_add(est);
        self.peak_live_bytes = self.peak_live_bytes.max(self.live_bytes);
        let slot = &mut self.histogram[bucket(bytes)];
        *slot = slot.saturating_add(count);
        self.threads.get_mut(e.header.tid).last_alloc = e.ptr;
        site
    }

    /// Releases a live block: how many blocks it stood for, or None when it was not known.
    fn release(&mut self, ptr: u64, tid: u32) -> Option<u64> {
        let block = self.live.remove(ptr)?;
        if let Some(index) = self.by_address.as_mut() {
            index.remove(&ptr);
        }
        Some(self.released(ptr, block, tid))
    }

    /// Books a live block `ptr` taken out of the table: how many blocks it stood for.
    fn released(&mut self, ptr: u64, block: LiveBlock, tid: u32) -> u64 {
        let (w, _) = sample_weight(block.size, self.sample_bytes);
        let (count, est) = (scaled(1, w), scaled(block.size, w));
        let s = &mut self.sites[block.site as usize].1;
        s.frees = s.frees.saturating_add(count);
        s.live_bytes = s.live_bytes.saturating_sub(est);
        s.live_count -= 1;
        self.live_bytes = self.live_bytes.saturating_sub(est);
        if let Some(thread) = self.threads.peek_mut(tid)
            && thread.last_alloc == ptr
        {
            s.temporary = s.temporary.saturating_add(count);
            thread.last_alloc = 0;
        }
        count
    }

    /// The process ran a new program: every live block went with the old image (released,
    /// not freed, not leaked). Returns how many blocks and bytes were live.
    pub fn release_all(&mut self) -> (u64, u64) {
        let (mut blocks, mut bytes) = (0u64, 0u64);
        for block in self.live.values() {
            let (w, _) = sample_weight(block.size, self.sample_bytes);
            blocks = blocks.saturating_add(scaled(1, w));
            bytes = bytes.saturating_add(scaled(block.size, w));
        }
        self.live.clear();
        if let Some(index) = self.by_address.as_mut() {
            index.clear();
        }
        self.threads.states_mut().for_each(|t| t.last_alloc = 0);
        for (_, s) in &mut self.sites {
            s.live_bytes = 0;
            s.live_count = 0;
        }
        self.live_bytes = 0;
        (blocks, bytes)
    }

    /// A leak check ran. When it classified every live block, each is reachable until a
    /// [`BlockKind`] after it says otherwise; blocks allocated later are unchecked.
    pub fn on_leak_check(&mut self, check: &LeakCheck) {
        self.check = Some(*check);
        self.checks = self.checks.saturating_add(1);
        if check.outcome == CheckOutcome::Done {
            self.live
                .values_mut()
                .for_each(|b| b.set_kind(LeakKind::Reachable));
        }
    }

    /// What the leak check before found the block at `e.raw.addr` to be.
    pub fn on_block_kind(&mut self, e: &BlockKind) {
        if let Some(block) = self.live.get_mut(e.raw.addr) {
            block.set_kind(e.kind);
        }
    }

    /// Calls and bytes of `func`.
    pub fn func(&self, func: AllocFn) -> FuncStats {
        self.funcs[func as usize - 1]
    }

    /// `(le, count)` for each power-of-two bucket from the smallest used to the largest used.
    pub fn histogram(&self) -> Vec<(u64, u64)> {
        let used: Vec<usize> = (0..BUCKETS).filter(|&i| self.histogram[i] > 0).collect();
        let (Some(&lo), Some(&hi)) = (used.first(), used.last()) else {
            return Vec::new();
        };
        (lo..=hi).map(|i| (1u64 << i, self.histogram[i])).collect()
    }

    /// How many threads made allocator calls.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    pub fn sites(&self) -> &[(SiteKey, SiteStats)] {
        &self.sites
    }

    /// Every stack id a site refers to.
    pub fn stack_ids(&self) -> Vec<i32> {
        let mut ids: Vec<i32> = self
            .sites
            .iter()
            .map(|(k, _)| k.stack_id)
            .filter(|&id| id >= 0)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The live block containing `addr`: its start, size and site. The first call orders
    /// the live blocks by address, and they are kept in order from then on.
    pub fn block_at(&mut self, addr: u64) -> Option<(u64, u64, SiteId)> {
        let live = &self.live;
        let index = self.by_address.get_or_insert_with(|| live.keys().collect());
        let &start = index.range(..=addr).next_back()?;
        let block = *live.get(start)?;
        (addr < start.saturating_add(block.size.max(1))).then_some((start, block.size, block.site))
    }

    /// The live blocks in address order (reports are the same on every replay).
    fn live_in_order(&self) -> Vec<(u64, LiveBlock)> {
        if let Some(index) = &self.by_address {
            // Kept in order already (a fault asked for it): walked, not sorted.
            return index
                .iter()
                .filter_map(|&a| self.live.get(a).map(|&b| (a, b)))
                .collect();
        }
        let mut blocks: Vec<(u64, LiveBlock)> = self.live.iter().map(|(a, &b)| (a, b)).collect();
        blocks.sort_unstable_by_key(|&(a, _)| a);
        blocks
    }

    /// Every live block, lowest address first: (start, size, site).
    pub fn live_blocks(&self) -> impl Iterator<Item = (u64, u64, SiteKey)> + '_ {
        self.live_in_order()
            .into_iter()
            .map(|(start, b)| (start, b.size, self.sites[b.site as usize].0))
    }

    /// Every live block from the highest address down: (start, size, site).
    pub fn live_blocks_from_top(&self) -> impl Iterator<Item = (u64, u64, SiteKey)> + '_ {
        self.live_in_order()
            .into_iter()
            .rev()
            .map(|(start, b)| (start, b.size, self.sites[b.site as usize].0))
    }

    /// Every live block, lowest address first: (its site's index in [`Self::sites`],
    /// allocation time, size).
    pub fn live_block_times(&self) -> impl Iterator<Item = (usize, u64, u64)> + '_ {
        self.live_in_order()
            .into_iter()
            .map(|(_, b)| (b.site as usize, b.ts_ns, b.size))
    }

    /// Live blocks grouped by site, most bytes first, aged against `now_ns` (CLOCK_MONOTONIC);
    /// blocks younger than `min_age_ns` are left out (`--min-age`).
    pub fn leaks(&self, now_ns: u64, min_age_ns: u64) -> Vec<Leak> {
        let mut by_site: HashMap<(u32, Option<LeakKind>), Leak> = HashMap::new();
        // In address order: the variances are summed in the same order on every replay.
        for (_, block) in self.live_in_order() {
            if now_ns.saturating_sub(block.ts_ns) < min_age_ns {
                continue;
            }
            let (w, variance) = sample_weight(block.size, self.sample_bytes);
            let e = by_site.entry((block.site, block.kind())).or_insert(Leak {
                site: self.sites[block.site as usize].0,
                count: 0,
                bytes: 0,
                oldest_age_ms: 0.0,
                bytes_variance: 0.0,
                seen_bytes: 0,
                kind: block.kind(),
            });
            e.count = e.count.saturating_add(scaled(1, w));
            e.bytes = e.bytes.saturating_add(scaled(block.size, w));
            let age = now_ns.saturating_sub(block.ts_ns) as f64 / 1e6;
            e.oldest_age_ms = e.oldest_age_ms.max(age);
            e.bytes_variance += variance;
            e.seen_bytes = e.seen_bytes.saturating_add(block.size);
        }
        let mut leaks: Vec<Leak> = by_site.into_values().collect();
        leaks.sort_by(|a, b| {
            b.bytes
                .cmp(&a.bytes)
                .then(a.site.cmp(&b.site))
                .then(a.kind.cmp(&b.kind))
        });
        leaks
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::EventHeader;

    use super::*;
    use crate::events::testing;

    struct Seq {
        heap: HeapStats,
        ts: u64,
    }

    impl Seq {
        fn new() -> Self {
            Seq {
                heap: HeapStats::default(),
                ts: 1_000_000,
            }
        }

        fn ev(&mut self, tid: u32, func: AllocFn, size: u64, ptr: u64, old: u64, site: u64) {
            self.ts += 1_000_000;
            let (nmemb, size) = if func == AllocFn::Calloc {
                (4, size / 4)
            } else {
                (1, size)
            };
            let e = testing::alloc(func, size, ptr, 0x1000 + site, self.ts);
            self.heap.on_alloc(&testing::alloc_call(AllocEvent {
                header: EventHeader { tid, ..e.header },
                stack_id: site as i32,
                nmemb,
                old_ptr: old,
                ..e
            }));
        }

        fn alloc(&mut self, tid: u32, size: u64, ptr: u64, site: u64) {
            self.ev(tid, AllocFn::Malloc, size, ptr, 0, site);
        }

        fn free(&mut self, tid: u32, ptr: u64) {
            self.ev(tid, AllocFn::Free, 0, ptr, 0, 0);
        }

        fn site(&self, site: u64) -> &SiteStats {
            &self
                .heap
                .sites()
                .iter()
                .find(|(k, _)| k.caller == 0x1000 + site)
                .unwrap()
                .1
        }
    }

    #[test]
    fn pairs_allocations_and_frees_across_threads() {
        let mut s = Seq::new();
        s.alloc(1, 100, 0xa0, 1);
        s.alloc(1, 200, 0xb0, 1);
        s.alloc(2, 300, 0xc0, 2);
        // Thread 2 frees a block thread 1 allocated.
        s.free(2, 0xa0);
        assert_eq!(s.heap.live_bytes, 500);
        assert_eq!(s.heap.peak_live_bytes, 600);
        assert_eq!(
            *s.site(1),
            SiteStats {
                allocs: 2,
                bytes: 300,
                frees: 1,
                live_bytes: 200,
                peak_live_bytes: 300,
                temporary: 0,
                live_count: 1,
                bytes_variance: 0.0,
                ..Default::default()
            }
        );
        assert_eq!(
            s.heap.func(AllocFn::Malloc),
            FuncStats {
                calls: 3,
                bytes: 600
            }
        );
        assert_eq!(
            s.heap.free,
            FreeStats {
                calls: 1,
                unknown: 0,
                null: 0
            }
        );
    }

    /// An address handed out again without a free we saw (lost, or before attaching): the old
    /// block is released, the new one is live, and neither is counted twice.
    #[test]
    fn a_block_handed_out_again_replaces_the_stale_one() {
        let mut s = Seq::new();
        s.alloc(1, 100, 0xa0, 1);
        // The address index is built (a fault asked), and kept through the replacement.
        assert_eq!(s.heap.block_at(0xa0).map(|b| b.1), Some(100));
        s.alloc(1, 40, 0xa0, 2);
        assert_eq!(s.heap.live_bytes, 40);
        assert_eq!(s.heap.peak_live_bytes, 100);
        assert_eq!(
            (s.site(1).live_bytes, s.site(1).live_count, s.site(1).frees),
            (0, 0, 1)
        );
        assert_eq!((s.site(2).live_bytes, s.site(2).live_count), (40, 1));
        assert_eq!(s.heap.block_at(0xa0).map(|b| b.1), Some(40));
        // Live blocks in address order, from the index as from the table (another thread's,
        // so that 0xa0 stays thread 1's last block).
        s.alloc(2, 8, 0x10, 3);
        let listed: Vec<u64> = s.heap.live_blocks().map(|b| b.0).collect();
        assert_eq!(listed, [0x10, 0xa0]);
        // The index by address holds it once: freeing it leaves nothing.
        s.free(1, 0xa0);
        assert_eq!(s.heap.block_at(0xa0), None);
        assert_eq!((s.heap.live_bytes, s.site(2).temporary), (8, 1));
    }

    #[test]
    fn unknown_and_null_frees() {
        let mut s = Seq::new();
        s.free(1, 0xdead);
        s.free(1, 0);
        s.ev(1, AllocFn::OperatorDelete, 0, 0xbeef, 0, 0);
        assert_eq!(
            s.heap.free,
            FreeStats {
                calls: 2,
                unknown: 1,
                null: 1
            }
        );
        assert_eq!(
            s.heap.operator_delete,
            FreeStats {
                calls: 1,
                unknown: 1,
                null: 0
            }
        );
        assert_eq!(s.heap.live_bytes, 0);
    }

    #[test]
    fn realloc_chain_moves_the_block() {
        let mut s = Seq::new();
        s.ev(1, AllocFn::Realloc, 16, 0xa0, 0, 1); // realloc(NULL, 16): an allocation
        s.ev(1, AllocFn::Realloc, 64, 0xb0, 0xa0, 2); // moved
        s.ev(1, AllocFn::Realloc, 128, 0xb0, 0xb0, 3); // grown in place
        // One move, from the site-1 block of 16 bytes to 64 bytes at site 2; the in-place
        // growth at site 3 copied nothing.
        assert_eq!(
            (
                s.site(2).realloc_moves,
                s.site(2).realloc_copied_bytes,
                s.site(2).realloc_moved_to_bytes
            ),
            (1, 16, 64)
        );
        assert_eq!(s.site(3).realloc_moves, 0);
        s.ev(1, AllocFn::Realloc, 1 << 40, 0, 0xb0, 4); // failed: 0xb0 stays live
        assert_eq!(s.heap.failed, 1);
        assert_eq!(s.heap.live_bytes, 128);
        assert_eq!(s.heap.func(AllocFn::Realloc).calls, 4);
        s.ev(1, AllocFn::Realloc, 0, 0, 0xb0, 5); // realloc(p, 0): frees p
        assert_eq!(s.heap.failed, 1);
        assert_eq!(s.heap.live_bytes, 0);
        assert_eq!(s.site(1).frees, 1);
        assert_eq!(s.site(3).frees, 1);
        assert!(s.heap.leaks(u64::MAX, 0).is_empty());
    }

    /// One block moved three times is one block moved, at most three times; three blocks
    /// moved once each are three, at most once: moves are counted per block.
    #[test]
    fn realloc_moves_are_counted_per_block() {
        let mut s = Seq::new();
        s.ev(1, AllocFn::Malloc, 16, 0xa0, 0, 1);
        s.ev(1, AllocFn::Realloc, 32, 0xb0, 0xa0, 2);
        s.ev(1, AllocFn::Realloc, 64, 0xc0, 0xb0, 2);
        s.ev(1, AllocFn::Realloc, 128, 0xd0, 0xc0, 2);
        let one = s.site(2);
        assert_eq!(
            (
                one.realloc_moves,
                one.realloc_moved_blocks,
                one.realloc_most_moves
            ),
            (3, 1, 3)
        );
        for i in 0..3u64 {
            s.ev(1, AllocFn::Malloc, 16, 0x1000 + i * 0x100, 0, 3);
            s.ev(
                1,
                AllocFn::Realloc,
                32,
                0x2000 + i * 0x100,
                0x1000 + i * 0x100,
                4,
            );
        }
        let many = s.site(4);
        assert_eq!(
            (
                many.realloc_moves,
                many.realloc_moved_blocks,
                many.realloc_most_moves
            ),
            (3, 3, 1)
        );
        assert_eq!(size_of::<LiveBlock>(), 24, "moves fit in the padding");
    }

    #[test]
    fn sampled_blocks_stand_for_the_blocks_they_represent() {
        // Exact tracing: weight one, no variance.
        assert_eq!(sample_weight(64, 0), (1.0, 0.0));
        // A 64-byte block sampled once per 64 bytes on average: p = 1 - 1/e.
        let (w, var) = sample_weight(64, 64);
        let p = 1.0 - (-1.0f64).exp();
        assert!((w - 1.0 / p).abs() < 1e-12);
        assert!((var - (1.0 - p) / (p * p) * 64.0 * 64.0).abs() < 1e-9);
        // Blocks much larger than the interval are as good as certain.
        assert!((sample_weight(1 << 30, 4096).0 - 1.0).abs() < 1e-12);

        let mut s = Seq::new();
        s.heap = HeapStats::sampled(1000);
        // A 10-byte sampled block stands for about 100.5 blocks of 1005 bytes.
        s.alloc(1, 10, 0xa0, 1);
        let (w, _) = sample_weight(10, 1000);
        let (count, bytes) = ((w).round() as u64, (10.0 * w).round() as u64);
        assert_eq!((count, bytes), (101, 1005));
        assert_eq!((s.site(1).allocs, s.site(1).bytes), (count, bytes));
        assert_eq!(s.heap.live_bytes, bytes);
        assert_eq!(s.heap.func(AllocFn::Malloc).calls, count);
        assert_eq!(s.heap.seen_calls, 1);
        assert_eq!(s.heap.leaks(0, 0)[0].count, count);
        assert_eq!(s.heap.leaks(0, 0)[0].seen_bytes, 10);
        // Its free takes all of it back.
        s.free(1, 0xa0);
        assert_eq!((s.site(1).frees, s.site(1).live_bytes), (count, 0));
        assert_eq!(s.heap.free.calls, count);
        assert_eq!(s.heap.live_bytes, 0);
        assert!(s.site(1).bytes_variance > 0.0);
    }

    #[test]
    fn extreme_weights_saturate() {
        let mut s = Seq::new();
        s.heap = HeapStats::sampled(u64::MAX);
        for i in 0..4 {
            s.alloc(1, 1, 0xa0 + i * 16, 1);
        }
        assert_eq!(s.site(1).allocs, u64::MAX);
        s.free(1, 0xa0);
        assert!(s.heap.leaks(0, 0)[0].count > 0);
    }

    #[test]
    fn failed_allocations_are_not_live() {
        let mut s = Seq::new();
        s.alloc(1, 1 << 50, 0, 1);
        s.ev(1, AllocFn::Calloc, 1 << 50, 0, 0, 1);
        assert_eq!(s.heap.failed, 2);
        assert_eq!(s.heap.live_bytes, 0);
        assert!(s.heap.sites().is_empty());
        assert_eq!(
            s.heap.func(AllocFn::Calloc),
            FuncStats {
                calls: 1,
                bytes: 1 << 50
            }
        );
    }

    #[test]
    fn temporary_allocations() {
        let mut s = Seq::new();
        s.alloc(1, 10, 0xa0, 1);
        s.free(1, 0xa0); // temporary: nothing allocated in between
        s.alloc(1, 10, 0xa0, 1);
        s.alloc(1, 10, 0xb0, 2);
        s.free(1, 0xa0); // not temporary: 0xb0 came in between
        s.alloc(2, 10, 0xc0, 2);
        s.alloc(1, 10, 0xd0, 2);
        s.free(2, 0xc0); // temporary on thread 2 even though thread 1 allocated meanwhile
        assert_eq!(s.site(1).temporary, 1);
        assert_eq!(s.site(2).temporary, 1);
    }

    #[test]
    fn leaks_grouped_by_site_with_age() {
        let mut s = Seq::new();
        s.alloc(1, 10, 0xa0, 1); // t = 2 ms
        s.alloc(1, 20, 0xb0, 1); // 3 ms
        s.alloc(1, 300, 0xc0, 2); // 4 ms
        s.free(1, 0xb0);
        let leaks = s.heap.leaks(10_000_000, 0);
        assert_eq!(leaks.len(), 2);
        assert_eq!(
            (leaks[0].site.caller, leaks[0].count, leaks[0].bytes),
            (0x1002, 1, 300)
        );
        assert_eq!(leaks[0].oldest_age_ms, 6.0);
        assert_eq!(
            (leaks[1].site.caller, leaks[1].count, leaks[1].bytes),
            (0x1001, 1, 10)
        );
        assert_eq!(leaks[1].oldest_age_ms, 8.0);
        // --min-age 7ms: only the block aged 8 ms is left.
        let old = s.heap.leaks(10_000_000, 7_000_000);
        assert_eq!(old.len(), 1);
        assert_eq!((old[0].site.caller, old[0].bytes), (0x1001, 10));
        assert!(s.heap.leaks(10_000_000, 9_000_000).is_empty());
    }

    #[test]
    fn histogram_buckets() {
        let mut s = Seq::new();
        for (i, size) in [1u64, 8, 9, 16, 17, 1000].into_iter().enumerate() {
            s.alloc(1, size, 0x100 * (i as u64 + 1), 1);
        }
        assert_eq!(
            s.heap.histogram(),
            [
                (1, 1),
                (2, 0),
                (4, 0),
                (8, 1),
                (16, 2),
                (32, 1),
                (64, 0),
                (128, 0),
                (256, 0),
                (512, 0),
                (1024, 1)
            ]
        );
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(u64::MAX), 63);
    }

    #[test]
    fn finds_the_block_containing_an_address() {
        let mut s = Seq::new();
        s.alloc(1, 100, 0x1000, 1);
        s.alloc(1, 0x3000, 0x2000, 2);
        let site_of = |s: &HeapStats, id: SiteId| s.sites()[id as usize].0.caller;
        assert_eq!(
            s.heap.block_at(0x1000).map(|b| site_of(&s.heap, b.2)),
            Some(0x1001)
        );
        assert_eq!(s.heap.block_at(0x1063).map(|b| b.0), Some(0x1000));
        assert_eq!(s.heap.block_at(0x1064), None);
        assert_eq!(s.heap.block_at(0x4fff).map(|b| b.1), Some(0x3000));
        assert_eq!(s.heap.block_at(0x5000), None);
        assert_eq!(s.heap.block_at(0xfff), None);
        assert_eq!(s.heap.live_blocks().count(), 2);
        // The address order is kept up from then on: blocks freed, added, and all released.
        s.free(1, 0x2000);
        assert_eq!(s.heap.block_at(0x2010), None);
        s.alloc(1, 0x100, 0x1800, 3);
        assert_eq!(s.heap.block_at(0x18ff).map(|b| b.0), Some(0x1800));
        assert_eq!(s.heap.block_at(0x1900), None);
        assert_eq!(s.heap.block_at(0x1010).map(|b| b.0), Some(0x1000));
        let starts: Vec<u64> = s.heap.live_blocks().map(|b| b.0).collect();
        assert_eq!(starts, [0x1000, 0x1800]);
        let top: Vec<u64> = s.heap.live_blocks_from_top().map(|b| b.0).collect();
        assert_eq!(top, [0x1800, 0x1000]);
        assert_eq!(s.heap.release_all(), (2, 0x164));
        assert_eq!(s.heap.block_at(0x1000), None);
    }

    #[test]
    fn reused_address_without_seen_free() {
        let mut s = Seq::new();
        s.alloc(1, 10, 0xa0, 1);
        s.alloc(1, 20, 0xa0, 2);
        assert_eq!(s.heap.live_bytes, 20);
        assert_eq!(s.site(1).live_bytes, 0);
    }
}
