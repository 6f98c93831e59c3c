//! The memory syscalls and page faults by the user stack that made them: the call sites of
//! `--mode kernel`, and the direct callers of `mmap` and friends in any mode.

use serde::Serialize;

use crate::{
    aggregate::callers::{CallerStats, Callers},
    summary::user::Stacks,
    symbolize::{Frame, Symbolizer, symbolize_stacks},
};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallerReport {
    /// Innermost first: `stack[0]` is where the syscall or the faulting access happened.
    pub stack: Vec<Frame>,
    #[serde(flatten)]
    pub stats: CallerStats,
}

/// The callers with the most address space requested (then the most faults), at most
/// `max_sites`, with their stacks symbolized.
pub fn build(
    callers: &Callers,
    stacks: &dyn Stacks,
    symbolizer: &mut dyn Symbolizer,
    max_sites: usize,
) -> Vec<CallerReport> {
    let mut list: Vec<(i32, &CallerStats)> = callers.iter().collect();
    list.sort_by(|a, b| {
        (b.1.requested_bytes(), b.1.page_faults, a.0).cmp(&(
            a.1.requested_bytes(),
            a.1.page_faults,
            b.0,
        ))
    });
    list.truncate(max_sites);
    let addresses: Vec<&[u64]> = list
        .iter()
        .map(|(id, _)| stacks.stack(*id).unwrap_or(&[]))
        .collect();
    let frames = symbolize_stacks(symbolizer, &addresses);
    list.into_iter()
        .zip(frames)
        .map(|((_, stats), stack)| CallerReport {
            stack,
            stats: stats.clone(),
        })
        .collect()
}
