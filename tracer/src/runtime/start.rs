//! The second phase: the eBPF programs loaded and attached, the process's image read, the
//! allocator probes and unwind tables in, the recording begun.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use aya::{Ebpf, maps::RingBuf};
use tracer_common::EVENTS_MAP;

use super::{Mode, RunConfig, StackWalk, TargetSpec, prepare::Target, ring::RingReader};
use crate::{
    facts::TargetFacts,
    output::Sink,
    probes::{
        EBPF_OBJECT, LoadOptions, Probes,
        tracefs::Tracefs,
        uprobes::{AllocatorProbes, UprobeError, needed_libraries},
    },
    process::{
        keeper::Keeper,
        session::{Session, Start, is_loader},
        signals::Signals,
        table::Processes,
        target::{self, TargetFiles},
    },
    record::Recorder,
    summary::{label, visible},
    unwind::UnwindTables,
};

/// Everything that traces, once attached.
pub(super) struct Traced {
    pub probes: Probes,
    /// The allocator probes; none in `--mode kernel`.
    pub allocators: Option<AllocatorProbes>,
    /// The event ring, read by a thread of its own.
    pub ring: RingReader,
    pub processes: Processes,
    /// The target's files, opened as it sees them and kept open.
    pub files: TargetFiles,
    pub recorder: Option<Recorder>,
    /// The unwind tables given to the kernel (`--stacks dwarf`).
    pub tables: Option<UnwindTables>,
    /// The process the allocator probes fire for: the target, or 0 with `--follow`.
    pub probe_pid: u32,
    pub page_size: u64,
    /// What the reports say of the target, less what only its end tells.
    pub facts: TargetFacts,
    /// Lets held processes go if tracer dies; none when no process is held.
    pub keeper: Option<Keeper>,
    /// What every process's books start from, less its own image (`--cgroup`: processes join).
    pub base: Start,
}

/// Loads and attaches the probes for `target`, reads what it is now, and begins the
/// recording.
pub(super) fn start(
    cfg: &RunConfig,
    tracefs: &Tracefs,
    target: &Target,
    record: Option<Sink>,
    record_dir: Option<PathBuf>,
    signals: &Signals,
) -> Result<Traced> {
    let pid = target.pid;
    let max_stacks = cfg.max_stacks.unwrap_or_else(|| stacks_for(target));
    let opts = load_options(cfg, pid, target.held.is_some(), max_stacks);
    if cfg.follow {
        target::raise_fd_limit();
    }
    let setup = std::time::Instant::now();
    let mut probes = Probes::load_and_attach(tracefs, &opts)?;
    log::debug!(
        "loaded and attached the kernel probes in {:?}",
        setup.elapsed()
    );
    let keeper = start_keeper(&mut probes, pid as u32, opts.hold_exec)?;
    // Loaded now: the allocator programs are relocated against every map, the ring included.
    let mut allocators = match cfg.mode {
        Mode::Full => {
            let mut allocators =
                AllocatorProbes::load(EBPF_OBJECT, &probes.ebpf, cfg.uprobe_links)?;
            if opts.hold_exit {
                allocators.probe_exit();
            }
            Some(allocators)
        }
        Mode::Kernel => None,
    };
    let ring = probes
        .ebpf
        .take_map(EVENTS_MAP)
        .context("the eBPF object has no event ring")?;
    let ring = RingBuf::try_from(ring).context("opening the event ring")?;
    // Once tracing stops, what the ring can hold is read, and no more: a target still running
    // keeps filling it.
    let last = cfg.ring_bytes as usize / size_of::<tracer_common::EventHeader>();
    let ring = RingReader::start(ring, last).context("starting the event ring's reader")?;
    let start = read_start(cfg, tracefs, target)?;
    // Read while the process surely runs: once "attached" is said, it may end at once.
    let namespace_pid = target::namespace_pid(pid);
    let processes = Processes::new(&start);
    // With --follow the probes fire in every process that maps a probed file, and the kernel
    // keeps to the traced ones: a child is traced from its first instruction.
    let probe_pid = if cfg.follow { 0 } else { pid as u32 };
    // The process's files, opened as it sees them (its namespace, its working directory, the
    // inode it mapped) and kept open: probed and symbolized through these only.
    let mut files = TargetFiles::new(pid);
    files.open_mapped(&start.maps);
    let recorder = begin_recording(cfg, &start, record, record_dir)?;
    if let Some(allocators) = allocators.as_mut() {
        let launched = match &cfg.target {
            TargetSpec::Command(_) => std::fs::read_link(format!("/proc/{pid}/exe")).ok(),
            _ => None,
        };
        attach_allocators(
            allocators,
            &mut probes.ebpf,
            processes.root(),
            probe_pid,
            launched.as_deref(),
            &cfg.allocator_libs,
            &mut files,
            &|| signals.pending(),
        )?;
    }
    let tables = opts
        .dwarf
        .then(|| load_tables(&mut probes.ebpf, processes.root(), &files));
    log::debug!("set up in {:?}", setup.elapsed());
    let facts = announce(cfg, target, namespace_pid);
    Ok(Traced {
        probes,
        allocators,
        ring,
        processes,
        files,
        recorder,
        tables,
        probe_pid,
        page_size: start.page_size,
        facts,
        keeper,
        base: Start {
            maps: String::new(),
            resident_at_attach: None,
            ..start
        },
    })
}

/// When processes are to be held: the keeper that lets them go if tracer dies, then holding
/// turned on (never before the keeper is there).
fn start_keeper(probes: &mut Probes, root: u32, hold: bool) -> Result<Option<Keeper>> {
    if !hold {
        return Ok(None);
    }
    let (control, followed) = probes
        .keeper_fds()
        .context("the eBPF object has no control map")?;
    let keeper = Keeper::start(root, control, followed)
        .context("starting the process that lets held processes go if tracer dies")?;
    probes.start_holding()?;
    Ok(Some(keeper))
}

/// The stack map's size for the target's code: its mapped files', and for a command held at
/// its first instruction, the libraries its loader will map.
fn stacks_for(target: &Target) -> u32 {
    let pid = target.pid;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let mut files = crate::attribution::AddressSpace::from_proc_maps(&maps).exec_files();
    if target.held.is_some()
        && let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe"))
        && let Some(loader) = files.iter().find(|f| is_loader(f)).cloned()
    {
        files.extend(needed_libraries(&loader, &exe));
    }
    files.sort();
    files.dedup();
    let bytes = target::code::code_bytes(Path::new(&format!("/proc/{pid}/root")), &files);
    let stacks = target::code::stacks_for_code(bytes);
    log::info!(
        "stack map: {stacks} stacks for {} of code in {} files",
        label::human_bytes(bytes),
        files.len()
    );
    stacks
}

fn load_options(cfg: &RunConfig, pid: i32, launched: bool, max_stacks: u32) -> LoadOptions {
    LoadOptions {
        target_tgid: pid as u32,
        ring_bytes: cfg.ring_bytes,
        wakeup_bytes: (cfg.ring_bytes / 4).max(4096),
        kernel_stacks: cfg.kernel_stacks,
        kernel: cfg.kernel,
        max_stacks,
        fault_stacks: cfg.fault_stacks,
        sample_bytes: cfg.sample_bytes,
        kernel_probes: cfg.kernel_probes,
        // A launched command's parent is us: stopping it at an exec disturbs no shell. A
        // followed process is held too (its parent sees the stop only if it waits with
        // WUNTRACED, as only job-control shells do): it may run for less time than reading
        // its new image takes.
        hold_exec: launched || cfg.follow,
        // Only where every live block is known: a sampled run knows a few.
        hold_exit: (launched || cfg.follow)
            && cfg.mode == Mode::Full
            && cfg.sample_bytes == 0
            && cfg.leak_check.at_exit,
        target_tid: cfg.tid.unwrap_or(0),
        follow: cfg.follow,
        dwarf: cfg.stacks == StackWalk::Dwarf,
        allocator_probes: cfg.mode == Mode::Full,
        time_unwind: cfg.costs,
        row_cache: cfg.unwind_row_cache,
        system: None,
    }
}

/// The process as it is now: stopped at exec, or running.
fn read_start(cfg: &RunConfig, tracefs: &Tracefs, target: &Target) -> Result<Start> {
    let pid = target.pid;
    let running = target.held.is_none();
    let maps = match std::fs::read_to_string(format!("/proc/{pid}/maps")) {
        Ok(maps) => maps,
        // A --pid target that exited while tracer attached: the report says what was seen.
        Err(e) if running && !Path::new(&format!("/proc/{pid}")).exists() => {
            log::warn!("pid {pid} exited while tracer attached ({e}): little or nothing was seen");
            String::new()
        }
        Err(e) => return Err(e).with_context(|| format!("reading /proc/{pid}/maps")),
    };
    Ok(Start {
        pid: pid as u32,
        command: target.command.clone(),
        page_size: target::page_size(),
        // A running process has touched memory already: what of it is resident.
        resident_at_attach: if running {
            target::resident_now(pid as u32, &maps)
        } else {
            None
        },
        maps,
        gfp_print_fmt: tracefs
            .format("kmem", "mm_page_alloc")
            .map(|f| f.print_fmt)
            .unwrap_or_default(),
        initial_break: if running {
            target::current_break(pid)
        } else {
            None
        },
        sample_bytes: u64::from(cfg.sample_bytes),
    })
}

/// `--record`: the recording, rotating in segments with `--record-max`.
fn begin_recording(
    cfg: &RunConfig,
    start: &Start,
    record: Option<Sink>,
    record_dir: Option<PathBuf>,
) -> Result<Option<Recorder>> {
    let pid = start.pid;
    Ok(match (record, cfg.record_max, record_dir) {
        (Some(sink), Some(max), Some(dir)) => {
            let base = start.clone();
            // Each new segment starts from the process as it is then.
            let now = Box::new(move || {
                let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
                    .unwrap_or_else(|_| base.maps.clone());
                Start {
                    resident_at_attach: target::resident_now(pid, &maps),
                    maps,
                    initial_break: target::current_break(pid as i32),
                    ..base.clone()
                }
            });
            Some(Recorder::rotating(sink, start, max, &dir, now)?)
        }
        (Some(sink), _, _) => Some(Recorder::create(sink, start)?),
        (None, ..) => None,
    })
}

/// Attaches the allocator probes to every file the process has mapped or, for a command
/// stopped at exec, will load, and to `extra` files named by the user.
#[allow(
    clippy::too_many_arguments,
    reason = "the attach's inputs, each used once"
)]
fn attach_allocators(
    allocators: &mut AllocatorProbes,
    ebpf: &mut Ebpf,
    session: &Session,
    probe_pid: u32,
    launched: Option<&Path>,
    extra: &[PathBuf],
    target_files: &mut TargetFiles,
    stop: &dyn Fn() -> bool,
) -> Result<()> {
    let mut paths = session.space.exec_files();
    // A launched command runs in our namespace: its loader can list what it will load.
    if let Some(program) = launched
        && let Some(loader) = paths.iter().find(|f| is_loader(f)).cloned()
    {
        paths.extend(needed_libraries(&loader, program));
    }
    paths.retain(|f| !is_loader(f));
    // Each is probed through the descriptor opened for it (uprobes go by inode).
    let mut files = Vec::new();
    for path in paths {
        match target_files.open_path(&path) {
            Some(via) => files.push((path, via)),
            None => log::warn!(
                "{}: not a regular file the process can read; its allocator functions (if any) \
                 are not probed",
                path.display()
            ),
        }
    }
    let (_, errors) = allocators.attach_files(ebpf, &files, probe_pid, stop);
    for (_, e) in errors {
        match e {
            UprobeError::Load { .. } | UprobeError::Program(_) => return Err(e.into()),
            e => log::warn!("{:#}", anyhow::Error::from(e)),
        }
    }
    if stop() {
        log::warn!("interrupted while attaching: some allocator functions may not be probed");
        return Ok(());
    }
    for file in extra {
        allocators.attach_file(ebpf, file, file, probe_pid)?;
    }
    if allocators.attached.is_empty() {
        log::warn!(
            "no allocator functions found in the process's files: user-space allocations are not traced"
        );
    }
    Ok(())
}

/// The unwind tables of every file opened so far (the command's libraries included, before
/// its loader maps them), compiled now so that each is given its table the moment it is
/// mapped, and given to the root process's mappings.
fn load_tables(ebpf: &mut Ebpf, root: &Session, files: &TargetFiles) -> UnwindTables {
    let mut tables = UnwindTables::default();
    let all = files.substitutes();
    // A big program's libraries take seconds: a bar on a terminal (drawn nowhere else).
    let bar = indicatif::ProgressBar::new(all.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "compiling unwind tables {pos} of {len} files {wide_bar}",
        )
        .expect("valid template"),
    );
    for via in all.values() {
        if let Err(e) = tables.preload(ebpf, via) {
            log::warn!("{:#}", anyhow::Error::from(e));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if let Err(e) = tables.sync(
        ebpf,
        root.pid,
        root.space.exec_mappings(),
        files.substitutes(),
    ) {
        log::warn!(
            "{:#}: stacks are walked by frame pointer",
            anyhow::Error::from(e)
        );
    }
    tables
}

/// Says what is traced (a `--pid` run, and the processes it had started, which are not), and
/// returns the target's facts.
fn announce(cfg: &RunConfig, target: &Target, namespace_pid: Option<u32>) -> TargetFacts {
    let pid = target.pid;
    // What the target had started before we came: not traced, and said so.
    let children_at_attach = match cfg.target {
        TargetSpec::Pid(_) => target::descendants(pid as u32),
        _ => Vec::new(),
    };
    if let Some(cgroup) = &target.cgroup {
        eprintln!(
            "tracer: following cgroup {} (v{}), from pid {pid} ({}); Ctrl-C to stop",
            visible(&cgroup.path.display().to_string()),
            cgroup.version,
            visible(&target.command.join(" "))
        );
    } else if target.held.is_none() {
        eprintln!(
            "tracer: attached to pid {pid} ({}); Ctrl-C to stop",
            visible(&target.command.join(" "))
        );
    }
    if !children_at_attach.is_empty() {
        eprintln!(
            "tracer: warning: {}",
            label::children_at_attach(pid as u32, &children_at_attach)
        );
    }
    TargetFacts {
        pid: pid as u32,
        namespace_pid,
        command: target.command.clone(),
        children_at_attach,
        ..TargetFacts::default()
    }
}
