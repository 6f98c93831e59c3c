//! Every call site's symbolized stack, and which listed site it belongs to, kept from one
//! summary of a run to the next: a periodic summary symbolizes, marks and keys only the sites
//! that are new since the last one, so its cost follows what changed, not how many sites
//! there are.
//!
//! Frames are made once per address and shared; a site's stack is one [`Stack`] that every
//! summary, interval and page holding it shares. Sites are merged into one listed site when
//! every frame is the same code location (see [`merge`](super::merge)).

use std::sync::Arc;

use foldhash::HashMap;

use tracer_common::{DWARF_STACK_ID_BASE, MAX_DWARF_FRAMES};

use crate::{
    aggregate::heap::HeapStats,
    summary::{
        merge::FrameKey,
        plumbing::Plumbing,
        user::{StackMarks, Stacks, site_addresses},
    },
    symbolize::{Frame, Stack, Symbolizer},
};

/// Symbol tables that never change while a run goes on carry the same epoch; 0 is a table
/// that is made anew for every summary (recordings, tests): nothing is kept for it.
pub type Epoch = u64;

/// A new epoch, never 0 and never given out before in this process.
pub fn next_epoch() -> Epoch {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[derive(Debug, Default)]
pub struct SiteFrames {
    /// What the kept frames were made with: the symbol table's epoch and `--wrapper`.
    made_with: Option<(Epoch, Vec<String>)>,
    /// By address: its frames (innermost first, plumbing marked) and its location's id.
    addresses: HashMap<u64, (Vec<Frame>, u32)>,
    /// The ids of the locations (an address's frames as code locations).
    locations: HashMap<Vec<FrameKey>, u32>,
    /// The ids of the listed sites (the locations of a stack's addresses).
    groups: HashMap<Vec<u32>, u32>,
    /// By the heap's site index: its stack and its listed site's id.
    sites: Vec<(Stack, u32, StackMarks)>,
}

/// Where a thread's stack begins: a stack that reaches one is whole.
const ENTRY_POINTS: &[&str] = &[
    "_start",
    "__libc_start_main",
    "__libc_start_main_impl",
    "__libc_start_call_main",
    "start_thread",
    "clone",
    "clone3",
    "__clone",
    "__clone3",
    "thread_start",
];

/// Whether the unwound stack `id`, `walked` frames long, was cut at the unwinder's depth:
/// as deep as it walks, and its outermost frame (of `frames`) no thread's entry point.
fn cut_at_depth(id: i32, walked: usize, frames: &[Frame]) -> bool {
    id >= DWARF_STACK_ID_BASE
        && walked >= MAX_DWARF_FRAMES
        && !frames
            .last()
            .and_then(|f| f.function.as_deref())
            .is_some_and(|f| ENTRY_POINTS.contains(&f))
}

impl SiteFrames {
    /// Brings the frames up to `heap`'s sites: only those new since the last call are made,
    /// unless the symbol table (`epoch`) or the wrappers changed.
    pub fn update(
        &mut self,
        epoch: Epoch,
        plumbing: &Plumbing,
        wrappers: &[String],
        heap: &HeapStats,
        stacks: &dyn Stacks,
        symbolizer: &mut dyn Symbolizer,
    ) {
        let same = matches!(&self.made_with, Some((e, w)) if *e == epoch && w == wrappers);
        // A heap's sites only grow: fewer than kept is another heap.
        if epoch == 0 || !same || heap.sites().len() < self.sites.len() {
            *self = SiteFrames {
                made_with: Some((epoch, wrappers.to_vec())),
                ..SiteFrames::default()
            };
        }
        let new = &heap.sites()[self.sites.len()..];
        let addresses: Vec<Vec<u64>> = new
            .iter()
            .map(|(key, _)| site_addresses(key, stacks))
            .collect();
        self.resolve(addresses.iter().flatten().copied(), plumbing, symbolizer);
        for ((key, _), addrs) in new.iter().zip(&addresses) {
            let mut frames = Vec::new();
            let mut path = Vec::with_capacity(addrs.len());
            for a in addrs {
                let (f, location) = &self.addresses[a];
                frames.extend_from_slice(f);
                path.push(*location);
            }
            let next = self.groups.len() as u32;
            let group = *self.groups.entry(path).or_insert(next);
            let walked = stacks.stack(key.stack_id).map_or(0, <[u64]>::len);
            let marks = StackMarks {
                stack_cut: cut_at_depth(key.stack_id, walked, &frames),
                // -1: the kernel could not keep the stack (counted where it happened).
                stack_lost: key.stack_id < 0,
            };
            self.sites.push((Arc::from(frames), group, marks));
        }
    }

    /// Symbolizes and keys the addresses not seen yet.
    fn resolve(
        &mut self,
        addrs: impl Iterator<Item = u64>,
        plumbing: &Plumbing,
        symbolizer: &mut dyn Symbolizer,
    ) {
        let mut missing: Vec<u64> = addrs.filter(|a| !self.addresses.contains_key(a)).collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return;
        }
        for (addr, mut frames) in missing.iter().zip(symbolizer.symbolize(&missing)) {
            if frames.is_empty() {
                frames.push(Frame::unknown(*addr));
            }
            plumbing.mark_stack(&mut frames);
            let key: Vec<FrameKey> = frames.iter().map(FrameKey::of).collect();
            let next = self.locations.len() as u32;
            let location = *self.locations.entry(key).or_insert(next);
            self.addresses.insert(*addr, (frames, location));
        }
    }

    /// The stack of the site with heap index `site`, its listed site's id (sites with one id
    /// are one listed site), and what its stack is missing.
    pub fn site(&self, site: usize) -> (&Stack, u32, StackMarks) {
        let (stack, group, marks) = &self.sites[site];
        (stack, *group, *marks)
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::{AllocEvent, AllocFn};

    use super::*;
    use crate::{
        aggregate::trend::SiteTrend,
        attribution::join::Join,
        events::testing,
        summary::user::{self, BuildOptions},
        symbolize::TableSymbolizer,
    };
    use std::collections::HashMap;

    const LIB: &str = "/usr/lib/x86_64-linux-gnu/libsqlite3.so.0";

    /// A frame of a stripped library: a function from the symbol table, no line.
    fn stripped(addr: u64, function: &str) -> Frame {
        Frame {
            function: Some(function.into()),
            module: Some(LIB.into()),
            offset: Some(addr - 0x7f00_0000_0000),
            ..Frame::unknown(addr)
        }
    }

    fn malloc(heap: &mut HeapStats, ptr: u64, caller: u64) {
        let e = testing::alloc(AllocFn::Malloc, 64, ptr, caller, 1_000_000);
        heap.on_alloc(&testing::alloc_call(e));
    }

    fn summary(heap: &HeapStats, frames: &SiteFrames) -> user::UserSummary {
        let trend = SiteTrend::default();
        let opts = BuildOptions {
            now_ns: 2_000_000,
            min_age_ns: 0,
            trend: &trend,
            resident: None,
            allocator_files: vec![],
        };
        user::build(heap, &Join::default(), frames, opts)
    }

    fn update(frames: &mut SiteFrames, epoch: Epoch, heap: &HeapStats, sym: &TableSymbolizer) {
        let mut sym = TableSymbolizer {
            table: sym.table.clone(),
        };
        frames.update(
            epoch,
            &Plumbing::default(),
            &[],
            heap,
            &HashMap::new(),
            &mut sym,
        );
    }

    /// Two calls in one function of a stripped library (sqlite3's two `malloc` sites in
    /// `sqlite3VdbeExec`, 150,000 allocations against 14) are two sites, each under its own
    /// return address; a third return address on the first's location joins it.
    #[test]
    fn stripped_call_sites_stay_apart() {
        let (a, b) = (0x7f00_000e_c6fc, 0x7f00_000f_087a);
        let mut heap = HeapStats::default();
        for i in 0..3 {
            malloc(&mut heap, 0x1000 + i * 0x100, a);
        }
        malloc(&mut heap, 0x9000, b);
        let mut sym = TableSymbolizer::default();
        sym.table.insert(a, vec![stripped(a, "sqlite3VdbeExec")]);
        sym.table.insert(b, vec![stripped(b, "sqlite3VdbeExec")]);
        let mut frames = SiteFrames::default();
        update(&mut frames, 0, &heap, &sym);
        let u = summary(&heap, &frames);
        let sites: Vec<(u64, u64)> = u
            .sites
            .iter()
            .map(|s| (s.stack[0].addr, s.stats.allocs))
            .collect();
        assert_eq!(sites, [(a, 3), (b, 1)]);
    }

    /// Kept frames make the summary fresh ones make, for the sites added in between too; a
    /// new epoch makes them anew (an address now resolving elsewhere).
    #[test]
    fn kept_frames_are_fresh_frames() {
        let (a, b) = (0x7f00_0000_1000, 0x7f00_0000_2000);
        let mut heap = HeapStats::default();
        malloc(&mut heap, 0x1000, a);
        let mut sym = TableSymbolizer::default();
        sym.table.insert(a, vec![stripped(a, "first")]);
        sym.table.insert(b, vec![stripped(b, "second")]);
        let mut kept = SiteFrames::default();
        update(&mut kept, 7, &heap, &sym);
        malloc(&mut heap, 0x2000, b);
        malloc(&mut heap, 0x3000, b);
        update(&mut kept, 7, &heap, &sym);
        let mut fresh = SiteFrames::default();
        update(&mut fresh, 0, &heap, &sym);
        assert_eq!(summary(&heap, &kept), summary(&heap, &fresh));
        assert_eq!(summary(&heap, &kept).site_count, 2);

        sym.table.insert(a, vec![stripped(a, "elsewhere")]);
        update(&mut kept, 7, &heap, &sym);
        let name = |frames: &SiteFrames| frames.site(0).0[0].function.clone();
        assert_eq!(name(&kept).as_deref(), Some("first"), "same epoch: kept");
        update(&mut kept, 8, &heap, &sym);
        assert_eq!(name(&kept).as_deref(), Some("elsewhere"));
    }

    /// Counts the addresses it is asked for.
    struct Counting(TableSymbolizer, usize);

    impl Symbolizer for Counting {
        fn symbolize(&mut self, addrs: &[u64]) -> Vec<Vec<Frame>> {
            self.1 += addrs.len();
            self.0.symbolize(addrs)
        }
    }

    /// A periodic summary resolves only what is new: the second update, with one site more,
    /// asks for that site's one new address, and a third with nothing new asks for none.
    #[test]
    fn only_new_sites_are_resolved() {
        let mut heap = HeapStats::default();
        for i in 0..100u64 {
            malloc(&mut heap, 0x1000 + i * 0x100, 0x7f00_0000_1000 + i);
        }
        let mut sym = Counting(TableSymbolizer::default(), 0);
        let mut frames = SiteFrames::default();
        let mut update = |heap: &HeapStats, sym: &mut Counting| {
            let stacks = HashMap::new();
            frames.update(3, &Plumbing::default(), &[], heap, &stacks, sym);
        };
        update(&heap, &mut sym);
        assert_eq!(sym.1, 100);
        malloc(&mut heap, 0x9_0000, 0x7f00_0000_5000);
        update(&heap, &mut sym);
        assert_eq!(sym.1, 101);
        update(&heap, &mut sym);
        assert_eq!(sym.1, 101);
    }

    /// A stack as deep as the unwinder walks is cut unless it reached its thread's entry
    /// point; a shallower one, or one from the kernel's stack map, is not.
    #[test]
    fn a_stack_is_cut_only_short_of_its_entry_point() {
        let walk = |outermost: u64| -> Vec<u64> {
            let mut v: Vec<u64> = (0..MAX_DWARF_FRAMES as u64 - 1)
                .map(|i| 0x7f00_0000_1000 + i)
                .collect();
            v.push(outermost);
            v
        };
        let (deep, whole, shallow) = (
            DWARF_STACK_ID_BASE + 1,
            DWARF_STACK_ID_BASE + 2,
            DWARF_STACK_ID_BASE + 3,
        );
        let stacks = HashMap::from([
            (deep, walk(0x7f00_0000_9000)),
            (whole, walk(0x7f00_0000_9100)),
            (shallow, vec![0x7f00_0000_1000, 0x7f00_0000_9000]),
            (5, walk(0x7f00_0000_9000)),
        ]);
        let mut heap = HeapStats::default();
        for (i, id) in [deep, whole, shallow, 5].into_iter().enumerate() {
            let e = AllocEvent {
                stack_id: id,
                ..testing::alloc(
                    AllocFn::Malloc,
                    64,
                    0x1000 + i as u64 * 0x100,
                    0x4000_0000 + i as u64,
                    1,
                )
            };
            heap.on_alloc(&testing::alloc_call(e));
        }
        let mut sym = TableSymbolizer::default();
        sym.table
            .insert(0x7f00_0000_9000, vec![stripped(0x7f00_0000_9000, "main")]);
        sym.table
            .insert(0x7f00_0000_9100, vec![stripped(0x7f00_0000_9100, "_start")]);
        let mut frames = SiteFrames::default();
        frames.update(0, &Plumbing::default(), &[], &heap, &stacks, &mut sym);
        let cut: Vec<bool> = (0..4).map(|i| frames.site(i).2.stack_cut).collect();
        assert_eq!(cut, [true, false, false, false]);
    }
}
