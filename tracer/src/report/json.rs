//! The `tracer.summary/1` JSON document.

use std::io::{self, Write};

use super::Summary;

/// The summary as listed ([`Summary::listed`]: `--max-sites` sites, leaks and suspects).
pub fn render(summary: &Summary, mut out: &mut dyn Write) -> super::Result<()> {
    serde_json::to_writer_pretty(&mut out, &*summary.listed()).map_err(io::Error::from)?;
    Ok(writeln!(out)?)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::summary::tests::sample_summary;

    #[test]
    fn has_the_schema_fields() {
        let mut buf = Vec::new();
        render(&sample_summary(), &mut buf).unwrap();
        let v: Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["schema"], "tracer.summary/1");
        assert_eq!(v["target"]["pid"], 4242);
        assert_eq!(v["target"]["command"], json!(["./app", "--flag"]));
        assert_eq!(v["target"]["exit_code"], 3);
        assert_eq!(v["duration_ms"], 12.5);
        assert_eq!(v["events"]["received"], 6);
        assert_eq!(v["events"]["dropped"], 2);
        let s = &v["syscalls"];
        assert_eq!(s["brk"]["calls"], 2);
        assert_eq!(s["brk"]["grow_bytes"], 0x21000);
        assert_eq!(s["brk"]["shrink_bytes"], 0);
        assert_eq!(s["brk"]["failed"], 0);
        assert_eq!(s["mmap"]["calls"], 2);
        assert_eq!(s["mmap"]["bytes"], 200_704 + 4096);
        assert_eq!(s["mmap"]["anon_calls"], 1);
        assert_eq!(s["mmap"]["anon_bytes"], 200_704);
        assert_eq!(s["mmap"]["failed"], 0);
        assert_eq!(
            s["munmap"],
            json!({"calls": 1, "bytes": 200_704, "failed": 0})
        );
        assert_eq!(s["mremap"]["old_bytes"], 4096);
        assert_eq!(s["mremap"]["new_bytes"], 8192);
        assert!(s["brk"].get("current_break").is_none());
    }

    #[test]
    fn pid_runs_have_a_null_exit_code() {
        let mut s = sample_summary();
        s.target.exit_code = None;
        let mut buf = Vec::new();
        render(&s, &mut buf).unwrap();
        let v: Value = serde_json::from_slice(&buf).unwrap();
        assert!(v["target"]["exit_code"].is_null());
    }
}
