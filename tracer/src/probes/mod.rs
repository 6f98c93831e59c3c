//! Loading the eBPF object, configuring it for this kernel and target, and attaching probes.

pub mod btf;
pub mod costs;
pub mod exit;
pub mod kernel;
pub mod multi;
pub mod offset;
pub mod slab_counts;
pub mod stacks;
pub mod tracefs;
pub mod uprobes;

use std::{collections::HashMap, os::fd::BorrowedFd};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, MapError, PerCpuArray},
    programs::{ProgramError, RawTracePoint, TracePoint},
};
use thiserror::Error;
use tracer_common::{
    CONFIG_GLOBAL, CONTROL_MAP, COUNTERS_MAP, Config, DWARF_STACKS_MAP, EVENTS_MAP,
    FAULT_STASH_MAP, FOLLOWED_MAP, FaultEvent, KernelLayout, LIVE_PAGE_BITS_MAP, LIVE_PAGES_MAP,
    MAX_LIVE_KERNEL_OBJECTS, MAX_SAMPLED_BLOCKS, MAX_SYSCALL_ARGS, PAGE_OWNERS_MAP,
    SAMPLE_TABLE_LEN, SAMPLE_TABLE_MAP, SAMPLE_TABLE_ONE, SAMPLED_MAP, STACKS_MAP, Syscall,
    SyscallOffsets, config_flags, counter, kind,
};

use self::{
    kernel::{KernelProbes, RawUnsupported},
    tracefs::{Tracefs, TracefsError},
};

/// The eBPF object built by `build.rs`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

#[derive(Debug, Error)]
pub enum ProbeError {
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error(
        "tracepoint syscalls:sys_enter_{syscall} has {found} argument fields, expected {expected}"
    )]
    SyscallArgs {
        syscall: &'static str,
        found: usize,
        expected: usize,
    },
    #[error("the tracepoint programs cannot attach as raw tracepoints (--kernel-probes raw)")]
    Raw(#[source] RawUnsupported),
    #[error("loading the eBPF programs failed")]
    Load(#[source] Box<EbpfError>),
    #[error("--costs: the kernel's bpf_stats could not be enabled ({0})")]
    Stats(String),
    #[error("the eBPF object has no program {0}")]
    MissingProgram(String),
    #[error("loading eBPF program {program} failed")]
    ProgramLoad {
        program: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("attaching {program} to tracepoint {category}:{name} failed")]
    Attach {
        program: String,
        category: String,
        name: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("--follow needs the task and sched tracepoints: {0}")]
    Follow(String),
    #[error("eBPF map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<MapError>,
    },
}

/// What to load.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    pub target_tgid: u32,
    /// Ring buffer size in bytes: a power of two, at least a page.
    pub ring_bytes: u32,
    /// Wake the reader once this many bytes wait.
    pub wakeup_bytes: u32,
    /// Record kernel stacks of page and slab allocations.
    pub kernel_stacks: bool,
    /// Attach the kmem and fault tracepoints.
    pub kernel: bool,
    /// Entries of the user stack map.
    pub max_stacks: u32,
    /// Record the user stack of every page fault.
    pub fault_stacks: bool,
    /// `--sample`: mean bytes between sampled allocations (0: all).
    pub sample_bytes: u32,
    /// How the tracepoint programs attach.
    pub kernel_probes: KernelProbes,
    /// Stop the process when it runs a new program until it is probed (launched commands).
    pub hold_exec: bool,
    /// Hold launched and followed processes at `_exit` for their leak check.
    pub hold_exit: bool,
    /// `--tid`: only this thread's allocator calls (0: all).
    pub target_tid: u32,
    /// `--follow`: trace the child processes too, and hear of every fork and exit.
    pub follow: bool,
    /// Walk allocation stacks with the unwind tables (`--stacks dwarf`).
    pub dwarf: bool,
    /// The allocator uprobes will be attached (every mode but `--mode kernel`).
    pub allocator_probes: bool,
    /// Time each stack walk (`--costs`).
    pub time_unwind: bool,
    /// The unwinder's caches (rows by address, a window of the stack).
    pub row_cache: bool,
    /// `--system`: every process counted in the kernel (see [`build_system_config`]).
    pub system: Option<SystemProbes>,
}

/// What a `--system` run's programs do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemProbes {
    /// Count.
    Count,
    /// Return at once: the floor any program on those tracepoints costs (the bench's).
    Empty,
}

/// One tracepoint program and where it attaches.
pub struct Attachment {
    program: String,
    /// The perf tracepoint's category; `None` for a raw tracepoint.
    category: Option<&'static str>,
    name: String,
}

impl Attachment {
    fn new(category: &'static str, name: &str) -> Self {
        Attachment {
            program: name.to_string(),
            category: Some(category),
            name: name.to_string(),
        }
    }

    /// A syscall's perf tracepoint: `dir` is `enter` or `exit`.
    fn syscall(dir: &str, syscall: Syscall) -> Self {
        Attachment::new("syscalls", &format!("sys_{dir}_{}", syscall.name()))
    }

    fn raw(name: &str) -> Self {
        Attachment {
            program: format!("raw_{name}"),
            category: None,
            name: name.to_string(),
        }
    }
}

/// The perf tracepoints beside the syscalls' and kmem's, as (category, name).
const NEWTASK: (&str, &str) = ("task", "task_newtask");
const EXEC: (&str, &str) = ("sched", "sched_process_exec");
const EXIT: (&str, &str) = ("sched", "sched_process_exit");
const FAULT: (&str, &str) = ("exceptions", "page_fault_user");
const OOM: (&str, &str) = ("oom", "mark_victim");

/// Every program userspace may ask the eBPF object for, in any mode on any kernel: the
/// tracepoint programs as [`build_config`] names them, and the allocator programs.
pub fn program_names() -> Vec<String> {
    let syscalls = Syscall::ALL
        .into_iter()
        .flat_map(|s| ["enter", "exit"].map(|dir| Attachment::syscall(dir, s)));
    let kmem = kernel::KMEM_TRACEPOINTS
        .iter()
        .chain(&kernel::KMEM_NODE_VARIANTS)
        .map(|n| Attachment::new("kmem", n));
    let other = [NEWTASK, EXEC, EXIT, FAULT, OOM].map(|(category, n)| Attachment::new(category, n));
    let raw = kernel::RAW_TRACEPOINTS
        .iter()
        .chain(&kernel::RAW_KERNEL_TRACEPOINTS)
        .map(|(n, _)| Attachment::raw(n));
    syscalls
        .chain(kmem)
        .chain(other)
        .chain(raw)
        .map(|a| a.program)
        .chain(uprobes::PROGRAMS.map(String::from))
        .chain([exit::PROGRAM.to_string()])
        .collect()
}

/// The kernel layout for the raw programs, when `wanted` and possible.
fn raw_kernel_layout(wanted: KernelProbes) -> Result<Option<KernelLayout>, ProbeError> {
    if wanted == KernelProbes::Perf {
        return Ok(None);
    }
    let layout = btf::Btf::from_sys()
        .map_err(|e| RawUnsupported(format!("{e}")))
        .and_then(|btf| kernel::raw_layout(&btf));
    match (layout, wanted) {
        (Ok(layout), _) => Ok(Some(layout)),
        (Err(e), KernelProbes::Raw) => Err(ProbeError::Raw(e)),
        (Err(e), _) => {
            log::debug!("the tracepoint programs attach as perf tracepoints: {e}");
            Ok(None)
        }
    }
}

/// Reads every tracepoint layout the programs need (from BTF for raw tracepoints, from tracefs
/// for perf ones), and lists the tracepoints to attach. The syscall tracepoints are required;
/// the kmem, fault and task ones are optional: without them the run goes on, with a warning,
/// without what they show.
pub fn build_config(
    tracefs: &Tracefs,
    opts: &LoadOptions,
) -> Result<(Config, Vec<Attachment>), ProbeError> {
    if let Some(system) = opts.system {
        return build_system_config(tracefs, opts, system);
    }
    let mut config = Config::ZERO;
    config.target_tgid = opts.target_tgid;
    config.wakeup_bytes = opts.wakeup_bytes;
    config.sample_bytes = opts.sample_bytes;
    config.target_tid = opts.target_tid;
    let mut attach = Vec::new();
    if let Some(layout) = raw_kernel_layout(opts.kernel_probes)? {
        config.layout = layout;
        // Raw syscall programs run on every syscall of the machine; the perf ones only on the
        // traced syscalls, which costs the rest of the machine less while tracing and the run
        // a grace period per tracepoint at its end: `raw` takes that trade, `auto` does not.
        let (syscalls, other) = kernel::RAW_TRACEPOINTS.split_at(2);
        if opts.kernel_probes == KernelProbes::Raw {
            attach.extend(syscalls.iter().map(|(n, _)| Attachment::raw(n)));
        } else {
            attach_perf_syscalls(tracefs, &mut config, &mut attach)?;
        }
        let kernel: &[_] = if opts.kernel {
            config.flags |= config_flags::KMEM;
            &kernel::RAW_KERNEL_TRACEPOINTS
        } else {
            &[]
        };
        attach.extend(
            other
                .iter()
                .filter(|(n, _)| opts.follow || *n != "sched_process_exit")
                .chain(kernel)
                .map(|(n, _)| Attachment::raw(n)),
        );
    } else {
        attach_perf_syscalls(tracefs, &mut config, &mut attach)?;
        if opts.kernel {
            attach_perf_kernel(tracefs, &mut config, &mut attach);
        }
        // Child processes are counted in every mode: the summary says they were not traced.
        match kernel::newtask_offsets(tracefs, &mut config.kmem) {
            Ok(()) => attach.push(Attachment::new(NEWTASK.0, NEWTASK.1)),
            Err(e) if opts.follow => return Err(ProbeError::Follow(e.to_string())),
            Err(e) => log::warn!("child processes are not counted: {e}"),
        }
        attach.push(Attachment::new(EXEC.0, EXEC.1));
        if opts.follow {
            kernel::exit_offsets(tracefs, &mut config.kmem)
                .map_err(|e| ProbeError::Follow(e.to_string()))?;
            attach.push(Attachment::new(EXIT.0, EXIT.1));
            // Exit codes are read from the task (without BTF, they are not known).
            config.layout.task_exit_code = btf::Btf::from_sys()
                .ok()
                .and_then(|btf| kernel::task_exit_code(&btf))
                .unwrap_or(0);
        }
    }
    // Once per kill, in every mode: the report of a traced process the OOM killer chose.
    match kernel::oom_offsets(tracefs, &mut config.kmem) {
        Ok(()) => attach.push(Attachment::new(OOM.0, OOM.1)),
        Err(e) => log::warn!("OOM kills of traced processes are not reported: {e}"),
    }
    if opts.follow {
        config.flags |= config_flags::FOLLOW;
    }
    if opts.dwarf {
        config.flags |= config_flags::DWARF;
    }
    if opts.time_unwind {
        config.flags |= config_flags::TIME_UNWIND;
    }
    if !opts.row_cache {
        config.flags |= config_flags::NO_UNWIND_CACHES;
    }
    if opts.allocator_probes {
        config.flags |= config_flags::ALLOCATOR_PROBES;
    }
    if opts.hold_exec {
        config.flags |= config_flags::HOLD_EXEC;
    }
    if opts.hold_exit {
        config.flags |= config_flags::HOLD_EXIT;
    }
    if config.flags & config_flags::KMEM != 0 {
        // Page blocks marked in a bitmap over the machine's frames, not a hash map: an insert
        // and a delete per page cost most of a page's tracing.
        config.page_bits = std::fs::read_to_string("/proc/zoneinfo")
            .ok()
            .and_then(|z| kernel::frames_end(&z))
            .map_or(0, kernel::page_bits);
    }
    if opts.kernel_stacks {
        config.flags |= config_flags::KERNEL_STACKS;
    } else {
        config.flags |= config_flags::COUNT_SLAB;
    }
    if opts.fault_stacks {
        config.flags |= config_flags::FAULT_STACKS;
    }
    Ok((config, attach))
}

/// `--system`: the entries of the four syscalls that map memory (perf tracepoints: they fire
/// for those syscalls only), the page and slab allocations and page frees, and the user page
/// faults (raw where this kernel allows), each hit counted to its process in the kernel. Slab
/// frees are not attached: what they would count (the object's process) costs a table of
/// every object.
fn build_system_config(
    tracefs: &Tracefs,
    opts: &LoadOptions,
    system: SystemProbes,
) -> Result<(Config, Vec<Attachment>), ProbeError> {
    let mut config = Config::ZERO;
    config.flags |= config_flags::SYSTEM | config_flags::KMEM;
    if system == SystemProbes::Empty {
        config.flags |= config_flags::SYSTEM_EMPTY;
    }
    let mut attach = Vec::new();
    for syscall in [
        Syscall::Brk,
        Syscall::Mmap,
        Syscall::Munmap,
        Syscall::Mremap,
    ] {
        let enter = tracefs.format("syscalls", &format!("sys_enter_{}", syscall.name()))?;
        let args = enter.syscall_args();
        let mut offsets = SyscallOffsets {
            nargs: syscall.arg_count() as u16,
            ..Default::default()
        };
        for (slot, field) in offsets.args.iter_mut().zip(args).take(MAX_SYSCALL_ARGS) {
            *slot = field.offset;
        }
        config.syscalls[syscall as usize] = offsets;
        attach.push(Attachment::syscall("enter", syscall));
    }
    let counted = |name: &str| !matches!(name, "kfree" | "kmem_cache_free");
    match raw_kernel_layout(opts.kernel_probes)? {
        Some(layout) => {
            config.layout = layout;
            attach.extend(
                kernel::RAW_KERNEL_TRACEPOINTS
                    .iter()
                    .map(|(n, _)| *n)
                    .filter(|n| counted(n))
                    .map(Attachment::raw),
            );
        }
        None => {
            let mut all = Vec::new();
            attach_perf_kernel(tracefs, &mut config, &mut all);
            attach.extend(all.into_iter().filter(|a| counted(&a.name)));
        }
    }
    config.page_bits = std::fs::read_to_string("/proc/zoneinfo")
        .ok()
        .and_then(|z| kernel::frames_end(&z))
        .map_or(0, kernel::page_bits);
    Ok((config, attach))
}

/// A perf tracepoint per traced syscall and direction, laid out as tracefs says.
fn attach_perf_syscalls(
    tracefs: &Tracefs,
    config: &mut Config,
    attach: &mut Vec<Attachment>,
) -> Result<(), ProbeError> {
    for syscall in Syscall::ALL {
        let enter = tracefs.format("syscalls", &format!("sys_enter_{}", syscall.name()))?;
        let exit = tracefs.format("syscalls", &format!("sys_exit_{}", syscall.name()))?;
        let args = enter.syscall_args();
        if args.len() < syscall.arg_count() {
            return Err(ProbeError::SyscallArgs {
                syscall: syscall.name(),
                found: args.len(),
                expected: syscall.arg_count(),
            });
        }
        let mut offsets = SyscallOffsets {
            nargs: syscall.arg_count() as u16,
            ret: exit.field("ret")?.offset,
            ..Default::default()
        };
        for (slot, field) in offsets.args.iter_mut().zip(args).take(MAX_SYSCALL_ARGS) {
            *slot = field.offset;
        }
        config.syscalls[syscall as usize] = offsets;
        for dir in ["enter", "exit"] {
            attach.push(Attachment::syscall(dir, syscall));
        }
    }
    Ok(())
}

/// The kmem and fault perf tracepoints, laid out as tracefs says, each group left out with a
/// warning when its layout cannot be read.
fn attach_perf_kernel(tracefs: &Tracefs, config: &mut Config, attach: &mut Vec<Attachment>) {
    match kernel::kmem_offsets(tracefs, &mut config.kmem) {
        Ok(layout) => {
            config.flags |= config_flags::KMEM;
            if layout.cache_names {
                config.flags |= config_flags::CACHE_NAMES;
            }
            attach.extend(
                kernel::KMEM_TRACEPOINTS
                    .iter()
                    .chain(&layout.node_variants)
                    .map(|n| Attachment::new("kmem", n)),
            );
        }
        Err(e) => log::warn!("buddy and slab allocations are not traced: {e}"),
    }
    match kernel::fault_offsets(tracefs, &mut config.kmem) {
        Ok(()) => attach.push(Attachment::new(FAULT.0, FAULT.1)),
        Err(e) => log::warn!("page faults are not traced: {e}"),
    }
}

/// Writes slot 0 of the control map (see [`CONTROL_MAP`]).
fn set_control(ebpf: &mut Ebpf, value: u32) -> Result<(), ProbeError> {
    let map_error = |source| ProbeError::Map {
        name: CONTROL_MAP,
        source: Box::new(source),
    };
    let map = ebpf.map_mut(CONTROL_MAP).ok_or_else(|| {
        map_error(MapError::InvalidName {
            name: CONTROL_MAP.into(),
        })
    })?;
    Array::<_, u32>::try_from(map)
        .and_then(|mut a| a.set(0, value, 0))
        .map_err(map_error)
}

/// The loaded and attached programs. Dropping it detaches everything.
pub struct Probes {
    pub ebpf: Ebpf,
    /// The kmem and fault tracepoints are attached.
    pub kernel_traced: bool,
    /// `--costs`: bpf_stats on while this is held.
    pub run_stats: Option<costs::RunStats>,
}

/// The kernel's stack-trace map is allocated whole when it is made (about 1 KiB an entry):
/// when stacks are unwound it holds only the frame-pointer walks of files without tables and
/// of faults, and is kept to [`FP_STACKS_BESIDE_DWARF`] entries; with `--stacks fp` it holds
/// every stack. (The unwound stacks' map is allocated whole too: one that took its memory as
/// stacks came would have the kernel's slab events charge tracer's own stacks to the process.)
pub const FP_STACKS_BESIDE_DWARF: u32 = 16_384;

fn fp_stack_entries(opts: &LoadOptions) -> u32 {
    if opts.dwarf {
        opts.max_stacks.min(FP_STACKS_BESIDE_DWARF)
    } else {
        opts.max_stacks
    }
}

impl Probes {
    pub fn load_and_attach(tracefs: &Tracefs, opts: &LoadOptions) -> Result<Self, ProbeError> {
        raise_memlock_limit();
        let (config, attachments) = build_config(tracefs, opts)?;
        let started = std::time::Instant::now();
        let mut ebpf = EbpfLoader::new()
            .override_global(CONFIG_GLOBAL, &config, true)
            .map_max_entries(EVENTS_MAP, opts.ring_bytes)
            .map_max_entries(STACKS_MAP, fp_stack_entries(opts))
            .map_max_entries(DWARF_STACKS_MAP, opts.max_stacks)
            .map_max_entries(
                LIVE_PAGE_BITS_MAP,
                if opts.system.is_some() {
                    1
                } else {
                    (1u32 << config.page_bits).div_ceil(64)
                },
            )
            .map_max_entries(
                PAGE_OWNERS_MAP,
                if opts.system.is_some() {
                    1u32 << config.page_bits
                } else {
                    1
                },
            )
            .map_max_entries(
                LIVE_PAGES_MAP,
                if config.page_bits > 0 {
                    1
                } else {
                    MAX_LIVE_KERNEL_OBJECTS
                },
            )
            .map_max_entries(
                SAMPLED_MAP,
                if opts.sample_bytes > 0 {
                    MAX_SAMPLED_BLOCKS
                } else {
                    1
                },
            )
            .load(EBPF_OBJECT)
            .map_err(|e| ProbeError::Load(Box::new(e)))?;
        log::debug!("eBPF object loaded in {:?}", started.elapsed());
        if opts.sample_bytes > 0 {
            let map_error = |source| ProbeError::Map {
                name: SAMPLE_TABLE_MAP,
                source: Box::new(source),
            };
            let map = ebpf.map_mut(SAMPLE_TABLE_MAP).ok_or_else(|| {
                map_error(MapError::InvalidName {
                    name: SAMPLE_TABLE_MAP.into(),
                })
            })?;
            let mut table = Array::<_, u32>::try_from(map).map_err(map_error)?;
            for (i, q) in exponential_quantiles().into_iter().enumerate() {
                table.set(i as u32, q, 0).map_err(map_error)?;
            }
        }
        // Counted from the first program attached.
        let run_stats = if opts.time_unwind {
            Some(costs::RunStats::enable()?)
        } else {
            None
        };
        load_in_parallel(&mut ebpf, &attachments)?;
        for a in attachments {
            attach(&mut ebpf, &a)?;
        }
        Ok(Probes {
            ebpf,
            kernel_traced: config.flags & config_flags::KMEM != 0,
            run_stats,
        })
    }

    /// From now on a launched or followed process is stopped at each exec (and code mapping)
    /// until userspace continues it. Only once a keeper holds [`Probes::keeper_fds`].
    pub fn start_holding(&mut self) -> Result<(), ProbeError> {
        set_control(&mut self.ebpf, 1)
    }

    /// Tracing is over: probes still attached while they are torn down hold nothing.
    pub fn stop_holding(&mut self) -> Result<(), ProbeError> {
        set_control(&mut self.ebpf, 0)
    }

    /// The control map (holding on or off) and the followed processes' map: what
    /// `process::keeper` needs to let held processes go if tracer dies.
    pub fn keeper_fds(&self) -> Option<(BorrowedFd<'_>, Option<BorrowedFd<'_>>)> {
        let control = self.ebpf.map(CONTROL_MAP).and_then(multi::map_fd)?;
        let followed = self.ebpf.map(FOLLOWED_MAP).and_then(multi::map_fd);
        Some((control, followed))
    }

    /// The kernel-side counters, summed over CPUs, indexed by [`tracer_common::counter`].
    pub fn counters(&self) -> Result<[u64; counter::COUNT as usize], ProbeError> {
        let map_error = |source| ProbeError::Map {
            name: COUNTERS_MAP,
            source: Box::new(source),
        };
        let map = self.ebpf.map(COUNTERS_MAP).ok_or_else(|| {
            map_error(MapError::InvalidName {
                name: COUNTERS_MAP.into(),
            })
        })?;
        let array = PerCpuArray::<_, u64>::try_from(map).map_err(map_error)?;
        let mut out = [0; counter::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            let values = array.get(&(i as u32), 0).map_err(map_error)?;
            *slot = values.iter().sum();
        }
        Ok(out)
    }

    /// The faults the kernel still holds back, at most one per CPU (see
    /// `tracer_common::FaultPageEvent`): the records their CPUs would have sent next.
    pub fn held_faults(&self) -> Result<Vec<FaultEvent>, ProbeError> {
        let map_error = |source| ProbeError::Map {
            name: FAULT_STASH_MAP,
            source: Box::new(source),
        };
        let Some(map) = self.ebpf.map(FAULT_STASH_MAP) else {
            return Ok(Vec::new());
        };
        let array = PerCpuArray::<_, FaultEvent>::try_from(map).map_err(map_error)?;
        let values = array.get(&0, 0).map_err(map_error)?;
        Ok(values
            .iter()
            .filter(|f| f.header.kind == kind::FAULT)
            .copied()
            .collect())
    }
}

/// Loads and attaches one tracepoint program, perf or raw.
/// Loads the programs of `attachments` (the kernel verifies each as it loads; 24 programs
/// took 33 ms in all here, and a change that made the walk costly to verify once took 2.7 s)
/// on as many threads as there are cores.
fn load_in_parallel(ebpf: &mut Ebpf, attachments: &[Attachment]) -> Result<(), ProbeError> {
    let started = std::time::Instant::now();
    let wanted: HashMap<&str, bool> = attachments
        .iter()
        .map(|a| (a.program.as_str(), a.category.is_some()))
        .collect();
    let queue = std::sync::Mutex::new(
        ebpf.programs_mut()
            .filter_map(|(name, program)| Some((name, *wanted.get(name)?, program)))
            .collect::<Vec<_>>(),
    );
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let load = || -> Result<(), ProbeError> {
        loop {
            let Some((name, perf, program)) = queue.lock().map_or(None, |mut q| q.pop()) else {
                return Ok(());
            };
            let program_error = |source| ProbeError::ProgramLoad {
                program: name.to_string(),
                source: Box::new(source),
            };
            if perf {
                let program: &mut TracePoint = program.try_into().map_err(program_error)?;
                program.load().map_err(program_error)?;
            } else {
                let program: &mut RawTracePoint = program.try_into().map_err(program_error)?;
                program.load().map_err(program_error)?;
            }
        }
    };
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads).map(|_| s.spawn(load)).collect();
        workers
            .into_iter()
            // A worker that panicked panics here: its programs were not loaded.
            .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Result<Vec<()>, ProbeError>>()
    })?;
    log::debug!(
        "{} programs loaded on {threads} threads in {:?}",
        wanted.len(),
        started.elapsed()
    );
    Ok(())
}

/// Attaches the program of `a`, loaded by [`load_in_parallel`].
fn attach(ebpf: &mut Ebpf, a: &Attachment) -> Result<(), ProbeError> {
    let program_error = |source| ProbeError::ProgramLoad {
        program: a.program.clone(),
        source: Box::new(source),
    };
    let attach_error = |source| ProbeError::Attach {
        program: a.program.clone(),
        category: a.category.unwrap_or("raw").into(),
        name: a.name.clone(),
        source: Box::new(source),
    };
    let program = ebpf
        .program_mut(&a.program)
        .ok_or_else(|| ProbeError::MissingProgram(a.program.clone()))?;
    let started = std::time::Instant::now();
    match a.category {
        Some(category) => {
            let program: &mut TracePoint = program.try_into().map_err(program_error)?;
            program.attach(category, &a.name).map_err(attach_error)?;
        }
        None => {
            let program: &mut RawTracePoint = program.try_into().map_err(program_error)?;
            program.attach(&a.name).map_err(attach_error)?;
        }
    }
    log::debug!("{}: attached in {:?}", a.program, started.elapsed());
    Ok(())
}

/// The table the sampling programs draw their intervals from: quantiles of the exponential
/// distribution at the middle of [`SAMPLE_TABLE_LEN`] equal slices, in units of
/// 1/[`SAMPLE_TABLE_ONE`] of the mean, scaled so that their mean is exactly one: the estimates
/// are weighted by the exact inclusion probability, which assumes that mean.
pub fn exponential_quantiles() -> Vec<u32> {
    let n = SAMPLE_TABLE_LEN as usize;
    let raw: Vec<f64> = (0..n)
        .map(|i| -((i as f64 + 0.5) / n as f64).ln())
        .collect();
    let mean = raw.iter().sum::<f64>() / n as f64;
    raw.iter()
        .map(|q| (q / mean * f64::from(SAMPLE_TABLE_ONE)).round() as u32)
        .collect()
}

/// Kernels before 5.11 charge eBPF memory to RLIMIT_MEMLOCK; newer ones (and this tool's
/// usual hosts) use memory cgroups, where raising it is unneeded and may be refused.
fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK ({}); not needed on kernels >= 5.11",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod names_tests;

/// Adds running process `pid` (created by `parent`) to the traced set: from now on the
/// programs take its events. `Ok(false)` when it is in the set already (the kernel added it at
/// its fork).
pub fn follow_process(ebpf: &mut Ebpf, pid: u32, parent: u32) -> Result<bool, ProbeError> {
    /// `BPF_NOEXIST`: insert only if the key is not there.
    const NOEXIST: u64 = 1;
    let map_error = |source| ProbeError::Map {
        name: FOLLOWED_MAP,
        source: Box::new(source),
    };
    let map = ebpf.map_mut(FOLLOWED_MAP).ok_or_else(|| {
        map_error(MapError::InvalidName {
            name: FOLLOWED_MAP.into(),
        })
    })?;
    let mut followed = aya::maps::HashMap::<_, u32, u32>::try_from(map).map_err(map_error)?;
    match followed.insert(pid, parent, NOEXIST) {
        Ok(()) => Ok(true),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
            Ok(false)
        }
        Err(e) => Err(map_error(e)),
    }
}
