//! The traced process and, with `--follow`, every process it creates: one [`Session`] each,
//! events routed to them by process id, and a summary of each and of all.
//!
//! A child's session begins as a copy of its parent's address space at the fork (the
//! `task:task_newtask` event, which the kernel writes before the child first runs, so no
//! event of the child comes before it), and ends at its exit event.

use std::collections::HashMap;

use crate::{
    events::{self, Event},
    process::session::{Finish, Followup, ProcessFinish, Session, Start},
    summary::{ProcessReport, Summary, totals},
};

/// How a process ended, from its exit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessExit {
    pub ts_ns: u64,
    /// The status as `wait` reports it, or `None` when it could not be read.
    pub status: Option<i32>,
}

impl ProcessExit {
    /// (exit code, killing signal), as a summary's target states them.
    pub fn code_and_signal(&self) -> (Option<i32>, Option<i32>) {
        match self.status {
            Some(s) if libc::WIFEXITED(s) => (Some(libc::WEXITSTATUS(s)), None),
            Some(s) if libc::WIFSIGNALED(s) => (None, Some(libc::WTERMSIG(s))),
            _ => (None, None),
        }
    }
}

/// One traced process.
pub struct Process {
    pub session: Session,
    /// The process that created it; `None` for the one traced from the start.
    pub ppid: Option<u32>,
    /// The fork event's time (0 for the first process).
    pub forked_ns: u64,
    pub exit: Option<ProcessExit>,
}

/// Every traced process, in the order they were created.
pub struct Processes {
    list: Vec<Process>,
    /// Process id to its index in `list`: the newest process of that id.
    index: HashMap<u32, usize>,
    /// The last routed process, which the next event most likely comes from.
    last: (u32, usize),
    /// Events of a process that is not known (its fork event was lost): in no process's counts.
    pub unrouted: u64,
    /// Records that did not decode, with more than one process (with one, its own counts say).
    pub undecodable: u64,
}

impl Processes {
    pub fn new(start: &Start) -> Self {
        Processes {
            list: vec![Process {
                session: Session::new(start),
                ppid: None,
                forked_ns: 0,
                exit: None,
            }],
            index: HashMap::from([(start.pid, 0)]),
            last: (start.pid, 0),
            unrouted: 0,
            undecodable: 0,
        }
    }

    /// A running process that joins the traced set (see [`crate::process::session::Joined`]):
    /// a process of its own, whose parent is `joined.ppid` (traced or not).
    pub fn adopt(&mut self, joined: &crate::process::session::Joined) {
        self.list.push(Process {
            session: Session::new(&joined.start),
            ppid: Some(joined.ppid),
            forked_ns: joined.ts_ns,
            exit: None,
        });
        self.index.insert(joined.start.pid, self.list.len() - 1);
    }

    /// The process traced from the start.
    pub fn root(&self) -> &Session {
        &self.list[0].session
    }

    pub fn root_mut(&mut self) -> &mut Session {
        &mut self.list[0].session
    }

    /// Every process, the first one first.
    pub fn iter(&self) -> impl Iterator<Item = &Process> {
        self.list.iter()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The newest process with id `pid`.
    pub fn get(&self, pid: u32) -> Option<&Session> {
        let &i = self.index.get(&pid)?;
        Some(&self.list[i].session)
    }

    /// The newest process with id `pid`.
    pub fn get_mut(&mut self, pid: u32) -> Option<&mut Session> {
        let &i = self.index.get(&pid)?;
        Some(&mut self.list[i].session)
    }

    /// Processes that have not exited, as far as their events say.
    pub fn running(&self) -> impl Iterator<Item = u32> + '_ {
        self.list
            .iter()
            .filter(|p| p.exit.is_none())
            .map(|p| p.session.pid)
    }

    /// Fetches into the cache what the allocator event `record`, a few events ahead, will
    /// touch in its process's heap. A hint: nothing changes.
    pub fn prefetch(&self, record: &[u8]) {
        let Some((tgid, ptr, old_ptr)) = events::block_addresses(record) else {
            return;
        };
        if let Some((i, _)) = self.route(tgid) {
            self.list[i].session.agg.heap.prefetch(ptr, old_ptr);
        }
    }

    /// The process whose books the events of `tgid` go to, and whether that is worth
    /// remembering for its next event (it is in the index; the one-process fallback is not,
    /// since `tgid` may yet be added as a process of its own).
    fn route(&self, tgid: u32) -> Option<(usize, bool)> {
        if self.last.0 == tgid {
            Some((self.last.1, false))
        } else if let Some(&i) = self.index.get(&tgid) {
            Some((i, true))
        } else if self.list.len() == 1 {
            // Without --follow every event is the target's (synthetic ones included).
            Some((0, false))
        } else {
            None
        }
    }

    /// Processes one raw event record; returns the process it belongs to and what the live
    /// run has to do about it (see [`Followup`]).
    pub fn process(&mut self, record: &[u8]) -> Option<(u32, Followup)> {
        let event = match events::decode(record) {
            Ok(event) => event,
            Err(_) if self.list.len() == 1 => {
                // One process: its counts say what did not decode, as they always have.
                self.list[0].session.process(record);
                return None;
            }
            Err(e) => {
                self.undecodable += 1;
                log::debug!("undecodable record: {e}");
                return None;
            }
        };
        let tgid = event.header().tgid;
        // Not a fact about the process (and never in a recording): the live run continues it.
        if let Event::Held(e) = event {
            let followup = if e.reason == tracer_common::held::EXIT {
                Followup::HeldAtExit
            } else {
                Followup::Held
            };
            return Some((tgid, followup));
        }
        // A page or slab object is freed in any context (the kernel, another process): it
        // goes to the process that allocated it.
        let owner = match &event {
            Event::PageFree(e) if self.list.len() > 1 => self.owner(tgid, |k| k.has_page(e.pfn)),
            Event::SlabFree(e) if self.list.len() > 1 => self.owner(tgid, |k| k.has_object(e.ptr)),
            _ => None,
        };
        let i = match owner.map(|i| (i, false)).or_else(|| self.route(tgid)) {
            Some((i, remember)) => {
                if remember {
                    self.last = (tgid, i);
                }
                i
            }
            None => {
                self.unrouted += 1;
                return None;
            }
        };
        match event {
            Event::Fork(e) => {
                let session = &mut self.list[i].session;
                session.apply(&event);
                let child = session.forked(e.pid, e.header.ts_ns);
                self.list.push(Process {
                    session: child,
                    ppid: Some(tgid),
                    forked_ns: e.header.ts_ns,
                    exit: None,
                });
                self.index.insert(e.pid, self.list.len() - 1);
                Some((tgid, Followup::Forked { child: e.pid }))
            }
            Event::Exit(e) => {
                let p = &mut self.list[i];
                p.session.apply(&event);
                p.exit = Some(ProcessExit {
                    ts_ns: e.header.ts_ns,
                    status: (e.status >= 0).then_some(e.status),
                });
                None
            }
            _ => {
                let followup = self.list[i].session.apply(&event)?;
                Some((tgid, followup))
            }
        }
    }

    /// The process whose kernel objects `has` one: the freeing process's own first (a process
    /// frees its pages as it exits), then the newest other.
    fn owner(
        &self,
        tgid: u32,
        has: impl Fn(&crate::aggregate::kernel::KernelStats) -> bool,
    ) -> Option<usize> {
        if let Some(&i) = self.index.get(&tgid)
            && has(&self.list[i].session.kernel)
        {
            return Some(i);
        }
        self.list.iter().rposition(|p| has(&p.session.kernel))
    }

    /// The summary of the run: the first process's alone when it created none, or the totals
    /// of all with each process's own summary in `processes`.
    pub fn summarize(&self, finish: &Finish) -> Summary {
        let mut summary = self.summarize_processes(finish);
        summary.cgroup = finish.cgroup.clone();
        summary
    }

    fn summarize_processes(&self, finish: &Finish) -> Summary {
        if self.list.len() == 1 {
            return self.list[0].session.summarize(finish);
        }
        let base = self.list[0].session.first_ts().unwrap_or(0);
        let ms = |ts: u64| ts.saturating_sub(base) as f64 / 1e6;
        let mut reports = Vec::with_capacity(self.list.len());
        for (i, p) in self.list.iter().enumerate() {
            let own = if i == 0 {
                None
            } else {
                finish
                    .processes
                    .get(i - 1)
                    .filter(|f| f.pid == p.session.pid)
            };
            let f = process_finish(finish, p, own);
            let summary = p.session.summarize(&f);
            reports.push(ProcessReport {
                pid: p.session.pid,
                ppid: p.ppid,
                command: summary.target.command.clone(),
                exit_code: summary.target.exit_code,
                signal: summary.target.signal,
                started_ms: if i == 0 { 0.0 } else { ms(p.forked_ns) },
                ended_ms: p.exit.map(|e| ms(e.ts_ns)),
                summary,
            });
        }
        let mut total = totals::total(&reports, finish.max_sites);
        // The kernel-side counters are the whole run's: they go to the totals only.
        let mut events = total.events.clone();
        crate::process::session::add_counters(&mut events, finish);
        events.received = events
            .received
            .saturating_add(self.unrouted + self.undecodable);
        events.decode_errors = events.decode_errors.saturating_add(self.undecodable);
        events.unknown_process = self.unrouted;
        total.events = events;
        total.costs =
            crate::summary::costs::of(&finish.counters, &finish.probe_costs, finish.tracer_cpu_ms);
        for r in &mut reports {
            r.summary = r.summary.truncated(finish.max_sites);
        }
        total.processes = reports;
        total.notes = crate::summary::notes::of(&total);
        total
    }
}

/// The finish of process `p` of a run that ended with `finish`: the run's, with the process's
/// own target, threads, symbols and resident pages, and no kernel-side counters (those count
/// the whole run, in the totals). Every site is listed, for the totals to merge.
fn process_finish(finish: &Finish, p: &Process, own: Option<&ProcessFinish>) -> Finish {
    let mut f = Finish {
        counters: Vec::new(),
        max_sites: usize::MAX,
        processes: Vec::new(),
        recording_cut_events: 0,
        recording_ends_early: None,
        probe_costs: Vec::new(),
        tracer_cpu_ms: None,
        ..finish.clone()
    };
    if let Some(own) = own {
        f.symbols = own.symbols.clone();
        f.resident = own.resident.clone();
        f.target.threads = own.threads.clone();
    } else if p.ppid.is_some() {
        f.symbols = Default::default();
        // No table: nothing made of it may be kept.
        f.symbols_epoch = 0;
        f.resident = None;
        f.target.threads = Default::default();
    }
    if p.ppid.is_none() {
        // A process traced with --pid: its exit event says how it ended.
        if f.target.exit_code.is_none()
            && f.target.signal.is_none()
            && let Some(exit) = p.exit
        {
            (f.target.exit_code, f.target.signal) = exit.code_and_signal();
        }
    } else {
        f.target.pid = p.session.pid;
        f.target.namespace_pid = None;
        f.target.command = p.session.command().to_vec();
        f.target.ended_by = match p.exit {
            Some(_) => "exited".into(),
            None => finish.target.ended_by.clone(),
        };
        (f.target.exit_code, f.target.signal) =
            p.exit.map_or((None, None), |e| e.code_and_signal());
    }
    f
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
