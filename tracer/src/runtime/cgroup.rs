//! `--cgroup`: the processes of a cgroup joined to the run (those in it when tracing starts,
//! and those moved in later, found at the next poll; those its processes create join at their
//! fork, as with `--follow`), and its memory use sampled while tracing.

use std::time::{Duration, Instant};

use aya::Ebpf;

use super::drain::Drain;
use crate::{
    facts::{CgroupFacts, Pressure},
    process::{
        cgroup::{Cgroup, PressureTrigger, pressure_now},
        session::{Joined, Start, is_loader},
        target::{self, TargetFiles},
    },
    runtime::snapshot::monotonic_ns,
};

/// How often the cgroup is read for processes moved in, and for its memory use.
pub(super) const POLL_PERIOD: Duration = Duration::from_secs(1);

/// The followed cgroup, and what the run saw of it.
pub(super) struct Followed {
    pub cgroup: Cgroup,
    /// Its use as sampled: (ms after tracing began, bytes).
    usage: Vec<(f64, u64)>,
    polled: Option<Instant>,
    started: Instant,
}

/// The most samples of the cgroup's use kept: past it, every other one goes (a day at a
/// second each thins to about one in 32).
const MAX_SAMPLES: usize = 4096;

impl Followed {
    pub(super) fn new(cgroup: Cgroup) -> Self {
        Followed {
            cgroup,
            usage: Vec::new(),
            polled: None,
            started: Instant::now(),
        }
    }

    /// Whether a poll is due at `now` (the first one is at once).
    pub(super) fn due(&self, now: Instant) -> bool {
        self.polled
            .is_none_or(|at| now.saturating_duration_since(at) >= POLL_PERIOD)
    }

    /// Takes a sample of its use, and returns the processes in it now.
    pub(super) fn poll(&mut self, now: Instant) -> Vec<u32> {
        self.polled = Some(now);
        if let Some(bytes) = self.cgroup.memory().usage_bytes {
            if self.usage.len() >= MAX_SAMPLES {
                let mut keep = false;
                self.usage.retain(|_| {
                    keep = !keep;
                    keep
                });
            }
            let ms = now.saturating_duration_since(self.started).as_secs_f64() * 1e3;
            self.usage.push((ms, bytes));
        }
        self.cgroup.members()
    }

    /// What a summary says of it now.
    pub(super) fn facts(&self) -> CgroupFacts {
        self.cgroup.facts(&self.usage)
    }
}

impl Drain<'_> {
    /// Joins every process of `members` not traced yet (the kernel adds a traced process's
    /// children at their fork, before userspace hears of them: those are skipped). Returns how
    /// many joined.
    pub(super) fn adopt_all(&mut self, ebpf: &mut Ebpf, members: &[u32], base: &Start) -> usize {
        let root = self.processes.root().pid;
        let mut joined = 0;
        for &pid in members {
            if pid == root || pid == std::process::id() {
                continue;
            }
            let parent = target::parent(pid).unwrap_or(0);
            match crate::probes::follow_process(ebpf, pid, parent) {
                Ok(true) => {
                    self.adopt(ebpf, pid, parent, base);
                    joined += 1;
                }
                Ok(false) => {}
                Err(e) => {
                    log::warn!("pid {pid}: {:#}", anyhow::Error::from(e));
                }
            }
        }
        joined
    }

    /// Process `pid`, just added to the traced set, joins the run: its books start from its
    /// image as it is now (as a `--pid` target's do), its files are opened and probed, and its
    /// unwind tables given to the kernel.
    fn adopt(&mut self, ebpf: &mut Ebpf, pid: u32, ppid: u32, base: &Start) {
        let ts_ns = monotonic_ns();
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        let joined = Joined {
            ts_ns,
            ppid,
            start: Start {
                pid,
                command: target::cmdline(pid as i32),
                resident_at_attach: target::resident_now(pid, &maps),
                initial_break: target::current_break(pid as i32),
                maps,
                ..base.clone()
            },
        };
        self.processes.adopt(&joined);
        self.record_with(|r| r.joined(&joined));
        let mut files = TargetFiles::new(pid as i32);
        files.open_mapped(&joined.start.maps);
        let exec_files = self
            .processes
            .get(pid)
            .map(|s| s.space.exec_files())
            .unwrap_or_default();
        for path in exec_files {
            let Some(via) = files.open_path(&path) else {
                continue;
            };
            if let Some(allocators) = self.allocators.as_deref_mut()
                && !is_loader(&path)
                && let Err(e) = allocators.attach_file(ebpf, &path, &via, self.probe_pid)
            {
                log::warn!("{:#}", anyhow::Error::from(e));
            }
            if let Some(tables) = self.tables.as_mut()
                && let Err(e) = tables.request(ebpf, &via)
            {
                log::warn!("{:#}", anyhow::Error::from(e));
            }
        }
        if let Some(old) = self.files.insert(pid, files) {
            self.retired.push(old);
        }
        self.new_code = true;
        self.sync_tables(ebpf, pid);
        log::info!("pid {pid} joined the traced cgroup's processes");
    }
}

/// When a snapshot is written on its own: memory pressure rising above `--on-pressure`, a
/// followed cgroup's `memory.events` high count rising.
#[derive(Default)]
pub(super) struct Triggers {
    checked: Option<Instant>,
    /// Pressure was above the threshold at the last check: the next snapshot waits for it to
    /// fall and rise again.
    above: bool,
    /// The cgroup's high count at the last check.
    high: Option<u64>,
}

impl Triggers {
    /// Why a snapshot is due now, if one is; checked once a second.
    pub(super) fn check(
        &mut self,
        trigger: Option<PressureTrigger>,
        file: Option<&std::path::Path>,
        cgroup: Option<&Cgroup>,
        now: Instant,
    ) -> Option<String> {
        if trigger.is_none() && cgroup.is_none() {
            return None;
        }
        if self
            .checked
            .is_some_and(|at| now.saturating_duration_since(at) < POLL_PERIOD)
        {
            return None;
        }
        self.checked = Some(now);
        let pressure = trigger.and_then(|_| pressure_now(file, cgroup));
        let high = cgroup.and_then(|c| c.memory().events.high);
        self.seen(trigger, pressure, high)
    }

    /// What was read now: a rise of either is a reason for a snapshot.
    fn seen(
        &mut self,
        trigger: Option<PressureTrigger>,
        pressure: Option<Pressure>,
        high: Option<u64>,
    ) -> Option<String> {
        let mut why = None;
        if let Some(t) = trigger
            && let Some(p) = pressure
        {
            let value = t.value(&p);
            let above = value > t.above;
            if above && !self.above {
                why = Some(format!("memory pressure {value:.2} ({})", t.name()));
            }
            self.above = above;
        }
        if let Some(high) = high {
            if self.high.is_some_and(|before| high > before) {
                why.get_or_insert_with(|| {
                    format!("the cgroup's memory.events high count rose to {high}")
                });
            }
            self.high = Some(high);
        }
        why
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_once_per_rise() {
        let t: PressureTrigger = "some avg10>20".parse().unwrap();
        let at = |some_avg10| {
            Some(Pressure {
                some_avg10,
                ..Pressure::default()
            })
        };
        let mut tr = Triggers::default();
        assert_eq!(tr.seen(Some(t), at(5.0), None), None);
        let why = tr.seen(Some(t), at(25.0), None).unwrap();
        assert!(
            why.contains("25.00") && why.contains("some avg10>20"),
            "{why}"
        );
        // Still above: no second snapshot until it falls and rises again.
        assert_eq!(tr.seen(Some(t), at(30.0), None), None);
        assert_eq!(tr.seen(Some(t), at(10.0), None), None);
        assert!(tr.seen(Some(t), at(21.0), None).is_some());
        // The cgroup's high count: the first reading is where it starts.
        let mut tr = Triggers::default();
        assert_eq!(tr.seen(None, None, Some(4)), None);
        assert_eq!(tr.seen(None, None, Some(4)), None);
        let why = tr.seen(None, None, Some(6)).unwrap();
        assert!(why.contains("high count rose to 6"), "{why}");
    }
}
