//! `--system`: the machine's processes and cgroups that grew most and are largest, each list
//! bounded (the top few and `other`), from the kernel's counts.

use std::collections::BTreeMap;

use serde::Serialize;
use tracer_common::ProcessCounts;

use super::{human_bytes, visible};
use crate::aggregate::system::{SystemModel, SystemProcess};

/// Processes and cgroups listed in each ranking; the rest are summed in `other`.
pub const TOP: usize = 20;

/// What a `--system` run saw.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SystemSummary {
    /// Processes seen: those the kernel counted and those there at a summary.
    pub processes_seen: usize,
    /// Of those, the ones the kernel counted something of.
    pub processes_counted: usize,
    /// Those of them gone by now.
    pub processes_gone: usize,
    /// The processes whose pages grew most (pages allocated in them and not freed since,
    /// wherever freed), most first.
    pub grew_most: Vec<SystemProcessReport>,
    /// The largest by resident memory now, most first.
    pub largest: Vec<SystemProcessReport>,
    /// Every process not in either list, summed.
    pub other: SystemTotals,
    /// Memory cgroups by their processes' growth, most first.
    pub cgroups: Vec<SystemCgroupReport>,
    /// Every cgroup not listed, summed.
    pub other_cgroups: SystemTotals,
    /// The whole machine.
    pub total: SystemTotals,
}

/// One process.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SystemProcessReport {
    pub pid: u32,
    pub comm: String,
    pub cgroup: String,
    /// Resident bytes now; none once it is gone.
    pub resident_bytes: Option<u64>,
    #[serde(flatten)]
    pub totals: SystemTotals,
}

/// One memory cgroup: its processes' sums.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SystemCgroupReport {
    pub cgroup: String,
    pub processes: usize,
    pub resident_bytes: u64,
    #[serde(flatten)]
    pub totals: SystemTotals,
}

/// The kernel's counts of one process or of several, in bytes where they are sizes.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct SystemTotals {
    /// Pages allocated while it ran, less those freed since: what it grew by.
    pub growth_bytes: u64,
    pub pages_allocated: u64,
    pub pages_freed: u64,
    pub faults: u64,
    pub mmap_calls: u64,
    pub mmap_bytes: u64,
    pub munmap_calls: u64,
    pub munmap_bytes: u64,
    pub mremap_calls: u64,
    pub brk_calls: u64,
    pub slab_objects: u64,
    pub slab_bytes: u64,
}

impl SystemTotals {
    fn of(c: &ProcessCounts, page_size: u64) -> Self {
        SystemTotals {
            growth_bytes: c
                .pages_allocated
                .saturating_sub(c.pages_freed)
                .saturating_mul(page_size),
            pages_allocated: c.pages_allocated,
            pages_freed: c.pages_freed,
            faults: c.faults,
            mmap_calls: c.mmap_calls,
            mmap_bytes: c.mmap_bytes,
            munmap_calls: c.munmap_calls,
            munmap_bytes: c.munmap_bytes,
            mremap_calls: c.mremap_calls,
            brk_calls: c.brk_calls,
            slab_objects: c.slab_objects,
            slab_bytes: c.slab_bytes,
        }
    }

    fn add(&mut self, o: &SystemTotals) {
        let fields = [
            (&mut self.growth_bytes, o.growth_bytes),
            (&mut self.pages_allocated, o.pages_allocated),
            (&mut self.pages_freed, o.pages_freed),
            (&mut self.faults, o.faults),
            (&mut self.mmap_calls, o.mmap_calls),
            (&mut self.mmap_bytes, o.mmap_bytes),
            (&mut self.munmap_calls, o.munmap_calls),
            (&mut self.munmap_bytes, o.munmap_bytes),
            (&mut self.mremap_calls, o.mremap_calls),
            (&mut self.brk_calls, o.brk_calls),
            (&mut self.slab_objects, o.slab_objects),
            (&mut self.slab_bytes, o.slab_bytes),
        ];
        for (a, b) in fields {
            *a = a.saturating_add(b);
        }
    }
}

/// The rankings of `model`, pages being `page_size` bytes.
pub fn of(model: &SystemModel, page_size: u64) -> SystemSummary {
    let report = |pid: u32, p: &SystemProcess| SystemProcessReport {
        pid,
        comm: p.comm.clone(),
        cgroup: p.cgroup.clone(),
        resident_bytes: p.resident_pages.map(|r| r.saturating_mul(page_size)),
        totals: SystemTotals::of(&p.counts, page_size),
    };
    let all: Vec<SystemProcessReport> = model
        .processes
        .iter()
        .map(|(&pid, p)| report(pid, p))
        .collect();
    let mut by_growth: Vec<&SystemProcessReport> = all.iter().collect();
    by_growth.sort_by_key(|r| (std::cmp::Reverse(r.totals.growth_bytes), r.pid));
    let mut by_size: Vec<&SystemProcessReport> = all.iter().collect();
    by_size.sort_by_key(|r| (std::cmp::Reverse(r.resident_bytes.unwrap_or(0)), r.pid));
    let grew_most: Vec<SystemProcessReport> = by_growth
        .iter()
        .filter(|r| r.totals.growth_bytes > 0)
        .take(TOP)
        .map(|r| (*r).clone())
        .collect();
    let largest: Vec<SystemProcessReport> = by_size
        .iter()
        .filter(|r| r.resident_bytes.is_some_and(|b| b > 0))
        .take(TOP)
        .map(|r| (*r).clone())
        .collect();
    let listed: std::collections::HashSet<u32> =
        grew_most.iter().chain(&largest).map(|r| r.pid).collect();
    let mut total = SystemTotals::default();
    let mut other = SystemTotals::default();
    let mut cgroups: BTreeMap<&str, SystemCgroupReport> = BTreeMap::new();
    for r in &all {
        total.add(&r.totals);
        if !listed.contains(&r.pid) {
            other.add(&r.totals);
        }
        let c = cgroups
            .entry(r.cgroup.as_str())
            .or_insert_with(|| SystemCgroupReport {
                cgroup: r.cgroup.clone(),
                ..SystemCgroupReport::default()
            });
        c.processes += 1;
        c.resident_bytes = c
            .resident_bytes
            .saturating_add(r.resident_bytes.unwrap_or(0));
        c.totals.add(&r.totals);
    }
    let mut cgroups: Vec<SystemCgroupReport> = cgroups.into_values().collect();
    cgroups.sort_by(|a, b| {
        b.totals
            .growth_bytes
            .cmp(&a.totals.growth_bytes)
            .then_with(|| a.cgroup.cmp(&b.cgroup))
    });
    let mut other_cgroups = SystemTotals::default();
    for c in cgroups.iter().skip(TOP) {
        other_cgroups.add(&c.totals);
    }
    cgroups.truncate(TOP);
    SystemSummary {
        processes_seen: all.len(),
        processes_counted: model
            .processes
            .values()
            .filter(|p| p.counts != ProcessCounts::ZERO)
            .count(),
        processes_gone: all.iter().filter(|r| r.resident_bytes.is_none()).count(),
        grew_most,
        largest,
        other,
        cgroups,
        other_cgroups,
        total,
    }
}

/// The rankings in lines for people: at most `n` processes and cgroups each.
pub fn lines(s: &SystemSummary, n: usize) -> Vec<String> {
    let mut out = vec![format!(
        "the machine: {} processes seen ({} gone since), {} of them counted: their pages grew by \
         {} ({} faults, {} mmap calls, {} slab objects)",
        s.processes_seen,
        s.processes_gone,
        s.processes_counted,
        human_bytes(s.total.growth_bytes),
        s.total.faults,
        s.total.mmap_calls,
        s.total.slab_objects
    )];
    let header = format!(
        "  {:>8} {:<16} {:>10} {:>10} {:>9} {:>7}  cgroup",
        "pid", "comm", "grew", "resident", "faults", "mmaps"
    );
    let row = |r: &SystemProcessReport| {
        format!(
            "  {:>8} {:<16} {:>10} {:>10} {:>9} {:>7}  {}",
            r.pid,
            super::label::elide_middle(&visible(&r.comm), 16),
            human_bytes(r.totals.growth_bytes),
            r.resident_bytes.map_or("gone".into(), human_bytes),
            r.totals.faults,
            r.totals.mmap_calls,
            super::label::elide_middle(&visible(or_unknown(&r.cgroup)), 30)
        )
    };
    out.push(String::new());
    out.push("processes that grew most:".into());
    out.push(header.clone());
    out.extend(s.grew_most.iter().take(n).map(row));
    out.push(String::new());
    out.push("largest processes (resident now):".into());
    out.push(header);
    out.extend(s.largest.iter().take(n).map(row));
    out.push(format!(
        "  other processes: grew {}, {} faults",
        human_bytes(s.other.growth_bytes),
        s.other.faults
    ));
    out.push(String::new());
    out.push("memory cgroups that grew most:".into());
    out.push(format!(
        "  {:>10} {:>10} {:>9} {:>6}  cgroup",
        "grew", "resident", "faults", "procs"
    ));
    out.extend(s.cgroups.iter().take(n).map(|c| {
        format!(
            "  {:>10} {:>10} {:>9} {:>6}  {}",
            human_bytes(c.totals.growth_bytes),
            human_bytes(c.resident_bytes),
            c.totals.faults,
            c.processes,
            super::label::elide_middle(&visible(or_unknown(&c.cgroup)), 50)
        )
    }));
    out
}

/// A cgroup not known (the process was gone before it was read) as `?`.
fn or_unknown(cgroup: &str) -> &str {
    if cgroup.is_empty() { "?" } else { cgroup }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(
        comm: &str,
        cgroup: &str,
        pages: (u64, u64),
        resident: Option<u64>,
    ) -> SystemProcess {
        SystemProcess {
            comm: comm.into(),
            cgroup: cgroup.into(),
            counts: ProcessCounts {
                pages_allocated: pages.0,
                pages_freed: pages.1,
                faults: pages.0,
                ..ProcessCounts::default()
            },
            resident_pages: resident,
        }
    }

    #[test]
    fn rankings_are_bounded_and_the_rest_is_other() {
        let mut model = SystemModel::default();
        for pid in 1..=30u32 {
            let p = process("idle", "/", (u64::from(pid), u64::from(pid)), Some(10));
            model.processes.insert(pid, p);
        }
        model
            .processes
            .insert(100, process("grower", "/app", (1000, 10), Some(500)));
        model
            .processes
            .insert(101, process("big", "/db", (5, 5), Some(100_000)));
        model
            .processes
            .insert(102, process("gone", "/app", (50, 0), None));
        let s = of(&model, 4096);
        assert_eq!(s.processes_seen, 33);
        assert_eq!(s.processes_counted, 33);
        assert_eq!(s.processes_gone, 1);
        // The idle ones grew nothing: not listed as growing.
        assert_eq!(s.grew_most.len(), 2);
        assert_eq!(s.grew_most[0].pid, 100);
        assert_eq!(s.grew_most[0].totals.growth_bytes, 990 * 4096);
        assert_eq!(s.grew_most[1].pid, 102);
        assert_eq!(s.largest[0].pid, 101);
        assert!(s.largest.iter().all(|r| r.resident_bytes.is_some()));
        assert_eq!(s.total.pages_allocated, (1..=30).sum::<u64>() + 1055);
        // Listed or in `other`, every process's counts once.
        let listed: u64 = {
            let mut pids: Vec<&SystemProcessReport> =
                s.grew_most.iter().chain(&s.largest).collect();
            pids.sort_by_key(|r| r.pid);
            pids.dedup_by_key(|r| r.pid);
            pids.iter().map(|r| r.totals.pages_allocated).sum()
        };
        assert_eq!(listed + s.other.pages_allocated, s.total.pages_allocated);
        assert_eq!(s.cgroups[0].cgroup, "/app");
        assert_eq!(s.cgroups[0].processes, 2);
        assert_eq!(s.cgroups[0].totals.growth_bytes, (990 + 50) * 4096);
        let text = lines(&s, 3).join("\n");
        assert!(text.contains("grower"), "{text}");
        assert!(text.contains("gone"), "{text}");
    }
}
