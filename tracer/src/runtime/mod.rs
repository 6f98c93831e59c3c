//! One tracing session: start or find the target, attach, stream events until it ends, report.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsString,
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

mod drain;
mod ui;

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use tokio::io::{Interest, unix::AsyncFd};
use tracer_common::EVENTS_MAP;

use drain::Drain;
use ui::{TopUi, next_key};

use crate::{
    events,
    facts::TargetFacts,
    invoker,
    launch::HeldChild,
    live::{
        Live,
        snapshot::{Ending, Now, Snapshotter, monotonic_ns},
        write_snapshot,
    },
    output::{self, Outputs, Sink},
    probes::{
        EBPF_OBJECT, LoadOptions, Probes,
        counted::SlabCounts,
        kernel::KernelProbes,
        tracefs::Tracefs,
        uprobes::{
            AllocatorProbes, UprobeError, UprobeLinks, needed_libraries, needed_libraries_with,
        },
    },
    processes::Processes,
    record::Recorder,
    serve::{self, Published, Server},
    session::{ExecImage, Finish, Followup, Session, Start, is_loader},
    signals::Signals,
    summary::Summary,
    target::{self, TargetFiles},
    top::{self, Action, TopState, term::Screen},
    unwind::UnwindTables,
};

/// What to trace.
#[derive(Debug, Clone)]
pub enum TargetSpec {
    Pid(i32),
    Command(Vec<OsString>),
}

/// A validated run configuration.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub target: TargetSpec,
    pub duration: Option<Duration>,
    pub ring_bytes: u32,
    /// Files to probe for allocator functions besides those found automatically.
    pub allocator_libs: Vec<PathBuf>,
    /// Most call sites and leaks listed in the summary.
    pub max_sites: usize,
    /// Record kernel stacks of page and slab allocations.
    pub kernel_stacks: bool,
    /// Follow the kernel's allocators (buddy, slab) and page faults.
    pub kernel: bool,
    /// Entries of the user stack map: distinct allocation stacks that can be told apart.
    pub max_stacks: u32,
    /// Write a recording here.
    pub record: Option<PathBuf>,
    /// `--record-max`: keep the recording's newest events within about this many bytes.
    pub record_max: Option<u64>,
    pub outputs: Outputs,
    /// Under sudo, run the command as root anyway (not as the invoking user).
    pub run_as_root: bool,
    pub mode: Mode,
    /// Record the user stack of every page fault.
    pub fault_stacks: bool,
    /// How allocator probes attach.
    pub uprobe_links: UprobeLinks,
    /// How the tracepoint programs attach.
    pub kernel_probes: KernelProbes,
    /// `--sample`: mean bytes between sampled allocations (0: trace every call).
    pub sample_bytes: u32,
    /// `--interval`: a summary of what changed, this often, while the run goes on.
    pub interval: Option<Duration>,
    /// `--jsonl`: the intervals as JSON lines here.
    pub jsonl: Option<PathBuf>,
    /// `--min-age`: leaks count only blocks at least this old.
    pub min_age: Duration,
    /// `--listen`: serve metrics and profiles over HTTP while tracing.
    pub listen: Option<Listen>,
    /// `tracer top`: the interactive view while tracing.
    pub top: bool,
    /// `--tid`: only this thread's allocator calls are traced.
    pub tid: Option<u32>,
    /// `--fail-if`: conditions on the summary that fail the run.
    pub fail_if: Vec<crate::diff::gate::Gate>,
    /// `--follow`: trace the processes the target creates, and what they run.
    pub follow: bool,
    /// `--max-sites`, when given: what the text lists too.
    pub text_sites: Option<usize>,
    /// `--wrapper`: the program's own allocator wrappers.
    pub wrappers: Vec<String>,
    /// `--stacks`: how allocation stacks are walked.
    pub stacks: StackWalk,
}

/// How allocation stacks are walked (see `--stacks` in `tracer --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StackWalk {
    /// With each file's unwind tables (.eh_frame), by frame pointer where a file has none.
    #[default]
    Dwarf,
    /// By frame pointer only (the kernel's walk): cut short past code built without them.
    Fp,
}

/// `--listen` and its options.
#[derive(Debug, Clone)]
pub struct Listen {
    pub addr: String,
    /// `--listen-any`: a non-loopback address is allowed.
    pub any: bool,
    /// `--listen-token`: requests need `Authorization: Bearer` with this file's token.
    pub token: Option<PathBuf>,
    /// `--max-metric-sites`.
    pub max_metric_sites: usize,
}

/// How often a `--listen` run publishes what it serves, without `--interval`.
const SERVE_PERIOD: Duration = Duration::from_secs(1);

/// What a run traces (see `--mode` in `tracer --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// Allocator calls through uprobes, and the kernel's side.
    #[default]
    Full,
    /// No uprobes: syscalls and faults with their user stacks, buddy and slab.
    Kernel,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Kernel => "kernel",
        }
    }
}

/// The reader drains on this period even when no wakeup came (wakeups are batched).
const DRAIN_PERIOD: Duration = Duration::from_millis(50);
/// Records taken from the ring in one go before the loop looks at signals and the target
/// again: under a flood the ring never empties.
const DRAIN_BUDGET: usize = 1 << 16;

/// Traces as configured, writes the reports, and returns the exit code for the tracer:
/// the command's own for launched commands, 0 for `--pid` runs (see [`output::exit_status`]
/// when a report could not be written).
pub async fn run(cfg: RunConfig) -> Result<i32> {
    // From here on SIGINT and SIGTERM are ours: setup is never cut short without a word.
    let mut signals = Signals::install().context("installing signal handlers")?;
    target::check_privileges()?;
    // Every destination is checked before anything runs.
    let (outputs, record, jsonl) = cfg.outputs.check(cfg.record.as_ref(), cfg.jsonl.as_ref())?;
    // A recording that rotates needs a directory for its segments: a regular file's.
    let record_dir = match (&record, cfg.record_max) {
        (Some(output::Dest::File { dir, .. }), Some(_)) => Some(dir.clone()),
        (Some(d), Some(_)) => anyhow::bail!(
            "--record-max needs --record to be a regular file, not {}",
            d.shown().display()
        ),
        _ => None,
    };
    let record = record.map(|d| Sink::open(&d)).transpose()?;
    let jsonl = jsonl.map(|d| Sink::open(&d)).transpose()?;
    // The address is bound now: a port in use fails before anything runs.
    let listener = match &cfg.listen {
        Some(l) => {
            let token = l.token.as_deref().map(serve::read_token).transpose()?;
            Some((serve::bind(&l.addr, l.any)?, token, l.max_metric_sites))
        }
        None => None,
    };
    let mut snapshot_requests = signals
        .take_snapshot_requests()
        .context("installing the SIGUSR1 handler")?;
    let tracefs = Tracefs::find_or_mount()?;
    if let TargetSpec::Pid(pid) = &cfg.target {
        target::check_pid(*pid)?;
        if let Some(tid) = cfg.tid {
            target::check_tid(*pid, tid)?;
        }
    }
    if signals.pending() {
        anyhow::bail!("interrupted before tracing began");
    }

    let (pid, mut held, command) = match &cfg.target {
        TargetSpec::Pid(pid) => (*pid, None, target::cmdline(*pid)),
        TargetSpec::Command(argv) => {
            let user = if cfg.run_as_root {
                None
            } else {
                invoker::sudo_invoker()
            };
            let held = HeldChild::spawn(argv, user.as_ref())?;
            let command = argv
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            (held.pid(), Some(held), command)
        }
    };
    let pidfd = watch(target::pidfd_open(pid)?).context("watching the target for exit")?;

    let opts = LoadOptions {
        target_tgid: pid as u32,
        ring_bytes: cfg.ring_bytes,
        wakeup_bytes: (cfg.ring_bytes / 4).max(4096),
        kernel_stacks: cfg.kernel_stacks,
        kernel: cfg.kernel,
        max_stacks: cfg.max_stacks,
        fault_stacks: cfg.fault_stacks,
        sample_bytes: cfg.sample_bytes,
        kernel_probes: cfg.kernel_probes,
        // A launched command's parent is us: stopping it at an exec disturbs no shell. A
        // followed process is held too (its parent sees the stop only if it waits with
        // WUNTRACED, as only job-control shells do): it may run for less time than reading
        // its new image takes.
        hold_exec: held.is_some() || cfg.follow,
        target_tid: cfg.tid.unwrap_or(0),
        follow: cfg.follow,
        dwarf: cfg.stacks == StackWalk::Dwarf,
        allocator_probes: cfg.mode == Mode::Full,
    };
    if cfg.follow {
        target::raise_fd_limit();
    }
    let setup = Instant::now();
    let mut probes = Probes::load_and_attach(&tracefs, &opts)?;
    log::debug!(
        "loaded and attached the kernel probes in {:?}",
        setup.elapsed()
    );
    // Loaded now: the allocator programs are relocated against every map, the ring included.
    let mut allocators = match cfg.mode {
        Mode::Full => Some(AllocatorProbes::load(
            EBPF_OBJECT,
            &probes.ebpf,
            cfg.uprobe_links,
        )?),
        Mode::Kernel => None,
    };
    let ring = probes
        .ebpf
        .take_map(EVENTS_MAP)
        .context("the eBPF object has no event ring")?;
    let ring = RingBuf::try_from(ring).context("opening the event ring")?;
    let mut ring = watch(ring).context("polling the event ring")?;

    // The process as it is now: stopped at exec, or running.
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .with_context(|| format!("reading /proc/{pid}/maps"))?;
    let start = Start {
        pid: pid as u32,
        command: command.clone(),
        page_size: target::page_size(),
        // A running process has touched memory already: what of it is resident.
        resident_at_attach: if held.is_none() {
            target::resident_now(pid as u32, &maps)
        } else {
            None
        },
        maps,
        gfp_print_fmt: tracefs
            .format("kmem", "mm_page_alloc")
            .map(|f| f.print_fmt)
            .unwrap_or_default(),
        initial_break: if held.is_none() {
            target::current_break(pid)
        } else {
            None
        },
        sample_bytes: u64::from(cfg.sample_bytes),
    };
    let namespace_pid = target::namespace_pid(pid);
    let mut processes = Processes::new(&start);
    // With --follow the probes fire in every process that maps a probed file, and the kernel
    // keeps to the traced ones: a child is traced from its first instruction.
    let probe_pid = if cfg.follow { 0 } else { pid as u32 };
    // The process's files, opened as it sees them (its namespace, its working directory, the
    // inode it mapped) and kept open: probed and symbolized through these only.
    let mut files = TargetFiles::new(pid);
    files.open_mapped(&start.maps);
    let recorder = match (record, cfg.record_max, record_dir) {
        (Some(sink), Some(max), Some(dir)) => {
            let base = start.clone();
            let now = Box::new(move || {
                let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
                    .unwrap_or_else(|_| base.maps.clone());
                Start {
                    resident_at_attach: target::resident_now(pid as u32, &maps),
                    maps,
                    initial_break: target::current_break(pid),
                    ..base.clone()
                }
            });
            Some(Recorder::rotating(sink, &start, max, &dir, now)?)
        }
        (Some(sink), _, _) => Some(Recorder::create(sink, &start)?),
        (None, ..) => None,
    };
    let launched = match &cfg.target {
        TargetSpec::Command(_) => std::fs::read_link(format!("/proc/{pid}/exe")).ok(),
        TargetSpec::Pid(_) => None,
    };
    if let Some(allocators) = allocators.as_mut() {
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
    let mut tables = opts.dwarf.then(UnwindTables::default);
    if let Some(tables) = tables.as_mut() {
        // Every file opened so far (the command's libraries included, before its loader maps
        // them): compiled now, so that each is given its table the moment it is mapped.
        for via in files.substitutes().values() {
            if let Err(e) = tables.preload(&mut probes.ebpf, via) {
                log::warn!("{:#}", anyhow::Error::from(e));
            }
        }
    }
    if let Some(tables) = tables.as_mut() {
        let root = processes.root();
        if let Err(e) = tables.sync(
            &mut probes.ebpf,
            pid as u32,
            root.space.exec_mappings(),
            files.substitutes(),
        ) {
            log::warn!(
                "{:#}: stacks are walked by frame pointer",
                anyhow::Error::from(e)
            );
        }
    }
    log::debug!("set up in {:?}", setup.elapsed());
    // What the target had started before we came: not traced, and said so.
    let children_at_attach = match cfg.target {
        TargetSpec::Pid(_) => target::descendants(pid as u32),
        TargetSpec::Command(_) => Vec::new(),
    };
    if held.is_none() {
        eprintln!(
            "tracer: attached to pid {pid} ({}); Ctrl-C to stop",
            crate::report::visible(&command.join(" "))
        );
    }
    if !children_at_attach.is_empty() {
        eprintln!(
            "tracer: warning: {}",
            crate::summary::label::children_at_attach(pid as u32, &children_at_attach)
        );
    }

    let mut snapshotter = Snapshotter::new(
        TargetFacts {
            pid: pid as u32,
            namespace_pid,
            command: command.clone(),
            children_at_attach,
            ..TargetFacts::default()
        },
        cfg.max_sites,
        cfg.min_age.as_nanos().min(u128::from(u64::MAX)) as u64,
        cfg.mode.name(),
    );
    snapshotter.kernel_stacks = cfg.kernel_stacks;
    snapshotter.wrappers = cfg.wrappers.clone();
    snapshotter.text_sites = cfg.text_sites;
    let mut live = match cfg.interval {
        Some(_) => Some(Live::new(
            jsonl,
            // The interval blocks would write over top's screen.
            outputs.text && !cfg.top,
            cfg.max_sites,
            format!(
                "tracer: pid {pid} ({})",
                command.first().map_or("", String::as_str)
            ),
        )?),
        None => None,
    };
    let started = Instant::now();
    snapshotter.started = started;
    let child = match held.take() {
        Some(h) => Some(h.release()?),
        None => None,
    };

    let mut reader = Drain {
        processes: &mut processes,
        recorder,
        record_failed: false,
        allocators: allocators.as_mut(),
        files: BTreeMap::from([(pid as u32, files)]),
        retired: Vec::new(),
        tables,
        probe_pid,
        threads: BTreeMap::new(),
        new_code: false,
        command: None,
        unsynced: BTreeSet::new(),
        waiting: Default::default(),
        slab_counts: SlabCounts::default(),
        counts_read: Some(Instant::now()),
    };
    // Woken when a table compiled in the background is in.
    let tables_ready = reader.tables.as_ref().map(|t| t.ready());
    let mut refresh_requests = None;
    let server = match listener {
        Some((listener, token, max_metric_sites)) => {
            let (server, requests) =
                Server::start(listener, token).context("starting the HTTP server")?;
            refresh_requests = Some(requests);
            let addr = server.addr;
            if !addr.ip().is_loopback() {
                eprintln!(
                    "tracer: warning: serving on {addr}, beyond this machine: the endpoints \
                     expose the target's symbols and memory layout"
                );
            }
            eprintln!(
                "tracer: serving http://{addr}/ (/metrics, /debug/pprof/heap, /debug/pprof/allocs, /report.html)"
            );
            Some((server, max_metric_sites))
        }
        None => None,
    };
    let publish = |server: &Option<(Server, usize)>, summary: Summary| {
        if let Some((server, max_metric_sites)) = server {
            server.publish(Published {
                summary,
                max_sites: cfg.max_sites,
                max_metric_sites: *max_metric_sites,
                page_size: start.page_size,
                taken: std::time::SystemTime::now(),
            });
        }
    };
    let refresh = cfg
        .interval
        .or((server.is_some() || cfg.top).then_some(SERVE_PERIOD));
    // The terminal is taken over last, once everything that can fail to start has started.
    let mut top = if cfg.top { Some(TopUi::enter()?) } else { None };
    let mut interval = refresh.map(|period| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut tick = tokio::time::interval(DRAIN_PERIOD);
    let mut names_read = Instant::now();
    let deadline = cfg.duration.map(|d| tokio::time::Instant::now() + d);
    let mut signalled = 0;
    // The target exited: watched no more. With --follow the run goes on while a process it
    // created runs.
    let mut pidfd = Some(pidfd);
    let ended_by = loop {
        if pidfd.is_none() && !reader.others_running() {
            break "exited";
        }
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                // Still readable when the budget ran out: the loop comes back at once, after
                // the other branches (signals, the target's exit) had their turn.
                if !reader.drain(guard.get_inner_mut(), &mut probes.ebpf, DRAIN_BUDGET)? {
                    guard.clear_ready();
                }
            }
            _ = notified(tables_ready.as_deref()) => reader.tables_ready(&mut probes.ebpf),
            _ = tick.tick() => {
                reader.drain(ring.get_mut(), &mut probes.ebpf, DRAIN_BUDGET)?;
                reader.read_counts(&probes.ebpf, false);
                // Also continues a process stopped for too long for its tables.
                reader.tables_ready(&mut probes.ebpf);
                if names_read.elapsed() >= Duration::from_secs(1) {
                    reader.refresh_thread_names();
                    names_read = Instant::now();
                }
            }
            _ = exited(pidfd.as_ref()) => {
                if !cfg.follow {
                    break "exited";
                }
                // Its last events first: they may name more processes.
                reader.drain(ring.get_mut(), &mut probes.ebpf, DRAIN_BUDGET)?;
                pidfd = None;
            }
            _ = sleep_until(deadline) => break "duration",
            _ = next_refresh(interval.as_mut(), refresh_requests.as_mut()) => {
                let at = started.elapsed();
                // Everything the ring holds now first: the interval is as of this moment.
                reader.drain(ring.get_mut(), &mut probes.ebpf, DRAIN_BUDGET)?;
                let finish = reader.snapshot(&mut snapshotter, &probes, Ending::running(), Some(usize::MAX));
                let summary = reader.processes.summarize(&finish);
                if let Some(live) = live.as_mut() {
                    live.interval(&summary, at, false);
                }
                if let Some(ui) = top.as_mut() {
                    ui.update(&summary, at);
                }
                publish(&server, summary);
                // A full period from now: a slow summary (the first one symbolizes) does not
                // make the next interval a short one.
                if let Some(i) = interval.as_mut() {
                    i.reset();
                }
            }
            _ = snapshot_requests.recv() => {
                reader.drain(ring.get_mut(), &mut probes.ebpf, DRAIN_BUDGET)?;
                let finish = reader.snapshot(&mut snapshotter, &probes, Ending::running(), None);
                let (_, said) = write_snapshot(&reader.processes.summarize(&finish), &outputs, top.is_some());
                match top.as_mut() {
                    Some(top) => top.say(said),
                    None => eprintln!("{said}"),
                }
            }
            key = next_key(top.as_mut()) => {
                let Some(ui) = top.as_mut() else { continue };
                match ui.key(key) {
                    Action::None => {}
                    Action::Snapshot => {
                        reader.drain(ring.get_mut(), &mut probes.ebpf, DRAIN_BUDGET)?;
                        let finish = reader.snapshot(&mut snapshotter, &probes, Ending::running(), None);
                        let (_, said) = write_snapshot(&reader.processes.summarize(&finish), &outputs, true);
                        ui.say(said);
                    }
                    Action::Quit => match child {
                        // Quitting ends the command top launched, as Ctrl-C would; the run
                        // ends when it exits.
                        Some(pid) if signalled == 0 => {
                            signalled += 1;
                            kill(pid, libc::SIGTERM);
                            ui.say(format!("tracer: ended pid {pid}; waiting for it to exit"));
                        }
                        _ => break "interrupted",
                    },
                }
            }
            arrived = signals.recv() => {
                if !arrived.any() {
                    continue;
                }
                let Some(pid) = child else { break "interrupted" };
                signalled += 1;
                // The first signal goes to the command (unless the terminal already sent it
                // there) and we wait for it to end; a second one stops waiting.
                if signalled >= 2 {
                    eprintln!("tracer: stopped waiting for pid {pid}, which goes on untraced");
                    break "interrupted";
                }
                if arrived.terminates > 0 {
                    kill(pid, libc::SIGTERM);
                } else if arrived.sent_interrupts > 0 {
                    kill(pid, libc::SIGINT);
                }
            }
        }
    };
    // No process is stopped at an exec from now on; one stopped already is continued when
    // the drain below reaches its exec.
    if let Err(e) = probes.stop_holding() {
        log::warn!("{e}");
    }
    // What the ring holds now, and no more: a target still running keeps filling it.
    let in_ring = cfg.ring_bytes as usize / size_of::<tracer_common::EventHeader>();
    reader.drain(ring.get_mut(), &mut probes.ebpf, in_ring)?;
    reader.held_faults(&probes);
    reader.last_counts(&probes.ebpf);
    reader.release_waiting();
    let elapsed = started.elapsed();
    snapshotter.stopped = Some(elapsed);
    // The terminal is given back before anything is printed.
    drop(top.take());
    let recorder = reader.recorder.take();
    let mut failed = usize::from(reader.record_failed);
    // Tracing is over: the allocator probes go first, at once, so the target stops paying.
    if let Some(allocators) = reader.allocators.as_deref_mut() {
        let detach = Instant::now();
        allocators.detach();
        log::debug!("detached the allocator probes in {:?}", detach.elapsed());
    }
    // Symbolizing and drawing can take a while for big programs: show that something happens
    // (only when stderr is a terminal).
    let spinner =
        indicatif::ProgressBar::new_spinner().with_message("symbolizing and writing reports");
    spinner.enable_steady_tick(Duration::from_millis(120));

    let (exit_code, signal) = match child {
        Some(pid) if ended_by == "exited" => wait_status(pid),
        _ => (None, None),
    };
    let ending = Ending {
        ended_by: ended_by.into(),
        exit_code,
        signal,
    };
    let finish = reader.snapshot(&mut snapshotter, &probes, ending.clone(), None);
    if live.is_some() || server.is_some() {
        // The last interval line, as of the end: its sites summed over the lines are the
        // summary's. A scrape from now on sees the end.
        let all = reader.snapshot(&mut snapshotter, &probes, ending, Some(usize::MAX));
        let all = reader.processes.summarize(&all);
        if let Some(live) = live.as_mut() {
            failed += live.finish(&all, elapsed);
        }
        publish(&server, all);
    }
    if let Some(recorder) = recorder
        && let Err(e) = recorder.finish(&finish)
    {
        eprintln!("tracer: error: {:#}", anyhow::Error::from(e));
        failed += 1;
    }
    let summary = processes.summarize(&finish);
    spinner.finish_and_clear();
    failed += output::write_all(&summary, &outputs);
    let gate_failed = check_gates(&summary, &cfg.fail_if);
    // The reports are out. Raw tracepoints detach at once; perf ones (the syscalls in `auto`)
    // one by one, each waiting for the kernel's grace periods: a helper process finishes that
    // after we have exited.
    let teardown = Instant::now();
    // Nothing of ours may outlive us in the helper: the HTTP server closes its socket now. And
    // a command still running (left to run untraced) is not stopped at an exec meanwhile.
    drop(server);
    detach_in_background(probes);
    log::debug!("let go of the kernel probes in {:?}", teardown.elapsed());
    let status = match (exit_code, signal) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) if child.is_some() && ended_by == "interrupted" => 128 + libc::SIGINT,
        (None, None) => 0,
    };
    let status = output::exit_status(status, failed);
    Ok(if gate_failed && status == 0 {
        crate::diff::GATE_FAILED
    } else {
        status
    })
}

/// Evaluates `--fail-if` on the summary and says how each went; true when one held.
fn check_gates(summary: &Summary, gates: &[crate::diff::gate::Gate]) -> bool {
    if gates.is_empty() {
        return false;
    }
    let doc = serde_json::to_value(summary).expect("summaries serialize");
    match crate::diff::check_run(&doc, gates) {
        Ok(results) => {
            for r in &results {
                let verdict = if r.failed { "FAILED" } else { "passed" };
                eprintln!("tracer: --fail-if {verdict}: {}", r.message);
            }
            results.iter().any(|r| r.failed)
        }
        Err(e) => {
            eprintln!("tracer: error: {e}");
            true
        }
    }
}

/// Attaches the allocator probes to every file the process has mapped or, for a command
/// stopped at exec, will load, and to `extra` files named by the user.
#[allow(clippy::too_many_arguments)]
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

/// The next refresh: a tick of the interval, or a request of the HTTP server.
async fn next_refresh(
    interval: Option<&mut tokio::time::Interval>,
    requests: Option<&mut tokio::sync::mpsc::UnboundedReceiver<()>>,
) {
    let requested = async {
        match requests {
            Some(r) => {
                if r.recv().await.is_none() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = next_tick(interval) => {}
        _ = requested => {}
    }
}

/// The next tick of an optional interval; never, without one.
async fn next_tick(interval: Option<&mut tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Detaches the kernel probes without making the user wait for it. A child process inherits
/// every descriptor; ours close at once (the child still holds them), and once we have exited
/// (the pipe it waits on reads end of file) the child closes its copies, which is where the
/// kernel waits a grace period per perf tracepoint, then exits. It lets go of stdin, stdout and
/// stderr first, so nothing waiting on them waits for it. Without a child (fork failed), the
/// probes are closed here, with a spinner.
fn detach_in_background(probes: Probes) {
    let mut pipe = [0i32; 2];
    // SAFETY: a valid array of two descriptors.
    let piped = unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } == 0;
    // SAFETY: the child makes only raw syscalls (close, read, close_range, _exit), which are
    // async-signal-safe, so forking a multithreaded process is sound; it touches none of our
    // state.
    let child = if piped { unsafe { libc::fork() } } else { -1 };
    match child {
        0 => unsafe {
            for fd in [0, 1, 2, pipe[1]] {
                libc::close(fd);
            }
            let mut byte = 0u8;
            while libc::read(pipe[0], (&raw mut byte).cast(), 1) < 0
                && *libc::__errno_location() == libc::EINTR
            {}
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            libc::_exit(0);
        },
        -1 => {
            let spinner =
                indicatif::ProgressBar::new_spinner().with_message("detaching the probes");
            spinner.enable_steady_tick(Duration::from_millis(120));
            drop(probes);
            spinner.finish_and_clear();
        }
        _ => {
            // SAFETY: our read end; the write end stays open until we exit.
            unsafe { libc::close(pipe[0]) };
            drop(probes);
        }
    }
}

/// Registers a descriptor-owning value with the reactor for readability.
fn watch<T: AsRawFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: both callers pass values that own their descriptor (an `OwnedFd`, aya's ring
    // buffer map) and keep it open and unchanged until the `AsyncFd` drops them.
    Ok(unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }?)
}

/// The target's exit; never, once it was seen.
async fn exited(pidfd: Option<&AsyncFd<std::os::fd::OwnedFd>>) {
    match pidfd {
        Some(fd) => {
            let _ = fd.readable().await;
        }
        None => std::future::pending().await,
    }
}

/// A notification; never, without something to notify.
async fn notified(notify: Option<&tokio::sync::Notify>) {
    match notify {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(pid, sig) };
}

/// Reaps an exited child: (exit code, killing signal).
fn wait_status(pid: i32) -> (Option<i32>, Option<i32>) {
    let mut status = 0;
    // SAFETY: reaping our own child with a valid status pointer.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return (None, None);
    }
    if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    }
}
