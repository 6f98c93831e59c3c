//! One tracing session, in four phases that each fit on a screen: `prepare` (outputs
//! checked, listener bound, target found or started), `start` (probes loaded and attached,
//! recording begun), the event loop (`event_loop::Loop::run`, which returns how the run ended)
//! and `finish` (teardown, reports, exit status).

mod cgroup;
mod config;
mod drain;
mod event_loop;
mod finish;
mod leak_check;
mod oom;
mod prepare;
mod ring;
mod snapshot;
mod start;
mod system;
mod ui;
mod views;
mod wait;

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
pub use config::{LeakChecks, Listen, Mode, RunConfig, StackWalk, TargetSpec};

use crate::process::signals::Signals;

/// Traces as configured, writes the reports, and returns the exit code for the tracer:
/// the command's own for launched commands, 0 for `--pid` runs (see
/// [`crate::output::exit_status`] when a report could not be written).
pub async fn run(cfg: RunConfig) -> Result<i32> {
    // From here on SIGINT and SIGTERM are ours: setup is never cut short without a word.
    let mut signals = Signals::install().context("installing signal handlers")?;
    if let TargetSpec::System { empty } = cfg.target {
        return system::run(&cfg, &mut signals, empty).await;
    }
    let mut phase = Phase::begin();
    let prepare::Prepared {
        outputs,
        record,
        record_dir,
        jsonl,
        listener,
        mut snapshot_requests,
        tracefs,
        mut target,
    } = prepare::prepare(&cfg, &mut signals)?;
    phase.done("prepared (outputs checked, target found or started)");
    // The run loop applies every event: it runs before the target's threads (the command, its
    // priority its own, was started already; the ring's reader runs before both).
    // SAFETY: setpriority on the calling thread.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) };
    let start::Traced {
        mut probes,
        mut allocators,
        ring,
        mut processes,
        files,
        recorder,
        tables,
        probe_pid,
        page_size,
        facts,
        keeper,
        base,
    } = start::start(&cfg, &tracefs, &target, record, record_dir, &signals)?;
    phase.done("started (probes loaded and attached, unwind tables in)");
    let mut views = views::Views::start(&cfg, facts, jsonl, outputs.text, listener, page_size)?;
    let started = views.begin();
    let child = match target.held.take() {
        Some(h) => Some(h.release()?),
        None => None,
    };
    let reader = drain::Drain::new(
        &mut processes,
        allocators.as_mut(),
        recorder,
        BTreeMap::from([(target.pid as u32, files)]),
        tables,
        probe_pid,
    );
    let mut run = event_loop::Loop {
        cfg: &cfg,
        ring,
        probes: &mut probes,
        reader,
        views,
        outputs: &outputs,
        child,
        signalled: 0,
        target_exited: false,
        started,
        keeper,
        followed: target.cgroup.take().map(cgroup::Followed::new),
        base,
        triggers: cgroup::Triggers::default(),
    };
    let mut check_requests = signals
        .take_check_requests()
        .context("installing the SIGUSR2 handler")?;
    let ended = run
        .run(
            &mut signals,
            &mut snapshot_requests,
            &mut check_requests,
            target.pidfd,
        )
        .await?;
    phase.done("traced");
    let status = run.finish(ended)?;
    phase.done("finished (symbolized, reports written)");
    // The reports are out. Raw tracepoints detach at once; perf ones (the syscalls in `auto`)
    // one by one, each waiting for the kernel's grace periods: a helper process finishes that
    // after we have exited.
    finish::detach_in_background(probes);
    Ok(status)
}

/// The run's phases as `-v` shows them: each with how long it took.
struct Phase(std::time::Instant);

impl Phase {
    fn begin() -> Self {
        Phase(std::time::Instant::now())
    }

    /// Says that a phase is `done`, and how long it took; the next one starts now.
    fn done(&mut self, what: &str) {
        let ms = self.0.elapsed().as_secs_f64() * 1e3;
        log::info!("{what} in {}", crate::summary::label::human_duration(ms));
        self.0 = std::time::Instant::now();
    }
}
