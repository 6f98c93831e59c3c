//! The kernel's OOM killer chose a traced process: its report written at once, into
//! `--on-oom`'s directory, while tracing goes on.

use crate::{
    output::{self, Checked, Target},
    periodic::since_epoch,
    report::Format,
    summary::{oom, visible},
};

use super::event_loop::Loop;

impl Loop<'_> {
    /// Writes the report of every process the OOM killer chose since the last call.
    pub(super) fn write_oom_reports(&mut self) {
        let victims = std::mem::take(&mut self.reader.oom_victims);
        // As of now: the ring up to the kill, the cgroup's numbers at this moment.
        let total = self.summary_now(None);
        for pid in victims {
            let said = match oom::report(&total, pid) {
                Some(report) => self.write_oom_report(&report, pid),
                None => {
                    format!("tracer: the OOM killer chose pid {pid}, which the run does not know")
                }
            };
            self.views.say(said);
        }
    }

    /// One victim's report as JSON and text; what to tell the user.
    fn write_oom_report(&self, report: &crate::summary::Summary, pid: u32) -> String {
        let stem = oom::file_stem(report, pid, &output::utc_stamp(since_epoch()));
        let dir = &self.cfg.on_oom;
        if let Err(e) = std::fs::create_dir_all(dir) {
            return format!(
                "tracer: the OOM killer chose pid {pid}; its report could not be written: {}: {e}",
                visible(&dir.display().to_string())
            );
        }
        let mut files = Vec::new();
        for (format, ext) in [(Format::Json, "json"), (Format::Text, "txt")] {
            let path = dir.join(format!("{stem}.{ext}"));
            match output::dest::check_file(&path, false) {
                Ok(d) => files.push((format, Target::File(d))),
                Err(e) => {
                    return format!(
                        "tracer: the OOM killer chose pid {pid}; its report could not be written: {e}"
                    );
                }
            }
        }
        let names: Vec<String> = files
            .iter()
            .map(|(_, t)| t.shown().display().to_string())
            .collect();
        let failed = output::write_all_quietly(report, &Checked { text: false, files });
        let mut line = format!(
            "tracer: the OOM killer chose pid {pid}: its report is in {}",
            visible(&names.join(" and "))
        );
        if !failed.is_empty() {
            line.push_str(&format!("; failed: {}", visible(&failed.join("; "))));
        }
        line
    }
}
