//! The state of a live run as of now, as a [`Finish`]: what the final report, an interval, a
//! snapshot on demand and the HTTP endpoints are all built from.
//!
//! Stacks and symbols are kept between snapshots: a stack id's frames never change once the
//! kernel stored them, and an address resolves the same way until the process maps another
//! file executable (then [`Snapshotter::forget_symbols`]), so each is read or resolved once.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Instant,
};

use aya::Ebpf;
use tracer_common::STACKS_MAP;

use crate::{
    facts::{EndedBy, TargetFacts},
    probes::stacks::{kernel_stacks, read_stacks},
    process::session::{Finish, ProcessFinish, Session},
    process::table::Processes,
    process::target::TargetFiles,
    summary::site_frames::{Epoch, next_epoch},
    symbolize::Frame,
};

/// What a snapshot reads from the run besides the sessions.
pub struct Now<'a> {
    pub processes: &'a Processes,
    pub ebpf: &'a Ebpf,
    pub counters: Vec<u64>,
    /// `--costs`: each probe program's cost so far.
    pub probe_costs: Vec<crate::events::ProbeCost>,
    pub kernel_traced: bool,
    pub allocator_files: Vec<String>,
    pub uprobe_links: String,
    /// Each process's files, by pid.
    pub files: &'a BTreeMap<u32, TargetFiles>,
    /// Thread names by (pid, tid).
    pub threads: &'a BTreeMap<(u32, u32), String>,
}

/// How the run ended (or "running" for a snapshot).
#[derive(Debug, Clone, Default)]
pub struct Ending {
    pub ended_by: EndedBy,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
}

impl Ending {
    pub fn running() -> Self {
        Ending::default()
    }
}

pub struct Snapshotter {
    /// pid, namespace pid and command: the rest is filled in per snapshot.
    pub target: TargetFacts,
    pub started: Instant,
    /// Set when tracing stopped: the run's duration from then on.
    pub stopped: Option<std::time::Duration>,
    pub max_sites: usize,
    pub min_age_ns: u64,
    pub mode: String,
    pub kernel_stacks: bool,
    /// `--wrapper` and `--max-sites` as given (see [`Finish`]).
    pub wrappers: Vec<String>,
    /// `--suppress`'s rules.
    pub suppressions: Vec<String>,
    pub text_sites: Option<usize>,
    /// Every stack read so far, by id: shared with the [`Finish`]es made of it.
    stacks: Arc<HashMap<i32, Vec<u64>>>,
    /// Resolved addresses, per process (in the order they were created).
    symbols: Vec<Arc<HashMap<u64, Vec<Frame>>>>,
    /// Per process: how many of its sites have their addresses in `symbols`.
    symbolized: Vec<usize>,
    /// Reads the code before frame-pointer walks' return addresses.
    calls: crate::symbolize::calls::CallCheck,
    /// Frame-pointer stacks ended so far (see [`Session::end_at_calls`]).
    fp_stacks_ended: u64,
    /// Shows how far symbolizing is (the final summary's, on a terminal).
    pub progress: Option<indicatif::ProgressBar>,
    /// What each exited process ended with (by its place in that order): it changes no more.
    ended: HashMap<usize, ProcessFinish>,
    /// The epoch of `symbols`: new when they are forgotten.
    epoch: Epoch,
}

impl Snapshotter {
    pub fn new(target: TargetFacts, max_sites: usize, min_age_ns: u64, mode: &str) -> Self {
        Snapshotter {
            target,
            started: Instant::now(),
            stopped: None,
            max_sites,
            min_age_ns,
            mode: mode.into(),
            kernel_stacks: false,
            wrappers: Vec::new(),
            suppressions: Vec::new(),
            text_sites: None,
            stacks: Arc::default(),
            symbolized: Vec::new(),
            progress: None,
            calls: Default::default(),
            fp_stacks_ended: 0,
            symbols: Vec::new(),
            ended: HashMap::new(),
            epoch: next_epoch(),
        }
    }

    /// The process mapped a file executable: an address may now resolve elsewhere.
    pub fn forget_symbols(&mut self) {
        self.symbols.clear();
        self.symbolized.clear();
        self.epoch = next_epoch();
        // An exited process's addresses resolve as they did: its entry stays.
    }

    /// Everything a summary needs, as of now. `max_sites` overrides the run's limit (intervals
    /// rank every site by live bytes).
    pub fn finish(&mut self, now: Now, ending: Ending, max_sites: Option<usize>) -> Finish {
        // The moment blocks are aged at: now, before the stacks are read and symbolized (which
        // can take a second on a loaded machine and would age every block by as much).
        let now_ns = monotonic_ns();
        let missing: Vec<i32> = now
            .processes
            .iter()
            .flat_map(|p| p.session.stack_ids())
            .filter(|id| !self.stacks.contains_key(id))
            .collect::<std::collections::BTreeSet<i32>>()
            .into_iter()
            .collect();
        let no_files = HashMap::new();
        let substitutes = |pid: u32| {
            now.files
                .get(&pid)
                .map_or(&no_files, |f: &TargetFiles| f.substitutes())
        };
        if !missing.is_empty() {
            let mut read = read_stacks(now.ebpf, STACKS_MAP, missing);
            // Frame-pointer walks end where a return address follows no call: checked once, as
            // they are read, so that a recording keeps them ended.
            for p in now.processes.iter() {
                for id in p.session.stack_ids() {
                    if id >= tracer_common::DWARF_STACK_ID_BASE {
                        continue;
                    }
                    if let Some(stack) = read.get_mut(&id)
                        && p.session.end_at_calls(
                            stack,
                            substitutes(p.session.pid),
                            &mut self.calls,
                        )
                    {
                        self.fp_stacks_ended += 1;
                    }
                }
            }
            Arc::make_mut(&mut self.stacks).extend(read);
        }
        let stacks = &self.stacks;
        self.symbols
            .resize_with(now.processes.len(), Default::default);
        self.symbolized.resize(now.processes.len(), 0);
        let bar = self.progress.clone();
        let mut progress = |done: usize, total: usize| {
            if let Some(bar) = &bar {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
        };
        let root = now.processes.root();
        self.symbolized[0] = root.symbol_table(
            stacks,
            substitutes(root.pid),
            &mut self.symbols[0],
            self.symbolized[0],
            &mut progress,
        );
        let symbols = self.symbols[0].clone();
        // What is resident now, while the process can still be read.
        let resident = if ending.ended_by == EndedBy::Exited {
            None
        } else {
            read_resident(root)
        };
        let mut processes = Vec::new();
        for (i, p) in now.processes.iter().enumerate().skip(1) {
            if let Some(done) = self.ended.get(&i) {
                processes.push(done.clone());
                continue;
            }
            let pid = p.session.pid;
            let own = ProcessFinish {
                pid,
                threads: threads_of(now.threads, pid),
                symbols: {
                    let (table, done) = (&mut self.symbols[i], &mut self.symbolized[i]);
                    *done = p.session.symbol_table(
                        stacks,
                        substitutes(pid),
                        table,
                        *done,
                        &mut progress,
                    );
                    table.clone()
                },
                resident: if p.exit.is_none() {
                    read_resident(&p.session)
                } else {
                    None
                },
            };
            if p.exit.is_some() {
                self.ended.insert(i, own.clone());
            }
            processes.push(own);
        }
        let threads = threads_of(now.threads, root.pid);
        Finish {
            fp_stacks_ended: self.fp_stacks_ended,
            target: TargetFacts {
                exit_code: ending.exit_code,
                signal: ending.signal,
                ended_by: ending.ended_by.name().into(),
                threads,
                ..self.target.clone()
            },
            duration_ms: self
                .stopped
                .unwrap_or_else(|| self.started.elapsed())
                .as_secs_f64()
                * 1e3,
            now_ns,
            counters: now.counters,
            kernel_traced: now.kernel_traced,
            allocator_files: now.allocator_files,
            uprobe_links: now.uprobe_links,
            symbols,
            symbols_epoch: self.epoch,
            stacks: self.stacks.clone(),
            kernel_stacks: if self.kernel_stacks {
                kernel_stacks(now.ebpf, &root.kernel, 20)
            } else {
                Vec::new()
            },
            max_sites: max_sites.unwrap_or(self.max_sites),
            mode: self.mode.clone(),
            min_age_ns: self.min_age_ns,
            resident,
            recording_cut_events: 0,
            recording_ends_early: None,
            slab_merges: crate::process::target::slab_merges(
                now.processes
                    .iter()
                    .flat_map(|p| p.session.kernel.slab.caches().map(|(key, _)| key.name())),
            ),
            processes,
            wrappers: self.wrappers.clone(),
            suppressions: self.suppressions.clone(),
            text_sites: self.text_sites,
            tracer_cpu_ms: (!now.probe_costs.is_empty()).then(own_cpu_ms),
            cgroup: None,
            probe_costs: now.probe_costs,
        }
    }
}

/// tracer's own CPU time so far, user and system, all threads.
fn own_cpu_ms() -> f64 {
    // SAFETY: getrusage writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut usage) } != 0 {
        return 0.0;
    }
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}

/// The named threads of process `pid` (threads gone before their name could be read stay
/// unnamed).
fn threads_of(threads: &BTreeMap<(u32, u32), String>, pid: u32) -> BTreeMap<u32, String> {
    threads
        .range((pid, 0)..=(pid, u32::MAX))
        .filter(|(_, name)| !name.is_empty())
        .map(|(&(_, tid), name)| (tid, name.clone()))
        .collect()
}

/// The resident pages of a running process's data regions (`/proc/PID/pagemap`).
fn read_resident(session: &Session) -> Option<crate::attribution::resident::PageSet> {
    crate::process::target::read_pagemap(
        session.pid,
        &session.space.data_ranges(),
        crate::process::target::page_size(),
        crate::process::target::MAX_PAGEMAP_PAGES,
    )
    .map_err(|e| log::debug!("reading /proc/{}/pagemap: {e}", session.pid))
    .ok()
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
