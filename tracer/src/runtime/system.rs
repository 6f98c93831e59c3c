//! `--system`: every process on the machine, counted in the kernel (no event sent), read once
//! a second into the model; the processes and cgroups that grow most and are largest in the
//! reports, `tracer top --system` and `/metrics`, until `--duration` or Ctrl-C.

use std::time::Duration;

use anyhow::Result;
use aya::maps::{PerCpuArray, PerCpuHashMap};
use tracer_common::{CountsSlot, ProcessCounts, SYSTEM_COUNTS_MAP, SYSTEM_SLOTS_MAP};

use super::{RunConfig, ui::next_key, views::Views, wait::sleep_until};
use crate::{
    aggregate::system::SystemModel,
    facts::{EndedBy, TargetFacts},
    output,
    probes::{LoadOptions, Probes, SystemProbes, tracefs::Tracefs},
    process::{
        session::{Finish, Session, Start},
        signals::Signals,
        target,
    },
    serve,
    summary::{Summary, system},
    top::KeyAction,
};

/// How often the kernel's counts are read.
const READ_PERIOD: Duration = Duration::from_secs(1);

/// Runs a `--system` trace; returns the exit status.
pub(super) async fn run(cfg: &RunConfig, signals: &mut Signals, empty: bool) -> Result<i32> {
    // SAFETY: isatty on the standard descriptors has no preconditions.
    if cfg.top && unsafe { libc::isatty(0) == 0 || libc::isatty(1) == 0 } {
        anyhow::bail!("tracer top draws on a terminal, and its input or output is not one");
    }
    target::check_privileges()?;
    let (outputs, _, _) = cfg.outputs.check(None, None)?;
    let listener = match &cfg.listen {
        Some(l) => {
            let token = l.token.as_deref().map(serve::read_token).transpose()?;
            Some((serve::bind(&l.addr, l.any)?, token, l.max_metric_sites))
        }
        None => None,
    };
    let tracefs = Tracefs::find_or_mount()?;
    let probes = Probes::load_and_attach(&tracefs, &load_options(cfg, empty))?;
    let page_size = target::page_size();
    let facts = TargetFacts {
        command: vec!["(every process on the machine)".into()],
        ..TargetFacts::default()
    };
    if !cfg.top {
        eprintln!("tracer: counting every process on the machine; Ctrl-C to stop");
    }
    let mut views = Views::start(cfg, facts.clone(), None, outputs.text, listener, page_size)?;
    let started = views.begin();
    let mut model = SystemModel::default();
    let mut tick = tokio::time::interval(READ_PERIOD);
    let deadline = cfg.duration.map(|d| tokio::time::Instant::now() + d);
    let ended = loop {
        tokio::select! {
            _ = tick.tick() => read_counts(&probes, &mut model),
            _ = super::wait::next_tick(views.interval.as_mut()) => {
                read_counts(&probes, &mut model);
                let summary = summary_of(&mut model, &facts, started.elapsed(), page_size, EndedBy::Running);
                views.refresh(summary, started.elapsed());
            }
            _ = super::wait::next_requests(views.refresh_requests.as_mut()) => {
                read_counts(&probes, &mut model);
                let summary = summary_of(&mut model, &facts, started.elapsed(), page_size, EndedBy::Running);
                views.publish(summary);
            }
            _ = sleep_until(deadline) => break EndedBy::Duration,
            key = next_key(views.top.as_mut()) => {
                if let Some(ui) = views.top.as_mut()
                    && ui.key(key) == KeyAction::Quit
                {
                    break EndedBy::Interrupted;
                }
            }
            arrived = signals.recv() => {
                if arrived.any() {
                    break EndedBy::Interrupted;
                }
            }
        }
    };
    drop(views.top.take());
    read_counts(&probes, &mut model);
    let summary = summary_of(&mut model, &facts, started.elapsed(), page_size, ended);
    drop(views.server.take());
    let failed = output::write_all(&summary, &outputs);
    super::finish::detach_in_background(probes);
    Ok(output::exit_status(0, failed))
}

fn load_options(cfg: &RunConfig, empty: bool) -> LoadOptions {
    LoadOptions {
        target_tgid: 0,
        ring_bytes: 4096,
        wakeup_bytes: 4096,
        kernel_stacks: false,
        kernel: true,
        max_stacks: 64,
        fault_stacks: false,
        sample_bytes: 0,
        kernel_probes: cfg.kernel_probes,
        hold_exec: false,
        hold_exit: false,
        target_tid: 0,
        follow: false,
        dwarf: false,
        allocator_probes: false,
        time_unwind: false,
        row_cache: false,
        system: Some(if empty {
            SystemProbes::Empty
        } else {
            SystemProbes::Count
        }),
    }
}

/// Reads every process's counts (summed over CPUs, from the slots and the hash map) into the
/// model; a process seen for the first time is named from /proc while it may still be there.
fn read_counts(probes: &Probes, model: &mut SystemModel) {
    let mut all: std::collections::HashMap<u32, ProcessCounts> = Default::default();
    if let Some(map) = probes.ebpf.map(SYSTEM_COUNTS_MAP) {
        match PerCpuHashMap::<_, u32, ProcessCounts>::try_from(map) {
            Ok(map) => {
                for (pid, per_cpu) in map.iter().flatten() {
                    let sum = all.entry(pid).or_default();
                    per_cpu.iter().for_each(|c| sum.add(c));
                }
            }
            Err(e) => log::warn!("reading {SYSTEM_COUNTS_MAP}: {e}"),
        }
    }
    if let Some(map) = probes.ebpf.map(SYSTEM_SLOTS_MAP) {
        match PerCpuArray::<_, CountsSlot>::try_from(map) {
            Ok(map) => {
                for per_cpu in map.iter().flatten() {
                    for slot in per_cpu.iter().filter(|s| s.tag != 0) {
                        all.entry((slot.tag - 1) as u32)
                            .or_default()
                            .add(&slot.counts);
                    }
                }
            }
            Err(e) => log::warn!("reading {SYSTEM_SLOTS_MAP}: {e}"),
        }
    }
    for (pid, counts) in all {
        model.counted(pid, counts, || identify(pid));
    }
}

/// A process's name and memory cgroup, read now.
fn identify(pid: u32) -> (String, String) {
    if pid == 0 {
        return ("(interrupts)".into(), String::new());
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end().to_string())
        .unwrap_or_default();
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|c| memory_cgroup(&c))
        .unwrap_or_default();
    (comm, cgroup)
}

/// The memory cgroup in a `/proc/PID/cgroup`: the v1 memory controller's line, else the
/// unified hierarchy's (`0::PATH`).
pub fn memory_cgroup(text: &str) -> Option<String> {
    let path_of = |line: &str| line.splitn(3, ':').nth(2).map(str::to_string);
    text.lines()
        .find(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|c| c == "memory"))
        })
        .and_then(path_of)
        .or_else(|| {
            text.lines()
                .find(|l| l.starts_with("0::"))
                .and_then(path_of)
        })
}

/// A summary of the machine as of now: an empty process summary carrying the rankings.
fn summary_of(
    model: &mut SystemModel,
    facts: &TargetFacts,
    elapsed: Duration,
    page_size: u64,
    ended: EndedBy,
) -> Summary {
    // Every process there is, for the largest: a quiet one counted nothing.
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
            model.known(pid, || identify(pid));
        }
    }
    model.read_resident(|pid| {
        let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
        statm.split_whitespace().nth(1)?.parse().ok()
    });
    let session = Session::new(&Start {
        page_size,
        ..Start::default()
    });
    let finish = Finish {
        target: TargetFacts {
            ended_by: ended.name().into(),
            ..facts.clone()
        },
        duration_ms: elapsed.as_secs_f64() * 1e3,
        mode: "system".into(),
        max_sites: system::TOP,
        ..Finish::default()
    };
    let mut summary = session.summarize(&finish);
    summary.system = Some(system::of(model, page_size));
    summary
}

#[cfg(test)]
mod tests {
    use super::memory_cgroup;

    #[test]
    fn the_memory_cgroup_of_either_hierarchy() {
        let v1 = "12:cpu,cpuacct:/\n4:memory:/system.slice/redis.service\n0::/user.slice\n";
        assert_eq!(
            memory_cgroup(v1).as_deref(),
            Some("/system.slice/redis.service")
        );
        assert_eq!(memory_cgroup("0::/app\n").as_deref(), Some("/app"));
        assert_eq!(memory_cgroup("garbage"), None);
    }
}
