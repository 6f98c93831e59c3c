//! `--svg DIR`: every chart and flamegraph, a file each.

use super::{NamedFiles, Result, Summary, charts, flame};

/// The files of the directory, by name.
pub fn render(summary: &Summary) -> Result<NamedFiles> {
    let mut files: NamedFiles = charts::all(summary)?
        .into_iter()
        .map(|(stem, _, svg)| (format!("{stem}.svg"), svg.into_bytes()))
        .collect();
    for f in flame::FLAMEGRAPHS {
        let mut svg = Vec::new();
        if flame::render(summary, f.weight, &mut svg)? {
            files.push((format!("flame-{}.svg", f.stem), svg));
        }
    }
    Ok(files)
}
