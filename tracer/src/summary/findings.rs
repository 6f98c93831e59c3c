//! Findings: what the numbers say, in plain words, with the evidence and what to do.
//!
//! Each finding is derived from the summary (and, for the heap's top, from the live blocks),
//! carries the numbers it rests on, and is ordered by the bytes at stake, so the first is the
//! one worth reading. The thresholds below keep a clean program free of findings.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::{Value, json};

use crate::events::LeakKind;

use super::{
    Summary, human_bytes,
    label::{self, Frame, Stack},
    merge::{FramesKey, frames_key},
    user::SiteReport,
};

/// `retained_heap`: at least this many resident bytes hold nothing live...
pub const RETAINED_MIN_BYTES: u64 = 1 << 20;
/// ...and they are at least this share of the resident heap.
pub const RETAINED_MIN_SHARE: f64 = 0.25;
/// `mmap_churn`: a site whose blocks cost at least this many mmaps, nearly all freed again.
pub const CHURN_MIN_MMAPS: u64 = 16;
/// `realloc_moves`: a site whose reallocs moved its block at least this often.
pub const REALLOC_MIN_MOVES: u64 = 32;
/// `short_lived_hotspot`: a site with at least this many allocations, at least
/// [`SHORT_LIVED_SHARE`] of them freed before the thread's next allocation.
pub const SHORT_LIVED_MIN_ALLOCS: u64 = 10_000;
pub const SHORT_LIVED_SHARE: f64 = 0.5;
/// `leak`: a site that left at least this many bytes allocated at the end.
pub const LEAK_MIN_BYTES: u64 = 64 << 10;
/// `arena_sprawl`: thread arenas mapping at least this much address space...
pub const ARENA_MIN_MAPPED: u64 = 256 << 20;
/// ...of which at most this share is resident.
pub const ARENA_MAX_RESIDENT_SHARE: f64 = 0.1;
/// `kernel_overhead`: at least this many bytes of slab objects made for the process live at once.
pub const KERNEL_MIN_SLAB_BYTES: u64 = 512 << 10;

/// What a finding says. Each kind is one check in [`CHECKS`]; serialized as its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    RetainedHeap,
    MmapChurn,
    ReallocMoves,
    ShortLivedHotspot,
    Leak,
    LeakSuspect,
    ArenaSprawl,
    KernelOverhead,
}

impl FindingKind {
    /// As the JSON and the text name it.
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::RetainedHeap => "retained_heap",
            FindingKind::MmapChurn => "mmap_churn",
            FindingKind::ReallocMoves => "realloc_moves",
            FindingKind::ShortLivedHotspot => "short_lived_hotspot",
            FindingKind::Leak => "leak",
            FindingKind::LeakSuspect => "leak_suspect",
            FindingKind::ArenaSprawl => "arena_sprawl",
            FindingKind::KernelOverhead => "kernel_overhead",
        }
    }
}

fn no_frames(stack: &Stack) -> bool {
    stack.is_empty()
}

impl std::fmt::Display for FindingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl PartialEq<&str> for FindingKind {
    fn eq(&self, other: &&str) -> bool {
        self.name() == *other
    }
}

/// A check: every finding of its kind in a summary.
type Check = fn(&Summary, &HeapState) -> Vec<Finding>;

/// Every kind and its check, in no particular order (findings are ordered by the bytes at
/// stake): a new kind is a function, its entry here and its test.
pub const CHECKS: [(FindingKind, Check); 8] = [
    (FindingKind::RetainedHeap, retained_heap),
    (FindingKind::MmapChurn, mmap_churn),
    (FindingKind::ReallocMoves, realloc_moves),
    (FindingKind::ShortLivedHotspot, short_lived_hotspot),
    (FindingKind::Leak, leak),
    (FindingKind::LeakSuspect, leak_suspect),
    (FindingKind::ArenaSprawl, arena_sprawl),
    (FindingKind::KernelOverhead, kernel_overhead),
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// `high` (64 MiB or more at stake), `medium` (1 MiB or more) or `low`.
    pub severity: &'static str,
    /// The bytes at stake, over all its sites: what orders the findings.
    pub bytes: u64,
    /// The call site to blame, when there is one: of its sites, the one with most at stake.
    /// `message` and `evidence` are about it.
    #[serde(skip_serializing_if = "no_frames")]
    pub site: Stack,
    /// The next sites with the same finding, most at stake first (at most [`ALSO_LISTED`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<AlsoSite>,
    /// Sites with the same finding beyond `site` and `also`.
    #[serde(skip_serializing_if = "is_zero")]
    pub more: usize,
    /// The numbers it rests on (an object).
    pub evidence: Value,
    pub message: String,
    pub suggestion: String,
    /// The process it is about, in the totals of a `--follow` run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The most memory its process held at once: what its severity weighs its bytes against.
    #[serde(skip)]
    pub peak: u64,
}

/// Another site a finding is about.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlsoSite {
    pub site: Stack,
    /// Its bytes at stake.
    pub bytes: u64,
}

/// How many sites a finding names besides its own; the rest are counted.
pub const ALSO_LISTED: usize = 3;

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The heap as the process left it, which findings need and the summary does not hold.
#[derive(Debug, Clone, Default)]
pub struct HeapState {
    pub page_size: u64,
    /// The live block highest in the brk heap: its size and its stack.
    pub heap_top: Option<(u64, Vec<Frame>)>,
    /// Resident bytes of the brk heap and thread arenas (pages first touched while traced),
    /// and the live bytes allocated there.
    pub heap_resident: u64,
    pub heap_live: u64,
    /// Address space of thread arenas (reserved or committed), and resident bytes there.
    pub arena_mapped: u64,
    pub arena_resident: u64,
    /// Threads that called the allocator.
    pub threads: usize,
}

/// How much a finding matters: its bytes at stake in absolute terms and as a share of the
/// most memory the process held at once (`peak`, 0 when not known). 64 MiB is high unless it
/// is under 5% of the process, and 4 MiB is high when it is a quarter of it; 1 MiB is medium
/// unless under 1%, and 256 KiB is medium when it is a tenth.
pub fn severity(bytes: u64, peak: u64) -> &'static str {
    let share = (peak > 0).then(|| bytes as f64 / peak as f64);
    let at_least = |min: u64, share_min: f64| bytes >= min && share.is_none_or(|s| s >= share_min);
    let large_share =
        |min: u64, share_min: f64| bytes >= min && share.is_some_and(|s| s >= share_min);
    if at_least(64 << 20, 0.05) || large_share(4 << 20, 0.25) {
        "high"
    } else if at_least(1 << 20, 0.01) || large_share(256 << 10, 0.10) {
        "medium"
    } else {
        "low"
    }
}

/// The most memory the process held at once, as far as the run saw: its live heap's peak, or
/// its resident memory and kernel objects at the timeline's highest point.
fn peak_footprint(s: &Summary) -> u64 {
    let timeline = s
        .timeline
        .points
        .iter()
        .map(|p| p.sample.resident.saturating_add(p.sample.slab))
        .max()
        .unwrap_or(0);
    s.user.peak_live_bytes.max(timeline)
}

fn finding(
    kind: FindingKind,
    bytes: u64,
    site: Stack,
    evidence: Value,
    message: String,
    suggestion: &str,
) -> Finding {
    Finding {
        kind,
        severity: severity(bytes, 0),
        bytes,
        site,
        evidence,
        message,
        suggestion: suggestion.into(),
        also: Vec::new(),
        more: 0,
        pid: None,
        peak: 0,
    }
}

fn at(s: &SiteReport) -> String {
    label::stack(&s.stack, 2)
}

/// Every finding of `s`, most bytes at stake first.
pub fn find(s: &Summary, heap: &HeapState) -> Vec<Finding> {
    let peak = peak_footprint(s);
    let found: Vec<Finding> = CHECKS
        .iter()
        .flat_map(|(_, check)| check(s, heap))
        .map(|mut f| {
            f.peak = peak;
            f
        })
        .collect();
    group(found)
}

/// One finding per kind (and process): a kind's findings about sites become the one with most
/// at stake, naming the next [`ALSO_LISTED`] sites and counting the rest; its bytes, and so
/// its severity, are all of theirs. A site is never both a leak and a leak suspect: a leak the
/// leak check found lost stays a leak, otherwise the suspect says more. Most at stake first.
pub fn group(found: Vec<Finding>) -> Vec<Finding> {
    // A leak check's verdict (lost, indirectly lost) is surer than growth: such a site is a
    // leak and not a suspect; otherwise the suspect says more than the blocks left.
    let lost: HashSet<(FramesKey, Option<u32>)> = found
        .iter()
        .filter(|f| {
            f.kind == FindingKind::Leak
                && matches!(f.evidence["kind"].as_str(), Some("lost" | "indirect"))
        })
        .map(|f| (frames_key(&f.site), f.pid))
        .collect();
    let suspects: HashSet<(FramesKey, Option<u32>)> = found
        .iter()
        .filter(|f| f.kind == FindingKind::LeakSuspect)
        .map(|f| (frames_key(&f.site), f.pid))
        .filter(|k| !lost.contains(k))
        .collect();
    let mut found: Vec<Finding> = found
        .into_iter()
        .filter(|f| {
            let key = (frames_key(&f.site), f.pid);
            match f.kind {
                FindingKind::Leak => !suspects.contains(&key),
                FindingKind::LeakSuspect => !lost.contains(&key),
                _ => true,
            }
        })
        .collect();
    sort(&mut found);
    let mut out: Vec<Finding> = Vec::new();
    // Leaks group by what the leak check found them to be too.
    let cause = |f: &Finding| f.evidence["kind"].as_str().map(str::to_string);
    let mut of_kind: HashMap<(FindingKind, Option<u32>, Option<String>), usize> = HashMap::new();
    for f in found {
        if f.site.is_empty() {
            out.push(f);
            continue;
        }
        match of_kind.get(&(f.kind, f.pid, cause(&f))) {
            Some(&i) => {
                let g = &mut out[i];
                g.bytes = g.bytes.saturating_add(f.bytes);
                if g.also.len() < ALSO_LISTED {
                    g.also.push(AlsoSite {
                        site: f.site,
                        bytes: f.bytes,
                    });
                } else {
                    g.more += 1;
                }
            }
            None => {
                of_kind.insert((f.kind, f.pid, cause(&f)), out.len());
                out.push(f);
            }
        }
    }
    for f in &mut out {
        f.severity = match f.evidence["kind"].as_str() {
            Some("lost" | "indirect") => at_least_medium(f.bytes, f.peak),
            Some("possible") => "low",
            _ => severity(f.bytes, f.peak),
        };
    }
    sort(&mut out);
    out
}

/// Most bytes at stake first; then by kind's name.
pub fn sort(findings: &mut [Finding]) {
    findings.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.kind.name().cmp(b.kind.name())));
}

/// Freed memory the allocator keeps: resident heap pages that hold no live block.
fn retained_heap(s: &Summary, heap: &HeapState) -> Vec<Finding> {
    let mut out = Vec::new();
    let retained = heap.heap_resident.saturating_sub(heap.heap_live);
    let live = heap.heap_live;
    if retained >= RETAINED_MIN_BYTES
        && retained as f64 >= RETAINED_MIN_SHARE * (retained as f64 + live as f64)
    {
        let (why, site) = match &heap.heap_top {
            Some((size, stack)) => (
                format!(
                    " The top of the brk heap is held by a live {} block from {}, so `brk` cannot \
                     shrink below it.",
                    human_bytes(*size),
                    label::stack(stack, 2)
                ),
                Stack::from(&stack[..]),
            ),
            None => (
                " Nothing live pins the top: the free chunks stay below glibc's trim threshold \
                 or between live blocks."
                    .into(),
                Stack::default(),
            ),
        };
        out.push(finding(
            FindingKind::RetainedHeap,
            retained,
            site,
            json!({
                "retained_resident_bytes": retained,
                "resident_bytes": heap.heap_resident,
                "live_bytes": live,
                "peak_live_bytes": s.user.peak_live_bytes,
                "page_size": heap.page_size,
            }),
            format!(
                "{} of heap pages are resident but hold no live allocation (live: {}): memory \
                 freed to malloc and kept.{why}",
                human_bytes(retained),
                human_bytes(live)
            ),
            "Call malloc_trim(0) after freeing a large working set (it returns free pages \
             from the whole heap, not only its top); lower M_TRIM_THRESHOLD (mallopt or \
             GLIBC_TUNABLES=glibc.malloc.trim_threshold); allocate long-lived blocks before the \
             temporary ones, or from their own arena or mmap.",
        ));
    }

    out
}

/// Blocks above the mmap threshold, each an mmap, a munmap and faults, again and again.
fn mmap_churn(s: &Summary, _: &HeapState) -> Vec<Finding> {
    let mut out = Vec::new();
    for site in &s.user.sites {
        let st = &site.stats;
        let c = &site.caused;
        if c.mmap_calls >= CHURN_MIN_MMAPS
            && site.paths.mmap_bytes > 0
            && st.frees as f64 >= 0.9 * st.allocs as f64
        {
            out.push(finding(
                FindingKind::MmapChurn,
                c.mmap_bytes,
                site.stack.clone(),
                json!({
                    "allocs": st.allocs,
                    "bytes": st.bytes,
                    "frees": st.frees,
                    "mmap_calls": c.mmap_calls,
                    "page_faults": c.page_faults,
                    "mmapped_bytes": c.mmap_bytes,
                }),
                format!(
                    "{} allocated and freed {} blocks of {} each through their own mmap: {} \
                     mmaps, a munmap at each free, and {} page faults to touch fresh pages \
                     every time.",
                    at(site),
                    st.allocs,
                    human_bytes(st.bytes / st.allocs.max(1)),
                    c.mmap_calls,
                    c.page_faults
                ),
                "Reuse the buffer across iterations, or raise the mmap threshold \
                 (mallopt(M_MMAP_THRESHOLD, n) or GLIBC_TUNABLES=glibc.malloc.mmap_threshold) \
                 above the block size. glibc raises it by itself to the size of a freed mmapped \
                 block, but only up to 32 MiB, and not at all once M_MMAP_THRESHOLD, \
                 M_TRIM_THRESHOLD, M_TOP_PAD or M_MMAP_MAX was set.",
            ));
        }
    }
    out
}

/// A block grown by realloc, moved and copied again and again.
/// How many blocks realloc moved, how often: `grew its block by realloc and moved it 99
/// times`, or `grew 5000 blocks by realloc and moved them 5000 times (at most once a block)`.
fn moved_blocks(st: &crate::aggregate::heap::SiteStats) -> String {
    let times = |n: u64| match n {
        1 => "once".to_string(),
        n => format!("{n} times"),
    };
    match st.realloc_moved_blocks {
        0 | 1 => format!(
            "grew its block by realloc and moved it {}",
            times(st.realloc_moves)
        ),
        n => format!(
            "grew {n} blocks by realloc and moved them {} (at most {} a block)",
            times(st.realloc_moves),
            times(st.realloc_most_moves)
        ),
    }
}

fn realloc_moves(s: &Summary, _: &HeapState) -> Vec<Finding> {
    let mut out = Vec::new();
    for site in &s.user.sites {
        let st = &site.stats;
        if st.realloc_moves >= REALLOC_MIN_MOVES {
            let factor = st.realloc_moved_to_bytes as f64 / st.realloc_copied_bytes.max(1) as f64;
            out.push(finding(
                FindingKind::ReallocMoves,
                st.realloc_copied_bytes,
                site.stack.clone(),
                json!({
                    "moves": st.realloc_moves,
                    "moved_blocks": st.realloc_moved_blocks,
                    "most_moves_of_a_block": st.realloc_most_moves,
                    "copied_bytes": st.realloc_copied_bytes,
                    "growth_factor": (factor * 100.0).round() / 100.0,
                }),
                format!(
                    "{} {}, copying {} in all (each move {:.2}x the size before).",
                    at(site),
                    moved_blocks(st),
                    human_bytes(st.realloc_copied_bytes),
                    factor
                ),
                "Reserve the capacity up front, or grow geometrically (doubling) so that moves \
                 become rare; a growth factor near 1 copies the whole block on almost every \
                 append.",
            ));
        }
    }
    out
}

/// Many allocations freed before the thread's next: a malloc and a free for brief use.
fn short_lived_hotspot(s: &Summary, _: &HeapState) -> Vec<Finding> {
    let mut out = Vec::new();
    for site in &s.user.sites {
        let st = &site.stats;
        if st.allocs >= SHORT_LIVED_MIN_ALLOCS
            && st.temporary as f64 >= SHORT_LIVED_SHARE * st.allocs as f64
        {
            let temp_bytes = (st.bytes as f64 * st.temporary as f64 / st.allocs as f64) as u64;
            // What they cost: the run's own measure of this site's calls, a malloc and a free
            // (taken to cost as much) per temporary block.
            let mean_call_ns = st.call_ns / st.allocs.max(1);
            let estimated_ns = st.temporary.saturating_mul(2).saturating_mul(mean_call_ns);
            out.push(finding(
                FindingKind::ShortLivedHotspot,
                temp_bytes,
                site.stack.clone(),
                json!({
                    "allocs": st.allocs,
                    "temporary": st.temporary,
                    "bytes": st.bytes,
                    "call_ns": st.call_ns,
                    "mean_call_ns": mean_call_ns,
                    "estimated_ns": estimated_ns,
                }),
                format!(
                    "{} made {} allocations, {} of them freed before the thread's next \
                     allocation: a malloc and a free each, for memory used only briefly, about \
                     {:.1} ms in all ({mean_call_ns} ns per call as measured here, the probes' \
                     own cost included, and as much again per free).",
                    at(site),
                    st.allocs,
                    st.temporary,
                    estimated_ns as f64 / 1e6
                ),
                "Use a stack buffer or a buffer reused across calls, or an arena freed at \
                 once, for objects that do not outlive the function.",
            ));
        }
    }
    out
}

/// Sites that left blocks behind: with a leak check, those it found lost or indirectly lost
/// (whatever their size: no pointer to them is left), and possibly lost ones at low severity,
/// never those still reachable; without one, sites that left many bytes allocated at the end.
fn leak(s: &Summary, _: &HeapState) -> Vec<Finding> {
    let mut out = Vec::new();
    for leak in s.user.leaks.iter().filter(|l| l.suppressed_by.is_none()) {
        let what = match leak.kind {
            None if leak.bytes >= LEAK_MIN_BYTES => "allocated at the end",
            Some(LeakKind::Lost) => "definitely lost (no pointer to them is left)",
            Some(LeakKind::Indirect) => "indirectly lost (pointed to only from lost blocks)",
            Some(LeakKind::Possible) => "possibly lost (pointed to only into their middle)",
            _ => continue,
        };
        let mut evidence = json!({
                "blocks": leak.count,
                "bytes": leak.bytes,
                "resident_bytes": leak.resident_bytes,
                "never_touched_bytes": leak.virtual_bytes,
                "oldest_age_ms": leak.oldest_age_ms,
        });
        if let Some(kind) = leak.kind {
            evidence["kind"] = json!(kind);
        }
        out.push(finding(
            FindingKind::Leak,
            leak.bytes,
            leak.stack.clone(),
            evidence,
            format!(
                "{} left {} in {} {what} ({} resident, {} never touched).",
                label::stack(&leak.stack, 2),
                human_bytes(leak.bytes),
                label::count(leak.count, "block", "blocks"),
                human_bytes(leak.resident_bytes),
                human_bytes(leak.virtual_bytes)
            ),
            "Free them, or make their owner explicit; memory never touched costs address \
             space only, resident memory costs RAM.",
        ));
    }
    out
}

/// A block nothing points to is a bug whatever its size.
fn at_least_medium(bytes: u64, peak: u64) -> &'static str {
    match severity(bytes, peak) {
        "low" => "medium",
        s => s,
    }
}

/// `leak_suspect`: a growth rate is stated, and projected ten minutes on, only for a site
/// watched growing at least this long; a shorter run's rate is not one (a 160 ms run is not
/// `[high] 16.0 MiB/min`).
pub const MIN_RATE_MS: f64 = 2_000.0;

/// Sites whose live bytes keep growing.
fn leak_suspect(s: &Summary, _: &HeapState) -> Vec<Finding> {
    let mut out = Vec::new();
    for x in &s.user.leak_suspects {
        let watched_ms = x.points.last().map_or(0.0, |p| p.0);
        let rate = x.growth_bytes_per_min.max(0.0);
        let (stake, message) = if watched_ms >= MIN_RATE_MS {
            // What it would add in ten more minutes.
            (
                ((rate * 10.0) as u64).max(x.live_bytes),
                format!(
                    "{} keeps growing: {}/min, {} live now, its old blocks still alive.",
                    label::stack(&x.stack, 2),
                    human_bytes(rate as u64),
                    human_bytes(x.live_bytes)
                ),
            )
        } else {
            (
                x.live_bytes,
                format!(
                    "{} kept growing while watched ({}): {} live now, its old blocks still \
                     alive. Too short a run for a rate.",
                    label::stack(&x.stack, 2),
                    label::human_duration(watched_ms),
                    human_bytes(x.live_bytes)
                ),
            )
        };
        out.push(finding(
            FindingKind::LeakSuspect,
            stake,
            x.stack.clone(),
            json!({
                "live_bytes": x.live_bytes,
                "live_blocks": x.live_blocks,
                "growth_bytes_per_min": x.growth_bytes_per_min.round(),
                "watched_ms": watched_ms.round(),
                "old_live_bytes": x.old_live_bytes,
                "median_age_ms": x.age_ms.median,
            }),
            message,
            "Find what holds these blocks (a cache without eviction, a list only appended \
             to, a missing free on a path); watch it with --interval or tracer top.",
        ));
    }
    out
}

/// Threads' arenas: address space reserved against memory used.
fn arena_sprawl(s: &Summary, heap: &HeapState) -> Vec<Finding> {
    let mut out = Vec::new();
    if heap.arena_mapped >= ARENA_MIN_MAPPED
        && (heap.arena_resident as f64) <= ARENA_MAX_RESIDENT_SHARE * heap.arena_mapped as f64
    {
        let threads = heap.threads;
        out.push(finding(
            FindingKind::ArenaSprawl,
            heap.arena_mapped,
            Stack::default(),
            json!({
                "arena_mapped_bytes": heap.arena_mapped,
                "arena_resident_bytes": heap.arena_resident,
                "thread_arena_allocated_bytes": s.paths.thread_arena.bytes,
                "threads": threads,
            }),
            format!(
                "Thread arenas map {} of address space for {} threads, of which {} is resident \
                 ({} allocated there).",
                human_bytes(heap.arena_mapped),
                threads,
                human_bytes(heap.arena_resident),
                human_bytes(s.paths.thread_arena.bytes)
            ),
            "Reserved but untouched memory costs no RAM, but it counts in VSZ, in overcommit and \
             in container limits on address space; MALLOC_ARENA_MAX (GLIBC_TUNABLES=\
             glibc.malloc.arena_max) caps the arenas (8 times the cores by default).",
        ));
    }
    out
}

/// What the process costs the kernel in slab objects: at their most (a process that exits
/// frees them, some a grace period later, so the end alone depends on timing).
/// What the kernel made its objects for, judged from the caches that made most of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum KernelObjects {
    Mappings,
    Sockets,
    Files,
    Other,
}

impl KernelObjects {
    /// The family of one cache, by its name.
    fn of_cache(cache: &str) -> KernelObjects {
        const MAPPINGS: &[&str] = &["vm_area_struct", "maple_node", "anon_vma", "mm_struct"];
        const SOCKETS: &[&str] = &["skbuff", "sock", "TCP", "UDP", "request_sock", "tw_sock"];
        const FILES: &[&str] = &[
            "filp",
            "dentry",
            "names_cache",
            "lsm_file_cache",
            "file_lock",
        ];
        let is = |names: &[&str]| names.iter().any(|n| cache.starts_with(n));
        if is(MAPPINGS) {
            KernelObjects::Mappings
        } else if is(SOCKETS) {
            KernelObjects::Sockets
        } else if is(FILES) || cache.ends_with("inode_cache") {
            KernelObjects::Files
        } else {
            KernelObjects::Other
        }
    }

    /// The family that made most of the objects of `caches` (cache, allocations).
    fn of(caches: &[(&String, u64)]) -> KernelObjects {
        let mut made: HashMap<KernelObjects, u64> = HashMap::new();
        for (cache, n) in caches {
            let e = made.entry(KernelObjects::of_cache(cache)).or_default();
            *e = e.saturating_add(*n);
        }
        made.into_iter()
            .max_by_key(|&(family, n)| (n, family != KernelObjects::Other))
            .map_or(KernelObjects::Other, |(family, _)| family)
    }

    fn name(self) -> &'static str {
        match self {
            KernelObjects::Mappings => "mappings",
            KernelObjects::Sockets => "sockets",
            KernelObjects::Files => "files",
            KernelObjects::Other => "other",
        }
    }

    fn what(self) -> &'static str {
        match self {
            KernelObjects::Mappings => {
                "its mappings, each a VMA, maple-tree nodes and reverse-map links"
            }
            KernelObjects::Sockets => "socket buffers and sockets",
            KernelObjects::Files => "open files and path lookups",
            KernelObjects::Other => "objects of the caches below",
        }
    }

    fn advice(self) -> &'static str {
        match self {
            KernelObjects::Mappings => {
                "Each mapping costs the kernel objects of its own (a VMA, maple-tree nodes, page \
                 tables once touched): fewer, larger mappings (one pool instead of many small \
                 mmaps) cost it less."
            }
            KernelObjects::Sockets => {
                "Each packet queued and each connection costs the kernel objects: batch small \
                 writes (one larger send, writev, MSG_MORE or TCP_CORK), read in larger chunks, \
                 and keep connections open instead of opening new ones."
            }
            KernelObjects::Files => {
                "Each open file and path lookup costs the kernel objects: keep descriptors open \
                 instead of reopening, and look a path up once."
            }
            KernelObjects::Other => {
                "The caches named are what the kernel made for this process; the syscalls that \
                 made them (see --kernel-stacks) are where to cut."
            }
        }
    }
}

fn kernel_overhead(s: &Summary, _: &HeapState) -> Vec<Finding> {
    let mut out = Vec::new();
    let slab = &s.kernel.slab;
    let peak = s
        .timeline
        .points
        .iter()
        .map(|p| p.sample.slab)
        .fold(slab.live_bytes_at_end, u64::max);
    if peak >= KERNEL_MIN_SLAB_BYTES {
        let mut caches: Vec<(&String, u64)> = slab
            .by_cache
            .iter()
            .map(|(name, c)| (name, c.allocs))
            .filter(|(_, n)| *n > 0)
            .collect();
        caches.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        caches.truncate(5);
        let top: Vec<String> = caches.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let objects = KernelObjects::of(&caches);
        out.push(finding(
            FindingKind::KernelOverhead,
            peak,
            Stack::default(),
            json!({
                "slab_peak_bytes": peak,
                "slab_live_bytes": slab.live_bytes_at_end,
                "slab_live_objects": slab.live_at_end,
                "mmap_calls": s.syscalls.mmap.calls,
                "objects_for": objects.name(),
                "top_caches": caches.iter().map(|(c, n)| json!({"cache": c, "allocations": n})).collect::<Vec<_>>(),
            }),
            format!(
                "The kernel held up to {} of slab objects made for this process ({} at the end), \
                 mostly for {} (made most: {}).",
                human_bytes(peak),
                human_bytes(slab.live_bytes_at_end),
                objects.what(),
                top.join(", ")
            ),
            objects.advice(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{aggregate::heap::SiteStats, summary::tests::sample_summary};

    fn site(f: &str, stats: SiteStats) -> SiteReport {
        SiteReport {
            stack: vec![Frame {
                function: Some(f.into()),
                ..Frame::unknown(0x1000)
            }]
            .into(),
            stats,
            path: "brk",
            paths: Default::default(),
            caused: Default::default(),
            bytes_error: None,
            marks: Default::default(),
        }
    }

    /// Each kind has one check, and each check finds only its own kind (on a summary that
    /// makes every check fire, `thresholds_order_and_evidence`'s).
    #[test]
    fn each_kind_is_one_check() {
        let kinds: HashSet<FindingKind> = CHECKS.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds.len(), CHECKS.len());
        let names: HashSet<&str> = kinds.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), CHECKS.len());
        let (s, heap) = firing();
        for (kind, check) in CHECKS {
            assert!(check(&s, &heap).iter().all(|f| f.kind == kind), "{kind}");
        }
    }

    /// A summary and heap over every threshold, so that every check finds something.
    fn firing() -> (Summary, HeapState) {
        let mut s = sample_summary();
        let mut hot = site(
            "hot",
            SiteStats {
                allocs: 20_000,
                frees: 20_000,
                temporary: 15_000,
                bytes: 20 << 20,
                realloc_moves: 40,
                realloc_copied_bytes: 1 << 20,
                ..Default::default()
            },
        );
        hot.caused.mmap_calls = 20;
        hot.caused.mmap_bytes = 20 << 20;
        hot.paths.mmap_bytes = 20 << 20;
        s.user.sites = vec![hot.clone()];
        s.user.leaks = vec![crate::summary::user::LeakReport {
            kind: None,
            suppressed_by: None,
            stack: site("lost", SiteStats::default()).stack,
            count: 2,
            bytes: 1 << 20,
            oldest_age_ms: 1.0,
            resident_bytes: 0,
            virtual_bytes: 0,
            path: "brk",
            paths: Default::default(),
            bytes_error: None,
            marks: Default::default(),
        }];
        s.user.leak_suspects = vec![crate::summary::suspects::LeakSuspect {
            stack: hot.stack,
            live_bytes: 1 << 20,
            live_blocks: 2,
            growth_bytes_per_min: 1e6,
            rank_correlation: 1.0,
            old_live_bytes: 1 << 19,
            age_ms: Default::default(),
            points: Vec::new(),
        }];
        s.kernel.slab.live_bytes_at_end = KERNEL_MIN_SLAB_BYTES;
        let heap = HeapState {
            page_size: 4096,
            heap_top: None,
            heap_resident: 3 << 20,
            heap_live: 1 << 20,
            arena_mapped: ARENA_MIN_MAPPED,
            arena_resident: 0,
            threads: 2,
        };
        (s, heap)
    }

    /// A suspect watched for 160 ms is judged by its live bytes, with no rate; watched for
    /// a minute, its rate is stated and projected.
    #[test]
    fn a_rate_needs_a_long_enough_watch() {
        let (mut s, heap) = firing();
        let suspect = |s: &Summary| {
            let found = find(s, &heap);
            found
                .into_iter()
                .find(|f| f.kind == FindingKind::LeakSuspect)
                .unwrap()
        };
        s.user.leak_suspects[0].growth_bytes_per_min = 16.0 * 1048576.0;
        s.user.leak_suspects[0].points = vec![(0.0, 1 << 19), (160.0, 1 << 20)];
        let short = suspect(&s);
        assert_eq!((short.bytes, short.severity), (1 << 20, "medium"));
        assert!(!short.message.contains("/min"), "{}", short.message);
        assert!(short.message.contains("160.0 ms"), "{}", short.message);
        s.user.leak_suspects[0].points = vec![(0.0, 1 << 19), (60_000.0, 1 << 20)];
        let long = suspect(&s);
        assert_eq!((long.bytes, long.severity), (160 << 20, "high"));
        assert!(long.message.contains("16.0 MiB/min"), "{}", long.message);
    }

    fn leak(f: &str, bytes: u64) -> crate::summary::user::LeakReport {
        crate::summary::user::LeakReport {
            kind: None,
            suppressed_by: None,
            stack: site(f, SiteStats::default()).stack,
            count: 1,
            bytes,
            oldest_age_ms: 1.0,
            resident_bytes: 0,
            virtual_bytes: bytes,
            path: "brk",
            paths: Default::default(),
            bytes_error: None,
            marks: Default::default(),
        }
    }

    /// Severity weighs the bytes against the process's peak as well as in absolute terms.
    #[test]
    fn severity_weighs_bytes_against_the_peak() {
        const MIB: u64 = 1 << 20;
        assert_eq!(severity(64 * MIB, 0), "high");
        assert_eq!(severity(64 * MIB, 4096 * MIB), "medium");
        assert_eq!(severity(64 * MIB, 100 * 1024 * MIB), "low");
        assert_eq!(severity(5 * MIB, 10 * MIB), "high");
        assert_eq!(severity(5 * MIB, 0), "medium");
        assert_eq!(severity(300 << 10, 2 * MIB), "medium");
        assert_eq!(severity(300 << 10, 0), "low");
    }

    /// A site the leak check found lost is a leak, not a leak suspect, however it grew; one it
    /// found reachable stays a suspect.
    #[test]
    fn a_lost_site_is_a_leak_not_a_suspect() {
        let (mut s, heap) = firing();
        let grown = s.user.leak_suspects[0].stack.clone();
        let mut l = leak("x", 1 << 20);
        l.stack = grown.clone();
        l.kind = Some(LeakKind::Lost);
        s.user.leaks = vec![l.clone()];
        let found = find(&s, &heap);
        let about = |k: FindingKind| found.iter().any(|f| f.kind == k && f.site == grown);
        assert!(about(FindingKind::Leak) && !about(FindingKind::LeakSuspect));
        l.kind = Some(LeakKind::Reachable);
        s.user.leaks = vec![l];
        let found = find(&s, &heap);
        let about = |k: FindingKind| found.iter().any(|f| f.kind == k && f.site == grown);
        assert!(!about(FindingKind::Leak) && about(FindingKind::LeakSuspect));
    }

    /// With a leak check: lost blocks are a leak whatever their size (at least medium), lost
    /// and possibly lost are separate findings, the possible one low, and reachable blocks
    /// (however many) are none.
    #[test]
    fn leaks_are_what_the_check_found() {
        let (mut s, heap) = firing();
        s.user.leak_suspects.clear();
        let kinded = |f: &str, bytes, kind| {
            let mut l = leak(f, bytes);
            l.kind = Some(kind);
            l
        };
        s.user.leaks = vec![
            kinded("kept", 64 << 20, LeakKind::Reachable),
            kinded("dropped", 1000, LeakKind::Lost),
            kinded("list", 8000, LeakKind::Indirect),
            kinded("inside", 3 << 20, LeakKind::Possible),
            kinded("dropped2", 2000, LeakKind::Lost),
        ];
        let leaks: Vec<Finding> = find(&s, &heap)
            .into_iter()
            .filter(|f| f.kind == FindingKind::Leak)
            .collect();
        let got: Vec<(&str, u64, &str, usize)> = leaks
            .iter()
            .map(|f| {
                let kind = f.evidence["kind"].as_str().unwrap();
                (kind, f.bytes, f.severity, f.also.len())
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("possible", 3 << 20, "low", 0),
                ("indirect", 8000, "medium", 0),
                ("lost", 3000, "medium", 1),
            ]
        );
        assert!(
            leaks[2].message.contains("definitely lost"),
            "{}",
            leaks[2].message
        );
    }

    /// 1,500 growing sites make one leak_suspect finding: the fastest, the next three named,
    /// the rest counted, the bytes of all of them; a suspect's leak is no second finding, a
    /// leak elsewhere is.
    #[test]
    fn findings_are_one_per_kind() {
        let (mut s, heap) = firing();
        let base = s.user.leak_suspects[0].clone();
        s.user.leak_suspects = (0..1_500u64)
            .map(|i| crate::summary::suspects::LeakSuspect {
                stack: site(&format!("grow{i}"), SiteStats::default()).stack,
                live_bytes: 10_000 + i,
                ..base.clone()
            })
            .collect();
        s.user.leaks = vec![leak("grow1499", 1 << 20), leak("lost", 64 << 10)];
        let found = find(&s, &heap);
        let kinds: Vec<FindingKind> = found.iter().map(|f| f.kind).collect();
        let unique: HashSet<FindingKind> = kinds.iter().copied().collect();
        assert_eq!(kinds.len(), unique.len(), "{kinds:?}");
        let of = |kind| found.iter().find(|f| f.kind == kind).unwrap();
        let suspects = of(FindingKind::LeakSuspect);
        let name = |stack: &Stack| stack[0].function.as_deref().unwrap().to_string();
        assert_eq!(name(&suspects.site), "grow1499");
        let also: Vec<String> = suspects.also.iter().map(|a| name(&a.site)).collect();
        assert_eq!(also, ["grow1498", "grow1497", "grow1496"]);
        assert_eq!(suspects.more, 1_496);
        let total: u64 = (0..1_500u64).map(|i| 10_000 + i).sum();
        assert_eq!(suspects.bytes, total);
        assert_eq!(suspects.severity, severity(total, suspects.peak));
        let leaks = of(FindingKind::Leak);
        assert_eq!(name(&leaks.site), "lost");
        assert!(leaks.also.is_empty());
        let also = label::also(suspects).unwrap();
        assert!(also.ends_with(" and 1496 more sites"), "{also}");
        assert!(
            also.starts_with("grow1498 11.2 KiB, grow1497 11.2 KiB"),
            "{also}"
        );
    }

    /// sqlite3's 50,000 blocks moved once each are not one block moved 50,000 times.
    #[test]
    fn realloc_moves_say_how_many_blocks() {
        let mut s = sample_summary();
        s.user.sites = vec![site(
            "grow",
            SiteStats {
                realloc_moves: 50_000,
                realloc_moved_blocks: 50_000,
                realloc_most_moves: 1,
                realloc_copied_bytes: 1 << 20,
                realloc_moved_to_bytes: 2 << 20,
                ..Default::default()
            },
        )];
        let found = find(&s, &HeapState::default());
        let f = found
            .iter()
            .find(|f| f.kind == FindingKind::ReallocMoves)
            .unwrap();
        assert!(
            f.message.contains(
                "grew 50000 blocks by realloc and moved them 50000 times (at most once a block)"
            ),
            "{}",
            f.message
        );
        assert_eq!(f.evidence["moved_blocks"], 50_000);
    }

    /// The advice names what the kernel's objects are: redis's socket buffers are not
    /// mappings.
    #[test]
    fn kernel_objects_are_named_by_their_caches() {
        let of = |caches: &[(&str, u64)]| {
            let names: Vec<(String, u64)> =
                caches.iter().map(|(c, n)| (c.to_string(), *n)).collect();
            let refs: Vec<(&String, u64)> = names.iter().map(|(c, n)| (c, *n)).collect();
            KernelObjects::of(&refs)
        };
        let redis = of(&[
            ("skbuff_head_cache", 140_000),
            ("kmalloc-1k", 90_000),
            ("maple_node", 40),
        ]);
        assert_eq!(redis, KernelObjects::Sockets);
        assert!(redis.advice().contains("batch small writes"));
        assert_eq!(
            of(&[
                ("maple_node", 6512),
                ("vm_area_struct", 5013),
                ("kmalloc-192", 183)
            ]),
            KernelObjects::Mappings
        );
        assert_eq!(of(&[("filp", 46), ("dentry", 20)]), KernelObjects::Files);
        assert_eq!(of(&[("kmalloc-64", 10)]), KernelObjects::Other);
    }

    #[test]
    fn every_check_fires_on_its_fixture() {
        let (s, heap) = firing();
        let found: HashSet<FindingKind> = find(&s, &heap).iter().map(|f| f.kind).collect();
        assert_eq!(found.len(), CHECKS.len(), "{found:?}");
    }

    #[test]
    fn thresholds_order_and_evidence() {
        let mut s = sample_summary();
        let mut churn = site(
            "churn",
            SiteStats {
                allocs: 20,
                frees: 20,
                bytes: 20 << 20,
                ..Default::default()
            },
        );
        churn.caused.mmap_calls = 20;
        churn.caused.mmap_bytes = 20 << 20;
        churn.paths.mmap_bytes = 20 << 20;
        let temps = site(
            "temps",
            SiteStats {
                allocs: 20_000,
                temporary: 15_000,
                bytes: 640_000,
                ..Default::default()
            },
        );
        // Below every threshold: 15 mmaps, 9,999 allocations.
        let mut quiet = site(
            "quiet",
            SiteStats {
                allocs: 9_999,
                temporary: 9_999,
                frees: 9_999,
                bytes: 100,
                realloc_moves: 31,
                ..Default::default()
            },
        );
        quiet.caused.mmap_calls = 15;
        quiet.paths.mmap_bytes = 1;
        s.user.sites = vec![temps, quiet, churn];
        let heap = HeapState {
            page_size: 4096,
            heap_top: None,
            heap_resident: 3 << 20,
            heap_live: 1 << 20,
            arena_mapped: 0,
            arena_resident: 0,
            threads: 1,
        };
        let found = find(&s, &heap);
        let kinds: Vec<&str> = found.iter().map(|f| f.kind.name()).collect();
        // Most bytes at stake first: 20 MiB mapped, 2 MiB retained, 480,000 temporary bytes.
        assert_eq!(
            kinds,
            ["mmap_churn", "retained_heap", "short_lived_hotspot"]
        );
        assert_eq!(found[0].severity, "medium");
        assert_eq!(found[0].evidence["mmap_calls"], 20);
        assert_eq!(found[1].evidence["retained_resident_bytes"], 2 << 20);
        assert!(found[1].message.contains("Nothing live pins the top"));
        assert_eq!(found[2].bytes, 480_000);
        assert_eq!(found[2].severity, "low");
        // Retained memory that is a small share of the heap is not a finding.
        let heap = HeapState {
            heap_resident: 9 << 20,
            heap_live: 8 << 20,
            ..heap
        };
        assert!(find(&s, &heap).iter().all(|f| f.kind != "retained_heap"));
    }
}
