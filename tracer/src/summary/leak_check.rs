//! What the last leak check of a process found, summed: memcheck's categories in bytes and
//! blocks, how long the process was stopped and how much memory was read.

use serde::{Deserialize, Serialize};

pub use crate::events::{CheckMoment, CheckOutcome, LeakKind};
use crate::{aggregate::heap::HeapStats, summary::merge::MergedLeak};

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LeakCheckSummary {
    /// `done`, `gave_up` (`--leak-check-max-pause`) or `failed` (the process could not be
    /// stopped or read); only a check that is done classifies blocks.
    pub outcome: Option<CheckOutcome>,
    /// `at_exit`, `at_end` (`--leak-check`) or `on_request` (SIGUSR2).
    pub at: Option<CheckMoment>,
    /// No pointer reaches them: definitely lost.
    pub lost_bytes: u64,
    pub lost_blocks: u64,
    /// Reached only from lost blocks.
    pub indirect_bytes: u64,
    pub indirect_blocks: u64,
    /// Reached only through pointers into their middle.
    pub possible_bytes: u64,
    pub possible_blocks: u64,
    /// Still pointed to: the program could free them.
    pub reachable_bytes: u64,
    pub reachable_blocks: u64,
    /// Lost in any way but matched by a `--suppress` rule.
    pub suppressed_bytes: u64,
    pub suppressed_blocks: u64,
    /// Live at the end but allocated after the check, which did not see them.
    pub unchecked_bytes: u64,
    pub unchecked_blocks: u64,
    /// How long the process was stopped for the check.
    pub pause_ms: f64,
    /// Memory read: the roots and the blocks reached.
    pub scanned_bytes: u64,
    /// Checks of this process during the run.
    pub checks: u32,
}

impl LeakCheckSummary {
    /// Bytes and blocks of `kind`.
    pub fn of(&self, kind: LeakKind) -> (u64, u64) {
        match kind {
            LeakKind::Lost => (self.lost_bytes, self.lost_blocks),
            LeakKind::Indirect => (self.indirect_bytes, self.indirect_blocks),
            LeakKind::Possible => (self.possible_bytes, self.possible_blocks),
            LeakKind::Reachable => (self.reachable_bytes, self.reachable_blocks),
        }
    }

    /// The bytes and blocks counted for `kind` (None: unchecked), to change.
    fn counts_mut(&mut self, kind: Option<LeakKind>) -> (&mut u64, &mut u64) {
        match kind {
            Some(LeakKind::Lost) => (&mut self.lost_bytes, &mut self.lost_blocks),
            Some(LeakKind::Indirect) => (&mut self.indirect_bytes, &mut self.indirect_blocks),
            Some(LeakKind::Possible) => (&mut self.possible_bytes, &mut self.possible_blocks),
            Some(LeakKind::Reachable) => (&mut self.reachable_bytes, &mut self.reachable_blocks),
            None => (&mut self.unchecked_bytes, &mut self.unchecked_blocks),
        }
    }

    pub fn add(&mut self, kind: Option<LeakKind>, bytes: u64, blocks: u64) {
        let (b, n) = self.counts_mut(kind);
        *b = b.saturating_add(bytes);
        *n = n.saturating_add(blocks);
    }

    /// `bytes` in `blocks` of `kind` that a rule suppressed: counted as suppressed instead
    /// (reachable blocks are never suppressed).
    pub fn suppress(&mut self, kind: LeakKind, bytes: u64, blocks: u64) {
        if kind == LeakKind::Reachable {
            return;
        }
        let (b, n) = self.counts_mut(Some(kind));
        *b = b.saturating_sub(bytes);
        *n = n.saturating_sub(blocks);
        self.suppressed_bytes = self.suppressed_bytes.saturating_add(bytes);
        self.suppressed_blocks = self.suppressed_blocks.saturating_add(blocks);
    }

    /// Totals of two processes' checks, for a run's totals.
    pub fn merge(&mut self, o: &LeakCheckSummary) {
        self.outcome = self.outcome.or(o.outcome);
        self.at = self.at.or(o.at);
        self.lost_bytes = self.lost_bytes.saturating_add(o.lost_bytes);
        self.lost_blocks = self.lost_blocks.saturating_add(o.lost_blocks);
        self.indirect_bytes = self.indirect_bytes.saturating_add(o.indirect_bytes);
        self.indirect_blocks = self.indirect_blocks.saturating_add(o.indirect_blocks);
        self.possible_bytes = self.possible_bytes.saturating_add(o.possible_bytes);
        self.possible_blocks = self.possible_blocks.saturating_add(o.possible_blocks);
        self.reachable_bytes = self.reachable_bytes.saturating_add(o.reachable_bytes);
        self.reachable_blocks = self.reachable_blocks.saturating_add(o.reachable_blocks);
        self.suppressed_bytes = self.suppressed_bytes.saturating_add(o.suppressed_bytes);
        self.suppressed_blocks = self.suppressed_blocks.saturating_add(o.suppressed_blocks);
        self.unchecked_bytes = self.unchecked_bytes.saturating_add(o.unchecked_bytes);
        self.unchecked_blocks = self.unchecked_blocks.saturating_add(o.unchecked_blocks);
        self.pause_ms = self.pause_ms.max(o.pause_ms);
        self.scanned_bytes = self.scanned_bytes.saturating_add(o.scanned_bytes);
        self.checks = self.checks.saturating_add(o.checks);
    }
}

/// The last check of `heap`, with the kinds of `leaks` (every live block, by site and kind)
/// summed; None when no check ran.
pub fn summarize(heap: &HeapStats, leaks: &[MergedLeak]) -> Option<LeakCheckSummary> {
    let check = heap.check?;
    let mut s = LeakCheckSummary {
        outcome: Some(check.outcome),
        at: Some(check.moment),
        pause_ms: check.raw.pause_us as f64 / 1e3,
        scanned_bytes: check.raw.scanned_bytes,
        checks: heap.checks,
        ..Default::default()
    };
    for l in leaks {
        s.add(l.leak.kind, l.leak.bytes, l.leak.count);
    }
    Some(s)
}
