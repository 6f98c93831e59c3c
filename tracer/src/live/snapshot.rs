//! The state of a live run as of now, as a [`Finish`]: what the final report, an interval, a
//! snapshot on demand and the HTTP endpoints are all built from.
//!
//! Stacks and symbols are kept between snapshots: a stack id's frames never change once the
//! kernel stored them, and an address resolves the same way until the process maps another
//! file executable (then [`Snapshotter::forget_symbols`]), so each is read or resolved once.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    time::Instant,
};

use aya::Ebpf;
use tracer_common::STACKS_MAP;

use crate::{
    probes::stacks::{kernel_stacks, read_stacks},
    report::TargetInfo,
    session::{Finish, Session},
    symbolize::Frame,
};

/// What a snapshot reads from the run besides the session.
pub struct Now<'a> {
    pub session: &'a Session,
    pub ebpf: &'a Ebpf,
    pub counters: Vec<u64>,
    pub kernel_traced: bool,
    pub allocator_files: Vec<String>,
    pub uprobe_links: String,
    pub substitutes: &'a HashMap<PathBuf, PathBuf>,
    pub threads: &'a BTreeMap<u32, String>,
}

/// How the run ended (or "running" for a snapshot).
#[derive(Debug, Clone, Default)]
pub struct Ending {
    pub ended_by: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
}

impl Ending {
    pub fn running() -> Self {
        Ending {
            ended_by: "running".into(),
            ..Ending::default()
        }
    }
}

/// The most pages of data regions read from pagemap per snapshot (16 GiB of 4 KiB pages, 32 MiB
/// read): the rest counts as not resident.
const MAX_PAGEMAP_PAGES: u64 = 1 << 22;

pub struct Snapshotter {
    /// pid, namespace pid and command: the rest is filled in per snapshot.
    pub target: TargetInfo,
    pub started: Instant,
    /// Set when tracing stopped: the run's duration from then on.
    pub stopped: Option<std::time::Duration>,
    pub max_sites: usize,
    pub min_age_ns: u64,
    pub mode: String,
    pub kernel_stacks: bool,
    stacks: HashMap<i32, Vec<u64>>,
    symbols: HashMap<u64, Vec<Frame>>,
}

impl Snapshotter {
    pub fn new(target: TargetInfo, max_sites: usize, min_age_ns: u64, mode: &str) -> Self {
        Snapshotter {
            target,
            started: Instant::now(),
            stopped: None,
            max_sites,
            min_age_ns,
            mode: mode.into(),
            kernel_stacks: false,
            stacks: HashMap::new(),
            symbols: HashMap::new(),
        }
    }

    /// The process mapped a file executable: an address may now resolve elsewhere.
    pub fn forget_symbols(&mut self) {
        self.symbols.clear();
    }

    /// Everything a summary needs, as of now. `max_sites` overrides the run's limit (intervals
    /// rank every site by live bytes).
    pub fn finish(&mut self, now: Now, ending: Ending, max_sites: Option<usize>) -> Finish {
        let ids = now.session.stack_ids();
        let missing: Vec<i32> = ids
            .iter()
            .copied()
            .filter(|id| !self.stacks.contains_key(id))
            .collect();
        if !missing.is_empty() {
            self.stacks
                .extend(read_stacks(now.ebpf, STACKS_MAP, missing));
        }
        let stacks: HashMap<i32, Vec<u64>> = ids
            .iter()
            .filter_map(|id| Some((*id, self.stacks.get(id)?.clone())))
            .collect();
        let symbols = now
            .session
            .symbol_table(&stacks, now.substitutes, &mut self.symbols);
        // What is resident now, while the process can still be read.
        let resident = if ending.ended_by == "exited" {
            None
        } else {
            crate::target::read_pagemap(
                self.target.pid,
                &now.session.space.data_ranges(),
                crate::target::page_size(),
                MAX_PAGEMAP_PAGES,
            )
            .map_err(|e| log::debug!("reading /proc/{}/pagemap: {e}", self.target.pid))
            .ok()
        };
        let mut threads = now.threads.clone();
        // Threads gone before their name could be read stay unnamed.
        threads.retain(|_, name| !name.is_empty());
        Finish {
            target: TargetInfo {
                exit_code: ending.exit_code,
                signal: ending.signal,
                ended_by: ending.ended_by,
                threads,
                ..self.target.clone()
            },
            duration_ms: self
                .stopped
                .unwrap_or_else(|| self.started.elapsed())
                .as_secs_f64()
                * 1e3,
            now_ns: monotonic_ns(),
            counters: now.counters,
            kernel_traced: now.kernel_traced,
            allocator_files: now.allocator_files,
            uprobe_links: now.uprobe_links,
            symbols,
            stacks,
            kernel_stacks: if self.kernel_stacks {
                kernel_stacks(now.ebpf, &now.session.kernel, 20)
            } else {
                Vec::new()
            },
            max_sites: max_sites.unwrap_or(self.max_sites),
            mode: self.mode.clone(),
            min_age_ns: self.min_age_ns,
            resident,
            recording_cut_events: 0,
            slab_merges: crate::target::slab_merges(now.session.kernel.slab.by_cache.keys()),
        }
    }
}

pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
