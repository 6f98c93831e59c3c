//! Sites as reports list them: every allocation site (a stack id and a direct caller) whose
//! stack resolves to the same frames is one site. Stack ids differ where the frames do not: a
//! walk that ran into data (cut off by `AddressSpace::frames_in_code`), two return addresses on
//! one line, or the same code reached through differently laid out frames.

use std::{collections::HashMap, sync::Arc};

use crate::{
    aggregate::heap::{Leak, SiteKey, SiteStats},
    attribution::join::{Caused, SitePaths},
    events::LeakKind,
    summary::user::StackMarks,
    symbolize::{Frame, Stack},
};

/// One listed site: the merged statistics of its allocation sites.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    /// The first of its allocation sites, to order equal sites the same way every time.
    pub key: SiteKey,
    pub stack: Stack,
    /// Any of its allocation sites' stacks cut or lost.
    pub marks: StackMarks,
    pub stats: SiteStats,
    pub paths: SitePaths,
    pub caused: Caused,
}

/// A listed leak: the merged live blocks of one listed site, with their resident bytes.
#[derive(Debug, Clone)]
pub struct MergedLeak {
    pub leak: Leak,
    pub stack: Stack,
    pub marks: StackMarks,
    pub paths: SitePaths,
    pub resident_seen: u64,
}

/// What makes two frames the same code location: the function, file and line where the line
/// is known; otherwise the function (or none) and where the address lies, module and offset
/// (or the address, in anonymous memory). Two return addresses in one function without a line
/// are two locations: a stripped library's call sites stay apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FrameKey {
    function: Option<Arc<str>>,
    file: Option<Arc<str>>,
    line: Option<u32>,
    inlined: bool,
    module: Option<Arc<str>>,
    at: u64,
}

impl FrameKey {
    pub fn of(f: &Frame) -> FrameKey {
        let (file, module, at) = match (f.line, &f.module, f.offset) {
            (Some(_), ..) => (f.file.clone(), None, 0),
            (None, Some(module), Some(offset)) => (None, Some(module.clone()), offset),
            _ => (None, None, f.addr),
        };
        FrameKey {
            function: f.function.clone(),
            file,
            line: f.line,
            inlined: f.inlined,
            module,
            at,
        }
    }
}

/// A listed site's identity from one summary of a run to the next (interval deltas, top's
/// selection, scrape deltas, the totals of processes): a hash of its resolved frames, as
/// [`label::name`](super::label::name) and the line name them. No string is made: an interval
/// over 65,536 sites keys them all.
pub type FramesKey = u64;

pub fn frames_key(stack: &[Frame]) -> FramesKey {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    stack.len().hash(&mut h);
    for f in stack {
        match (&f.function, &f.module, f.offset) {
            (Some(function), ..) => (0u8, function).hash(&mut h),
            (None, Some(module), Some(offset)) => (1u8, module, offset).hash(&mut h),
            _ => (2u8, f.addr).hash(&mut h),
        }
        if let (Some(file), Some(line)) = (&f.file, f.line) {
            (file, line).hash(&mut h);
        }
    }
    h.finish()
}

/// The allocation sites, in the heap's order, as listed sites, most bytes first. `sites` pairs
/// each allocation site with its statistics, its listed site's id (see
/// [`SiteFrames`](super::site_frames::SiteFrames)), its stack (and whether it was cut), paths
/// and what it caused.
pub fn merge_sites<'a>(
    sites: impl IntoIterator<
        Item = (
            SiteKey,
            SiteStats,
            u32,
            (&'a Stack, StackMarks),
            (SitePaths, Caused),
        ),
    >,
) -> (Vec<Merged>, HashMap<SiteKey, usize>) {
    let mut index: HashMap<u32, usize> = HashMap::new();
    let mut merged: Vec<Merged> = Vec::new();
    let mut group_of = HashMap::new();
    for (key, stats, group, (stack, marks), (paths, caused)) in sites {
        let g = *index.entry(group).or_insert_with(|| {
            merged.push(Merged {
                key,
                stack: stack.clone(),
                ..Merged::default()
            });
            merged.len() - 1
        });
        let m = &mut merged[g];
        m.marks.add(marks);
        m.stats.merge(&stats);
        m.paths.add(&paths);
        m.caused.add(&caused);
        group_of.insert(key, g);
    }
    // Sorted through an order, so that `group_of` keeps naming the right entries.
    let mut order: Vec<usize> = (0..merged.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&merged[a], &merged[b]);
        b.stats.bytes.cmp(&a.stats.bytes).then(a.key.cmp(&b.key))
    });
    let mut rank = vec![0; merged.len()];
    for (r, &g) in order.iter().enumerate() {
        rank[g] = r;
    }
    let mut sorted: Vec<Option<Merged>> = merged.into_iter().map(Some).collect();
    let sorted: Vec<Merged> = order
        .iter()
        .map(|&g| sorted[g].take().expect("once"))
        .collect();
    let group_of = group_of.into_iter().map(|(k, g)| (k, rank[g])).collect();
    (sorted, group_of)
}

/// The leaks of each listed site, merged, most bytes first. `resident` is each allocation
/// site's resident bytes of live blocks.
pub fn merge_leaks(
    leaks: Vec<Leak>,
    sites: &[Merged],
    group_of: &HashMap<SiteKey, usize>,
    resident: &HashMap<SiteKey, u64>,
) -> Vec<MergedLeak> {
    // A site's resident bytes are shared among its leaks of each kind by their bytes.
    let mut site_seen: HashMap<SiteKey, u64> = HashMap::new();
    for l in &leaks {
        let e = site_seen.entry(l.site).or_default();
        *e = e.saturating_add(l.seen_bytes);
    }
    let mut by_group: HashMap<(usize, Option<LeakKind>), MergedLeak> = HashMap::new();
    for l in leaks {
        let Some(&g) = group_of.get(&l.site) else {
            continue;
        };
        let all = site_seen.get(&l.site).copied().unwrap_or(0);
        let site_resident = resident.get(&l.site).copied().unwrap_or(0);
        let seen = if all <= l.seen_bytes {
            site_resident
        } else {
            (u128::from(site_resident) * u128::from(l.seen_bytes) / u128::from(all)) as u64
        };
        let site = &sites[g];
        let e = by_group.entry((g, l.kind)).or_insert_with(|| MergedLeak {
            leak: Leak {
                site: site.key,
                count: 0,
                bytes: 0,
                oldest_age_ms: 0.0,
                bytes_variance: 0.0,
                seen_bytes: 0,
                kind: l.kind,
            },
            stack: site.stack.clone(),
            marks: site.marks,
            paths: site.paths.clone(),
            resident_seen: 0,
        });
        e.leak.count = e.leak.count.saturating_add(l.count);
        e.leak.bytes = e.leak.bytes.saturating_add(l.bytes);
        e.leak.oldest_age_ms = e.leak.oldest_age_ms.max(l.oldest_age_ms);
        e.leak.bytes_variance += l.bytes_variance;
        e.leak.seen_bytes = e.leak.seen_bytes.saturating_add(l.seen_bytes);
        e.resident_seen = e.resident_seen.saturating_add(seen);
    }
    let mut out: Vec<MergedLeak> = by_group.into_values().collect();
    // What a leak check found lost first, then possibly lost, unchecked, still reachable.
    let rank = |k: Option<LeakKind>| match k {
        Some(LeakKind::Lost | LeakKind::Indirect) => 0,
        Some(LeakKind::Possible) => 1,
        None => 2,
        Some(LeakKind::Reachable) => 3,
    };
    out.sort_by(|a, b| {
        rank(a.leak.kind)
            .cmp(&rank(b.leak.kind))
            .then(b.leak.bytes.cmp(&a.leak.bytes))
            .then(a.leak.site.cmp(&b.leak.site))
            .then(a.leak.kind.cmp(&b.leak.kind))
    });
    out
}
