//! Sites as reports list them: every allocation site (a stack id and a direct caller) whose
//! stack resolves to the same frames is one site. Stack ids differ where the frames do not: a
//! walk that ran into data (cut off by `AddressSpace::frames_in_code`), two return addresses on
//! one line, or the same code reached through differently laid out frames.

use std::collections::HashMap;

use crate::{
    aggregate::heap::{Leak, SiteKey, SiteStats},
    attribution::join::{Caused, SitePaths},
    symbolize::Frame,
};

/// One listed site: the merged statistics of its allocation sites.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    /// The first of its allocation sites, to order equal sites the same way every time.
    pub key: SiteKey,
    pub stack: Vec<Frame>,
    pub stats: SiteStats,
    pub paths: SitePaths,
    pub caused: Caused,
}

/// A listed leak: the merged live blocks of one listed site, with their resident bytes.
#[derive(Debug, Clone)]
pub struct MergedLeak {
    pub leak: Leak,
    pub stack: Vec<Frame>,
    pub paths: SitePaths,
    pub resident_seen: u64,
}

/// What makes two frames the same: the function, file and line where they resolve, the
/// address where they do not.
type FrameKey = (Option<String>, Option<String>, Option<u32>, bool, u64);

fn frame_keys(stack: &[Frame]) -> Vec<FrameKey> {
    stack
        .iter()
        .map(|f| {
            let addr = if f.function.is_some() { 0 } else { f.addr };
            (f.function.clone(), f.file.clone(), f.line, f.inlined, addr)
        })
        .collect()
}

/// A listed site's identity across snapshots and runs: its resolved frames as one string.
pub fn frames_key(stack: &[Frame]) -> String {
    let mut key = String::new();
    for f in stack {
        key.push_str(&super::label::name(f));
        if let (Some(file), Some(line)) = (&f.file, f.line) {
            key.push_str(&format!("@{file}:{line}"));
        }
        key.push(';');
    }
    key
}

/// The allocation sites, in the heap's order, as listed sites, most bytes first. `sites` pairs
/// each allocation site with its statistics, symbolized stack, paths and what it caused.
pub fn merge_sites(
    sites: impl IntoIterator<Item = (SiteKey, SiteStats, Vec<Frame>, (SitePaths, Caused))>,
) -> (Vec<Merged>, HashMap<SiteKey, usize>) {
    let mut index: HashMap<Vec<FrameKey>, usize> = HashMap::new();
    let mut merged: Vec<Merged> = Vec::new();
    let mut group_of = HashMap::new();
    for (key, stats, stack, (paths, caused)) in sites {
        let g = *index.entry(frame_keys(&stack)).or_insert_with(|| {
            merged.push(Merged {
                key,
                stack,
                ..Merged::default()
            });
            merged.len() - 1
        });
        let m = &mut merged[g];
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
    let mut by_group: HashMap<usize, MergedLeak> = HashMap::new();
    for l in leaks {
        let Some(&g) = group_of.get(&l.site) else {
            continue;
        };
        let seen = resident.get(&l.site).copied().unwrap_or(0);
        let site = &sites[g];
        let e = by_group.entry(g).or_insert_with(|| MergedLeak {
            leak: Leak {
                site: site.key,
                count: 0,
                bytes: 0,
                oldest_age_ms: 0.0,
                bytes_variance: 0.0,
                seen_bytes: 0,
            },
            stack: site.stack.clone(),
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
    out.sort_by(|a, b| {
        b.leak
            .bytes
            .cmp(&a.leak.bytes)
            .then(a.leak.site.cmp(&b.leak.site))
    });
    out
}
