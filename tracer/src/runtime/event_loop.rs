//! The third phase: records drained from the ring while the target runs, the views refreshed,
//! signals, keys and snapshot requests answered, until the run ends.

use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::io::unix::AsyncFd;

use super::{
    RunConfig,
    cgroup::{Followed, Triggers},
    drain::Drain,
    ring::RingReader,
    ui::next_key,
    views::Views,
    wait::{exited, kill, next_requests, next_tick, notified, sleep_until},
};
use crate::{
    facts::EndedBy,
    output::Checked,
    periodic::write_snapshot,
    probes::Probes,
    process::keeper::Keeper,
    process::session::{Finish, Start},
    process::signals::{Arrived, Signals},
    runtime::snapshot::Ending,
    summary::Summary,
    top::KeyAction,
};

/// The most often a scrape (`--listen`) makes a summary: requests in between wait for it.
const SCRAPE_GAP: Duration = Duration::from_millis(250);

/// What the reader took is applied at least this often, and the kernel's counts read.
const DRAIN_PERIOD: Duration = Duration::from_millis(50);

/// Everything the loop turns: the ring, the probes, the reader and the views.
pub(super) struct Loop<'a> {
    pub cfg: &'a RunConfig,
    pub ring: RingReader,
    pub probes: &'a mut Probes,
    pub reader: Drain<'a>,
    pub views: Views,
    pub outputs: &'a Checked,
    /// The command tracer launched, running; none for `--pid`.
    pub child: Option<i32>,
    /// Signals (and top's quits) passed on to the command so far.
    pub signalled: u32,
    /// `--follow`: the target exited and the run waits for the processes it created.
    pub target_exited: bool,
    pub started: Instant,
    /// Lets held processes go if tracer dies before `finish` does.
    pub keeper: Option<Keeper>,
    /// `--cgroup`: the cgroup whose processes join the run.
    pub followed: Option<Followed>,
    /// What a joining process's books start from, less its own image.
    pub base: Start,
    /// Snapshots on pressure and on a cgroup's high events.
    pub triggers: Triggers,
}

impl Loop<'_> {
    /// Runs until the target exits (with `--follow`, every process it created too), the
    /// duration is up, or the user interrupts.
    pub(super) async fn run(
        &mut self,
        signals: &mut Signals,
        snapshot_requests: &mut tokio::signal::unix::Signal,
        check_requests: &mut tokio::signal::unix::Signal,
        pidfd: AsyncFd<std::os::fd::OwnedFd>,
    ) -> Result<EndedBy> {
        // Woken when a table compiled in the background is in.
        let tables_ready = self
            .reader
            .tables
            .as_ref()
            .map(crate::unwind::UnwindTables::ready);
        let mut tick = tokio::time::interval(DRAIN_PERIOD);
        let mut names_read = Instant::now();
        let deadline = self.cfg.duration.map(|d| tokio::time::Instant::now() + d);
        // The target exited: watched no more. With --follow the run goes on while a process
        // it created runs.
        let mut pidfd = Some(pidfd);
        // When the scrapes waiting are answered.
        let mut scrape: Option<tokio::time::Instant> = None;
        loop {
            if !self.reader.exit_held.0.is_empty() {
                self.check_held_at_exit();
            }
            if !self.reader.oom_victims.is_empty() {
                self.write_oom_reports();
            }
            let cgroup = self.followed.as_ref().map(|f| &f.cgroup);
            if let Some(why) = self.triggers.check(
                self.cfg.on_pressure,
                self.cfg.pressure_file.as_deref(),
                cgroup,
                Instant::now(),
            ) {
                self.views.say(format!("tracer: {why}: a snapshot"));
                self.snapshot();
            }
            // A cgroup is followed until it is removed, whoever is in it.
            if let Some(ended) = self.poll_cgroup() {
                return Ok(ended);
            }
            if pidfd.is_none() && !self.reader.others_running() && self.followed.is_none() {
                return Ok(EndedBy::Exited);
            }
            tokio::select! {
                batch = self.ring.next() => self.reader.apply(&batch, &mut self.probes.ebpf),
                _ = notified(tables_ready.as_deref()) => self.reader.tables_ready(&mut self.probes.ebpf),
                _ = tick.tick() => {
                    self.on_tick();
                    if names_read.elapsed() >= Duration::from_secs(1) {
                        self.reader.refresh_thread_names();
                        names_read = Instant::now();
                    }
                }
                _ = exited(pidfd.as_ref()) => {
                    if !self.cfg.follow {
                        return Ok(EndedBy::Exited);
                    }
                    // Its last events first: they may name more processes.
                    self.ring.sync();
                    self.drain();
                    pidfd = None;
                    self.target_exited = true;
                }
                _ = sleep_until(deadline) => return Ok(EndedBy::Duration),
                _ = next_tick(self.views.interval.as_mut()) => {
                    let at = self.started.elapsed();
                    // Everything the ring holds now first: the interval is as of this moment.
                    let summary = self.summary_now(Some(usize::MAX));
                    self.views.refresh(summary, at);
                    scrape = None;
                }
                // Scrapes are answered together, at most one summary per SCRAPE_GAP, and are
                // no interval: neither an interval line nor a new period.
                _ = next_requests(self.views.refresh_requests.as_mut()), if scrape.is_none() => {
                    scrape = Some(self.views.published_at().map_or_else(
                        tokio::time::Instant::now,
                        |at| tokio::time::Instant::from_std(at + SCRAPE_GAP),
                    ));
                }
                _ = sleep_until(scrape) => {
                    scrape = None;
                    let summary = self.summary_now(Some(usize::MAX));
                    self.views.publish(summary);
                }
                _ = snapshot_requests.recv() => self.snapshot(),
                _ = check_requests.recv() => {
                    self.check_running(crate::events::CheckMoment::OnRequest);
                }
                key = next_key(self.views.top.as_mut()) => {
                    if let Some(ended) = self.on_key(key)? {
                        return Ok(ended);
                    }
                }
                arrived = signals.recv() => {
                    if let Some(ended) = self.on_signal(arrived) {
                        return Ok(ended);
                    }
                }
            }
        }
    }

    /// Every batch the ring reader has taken so far.
    pub(super) fn drain(&mut self) {
        while let Some(batch) = self.ring.try_next() {
            self.reader.apply(&batch, &mut self.probes.ebpf);
        }
    }

    /// The periodic work: a drain (wakeups are batched), the kernel's counts, and continuing
    /// a process stopped for too long for its tables.
    fn on_tick(&mut self) {
        self.drain();
        self.reader.read_counts(&self.probes.ebpf, false);
        self.reader.tables_ready(&mut self.probes.ebpf);
    }

    /// A summary as of now, with at most `max_sites` sites (`--max-sites` when none).
    pub(super) fn summary_now(&mut self, max_sites: Option<usize>) -> Summary {
        // As of this moment: what the ring holds now is read first.
        self.ring.sync();
        self.drain();
        let finish = self.finish_now(Ending::running(), max_sites);
        self.reader.processes.summarize(&finish)
    }

    /// What a report needs as of now, the followed cgroup's numbers included.
    pub(super) fn finish_now(&mut self, ending: Ending, max_sites: Option<usize>) -> Finish {
        let mut finish = self.reader.snapshot(
            &mut self.views.snapshotter,
            &*self.probes,
            ending,
            max_sites,
        );
        finish.cgroup = self.followed.as_ref().map(Followed::facts);
        finish
    }

    /// `--cgroup`, once a second: processes moved in join, and its use is sampled. The end of
    /// the run when the cgroup was removed.
    fn poll_cgroup(&mut self) -> Option<EndedBy> {
        let followed = self.followed.as_mut()?;
        let now = Instant::now();
        if !followed.due(now) {
            return None;
        }
        let members = followed.poll(now);
        if !followed.cgroup.exists() {
            eprintln!(
                "tracer: cgroup {} was removed",
                crate::summary::visible(&followed.cgroup.path.display().to_string())
            );
            return Some(EndedBy::Exited);
        }
        // The forks so far first: their children are in the traced set already.
        self.ring.sync();
        self.drain();
        self.reader
            .adopt_all(&mut self.probes.ebpf, &members, &self.base);
        None
    }

    /// SIGUSR1 or `s` in top: every report written now, named by the time.
    fn snapshot(&mut self) {
        let summary = self.summary_now(None);
        let (_, said) = write_snapshot(&summary, self.outputs, self.views.top.is_some());
        self.views.say(said);
    }

    /// A key in `tracer top`; the end of the run when it quits.
    fn on_key(&mut self, key: crossterm::event::KeyEvent) -> Result<Option<EndedBy>> {
        let Some(ui) = self.views.top.as_mut() else {
            return Ok(None);
        };
        match ui.key(key) {
            KeyAction::None => {}
            KeyAction::Snapshot => self.snapshot(),
            KeyAction::LeakCheck => self.check_running(crate::events::CheckMoment::OnRequest),
            KeyAction::Quit => match self.child {
                // Quitting ends the command top launched, as Ctrl-C would; the run ends when
                // it exits.
                Some(pid) if self.signalled == 0 => {
                    self.signalled += 1;
                    kill(pid, libc::SIGTERM);
                    ui.say(format!("tracer: ended pid {pid}; waiting for it to exit"));
                }
                _ => return Ok(Some(EndedBy::Interrupted)),
            },
        }
        Ok(None)
    }

    /// SIGINT or SIGTERM. The first goes to the command tracer launched (unless the terminal
    /// already sent it there) and the run waits for it to end; a second one stops waiting.
    fn on_signal(&mut self, arrived: Arrived) -> Option<EndedBy> {
        if !arrived.any() {
            return None;
        }
        let Some(pid) = self.child else {
            return Some(EndedBy::Interrupted);
        };
        self.signalled += 1;
        // The command is gone; what keeps the run going is what it left running.
        if self.target_exited {
            if self.signalled >= 2 {
                return Some(EndedBy::Interrupted);
            }
            let others = self.reader.others();
            let listed: Vec<String> = others.iter().take(8).map(u32::to_string).collect();
            eprintln!(
                "tracer: pid {pid} exited; waiting for {} process{} it created (pid {}{}) to \
                 exit: Ctrl-C again to stop tracing them",
                others.len(),
                if others.len() == 1 { "" } else { "es" },
                listed.join(", "),
                if others.len() > 8 { ", ..." } else { "" }
            );
            return None;
        }
        if self.signalled >= 2 {
            eprintln!("tracer: stopped waiting for pid {pid}, which goes on untraced");
            return Some(EndedBy::Interrupted);
        }
        if arrived.terminates > 0 {
            kill(pid, libc::SIGTERM);
        } else if arrived.sent_interrupts > 0 {
            kill(pid, libc::SIGINT);
        }
        None
    }
}
