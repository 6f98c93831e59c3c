//! Moving records from the ring into the session, the recording and the probes.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::{Duration, Instant},
};

use aya::Ebpf;

use super::{ring::Batch, wait::kill};
use crate::{
    events,
    probes::{
        Probes,
        slab_counts::SlabCounts,
        uprobes::{AllocatorProbes, needed_libraries_with},
    },
    process::session::{ExecImage, Finish, Followup, is_loader},
    process::table::Processes,
    process::target::{self, TargetFiles},
    record::Recorder,
    runtime::snapshot::{Ending, Now, Snapshotter, monotonic_ns},
    unwind::UnwindTables,
};

/// Moves records from the ring buffer into the sessions (and the recording).
pub(super) struct Drain<'a> {
    pub(super) processes: &'a mut Processes,
    /// The recording, until writing it fails (a full disk): then it is dropped, which
    /// removes it, and the run goes on.
    pub(super) recorder: Option<Recorder>,
    pub(super) record_failed: bool,
    /// Probes for libraries loaded later; none in `--mode kernel`.
    pub(super) allocators: Option<&'a mut AllocatorProbes>,
    /// Each traced process's files, by pid.
    pub(super) files: BTreeMap<u32, TargetFiles>,
    /// Files of processes whose pid was reused: kept open, a child's may read through them.
    pub(super) retired: Vec<TargetFiles>,
    /// The unwind tables given to the kernel (`--stacks dwarf`).
    pub(super) tables: Option<UnwindTables>,
    /// The process the allocator probes fire for: the target, or 0 with `--follow` (every
    /// process, the kernel keeping to the traced ones).
    pub(super) probe_pid: u32,
    /// Thread names by (pid, tid), read from /proc when a thread is first seen (while it still
    /// runs).
    pub(super) threads: BTreeMap<(u32, u32), String>,
    /// A file was mapped executable since the last snapshot.
    pub(super) new_code: bool,
    /// The command line of the program the process runs now, after an exec.
    pub(super) command: Option<Vec<String>>,
    /// Processes with an executable mapping whose table is still being compiled: given their
    /// tables again as tables come in.
    pub(super) unsynced: BTreeSet<u32>,
    /// Processes stopped (at an exec, or at a mapping of code) until their tables are in.
    pub(super) waiting: Waiting,
    /// Processes stopped at `_exit` for their leak check (see `leak_check.rs`).
    pub(super) exit_held: ExitHeld,
    /// Processes the OOM killer chose whose report is still to be written.
    pub(super) oom_victims: Vec<u32>,
    /// The slab objects the kernel counts, as last read.
    pub(super) slab_counts: SlabCounts,
    /// When they were last read; `None` once they are read for the last time (the recording is
    /// closed after that read, and a report must replay from it).
    pub(super) counts_read: Option<Instant>,
}

impl<'a> Drain<'a> {
    pub(super) fn new(
        processes: &'a mut Processes,
        allocators: Option<&'a mut AllocatorProbes>,
        recorder: Option<Recorder>,
        files: BTreeMap<u32, TargetFiles>,
        tables: Option<UnwindTables>,
        probe_pid: u32,
    ) -> Self {
        Drain {
            processes,
            recorder,
            record_failed: false,
            allocators,
            files,
            retired: Vec::new(),
            tables,
            probe_pid,
            threads: BTreeMap::new(),
            new_code: false,
            command: None,
            unsynced: BTreeSet::new(),
            waiting: Waiting::default(),
            exit_held: ExitHeld::default(),
            oom_victims: Vec::new(),
            slab_counts: SlabCounts::default(),
            counts_read: Some(Instant::now()),
        }
    }
}

/// Processes stopped until their tables are in, and since when. However the run ends (an
/// error included), none is left stopped.
#[derive(Default)]
pub(super) struct Waiting(BTreeMap<u32, Instant>);

impl Waiting {
    /// Takes out the processes to continue at `now`: those whose tables are in (not in
    /// `unsynced`), and those stopped for [`HOLD_LIMIT`] already.
    fn due(&mut self, unsynced: &BTreeSet<u32>, now: Instant) -> Vec<(u32, bool)> {
        let mut out = Vec::new();
        self.0.retain(|&pid, since| {
            let ready = !unsynced.contains(&pid);
            if ready || now.saturating_duration_since(*since) >= HOLD_LIMIT {
                out.push((pid, ready));
                return false;
            }
            true
        });
        out
    }

    /// Continues every process.
    fn release(&mut self) {
        for pid in std::mem::take(&mut self.0).into_keys() {
            kill(pid as i32, libc::SIGCONT);
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.release();
    }
}

/// Processes stopped at `_exit`, waiting for their leak check. However the run ends (an error
/// included), none is left stopped.
#[derive(Default)]
pub(super) struct ExitHeld(pub(super) Vec<u32>);

impl Drop for ExitHeld {
    fn drop(&mut self) {
        for pid in self.0.drain(..) {
            kill(pid as i32, libc::SIGCONT);
        }
    }
}

/// The longest a process is kept stopped for its tables: past it, it goes on with the
/// tables it has (frames in a file still compiling are walked by frame pointer until its
/// table comes).
const HOLD_LIMIT: Duration = Duration::from_secs(2);

/// How often the kernel's slab counts are read while tracing (for the timeline; every
/// snapshot reads them too).
const COUNTS_PERIOD: Duration = Duration::from_millis(250);

impl Drain<'_> {
    /// Applies a batch of records the ring reader took, in order.
    pub(super) fn apply(&mut self, batch: &Batch, ebpf: &mut Ebpf) {
        for record in batch.records() {
            self.take(record, ebpf);
        }
    }

    /// One record: into the recording and the sessions, and what it asks of the probes.
    fn take(&mut self, record: &[u8], ebpf: &mut Ebpf) {
        {
            let header = events::decode_header(record).ok();
            if let Some(header) = &header
                && !self.threads.contains_key(&(header.tgid, header.tid))
            {
                let name = thread_name(header.tgid, header.tid).unwrap_or_default();
                self.threads.insert((header.tgid, header.tid), name);
            }
            let control = header.is_some_and(|h| h.kind == tracer_common::kind::HELD);
            if !control {
                self.record(record);
            }
            match self.processes.process(record) {
                Some((pid, Followup::Mapped(lib))) => {
                    self.new_code = true;
                    // A file mapped executable after start (the libraries of a launched
                    // command, dlopen): kept open to symbolize, and probed if it brings an
                    // allocator. Calls made before this point are not seen.
                    let files = self.files_of(pid);
                    let Some(via) = files.open_mapping_at(&lib.path, lib.addr) else {
                        log::warn!("{}: could not be opened: not probed", lib.path.display());
                        return;
                    };
                    if let Some(allocators) = self.allocators.as_deref_mut()
                        && let Err(e) =
                            allocators.attach_file(ebpf, &lib.path, &via, self.probe_pid)
                    {
                        log::warn!("{:#}", anyhow::Error::from(e));
                    }
                    self.sync_tables(ebpf, pid);
                }
                Some((pid, Followup::Exec { held, ts_ns })) => {
                    self.on_exec(ebpf, pid, held, ts_ns);
                }
                Some((pid, Followup::Held)) => {
                    // The mapping it stopped for came just before: its table was asked for
                    // then (or is there already).
                    self.continue_when_ready(pid);
                }
                Some((pid, Followup::HeldAtExit)) => self.exit_held.0.push(pid),
                Some((pid, Followup::OomVictim)) => self.oom_victims.push(pid),
                Some((parent, Followup::Forked { child })) => {
                    let files = self.files_of(parent).forked(child as i32);
                    if let Some(old) = self.files.insert(child, files) {
                        self.retired.push(old);
                    }
                    self.sync_tables(ebpf, child);
                }
                None => {}
            }
        }
    }
}

impl Drain<'_> {
    /// Writes a record to the recording; the first write that fails ends the recording.
    fn record(&mut self, record: &[u8]) {
        self.record_with(|r| r.event(record));
    }

    /// Writes to the recording with `write`; the first write that fails ends the recording
    /// (and is said), and tracing goes on.
    pub(super) fn record_with(
        &mut self,
        write: impl FnOnce(&mut Recorder) -> Result<(), crate::record::RecordError>,
    ) {
        if let Some(recorder) = self.recorder.as_mut()
            && let Err(e) = write(recorder)
        {
            eprintln!(
                "tracer: warning: recording stopped after {} events ({:#}); the partial \
                 recording is discarded and tracing goes on",
                recorder.events(),
                anyhow::Error::from(e)
            );
            self.recorder = None;
            self.record_failed = true;
        }
    }

    /// A record tracer made itself (a leak check's): recorded and applied as if the ring had
    /// brought it.
    pub(super) fn take_own(&mut self, record: &[u8]) {
        self.record(record);
        self.processes.process(record);
    }

    /// Reads the slab objects the kernel counted and takes the counts that changed as events
    /// (recorded like the ring's): at most every [`COUNTS_PERIOD`] unless `now`, and never
    /// after the last read.
    pub(super) fn read_counts(&mut self, ebpf: &Ebpf, now: bool) {
        let Some(last) = self.counts_read else {
            return;
        };
        if !now && last.elapsed() < COUNTS_PERIOD {
            return;
        }
        self.counts_read = Some(Instant::now());
        match self.slab_counts.read(ebpf, monotonic_ns()) {
            Ok(counts) => {
                for count in &counts {
                    let record = events::encode(count);
                    self.record(record);
                    self.processes.process(record);
                }
            }
            Err(e) => log::warn!("{:#}", anyhow::Error::from(e)),
        }
    }

    /// The faults the kernel still held when tracing ended, taken as the ring's last records.
    pub(super) fn held_faults(&mut self, probes: &Probes) {
        match probes.held_faults() {
            Ok(faults) => {
                log::debug!("{} faults still held by the kernel", faults.len());
                for fault in &faults {
                    let record = events::encode(fault);
                    self.record(record);
                    self.processes.process(record);
                }
            }
            Err(e) => log::warn!("{:#}", anyhow::Error::from(e)),
        }
    }

    /// The last read of the kernel's counts, before the recording is closed.
    pub(super) fn last_counts(&mut self, ebpf: &Ebpf) {
        self.read_counts(ebpf, true);
        self.counts_read = None;
    }

    /// Whether a process the target created still runs (its exit event not seen, and it is
    /// there).
    pub(super) fn others_running(&self) -> bool {
        !self.others().is_empty()
    }

    /// The followed processes, besides the target, still running.
    pub(super) fn others(&self) -> Vec<u32> {
        self.processes
            .iter()
            .skip(1)
            .filter(|p| p.exit.is_none() && target::alive(p.session.pid))
            .map(|p| p.session.pid)
            .collect()
    }

    /// The files of process `pid` (a fork event lost: opened from now on).
    fn files_of(&mut self, pid: u32) -> &mut TargetFiles {
        self.files
            .entry(pid)
            .or_insert_with(|| TargetFiles::new(pid as i32))
    }

    /// Reads every known thread's name again: threads rename themselves
    /// (pthread_setname_np) after they start. A thread gone keeps its last name.
    pub(super) fn refresh_thread_names(&mut self) {
        for (&(pid, tid), name) in &mut self.threads {
            if let Some(now) = thread_name(pid, tid)
                && !now.is_empty()
            {
                *name = now;
            }
        }
    }

    /// The process ran a new program: the session and the recording learn its image, its
    /// files are opened and probed (with what its loader will load, when it is held), and a
    /// held process is continued.
    pub(super) fn on_exec(&mut self, ebpf: &mut Ebpf, pid: u32, held: bool, ts_ns: u64) {
        let root = pid == self.processes.root().pid;
        let image = ExecImage {
            pid: if root { 0 } else { pid },
            ts_ns,
            command: target::cmdline(pid as i32),
            exe: std::fs::read_link(format!("/proc/{pid}/exe"))
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            maps: std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default(),
        };
        let Some(session) = self.processes.get_mut(pid) else {
            return;
        };
        session.on_exec(&image);
        let mut paths = session.space.exec_files();
        self.record_with(|r| r.exec(&image));
        // A new program: its own files (the parent's descriptors no longer apply).
        let mut files = TargetFiles::new(pid as i32);
        files.open_mapped(&image.maps);
        if let Some(old) = self.files.insert(pid, files) {
            self.retired.push(old);
        }
        self.new_code = true;
        if root {
            self.command = Some(image.command.clone());
        }
        if let Some(allocators) = self.allocators.as_deref_mut() {
            if held && let Some(loader) = paths.iter().find(|f| is_loader(f)).cloned() {
                let env = target::loader_env(pid as i32);
                // What the loader will map, probed before the program runs: every library for
                // the traced command; for a followed process, whose libc the probes already
                // cover in every process, only when it preloads one (that takes a moment).
                if root || env.iter().any(|(k, _)| k == "LD_PRELOAD") {
                    paths.extend(needed_libraries_with(&loader, Path::new(&image.exe), &env));
                }
            }
            paths.retain(|f| !is_loader(f));
            let files = self.files.get_mut(&pid).expect("inserted above");
            for path in paths {
                let Some(via) = files.open_path(&path) else {
                    continue;
                };
                if let Err(e) = allocators.attach_file(ebpf, &path, &via, self.probe_pid) {
                    log::warn!("{:#}", anyhow::Error::from(e));
                }
                // Its table compiled (in the background) before it is mapped.
                if let Some(tables) = self.tables.as_mut()
                    && let Err(e) = tables.request(ebpf, &via)
                {
                    log::warn!("{:#}", anyhow::Error::from(e));
                }
            }
        }
        self.sync_tables(ebpf, pid);
        if held {
            self.continue_when_ready(pid);
        }
    }

    /// Continues a stopped process now, or once the tables it waits for are in.
    fn continue_when_ready(&mut self, pid: u32) {
        if self.unsynced.contains(&pid) {
            self.waiting.0.entry(pid).or_insert_with(Instant::now);
        } else {
            kill(pid as i32, libc::SIGCONT);
        }
    }

    /// Loads the tables compiled since the last call, gives them to the processes waiting for
    /// them and continues those stopped for them; continues anyway one stopped for longer
    /// than [`HOLD_LIMIT`].
    pub(super) fn tables_ready(&mut self, ebpf: &mut Ebpf) {
        let Some(tables) = self.tables.as_mut() else {
            return;
        };
        match tables.collect(ebpf) {
            Ok(0) => {}
            Ok(_) => {
                for pid in std::mem::take(&mut self.unsynced) {
                    self.sync_tables(ebpf, pid);
                }
            }
            Err(e) => log::warn!("{:#}", anyhow::Error::from(e)),
        }
        for (pid, ready) in self.waiting.due(&self.unsynced, Instant::now()) {
            if !ready {
                log::debug!("pid {pid} goes on before its unwind tables are in");
            }
            kill(pid as i32, libc::SIGCONT);
        }
    }

    /// Continues every process still stopped for its tables (tracing ends).
    pub(super) fn release_waiting(&mut self) {
        self.waiting.release();
    }

    /// Gives process `pid`'s executable mappings, as its session knows them now, their unwind
    /// tables.
    pub(super) fn sync_tables(&mut self, ebpf: &mut Ebpf, pid: u32) {
        let (Some(tables), Some(session), Some(files)) = (
            self.tables.as_mut(),
            self.processes.get(pid),
            self.files.get(&pid),
        ) else {
            return;
        };
        match tables.sync(
            ebpf,
            pid,
            session.space.exec_mappings(),
            files.substitutes(),
        ) {
            Ok(true) => {
                self.unsynced.insert(pid);
            }
            Ok(false) => {
                self.unsynced.remove(&pid);
            }
            Err(e) => log::warn!("{:#}", anyhow::Error::from(e)),
        }
    }

    /// What a report needs as of now (see [`Snapshotter::finish`]).
    pub(super) fn snapshot(
        &mut self,
        snapshotter: &mut Snapshotter,
        probes: &Probes,
        ending: Ending,
        max_sites: Option<usize>,
    ) -> Finish {
        self.read_counts(&probes.ebpf, true);
        if std::mem::take(&mut self.new_code) {
            snapshotter.forget_symbols();
        }
        self.refresh_thread_names();
        if let Some(command) = self.command.take() {
            snapshotter.target.command = command;
        }
        let counters = probes.counters().map_or_else(
            |e| {
                log::warn!("reading the kernel-side counters: {e}");
                Vec::new()
            },
            |c| c.to_vec(),
        );
        let allocators = self.allocators.as_deref();
        snapshotter.finish(
            Now {
                processes: self.processes,
                ebpf: &probes.ebpf,
                counters,
                probe_costs: if probes.run_stats.is_some() {
                    crate::probes::costs::probe_costs(
                        &probes.ebpf,
                        allocators
                            .map(AllocatorProbes::own_programs)
                            .unwrap_or_default(),
                    )
                } else {
                    Vec::new()
                },
                kernel_traced: probes.kernel_traced,
                allocator_files: allocators.map(AllocatorProbes::files).unwrap_or_default(),
                uprobe_links: allocators
                    .map(|a| a.links().name().to_string())
                    .unwrap_or_default(),
                files: &self.files,
                threads: &self.threads,
            },
            ending,
            max_sites,
        )
    }
}

/// A thread's name now (`/proc/PID/task/TID/comm`), if it still runs.
pub(super) fn thread_name(pid: u32, tid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
    Some(comm.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process goes on once its tables are in, or once it has waited the limit, whichever
    /// comes first; one still within the limit keeps waiting.
    #[test]
    fn a_stopped_process_goes_on_when_ready_or_at_the_limit() {
        let start = Instant::now();
        let mut w = Waiting::default();
        // Pids no process can have (above the largest pid_max, 2^22): a release on drop
        // signals nobody.
        let (a, b, c) = (1 << 30, (1 << 30) + 1, (1 << 30) + 2);
        for pid in [a, b, c] {
            w.0.insert(pid, start);
        }
        let unsynced = BTreeSet::from([b, c]);
        assert_eq!(w.due(&unsynced, start), [(a, true)]);
        assert!(w.due(&unsynced, start + HOLD_LIMIT / 2).is_empty());
        let unsynced = BTreeSet::from([c]);
        assert_eq!(w.due(&unsynced, start + HOLD_LIMIT / 2), [(b, true)]);
        assert_eq!(w.due(&unsynced, start + HOLD_LIMIT), [(c, false)]);
        assert!(w.0.is_empty());
    }
}
