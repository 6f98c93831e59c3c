//! `--costs`: the kernel's own measure of each probe program's run time (bpf_stats), enabled
//! for as long as tracer holds the descriptor `BPF_ENABLE_STATS` gives.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use aya::Ebpf;

use super::ProbeError;
use crate::events::ProbeCost;

/// bpf_stats on, until dropped.
pub struct RunStats(
    #[expect(dead_code, reason = "held, never read: its drop ends bpf_stats")] OwnedFd,
);

impl RunStats {
    pub fn enable() -> Result<Self, ProbeError> {
        aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .map(RunStats)
            .map_err(|e| ProbeError::Stats(e.to_string()))
    }
}

/// Each loaded program's runs and run time so far (those never run left out), costliest
/// first: aya's, and `own`, the programs tracer loaded itself (the allocator probes' links),
/// by name and descriptor.
pub fn probe_costs<'a>(
    ebpf: &Ebpf,
    own: impl IntoIterator<Item = (&'static str, BorrowedFd<'a>)>,
) -> Vec<ProbeCost> {
    let mut costs: Vec<ProbeCost> = ebpf
        .programs()
        .filter_map(|(name, program)| {
            let info = program.info().ok()?;
            Some(ProbeCost {
                program: name.to_string(),
                runs: info.run_count(),
                ns: info.run_time().as_nanos() as u64,
            })
        })
        .chain(own.into_iter().filter_map(|(name, fd)| fd_cost(name, fd)))
        .filter(|c| c.runs > 0)
        .collect();
    costs.sort_by(|a, b| b.ns.cmp(&a.ns).then_with(|| a.program.cmp(&b.program)));
    costs
}

/// A program's runs and run time, from what the kernel says of its descriptor in
/// `/proc/self/fdinfo` (`run_time_ns`, `run_cnt`).
fn fd_cost(name: &str, fd: BorrowedFd<'_>) -> Option<ProbeCost> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    let field = |key: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
    };
    Some(ProbeCost {
        program: name.to_string(),
        runs: field("run_cnt:")?,
        ns: field("run_time_ns:")?,
    })
}
