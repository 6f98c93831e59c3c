//! `--interval`: what changed since the last interval, from two summaries a period apart, as
//! one `tracer.interval/1` JSON line (`--jsonl`) and a compact block of text for stderr.
//!
//! Pure: summaries in, records and text out.

use std::{collections::HashMap, io};

use serde::Serialize;

use crate::summary::{
    Summary, human_bytes,
    kernel::PathsSummary,
    label::{self, Stack},
    merge::{FramesKey, frames_key},
    notes::Note,
    user::SiteReport,
};

pub const SCHEMA: &str = "tracer.interval/1";
/// Sites in the text block (the JSON line lists `--max-sites`).
const TEXT_SITES: usize = 8;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IntervalEvents {
    pub received: u64,
    pub dropped: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntervalSite {
    pub stack: Stack,
    pub allocs: u64,
    pub bytes: u64,
    pub frees: u64,
    pub live_bytes: u64,
    /// Live bytes now minus at the last interval.
    pub live_delta_bytes: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntervalSuspect {
    pub stack: Stack,
    pub live_bytes: u64,
    pub growth_bytes_per_min: f64,
}

/// One interval: totals since the start, and what the interval added.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntervalRecord {
    pub schema: &'static str,
    /// Since tracing started.
    pub t_ms: f64,
    /// Since the last interval.
    pub interval_ms: f64,
    /// The last record of a run, taken as it ended.
    #[serde(rename = "final")]
    pub is_final: bool,
    pub events: IntervalEvents,
    pub events_delta: IntervalEvents,
    /// As in the summary: totals since the start.
    pub paths: PathsSummary,
    /// What this interval added to `paths`.
    pub paths_delta: PathsSummary,
    /// Bytes in live user allocations; null under `--mode kernel`, which cannot know them.
    pub live_bytes: Option<u64>,
    /// Bytes of resident user pages first touched while tracing.
    pub resident_bytes: u64,
    /// Bytes mapped for data: the brk heap, anonymous mmaps, thread arenas.
    pub mapped_bytes: u64,
    /// The sites with the most live bytes.
    pub sites: Vec<IntervalSite>,
    pub leak_suspects: Vec<IntervalSuspect>,
    /// The summary's losses and caveats as of now (see [`crate::summary::notes`]).
    pub notes: Vec<Note>,
    /// `--cgroup`: the cgroup's own numbers now (its use over time is in the summary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<crate::summary::CgroupFacts>,
}

/// Remembers the last interval, to tell what changed.
#[derive(Debug, Default)]
pub struct IntervalView {
    last_t_ms: f64,
    events: IntervalEvents,
    paths: PathsSummary,
    /// Every site's live bytes at the last interval, by its frames.
    live: HashMap<FramesKey, u64>,
}

impl IntervalView {
    /// The record for `summary` (built with every site listed) at `t_ms` since the start;
    /// lists the `max_sites` sites with the most live bytes.
    pub fn next(
        &mut self,
        summary: &Summary,
        t_ms: f64,
        max_sites: usize,
        is_final: bool,
    ) -> IntervalRecord {
        let events = IntervalEvents {
            received: summary.events.received,
            dropped: summary.events.dropped,
        };
        let events_delta = IntervalEvents {
            received: events.received.saturating_sub(self.events.received),
            dropped: events.dropped.saturating_sub(self.events.dropped),
        };
        let paths_delta = minus(&summary.paths, &self.paths);
        let mut ranked: Vec<&SiteReport> = summary.user.sites.iter().collect();
        ranked.sort_by_key(|s| std::cmp::Reverse(s.stats.live_bytes));
        let mut live = HashMap::with_capacity(ranked.len());
        let mut sites = Vec::new();
        for site in ranked {
            let key = frames_key(&site.stack);
            let before = self.live.get(&key).copied().unwrap_or(0);
            if sites.len() < max_sites {
                sites.push(IntervalSite {
                    stack: site.stack.clone(),
                    allocs: site.stats.allocs,
                    bytes: site.stats.bytes,
                    frees: site.stats.frees,
                    live_bytes: site.stats.live_bytes,
                    live_delta_bytes: delta(site.stats.live_bytes, before),
                });
            }
            live.insert(key, site.stats.live_bytes);
        }
        let last = summary.timeline.points.last().map(|p| p.sample);
        let record = IntervalRecord {
            schema: SCHEMA,
            t_ms,
            interval_ms: t_ms - self.last_t_ms,
            is_final,
            events,
            events_delta,
            paths: summary.paths,
            paths_delta,
            live_bytes: summary.live_bytes_now(),
            resident_bytes: last.map_or(0, |s| s.resident),
            mapped_bytes: last.map_or(0, |s| s.mapped),
            sites,
            leak_suspects: summary
                .user
                .leak_suspects
                .iter()
                .take(max_sites)
                .map(|s| IntervalSuspect {
                    stack: s.stack.clone(),
                    live_bytes: s.live_bytes,
                    growth_bytes_per_min: s.growth_bytes_per_min,
                })
                .collect(),
            notes: summary.notes.clone(),
            cgroup: summary
                .cgroup
                .as_ref()
                .map(|c| crate::summary::CgroupFacts {
                    usage: Vec::new(),
                    ..c.clone()
                }),
        };
        self.last_t_ms = t_ms;
        self.events = events;
        self.paths = summary.paths;
        self.live = live;
        record
    }
}

/// `now - before` as a signed count, saturating.
pub fn delta(now: u64, before: u64) -> i64 {
    (i128::from(now) - i128::from(before)).clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

fn minus(a: &PathsSummary, b: &PathsSummary) -> PathsSummary {
    let mut d = *a;
    d.brk.bytes = a.brk.bytes.saturating_sub(b.brk.bytes);
    d.mmap.bytes = a.mmap.bytes.saturating_sub(b.mmap.bytes);
    d.thread_arena.bytes = a.thread_arena.bytes.saturating_sub(b.thread_arena.bytes);
    d.buddy.pages = a.buddy.pages.saturating_sub(b.buddy.pages);
    d.slab.objects = a.slab.objects.saturating_sub(b.slab.objects);
    d
}

fn signed_bytes(n: i64) -> String {
    if n < 0 {
        format!("-{}", human_bytes(n.unsigned_abs()))
    } else {
        format!("+{}", human_bytes(n as u64))
    }
}

/// The compact block for stderr; returns the number of lines written (to redraw it in place).
pub fn render_text(r: &IntervalRecord, header: &str, mut out: impl io::Write) -> io::Result<usize> {
    let mut lines = 0;
    let mut line = |out: &mut dyn io::Write, text: String| -> io::Result<()> {
        lines += 1;
        writeln!(out, "{text}")
    };
    line(
        &mut out,
        format!(
            "{header}  t={:.1}s  events {} (+{})  dropped {}{}",
            r.t_ms / 1e3,
            r.events.received,
            r.events_delta.received,
            r.events.dropped,
            if r.events_delta.dropped > 0 {
                format!(" (+{})", r.events_delta.dropped)
            } else {
                String::new()
            }
        ),
    )?;
    for n in &r.notes {
        line(&mut out, format!("  {}: {}", n.level.name(), n.text))?;
    }
    let (p, d) = (&r.paths, &r.paths_delta);
    line(
        &mut out,
        format!(
            "  brk {} (+{})  mmap {} (+{})  arenas {} (+{})  buddy {} pages (+{})  slab {} objects (+{})",
            human_bytes(p.brk.bytes),
            human_bytes(d.brk.bytes),
            human_bytes(p.mmap.bytes),
            human_bytes(d.mmap.bytes),
            human_bytes(p.thread_arena.bytes),
            human_bytes(d.thread_arena.bytes),
            p.buddy.pages,
            d.buddy.pages,
            p.slab.objects,
            d.slab.objects,
        ),
    )?;
    if let Some(c) = &r.cgroup {
        line(&mut out, format!("  {}", crate::summary::cgroup::brief(c)))?;
    }
    line(
        &mut out,
        format!(
            "  live {}  resident {}  mapped {}",
            label::known_bytes(r.live_bytes),
            human_bytes(r.resident_bytes),
            human_bytes(r.mapped_bytes)
        ),
    )?;
    if !r.sites.is_empty() {
        line(
            &mut out,
            format!(
                "  {:>12} {:>14} {:>10}  site",
                "live", "this interval", "allocs"
            ),
        )?;
    }
    for s in r.sites.iter().take(TEXT_SITES) {
        line(
            &mut out,
            format!(
                "  {:>12} {:>14} {:>10}  {}",
                human_bytes(s.live_bytes),
                signed_bytes(s.live_delta_bytes),
                s.allocs,
                label::stack(&s.stack, 2)
            ),
        )?;
    }
    for s in &r.leak_suspects {
        line(
            &mut out,
            format!(
                "  leak suspect: {} growing {}/min, {} live",
                label::stack(&s.stack, 2),
                human_bytes(s.growth_bytes_per_min.max(0.0) as u64),
                human_bytes(s.live_bytes)
            ),
        )?;
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::heap::SiteStats,
        summary::tests::{sample_summary, site_at},
    };

    fn site(function: &str, live: u64, allocs: u64) -> SiteReport {
        let stats = SiteStats {
            allocs,
            bytes: allocs * 100,
            live_bytes: live,
            ..Default::default()
        };
        site_at(function, 7, stats)
    }

    #[test]
    fn deltas_per_site_and_path_between_intervals() {
        let mut view = IntervalView::default();
        let mut s = sample_summary();
        s.user.sites = vec![site("grow", 1000, 10), site("steady", 5000, 50)];
        s.paths.brk.bytes = 10_000;
        s.events.received = 100;
        let first = view.next(&s, 500.0, 10, false);
        assert_eq!(first.schema, SCHEMA);
        assert_eq!(first.interval_ms, 500.0);
        // Most live bytes first; the first interval's deltas are the totals.
        assert_eq!(first.sites[0].stack[0].function.as_deref(), Some("steady"));
        assert_eq!(first.sites[0].live_delta_bytes, 5000);
        assert_eq!(first.paths_delta.brk.bytes, 10_000);

        s.user.sites = vec![site("grow", 3000, 30), site("steady", 4000, 60)];
        s.paths.brk.bytes = 12_000;
        s.events.received = 250;
        let second = view.next(&s, 1000.0, 1, true);
        assert_eq!(second.interval_ms, 500.0);
        assert!(second.is_final);
        assert_eq!(second.events_delta.received, 150);
        assert_eq!(second.paths_delta.brk.bytes, 2_000);
        assert_eq!(second.paths.brk.bytes, 12_000);
        // Cut to one site: "steady" still has the most, and shrank.
        assert_eq!(second.sites.len(), 1);
        assert_eq!(second.sites[0].live_delta_bytes, -1000);
        let third = view.next(&s, 1500.0, 10, false);
        let grow = third.sites.iter().find(|x| x.live_bytes == 3000).unwrap();
        // "grow" was not listed last time, but its delta is against its value then.
        assert_eq!(grow.live_delta_bytes, 0);

        let json = serde_json::to_value(&second).unwrap();
        assert_eq!(json["schema"], "tracer.interval/1");
        assert_eq!(json["final"], true);
        assert_eq!(json["sites"][0]["live_delta_bytes"], -1000);
        assert_eq!(json["paths"]["brk"]["bytes"], 12_000);
        assert_eq!(json["events"]["received"], 250);

        let mut text = Vec::new();
        let lines = render_text(&second, "tracer", &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert_eq!(text.lines().count(), lines);
        assert!(text.contains("t=1.0s"), "{text}");
        assert!(text.contains("brk 11.7 KiB (+2.0 KiB)"), "{text}");
        assert!(
            text.contains("-1000 B") && text.contains("steady (app.c:7)"),
            "{text}"
        );
    }
}
