//! What a run writes while it goes on: `--interval` summaries on stderr and in `--jsonl`, and
//! snapshots of every report on SIGUSR1.

pub mod interval;

use std::{
    io::{self, IsTerminal, Write},
    time::{Duration, SystemTime},
};

use crate::{
    output::{self, Checked, Sink, Target},
    report::{self, Format, Summary},
};
use interval::{IntervalView, render_text};

/// The live outputs of one run.
pub struct Intervals {
    view: IntervalView,
    jsonl: Option<Sink>,
    /// Whether to print interval blocks on stderr (not with `--quiet`).
    text: bool,
    /// stderr is a terminal: redraw the block in place.
    tty: bool,
    /// Lines of the block drawn last, to redraw over.
    drawn: usize,
    max_sites: usize,
    header: String,
    /// `--jsonl-max`: the newest lines kept within about this many bytes.
    jsonl_max: Option<u64>,
}

impl Intervals {
    /// `jsonl` is published at once, so it can be followed (`tail -f`) from the first line.
    pub fn new(
        jsonl: Option<Sink>,
        jsonl_max: Option<u64>,
        text: bool,
        max_sites: usize,
        header: String,
    ) -> io::Result<Self> {
        let jsonl = match jsonl {
            Some(mut sink) => {
                sink.publish()?;
                Some(sink)
            }
            None => None,
        };
        Ok(Intervals {
            view: IntervalView::default(),
            jsonl,
            text,
            tty: io::stderr().is_terminal(),
            drawn: 0,
            max_sites,
            header,
            jsonl_max,
        })
    }

    /// One interval, from a summary that lists every site. Writing `--jsonl` failing stops
    /// it with a warning; tracing goes on.
    pub fn interval(&mut self, summary: &Summary, elapsed: Duration, is_final: bool) {
        let record = self.view.next(
            summary,
            elapsed.as_secs_f64() * 1e3,
            self.max_sites,
            is_final,
        );
        if let Some(sink) = self.jsonl.as_mut() {
            let written = serde_json::to_writer(&mut *sink, &record)
                .map_err(io::Error::from)
                .and_then(|()| sink.write_all(b"\n"))
                .and_then(|()| sink.flush())
                .and_then(|()| {
                    self.jsonl_max
                        .map_or(Ok(()), |max| sink.keep_newest_lines(max))
                });
            if let Err(e) = written {
                eprintln!(
                    "tracer: warning: --jsonl {}: {e}; no more interval lines are written",
                    sink.shown().display()
                );
                self.jsonl = None;
            }
        }
        if self.text && !is_final {
            let mut block = Vec::new();
            let header = if self.tty {
                self.header.clone()
            } else {
                format!(
                    "--- {} {}",
                    output::utc_stamp(since_epoch()),
                    report::visible(&self.header)
                )
            };
            let Ok(lines) = render_text(&record, &header, &mut block) else {
                return;
            };
            let mut err = io::stderr().lock();
            if self.tty && self.drawn > 0 {
                // Up to the first line of the last block, and clear from there down.
                let _ = write!(err, "\x1b[{}F\x1b[J", self.drawn);
            }
            let _ = err.write_all(&block);
            self.drawn = lines;
        }
    }

    /// Ends the run's live output: the final interval line, and the `--jsonl` file closed.
    pub fn finish(&mut self, summary: &Summary, elapsed: Duration) -> usize {
        if self.jsonl.is_none() {
            return 0;
        }
        self.interval(summary, elapsed, true);
        match self.jsonl.take().map(Sink::commit) {
            Some(Err(e)) => {
                eprintln!("tracer: error: --jsonl: {e}");
                1
            }
            None => 1,
            Some(Ok(())) => 0,
        }
    }
}

pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Writes every requested report as of now, each named with a timestamp (see
/// [`Checked::suffixed`]); with no report file requested, the text summary goes to stderr, or
/// when `quiet_text` (a full-screen view owns the terminal) a JSON summary to the working
/// directory. Returns how many could not be written, and the line that says where they went.
pub fn write_snapshot(summary: &Summary, outputs: &Checked, quiet_text: bool) -> (usize, String) {
    let stamp = output::utc_stamp(since_epoch());
    let mut snap = Checked {
        text: !outputs.any_file() && !quiet_text,
        ..outputs.suffixed(&stamp)
    };
    if !outputs.any_file() && quiet_text {
        let name = format!("tracer-{}.{stamp}.json", summary.target.pid);
        match output::dest::check_file(std::path::Path::new(&name), false) {
            Ok(d) => snap.files.push((Format::Json, Target::File(d))),
            Err(e) => return (1, format!("tracer: snapshot {stamp}: {e}")),
        }
    }
    let failed = output::write_all_quietly(summary, &snap);
    let names: Vec<String> = snap
        .files
        .iter()
        .map(|(_, t)| t.shown().display().to_string())
        .collect();
    let mut line = format!(
        "tracer: snapshot {stamp}: {}",
        report::visible(&names.join(", "))
    );
    if !failed.is_empty() {
        line.push_str(&format!(
            "; failed: {}",
            report::visible(&failed.join("; "))
        ));
    }
    (failed.len(), line)
}
