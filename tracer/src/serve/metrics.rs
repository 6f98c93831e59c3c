//! `/metrics`: a summary in the Prometheus text exposition format (0.0.4), or OpenMetrics 1.0
//! when the scraper asks for it.
//!
//! Counters are monotonic totals since tracing began (`_total`), gauges are values now; names
//! follow Prometheus conventions (`tracer_…`, base units). Every series carries `pid` and
//! `comm`. Per-site series are bounded: the `max_sites` sites with the most live bytes, named
//! by their first frame (`function (file:line)`); sites that share a name are summed, so no
//! two series share their labels.

use std::fmt::Write as _;

use crate::summary::{Summary, TargetInfo, label};

/// The exposition formats, by what the scraper accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Prometheus,
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when `Accept` names it, as Prometheus's scraper does.
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

struct Writer {
    format: Format,
    /// `pid="…",comm="…"`: on every series of the process being written.
    base: String,
    /// Each family's `# HELP`/`# TYPE` lines and its samples, in the order first written: the
    /// processes of a `--follow` run each add their series to the same families.
    families: Vec<(String, String)>,
}

impl Writer {
    fn new(format: Format) -> Self {
        Writer {
            format,
            base: String::new(),
            families: Vec::new(),
        }
    }

    /// Every family, its series together.
    fn finish(self) -> String {
        let mut out = String::new();
        for (header, samples) in self.families {
            out.push_str(&header);
            out.push_str(&samples);
        }
        if self.format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        out
    }

    /// One metric family: `name` without `_total`; `series` are (extra labels, value).
    fn family(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        series: impl IntoIterator<Item = (Vec<(&'static str, String)>, f64)>,
    ) {
        let (type_name, sample_name) = match (kind, self.format) {
            (Kind::Counter, Format::OpenMetrics) => (name.to_string(), format!("{name}_total")),
            (Kind::Counter, Format::Prometheus) => {
                (format!("{name}_total"), format!("{name}_total"))
            }
            (Kind::Gauge, _) => (name.to_string(), name.to_string()),
        };
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let header = format!("# HELP {type_name} {help}\n# TYPE {type_name} {kind}\n");
        let i = match self.families.iter().position(|(h, _)| *h == header) {
            Some(i) => i,
            None => {
                self.families.push((header, String::new()));
                self.families.len() - 1
            }
        };
        let samples = &mut self.families[i].1;
        for (labels, value) in series {
            let mut l = self.base.clone();
            for (k, v) in labels {
                let comma = if l.is_empty() { "" } else { "," };
                let _ = write!(l, "{comma}{k}=\"{}\"", escape(&v));
            }
            let _ = writeln!(samples, "{sample_name}{{{l}}} {value}");
        }
    }

    fn one(&mut self, name: &str, kind: Kind, help: &str, value: u64) {
        self.family(name, kind, help, [(vec![], value as f64)]);
    }
}

fn label(k: &'static str, v: impl Into<String>) -> Vec<(&'static str, String)> {
    vec![(k, v.into())]
}

/// The most processes of a `--follow` run given series of their own: those with the most
/// bytes allocated (bounded label cardinality, as for sites).
pub const MAX_METRIC_PROCESSES: usize = 64;

/// The `pid` and `comm` labels of a process: its comm as the kernel knows it (its main
/// thread's name), not its whole title (`nginx: master process ...`); without one, its
/// program's name as the kernel would shorten it.
fn base_labels(target: &TargetInfo) -> String {
    let pid = target.pid;
    let comm = target.threads.get(&pid).cloned().unwrap_or_else(|| {
        let program = target.command.first().map_or("", String::as_str);
        let first = program.split(' ').next().unwrap_or(program);
        let name = first
            .rsplit('/')
            .next()
            .unwrap_or(first)
            .trim_end_matches(':');
        name.chars().take(15).collect()
    });
    format!("pid=\"{pid}\",comm=\"{}\"", escape(&comm))
}

/// The exposition of `summary` (built with every site listed); at most `max_sites` sites. A
/// `--follow` run's processes each have their own series (at most [`MAX_METRIC_PROCESSES`]),
/// and `tracer_processes` counts them.
pub fn render(summary: &Summary, format: Format, max_sites: usize, page_size: u64) -> String {
    let mut w = Writer::new(format);
    if let Some(s) = &summary.system {
        system(&mut w, s);
        return w.finish();
    }
    if let Some(c) = &summary.cgroup {
        cgroup(&mut w, c);
    }
    if summary.processes.is_empty() {
        w.base = base_labels(&summary.target);
        process(
            &mut w,
            summary,
            Some(summary.events.dropped),
            max_sites,
            page_size,
        );
        return w.finish();
    }
    let order = summary.processes_by_bytes();
    for p in order.iter().take(MAX_METRIC_PROCESSES) {
        w.base = base_labels(&p.summary.target);
        // Drops are the run's: on the first process's series.
        let dropped = (p.ppid.is_none()).then_some(summary.events.dropped);
        process(&mut w, &p.summary, dropped, max_sites, page_size);
    }
    w.base = base_labels(&summary.target);
    let running = summary
        .processes
        .iter()
        .filter(|p| p.ended_ms.is_none())
        .count();
    w.family(
        "tracer_processes",
        Kind::Gauge,
        "Processes traced (--follow), by whether they still run.",
        [
            (label("state", "running"), running as f64),
            (
                label("state", "exited"),
                (summary.processes.len() - running) as f64,
            ),
        ],
    );
    w.finish()
}

/// `--system`: the processes listed (those that grew most and the largest) and `other`, and
/// the cgroups listed and `other`: bounded label sets.
fn system(w: &mut Writer, s: &crate::summary::system::SystemSummary) {
    use crate::summary::system::SystemTotals;
    let mut listed: Vec<&crate::summary::system::SystemProcessReport> =
        s.grew_most.iter().chain(&s.largest).collect();
    listed.sort_by_key(|r| r.pid);
    listed.dedup_by_key(|r| r.pid);
    let process = |r: &crate::summary::system::SystemProcessReport| {
        vec![
            ("pid", r.pid.to_string()),
            ("comm", r.comm.clone()),
            ("cgroup", r.cgroup.clone()),
        ]
    };
    let other = || vec![("pid", "other".to_string())];
    let per_process = |f: fn(&SystemTotals) -> u64| {
        listed
            .iter()
            .map(|r| (process(r), f(&r.totals) as f64))
            .chain([(other(), f(&s.other) as f64)])
            .collect::<Vec<_>>()
    };
    w.family(
        "tracer_system_process_growth_bytes",
        Kind::Gauge,
        "Pages allocated while each process ran and not freed since, in bytes (--system): the \
         processes that grew most and the largest, the rest as pid=\"other\".",
        per_process(|t| t.growth_bytes),
    );
    w.family(
        "tracer_system_process_faults",
        Kind::Counter,
        "User page faults of each process listed, the rest as pid=\"other\" (--system).",
        per_process(|t| t.faults),
    );
    w.family(
        "tracer_system_process_mmap_bytes",
        Kind::Counter,
        "Bytes each process listed asked of mmap (and mremap's growth) (--system).",
        per_process(|t| t.mmap_bytes),
    );
    w.family(
        "tracer_system_process_resident_bytes",
        Kind::Gauge,
        "Resident memory of each process listed that still runs (--system).",
        listed
            .iter()
            .filter_map(|r| Some((process(r), r.resident_bytes? as f64))),
    );
    w.family(
        "tracer_system_cgroup_growth_bytes",
        Kind::Gauge,
        "Growth of the processes of each memory cgroup listed, the rest as cgroup=\"other\" \
         (--system).",
        s.cgroups
            .iter()
            .map(|c| {
                (
                    label("cgroup", c.cgroup.clone()),
                    c.totals.growth_bytes as f64,
                )
            })
            .chain([(
                label("cgroup", "other"),
                s.other_cgroups.growth_bytes as f64,
            )]),
    );
    w.family(
        "tracer_system_processes",
        Kind::Gauge,
        "Processes seen on the machine (--system), and those the kernel counted something of.",
        [
            (label("state", "seen"), s.processes_seen as f64),
            (label("state", "counted"), s.processes_counted as f64),
        ],
    );
}

/// `--cgroup`: the cgroup's own numbers, labelled with its path.
fn cgroup(w: &mut Writer, c: &crate::summary::CgroupFacts) {
    w.base = format!("cgroup=\"{}\"", escape(&c.path));
    let m = &c.memory;
    let bytes = [
        ("usage", m.usage_bytes),
        ("peak", m.peak_bytes),
        ("limit", m.limit_bytes),
        ("high", m.high_bytes),
        ("anon", m.anon_bytes),
        ("file", m.file_bytes),
        ("kernel", m.kernel_bytes),
        ("slab", m.slab_bytes),
        ("sock", m.sock_bytes),
    ];
    w.family(
        "tracer_cgroup_memory_bytes",
        Kind::Gauge,
        "The cgroup's memory as the kernel counts it: its usage and peak, its limit and high \
         mark (absent when unlimited), and what the usage is made of (memory.stat).",
        bytes
            .into_iter()
            .filter_map(|(kind, b)| Some((label("kind", kind), b? as f64))),
    );
    let e = &m.events;
    w.family(
        "tracer_cgroup_memory_events",
        Kind::Counter,
        "The cgroup's memory events (memory.events; v1: max is memory.failcnt).",
        [
            ("high", e.high),
            ("max", e.max),
            ("oom", e.oom),
            ("oom_kill", e.oom_kill),
        ]
        .into_iter()
        .filter_map(|(event, n)| Some((label("event", event), n? as f64))),
    );
    if let Some(p) = &m.pressure {
        let scope = |mut l: Vec<(&'static str, String)>| {
            l.push(("scope", m.pressure_scope.clone()));
            l
        };
        w.family(
            "tracer_cgroup_memory_pressure_percent",
            Kind::Gauge,
            "Share of time tasks waited for memory over the last 10 s and 60 s (PSI): the \
             cgroup's own, or the machine's where its hierarchy has none (scope).",
            [
                ("some", "10s", p.some_avg10),
                ("some", "60s", p.some_avg60),
                ("full", "10s", p.full_avg10),
                ("full", "60s", p.full_avg60),
            ]
            .into_iter()
            .map(|(kind, window, v)| {
                let mut l = label("kind", kind);
                l.push(("window", window.to_string()));
                (scope(l), v)
            }),
        );
    }
    w.family(
        "tracer_cgroup_processes",
        Kind::Gauge,
        "Processes in the cgroup (its child cgroups included).",
        [(vec![], c.processes.len() as f64)],
    );
}

/// The series of one process, labelled with `w.base`; `dropped`: the run's lost events, on
/// one process's series.
fn process(
    w: &mut Writer,
    summary: &Summary,
    dropped: Option<u64>,
    max_sites: usize,
    page_size: u64,
) {
    let p = &summary.paths;
    let k = &summary.kernel;
    w.family(
        "tracer_path_allocated_bytes",
        Kind::Counter,
        "Bytes allocated through each path: user allocations served by the brk heap, dedicated \
         mmaps and thread arenas; buddy pages and slab objects the kernel gave the process.",
        [
            (label("path", "brk"), p.brk.bytes as f64),
            (label("path", "mmap"), p.mmap.bytes as f64),
            (label("path", "thread_arena"), p.thread_arena.bytes as f64),
            (label("path", "buddy"), k.buddy.bytes as f64),
            (label("path", "slab"), k.slab.bytes as f64),
        ],
    );
    w.family(
        "tracer_path_allocations",
        Kind::Counter,
        "Allocations through each path: user allocations served by the brk heap, dedicated \
         mmaps and thread arenas; buddy page blocks and slab objects.",
        [
            (label("path", "brk"), p.brk.allocs as f64),
            (label("path", "mmap"), p.mmap.allocs as f64),
            (label("path", "thread_arena"), p.thread_arena.allocs as f64),
            (label("path", "buddy"), k.buddy.allocs as f64),
            (label("path", "slab"), k.slab.allocs as f64),
        ],
    );
    let last = summary.timeline.points.last().map(|p| p.sample);
    let gauge = |f: fn(&crate::summary::timeline::Sample) -> u64| last.as_ref().map_or(0, f);
    w.one(
        "tracer_live_bytes",
        Kind::Gauge,
        "Bytes in live user allocations.",
        gauge(|s| s.live_heap),
    );
    w.one(
        "tracer_resident_bytes",
        Kind::Gauge,
        "Bytes of the process's data pages resident, of those first touched while traced.",
        gauge(|s| s.resident),
    );
    w.one(
        "tracer_mapped_bytes",
        Kind::Gauge,
        "Bytes mapped for data: the brk heap, anonymous mmaps, thread arenas.",
        gauge(|s| s.mapped),
    );
    w.one(
        "tracer_buddy_held_bytes",
        Kind::Gauge,
        "Bytes of buddy pages given to the process and still held.",
        k.buddy.live_pages_at_end.saturating_mul(page_size),
    );
    w.one(
        "tracer_slab_live_bytes",
        Kind::Gauge,
        "Bytes of slab objects made for the process and still live.",
        k.slab.live_bytes_at_end,
    );
    w.one(
        "tracer_events_received",
        Kind::Counter,
        "Events read from the kernel.",
        summary.events.received,
    );
    if let Some(dropped) = dropped {
        w.one(
            "tracer_events_dropped",
            Kind::Counter,
            "Events lost (the ring buffer was full, or per-thread state could not be stored).",
            dropped,
        );
    }
    let u = &summary.user;
    let funcs = u.functions();
    w.family(
        "tracer_allocator_calls",
        Kind::Counter,
        "Calls of each allocator function (outermost calls; free and operator delete too).",
        funcs
            .iter()
            .map(|(f, s)| (label("function", *f), s.calls as f64))
            .chain([
                (label("function", "free"), u.free.calls as f64),
                (
                    label("function", "operator_delete"),
                    u.operator_delete.calls as f64,
                ),
            ]),
    );
    w.family(
        "tracer_allocator_requested_bytes",
        Kind::Counter,
        "Bytes requested from each allocator function.",
        funcs
            .iter()
            .map(|(f, s)| (label("function", *f), s.bytes as f64)),
    );
    w.family(
        "tracer_page_faults",
        Kind::Counter,
        "User page faults, by the kind of region that faulted.",
        k.faults
            .by_region
            .iter()
            .map(|(r, n)| (label("region", *r), *n as f64)),
    );
    w.family(
        "tracer_slab_objects",
        Kind::Gauge,
        "Slab objects made for the process and still live, by cache.",
        k.slab
            .by_cache
            .iter()
            .map(|(c, s)| (label("cache", c.as_str()), s.live_at_end as f64)),
    );
    w.family(
        "tracer_slab_allocations",
        Kind::Counter,
        "Slab objects made for the process, by cache.",
        k.slab
            .by_cache
            .iter()
            .map(|(c, s)| (label("cache", c.as_str()), s.allocs as f64)),
    );
    // The sites with the most live bytes, summed by name.
    let mut ranked: Vec<_> = u.sites.iter().collect();
    ranked.sort_by_key(|s| std::cmp::Reverse(s.stats.live_bytes));
    let mut named: Vec<(String, [u64; 4])> = Vec::new();
    for s in ranked {
        let name = label::stack(&s.stack, 1);
        let values = [
            s.stats.live_bytes,
            s.stats.allocs,
            s.stats.bytes,
            s.paths.resident_bytes,
        ];
        if let Some((_, v)) = named.iter_mut().find(|(n, _)| *n == name) {
            for (a, b) in v.iter_mut().zip(values) {
                *a = a.saturating_add(b);
            }
        } else if named.len() < max_sites {
            named.push((name, values));
        }
    }
    let site_family = |w: &mut Writer, name: &str, kind, help: &str, i: usize| {
        w.family(
            name,
            kind,
            help,
            named
                .iter()
                .map(|(n, v)| (label("site", n.as_str()), v[i] as f64)),
        );
    };
    site_family(
        w,
        "tracer_site_live_bytes",
        Kind::Gauge,
        "Live bytes of the call sites with the most (--max-metric-sites).",
        0,
    );
    site_family(
        w,
        "tracer_site_allocations",
        Kind::Counter,
        "Allocations made by each listed call site.",
        1,
    );
    site_family(
        w,
        "tracer_site_allocated_bytes",
        Kind::Counter,
        "Bytes allocated by each listed call site.",
        2,
    );
    site_family(
        w,
        "tracer_site_resident_bytes",
        Kind::Gauge,
        "Resident bytes of each listed call site's live blocks.",
        3,
    );
    w.family(
        "tracer_leak_suspect_growth_bytes_per_second",
        Kind::Gauge,
        "Growth rate of the live bytes of sites that keep growing with old blocks alive.",
        u.leak_suspects.iter().take(max_sites).map(|s| {
            (
                label("site", label::stack(&s.stack, 1)),
                s.growth_bytes_per_min / 60.0,
            )
        }),
    );
    // The last leak check's categories (none until a check ran: SIGUSR2, or --leak-check's
    // at the end).
    if let Some(c) = &u.leak_check {
        use crate::summary::leak_check::LeakKind;
        w.family(
            "tracer_leak_check_bytes",
            Kind::Gauge,
            "Bytes of live blocks by what the last leak check found them to be.",
            LeakKind::ALL
                .iter()
                .map(|&k| (label("kind", k.name()), c.of(k).0 as f64)),
        );
        w.family(
            "tracer_leak_check_blocks",
            Kind::Gauge,
            "Live blocks by what the last leak check found them to be.",
            LeakKind::ALL
                .iter()
                .map(|&k| (label("kind", k.name()), c.of(k).1 as f64)),
        );
        w.family(
            "tracer_leak_check_pause_seconds",
            Kind::Gauge,
            "How long the last leak check kept the process stopped.",
            [(vec![], c.pause_ms / 1e3)],
        );
    }
    w.one(
        "tracer_uptime_seconds",
        Kind::Gauge,
        "Seconds since tracing began.",
        (summary.duration_ms / 1e3) as u64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::heap::SiteStats,
        summary::{
            tests::{sample_summary, site_at},
            user::SiteReport,
        },
    };

    fn site(function: &str, line: u32, live: u64) -> SiteReport {
        let stats = SiteStats {
            allocs: 3,
            bytes: 300,
            live_bytes: live,
            ..Default::default()
        };
        site_at(function, line, stats)
    }

    /// The value of the series whose line starts with `prefix`.
    fn value(text: &str, prefix: &str) -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    #[test]
    fn families_are_typed_labelled_and_bounded() {
        let mut s = sample_summary();
        s.target.command = vec!["/usr/bin/my\"app".into()];
        s.paths.brk.bytes = 4096;
        s.paths.mmap.allocs = 5;
        s.user.malloc.calls = 7;
        s.user.sites = vec![
            site("small", 1, 10),
            site("big", 2, 1000),
            site("big", 2, 500),
            site("mid", 3, 100),
        ];
        let text = render(&s, Format::Prometheus, 2, 4096);
        let base = "pid=\"4242\",comm=\"my\\\"app\"";
        assert!(text.contains("# TYPE tracer_path_allocated_bytes_total counter"));
        assert_eq!(
            value(
                &text,
                &format!("tracer_path_allocated_bytes_total{{{base},path=\"brk\"}}")
            ),
            4096.0
        );
        assert_eq!(
            value(
                &text,
                &format!("tracer_allocator_calls_total{{{base},function=\"malloc\"}}")
            ),
            7.0
        );
        assert_eq!(
            value(
                &text,
                &format!("tracer_path_allocations_total{{{base},path=\"mmap\"}}")
            ),
            5.0
        );
        assert!(text.contains("# TYPE tracer_live_bytes gauge"));
        // Two sites at most; the two "big" ones are one series.
        let sites: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("tracer_site_live_bytes{"))
            .collect();
        assert_eq!(sites.len(), 2, "{sites:?}");
        assert_eq!(
            value(
                &text,
                &format!("tracer_site_live_bytes{{{base},site=\"big (app.c:2)\"}}")
            ),
            1500.0
        );
        assert!(sites[1].contains("site=\"mid (app.c:3)\""));
        // Every sample line has the pid and comm labels; every family has HELP and TYPE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.contains(base), "{line}");
        }
        let types = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(
            types,
            text.lines().filter(|l| l.starts_with("# HELP")).count()
        );
        assert!(!text.contains("# EOF"));

        let om = render(&s, Format::OpenMetrics, 2, 4096);
        assert!(om.contains("# TYPE tracer_path_allocated_bytes counter"));
        assert!(om.contains("tracer_path_allocated_bytes_total{"));
        assert!(om.ends_with("# EOF\n"));
    }

    #[test]
    fn a_cgroup_has_its_own_series() {
        use crate::summary::{CgroupEvents, CgroupFacts, CgroupMemory, Pressure};
        let mut s = sample_summary();
        s.cgroup = Some(CgroupFacts {
            path: "/sys/fs/cgroup/memory/app".into(),
            version: 1,
            memory: CgroupMemory {
                usage_bytes: Some(5 << 20),
                limit_bytes: Some(64 << 20),
                anon_bytes: Some(4 << 20),
                events: CgroupEvents {
                    max: Some(3),
                    oom_kill: Some(1),
                    ..Default::default()
                },
                pressure: Some(Pressure {
                    some_avg10: 12.5,
                    ..Default::default()
                }),
                pressure_scope: "machine".into(),
                ..Default::default()
            },
            processes: vec![1, 2, 3],
            usage: Vec::new(),
        });
        let text = render(&s, Format::Prometheus, 10, 4096);
        let cg = "cgroup=\"/sys/fs/cgroup/memory/app\"";
        let at = |rest: &str| value(&text, &format!("tracer_cgroup_{rest}"));
        assert_eq!(
            at(&format!("memory_bytes{{{cg},kind=\"usage\"}}")),
            5_242_880.0
        );
        assert_eq!(
            at(&format!("memory_bytes{{{cg},kind=\"limit\"}}")),
            67_108_864.0
        );
        assert_eq!(
            at(&format!("memory_bytes{{{cg},kind=\"anon\"}}")),
            4_194_304.0
        );
        // What the kernel does not keep is no series, not a zero.
        assert!(!text.contains("kind=\"slab\""), "{text}");
        assert!(!text.contains("event=\"high\""), "{text}");
        assert_eq!(
            at(&format!("memory_events_total{{{cg},event=\"oom_kill\"}}")),
            1.0
        );
        assert_eq!(
            at(&format!(
                "memory_pressure_percent{{{cg},kind=\"some\",window=\"10s\",scope=\"machine\"}}"
            )),
            12.5
        );
        assert_eq!(at(&format!("processes{{{cg}}}")), 3.0);
        // The process's own series keep their labels.
        assert!(text.contains("tracer_live_bytes{pid=\"4242\""), "{text}");
    }

    #[test]
    fn a_system_run_has_bounded_series_per_process_and_cgroup() {
        use crate::summary::system::{
            SystemCgroupReport, SystemProcessReport, SystemSummary, SystemTotals,
        };
        let grew = |growth_bytes| SystemTotals {
            growth_bytes,
            faults: 3,
            ..SystemTotals::default()
        };
        let mut s = sample_summary();
        let grower = SystemProcessReport {
            pid: 7,
            comm: "grower".into(),
            cgroup: "/app".into(),
            resident_bytes: Some(1 << 20),
            totals: grew(4096),
        };
        s.system = Some(SystemSummary {
            processes_seen: 50,
            processes_counted: 9,
            grew_most: vec![grower.clone()],
            largest: vec![grower],
            other: grew(8192),
            cgroups: vec![SystemCgroupReport {
                cgroup: "/app".into(),
                processes: 1,
                resident_bytes: 1 << 20,
                totals: grew(4096),
            }],
            other_cgroups: grew(8192),
            ..SystemSummary::default()
        });
        let text = render(&s, Format::Prometheus, 10, 4096);
        let p = "pid=\"7\",comm=\"grower\",cgroup=\"/app\"";
        assert_eq!(
            value(&text, &format!("tracer_system_process_growth_bytes{{{p}}}")),
            4096.0
        );
        // Listed in both rankings, it is one series.
        assert_eq!(
            text.matches("tracer_system_process_growth_bytes{pid=\"7\"")
                .count(),
            1
        );
        assert_eq!(
            value(&text, "tracer_system_process_growth_bytes{pid=\"other\"}"),
            8192.0
        );
        assert_eq!(
            value(&text, "tracer_system_cgroup_growth_bytes{cgroup=\"other\"}"),
            8192.0
        );
        assert_eq!(
            value(&text, "tracer_system_processes{state=\"seen\"}"),
            50.0
        );
        // No process's own series in a system run.
        assert!(!text.contains("tracer_live_bytes"), "{text}");
        assert!(!text.contains("{,"), "{text}");
    }

    #[test]
    fn accept_picks_the_format() {
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        let prometheus =
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
        assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Prometheus);
        assert_eq!(escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }

    /// The comm label is the kernel's comm (the main thread's name), not a whole title.
    #[test]
    fn comm_is_the_process_comm_not_its_title() {
        let mut s = sample_summary();
        s.target.command = vec!["nginx: master process /usr/sbin/nginx -g daemon on;".into()];
        let text = render(&s, Format::Prometheus, 5, 4096);
        assert!(text.contains("comm=\"nginx\""), "{text}");
        s.target.threads.insert(4242, "nginx".into());
        let text = render(&s, Format::Prometheus, 5, 4096);
        assert!(text.contains("pid=\"4242\",comm=\"nginx\"}"), "{text}");
    }

    /// `--follow`: each process's own series, every family once with all of them, no two
    /// series with the same labels, and the processes counted.
    #[test]
    fn each_followed_process_has_its_series() {
        let mut s = sample_summary();
        for (pid, command, malloc, ended) in
            [(10, "/bin/sh", 2, None), (11, "/usr/bin/cc1", 9, Some(5.0))]
        {
            let mut summary = sample_summary();
            summary.user.malloc.calls = malloc;
            summary.user.malloc.bytes = malloc * 100;
            // As a run makes them: each process's summary is about that process.
            summary.target.pid = pid;
            summary.target.command = vec![command.into()];
            s.processes.push(crate::summary::ProcessReport {
                pid,
                ppid: (pid == 11).then_some(10),
                command: vec![command.into()],
                exit_code: None,
                signal: None,
                started_ms: 0.0,
                ended_ms: ended,
                summary,
            });
        }
        s.events.dropped = 4;
        let text = render(&s, Format::Prometheus, 5, 4096);
        let calls = "tracer_allocator_calls_total{";
        assert_eq!(
            value(
                &text,
                &format!("{calls}pid=\"11\",comm=\"cc1\",function=\"malloc\"}}")
            ),
            9.0
        );
        assert_eq!(
            value(
                &text,
                &format!("{calls}pid=\"10\",comm=\"sh\",function=\"malloc\"}}")
            ),
            2.0
        );
        assert_eq!(
            value(&text, "tracer_events_dropped_total{pid=\"10\",comm=\"sh\"}"),
            4.0
        );
        assert_eq!(
            value(
                &text,
                "tracer_processes{pid=\"4242\",comm=\"app\",state=\"exited\"}"
            ),
            1.0
        );
        let helps: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP")).collect();
        let mut unique = helps.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), helps.len(), "a family written twice");
        let series: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.rsplit_once(' ').unwrap().0)
            .collect();
        let mut unique = series.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            series.len(),
            "two series with the same labels"
        );
        // Each family's series are together, under its TYPE line.
        let mut seen = std::collections::HashSet::new();
        let mut current = "";
        for line in text.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                current = t.split(' ').next().unwrap();
                assert!(seen.insert(current), "{current} twice");
            } else if !line.starts_with('#') {
                assert!(line.starts_with(current), "{line} outside {current}");
            }
        }
    }
}
