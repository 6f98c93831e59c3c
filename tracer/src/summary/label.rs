//! Names, labels and units: how the summary's facts read, made here once for every renderer,
//! `tracer diff` and the live views. Every label is safe to show ([`visible`]); markup
//! formats escape it further.

use super::{
    findings::Finding, leak_check::LeakCheckSummary, plumbing, suspects::LeakSuspect,
    user::SiteReport,
};
use crate::events::{CheckMoment, CheckOutcome, LeakKind};
pub use crate::symbolize::{Frame, Stack};

/// How much of a frame a label says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `function (file:line)` with the file's base name, or the frame's [`name`]: tables,
    /// lists, charts, metrics.
    Short,
    /// `0xADDR function (path:line) [inlined] in module+0xOFF`: a stack shown whole.
    Full,
    /// The frame's [`name`] alone, never with `;` (the separator): folded stacks.
    Folded,
}

/// What names a frame: its function; unresolved, where it lies (`libz.so.1+0x4a2f1`); in
/// anonymous memory, its address. Not yet made [`visible`].
pub fn name(f: &Frame) -> String {
    match (&f.function, &f.module, f.offset) {
        (Some(function), _, _) => function.to_string(),
        (None, Some(module), Some(offset)) => format!("{}+{offset:#x}", base_name(module)),
        _ => format!("{:#x}", f.addr),
    }
}

/// The last component of a path.
fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// One frame's label in `style`.
pub fn frame(f: &Frame, style: Style) -> String {
    let text = match style {
        Style::Short => match (&f.file, f.line) {
            (Some(file), Some(line)) => {
                let function = f.function.as_deref().unwrap_or("?");
                format!("{function} ({}:{line})", base_name(file))
            }
            _ => name(f),
        },
        Style::Full => {
            let place = match (&f.file, f.line) {
                (Some(file), Some(line)) => format!(" ({file}:{line})"),
                (Some(file), None) => format!(" ({file})"),
                _ => String::new(),
            };
            let inlined = if f.inlined { " [inlined]" } else { "" };
            // Where it lies, for a resolved frame (an unresolved one is named by it already).
            let module = match (&f.function, &f.module, f.offset) {
                (Some(_), Some(module), Some(offset)) => {
                    format!(" in {}+{offset:#x}", base_name(module))
                }
                _ => String::new(),
            };
            format!("{:#x} {}{place}{inlined}{module}", f.addr, name(f))
        }
        Style::Folded => return visible(&name(f)).replace(';', ":"),
    };
    visible(&text).into_owned()
}

/// `function (file:line) <- caller (file:line)`: the first `depth` frames of a stack from the
/// first that is not allocator plumbing (see [`plumbing::from_label`]).
pub fn stack(stack: &[Frame], depth: usize) -> String {
    if stack.is_empty() {
        return String::from("(no stack)");
    }
    plumbing::from_label(stack)
        .iter()
        .take(depth)
        .map(|f| frame(f, Style::Short))
        .collect::<Vec<_>>()
        .join(" <- ")
}

/// The other sites of a grouped finding: `b (x.c:3) 1.2 MiB, c (y.c:9) 800.0 KiB and 12
/// more sites`; None when it has none.
pub fn also(f: &Finding) -> Option<String> {
    if f.also.is_empty() {
        return None;
    }
    let mut text = f
        .also
        .iter()
        .map(|a| format!("{} {}", stack(&a.site, 1), human_bytes(a.bytes)))
        .collect::<Vec<_>>()
        .join(", ");
    if f.more > 0 {
        text.push_str(&format!(
            " and {}",
            count(f.more as u64, "more site", "more sites")
        ));
    }
    Some(text)
}

/// Bytes that may not be known: `unknown` for None (live bytes under `--mode kernel`).
pub fn known_bytes(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "unknown".into(), human_bytes)
}

/// A leak kind as memcheck words it.
pub fn leak_kind(kind: LeakKind) -> &'static str {
    match kind {
        LeakKind::Lost => "definitely lost",
        LeakKind::Indirect => "indirectly lost",
        LeakKind::Possible => "possibly lost",
        LeakKind::Reachable => "still reachable",
    }
}

/// What a leak check was: when, and what it cost (`leak check at exit (stopped 3.2 ms,
/// 177.1 KiB read)`), or why it classified nothing.
pub fn leak_check(c: &LeakCheckSummary) -> String {
    let at = match c.at {
        Some(CheckMoment::AtExit) => "at exit",
        Some(CheckMoment::AtEnd) => "when tracing ended",
        Some(CheckMoment::OnRequest) => "on request",
        None => "",
    };
    match c.outcome {
        Some(CheckOutcome::Done) => format!(
            "leak check {at} (stopped {}, {} read)",
            human_duration(c.pause_ms),
            human_bytes(c.scanned_bytes)
        ),
        Some(CheckOutcome::GaveUp) => format!(
            "leak check {at} given up after {} (--leak-check-max-pause): blocks unclassified",
            human_duration(c.pause_ms)
        ),
        _ => format!("leak check {at} failed (the process could not be stopped or read)"),
    }
}

/// The check's categories in one line (`definitely lost 11.7 KiB in 4 blocks, ...`), the
/// empty ones left out (`nothing live` when all are).
pub fn leak_totals(c: &LeakCheckSummary) -> String {
    let parts: Vec<String> = LeakKind::ALL
        .iter()
        .map(|&k| (k, c.of(k)))
        .filter(|(_, (_, blocks))| *blocks > 0)
        .map(|(k, (bytes, blocks))| {
            format!(
                "{} {} in {}",
                leak_kind(k),
                human_bytes(bytes),
                count(blocks, "block", "blocks")
            )
        })
        .collect();
    let mut parts = parts;
    if c.suppressed_blocks > 0 {
        parts.push(format!(
            "suppressed {} in {}",
            human_bytes(c.suppressed_bytes),
            count(c.suppressed_blocks, "block", "blocks")
        ));
    }
    if parts.is_empty() {
        "nothing live".into()
    } else {
        parts.join(", ")
    }
}

/// A leak suspect's growth: `growing 5.6 MiB/min` once it was watched long enough for a rate
/// ([`MIN_RATE_MS`](super::findings::MIN_RATE_MS)), else `growing for 83.8 ms`.
pub fn growth(s: &LeakSuspect) -> String {
    let watched = s.points.last().map_or(0.0, |p| p.0);
    if watched >= super::findings::MIN_RATE_MS {
        format!(
            "growing {}/min",
            human_bytes(s.growth_bytes_per_min.max(0.0) as u64)
        )
    } else {
        format!(
            "growing for {} (too short for a rate)",
            human_duration(watched)
        )
    }
}

/// Short labels for sites shown side by side (chart bars): each its frames (as the text names
/// them, `function (file:line)`) from the first that matters ([`plumbing::from_label`]) as far as it takes to tell it from the
/// others (at most twelve), `a <- … <- d` when that is longer than `max_chars`.
pub fn sites(stacks: &[&[Frame]], max_chars: usize) -> Vec<String> {
    let depths = telling_depths(stacks.iter().copied(), 1, 12);
    stacks
        .iter()
        .zip(depths)
        .map(|(stack, depth)| {
            let names: Vec<String> = plumbing::from_label(stack)
                .iter()
                .take(depth)
                .map(|f| frame(f, Style::Short))
                .collect();
            fit_names(&names, max_chars)
        })
        .collect()
}

/// `names` joined by ` <- ` in at most `max_chars`: the first and the last, the ones between
/// as `…`, each elided in the middle if it must be.
fn fit_names(names: &[String], max_chars: usize) -> String {
    let joined = names.join(" <- ");
    if joined.chars().count() <= max_chars || names.is_empty() {
        return if names.is_empty() {
            "(no stack)".into()
        } else {
            joined
        };
    }
    let elide = |s: &str, max: usize| elide_middle(s, max).into_owned();
    match names {
        [one] => elide(one, max_chars),
        [first, .., last] => {
            let between = if names.len() > 2 {
                " <- … <- "
            } else {
                " <- "
            };
            let room = max_chars.saturating_sub(between.chars().count());
            let first_room = room / 2;
            format!(
                "{}{between}{}",
                elide(first, first_room),
                elide(last, room - first_room)
            )
        }
        [] => unreachable!(),
    }
}

/// `text` in at most `max` characters: its start and its end, `…` between (as it is when it
/// fits, or when `max` leaves no room for both).
pub fn elide_middle(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    let n = text.chars().count();
    if n <= max || max < 3 {
        return text.into();
    }
    let head = (max - 1) / 2;
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(n - (max - 1 - head)).collect();
    format!("{start}…{end}").into()
}

/// For each stack, the fewest frames (from the one that matters; at least `min`, at most
/// `max`) that tell it apart from the others listed with it.
pub fn telling_depths<'a>(
    stacks: impl Iterator<Item = &'a [Frame]>,
    min: usize,
    max: usize,
) -> Vec<usize> {
    let stacks: Vec<Vec<String>> = stacks
        .map(|s| {
            plumbing::from_label(s)
                .iter()
                .take(max)
                .map(|f| frame(f, Style::Short))
                .collect()
        })
        .collect();
    (0..stacks.len())
        .map(|i| {
            (min..=max)
                .find(|&d| {
                    let mine = &stacks[i][..stacks[i].len().min(d)];
                    mine.len() < d
                        || stacks
                            .iter()
                            .enumerate()
                            .all(|(j, other)| j == i || other[..other.len().min(d)] != *mine)
                })
                .unwrap_or(max)
        })
        .collect()
}

/// A site's chain: path → syscalls → faults → pages → slab objects.
pub fn chain(site: &SiteReport) -> String {
    let p = &site.paths;
    let c = &site.caused;
    let mut served: Vec<String> = Vec::new();
    for (bytes, name) in [
        (p.brk_bytes, "brk"),
        (p.mmap_bytes, "mmap"),
        (p.thread_arena_bytes, "thread arena"),
        (p.other_bytes, "other"),
    ] {
        if bytes > 0 {
            served.push(format!("{name} {}", human_bytes(bytes)));
        }
    }
    let mut chain = format!("{} ({})", site.path, served.join(", "));
    let mut calls: Vec<String> = Vec::new();
    if c.brk_calls > 0 {
        calls.push(format!(
            "{} brk +{}",
            c.brk_calls,
            human_bytes(c.brk_grow_bytes)
        ));
    }
    if c.mmap_calls > 0 {
        calls.push(format!(
            "{} mmap {}",
            c.mmap_calls,
            human_bytes(c.mmap_bytes)
        ));
    }
    if c.munmap_calls > 0 {
        calls.push(format!("{} munmap", c.munmap_calls));
    }
    if c.mprotect_calls > 0 {
        calls.push(format!("{} mprotect", c.mprotect_calls));
    }
    if !calls.is_empty() {
        chain.push_str(&format!(" -> {}", calls.join(", ")));
    }
    chain.push_str(&format!(
        " -> {} -> {}, {}; {} resident",
        count(c.page_faults, "fault", "faults"),
        count(p.buddy_pages, "page", "pages"),
        count(p.slab_objects, "slab object", "slab objects"),
        human_bytes(p.resident_bytes)
    ));
    chain
}

/// What to say of the processes `pid` had started before tracer attached (`pids`, at least
/// one): they are not traced.
pub fn children_at_attach(pid: u32, pids: &[u32]) -> String {
    const LISTED: usize = 8;
    let mut listed: Vec<String> = pids.iter().take(LISTED).map(u32::to_string).collect();
    if pids.len() > LISTED {
        listed.push(format!("and {} more", pids.len() - LISTED));
    }
    let (n, them) = match pids.len() {
        1 => ("1 process".to_string(), "it is"),
        n => (format!("{n} processes"), "they are"),
    };
    format!(
        "pid {pid} had started {n} before tracer attached (pid {}): {them} not traced (--follow \
         follows the processes created while tracing; trace one of these with its own --pid)",
        listed.join(", ")
    )
}

/// How a traced process's run ended: said the same way in every report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Status(i32),
    Signal(i32),
    /// It exited; how was not seen.
    Exited,
    /// Still running when `--duration` ended the run.
    Duration,
    /// Still running: a snapshot taken while tracing.
    Snapshot,
    /// Still running when tracing was interrupted.
    Interrupted,
    /// A process of a `--follow` run still running when the run ended.
    Running,
    /// The kernel's OOM killer had just chosen it (an OOM report, written at that moment).
    OomVictim,
}

impl Outcome {
    /// The traced process's, from the run's end.
    pub fn of_target(t: &super::TargetInfo) -> Outcome {
        match (t.exit_code, t.signal, t.ended_by.as_str()) {
            (Some(code), ..) => Outcome::Status(code),
            (None, Some(sig), _) => Outcome::Signal(sig),
            (_, _, "exited") => Outcome::Exited,
            (_, _, "duration") => Outcome::Duration,
            (_, _, "running") => Outcome::Snapshot,
            (_, _, crate::summary::oom::ENDED_BY) => Outcome::OomVictim,
            _ => Outcome::Interrupted,
        }
    }

    /// A process of a `--follow` run, from what was seen of its exit.
    pub fn of_process(p: &super::ProcessReport) -> Outcome {
        match (p.exit_code, p.signal, p.ended_ms) {
            (Some(code), ..) => Outcome::Status(code),
            (None, Some(sig), _) => Outcome::Signal(sig),
            (None, None, Some(_)) => Outcome::Exited,
            (None, None, None) => Outcome::Running,
        }
    }

    /// In words: `exited with status 3`, `killed by signal 9`, ...
    pub fn phrase(self) -> String {
        match self {
            Outcome::Status(code) => format!("exited with status {code}"),
            Outcome::Signal(sig) => format!("killed by signal {sig}"),
            Outcome::Exited => "exited".into(),
            Outcome::Duration => "traced for the requested duration".into(),
            Outcome::Snapshot => "still running (a snapshot)".into(),
            Outcome::Interrupted => "traced until interrupted".into(),
            Outcome::Running => "still running at the end".into(),
            Outcome::OomVictim => {
                "chosen by the kernel's OOM killer (the report of that moment)".into()
            }
        }
    }

    /// For a table column: `status 3`, `signal 9`, `exited`, `running`.
    pub fn short(self) -> String {
        match self {
            Outcome::Status(code) => format!("status {code}"),
            Outcome::Signal(sig) => format!("signal {sig}"),
            Outcome::Exited => "exited".into(),
            _ => "running".into(),
        }
    }
}

/// A string from the traced program (a symbol, file, thread name or argument) made safe to
/// show: control characters (C0, DEL, C1) become visible escapes such as `\x1b` and `\n`, and
/// so do the Unicode bidirectional overrides that can make text read other than it is. What
/// remains is plain text for a terminal, and valid character data for XML once its markup
/// characters are escaped.
pub fn visible(s: &str) -> std::borrow::Cow<'_, str> {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(hidden) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hidden(c) && (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if hidden(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `n` bytes for people: `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    // What would read `1024.0 KiB` reads `1.0 MiB`.
    while (value >= 1024.0 || (unit > 0 && value >= 1023.95)) && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration for people: `12.5 ms`, `35.8 s`, `4 min 12 s`, `2 h 5 min`.
pub fn human_duration(ms: f64) -> String {
    let s = ms / 1e3;
    if ms < 1e3 {
        format!("{ms:.1} ms")
    } else if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{} min {} s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{} h {} min",
            (s / 3600.0) as u64,
            (s % 3600.0 / 60.0) as u64
        )
    }
}

/// `n` things, singular for one: `1 block`, `2 blocks`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(200_704), "196.0 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        // Never `1024.0 KiB`.
        assert_eq!(human_bytes(1_048_570), "1.0 MiB");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1_048_000), "1023.4 KiB");
    }

    /// Chart labels: twelve sites behind one stripped wrapper are twelve labels, the
    /// allocator's plumbing (as marked, `--wrapper` included) is skipped, and a label never
    /// passes its width.
    #[test]
    fn chart_labels_tell_sites_apart() {
        let at = |addr: u64| Frame {
            module: Some("/usr/lib/libsqlite3.so.0".into()),
            offset: Some(addr),
            ..Frame::unknown(0x7f00_0000_0000 + addr)
        };
        let named = |function: &str, plumbing: bool| Frame {
            function: Some(function.into()),
            plumbing,
            ..Frame::unknown(0x1000)
        };
        let mut stacks: Vec<Vec<Frame>> = (0..12)
            .map(|i| vec![at(0xa7504), named("sqlite3Malloc", false), at(0x1000 + i)])
            .collect();
        stacks.push(vec![
            named("std::__new_allocator<double>::allocate", true),
            named("app::grow<double>", false),
        ]);
        let long = format!("ns::{}::build", "Template<".repeat(20));
        stacks.push(vec![named(&long, false), named("main", false)]);
        let slices: Vec<&[Frame]> = stacks.iter().map(Vec::as_slice).collect();
        let labels = sites(&slices, 40);
        let unique: std::collections::HashSet<&String> = labels.iter().collect();
        assert_eq!(unique.len(), labels.len(), "{labels:#?}");
        assert_eq!(labels[0], "libsqli…0xa7504 <- … <- libsqli…0+0x1000");
        assert_eq!(labels[12], "app::grow<double>");
        // Two lines of one function are two labels.
        let line = |n: u32| Frame {
            file: Some("/src/demo.c".into()),
            line: Some(n),
            ..named("growing_buffer", false)
        };
        let (a, b) = (vec![line(55)], vec![line(59)]);
        assert_eq!(
            sites(&[&a[..], &b[..]], 40),
            ["growing_buffer (demo.c:55)", "growing_buffer (demo.c:59)"]
        );
        assert!(
            labels.iter().all(|l| l.chars().count() <= 40),
            "{labels:#?}"
        );
        assert!(labels[13].starts_with("ns::Template<") && labels[13].contains('…'));
    }

    #[test]
    fn durations_and_counts_for_people() {
        assert_eq!(human_duration(12.5), "12.5 ms");
        assert_eq!(human_duration(35_785.1), "35.8 s");
        assert_eq!(human_duration(252_000.0), "4 min 12 s");
        assert_eq!(human_duration(7_500_000.0), "2 h 5 min");
        assert_eq!(count(1, "block", "blocks"), "1 block");
        assert_eq!(count(2, "block", "blocks"), "2 blocks");
    }

    #[test]
    fn unresolved_frames_are_named_by_where_they_lie() {
        let mut f = Frame::unknown(0x7f00_0004_a2f1);
        assert_eq!(name(&f), "0x7f000004a2f1");
        f.module = Some("/usr/lib/x86_64-linux-gnu/libsqlite3.so.0".into());
        f.offset = Some(0x4a2f1);
        assert_eq!(name(&f), "libsqlite3.so.0+0x4a2f1");
        f.function = Some("sqlite3_malloc".into());
        assert_eq!(name(&f), "sqlite3_malloc");
    }
}
