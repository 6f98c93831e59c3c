//! One tracing session: start or find the target, attach, stream events until it ends, report.

use std::{
    collections::{BTreeMap, HashMap},
    ffi::OsString,
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};
use tracer_common::{EVENTS_MAP, STACKS_MAP};

use crate::{
    events,
    launch::HeldChild,
    output::{self, Outputs},
    probes::{
        LoadOptions, Probes,
        stacks::{kernel_stacks, read_stacks},
        tracefs::Tracefs,
        uprobes::{AllocatorProbes, UprobeError, needed_libraries},
    },
    record::Recorder,
    report::TargetInfo,
    session::{Finish, Session, Start, is_loader},
    target,
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
    pub outputs: Outputs,
}

/// The reader drains on this period even when no wakeup came (wakeups are batched).
const DRAIN_PERIOD: Duration = Duration::from_millis(50);

/// Traces as configured, writes the reports, and returns the exit code for the tracer:
/// the command's own for launched commands, 0 for `--pid` runs.
pub async fn run(cfg: RunConfig) -> Result<i32> {
    target::check_privileges()?;
    let tracefs = Tracefs::find_or_mount()?;

    let (pid, mut held, command) = match &cfg.target {
        TargetSpec::Pid(pid) => {
            target::check_pid(*pid)?;
            (*pid, None, target::cmdline(*pid))
        }
        TargetSpec::Command(argv) => {
            let held = HeldChild::spawn(argv)?;
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
    };
    let mut probes = Probes::load_and_attach(&tracefs, &opts)?;
    let ring = probes
        .ebpf
        .take_map(EVENTS_MAP)
        .context("the eBPF object has no event ring")?;
    let ring = RingBuf::try_from(ring).context("opening the event ring")?;
    let mut ring = watch(ring).context("polling the event ring")?;

    // The process as it is now: stopped at exec, or running.
    let start = Start {
        pid: pid as u32,
        command: command.clone(),
        page_size: target::page_size(),
        maps: std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .with_context(|| format!("reading /proc/{pid}/maps"))?,
        gfp_print_fmt: tracefs
            .format("kmem", "mm_page_alloc")
            .map(|f| f.print_fmt)
            .unwrap_or_default(),
        initial_break: if held.is_none() {
            target::current_break(pid)
        } else {
            None
        },
    };
    let mut session = Session::new(&start);
    // Programs and libraries deleted while the process runs stay readable through these.
    let (_kept_files, substitutes) = target::keep_deleted_files(pid, &start.maps);
    let mut recorder = match &cfg.record {
        Some(path) => Some(Recorder::create(path, &start)?),
        None => None,
    };
    let launched = match &cfg.target {
        TargetSpec::Command(_) => std::fs::read_link(format!("/proc/{pid}/exe")).ok(),
        TargetSpec::Pid(_) => None,
    };
    let mut allocators = AllocatorProbes::default();
    attach_allocators(
        &mut allocators,
        &mut probes.ebpf,
        &session,
        launched.as_deref(),
        &cfg.allocator_libs,
        &substitutes,
    )?;
    if held.is_none() {
        eprintln!(
            "tracer: attached to pid {pid} ({}); Ctrl-C to stop",
            command.join(" ")
        );
    }

    let started = Instant::now();
    let child = match held.take() {
        Some(h) => Some(h.release()?),
        None => None,
    };

    let mut reader = Drain {
        session: &mut session,
        recorder: recorder.as_mut(),
        allocators: &mut allocators,
        threads: BTreeMap::new(),
    };
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(DRAIN_PERIOD);
    let deadline = cfg.duration.map(|d| tokio::time::Instant::now() + d);
    let mut interrupts = 0;
    let ended_by = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                reader.drain(guard.get_inner_mut(), &mut probes.ebpf)?;
                guard.clear_ready();
            }
            _ = tick.tick() => reader.drain(ring.get_mut(), &mut probes.ebpf)?,
            _ = pidfd.readable() => break "exited",
            _ = sleep_until(deadline) => break "duration",
            _ = interrupt.recv() => {
                interrupts += 1;
                match child {
                    // The terminal sent SIGINT to the command too; wait for it to exit. A second
                    // Ctrl-C ends it.
                    Some(pid) if interrupts >= 2 => kill(pid, libc::SIGKILL),
                    Some(_) => {}
                    None => break "interrupted",
                }
            }
            _ = terminate.recv() => match child {
                Some(pid) => kill(pid, libc::SIGTERM),
                None => break "interrupted",
            },
        }
    };
    reader.drain(ring.get_mut(), &mut probes.ebpf)?;
    let mut threads = std::mem::take(&mut reader.threads);
    // Threads gone before their name could be read stay unnamed.
    threads.retain(|_, name| !name.is_empty());
    let elapsed = started.elapsed();
    // Symbolizing and drawing can take a while for big programs: show that something happens
    // (only when stderr is a terminal).
    let spinner =
        indicatif::ProgressBar::new_spinner().with_message("symbolizing and writing reports");
    spinner.enable_steady_tick(Duration::from_millis(120));

    let (exit_code, signal) = match child {
        Some(pid) if ended_by == "exited" => wait_status(pid),
        _ => (None, None),
    };
    let stacks = read_stacks(&probes.ebpf, STACKS_MAP, session.stack_ids());
    let finish = Finish {
        target: TargetInfo {
            pid: pid as u32,
            command,
            exit_code,
            signal,
            ended_by: ended_by.into(),
            threads,
        },
        duration_ms: elapsed.as_secs_f64() * 1e3,
        now_ns: monotonic_ns(),
        counters: probes.counters()?.to_vec(),
        kernel_traced: probes.kernel_traced,
        allocator_files: allocators.files(),
        symbols: session.symbol_table(&stacks, &substitutes),
        stacks,
        kernel_stacks: if cfg.kernel_stacks {
            kernel_stacks(&probes.ebpf, &session.kernel, 20)
        } else {
            Vec::new()
        },
        max_sites: cfg.max_sites,
    };
    drop(probes);
    if let Some(recorder) = recorder {
        recorder.finish(&finish)?;
    }
    let summary = session.summarize(&finish);
    spinner.finish_and_clear();
    output::write_all(&summary, &cfg.outputs)?;
    Ok(match (exit_code, signal) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 0,
    })
}

/// Attaches the allocator probes to every file the process has mapped or, for a command
/// stopped at exec, will load, and to `extra` files named by the user.
fn attach_allocators(
    allocators: &mut AllocatorProbes,
    ebpf: &mut Ebpf,
    session: &Session,
    launched: Option<&Path>,
    extra: &[PathBuf],
    substitutes: &HashMap<PathBuf, PathBuf>,
) -> Result<()> {
    // Files gone from their paths are read (and probed: uprobes go by inode) through the
    // descriptors kept for them.
    let mut files: Vec<PathBuf> = session
        .space
        .exec_files()
        .into_iter()
        .map(|f| substitutes.get(&f).cloned().unwrap_or(f))
        .collect();
    if let Some(program) = launched
        && let Some(loader) = files.iter().find(|f| is_loader(f)).cloned()
    {
        files.extend(needed_libraries(&loader, program));
    }
    files.retain(|f| !is_loader(f));
    for file in files {
        match allocators.attach_file(ebpf, &file, session.pid) {
            Err(e @ (UprobeError::Load { .. } | UprobeError::Program(_))) => return Err(e.into()),
            Err(e) => log::warn!("{:#}", anyhow::Error::from(e)),
            Ok(_) => {}
        }
    }
    for file in extra {
        allocators.attach_file(ebpf, file, session.pid)?;
    }
    if allocators.attached.is_empty() {
        log::warn!(
            "no allocator functions found in the process's files: user-space allocations are not traced"
        );
    }
    Ok(())
}

/// Moves records from the ring buffer into the session (and the recording).
struct Drain<'a> {
    session: &'a mut Session,
    recorder: Option<&'a mut Recorder>,
    allocators: &'a mut AllocatorProbes,
    /// Thread names, read from /proc when a thread is first seen (while it still runs).
    threads: BTreeMap<u32, String>,
}

impl Drain<'_> {
    fn drain(&mut self, ring: &mut RingBuf<MapData>, ebpf: &mut Ebpf) -> Result<()> {
        while let Some(record) = ring.next() {
            if let Ok(header) = events::decode_header(&record)
                && header.tgid == self.session.pid
                && !self.threads.contains_key(&header.tid)
            {
                let comm = format!("/proc/{}/task/{}/comm", header.tgid, header.tid);
                let name = std::fs::read_to_string(comm).unwrap_or_default();
                self.threads.insert(header.tid, name.trim_end().to_string());
            }
            if let Some(recorder) = self.recorder.as_deref_mut() {
                recorder.event(&record)?;
            }
            if let Some(lib) = self.session.process(&record) {
                // A library mapped executable after start (dlopen): probe it if it brings an
                // allocator. Calls made before this point are not seen.
                drop(record);
                if let Err(e) = self.allocators.attach_file(ebpf, &lib, self.session.pid) {
                    log::warn!("{:#}", anyhow::Error::from(e));
                }
            }
        }
        Ok(())
    }
}

/// Registers a descriptor-owning value with the reactor for readability.
fn watch<T: AsRawFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: both callers pass values that own their descriptor (an `OwnedFd`, aya's ring
    // buffer map) and keep it open and unchanged until the `AsyncFd` drops them.
    Ok(unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }?)
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
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
