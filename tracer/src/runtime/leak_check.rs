//! Leak checks during a run: each process held at its `_exit`, and with `--leak-check` each
//! traced process still running when tracing ends (and at SIGUSR2).
//!
//! A check stops the process's threads ([`crate::reach::Check`]), reads what the ring holds
//! (every event the process sent before it stopped), scans, lets the threads go, and turns
//! the result into records ([`LeakCheckEvent`], then a [`BlockKindEvent`] per block not
//! reachable) that are recorded and applied like the ring's: a replay shows the same check.

use tracer_common::{BlockKindEvent, EventHeader, LeakCheckEvent, kind, leak_check};

use super::{event_loop::Loop, snapshot::monotonic_ns, wait::kill};
use crate::{
    events::{self, CheckMoment, LeakKind},
    reach::{Check, Scanned},
    summary::{label, leak_check::LeakCheckSummary},
};

impl Loop<'_> {
    /// Checks every process held at its exit, then lets it exit.
    pub(super) fn check_held_at_exit(&mut self) {
        while let Some(pid) = self.reader.exit_held.0.pop() {
            self.leak_check(pid, CheckMoment::AtExit);
            kill(pid as i32, libc::SIGCONT);
        }
    }

    /// `--leak-check` as tracing ends, or SIGUSR2: every traced process still running. Only
    /// where every live block is known (the full mode, not sampled).
    pub(super) fn check_running(&mut self, moment: CheckMoment) {
        if self.cfg.mode != super::Mode::Full || self.cfg.sample_bytes > 0 {
            self.views.say(
                "tracer: no leak check: it needs every live block, which only the full mode \
                 without --sample knows"
                    .into(),
            );
            return;
        }
        let pids: Vec<u32> = self
            .reader
            .processes
            .iter()
            .filter(|p| p.exit.is_none() && crate::process::target::alive(p.session.pid))
            .map(|p| p.session.pid)
            .collect();
        for pid in pids {
            self.leak_check(pid, moment);
        }
    }

    /// One check of `pid`, its result recorded and applied.
    fn leak_check(&mut self, pid: u32, moment: CheckMoment) {
        let max_pause = self.cfg.leak_check.max_pause;
        let check = match Check::stop(pid as i32) {
            Ok(check) => check,
            Err(e) => {
                self.views
                    .say(format!("tracer: leak check of pid {pid} not done: {e}"));
                self.take_check(pid, moment, None, &[]);
                return;
            }
        };
        // What the process sent before it stopped: the live blocks as of now.
        let t = std::time::Instant::now();
        self.ring.sync();
        self.drain();
        log::debug!("leak check of {pid}: drained in {:?}", t.elapsed());
        let t = std::time::Instant::now();
        let (starts, sizes) = self
            .reader
            .processes
            .get(pid)
            .map(crate::process::session::Session::live_block_spans)
            .unwrap_or_default();
        log::debug!(
            "leak check of {pid}: {} blocks listed in {:?}",
            starts.len(),
            t.elapsed()
        );
        let scanned = check.scan(&starts, &sizes, max_pause);
        drop(check);
        let pause = label::human_duration(scanned.pause.as_secs_f64() * 1e3);
        if scanned.gave_up {
            self.views.say(format!(
                "tracer: leak check of pid {pid} given up after {pause} \
                 (--leak-check-max-pause); the process runs on"
            ));
        } else if moment == CheckMoment::OnRequest {
            let mut sum = LeakCheckSummary::default();
            for (kind, &size) in scanned.kinds.iter().zip(&sizes) {
                sum.add(Some(*kind), size, 1);
            }
            self.views.say(format!(
                "tracer: leak check of pid {pid} (stopped {pause}): {}",
                label::leak_totals(&sum)
            ));
        }
        self.take_check(pid, moment, Some(&scanned), &starts);
    }

    /// The records of a check, through the recording into the session.
    fn take_check(
        &mut self,
        pid: u32,
        moment: CheckMoment,
        scanned: Option<&Scanned>,
        starts: &[u64],
    ) {
        let header = |kind| EventHeader {
            ts_ns: monotonic_ns(),
            kind,
            tgid: pid,
            tid: pid,
            cpu: 0,
        };
        let outcome = match scanned {
            None => leak_check::FAILED,
            Some(s) if s.gave_up => leak_check::GAVE_UP,
            Some(_) => leak_check::DONE,
        };
        let check = LeakCheckEvent {
            header: header(kind::LEAK_CHECK),
            outcome,
            moment: match moment {
                CheckMoment::AtExit => leak_check::AT_EXIT,
                CheckMoment::AtEnd => leak_check::AT_END,
                CheckMoment::OnRequest => leak_check::ON_REQUEST,
            },
            pause_us: scanned.map_or(0, |s| s.pause.as_micros() as u64),
            scanned_bytes: scanned.map_or(0, |s| s.scanned_bytes),
            blocks: scanned.map_or(0, |s| s.kinds.len() as u64),
        };
        self.reader.take_own(events::encode(&check));
        let Some(scanned) = scanned else {
            return;
        };
        let header = header(kind::BLOCK_KIND);
        for (&addr, &kind) in starts.iter().zip(&scanned.kinds) {
            if kind == LeakKind::Reachable {
                continue;
            }
            let block = BlockKindEvent {
                header,
                addr,
                kind: kind.wire(),
                _pad: 0,
            };
            self.reader.take_own(events::encode(&block));
        }
    }
}
