//! The `user` section of the summary: the allocator family, call sites and leaks, symbolized.

use std::collections::HashMap;

use serde::Serialize;
use tracer_common::AllocFn;

use crate::{
    aggregate::{
        heap::{FreeStats, FuncStats, HeapStats, SiteId, SiteKey, SiteStats},
        trend::SiteTrend,
    },
    attribution::{
        join::{Caused, Join, SitePaths},
        resident::PageSet,
    },
    events::LeakKind,
    summary::leak_check::LeakCheckSummary,
    summary::{
        merge::{Merged, MergedLeak, merge_leaks, merge_sites},
        site_frames::SiteFrames,
        suspects::{self, LeakSuspect},
    },
    symbolize::Stack,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bucket {
    pub le: u64,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteReport {
    /// Innermost first; `stack[0]` is the code that called the allocator.
    pub stack: Stack,
    #[serde(flatten)]
    pub stats: SiteStats,
    /// "brk", "mmap", "thread_arena", "mixed" (or "other").
    pub path: &'static str,
    pub paths: SitePaths,
    /// What its calls caused: syscalls, faults, pages, slab objects.
    pub caused: Caused,
    /// `--sample`: half the width of the 95% confidence interval of `bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_error: Option<u64>,
    /// Whether its stack is whole.
    #[serde(flatten)]
    pub marks: StackMarks,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeakReport {
    pub stack: Stack,
    pub count: u64,
    pub bytes: u64,
    pub oldest_age_ms: f64,
    /// The leaked blocks' share of the resident pages they lie on, at most `bytes`: the same
    /// number as their site's.
    pub resident_bytes: u64,
    /// Bytes on pages never touched: address space only.
    pub virtual_bytes: u64,
    pub path: &'static str,
    pub paths: SitePaths,
    /// `--sample`: half the width of the 95% confidence interval of `bytes`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_error: Option<u64>,
    /// As its site's.
    #[serde(flatten)]
    pub marks: StackMarks,
    /// What the leak check found these blocks to be (`lost`, `indirect`, `possible`,
    /// `reachable`); absent when no check saw them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<LeakKind>,
    /// The `--suppress` rule that matched it: no finding, not in the check's lost totals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed_by: Option<String>,
}

/// What a site's stack is missing, when it is not whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StackMarks {
    /// Deeper than the unwinder walks (64 callers) and cut there: its outermost frames are
    /// missing.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stack_cut: bool,
    /// Not kept (the stack map was full, or its id taken): the site shows its calling frame
    /// only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub stack_lost: bool,
}

impl StackMarks {
    /// Marks of sites listed as one: any one's.
    pub fn add(&mut self, o: StackMarks) {
        self.stack_cut |= o.stack_cut;
        self.stack_lost |= o.stack_lost;
    }
}

/// `--sample`: how the estimates were made.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sampling {
    /// Mean bytes between sampled allocations.
    pub mean_bytes: u64,
    /// Allocator calls seen (sampled), and calls that were not.
    pub sampled_calls: u64,
    pub unsampled_calls: u64,
}

/// Half the width of a 95% confidence interval, from a variance; None when not sampling.
pub fn error_95(sampling: bool, variance: f64) -> Option<u64> {
    sampling.then(|| (1.96 * variance.max(0.0).sqrt()).round() as u64)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserSummary {
    pub malloc: FuncStats,
    pub calloc: FuncStats,
    pub realloc: FuncStats,
    pub reallocarray: FuncStats,
    pub posix_memalign: FuncStats,
    pub aligned_alloc: FuncStats,
    pub memalign: FuncStats,
    pub valloc: FuncStats,
    pub pvalloc: FuncStats,
    pub operator_new: FuncStats,
    pub free: FreeStats,
    pub operator_delete: FreeStats,
    pub failed: u64,
    pub live_bytes_at_end: u64,
    pub peak_live_bytes: u64,
    pub size_histogram: Vec<Bucket>,
    /// Number of call sites seen; `sites` lists the ones with the most bytes.
    pub site_count: usize,
    pub sites: Vec<SiteReport>,
    pub leaks: Vec<LeakReport>,
    /// All leaks together (`leaks` lists the largest): bytes and blocks not freed by the end
    /// (with `--min-age`, old enough).
    pub leaked_bytes: u64,
    pub leaked_blocks: u64,
    /// The files whose allocator functions were probed.
    pub allocator_files: Vec<String>,
    /// How the probes were attached (`session`, `multi`, `single`; see `--uprobe-links`).
    pub uprobe_links: String,
    /// `--sample`: every count and byte total above is an estimate from sampled calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sampling: Option<Sampling>,
    /// What the resident figures of sites and leaks are: `pagemap` (the kernel's present
    /// pages at the end, each split between the live blocks on it) or `first_touch` (pages
    /// first touched while traced, when the process was gone before they could be read).
    pub resident_source: &'static str,
    /// Resident bytes of the brk heap and thread arenas (by `resident_source`).
    pub heap_resident_bytes: u64,
    /// Sites whose live bytes kept growing with their old blocks alive (see
    /// [`suspects`]), fastest first.
    pub leak_suspects: Vec<LeakSuspect>,
    /// The last leak check: what the live blocks were found to be.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leak_check: Option<LeakCheckSummary>,
    /// What each `--suppress` rule suppressed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub suppressed: Vec<crate::summary::suppress::Suppressed>,
}

impl UserSummary {
    /// The allocating functions and what each was asked for, by the names the metrics use
    /// (`operator_new`; the text writes it `operator new`).
    pub fn functions(&self) -> [(&'static str, FuncStats); 10] {
        [
            ("malloc", self.malloc),
            ("calloc", self.calloc),
            ("realloc", self.realloc),
            ("reallocarray", self.reallocarray),
            ("posix_memalign", self.posix_memalign),
            ("aligned_alloc", self.aligned_alloc),
            ("memalign", self.memalign),
            ("valloc", self.valloc),
            ("pvalloc", self.pvalloc),
            ("operator_new", self.operator_new),
        ]
    }

    /// Calls of every allocating function.
    pub fn total_calls(&self) -> u64 {
        self.functions()
            .iter()
            .fold(0u64, |a, (_, f)| a.saturating_add(f.calls))
    }

    /// Bytes asked of every allocating function.
    pub fn total_bytes(&self) -> u64 {
        self.functions()
            .iter()
            .fold(0u64, |a, (_, f)| a.saturating_add(f.bytes))
    }
}

/// The return addresses of a site, innermost first: the direct caller (read at entry), then
/// the frame-pointer walk without its first frame, which is inside the allocator itself.
/// Stacks by id, innermost first: as the kernel stored them, or as much of each as lies in
/// code (a session's view, made per stack when asked, never copied whole).
pub trait Stacks {
    fn stack(&self, id: i32) -> Option<&[u64]>;
}

impl Stacks for HashMap<i32, Vec<u64>> {
    fn stack(&self, id: i32) -> Option<&[u64]> {
        self.get(&id).map(Vec::as_slice)
    }
}

pub fn site_addresses(key: &SiteKey, stacks: &dyn Stacks) -> Vec<u64> {
    let mut addrs = Vec::new();
    if key.caller != 0 {
        addrs.push(key.caller);
    }
    if let Some(walk) = stacks.stack(key.stack_id) {
        addrs.extend(walk.iter().skip(1).copied().filter(|&a| a != 0));
    }
    if addrs.len() > 1 && addrs[0] == addrs[1] {
        addrs.remove(1);
    }
    addrs
}

/// What the user section is built from besides the heap and its stacks.
pub struct BuildOptions<'a> {
    /// CLOCK_MONOTONIC at the end: ages the leaks.
    pub now_ns: u64,
    /// Leaks count only blocks at least this old (`--min-age`).
    pub min_age_ns: u64,
    /// Every site's live bytes over time, closed at `now_ns`.
    pub trend: &'a SiteTrend,
    /// Resident pages read from the kernel, when they could be: resident bytes are then
    /// those, split between the blocks on each page; otherwise pages first touched while
    /// traced.
    pub resident: Option<&'a PageSet>,
    pub allocator_files: Vec<String>,
}

/// Builds the section. `frames` holds every site's stack, brought up to `heap`'s sites.
pub fn build(
    heap: &HeapStats,
    join: &Join,
    frames: &SiteFrames,
    opts: BuildOptions,
) -> UserSummary {
    let BuildOptions {
        now_ns,
        min_age_ns,
        trend,
        resident,
        allocator_files,
    } = opts;
    let paths_of = |id: usize| join.site(id as SiteId).cloned().unwrap_or_default();
    let (mut sites, group_of) =
        merge_sites(heap.sites().iter().enumerate().map(|(id, (key, stats))| {
            let (stack, group, marks) = frames.site(id);
            (*key, stats.clone(), group, (stack, marks), paths_of(id))
        }));
    // Resident means one thing for sites, leaks and every view of them: each resident page
    // split between the live blocks on it. The pages are the kernel's (pagemap) or, when the
    // process could not be read, those first touched while traced and not handed back.
    let first_touched;
    let pages = match resident {
        Some(pages) => pages,
        None => {
            first_touched = join.page_set();
            &first_touched
        }
    };
    let mut leak_resident: HashMap<SiteKey, u64> = pages.split(heap.live_blocks());
    // A site's resident bytes are at most its live bytes: the rest of a page its blocks share
    // with free chunks is memory the heap retains (`retained_heap`), not theirs.
    for (key, stats) in heap.sites() {
        if let Some(r) = leak_resident.get_mut(key) {
            *r = (*r).min(stats.live_bytes);
        }
    }
    for m in &mut sites {
        m.paths.resident_bytes = 0;
    }
    for (key, bytes) in &leak_resident {
        if let Some(&g) = group_of.get(key) {
            let r = &mut sites[g].paths.resident_bytes;
            *r = r.saturating_add(*bytes);
        }
    }
    let leaks = merge_leaks(
        heap.leaks(now_ns, min_age_ns),
        &sites,
        &group_of,
        &leak_resident,
    );
    let leak_check = crate::summary::leak_check::summarize(heap, &leaks);
    let leaked_bytes = leaks
        .iter()
        .fold(0u64, |a, l| a.saturating_add(l.leak.bytes));
    let leaked_blocks = leaks
        .iter()
        .fold(0u64, |a, l| a.saturating_add(l.leak.count));
    let leak_suspects = suspects(heap, trend, &sites, &group_of, now_ns);
    let site_count = sites.len();
    let f = |func| heap.func(func);
    let sampling = heap.sample_bytes() > 0;
    UserSummary {
        malloc: f(AllocFn::Malloc),
        calloc: f(AllocFn::Calloc),
        realloc: f(AllocFn::Realloc),
        reallocarray: f(AllocFn::Reallocarray),
        posix_memalign: f(AllocFn::PosixMemalign),
        aligned_alloc: f(AllocFn::AlignedAlloc),
        memalign: f(AllocFn::Memalign),
        valloc: f(AllocFn::Valloc),
        pvalloc: f(AllocFn::Pvalloc),
        operator_new: f(AllocFn::OperatorNew),
        free: heap.free,
        operator_delete: heap.operator_delete,
        failed: heap.failed,
        live_bytes_at_end: heap.live_bytes,
        peak_live_bytes: heap.peak_live_bytes,
        size_histogram: heap
            .histogram()
            .into_iter()
            .map(|(le, count)| Bucket { le, count })
            .collect(),
        site_count,
        sites: sites
            .into_iter()
            .map(|m| SiteReport {
                bytes_error: error_95(sampling, m.stats.bytes_variance),
                marks: m.marks,
                stack: m.stack,
                stats: m.stats,
                path: m.paths.path(),
                paths: m.paths,
                caused: m.caused,
            })
            .collect(),
        leaks: leaks
            .into_iter()
            .map(
                |MergedLeak {
                     leak: l,
                     stack,
                     marks,
                     paths,
                     resident_seen: seen,
                 }| {
                    // Resident bytes are known of the blocks seen; with sampling, scaled as they
                    // are; at most the leak's bytes (with --min-age, fewer than its site's).
                    let resident = if l.seen_bytes > 0 && l.seen_bytes != l.bytes {
                        (seen as f64 * l.bytes as f64 / l.seen_bytes as f64).round() as u64
                    } else {
                        seen
                    }
                    .min(l.bytes);
                    LeakReport {
                        stack,
                        count: l.count,
                        bytes: l.bytes,
                        oldest_age_ms: l.oldest_age_ms,
                        resident_bytes: resident,
                        virtual_bytes: l.bytes.saturating_sub(resident),
                        path: paths.path(),
                        paths,
                        bytes_error: error_95(sampling, l.bytes_variance),
                        marks,
                        kind: l.kind,
                        suppressed_by: None,
                    }
                },
            )
            .collect(),
        leaked_bytes,
        leaked_blocks,
        allocator_files,
        uprobe_links: String::new(),
        sampling: None,
        leak_suspects,
        leak_check,
        suppressed: Vec::new(),
        heap_resident_bytes: 0,
        resident_source: if resident.is_some() {
            "pagemap"
        } else {
            "first_touch"
        },
    }
}

/// [`build`] with every site symbolized anew by `symbolizer` (tests).
#[cfg(test)]
pub fn build_symbolizing(
    heap: &HeapStats,
    join: &Join,
    stacks: &dyn Stacks,
    symbolizer: &mut dyn crate::symbolize::Symbolizer,
    opts: BuildOptions,
) -> UserSummary {
    let mut frames = SiteFrames::default();
    let plumbing = crate::summary::plumbing::Plumbing::default();
    frames.update(0, &plumbing, &[], heap, stacks, symbolizer);
    build(heap, join, &frames, opts)
}

/// The listed sites that [`suspects::judge`] finds leaking, fastest growth first: each listed
/// site's series is the sum of its allocation sites' series.
fn suspects(
    heap: &HeapStats,
    trend: &SiteTrend,
    sites: &[Merged],
    group_of: &HashMap<SiteKey, usize>,
    now_ns: u64,
) -> Vec<LeakSuspect> {
    let points = trend.times().len();
    let group = |i: usize| group_of.get(&heap.sites()[i].0).copied();
    let mut series: HashMap<usize, Vec<u64>> = HashMap::new();
    for i in 0..heap.sites().len() {
        let Some(g) = group(i).filter(|_| trend.ever_live(i)) else {
            continue;
        };
        trend.add_series(i, series.entry(g).or_insert_with(|| vec![0; points]));
    }
    let mut blocks: HashMap<usize, Vec<(u64, u64)>> = HashMap::new();
    for (site, ts, size) in heap.live_block_times() {
        if let Some(g) = group(site)
            && series.contains_key(&g)
        {
            blocks.entry(g).or_default().push((ts, size));
        }
    }
    let mut out: Vec<LeakSuspect> = series
        .into_iter()
        .filter_map(|(g, s)| {
            let b = blocks.get(&g).map_or(&[][..], Vec::as_slice);
            let v = suspects::judge(trend.times(), &s, b, now_ns)?;
            let live_bytes = sites[g].stats.live_bytes;
            Some(LeakSuspect {
                stack: sites[g].stack.clone(),
                live_bytes,
                live_blocks: v.live_blocks,
                growth_bytes_per_min: v.growth_bytes_per_min,
                rank_correlation: v.rank_correlation,
                old_live_bytes: (live_bytes as f64 * v.old_fraction).round() as u64,
                age_ms: v.age_ms,
                points: v.points,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.growth_bytes_per_min
            .total_cmp(&a.growth_bytes_per_min)
            .then(b.live_bytes.cmp(&a.live_bytes))
    });
    out
}

#[cfg(test)]
mod tests {
    use tracer_common::AllocEvent;

    use crate::events::testing;

    use super::*;
    use crate::symbolize::{Frame, TableSymbolizer};

    fn frame(addr: u64, function: &str, line: u32) -> Frame {
        Frame {
            addr,
            function: Some(function.into()),
            file: Some("app.c".into()),
            line: Some(line),
            inlined: false,
            module: None,
            offset: None,
            build_id: None,
            plumbing: false,
        }
    }

    fn opts(trend: &SiteTrend, now_ns: u64) -> BuildOptions<'_> {
        BuildOptions {
            now_ns,
            min_age_ns: 0,
            trend,
            resident: None,
            allocator_files: vec![],
        }
    }

    /// A site that leaks 64 bytes every 10 ms, a cache that fills in its first 100 ms and
    /// holds, and a buffer allocated and freed: only the first is a suspect, at its rate.
    #[test]
    fn finds_the_growing_site_among_a_plateau_and_churn() {
        let mut heap = HeapStats::default();
        let mut trend = SiteTrend::default();
        let ms = 1_000_000u64;
        let mut cache = std::collections::VecDeque::new();
        for i in 0..300u64 {
            let ts = 1_000 * ms + i * 10 * ms;
            heap.on_alloc(&testing::alloc_call(testing::alloc(
                AllocFn::Malloc,
                64,
                0x1_0000 + i * 64,
                0x4000_0100,
                ts,
            )));
            // The cache keeps its newest 10 entries.
            let addr = 0x20_0000 + i * 256;
            heap.on_alloc(&testing::alloc_call(testing::alloc(
                AllocFn::Malloc,
                256,
                addr,
                0x4000_0200,
                ts,
            )));
            cache.push_back(addr);
            if cache.len() > 10 {
                let old = cache.pop_front().unwrap();
                heap.on_alloc(&testing::alloc_call(testing::alloc(
                    AllocFn::Free,
                    0,
                    old,
                    0,
                    ts,
                )));
            }
            heap.on_alloc(&testing::alloc_call(testing::alloc(
                AllocFn::Malloc,
                4096,
                0x90_0000,
                0x4000_0300,
                ts,
            )));
            heap.on_alloc(&testing::alloc_call(testing::alloc(
                AllocFn::Free,
                0,
                0x90_0000,
                0,
                ts,
            )));
            trend.observe(ts, &heap);
        }
        let now = 1_000 * ms + 3_000 * ms;
        let trend = trend.closed(now, &heap);
        let mut sym = TableSymbolizer::default();
        for (addr, function, line) in [
            (0x4000_0100, "leaky", 10),
            (0x4000_0200, "cache", 20),
            (0x4000_0300, "churn", 30),
        ] {
            sym.table.insert(addr, vec![frame(addr, function, line)]);
        }
        let stacks = HashMap::new();
        let u = build_symbolizing(
            &heap,
            &Join::default(),
            &stacks,
            &mut sym,
            opts(&trend, now),
        );
        assert_eq!(u.leak_suspects.len(), 1, "{:#?}", u.leak_suspects);
        let s = &u.leak_suspects[0];
        assert_eq!(s.stack[0].function.as_deref(), Some("leaky"));
        assert_eq!((s.live_bytes, s.live_blocks), (300 * 64, 300));
        // 64 bytes per 10 ms: 384,000 bytes a minute.
        assert!(
            (s.growth_bytes_per_min - 384_000.0).abs() < 4_000.0,
            "{s:?}"
        );
        assert!(s.old_live_bytes >= 300 * 64 * 4 / 10, "{s:?}");
        assert_eq!(s.age_ms.max, 3_000.0);
        // --min-age leaves the cache's young entries out of the leaks.
        let aged = build_symbolizing(
            &heap,
            &Join::default(),
            &stacks,
            &mut sym,
            BuildOptions {
                min_age_ns: 200 * ms,
                ..opts(&trend, now)
            },
        );
        let names: Vec<_> = aged
            .leaks
            .iter()
            .map(|l| l.stack[0].function.as_deref())
            .collect();
        assert_eq!(names, [Some("leaky")]);
        assert_eq!(aged.leaks[0].count, 281);
        assert_eq!((aged.leaked_blocks, aged.leaked_bytes), (281, 281 * 64));
        assert_eq!(u.leaked_blocks, 300 + 10);
    }

    #[test]
    fn splices_the_direct_caller_and_drops_the_allocator_frame() {
        let stacks = HashMap::from([(3, vec![0x7f00_0000_1234, 0x4000_0200, 0x4000_0300])]);
        let key = SiteKey {
            stack_id: 3,
            caller: 0x4000_0100,
        };
        assert_eq!(
            site_addresses(&key, &stacks),
            [0x4000_0100, 0x4000_0200, 0x4000_0300]
        );
        // No stack: the caller alone.
        let key = SiteKey {
            stack_id: -1,
            caller: 0x4000_0100,
        };
        assert_eq!(site_addresses(&key, &stacks), [0x4000_0100]);
    }

    #[test]
    fn builds_sites_and_leaks_with_symbols() {
        let mut heap = HeapStats::default();
        let ev = |func, size, ptr, caller| testing::alloc(func, size, ptr, caller, 1_000_000);
        heap.on_alloc(&testing::alloc_call(ev(
            AllocFn::Malloc,
            100,
            0xa0,
            0x4000_0100,
        )));
        heap.on_alloc(&testing::alloc_call(ev(
            AllocFn::Malloc,
            5000,
            0xb0,
            0x4000_0180,
        )));
        heap.on_alloc(&testing::alloc_call(ev(AllocFn::Free, 0, 0xa0, 0)));
        let stacks = HashMap::from([(1, vec![0x7f00_0000_1234, 0x4000_0900])]);
        let mut sym = TableSymbolizer::default();
        sym.table
            .insert(0x4000_0100, vec![frame(0x4000_0100, "small", 10)]);
        sym.table
            .insert(0x4000_0180, vec![frame(0x4000_0180, "big", 20)]);
        sym.table
            .insert(0x4000_0900, vec![frame(0x4000_0900, "main", 30)]);

        let join = Join::default();
        let trend = SiteTrend::default();
        let u = build_symbolizing(
            &heap,
            &join,
            &stacks,
            &mut sym,
            BuildOptions {
                allocator_files: vec!["/lib/libc.so.6".into()],
                ..opts(&trend, 3_000_000)
            },
        );
        assert_eq!(
            u.malloc,
            FuncStats {
                calls: 2,
                bytes: 5100
            }
        );
        assert_eq!(u.free.calls, 1);
        assert_eq!(u.site_count, 2);
        assert_eq!(u.sites[0].stack[0].function.as_deref(), Some("big"));
        assert_eq!(u.sites[0].stack[1].function.as_deref(), Some("main"));
        assert_eq!(u.sites[1].stats.frees, 1);
        assert_eq!(u.leaks.len(), 1);
        assert_eq!((u.leaks[0].count, u.leaks[0].bytes), (1, 5000));
        assert_eq!(u.leaks[0].stack[0].line, Some(20));
        assert_eq!(u.leaks[0].oldest_age_ms, 2.0);
        assert_eq!(
            u.size_histogram.first(),
            Some(&Bucket { le: 128, count: 1 })
        );
        assert_eq!(
            u.size_histogram.last(),
            Some(&Bucket { le: 8192, count: 1 })
        );

        let json = serde_json::to_value(&u).unwrap();
        assert_eq!(json["sites"][0]["stack"][0]["addr"], "0x40000180");
        assert_eq!(json["sites"][0]["stack"][0]["file"], "app.c");
        assert_eq!(json["sites"][0]["allocs"], 1);
        assert_eq!(json["sites"][0]["live_bytes"], 5000);
        assert!(json["sites"][0].get("live_count").is_none());
        assert_eq!(json["free"]["unknown"], 0);
        assert_eq!(json["operator_new"]["calls"], 0);

        // Every site is in the section: reports for people list `--max-sites` of them
        // (`Summary::listed`), folded stacks and pprof all.
        let all = build_symbolizing(&heap, &join, &stacks, &mut sym, opts(&trend, 3_000_000));
        assert_eq!((all.site_count, all.sites.len()), (2, 2));
    }

    /// Two return addresses on one line, and a stack id that differs only below it: one site,
    /// its counts, bytes and leaks summed; another function stays apart.
    #[test]
    fn sites_resolving_to_the_same_frames_are_one() {
        let mut heap = HeapStats::default();
        let alloc = |size, ptr, caller, stack_id| AllocEvent {
            stack_id,
            ..testing::alloc(AllocFn::Malloc, size, ptr, caller, 1_000_000)
        };
        heap.on_alloc(&testing::alloc_call(alloc(100, 0xa0, 0x4000_0100, 1)));
        heap.on_alloc(&testing::alloc_call(alloc(200, 0xb0, 0x4000_0104, 2)));
        heap.on_alloc(&testing::alloc_call(alloc(400, 0xc0, 0x4000_0100, 3)));
        heap.on_alloc(&testing::alloc_call(alloc(50, 0xd0, 0x4000_0200, 1)));
        heap.on_alloc(&testing::alloc_call(testing::alloc(
            AllocFn::Free,
            0,
            0xb0,
            0,
            1_000_000,
        )));
        // Stack 3 walked on into a frame stack 1 and 2 do not have (the walk's first frame,
        // inside malloc, is dropped).
        let stacks = HashMap::from([
            (1, vec![0x7f00_0000_1234, 0x4000_0900]),
            (2, vec![0x7f00_0000_1234, 0x4000_0900]),
            (3, vec![0x7f00_0000_1234, 0x4000_0900, 0x4000_0a00]),
        ]);
        let mut sym = TableSymbolizer::default();
        for (addr, function, line) in [
            (0x4000_0100, "build", 10),
            (0x4000_0104, "build", 10),
            (0x4000_0200, "other", 20),
            (0x4000_0900, "main", 30),
            (0x4000_0a00, "start", 40),
        ] {
            sym.table.insert(addr, vec![frame(addr, function, line)]);
        }
        let trend = SiteTrend::default();
        let u = build_symbolizing(
            &heap,
            &Join::default(),
            &stacks,
            &mut sym,
            opts(&trend, 3_000_000),
        );
        assert_eq!(u.site_count, 3, "{:#?}", u.sites);
        let build_main = &u.sites[1];
        let names: Vec<_> = build_main
            .stack
            .iter()
            .map(|f| f.function.as_deref())
            .collect();
        assert_eq!(names, [Some("build"), Some("main")]);
        assert_eq!(
            (
                build_main.stats.allocs,
                build_main.stats.bytes,
                build_main.stats.frees
            ),
            (2, 300, 1)
        );
        assert_eq!(build_main.stats.live_bytes, 100);
        // The longer stack stays its own site, listed first for its 400 bytes.
        assert_eq!(u.sites[0].stats.bytes, 400);
        assert_eq!(u.sites[0].stack.len(), 3);
        assert_eq!(u.sites[2].stack[0].function.as_deref(), Some("other"));
        // The leaks follow the same sites.
        let leak = |function: &str, depth: usize| {
            u.leaks
                .iter()
                .find(|l| {
                    l.stack[0].function.as_deref() == Some(function) && l.stack.len() == depth
                })
                .unwrap_or_else(|| panic!("no leak in {function}: {:#?}", u.leaks))
        };
        assert_eq!((leak("build", 2).count, leak("build", 2).bytes), (1, 100));
        assert_eq!(leak("build", 3).bytes, 400);
        assert_eq!(u.leaks.len(), 3);
    }

    /// Resident means one thing: without the kernel's pages (the process was gone), a site's
    /// resident bytes and its leak's are both its live blocks' share of the pages first
    /// touched while traced; the small blocks on one page share it, a large block has its own.
    #[test]
    fn a_site_and_its_leak_have_one_resident() {
        let mut heap = HeapStats::default();
        for i in 0..3u64 {
            heap.on_alloc(&testing::alloc_call(testing::alloc(
                AllocFn::Calloc,
                1000,
                0x10_0000 + i * 1000,
                0x4000_0100,
                1_000_000,
            )));
        }
        heap.on_alloc(&testing::alloc_call(testing::alloc(
            AllocFn::Malloc,
            64 << 10,
            0x20_0000,
            0x4000_0200,
            1_000_000,
        )));
        let mut join = Join::default();
        let mut pages = PageSet {
            page_size: 4096,
            runs: Vec::new(),
        };
        pages.add_range(0x10_0000, [true]);
        pages.add_range(0x20_0000, std::iter::repeat_n(true, 16));
        join.seed_resident(&pages, &crate::attribution::AddressSpace::default());
        let trend = SiteTrend::default();
        let mut sym = TableSymbolizer::default();
        sym.table
            .insert(0x4000_0100, vec![frame(0x4000_0100, "small", 1)]);
        sym.table
            .insert(0x4000_0200, vec![frame(0x4000_0200, "big", 2)]);
        let u = build_symbolizing(
            &heap,
            &join,
            &HashMap::new(),
            &mut sym,
            opts(&trend, 3_000_000),
        );
        let resident = |function: &str| {
            let site = u
                .sites
                .iter()
                .find(|s| s.stack[0].function.as_deref() == Some(function));
            let leak = u
                .leaks
                .iter()
                .find(|l| l.stack[0].function.as_deref() == Some(function));
            (
                site.unwrap().paths.resident_bytes,
                leak.unwrap().resident_bytes,
            )
        };
        // The three calloc blocks are the only live bytes on their page: resident, all 3000
        // of their bytes (the page's free rest is the heap's, retained).
        assert_eq!(resident("small"), (3000, 3000));
        assert_eq!(resident("big"), (64 << 10, 64 << 10));
    }
}
