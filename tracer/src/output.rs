//! Writing the reports a run or a replay asked for.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use crate::report::{self, Summary};

/// Which reports to write, and where.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// Print the terminal summary on stderr.
    pub text: bool,
    pub json: Option<PathBuf>,
}

pub fn write_all(summary: &Summary, outputs: &Outputs) -> Result<()> {
    if outputs.text {
        report::text::render(summary, io::stderr().lock())?;
    }
    if let Some(path) = &outputs.json {
        write_file(path, |out| Ok(report::json::render(summary, out)?))?;
    }
    Ok(())
}

/// Writes a report to `path` (`-` is stdout) through a temporary file, so a failed render
/// leaves no half-written file behind.
pub fn write_file(path: &Path, render: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    if path.as_os_str() == "-" {
        return render(&mut io::stdout().lock());
    }
    let mut buf = Vec::new();
    render(&mut buf)?;
    let tmp = path.with_extension("tmp~");
    fs::write(&tmp, &buf)
        .and_then(|()| fs::rename(&tmp, path))
        .with_context(|| format!("writing {}", path.display()))
}
