//! The kernel's OOM killer chose a traced process: what it said of the victim, and the report
//! written at that moment (`--on-oom`): the victim's own summary, with its cgroup and the
//! other processes beside it.

use serde::Serialize;
use tracer_common::OomEvent;

use super::{Summary, human_bytes, label, visible};

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
