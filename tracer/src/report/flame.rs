//! Flamegraphs of allocation stacks, drawn by inferno.

use std::io::Write;

use inferno::flamegraph::{self, Options};

use super::{
    Summary,
    folded::{self, Weight},
};

/// An SVG flamegraph of `weight` by allocation stack, or `None` when nothing weighs anything.
pub fn render(summary: &Summary, weight: Weight, out: impl Write) -> anyhow::Result<bool> {
    let lines = folded::lines(summary, weight);
    if lines.is_empty() {
        return Ok(false);
    }
    let mut opts = Options::default();
    opts.title = match weight {
        Weight::Allocated => "Allocated bytes by call stack",
        Weight::Live => "Bytes still allocated at the end (leaks) by call stack",
        Weight::Resident => "Resident bytes by call stack",
    }
    .to_string();
    opts.count_name = "bytes".into();
    opts.name_type = "Function:".into();
    flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out)?;
    Ok(true)
}
