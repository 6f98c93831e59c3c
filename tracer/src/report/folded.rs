//! Folded stacks (`outer;...;inner value` per line), for flamegraph.pl, inferno and speedscope.

use std::io::{self, Write};

use crate::summary::{
    Summary,
    label::{self, Frame, Style},
};

/// What a folded line counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    /// Bytes allocated per site.
    Allocated,
    /// Bytes still live at the end (leaks) per site.
    Live,
    /// Bytes resident now per site.
    Resident,
}

/// The folded lines of a summary: one per site (or leak) with a non-zero weight, root first.
pub fn lines(summary: &Summary, weight: Weight) -> Vec<String> {
    let stacks: Vec<(&[Frame], u64)> = match weight {
        Weight::Allocated => summary
            .user
            .sites
            .iter()
            .map(|s| (&s.stack[..], s.stats.bytes))
            .collect(),
        Weight::Resident => summary
            .user
            .sites
            .iter()
            .map(|s| (&s.stack[..], s.paths.resident_bytes))
            .collect(),
        Weight::Live => summary
            .user
            .leaks
            .iter()
            .map(|l| (&l.stack[..], l.bytes))
            .collect(),
    };
    // Flamegraph tools add the lines up: no line may weigh more than its share of 2^64 (never
    // reached by a real run; a crafted recording can claim anything).
    let cap = u64::MAX / (stacks.len() as u64).max(1);
    stacks
        .into_iter()
        .filter(|(_, w)| *w > 0)
        .map(|(stack, w)| (stack, w.min(cap)))
        .map(|(stack, w)| {
            let names: Vec<String> = if stack.is_empty() {
                vec!["[unknown]".into()]
            } else {
                stack
                    .iter()
                    .rev()
                    .map(|f| label::frame(f, Style::Folded))
                    .collect()
            };
            format!("{} {w}", names.join(";"))
        })
        .collect()
}

/// The folded stacks of allocated bytes: the `--folded` report.
pub fn render_allocated(summary: &Summary, out: &mut dyn Write) -> super::Result<()> {
    Ok(render(summary, Weight::Allocated, out)?)
}

pub fn render(summary: &Summary, weight: Weight, mut out: impl Write) -> io::Result<()> {
    for line in lines(summary, weight) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}
