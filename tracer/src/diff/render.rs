//! A [`Diff`] for people: text for the terminal, a self-contained HTML page.

use std::io::{self, Write};

use serde_json::Value;

use super::{Diff, SiteDelta, TotalDelta};
use crate::{
    report::html::esc,
    summary::{
        label::{self, Frame},
        visible,
    },
};

/// Sites listed in the text (the JSON has all).
const TEXT_SITES: usize = 15;

/// [`label::stack`] of a stack as a summary's JSON holds it (one that does not read as frames
/// is "(no stack)").
pub fn describe(stack: &Value, depth: usize) -> String {
    let frames = <Vec<Frame> as serde::Deserialize>::deserialize(stack).unwrap_or_default();
    label::stack(&frames, depth)
}

fn signed(n: f64) -> String {
    if n == 0.0 {
        "0".into()
    } else {
        format!("{n:+}")
    }
}

fn percent(p: Option<f64>) -> String {
    p.map_or_else(|| "new".into(), |p| format!("{p:+.1}%"))
}

/// A total's change relative to before; nothing when it did not change.
fn relative(t: &TotalDelta) -> String {
    if t.change == 0.0 {
        String::new()
    } else {
        percent(t.percent)
    }
}

fn command(v: &Value) -> String {
    let parts: Vec<&str> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    visible(&parts.join(" ")).into_owned()
}

fn site_line(s: &SiteDelta) -> String {
    format!(
        "  {:>9} {:>12} -> {:>12} ({:>+12})  live {:>+10}  {}",
        s.status,
        s.before.bytes,
        s.after.bytes,
        s.bytes_change,
        s.live_bytes_change,
        describe(&s.stack, 2)
    )
}

pub fn text(d: &Diff, mut out: impl Write) -> io::Result<()> {
    writeln!(
        out,
        "before: {} ({}, {})\nafter:  {} ({}, {})",
        command(&d.before.command),
        label::human_duration(d.before.duration_ms),
        d.before.mode.as_str().unwrap_or("full"),
        command(&d.after.command),
        label::human_duration(d.after.duration_ms),
        d.after.mode.as_str().unwrap_or("full"),
    )?;
    writeln!(
        out,
        "\n{:<20} {:>14} {:>14} {:>14} {:>9}",
        "", "before", "after", "change", ""
    )?;
    for t in d
        .totals
        .iter()
        .filter(|t| t.before != 0.0 || t.after != 0.0)
    {
        writeln!(
            out,
            "{:<20} {:>14} {:>14} {:>14} {:>9}",
            t.metric,
            t.before,
            t.after,
            signed(t.change),
            relative(t)
        )?;
    }
    let changed: Vec<&SiteDelta> = d.sites.iter().filter(|s| s.status != "same").collect();
    writeln!(
        out,
        "\nsites: {} compared, {} changed, {} new, {} vanished (bytes before -> after):",
        d.sites.len(),
        changed.iter().filter(|s| s.status == "changed").count(),
        d.new_sites,
        d.vanished_sites
    )?;
    for s in changed.iter().take(TEXT_SITES) {
        writeln!(out, "{}", site_line(s))?;
    }
    if changed.len() > TEXT_SITES {
        writeln!(out, "  ... {} more in --json", changed.len() - TEXT_SITES)?;
    }
    for s in &d.suspects_appeared {
        writeln!(out, "leak suspect appeared: {s}")?;
    }
    for s in &d.suspects_vanished {
        writeln!(out, "leak suspect gone: {s}")?;
    }
    for f in &d.findings_appeared {
        writeln!(out, "finding appeared: {f}")?;
    }
    for f in &d.findings_vanished {
        writeln!(out, "finding gone: {f}")?;
    }
    for g in &d.gates {
        let verdict = if g.failed { "FAILED" } else { "passed" };
        writeln!(out, "--fail-if {verdict}: {}", g.message)?;
    }
    Ok(())
}

pub fn html(d: &Diff, mut out: impl Write) -> io::Result<()> {
    writeln!(
        out,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>tracer diff</title><style>\
         body{{font:14px system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{padding:2px 8px;text-align:right;border-bottom:1px solid #ddd}}.l{{text-align:left}}\
         .up{{color:#b03030}}.down{{color:#207020}}</style></head><body><h1>tracer diff</h1>\
         <p>before: {} ({})<br>after: {} ({})</p>",
        esc(&command(&d.before.command)),
        label::human_duration(d.before.duration_ms),
        esc(&command(&d.after.command)),
        label::human_duration(d.after.duration_ms)
    )?;
    for g in &d.gates {
        writeln!(
            out,
            "<p class=\"{}\">--fail-if {}: {}</p>",
            if g.failed { "up" } else { "down" },
            if g.failed { "FAILED" } else { "passed" },
            esc(&g.message)
        )?;
    }
    writeln!(
        out,
        "<section id=\"totals\"><h2>Totals</h2><table><thead><tr><th class=\"l\">metric</th>\
         <th>before</th><th>after</th><th>change</th><th>%</th></tr></thead><tbody>"
    )?;
    for t in &d.totals {
        let class = if t.change > 0.0 {
            "up"
        } else if t.change < 0.0 {
            "down"
        } else {
            ""
        };
        writeln!(
            out,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td>\
             <td class=\"{class}\">{}</td></tr>",
            t.metric,
            t.before,
            t.after,
            signed(t.change),
            relative(t)
        )?;
    }
    writeln!(
        out,
        "</tbody></table></section><section id=\"sites\"><h2>Sites</h2><p>{} new, {} vanished\
         </p><table><thead><tr><th class=\"l\">site</th><th class=\"l\">status</th><th>bytes \
         before</th><th>bytes after</th><th>change</th><th>live change</th></tr></thead><tbody>",
        d.new_sites, d.vanished_sites
    )?;
    for s in &d.sites {
        let class = if s.bytes_change > 0 {
            "up"
        } else if s.bytes_change < 0 {
            "down"
        } else {
            ""
        };
        writeln!(
            out,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td>\
             <td class=\"{class}\">{:+}</td><td>{:+}</td></tr>",
            esc(&describe(&s.stack, 3)),
            s.status,
            s.before.bytes,
            s.after.bytes,
            s.bytes_change,
            s.live_bytes_change
        )?;
    }
    writeln!(out, "</tbody></table></section>")?;
    if !d.findings_appeared.is_empty() || !d.findings_vanished.is_empty() {
        writeln!(out, "<section id=\"findings\"><h2>Findings</h2><ul>")?;
        for f in &d.findings_appeared {
            writeln!(out, "<li class=\"up\">appeared: {}</li>", esc(f))?;
        }
        for f in &d.findings_vanished {
            writeln!(out, "<li class=\"down\">gone: {}</li>", esc(f))?;
        }
        writeln!(out, "</ul></section>")?;
    }
    if !d.suspects_appeared.is_empty() || !d.suspects_vanished.is_empty() {
        writeln!(out, "<section id=\"suspects\"><h2>Leak suspects</h2><ul>")?;
        for s in &d.suspects_appeared {
            writeln!(out, "<li class=\"up\">appeared: {}</li>", esc(s))?;
        }
        for s in &d.suspects_vanished {
            writeln!(out, "<li class=\"down\">gone: {}</li>", esc(s))?;
        }
        writeln!(out, "</ul></section>")?;
    }
    writeln!(out, "</body></html>")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::diff::{compare, gate::Gate};

    #[test]
    fn text_and_html_show_totals_sites_and_gates() {
        let s = |bytes: u64, f: &str| {
            json!({
                "schema": "tracer.summary/1", "target": {"command": ["./app", "<x>"]},
                "duration_ms": 5.0,
                "user": {"malloc": {"calls": bytes / 100, "bytes": bytes}, "sites": [
                    {"stack": [{"addr": "0x1", "function": f, "file": "a.c", "line": 3}],
                     "allocs": bytes / 100, "bytes": bytes, "live_bytes": 0}]}
            })
        };
        let d = compare(
            &s(1000, "keep"),
            &s(1500, "keep"),
            &[Gate::parse("bytes>+10%").unwrap()],
        )
        .unwrap();
        let mut t = Vec::new();
        text(&d, &mut t).unwrap();
        let t = String::from_utf8(t).unwrap();
        assert!(
            t.contains(
                "bytes                          1000           1500           +500    +50.0%"
            ),
            "{t}"
        );
        assert!(
            t.contains("changed         1000 ->         1500 (        +500)"),
            "{t}"
        );
        assert!(t.contains("keep (a.c:3)"), "{t}");
        assert!(t.contains("--fail-if FAILED: bytes>+10%"), "{t}");
        let mut h = Vec::new();
        html(&d, &mut h).unwrap();
        let h = String::from_utf8(h).unwrap();
        assert!(h.contains("./app &lt;x&gt;"), "the command is escaped");
        assert!(h.contains("id=\"totals\"") && h.contains("id=\"sites\""));
        assert!(h.trim_end().ends_with("</html>"));
    }
}
