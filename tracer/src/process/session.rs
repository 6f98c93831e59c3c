//! The state of one tracing session, what each event does to it, and the summary it makes.
//!
//! The same code serves a live run and the replay of a recording: a session starts from a
//! [`Start`], takes raw event records, and is summarized with a [`Finish`]. Both are what a
//! recording stores, so a replay's summary equals the live run's.

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::events::{ProbeCost, SyscallCall};
use serde::{Deserialize, Serialize};
use tracer_common::{Syscall, counter};

use crate::{
    aggregate::{
        Aggregate, HeapStats,
        kernel::KernelStats,
        syscalls::is_error,
        timeline::{self, Timeline},
        trend::SiteTrend,
    },
    attribution::{AddressSpace, join::Join, resident::PageSet, space::RegionKind},
    events::{self, Event},
    facts::{KernelPath, TargetFacts},
    gfp::GfpTable,
    summary::{
        EventCounts, ImageReport, SCHEMA, Summary, callers, findings,
        kernel::{KernelSummary, PathsSummary},
        notes,
        plumbing::Plumbing,
        site_frames::{Epoch, SiteFrames},
        user::{self, Stacks},
    },
    symbolize::{BlazeSymbolizer, Frame, SharedTable, Symbolizer},
};

/// What a session starts from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Start {
    pub pid: u32,
    pub command: Vec<String>,
    pub page_size: u64,
    /// `/proc/PID/maps` when tracing began.
    pub maps: String,
    /// `kmem:mm_page_alloc`'s print fmt: the kernel's GFP flag names.
    pub gfp_print_fmt: String,
    /// The program break when attaching to a running process.
    pub initial_break: Option<u64>,
    /// `--sample`: mean bytes between sampled allocations; 0 when every call was traced.
    #[serde(default)]
    pub sample_bytes: u64,
    /// `--pid`: the data regions' resident pages when tracing began (`/proc/PID/pagemap`):
    /// resident from the start, so that memory touched before attaching is not taken for
    /// never touched when the process can no longer be read at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resident_at_attach: Option<PageSet>,
}

impl Start {
    /// Checks what a recording's start record claims before a session is built on it.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.page_size.is_power_of_two() && (1 << 12..=1 << 16).contains(&self.page_size)) {
            return Err(format!(
                "page size {} is not a power of two from 4 KiB to 64 KiB",
                self.page_size
            ));
        }
        if self.sample_bytes > u64::from(u32::MAX) {
            return Err(format!(
                "sampling interval {} is above the 4 GiB tracer allows",
                self.sample_bytes
            ));
        }
        // User space ends below 2^57 even with five-level page tables.
        if let Some(pages) = &self.resident_at_attach
            && pages.page_size != self.page_size
        {
            return Err(format!(
                "resident pages of {} bytes in a process of {}-byte pages",
                pages.page_size, self.page_size
            ));
        }
        if let Some(brk) = self.initial_break
            && brk >= 1 << 57
        {
            return Err(format!(
                "program break {brk:#x} is not a user-space address"
            ));
        }
        Ok(())
    }
}

/// What a session ends with, besides its events: everything a summary needs that is not in
/// them, read from the kernel and the process's files at the end of the live run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Finish {
    pub target: TargetFacts,
    pub duration_ms: f64,
    /// CLOCK_MONOTONIC at the end, to age leaks.
    pub now_ns: u64,
    /// The kernel-side counters (see `tracer_common::counter`).
    pub counters: Vec<u64>,
    pub kernel_traced: bool,
    pub allocator_files: Vec<String>,
    /// How the allocator probes were attached: `session`, `multi` or `single` (empty in
    /// recordings made before it was kept, and without uprobes).
    #[serde(default)]
    pub uprobe_links: String,
    /// Which symbol table `symbols` is (see [`Epoch`]): 0, the default and that of every
    /// recording, says it is not kept between summaries.
    #[serde(skip)]
    pub symbols_epoch: Epoch,
    /// User stacks by id, innermost first (shared with the snapshotter: not copied for
    /// every summary).
    pub stacks: Arc<HashMap<i32, Vec<u64>>>,
    /// Every address of every site's stack, symbolized (shared like `stacks`).
    pub symbols: Arc<HashMap<u64, Vec<Frame>>>,
    pub kernel_stacks: Vec<KernelPath>,
    pub max_sites: usize,
    /// What the run traced: `full` or `kernel`.
    #[serde(default = "full_mode")]
    pub mode: String,
    /// `--min-age`: leaks count only blocks at least this old.
    #[serde(default)]
    pub min_age_ns: u64,
    /// The data regions' resident pages (`/proc/PID/pagemap`), when the process could still be
    /// read: what every resident figure is then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resident: Option<PageSet>,
    /// Slab caches the kernel merged, by the name its tracepoints give: the other names of
    /// the same cache (read from /sys/kernel/slab on the machine that ran).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slab_merges: BTreeMap<String, Vec<String>>,
    /// `--record-max`: events cut from the start of the recording (a live run has them all).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recording_cut_events: u64,
    /// A recording that ends before its finish (tracer killed): where its last whole record
    /// ends, and the file's length. Set by the replay; never recorded.
    #[serde(skip)]
    pub recording_ends_early: Option<(u64, u64)>,
    /// `--wrapper`: functions that are allocator plumbing besides the built-in ones (regular
    /// expressions; see [`crate::summary::plumbing`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wrappers: Vec<String>,
    /// Frame-pointer stacks ended at a return address that follows no call (see
    /// [`crate::symbolize::calls`]); the stacks in `stacks` are already ended there.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fp_stacks_ended: u64,
    /// `--suppress`: the rules (`leak:PATTERN`) of leaks known and accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suppressions: Vec<String>,
    /// `--costs`: each probe program's runs and run time (bpf_stats), costliest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probe_costs: Vec<ProbeCost>,
    /// `--cgroup`: the cgroup as the kernel counted it when the summary was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<crate::facts::CgroupFacts>,
    /// `--costs`: tracer's own CPU time (user and system) from its start to the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracer_cpu_ms: Option<f64>,
    /// `--max-sites`, when given: the text lists that many sites (else its own ten).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_sites: Option<usize>,
    /// `--follow`: what the other processes end with (the first process's is the rest of this),
    /// in the order they were created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessFinish>,
}

/// What a followed process ends with besides its events (see [`Finish`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcessFinish {
    pub pid: u32,
    /// Names of its threads seen, by thread id.
    #[serde(default)]
    pub threads: BTreeMap<u32, String>,
    /// Its sites' addresses, symbolized with its files.
    pub symbols: Arc<HashMap<u64, Vec<Frame>>>,
    /// Its data regions' resident pages, when it was still running at the end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resident: Option<PageSet>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn full_mode() -> String {
    "full".into()
}

/// A new program image of the process (after `execve`), read from /proc when it was seen: what
/// a replay needs of it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExecImage {
    /// The process that ran it (0 in recordings made before `--follow`: the traced one).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub pid: u32,
    /// CLOCK_MONOTONIC of the exec event.
    pub ts_ns: u64,
    /// The new command line (`/proc/PID/cmdline`).
    pub command: Vec<String>,
    /// The new program (`/proc/PID/exe`).
    pub exe: String,
    /// `/proc/PID/maps` of the new image.
    pub maps: String,
}

/// A running process that began to be traced while the run went on (it was in, or joined, a
/// followed cgroup): its books start from what it was then.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Joined {
    /// CLOCK_MONOTONIC when it joined the traced set.
    pub ts_ns: u64,
    /// Its parent then (perhaps untraced, outside the cgroup).
    pub ppid: u32,
    /// The process as it was: its maps, program break and resident pages.
    pub start: Start,
}

/// What a processed event asks of the live run.
#[derive(Debug, Clone, PartialEq)]
pub enum Followup {
    /// A file newly mapped executable (a library loaded with dlopen): probe it.
    Mapped(MappedFile),
    /// The process ran a new program: read it and call [`Session::on_exec`]; `held`: it is
    /// stopped until continued.
    Exec { held: bool, ts_ns: u64 },
    /// `--follow`: the process created child process `child`, traced from now on (see
    /// [`crate::process::table::Processes`]).
    Forked { child: u32 },
    /// The process stopped itself after mapping code: give it its unwind tables and continue
    /// it.
    Held,
    /// The process stopped itself at `_exit`: check its live blocks for leaks, then continue
    /// it.
    HeldAtExit,
    /// The kernel's OOM killer chose it: write its report now (`--on-oom`).
    OomVictim,
}

/// A file the process newly mapped executable, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedFile {
    pub path: PathBuf,
    pub addr: u64,
}

/// The stacks of a session, each cut where it leaves the process's code (see
/// [`AddressSpace::frames_in_code`]).
pub struct CodeStacks<'a> {
    stacks: &'a HashMap<i32, Vec<u64>>,
    space: &'a AddressSpace,
}

impl Stacks for CodeStacks<'_> {
    fn stack(&self, id: i32) -> Option<&[u64]> {
        Some(self.space.frames_in_code(self.stacks.get(&id)?))
    }
}

pub struct Session {
    pub pid: u32,
    pub agg: Aggregate,
    pub space: AddressSpace,
    pub counts: EventCounts,
    pub kernel: KernelStats,
    pub join: Join,
    pub gfp: GfpTable,
    pub timeline: Timeline,
    /// Every site's live bytes over time: the leak suspects.
    pub trend: SiteTrend,
    /// Every site's stack, kept between summaries (see [`SiteFrames`]).
    site_frames: RefCell<SiteFrames>,
    page_size: u64,
    /// Executable files already seen mapped.
    seen_files: HashSet<PathBuf>,
    last_ts: u64,
    /// The first event's time: what image start times count from.
    first_ts: Option<u64>,
    /// The program images that ran, the first one's command from the start.
    images: Vec<ImageReport>,
    /// The resident pages at attach were known (see [`Start::resident_at_attach`]).
    seeded: bool,
    /// The kernel's OOM killer chose it.
    oom: Option<tracer_common::OomEvent>,
}

/// Whether a file is a dynamic loader (`ld-linux-x86-64.so.2`, `ld-linux-aarch64.so.1`, ...):
/// its internal malloc serves the loader, not the program.
/// Addresses symbolized in one call: progress is reported between calls.
const SYMBOLIZE_PIECE: usize = 4096;

pub fn is_loader(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("ld-"))
}

impl Session {
    pub fn new(start: &Start) -> Self {
        let space = AddressSpace::from_proc_maps(&start.maps);
        let seen_files = space.exec_files().into_iter().collect();
        let mut agg = Aggregate::new(start.page_size);
        agg.heap = HeapStats::sampled(start.sample_bytes);
        if let Some(brk) = start.initial_break {
            agg.syscalls.set_initial_break(brk);
        }
        let mut join = Join::default();
        if let Some(pages) = &start.resident_at_attach {
            join.seed_resident(pages, &space);
        }
        Session {
            pid: start.pid,
            agg,
            space,
            counts: EventCounts::default(),
            kernel: KernelStats::default(),
            join,
            seeded: start.resident_at_attach.is_some(),
            oom: None,
            gfp: GfpTable::from_print_fmt(&start.gfp_print_fmt),
            timeline: Timeline::default(),
            trend: SiteTrend::default(),
            site_frames: RefCell::default(),
            page_size: start.page_size,
            seen_files,
            last_ts: 0,
            first_ts: None,
            images: vec![ImageReport {
                command: start.command.clone(),
                exe: String::new(),
                started_ms: 0.0,
                live_blocks_at_exec: None,
                live_bytes_at_exec: None,
            }],
        }
    }

    /// Processes one raw event record. Returns what the live run has to do about it (see
    /// [`Followup`]).
    pub fn process(&mut self, record: &[u8]) -> Option<Followup> {
        match events::decode(record) {
            Ok(event) => self.apply(&event),
            Err(e) => {
                self.counts.received += 1;
                self.counts.decode_errors += 1;
                log::debug!("undecodable record: {e}");
                None
            }
        }
    }

    /// Processes one decoded event of this process.
    pub fn apply(&mut self, event: &Event) -> Option<Followup> {
        if let Event::FaultPage(fault, page) = *event {
            self.apply(&Event::Fault(fault));
            return self.apply(&Event::PageAlloc(page));
        }
        self.counts.received += 1;
        let ts = event.header().ts_ns;
        self.first_ts.get_or_insert(ts);
        let lib = self.on_event(event);
        // Stamps from different CPUs may be slightly out of order: time only moves on.
        self.last_ts = self.last_ts.max(ts);
        let (heap, space, join, kernel) = (&self.agg.heap, &self.space, &self.join, &self.kernel);
        self.timeline
            .observe(self.last_ts, || sample(heap, space, join, kernel));
        self.trend.observe(self.last_ts, heap);
        lib
    }

    /// The session of child process `pid`, forked from this one at `ts_ns`: its address space
    /// and program break are this process's as of now. Its heap starts empty: the blocks it
    /// inherited are the parent's (a free of one counts as a free of an unknown block).
    pub fn forked(&self, pid: u32, ts_ns: u64) -> Session {
        let mut agg = Aggregate::new(self.page_size);
        agg.heap = HeapStats::sampled(self.agg.heap.sample_bytes());
        agg.syscalls.brk.current_break = self.agg.syscalls.brk.current_break;
        let image = self.images.last();
        Session {
            pid,
            agg,
            space: self.space.clone(),
            counts: EventCounts::default(),
            kernel: KernelStats::default(),
            join: Join::default(),
            gfp: self.gfp.clone(),
            timeline: Timeline::starting_at(ts_ns),
            trend: SiteTrend::default(),
            site_frames: RefCell::default(),
            page_size: self.page_size,
            seen_files: self.seen_files.clone(),
            last_ts: ts_ns,
            first_ts: Some(ts_ns),
            seeded: false,
            oom: None,
            images: vec![ImageReport {
                command: image.map(|i| i.command.clone()).unwrap_or_default(),
                exe: image.map(|i| i.exe.clone()).unwrap_or_default(),
                started_ms: 0.0,
                live_blocks_at_exec: None,
                live_bytes_at_exec: None,
            }],
        }
    }

    /// The command line of the program the process runs now.
    pub fn command(&self) -> &[String] {
        self.images.last().map_or(&[], |i| &i.command)
    }

    /// The first event's time.
    pub fn first_ts(&self) -> Option<u64> {
        self.first_ts
    }

    /// The last event's time.
    pub fn last_ts(&self) -> u64 {
        self.last_ts
    }

    fn on_event(&mut self, event: &Event) -> Option<Followup> {
        match event {
            Event::Syscall(e) => {
                let brk_before = self.agg.syscalls.brk.current_break;
                self.agg.syscalls.on_syscall(e);
                self.agg.callers.on_syscall(e, brk_before);
                self.join.on_syscall(e, brk_before);
                if e.syscall == Syscall::Brk
                    && e.args[0] != 0
                    && let Some(before) = brk_before
                {
                    let moved = (e.ret as u64).abs_diff(before);
                    if moved > 0 {
                        self.timeline
                            .mark(e.header.ts_ns.max(self.last_ts), "brk", moved);
                    }
                }
                let path = self.follow_mapping(e)?;
                (!is_loader(&path) && self.seen_files.insert(path.clone())).then_some(
                    Followup::Mapped(MappedFile {
                        path,
                        addr: e.ret as u64,
                    }),
                )
            }
            Event::Open(e) => {
                self.space.on_open(e.fd, &e.path);
                None
            }
            Event::Alloc(e) => {
                let site = self.agg.heap.on_alloc(e);
                self.join.on_alloc(e, &self.space, site);
                None
            }
            Event::PageAlloc(e) => {
                self.kernel.on_page_alloc(e);
                self.join.on_page_alloc(e);
                None
            }
            Event::PageFree(e) => {
                self.kernel.on_page_free(e);
                None
            }
            Event::SlabAlloc(e) => {
                self.kernel.on_slab_alloc(e);
                self.join.on_slab_alloc(e);
                None
            }
            Event::SlabFree(e) => {
                self.kernel.on_slab_free(e);
                None
            }
            Event::SlabCount(e) => {
                self.kernel.on_slab_count(e);
                None
            }
            Event::Fault(e) => {
                self.agg.callers.on_fault(e);
                self.kernel.on_fault(self.space.region(e.address).name());
                self.join.on_fault(e, &mut self.agg.heap, &self.space);
                None
            }
            Event::LeakCheck(e) => {
                self.agg.heap.on_leak_check(e);
                None
            }
            Event::BlockKind(e) => {
                self.agg.heap.on_block_kind(e);
                None
            }
            Event::Oom(e) => {
                self.oom = Some(*e);
                let rss_kb = e
                    .anon_rss_kb
                    .saturating_add(e.file_rss_kb)
                    .saturating_add(e.shmem_rss_kb);
                let at = e.header.ts_ns.max(self.last_ts);
                self.timeline
                    .mark(at, "oom_kill", rss_kb.saturating_mul(1024));
                Some(Followup::OomVictim)
            }
            Event::Exec(e) => Some(Followup::Exec {
                held: e.held != 0,
                ts_ns: e.header.ts_ns,
            }),
            // Processes come and go in [`crate::process::table::Processes`]; a fault and its page
            // are split in `apply`.
            Event::Fork(_) | Event::Exit(_) | Event::Held(_) | Event::FaultPage(..) => None,
        }
    }

    /// Ends a stack the kernel walked by frame pointer (`stack[0]` is the probed instruction,
    /// the rest return addresses) at its first return address that follows no call: the walk
    /// left code that keeps frame pointers there. Whether it was ended.
    pub fn end_at_calls(
        &self,
        stack: &mut Vec<u64>,
        substitutes: &HashMap<PathBuf, PathBuf>,
        check: &mut crate::symbolize::calls::CallCheck,
    ) -> bool {
        let end = stack.iter().enumerate().skip(1).position(|(_, &addr)| {
            self.space.file_offset(addr).is_some_and(|(path, offset)| {
                let path: &Path = path;
                let via = substitutes.get(path).map_or(path, PathBuf::as_path);
                !check.follows_call(via, offset)
            })
        });
        match end {
            Some(i) => {
                stack.truncate(i + 1);
                true
            }
            None => false,
        }
    }

    /// The live blocks, lowest address first: their starts and sizes (for a leak check).
    pub fn live_block_spans(&self) -> (Vec<u64>, Vec<u64>) {
        self.agg.heap.live_blocks().map(|(s, z, _)| (s, z)).unzip()
    }

    /// The process ran a new program: the old image's books are closed (its live blocks were
    /// released by the exec, not leaked, and said so), and the model follows the new one.
    pub fn on_exec(&mut self, image: &ExecImage) {
        let (blocks, bytes) = self.agg.heap.release_all();
        if let Some(last) = self.images.last_mut() {
            last.live_blocks_at_exec = Some(blocks);
            last.live_bytes_at_exec = Some(bytes);
        }
        let start = *self.first_ts.get_or_insert(image.ts_ns);
        self.images.push(ImageReport {
            command: image.command.clone(),
            exe: image.exe.clone(),
            started_ms: image.ts_ns.saturating_sub(start) as f64 / 1e6,
            live_blocks_at_exec: None,
            live_bytes_at_exec: None,
        });
        self.space.on_exec(&image.maps);
        // A new address space: a library mapped again is news to the new image's files.
        self.seen_files = self.space.exec_files().into_iter().collect();
        self.join.on_exec();
        self.agg.syscalls.brk.current_break = None;
        self.last_ts = self.last_ts.max(image.ts_ns);
    }

    /// Keeps the address-space model current; returns a file newly mapped executable.
    fn follow_mapping(&mut self, e: &SyscallCall) -> Option<PathBuf> {
        if is_error(e.ret) {
            return None;
        }
        let a = e.args;
        let ts = e.header.ts_ns.max(self.last_ts);
        match e.syscall {
            Syscall::Mmap => self.timeline.mark(ts, "mmap", a[1]),
            Syscall::Munmap => self.timeline.mark(ts, "munmap", a[1]),
            _ => {}
        }
        match e.syscall {
            Syscall::Mmap => self
                .space
                .on_mmap(e.ret as u64, a[1], a[2], a[3], a[4] as i32, a[5])
                .map(|p| p.to_path_buf()),
            Syscall::Munmap => {
                self.space.on_munmap(a[0], a[1]);
                None
            }
            Syscall::Mremap => {
                self.space.on_mremap(a[0], a[1], a[2], e.ret as u64);
                None
            }
            Syscall::Brk => {
                self.space.on_brk(e.ret as u64);
                None
            }
            Syscall::Mprotect => {
                self.space.on_mprotect(a[0], a[1], a[2]);
                None
            }
            Syscall::Openat | Syscall::Madvise => None,
        }
    }

    /// Stack ids the summary needs.
    pub fn stack_ids(&self) -> Vec<i32> {
        let mut ids = self.agg.heap.stack_ids();
        ids.extend(self.agg.callers.stack_ids());
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Each stack as far as its frames lie in code the process mapped (see
    /// [`AddressSpace::frames_in_code`]): what every report shows.
    pub fn code_stacks<'a>(&'a self, stacks: &'a HashMap<i32, Vec<u64>>) -> CodeStacks<'a> {
        CodeStacks {
            stacks,
            space: &self.space,
        }
    }

    /// Symbolizes every address of the sites from heap index `from` on (those before it were
    /// done by an earlier call) with the process's files (which must still be there), into
    /// `table`: the table a summary and a recording use. Addresses already in it are not
    /// resolved again. Returns the number of sites done.
    pub fn symbol_table(
        &self,
        stacks: &HashMap<i32, Vec<u64>>,
        substitutes: &HashMap<PathBuf, PathBuf>,
        table: &mut Arc<HashMap<u64, Vec<Frame>>>,
        from: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> usize {
        let stacks = &self.code_stacks(stacks);
        let mut seen = HashSet::new();
        let mut missing = Vec::new();
        let mut want = |addr: u64| {
            if !table.contains_key(&addr) && seen.insert(addr) {
                missing.push(addr);
            }
        };
        let sites = self.agg.heap.sites();
        for (key, _) in sites.get(from..).unwrap_or_default() {
            user::site_addresses(key, stacks)
                .into_iter()
                .for_each(&mut want);
        }
        for id in self.agg.callers.stack_ids() {
            stacks
                .stack(id)
                .into_iter()
                .flatten()
                .copied()
                .for_each(&mut want);
        }
        if !missing.is_empty() {
            let started = std::time::Instant::now();
            let mut symbolizer = BlazeSymbolizer::new(&self.space, substitutes);
            let table = Arc::make_mut(table);
            // In pieces, so that a long symbolization can say how far it is.
            for (i, piece) in missing.chunks(SYMBOLIZE_PIECE).enumerate() {
                progress(i * SYMBOLIZE_PIECE, missing.len());
                table.extend(piece.iter().copied().zip(symbolizer.symbolize(piece)));
            }
            progress(missing.len(), missing.len());
            log::debug!(
                "pid {}: {} addresses symbolized in {:?}",
                self.pid,
                missing.len(),
                started.elapsed()
            );
        }
        sites.len()
    }

    /// The summary: the same for a live run and for the replay of its recording.
    pub fn summarize(&self, finish: &Finish) -> Summary {
        let mut symbolizer = SharedTable(&finish.symbols);
        let stacks = self.code_stacks(&finish.stacks);
        let trend = self.trend.closed(self.last_ts, &self.agg.heap);
        let plumbing = Plumbing::new(&finish.wrappers).unwrap_or_else(|e| {
            log::warn!("--wrapper: {e}: only the built-in allocator functions are plumbing");
            Plumbing::default()
        });
        let mut frames = self.site_frames.borrow_mut();
        frames.update(
            finish.symbols_epoch,
            &plumbing,
            &finish.wrappers,
            &self.agg.heap,
            &stacks,
            &mut symbolizer,
        );
        let user = user::build(
            &self.agg.heap,
            &self.join,
            &frames,
            user::BuildOptions {
                now_ns: finish.now_ns,
                min_age_ns: finish.min_age_ns,
                trend: &trend,
                resident: finish.resident.as_ref(),
                allocator_files: finish.allocator_files.clone(),
            },
        );
        let sampling = (self.agg.heap.sample_bytes() > 0).then(|| user::Sampling {
            mean_bytes: self.agg.heap.sample_bytes(),
            sampled_calls: self.agg.heap.seen_calls,
            unsampled_calls: finish
                .counters
                .get(counter::ALLOC_UNSAMPLED as usize)
                .copied()
                .unwrap_or(0),
        });
        let mut user = user::UserSummary {
            uprobe_links: finish.uprobe_links.clone(),
            sampling,
            resident_source: match (&finish.resident, self.seeded) {
                (None, true) => "pagemap_at_attach",
                _ => user.resident_source,
            },
            ..user
        };
        crate::summary::suppress::apply(
            &mut user,
            &crate::summary::suppress::Suppressions::from_lines(&finish.suppressions),
        );
        let mut kernel = KernelSummary::new(&self.kernel, &self.join, &self.gfp);
        kernel.traced = finish.kernel_traced;
        kernel.stacks = finish.kernel_stacks.iter().map(Into::into).collect();
        kernel.slab_merges = finish.slab_merges.clone();
        let mut counts = self.counts.clone();
        add_counters(&mut counts, finish);
        let mut timeline = self.timeline.clone();
        let mut end = sample(&self.agg.heap, &self.space, &self.join, &self.kernel);
        if let Some(pages) = &finish.resident {
            end.resident = pages.bytes();
        }
        timeline.close(self.last_ts, end);
        let callers = callers::build(
            &self.agg.callers,
            &stacks,
            &mut symbolizer,
            finish.max_sites,
        );
        drop(frames);
        let heap_top = self
            .heap_top(&stacks, &mut symbolizer)
            .map(|(size, mut frames)| {
                plumbing.mark_stack(&mut frames);
                (size, frames)
            });
        let mut summary = Summary {
            schema: SCHEMA,
            max_sites: finish.max_sites,
            // A `Finish::default()` (tests) says nothing: the default mode.
            mode: if finish.mode.is_empty() {
                full_mode()
            } else {
                finish.mode.clone()
            },
            callers,
            timeline,
            target: (&finish.target).into(),
            duration_ms: finish.duration_ms,
            events: counts,
            notes: Vec::new(),
            syscalls: {
                let mut sc = self.agg.syscalls.clone();
                sc.madvise.resident_bytes = self.join.madvise_resident_bytes;
                sc
            },
            user,
            kernel,
            paths: PathsSummary::new(&self.join),
            findings: Vec::new(),
            images: if self.images.len() > 1 {
                self.images.clone()
            } else {
                Vec::new()
            },
            processes: Vec::new(),
            text_sites: None,
            costs: crate::summary::costs::of(
                &finish.counters,
                &finish.probe_costs,
                finish.tracer_cpu_ms,
            ),
            cgroup: None,
            oom: self
                .oom
                .map(|e| crate::summary::oom::OomVictim::of(&e, self.first_ts.unwrap_or(0))),
            system: None,
        };
        let in_heap = |addr: u64| {
            matches!(
                self.space.region(addr),
                RegionKind::Heap | RegionKind::ThreadArena
            )
        };
        let facts = findings::HeapState {
            page_size: self.page_size,
            heap_top,
            heap_resident: match &finish.resident {
                Some(pages) => pages.bytes_in_ranges(
                    &self
                        .space
                        .ranges_of(&[RegionKind::Heap, RegionKind::ThreadArena]),
                ),
                None => self.join.resident_bytes_where(in_heap),
            },
            arena_mapped: self.space.mapped_bytes_of(RegionKind::ThreadArena),
            threads: self.agg.heap.threads(),
            arena_resident: match &finish.resident {
                Some(pages) => {
                    pages.bytes_in_ranges(&self.space.ranges_of(&[RegionKind::ThreadArena]))
                }
                None => self
                    .join
                    .resident_bytes_where(|p| self.space.region(p) == RegionKind::ThreadArena),
            },
            heap_live: self
                .agg
                .heap
                .live_blocks()
                .filter(|&(start, _, _)| in_heap(start))
                .fold(0u64, |a, (_, size, _)| a.saturating_add(size)),
        };
        summary.user.heap_resident_bytes = facts.heap_resident;
        plumbing.mark(&mut summary);
        summary.text_sites = finish.text_sites;
        summary.findings = findings::find(&summary, &facts);
        summary.notes = notes::of(&summary);
        summary
    }

    /// The live block highest in the brk heap (what keeps `brk` from shrinking): its size and
    /// its stack.
    fn heap_top(
        &self,
        stacks: &dyn Stacks,
        symbolizer: &mut dyn Symbolizer,
    ) -> Option<(u64, Vec<Frame>)> {
        let (_, size, key) = self
            .agg
            .heap
            .live_blocks_from_top()
            .find(|&(start, _, _)| self.space.region(start) == RegionKind::Heap)?;
        let addrs = user::site_addresses(&key, stacks);
        let frames = symbolizer.symbolize(&addrs).into_iter().flatten().collect();
        Some((size, frames))
    }
}

/// Adds what the kernel-side counters of `finish` say to `counts` (drops, unpaired calls,
/// lost stacks, ...), and the events cut from a recording.
pub fn add_counters(counts: &mut EventCounts, finish: &Finish) {
    let k = |c: u32| finish.counters.get(c as usize).copied().unwrap_or(0);
    // Saturating: the counters of a recording are whatever it says.
    let sum = |cs: &[u32]| cs.iter().fold(0u64, |a, &c| a.saturating_add(k(c)));
    counts.dropped = counts.dropped.saturating_add(sum(&[
        counter::RINGBUF_DROPPED,
        counter::SYSCALL_ENTRY_STORE_FAILED,
        counter::ALLOC_STATE_STORE_FAILED,
    ]));
    counts.unpaired = sum(&[counter::SYSCALL_UNPAIRED_EXIT, counter::ALLOC_UNPAIRED_EXIT]);
    counts.nested_allocator_calls = k(counter::ALLOC_NESTED);
    counts.stack_collisions = k(counter::STACK_COLLIDED);
    counts.stack_map_full = k(counter::STACK_MAP_FULL);
    counts.stacks_truncated = k(counter::UNWIND_TRUNCATED);
    counts.fp_stacks_ended = finish.fp_stacks_ended;
    counts.unwound_collisions = k(counter::UNWIND_COLLIDED);
    counts.unwound_map_full = k(counter::UNWIND_MAP_FULL);
    counts.stacks_lost = sum(&[
        counter::STACK_FAILED,
        counter::STACK_COLLIDED,
        counter::STACK_MAP_FULL,
    ]);
    counts.child_processes = k(counter::CHILD_PROCESSES);
    counts.children_lost = k(counter::FOLLOW_FULL);
    counts.read_failures = k(counter::READ_FAILED);
    counts.cut_from_recording = finish.recording_cut_events;
    counts.recording_ends_early = finish.recording_ends_early;
}

/// The process's memory now, for the timeline.
fn sample(
    heap: &HeapStats,
    space: &AddressSpace,
    join: &Join,
    kernel: &KernelStats,
) -> timeline::Sample {
    timeline::Sample {
        live_heap: heap.live_bytes,
        mapped: space.data_bytes(),
        resident: join.resident_bytes(),
        slab: kernel.slab.live_bytes_at_end,
        buddy: kernel.buddy.live_pages_at_end * 4096,
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
