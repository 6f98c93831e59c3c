//! The first phase: every output checked, the listener bound and the target found or started
//! (held at its first instruction), before anything is loaded into the kernel.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use tokio::io::unix::AsyncFd;

use super::{RunConfig, TargetSpec, wait::watch};
use crate::{
    output::{self, Checked, Sink},
    probes::tracefs::Tracefs,
    process::cgroup::Cgroup,
    process::launch::HeldChild,
    process::signals::Signals,
    process::sudo_user,
    process::target,
    serve,
};

/// What the run has before it loads anything.
pub(super) struct Prepared {
    pub outputs: Checked,
    pub record: Option<Sink>,
    /// `--record-max`: the directory of the recording's segments.
    pub record_dir: Option<PathBuf>,
    pub jsonl: Option<Sink>,
    /// `--listen`: the bound socket, its token and `--max-metric-sites`.
    pub listener: Option<(std::net::TcpListener, Option<String>, usize)>,
    /// SIGUSR1: a snapshot of every report.
    pub snapshot_requests: tokio::signal::unix::Signal,
    pub tracefs: Tracefs,
    pub target: Target,
}

/// The traced process, found or started.
pub(super) struct Target {
    pub pid: i32,
    /// A launched command, held until the probes are in.
    pub held: Option<HeldChild>,
    pub command: Vec<String>,
    /// Readable when the process exits.
    pub pidfd: AsyncFd<std::os::fd::OwnedFd>,
    /// `--cgroup`: the cgroup, whose first process is the one above.
    pub cgroup: Option<Cgroup>,
}

/// Checks and binds everything a run needs before it touches the kernel, then finds or
/// starts the target: a bad option fails here, in a second, with nothing to undo.
pub(super) fn prepare(cfg: &RunConfig, signals: &mut Signals) -> Result<Prepared> {
    // SAFETY: isatty on the standard descriptors has no preconditions.
    if cfg.top && unsafe { libc::isatty(0) == 0 || libc::isatty(1) == 0 } {
        anyhow::bail!(
            "tracer top draws on a terminal, and its input or output is not one (use --interval \
             or --listen to watch a run without one)"
        );
    }
    target::check_privileges()?;
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
    let snapshot_requests = signals
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
    Ok(Prepared {
        outputs,
        record,
        record_dir,
        jsonl,
        listener,
        snapshot_requests,
        tracefs,
        target: find_or_start(cfg, signals)?,
    })
}

/// The `--pid` process, or the command started and held at its first instruction.
fn find_or_start(cfg: &RunConfig, signals: &Signals) -> Result<Target> {
    let mut cgroup = None;
    let (pid, held, command) = match &cfg.target {
        TargetSpec::Pid(pid) => (*pid, None, target::cmdline(*pid)),
        TargetSpec::Cgroup(path) => {
            let found = Cgroup::open(path)?;
            let pid = first_member(&found, signals)?;
            cgroup = Some(found);
            (pid, None, target::cmdline(pid))
        }
        TargetSpec::System { .. } => unreachable!("a --system run has a runtime of its own"),
        TargetSpec::Command(argv) => {
            let user = if cfg.run_as_root {
                None
            } else {
                sudo_user::sudo_invoker()
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
    Ok(Target {
        pid,
        held,
        command,
        pidfd,
        cgroup,
    })
}

/// The cgroup's first process (the lowest pid), waiting for one to join when it has none.
fn first_member(cgroup: &Cgroup, signals: &Signals) -> Result<i32> {
    let mut said = false;
    loop {
        // A process listed may be gone by the time it is opened: the next one then.
        if let Some(&pid) = cgroup
            .members()
            .iter()
            .find(|&&p| p != std::process::id() && target::alive(p))
        {
            return Ok(pid as i32);
        }
        if !cgroup.exists() {
            anyhow::bail!("--cgroup {}: the cgroup was removed", cgroup.path.display());
        }
        if signals.pending() {
            anyhow::bail!("interrupted before a process joined the cgroup");
        }
        if !said {
            eprintln!(
                "tracer: cgroup {} has no process; waiting for one to join (Ctrl-C to stop)",
                crate::summary::visible(&cgroup.path.display().to_string())
            );
            said = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
