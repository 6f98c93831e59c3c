//! `--costs`: what tracing cost the traced program and the machine, as measured while it ran:
//! each probe program's run time (the kernel's bpf_stats), the stack walks' time per frame,
//! and tracer's own CPU time.

use serde::Serialize;
use tracer_common::counter;

use crate::events::ProbeCost;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Costs {
    /// Every probe program that ran, costliest first.
    pub probes: Vec<ProbeLine>,
    /// All of them together.
    pub probes_ms: f64,
    /// The stack walks with the unwind tables, when there were any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unwinder: Option<Unwinder>,
    /// tracer's own CPU time, user and system, from its start to the end of tracing.
    pub tracer_cpu_ms: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProbeLine {
    pub program: String,
    pub runs: u64,
    pub ns_per_run: f64,
    pub total_ms: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Unwinder {
    pub walks: u64,
    /// Frames found, beyond the one each walk starts at.
    pub frames: u64,
    /// Time in the walks, storing each stack included.
    pub ms: f64,
    pub ns_per_frame: f64,
    pub ns_per_walk: f64,
    /// Frames whose unwind row came from the per-CPU cache (the rest were searched for).
    pub row_cache_hits: f64,
}

/// The costs a run measured: the kernel-side counters (see `tracer_common::counter`), each
/// probe program's cost and tracer's CPU time; `None` without `--costs` (no CPU time).
pub fn of(
    counters: &[u64],
    probe_costs: &[ProbeCost],
    tracer_cpu_ms: Option<f64>,
) -> Option<Costs> {
    let cpu = tracer_cpu_ms?;
    let probes: Vec<ProbeLine> = probe_costs
        .iter()
        .map(|p| ProbeLine {
            program: p.program.clone(),
            runs: p.runs,
            ns_per_run: p.ns as f64 / p.runs.max(1) as f64,
            total_ms: p.ns as f64 / 1e6,
        })
        .collect();
    let k = |c: u32| counters.get(c as usize).copied().unwrap_or(0);
    let (walks, frames, ns) = (
        k(counter::UNWIND_WALKS),
        k(counter::UNWIND_FRAMES),
        k(counter::UNWIND_NS),
    );
    let (lookups, misses) = (
        k(counter::UNWIND_ROW_LOOKUPS),
        k(counter::UNWIND_ROW_MISSES),
    );
    let hits = lookups.saturating_sub(misses);
    Some(Costs {
        probes_ms: probes.iter().map(|p| p.total_ms).sum(),
        probes,
        unwinder: (walks > 0).then(|| Unwinder {
            walks,
            frames,
            ms: ns as f64 / 1e6,
            ns_per_frame: ns as f64 / frames.max(1) as f64,
            ns_per_walk: ns as f64 / walks as f64,
            row_cache_hits: hits as f64 / lookups.max(1) as f64,
        }),
        tracer_cpu_ms: cpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(cpu: Option<f64>) -> Option<Costs> {
        let mut counters = vec![0; counter::COUNT as usize];
        counters[counter::UNWIND_WALKS as usize] = 10;
        counters[counter::UNWIND_FRAMES as usize] = 200;
        counters[counter::UNWIND_NS as usize] = 8_000;
        counters[counter::UNWIND_ROW_LOOKUPS as usize] = 200;
        counters[counter::UNWIND_ROW_MISSES as usize] = 50;
        of(
            &counters,
            &[
                ProbeCost {
                    program: "alloc_session".into(),
                    runs: 4,
                    ns: 3_000_000,
                },
                ProbeCost {
                    program: "free_entry".into(),
                    runs: 2,
                    ns: 1_000_000,
                },
            ],
            cpu,
        )
    }

    #[test]
    fn costs_per_run_and_per_frame() {
        let c = measured(Some(12.5)).unwrap();
        assert_eq!(c.probes_ms, 4.0);
        assert_eq!(c.probes[0].ns_per_run, 750_000.0);
        assert_eq!(c.probes[1].total_ms, 1.0);
        let u = c.unwinder.unwrap();
        assert_eq!((u.walks, u.frames), (10, 200));
        assert_eq!((u.ns_per_frame, u.ns_per_walk), (40.0, 800.0));
        assert_eq!(u.row_cache_hits, 0.75);
        assert_eq!(c.tracer_cpu_ms, 12.5);
    }

    #[test]
    fn no_costs_unless_measured() {
        assert!(measured(None).is_none());
    }
}
