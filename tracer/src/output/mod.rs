//! Writing the reports a run or a replay asked for.
//!
//! Every destination is checked ([`Outputs::check`]) before the target is started or attached,
//! so a bad path fails in a second, not after an hour of tracing. At the end each report is
//! written on its own: one that fails (a full disk) is named, and the others are still written.

pub mod dest;

use std::{io, path::PathBuf};

use anyhow::Result;

use crate::report::{
    self, Summary, charts, flame,
    folded::{self, Weight},
    html, pprof,
};
pub use dest::{Dest, DestDir, DestError, Sink};

/// Which reports to write, and where, as given on the command line.
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

/// The destinations of [`Outputs`], checked.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    pub text: bool,
    pub json: Option<Dest>,
    pub svg: Option<DestDir>,
    pub html: Option<Dest>,
    pub folded: Option<Dest>,
    pub pprof: Option<Dest>,
}

impl Checked {
    /// Where a snapshot taken now writes the same reports: see [`Dest::suffixed`].
    pub fn suffixed(&self, suffix: &str) -> Checked {
        let file = |d: &Option<Dest>| d.as_ref().map(|d| d.suffixed(suffix));
        Checked {
            text: self.text,
            json: file(&self.json),
            svg: self.svg.as_ref().map(|d| d.suffixed(suffix)),
            html: file(&self.html),
            folded: file(&self.folded),
            pprof: file(&self.pprof),
        }
    }

    /// Whether any report goes to a file, device or descriptor (not only the text summary).
    pub fn any_file(&self) -> bool {
        self.json.is_some()
            || self.svg.is_some()
            || self.html.is_some()
            || self.folded.is_some()
            || self.pprof.is_some()
    }
}

/// `YYYYMMDDTHHMMSS.mmmZ` for a time since the epoch: a snapshot's suffix, sorting by time.
pub fn utc_stamp(since_epoch: std::time::Duration) -> String {
    let secs = since_epoch.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since_epoch.subsec_millis()
    )
}

/// A destination that could not be used, named by its option.
#[derive(Debug, thiserror::Error)]
#[error("--{option} {problem}")]
pub struct OptionError {
    pub option: &'static str,
    pub problem: DestError,
}

impl Outputs {
    /// Checks every destination, with `record` and `jsonl` (the `--record` and `--jsonl` paths,
    /// streamed) among them: each must be writable, and at most one may be stdout.
    pub fn check(
        &self,
        record: Option<&PathBuf>,
        jsonl: Option<&PathBuf>,
    ) -> Result<(Checked, Option<Dest>, Option<Dest>)> {
        let file = |option: &'static str, path: &Option<PathBuf>, binary: bool| {
            path.as_ref()
                .map(|p| dest::check_file(p, binary))
                .transpose()
                .map_err(|problem| OptionError { option, problem })
        };
        let checked = Checked {
            text: self.text,
            json: file("json", &self.json, false)?,
            html: file("html", &self.html, false)?,
            folded: file("folded", &self.folded, false)?,
            pprof: file("pprof", &self.pprof, true)?,
            svg: self
                .svg
                .as_ref()
                .map(|p| dest::check_dir(p))
                .transpose()
                .map_err(|problem| OptionError {
                    option: "svg",
                    problem,
                })?,
        };
        let record = file("record", &record.cloned(), true)?;
        let jsonl = file("jsonl", &jsonl.cloned(), false)?;
        let on_stdout: Vec<&str> = [
            ("--json", &checked.json),
            ("--html", &checked.html),
            ("--folded", &checked.folded),
            ("--pprof", &checked.pprof),
            ("--record", &record),
            ("--jsonl", &jsonl),
        ]
        .into_iter()
        .filter(|(_, d)| d.as_ref().is_some_and(Dest::is_stdout))
        .map(|(name, _)| name)
        .collect();
        if on_stdout.len() > 1 {
            let all = if on_stdout.len() == 2 { "both" } else { "all" };
            anyhow::bail!(
                "{} {all} write to stdout; only one output can (give the others a file)",
                on_stdout.join(" and ")
            );
        }
        Ok((checked, record, jsonl))
    }
}

/// The flamegraphs written with the charts: (file stem, weight).
pub const FLAMEGRAPHS: [(&str, Weight); 3] = [
    ("flame-allocated", Weight::Allocated),
    ("flame-live", Weight::Live),
    ("flame-resident", Weight::Resident),
];

/// Writes every report; each failure is printed and counted, and the rest are still written.
/// Returns how many failed.
pub fn write_all(summary: &Summary, outputs: &Checked) -> usize {
    let failed = write_all_quietly(summary, outputs);
    for e in &failed {
        eprintln!("tracer: error: {}", report::visible(e));
    }
    failed.len()
}

/// As [`write_all`], returning the failures instead of printing them.
pub fn write_all_quietly(summary: &Summary, outputs: &Checked) -> Vec<String> {
    let mut failed = Vec::new();
    let mut run = |result: Result<()>| {
        if let Err(e) = result {
            failed.push(format!("{e:#}"));
        }
    };
    if outputs.text {
        run(report::text::render(summary, io::stderr().lock()).map_err(Into::into));
    }
    if let Some(d) = &outputs.json {
        run(dest::write_to(d, |out| {
            Ok(report::json::render(summary, out)?)
        }));
    }
    if let Some(dir) = &outputs.svg {
        run(write_svg(summary, dir));
    }
    if let Some(d) = &outputs.folded {
        run(dest::write_to(d, |out| {
            Ok(folded::render(summary, Weight::Allocated, out)?)
        }));
    }
    if let Some(d) = &outputs.pprof {
        run(dest::write_to(d, |out| Ok(pprof::render(summary, out)?)));
    }
    if let Some(d) = &outputs.html {
        run(dest::write_to(d, |out| html::render(summary, out)));
    }
    failed
}

fn write_svg(summary: &Summary, dir: &DestDir) -> Result<()> {
    for (stem, _, svg) in charts::all(summary)? {
        dest::write_to(&dir.file(&format!("{stem}.svg"))?, |out| {
            Ok(out.write_all(svg.as_bytes())?)
        })?;
    }
    for (stem, weight) in FLAMEGRAPHS {
        let mut svg = Vec::new();
        if flame::render(summary, weight, &mut svg)? {
            dest::write_to(&dir.file(&format!("{stem}.svg"))?, |out| {
                Ok(out.write_all(&svg)?)
            })?;
        }
    }
    Ok(())
}

/// The exit status when `failed` reports could not be written: the command's own status
/// when it failed, otherwise 74 (EX_IOERR), so neither hides the other.
pub fn exit_status(command_status: i32, failed: usize) -> i32 {
    if failed > 0 && command_status == 0 {
        OUTPUT_FAILED
    } else {
        command_status
    }
}

/// Exit status of a run whose command succeeded but one of whose reports was not written.
pub const OUTPUT_FAILED: i32 = 74;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_calendar_times() {
        use std::time::Duration;
        assert_eq!(utc_stamp(Duration::ZERO), "19700101T000000.000Z");
        // 2026-12-01 21:04:49.250 UTC.
        assert_eq!(
            utc_stamp(Duration::from_millis(1_796_159_089_250)),
            "20261201T210449.250Z"
        );
        // A leap day.
        assert_eq!(
            utc_stamp(Duration::from_secs(951_782_400)),
            "20000229T000000.000Z"
        );
    }
}
