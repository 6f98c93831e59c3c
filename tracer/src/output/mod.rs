//! Writing the reports a run or a replay asked for.
//!
//! Every destination is checked ([`Outputs::check`]) before the target is started or attached,
//! so a bad path fails in a second, not after an hour of tracing. At the end each report is
//! written on its own: one that fails (a full disk) is named, and the others are still written.

pub mod dest;

use std::{io, path::PathBuf};

use crate::report::{Format, Renderer, Summary, visible};
pub use dest::{Dest, DestDir, DestError, Sink, WriteError};

/// Which reports to write, and where, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// Print the terminal summary on stderr.
    pub text: bool,
    /// The other formats asked for, each with its path, in [`Format::ALL`]'s order.
    pub files: Vec<(Format, PathBuf)>,
}

impl Outputs {
    /// Where `format` goes, if it was asked for.
    pub fn path(&self, format: Format) -> Option<&PathBuf> {
        self.files
            .iter()
            .find(|(f, _)| *f == format)
            .map(|(_, p)| p)
    }
}

/// A checked destination: a file (or device, descriptor, stdout), or a directory of files.
#[derive(Debug, Clone)]
pub enum Target {
    File(Dest),
    Dir(DestDir),
}

impl Target {
    fn suffixed(&self, suffix: &str) -> Target {
        match self {
            Target::File(d) => Target::File(d.suffixed(suffix)),
            Target::Dir(d) => Target::Dir(d.suffixed(suffix)),
        }
    }

    /// The path as given.
    pub fn shown(&self) -> &std::path::Path {
        match self {
            Target::File(d) => d.shown(),
            Target::Dir(d) => &d.shown,
        }
    }

    fn is_stdout(&self) -> bool {
        matches!(self, Target::File(d) if d.is_stdout())
    }
}

/// The destinations of [`Outputs`], checked.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    pub text: bool,
    pub files: Vec<(Format, Target)>,
}

impl Checked {
    /// Where a snapshot taken now writes the same reports: see [`Dest::suffixed`].
    pub fn suffixed(&self, suffix: &str) -> Checked {
        Checked {
            text: self.text,
            files: self
                .files
                .iter()
                .map(|(f, t)| (*f, t.suffixed(suffix)))
                .collect(),
        }
    }

    /// Whether any report goes to a file, device or descriptor (not only the text summary).
    pub fn any_file(&self) -> bool {
        !self.files.is_empty()
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

/// Why the outputs asked for cannot all be written.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Option(#[from] OptionError),
    #[error("{} {} write to stdout; only one output can (give the others a file)", .0.join(" and "), if .0.len() == 2 { "both" } else { "all" })]
    Stdout(Vec<String>),
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
    ) -> Result<(Checked, Option<Dest>, Option<Dest>), CheckError> {
        let file = |option: &'static str, path: &PathBuf, binary: bool| {
            dest::check_file(path, binary).map_err(|problem| OptionError { option, problem })
        };
        let mut files = Vec::new();
        for (format, path) in &self.files {
            let spec = format.spec();
            let option = spec.option.unwrap_or("text");
            let target = match spec.renderer {
                Renderer::Stream(_) => Target::File(file(option, path, spec.binary)?),
                Renderer::Files(_) => Target::Dir(
                    dest::check_dir(path).map_err(|problem| OptionError { option, problem })?,
                ),
            };
            files.push((*format, target));
        }
        let record = record.map(|p| file("record", p, true)).transpose()?;
        let jsonl = jsonl.map(|p| file("jsonl", p, false)).transpose()?;
        let on_stdout: Vec<String> = files
            .iter()
            .filter(|(_, t)| t.is_stdout())
            .map(|(f, _)| f.spec().option.unwrap_or("text"))
            .chain(
                [("record", &record), ("jsonl", &jsonl)]
                    .into_iter()
                    .filter(|(_, d)| d.as_ref().is_some_and(Dest::is_stdout))
                    .map(|(name, _)| name),
            )
            .map(|option| format!("--{option}"))
            .collect();
        if on_stdout.len() > 1 {
            return Err(CheckError::Stdout(on_stdout));
        }
        Ok((
            Checked {
                text: self.text,
                files,
            },
            record,
            jsonl,
        ))
    }
}

/// Writes every report; each failure is printed and counted, and the rest are still written.
/// Returns how many failed.
pub fn write_all(summary: &Summary, outputs: &Checked) -> usize {
    let failed = write_all_quietly(summary, outputs);
    for e in &failed {
        eprintln!("tracer: error: {}", visible(e));
    }
    failed.len()
}

/// As [`write_all`], returning the failures instead of printing them.
pub fn write_all_quietly(summary: &Summary, outputs: &Checked) -> Vec<String> {
    let mut failed = Vec::new();
    if outputs.text
        && let Renderer::Stream(render) = Format::Text.spec().renderer
        && let Err(e) = render(summary, &mut io::stderr().lock())
    {
        failed.push(format!("writing the summary to stderr: {e}"));
    }
    for (format, target) in &outputs.files {
        if let Err(e) = write(summary, format.spec().renderer, target) {
            failed.push(with_causes(&e));
        }
    }
    failed
}

/// An error and its causes, `a: b: c`, each said once (a message that already ends with its
/// cause's is not repeated).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.ends_with(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = c.source();
    }
    text
}

/// One report, rendered straight into its destination.
fn write(summary: &Summary, renderer: Renderer, target: &Target) -> Result<(), WriteError> {
    match (renderer, target) {
        (Renderer::Stream(render), Target::File(d)) => {
            dest::write_to(d, |out| Ok(render(summary, out)?))
        }
        (Renderer::Files(render), Target::Dir(dir)) => {
            let files = render(summary).map_err(|e| WriteError::Write {
                path: dir.shown.clone(),
                source: e.into(),
            })?;
            for (name, bytes) in files {
                dest::write_to(&dir.file(&name)?, |out| Ok(out.write_all(&bytes)?))?;
            }
            Ok(())
        }
        _ => unreachable!("a destination is checked for its format's renderer"),
    }
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
