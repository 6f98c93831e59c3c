//! One tracing session: start or find the target, attach, stream events until it ends, report.

use std::{
    ffi::OsString,
    fs,
    io::{self, Write},
    os::fd::AsRawFd,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use aya::maps::RingBuf;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};
use tracer_common::{EVENTS_MAP, counter};

use crate::{
    attribution::AddressSpace,
    gfp::GfpTable,
    launch::HeldChild,
    probes::{LoadOptions, Probes, tracefs::Tracefs},
    report::{
        self, SCHEMA, Summary, TargetInfo,
        kernel::{KernelSummary, PathsSummary},
    },
    session::Session,
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
    pub json: Option<PathBuf>,
    pub ring_bytes: u32,
    pub quiet: bool,
    /// Files to probe for allocator functions besides those found automatically.
    pub allocator_libs: Vec<PathBuf>,
    /// Most call sites and leaks listed in the summary.
    pub max_sites: usize,
    /// Record kernel stacks of page and slab allocations.
    pub kernel_stacks: bool,
    /// Follow the kernel's allocators (buddy, slab) and page faults.
    pub kernel: bool,
}

/// The reader drains on this period even when no wakeup came (wakeups are batched).
const DRAIN_PERIOD: Duration = Duration::from_millis(50);

/// Traces as configured, prints the summary, and returns the exit code for the tracer:
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
    // Read while the command is stopped at exec, or as the process is now.
    let space = AddressSpace::from_pid(pid).with_context(|| format!("reading /proc/{pid}/maps"))?;

    let opts = LoadOptions {
        target_tgid: pid as u32,
        ring_bytes: cfg.ring_bytes,
        wakeup_bytes: (cfg.ring_bytes / 4).max(4096),
        kernel_stacks: cfg.kernel_stacks,
        kernel: cfg.kernel,
    };
    let mut probes = Probes::load_and_attach(&tracefs, &opts)?;
    let ring = probes
        .ebpf
        .take_map(EVENTS_MAP)
        .context("the eBPF object has no event ring")?;
    let ring = RingBuf::try_from(ring).context("opening the event ring")?;
    let mut ring = watch(ring).context("polling the event ring")?;

    let mut session = Session::new(pid as u32, space, target::page_size());
    if let Ok(format) = tracefs.format("kmem", "mm_page_alloc") {
        session.gfp = GfpTable::from_print_fmt(&format.print_fmt);
    }
    let launched = match &cfg.target {
        TargetSpec::Command(_) => std::fs::read_link(format!("/proc/{pid}/exe")).ok(),
        TargetSpec::Pid(_) => None,
    };
    session.attach_allocators(&mut probes.ebpf, launched.as_deref(), &cfg.allocator_libs)?;
    if held.is_none() {
        if let Some(brk) = target::current_break(pid) {
            session.agg.syscalls.set_initial_break(brk);
        }
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

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut tick = tokio::time::interval(DRAIN_PERIOD);
    let deadline = cfg.duration.map(|d| tokio::time::Instant::now() + d);
    let mut interrupts = 0;
    let ended_by = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                session.drain(guard.get_inner_mut(), &mut probes.ebpf);
                guard.clear_ready();
            }
            _ = tick.tick() => session.drain(ring.get_mut(), &mut probes.ebpf),
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
    session.drain(ring.get_mut(), &mut probes.ebpf);
    let elapsed = started.elapsed();
    let counters = probes.counters()?;
    let user = session.user_summary(&probes.ebpf, monotonic_ns(), cfg.max_sites);
    let mut kernel = KernelSummary::new(&session.kernel, &session.join);
    kernel.traced = probes.kernel_traced;
    if cfg.kernel_stacks {
        kernel.stacks = session.kernel_stacks(&probes.ebpf, 20);
    }
    drop(probes);
    let mut counts = session.counts;

    let k = |c: u32| counters[c as usize];
    counts.dropped += k(counter::RINGBUF_DROPPED)
        + k(counter::SYSCALL_ENTRY_STORE_FAILED)
        + k(counter::ALLOC_STATE_STORE_FAILED);
    counts.unpaired = k(counter::SYSCALL_UNPAIRED_EXIT) + k(counter::ALLOC_UNPAIRED_EXIT);
    counts.nested_allocator_calls = k(counter::ALLOC_NESTED);
    counts.stacks_lost = k(counter::STACK_FAILED);
    counts.read_failures = k(counter::READ_FAILED);

    let (exit_code, signal) = match child {
        Some(pid) if ended_by == "exited" => wait_status(pid),
        _ => (None, None),
    };
    let summary = Summary {
        schema: SCHEMA,
        target: TargetInfo {
            pid: pid as u32,
            command,
            exit_code,
            signal,
            ended_by,
        },
        duration_ms: elapsed.as_secs_f64() * 1e3,
        events: counts,
        kernel,
        paths: PathsSummary::new(&session.join),
        syscalls: session.agg.syscalls,
        user,
    };
    if !cfg.quiet {
        report::text::render(&summary, io::stderr().lock())?;
    }
    if let Some(path) = &cfg.json {
        write_json(&summary, path)?;
    }
    Ok(match (exit_code, signal) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 0,
    })
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

fn write_json(summary: &Summary, path: &PathBuf) -> Result<()> {
    if path.as_os_str() == "-" {
        return Ok(report::json::render(summary, io::stdout().lock())?);
    }
    let mut buf = Vec::new();
    report::json::render(summary, &mut buf)?;
    let tmp = path.with_extension("json.tmp");
    fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(&buf))
        .and_then(|()| fs::rename(&tmp, path))
        .with_context(|| format!("writing {}", path.display()))
}
