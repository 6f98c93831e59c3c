//! The kernel's OOM killer chose a traced process: what it said of the victim, and the report
//! written at that moment (`--on-oom`): the victim's own summary, with its cgroup and the
//! other processes beside it.

use serde::Serialize;
use tracer_common::OomEvent;

use super::{Summary, human_bytes, label, visible};

/// `target.ended_by` of an OOM report.
pub const ENDED_BY: &str = "oom_killed";

/// The victim as the kernel saw it when it chose it (`oom:mark_victim`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct OomVictim {
    pub pid: u32,
    /// Milliseconds after the process's first event.
    pub at_ms: f64,
    pub oom_score_adj: i32,
    pub total_vm_bytes: u64,
    pub anon_rss_bytes: u64,
    pub file_rss_bytes: u64,
    pub shmem_rss_bytes: u64,
    pub page_tables_bytes: u64,
    /// In an OOM report: every other process traced then, and the cgroup's untraced ones.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub others: Vec<Neighbour>,
}

/// Another process at the moment of the kill.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Neighbour {
    pub pid: u32,
    /// Empty for a process of the cgroup that was not traced.
    pub command: Vec<String>,
    /// Its live heap bytes then (none when it was not traced).
    pub live_bytes: Option<u64>,
    pub allocated_bytes: Option<u64>,
}

impl OomVictim {
    /// From the event, its time counted from `first_ts`.
    pub fn of(e: &OomEvent, first_ts: u64) -> Self {
        let kb = |v: u64| v.saturating_mul(1024);
        OomVictim {
            pid: e.pid,
            at_ms: e.header.ts_ns.saturating_sub(first_ts) as f64 / 1e6,
            oom_score_adj: e.oom_score_adj,
            total_vm_bytes: kb(e.total_vm_kb),
            anon_rss_bytes: kb(e.anon_rss_kb),
            file_rss_bytes: kb(e.file_rss_kb),
            shmem_rss_bytes: kb(e.shmem_rss_kb),
            page_tables_bytes: kb(e.pgtables_kb),
            others: Vec::new(),
        }
    }

    /// In words, for the text and the notes.
    pub fn line(&self) -> String {
        format!(
            "the kernel's OOM killer chose pid {} at {}: {} resident ({} anonymous, {} file, {} \
             shared), {} virtual, {} of page tables, oom_score_adj {}",
            self.pid,
            label::human_duration(self.at_ms),
            human_bytes(
                self.anon_rss_bytes
                    .saturating_add(self.file_rss_bytes)
                    .saturating_add(self.shmem_rss_bytes)
            ),
            human_bytes(self.anon_rss_bytes),
            human_bytes(self.file_rss_bytes),
            human_bytes(self.shmem_rss_bytes),
            human_bytes(self.total_vm_bytes),
            human_bytes(self.page_tables_bytes),
            self.oom_score_adj
        )
    }

    /// The other processes, a line each.
    pub fn other_lines(&self) -> Vec<String> {
        self.others
            .iter()
            .map(|n| match (n.live_bytes, n.allocated_bytes) {
                (Some(live), Some(all)) => format!(
                    "pid {}: {} live, {} allocated while traced ({})",
                    n.pid,
                    human_bytes(live),
                    human_bytes(all),
                    visible(&n.command.join(" "))
                ),
                _ => format!("pid {}: in the cgroup, not traced", n.pid),
            })
            .collect()
    }
}

/// The report of victim `pid` as of the summary `total`: its own summary (the whole run's when
/// it is the only process), with the cgroup's numbers and the other processes. `None` when
/// the summary does not know it, or knows no kill of it.
pub fn report(total: &Summary, pid: u32) -> Option<Summary> {
    let mut own = if total.processes.is_empty() {
        (total.target.pid == pid).then(|| total.clone())?
    } else {
        let p = total.processes.iter().rev().find(|p| p.pid == pid)?;
        let mut own = p.summary.clone();
        own.events.dropped = total.events.dropped;
        own
    };
    own.cgroup = total.cgroup.clone();
    own.target.ended_by = ENDED_BY.into();
    let victim = own.oom.as_mut()?;
    victim.others = total
        .processes
        .iter()
        .filter(|p| p.pid != pid && p.ended_ms.is_none())
        .map(|p| Neighbour {
            pid: p.pid,
            command: p.command.clone(),
            live_bytes: Some(p.summary.user.live_bytes_at_end),
            allocated_bytes: Some(p.summary.user.total_bytes()),
        })
        .collect();
    if let Some(c) = &total.cgroup {
        let traced: std::collections::HashSet<u32> =
            total.processes.iter().map(|p| p.pid).collect();
        victim.others.extend(
            c.processes
                .iter()
                .filter(|&&p| p != pid && !traced.contains(&p))
                .map(|&p| Neighbour {
                    pid: p,
                    ..Neighbour::default()
                }),
        );
    }
    Some(own)
}

/// The name an OOM report's files start with: `oom-TIME-PID-COMM`, the command's program name
/// cut to what a file name can hold.
pub fn file_stem(summary: &Summary, pid: u32, stamp: &str) -> String {
    let program = summary.target.command.first().map_or("", String::as_str);
    let name: String = program
        .rsplit('/')
        .next()
        .unwrap_or(program)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    format!(
        "oom-{stamp}-{pid}-{}",
        if name.is_empty() { "?" } else { &name }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::{CgroupFacts, ProcessReport, tests::sample_summary};

    fn process(pid: u32, summary: Summary) -> ProcessReport {
        ProcessReport {
            pid,
            ppid: Some(1),
            command: vec![format!("/bin/p{pid}")],
            exit_code: None,
            signal: None,
            started_ms: 0.0,
            ended_ms: None,
            summary,
        }
    }

    #[test]
    fn the_report_is_the_victims_own_with_what_was_beside_it() {
        let mut victim = sample_summary();
        victim.target.pid = 20;
        victim.target.command = vec!["/usr/bin/my app".into()];
        victim.oom = Some(OomVictim::of(
            &OomEvent {
                pid: 20,
                oom_score_adj: 300,
                anon_rss_kb: 65_000,
                ..OomEvent::default()
            },
            0,
        ));
        let mut other = sample_summary();
        other.target.pid = 21;
        other.user.live_bytes_at_end = 4096;
        let mut total = sample_summary();
        total.events.dropped = 5;
        total.processes = vec![process(20, victim), process(21, other)];
        total.cgroup = Some(CgroupFacts {
            processes: vec![20, 21, 22],
            ..CgroupFacts::default()
        });
        let r = report(&total, 20).unwrap();
        assert_eq!(r.target.pid, 20);
        assert_eq!(r.target.ended_by, ENDED_BY);
        assert_eq!(r.events.dropped, 5);
        assert!(r.cgroup.is_some());
        let v = r.oom.as_ref().unwrap();
        assert_eq!((v.oom_score_adj, v.anon_rss_bytes), (300, 65_000 * 1024));
        let others: Vec<(u32, Option<u64>)> =
            v.others.iter().map(|n| (n.pid, n.live_bytes)).collect();
        assert_eq!(others, [(21, Some(4096)), (22, None)]);
        assert!(v.other_lines()[1].contains("not traced"));
        // Named by the time, the victim and its program.
        assert_eq!(file_stem(&r, 20, "T1"), "oom-T1-20-my_app");
        // A process the run does not know, or one no kill chose, has no report.
        assert!(report(&total, 99).is_none());
        assert!(report(&total, 21).is_none());
    }
}
