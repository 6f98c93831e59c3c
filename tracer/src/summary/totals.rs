//! The totals of a `--follow` run: every process's summary added up. Counts and bytes add;
//! sites, leaks and callers that resolve to the same frames in different processes (the same
//! program run twice) are one; findings and leak suspects are each process's, named by pid;
//! the timeline is the sum of every process's memory at each moment.

use std::collections::{BTreeMap, HashMap};

use super::{
    ProcessReport, Summary,
    callers::CallerReport,
    merge::{FramesKey, frames_key},
    user::{Bucket, LeakReport, SiteReport, UserSummary},
};
use crate::aggregate::timeline::{Point, Sample, Timeline};

/// Adds each named field of `$b` to `$a`'s, saturating.
macro_rules! add {
    ($a:expr, $b:expr; $($f:ident),+ $(,)?) => {
        { $( $a.$f = $a.$f.saturating_add($b.$f); )+ }
    };
}

fn add_map<K: Ord + Clone>(a: &mut BTreeMap<K, u64>, b: &BTreeMap<K, u64>) {
    for (k, v) in b {
        let e = a.entry(k.clone()).or_default();
        *e = e.saturating_add(*v);
    }
}

/// The total of `processes` (at least one, the first the one traced from the start), with
/// every site, leak and suspect, reports for people listing `max_sites` of each (see
/// [`Summary::listed`]), and at most `max_sites` callers. Its target, mode and duration are
/// the first process's: the run's.
pub fn total(processes: &[ProcessReport], max_sites: usize) -> Summary {
    let mut t = processes[0].summary.clone();
    t.findings.clear();
    // A kill is one process's: in its own summary.
    t.oom = None;
    t.user.leak_suspects.clear();
    for p in &processes[1..] {
        let s = &p.summary;
        add!(t.events, s.events; received, decode_errors);
        add_syscalls(&mut t, s);
        add_user(&mut t.user, &s.user);
        add_kernel(&mut t, s);
        add!(t.paths.brk, s.paths.brk; bytes, allocs, sites);
        add!(t.paths.mmap, s.paths.mmap; bytes, allocs, sites);
        add!(t.paths.thread_arena, s.paths.thread_arena; bytes, allocs, sites);
        add!(t.paths.buddy, s.paths.buddy; pages, sites);
        add!(t.paths.slab, s.paths.slab; objects, sites);
        t.callers.extend(s.callers.iter().cloned());
    }
    t.user.sites = merge_sites(processes.iter().flat_map(|p| &p.summary.user.sites));
    t.user.site_count = t.user.sites.len();
    t.user.leaks = merge_leaks(processes.iter().flat_map(|p| &p.summary.user.leaks));
    t.callers = merge_callers(std::mem::take(&mut t.callers));
    t.callers.truncate(max_sites);
    for p in processes {
        let pid = p.pid;
        t.findings
            .extend(p.summary.findings.iter().cloned().map(|mut f| {
                f.pid = Some(pid);
                f
            }));
        t.user
            .leak_suspects
            .extend(p.summary.user.leak_suspects.iter().cloned());
    }
    t.findings = super::findings::group(std::mem::take(&mut t.findings));
    t.user.leak_suspects.sort_by(|a, b| {
        b.growth_bytes_per_min
            .total_cmp(&a.growth_bytes_per_min)
            .then(b.live_bytes.cmp(&a.live_bytes))
    });
    t.max_sites = max_sites;
    let summed_peak;
    (t.timeline, summed_peak) = merge_timelines(processes);
    // Processes at their peaks at different moments: the total's peak is the highest sum seen,
    // and never below the one process that peaked highest.
    t.user.peak_live_bytes = processes
        .iter()
        .map(|p| p.summary.user.peak_live_bytes)
        .max()
        .unwrap_or(0)
        .max(summed_peak);
    t
}

fn add_syscalls(t: &mut Summary, s: &Summary) {
    let (a, b) = (&mut t.syscalls, &s.syscalls);
    add!(a.brk, b.brk; calls, queries, grow_bytes, shrink_bytes, failed);
    add!(a.mmap, b.mmap; calls, bytes, anon_calls, anon_bytes, file_calls, file_bytes, private_calls,
        private_bytes, shared_calls, shared_bytes, failed);
    add!(a.munmap, b.munmap; calls, bytes, failed);
    add!(a.mremap, b.mremap; calls, old_bytes, new_bytes, failed);
    add!(a.mprotect, b.mprotect; calls, commit_bytes, failed);
    add!(a.madvise, b.madvise; calls, dontneed_bytes, free_bytes, resident_bytes, failed);
    a.brk.current_break = None;
}

fn add_user(a: &mut UserSummary, b: &UserSummary) {
    add!(a.malloc, b.malloc; calls, bytes);
    add!(a.calloc, b.calloc; calls, bytes);
    add!(a.realloc, b.realloc; calls, bytes);
    add!(a.reallocarray, b.reallocarray; calls, bytes);
    add!(a.posix_memalign, b.posix_memalign; calls, bytes);
    add!(a.aligned_alloc, b.aligned_alloc; calls, bytes);
    add!(a.memalign, b.memalign; calls, bytes);
    add!(a.valloc, b.valloc; calls, bytes);
    add!(a.pvalloc, b.pvalloc; calls, bytes);
    add!(a.operator_new, b.operator_new; calls, bytes);
    add!(a.free, b.free; calls, unknown, null);
    add!(a.operator_delete, b.operator_delete; calls, unknown, null);
    add!(a, b; failed, live_bytes_at_end, leaked_bytes, leaked_blocks, heap_resident_bytes);
    match (a.leak_check.as_mut(), &b.leak_check) {
        (Some(a), Some(b)) => a.merge(b),
        (None, Some(b)) => a.leak_check = Some(*b),
        _ => {}
    }
    let mut buckets: BTreeMap<u64, u64> =
        a.size_histogram.iter().map(|b| (b.le, b.count)).collect();
    add_map(
        &mut buckets,
        &b.size_histogram.iter().map(|b| (b.le, b.count)).collect(),
    );
    a.size_histogram = buckets
        .into_iter()
        .map(|(le, count)| Bucket { le, count })
        .collect();
    for f in &b.allocator_files {
        if !a.allocator_files.contains(f) {
            a.allocator_files.push(f.clone());
        }
    }
    if a.resident_source != b.resident_source {
        a.resident_source = "mixed";
    }
    match (&mut a.sampling, &b.sampling) {
        (Some(x), Some(y)) => add!(x, y; sampled_calls, unsampled_calls),
        (None, Some(y)) => a.sampling = Some(y.clone()),
        _ => {}
    }
}

fn add_kernel(t: &mut Summary, s: &Summary) {
    let (a, b) = (&mut t.kernel, &s.kernel);
    add!(a.buddy, b.buddy; allocs, pages, bytes, frees, freed_pages, live_pages_at_end);
    add_map(&mut a.buddy.by_order, &b.buddy.by_order);
    add_map(&mut a.buddy.by_gfp, &b.buddy.by_gfp);
    add_map(&mut a.buddy.by_gfp_flags, &b.buddy.by_gfp_flags);
    add_map(&mut a.buddy.by_migratetype, &b.buddy.by_migratetype);
    add!(a.slab, b.slab; allocs, bytes, bytes_req, frees, live_at_end, live_bytes_at_end, counted_in_kernel);
    for (name, c) in &b.slab.by_cache {
        let e = a.slab.by_cache.entry(name.clone()).or_default();
        add!(e, c; allocs, bytes, bytes_req, frees, live_at_end);
    }
    add!(a.faults, b.faults; user);
    add_map(&mut a.faults.by_region, &b.faults.by_region);
    for (name, k) in &b.by_syscall {
        let e = a.by_syscall.entry(name).or_default();
        add!(e, k; buddy_pages, slab_objects);
    }
    add_map(&mut a.resident_pages_by_region, &b.resident_pages_by_region);
    a.traced |= b.traced;
}

/// The error of a sum of two sampled estimates (an upper bound: the errors added).
fn add_errors(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (x, y) => Some(x.unwrap_or(0).saturating_add(y.unwrap_or(0))),
    }
}

/// Sites from every process, those with the same frames as one, most bytes first.
fn merge_sites<'a>(sites: impl Iterator<Item = &'a SiteReport>) -> Vec<SiteReport> {
    let mut index: HashMap<FramesKey, usize> = HashMap::new();
    let mut out: Vec<SiteReport> = Vec::new();
    for s in sites {
        match index.get(&frames_key(&s.stack)) {
            Some(&i) => {
                let m = &mut out[i];
                m.stats.merge(&s.stats);
                m.paths.add(&s.paths);
                m.caused.add(&s.caused);
                m.path = m.paths.path();
                m.bytes_error = add_errors(m.bytes_error, s.bytes_error);
            }
            None => {
                index.insert(frames_key(&s.stack), out.len());
                out.push(s.clone());
            }
        }
    }
    // Stable: equal sites keep the order of their processes.
    out.sort_by_key(|s| std::cmp::Reverse(s.stats.bytes));
    out
}

fn merge_leaks<'a>(leaks: impl Iterator<Item = &'a LeakReport>) -> Vec<LeakReport> {
    let mut index: HashMap<FramesKey, usize> = HashMap::new();
    let mut out: Vec<LeakReport> = Vec::new();
    for l in leaks {
        match index.get(&frames_key(&l.stack)) {
            Some(&i) => {
                let m = &mut out[i];
                add!(m, l; count, bytes, resident_bytes, virtual_bytes);
                m.oldest_age_ms = m.oldest_age_ms.max(l.oldest_age_ms);
                m.paths.add(&l.paths);
                m.path = m.paths.path();
                m.bytes_error = add_errors(m.bytes_error, l.bytes_error);
            }
            None => {
                index.insert(frames_key(&l.stack), out.len());
                out.push(l.clone());
            }
        }
    }
    out.sort_by_key(|l| std::cmp::Reverse(l.bytes));
    out
}

fn merge_callers(callers: Vec<CallerReport>) -> Vec<CallerReport> {
    let mut index: HashMap<FramesKey, usize> = HashMap::new();
    let mut out: Vec<CallerReport> = Vec::new();
    for c in callers {
        match index.get(&frames_key(&c.stack)) {
            Some(&i) => {
                let (m, s) = (&mut out[i].stats, &c.stats);
                add!(m, s; brk_calls, brk_grow_bytes, brk_shrink_bytes, mmap_calls, mmap_bytes,
                    munmap_calls, munmap_bytes, mremap_calls, mprotect_calls, mprotect_bytes,
                    madvise_calls, madvise_bytes, page_faults);
            }
            None => {
                index.insert(frames_key(&c.stack), out.len());
                out.push(c);
            }
        }
    }
    out.sort_by(|a, b| {
        (b.stats.requested_bytes(), b.stats.page_faults)
            .cmp(&(a.stats.requested_bytes(), a.stats.page_faults))
    });
    out
}

/// The sum of every process's memory over time, in the first process's time: at each point of
/// any process, each process's latest sample (none before it started, none after it exited).
/// The markers are every process's. Also returns the highest sum of live heap bytes.
fn merge_timelines(processes: &[ProcessReport]) -> (Timeline, u64) {
    // (time, process, sample); `None`: the process exited.
    let mut changes: Vec<(f64, usize, Option<Sample>)> = Vec::new();
    let mut markers = Vec::new();
    let mut markers_dropped = 0u64;
    for (i, p) in processes.iter().enumerate() {
        let t0 = p.started_ms;
        for point in &p.summary.timeline.points {
            changes.push((t0 + point.t_ms, i, Some(point.sample)));
        }
        if let Some(end) = p.ended_ms {
            changes.push((end.max(t0), i, None));
        }
        markers.extend(p.summary.timeline.markers.iter().map(|m| {
            let mut m = *m;
            m.t_ms += t0;
            m
        }));
        markers_dropped = markers_dropped.saturating_add(p.summary.timeline.markers_dropped);
    }
    changes.sort_by(|a, b| a.0.total_cmp(&b.0));
    markers.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
    let mut current: Vec<Sample> = vec![Sample::default(); processes.len()];
    let mut points: Vec<Point> = Vec::with_capacity(changes.len());
    let mut peak = 0u64;
    for (t_ms, i, sample) in changes {
        current[i] = sample.unwrap_or_default();
        let mut sum = Sample::default();
        for s in &current {
            add!(sum, s; live_heap, mapped, resident, slab, buddy);
        }
        peak = peak.max(sum.live_heap);
        match points.last_mut() {
            // Changes at the same moment make one point.
            Some(last) if last.t_ms == t_ms => last.sample = sum,
            _ => points.push(Point { t_ms, sample: sum }),
        }
    }
    // As many points as one process's timeline may have: every other one dropped.
    let max = crate::aggregate::timeline::MAX_POINTS;
    while points.len() > max {
        let last = points.pop();
        let mut i = 0;
        points.retain(|_| {
            i += 1;
            i % 2 == 1
        });
        points.extend(last);
    }
    (Timeline::from_parts(points, markers, markers_dropped), peak)
}

#[cfg(test)]
#[path = "totals_tests.rs"]
mod tests;
