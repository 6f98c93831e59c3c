//! Writing the reports a run or a replay asked for.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use crate::report::{
    self, Summary, charts, flame,
    folded::{self, Weight},
    html, pprof,
};

/// Which reports to write, and where.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// Print the terminal summary on stderr.
    pub text: bool,
    pub json: Option<PathBuf>,
    /// A directory for the SVG charts and flamegraphs.
    pub svg: Option<PathBuf>,
    pub html: Option<PathBuf>,
    pub folded: Option<PathBuf>,
    pub pprof: Option<PathBuf>,
}

pub fn write_all(summary: &Summary, outputs: &Outputs) -> Result<()> {
    if outputs.text {
        report::text::render(summary, io::stderr().lock())?;
    }
    if let Some(path) = &outputs.json {
        write_file(path, |out| Ok(report::json::render(summary, out)?))?;
    }
    if let Some(dir) = &outputs.svg {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (stem, _, svg) in charts::all(summary)? {
            write_file(&dir.join(format!("{stem}.svg")), |out| {
                Ok(out.write_all(svg.as_bytes())?)
            })?;
        }
        for (stem, weight) in FLAMEGRAPHS {
            let mut svg = Vec::new();
            if flame::render(summary, weight, &mut svg)? {
                write_file(&dir.join(format!("{stem}.svg")), |out| {
                    Ok(out.write_all(&svg)?)
                })?;
            }
        }
    }
    if let Some(path) = &outputs.folded {
        write_file(path, |out| {
            Ok(folded::render(summary, Weight::Allocated, out)?)
        })?;
    }
    if let Some(path) = &outputs.pprof {
        write_file(path, |out| Ok(pprof::render(summary, out)?))?;
    }
    if let Some(path) = &outputs.html {
        write_file(path, |out| html::render(summary, out))?;
    }
    Ok(())
}

/// The flamegraphs written with the charts: (file stem, weight).
pub const FLAMEGRAPHS: [(&str, Weight); 3] = [
    ("flame-allocated", Weight::Allocated),
    ("flame-live", Weight::Live),
    ("flame-resident", Weight::Resident),
];

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
