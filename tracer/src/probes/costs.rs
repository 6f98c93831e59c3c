//! `--costs`: the kernel's own measure of each probe program's run time (bpf_stats), enabled
//! for as long as tracer holds the descriptor `BPF_ENABLE_STATS` gives.

use std::os::fd::OwnedFd;

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
/// first.
pub fn probe_costs(ebpf: &Ebpf) -> Vec<ProbeCost> {
    let mut costs: Vec<ProbeCost> = ebpf
        .programs()
        .filter_map(|(name, program)| {
            let info = program.info().ok()?;
            (info.run_count() > 0).then(|| ProbeCost {
                program: name.to_string(),
                runs: info.run_count(),
                ns: info.run_time().as_nanos() as u64,
            })
        })
        .collect();
    costs.sort_by(|a, b| b.ns.cmp(&a.ns).then_with(|| a.program.cmp(&b.program)));
    costs
}
