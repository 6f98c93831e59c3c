//! The last phase: the ring read to the end, the probes let go, the reports written, and the
//! exit status: the command's own, or what says a report or a `--fail-if` failed.

use std::time::{Duration, Instant};

use super::{event_loop::Loop, wait::wait_status};
use crate::{
    diff::gate::Gate, facts::EndedBy, output, probes::Probes, runtime::snapshot::Ending,
    summary::Summary,
};

impl Loop<'_> {
    /// Ends the run that `ended`: reads what is left, writes every report, and returns the
    /// exit status.
    pub(super) fn finish(mut self, ended: EndedBy) -> anyhow::Result<i32> {
        self.read_to_the_end()?;
        let elapsed = self.started.elapsed();
        self.views.snapshotter.stopped = Some(elapsed);
        // The terminal is given back before anything is printed.
        drop(self.views.top.take());
        let recorder = self.reader.recorder.take();
        let mut failed = usize::from(self.reader.record_failed);
        // Tracing is over: the allocator probes go first, at once, so the target stops paying.
        if let Some(allocators) = self.reader.allocators.as_deref_mut() {
            let detach = Instant::now();
            allocators.detach();
            log::debug!("detached the allocator probes in {:?}", detach.elapsed());
        }
        // Symbolizing and drawing can take a while for big programs: show how far it is
        // (only when stderr is a terminal).
        let bar = indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {pos}/{len} addresses ({eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message("symbolizing");
        self.views.snapshotter.progress = Some(bar.clone());
        // The command's own status whenever it exited, even when the run ended later for
        // what it left running.
        let (exit_code, signal) = match self.child {
            Some(pid) if ended == EndedBy::Exited || self.target_exited => wait_status(pid),
            _ => (None, None),
        };
        let ending = Ending {
            ended_by: ended,
            exit_code,
            signal,
        };
        let phase = Instant::now();
        let finish = self.finish_now(ending.clone(), None);
        self.views.snapshotter.progress = None;
        bar.finish_and_clear();
        log::debug!("snapshot (symbols included) in {:?}", phase.elapsed());
        let spinner = indicatif::ProgressBar::new_spinner().with_message("writing reports");
        spinner.enable_steady_tick(Duration::from_millis(120));
        if self.views.live.is_some() || self.views.server.is_some() {
            // The last interval line, as of the end: its sites summed over the lines are the
            // summary's. A scrape from now on sees the end.
            let all = self.finish_now(ending, Some(usize::MAX));
            let all = self.reader.processes.summarize(&all);
            if let Some(live) = self.views.live.as_mut() {
                failed += live.finish(&all, elapsed);
            }
            self.views.publish(all);
        }
        if let Some(recorder) = recorder {
            // Said as when a write fails while tracing: the writes may all have waited in the
            // buffer until now.
            let events = recorder.events();
            if let Err(e) = recorder.finish(&finish) {
                eprintln!(
                    "tracer: error: recording stopped after {events} events ({:#}); the partial \
                     recording is discarded",
                    anyhow::Error::from(e)
                );
                failed += 1;
            }
        }
        let phase = Instant::now();
        let summary = self.reader.processes.summarize(&finish);
        spinner.finish_and_clear();
        log::debug!("summary in {:?}", phase.elapsed());
        // The server stops before the reports are written: its clients' descriptors are
        // closed (the reports need some), and nothing of ours outlives us in the helper that
        // detaches the probes.
        drop(self.views.server.take());
        let phase = Instant::now();
        failed += output::write_all(&summary, self.outputs);
        log::debug!("reports written in {:?}", phase.elapsed());
        let gate_failed = check_gates(&summary, &self.cfg.fail_if);
        let status = match (exit_code, signal) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            (None, None) if self.child.is_some() && ended == EndedBy::Interrupted => {
                128 + libc::SIGINT
            }
            (None, None) => 0,
        };
        let status = output::exit_status(status, failed);
        Ok(if gate_failed && status == 0 {
            crate::diff::GATE_FAILED
        } else {
            status
        })
    }

    /// No process is held at an exec from now on (one held already is continued when the
    /// drain reaches its exec); what the ring holds now is read, and no more: a target still
    /// running keeps filling it.
    fn read_to_the_end(&mut self) -> anyhow::Result<()> {
        // Processes held at exit are checked and let go; with --leak-check, those still
        // running are checked as they are.
        self.check_held_at_exit();
        if self.cfg.leak_check.at_end {
            self.check_running(crate::events::CheckMoment::AtEnd);
        }
        if let Err(e) = self.probes.stop_holding() {
            log::warn!("{e}");
        }
        self.ring.stop();
        self.drain();
        self.check_held_at_exit();
        self.reader.held_faults(self.probes);
        self.reader.last_counts(&self.probes.ebpf);
        self.reader.release_waiting();
        // Every held process is let go: the keeper has nothing to do.
        if let Some(keeper) = self.keeper.take() {
            keeper.dismiss();
        }
        Ok(())
    }
}

/// Evaluates `--fail-if` on the summary and says how each went; true when one held.
fn check_gates(summary: &Summary, gates: &[Gate]) -> bool {
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

/// Detaches the kernel probes without making the user wait for it. A child process inherits
/// every descriptor; ours close at once (the child still holds them), and once we have exited
/// (the pipe it waits on reads end of file) the child closes its copies, which is where the
/// kernel waits a grace period per perf tracepoint, then exits. It lets go of stdin, stdout and
/// stderr first, so nothing waiting on them waits for it. Without a child (fork failed), the
/// probes are closed here, with a spinner.
pub(super) fn detach_in_background(probes: Probes) {
    let mut pipe = [0i32; 2];
    // SAFETY: a valid array of two descriptors.
    let piped = unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } == 0;
    // SAFETY: the child makes only raw syscalls (close, read, close_range, _exit), which are
    // async-signal-safe, so forking a multithreaded process is sound; it touches none of our
    // state.
    let child = if piped { unsafe { libc::fork() } } else { -1 };
    match child {
        // SAFETY: in the child: only async-signal-safe raw syscalls on our own descriptors.
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
