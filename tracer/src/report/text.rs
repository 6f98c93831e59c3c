//! The terminal summary.

use std::io::{self, Write};

use crate::summary::{
    Summary, human_bytes,
    label::{self, Outcome},
    leak_check::{CheckOutcome, LeakKind},
    user::{LeakReport, UserSummary},
    visible,
};

/// The summary for a person, fitted to the terminal's width (see [`fit`](super::fit)).
pub fn render(s: &Summary, out: &mut dyn Write) -> super::Result<()> {
    let mut text = Vec::new();
    write(s, &mut text)?;
    let fitted = super::fit::fit(&String::from_utf8_lossy(&text), super::fit::width());
    Ok(out.write_all(fitted.as_bytes())?)
}

fn write(s: &Summary, mut out: impl Write) -> io::Result<()> {
    if let Some(system) = &s.system {
        writeln!(
            out,
            "tracer: every process on the machine, {}; counted for {}",
            Outcome::of_target(&s.target).phrase(),
            label::human_duration(s.duration_ms)
        )?;
        for line in crate::summary::system::lines(system, s.text_sites.unwrap_or(TOP)) {
            writeln!(out, "{line}")?;
        }
        return Ok(());
    }
    let t = &s.target;
    let command = if t.command.is_empty() {
        String::from("?")
    } else {
        visible(&t.command.join(" ")).into_owned()
    };
    let outcome = Outcome::of_target(t).phrase();
    let inner = t
        .namespace_pid
        .map(|p| format!(", pid {p} in its namespace"))
        .unwrap_or_default();
    writeln!(
        out,
        "tracer: pid {}{inner} ({command}) {outcome}; traced {}",
        t.pid,
        label::human_duration(s.duration_ms)
    )?;
    let e = &s.events;
    write!(
        out,
        "events: {} received, {} dropped",
        e.received, e.dropped
    )?;
    writeln!(out)?;
    for note in &s.notes {
        writeln!(out, "{}: {}", note.level.name(), note.text)?;
    }
    if !s.images.is_empty() {
        let steps: Vec<String> = s
            .images
            .iter()
            .map(|i| {
                let command = visible(&i.command.join(" ")).into_owned();
                match i.released() {
                    Some(released) => format!("{command} ({released})"),
                    None => command,
                }
            })
            .collect();
        writeln!(out, "programs: {}", steps.join(" -> "))?;
    }
    if let Some(c) = &s.cgroup {
        writeln!(out)?;
        for line in crate::summary::cgroup::lines(c) {
            writeln!(out, "{line}")?;
        }
    }
    if let Some(v) = s.oom.as_ref().filter(|v| !v.others.is_empty()) {
        writeln!(out, "beside it when it was chosen:")?;
        for line in v.other_lines() {
            writeln!(out, "  {line}")?;
        }
    }
    render_processes(s, &mut out)?;
    if !s.findings.is_empty() {
        writeln!(out, "\nfindings (most at stake first):")?;
        for f in &s.findings {
            let pid = f.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            writeln!(
                out,
                "  [{}] {}{pid}: {}",
                f.severity,
                f.kind,
                visible(&f.message)
            )?;
            if let Some(also) = label::also(f) {
                writeln!(out, "      also: {also}")?;
            }
            writeln!(out, "      what to do: {}", f.suggestion)?;
        }
    }
    // What matters first: the sites (or the callers of `--mode kernel`), then where the
    // memory came from, the allocator's calls, the syscalls and the kernel's detail.
    let top = s.text_sites.unwrap_or(TOP);
    if s.mode == "kernel" {
        render_callers(s, top, &mut out)?;
    } else {
        render_sites(&s.user, top, &mut out)?;
    }
    // The paths table joins allocations to the kernel's work: without allocator calls
    // (`--mode kernel`) it would be all zeros beside the kernel's own counts below.
    if s.mode != "kernel" {
        render_paths(s, &mut out)?;
        render_allocator(&s.user, &mut out)?;
    }
    render_syscalls(s, &mut out)?;
    render_kernel(s, &mut out)?;
    render_costs(s, &mut out)
}

/// `--costs`: the probes' run time, the stack walks' and tracer's own CPU time.
fn render_costs(s: &Summary, out: &mut impl Write) -> io::Result<()> {
    let Some(c) = &s.costs else {
        return Ok(());
    };
    let runs = c.probes.iter().fold(0u64, |a, p| a.saturating_add(p.runs));
    writeln!(
        out,
        "\ncosts: the probes ran {runs} times for {} in all; tracer's own CPU {}",
        label::human_duration(c.probes_ms),
        label::human_duration(c.tracer_cpu_ms)
    )?;
    if let Some(u) = &c.unwinder {
        writeln!(
            out,
            "  stack walks: {} of {:.1} frames on average, {:.1} ns a frame ({:.0} ns a walk, \
             {:.0}% of frames' rows from the cache), {} in all",
            u.walks,
            u.frames as f64 / u.walks.max(1) as f64,
            u.ns_per_frame,
            u.ns_per_walk,
            u.row_cache_hits * 100.0,
            label::human_duration(u.ms)
        )?;
    }
    for p in c.probes.iter().take(TOP) {
        writeln!(
            out,
            "  {:<28} {:>10} runs {:>8.0} ns a run {:>10}",
            p.program,
            p.runs,
            p.ns_per_run,
            label::human_duration(p.total_ms)
        )?;
    }
    Ok(())
}

fn render_syscalls(s: &Summary, out: &mut impl Write) -> io::Result<()> {
    let sc = &s.syscalls;
    writeln!(out)?;
    writeln!(
        out,
        "{:<8} {:>8} {:>7}  bytes",
        "syscall", "calls", "failed"
    )?;
    let (b, m, u, r) = (&sc.brk, &sc.mmap, &sc.munmap, &sc.mremap);
    let rows = [
        (
            "brk",
            b.calls,
            b.failed,
            format!(
                "grew {}, shrank {} ({})",
                human_bytes(b.grow_bytes),
                human_bytes(b.shrink_bytes),
                label::count(b.queries, "query", "queries")
            ),
        ),
        (
            "mmap",
            m.calls,
            m.failed,
            format!(
                "{} mapped: anonymous {} in {}, file {} in {}; private {}, shared {}",
                human_bytes(m.bytes),
                human_bytes(m.anon_bytes),
                label::count(m.anon_calls, "call", "calls"),
                human_bytes(m.file_bytes),
                label::count(m.file_calls, "call", "calls"),
                m.private_calls,
                m.shared_calls
            ),
        ),
        (
            "munmap",
            u.calls,
            u.failed,
            format!("{} unmapped", human_bytes(u.bytes)),
        ),
        (
            "mremap",
            r.calls,
            r.failed,
            format!(
                "{} -> {}",
                human_bytes(r.old_bytes),
                human_bytes(r.new_bytes)
            ),
        ),
        (
            "mprotect",
            sc.mprotect.calls,
            sc.mprotect.failed,
            format!(
                "{} committed (made writable)",
                human_bytes(sc.mprotect.commit_bytes)
            ),
        ),
        (
            "madvise",
            sc.madvise.calls,
            sc.madvise.failed,
            format!(
                "{} of address space handed back (DONTNEED), {} (FREE); {} of it was resident",
                human_bytes(sc.madvise.dontneed_bytes),
                human_bytes(sc.madvise.free_bytes),
                human_bytes(sc.madvise.resident_bytes)
            ),
        ),
    ];
    // Rows of zeros say nothing: only the syscalls that were made.
    for (name, calls, failed, what) in rows.iter().filter(|r| r.1 > 0 || r.2 > 0) {
        writeln!(out, "{name:<8} {calls:>8} {failed:>7}  {what}")?;
    }
    Ok(())
}

/// `--follow`: every process, most bytes allocated first; everything after is their total.
fn render_processes(s: &Summary, out: &mut impl Write) -> io::Result<()> {
    if s.processes.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\nprocesses: {} traced; the figures below are their totals",
        s.processes.len()
    )?;
    writeln!(
        out,
        "  {:>8} {:>8} {:>9} {:>10} {:>10} {:>10}  {:<10} command",
        "pid", "ppid", "allocs", "bytes", "peak live", "leaked", "ended"
    )?;
    let order = s.processes_by_bytes();
    for p in order.iter().take(TOP * 2) {
        let u = &p.summary.user;
        let ended = Outcome::of_process(p).short();
        writeln!(
            out,
            "  {:>8} {:>8} {:>9} {:>10} {:>10} {:>10}  {:<10} {}",
            p.pid,
            p.ppid.map_or("-".into(), |p| p.to_string()),
            u.total_calls(),
            human_bytes(u.total_bytes()),
            human_bytes(u.peak_live_bytes),
            human_bytes(u.leaked_bytes),
            ended,
            visible(&p.command.join(" "))
        )?;
    }
    if order.len() > TOP * 2 {
        writeln!(
            out,
            "  ... and {} more (see the JSON)",
            order.len() - TOP * 2
        )?;
    }
    Ok(())
}

/// The four paths side by side: what the allocator's bytes came from, and what the kernel
/// made for the process's call sites.
fn render_paths(s: &Summary, out: &mut impl Write) -> io::Result<()> {
    let p = &s.paths;
    writeln!(out)?;
    writeln!(
        out,
        "{:<13} {:>12} {:>12} {:>13} {:>12} {:>12}",
        "memory path", "brk heap", "mmap", "thread arena", "buddy", "slab"
    )?;
    writeln!(
        out,
        "{:<13} {:>12} {:>12} {:>13} {:>12} {:>12}",
        "served",
        human_bytes(p.brk.bytes),
        human_bytes(p.mmap.bytes),
        human_bytes(p.thread_arena.bytes),
        format!("{} pages", p.buddy.pages),
        format!("{} objs", p.slab.objects),
    )?;
    writeln!(
        out,
        "{:<13} {:>12} {:>12} {:>13} {:>12} {:>12}",
        "call sites", p.brk.sites, p.mmap.sites, p.thread_arena.sites, p.buddy.sites, p.slab.sites
    )
}

/// `name count, name count, ...` for the largest entries of a map.
fn top<K: std::fmt::Display>(entries: impl Iterator<Item = (K, u64)>, n: usize) -> String {
    let mut v: Vec<(K, u64)> = entries.filter(|(_, c)| *c > 0).collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.1));
    v.iter()
        .take(n)
        .map(|(k, c)| format!("{} {c}", visible(&k.to_string())))
        .collect::<Vec<_>>()
        .join(", ")
}

fn render_kernel(s: &Summary, out: &mut impl Write) -> io::Result<()> {
    let k = &s.kernel;
    let b = &k.buddy;
    writeln!(out)?;
    writeln!(
        out,
        "buddy    {} blocks, {} pages ({}); {} freed, {} pages live at the end",
        b.allocs,
        b.pages,
        human_bytes(b.bytes),
        b.frees,
        b.live_pages_at_end
    )?;
    if b.allocs > 0 {
        writeln!(
            out,
            "         pages by GFP: {}",
            top(b.by_gfp.iter().map(|(k, v)| (k, *v)), 4)
        )?;
        writeln!(
            out,
            "         blocks by order: {}",
            top(
                b.by_order.iter().map(|(k, v)| (format!("order-{k}"), *v)),
                4
            )
        )?;
    }
    let sl = &k.slab;
    writeln!(
        out,
        "slab     {} objects, {} ({} asked for); {} freed, {} live at the end",
        sl.allocs,
        human_bytes(sl.bytes),
        human_bytes(sl.bytes_req),
        sl.frees,
        sl.live_at_end
    )?;
    if sl.allocs > 0 {
        writeln!(
            out,
            "         top caches: {}",
            top(
                sl.by_cache
                    .iter()
                    .map(|(name, v)| (visible(&s.kernel.cache_name(name)).into_owned(), v.allocs)),
                5
            )
        )?;
    }
    writeln!(
        out,
        "faults   {} user page faults: {}",
        k.faults.user,
        top(k.faults.by_region.iter().map(|(k, v)| (k, *v)), 6)
    )?;
    if !k.stacks.is_empty() {
        writeln!(out, "\ntop kernel allocation paths:")?;
        for st in k.stacks.iter().take(5) {
            writeln!(
                out,
                "  {:>6} pages {:>6} objects  {}",
                st.pages,
                st.slab_objects,
                st.stack
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" <- ")
            )?;
        }
    }
    Ok(())
}

/// How many sites and leaks the terminal shows (the JSON has more).
const TOP: usize = 10;

/// The memory syscalls and faults by the stack that made them.
fn render_callers(s: &Summary, top: usize, out: &mut impl Write) -> io::Result<()> {
    writeln!(out)?;
    if s.callers.is_empty() {
        return writeln!(out, "no memory syscalls or faults with a stack");
    }
    writeln!(
        out,
        "top callers of memory syscalls and faults ({} stacks):",
        s.callers.len()
    )?;
    for c in s.callers.iter().take(top) {
        let st = &c.stats;
        let mut what: Vec<String> = Vec::new();
        if st.brk_calls > 0 {
            let mut brk = format!(
                "{} +{}",
                label::count(st.brk_calls, "brk", "brk"),
                human_bytes(st.brk_grow_bytes)
            );
            if st.brk_shrink_bytes > 0 {
                brk.push_str(&format!(" -{}", human_bytes(st.brk_shrink_bytes)));
            }
            what.push(brk);
        }
        for (calls, bytes, name) in [
            (st.mmap_calls, st.mmap_bytes, "mmap"),
            (st.munmap_calls, st.munmap_bytes, "munmap"),
            (st.mprotect_calls, st.mprotect_bytes, "mprotect"),
            (st.madvise_calls, st.madvise_bytes, "madvise"),
        ] {
            if calls > 0 {
                what.push(format!("{calls} {name} {}", human_bytes(bytes)));
            }
        }
        if st.mremap_calls > 0 {
            what.push(format!("{} mremap", st.mremap_calls));
        }
        if st.page_faults > 0 {
            what.push(label::count(st.page_faults, "fault", "faults"));
        }
        writeln!(
            out,
            "  {:>10}  {}",
            human_bytes(st.requested_bytes()),
            what.join(", ")
        )?;
        writeln!(out, "{ROW}{}", label::stack(&c.stack, 5))?;
    }
    Ok(())
}

/// `top`: how many sites, leaks and suspects to list.
/// The allocator's calls: how many of each function, what failed, live and peak.
fn render_allocator(u: &UserSummary, out: &mut impl Write) -> io::Result<()> {
    writeln!(out)?;
    if u.allocator_files.is_empty() {
        return writeln!(
            out,
            "allocator: no malloc family found in the process; not traced"
        );
    }
    let links = if u.uprobe_links.is_empty() {
        String::new()
    } else {
        format!("; {} links", visible(&u.uprobe_links))
    };
    writeln!(
        out,
        "allocator calls ({}{links})",
        visible(&u.allocator_files.join(", "))
    )?;
    if let Some(s) = &u.sampling {
        writeln!(
            out,
            "  sampled: {} of {} calls, one per {} allocated on average; counts and bytes \
             below are estimates (the JSON has each one's 95% error)",
            s.sampled_calls,
            s.sampled_calls.saturating_add(s.unsampled_calls),
            human_bytes(s.mean_bytes),
        )?;
    }
    for (name, f) in u.functions().iter().filter(|(_, f)| f.calls > 0) {
        let name = if *name == "operator_new" {
            "operator new"
        } else {
            name
        };
        writeln!(
            out,
            "  {name:<15} {:>10} calls  {:>10}",
            f.calls,
            human_bytes(f.bytes)
        )?;
    }
    for (name, f) in [("free", u.free), ("operator delete", u.operator_delete)] {
        if f.calls > 0 {
            writeln!(
                out,
                "  {name:<15} {:>10} calls  ({} of blocks not seen allocated, {} of NULL)",
                f.calls, f.unknown, f.null
            )?;
        }
    }
    writeln!(
        out,
        "  {} failed; live at the end {}, peak {}",
        u.failed,
        human_bytes(u.live_bytes_at_end),
        human_bytes(u.peak_live_bytes)
    )
}

/// Where a row's stack and chain start, under its numbers.
const ROW: &str = "      ";

/// As many frames as it takes to tell two listed sites apart: two sites never read alike.
const MAX_FRAMES_SHOWN: usize = 64;

/// The call sites with most bytes, the leaks and the leak suspects: `top` of each.
fn render_sites(u: &UserSummary, top: usize, out: &mut impl Write) -> io::Result<()> {
    if !u.sites.is_empty() {
        writeln!(out, "\ntop call sites by bytes ({} sites):", u.site_count)?;
        let listed = &u.sites[..u.sites.len().min(top)];
        let depths =
            label::telling_depths(listed.iter().map(|s| &s.stack[..]), 3, MAX_FRAMES_SHOWN);
        for (site, depth) in listed.iter().zip(depths) {
            let st = &site.stats;
            writeln!(
                out,
                "  {:>10} in {}, {} live",
                human_bytes(st.bytes),
                label::count(st.allocs, "alloc", "allocs"),
                human_bytes(st.live_bytes),
            )?;
            let cut = match (site.marks.stack_cut, site.marks.stack_lost) {
                (true, _) => "  [stack cut]",
                (_, true) => "  [stack lost]",
                _ => "",
            };
            writeln!(out, "{ROW}{}{cut}", label::stack(&site.stack, depth))?;
            writeln!(out, "{ROW}-> {}", label::chain(site))?;
        }
    }
    render_leaks(u, top, out)?;
    if !u.leak_suspects.is_empty() {
        writeln!(
            out,
            "\nleak suspects (live bytes kept growing, old blocks still alive):"
        )?;
        for s in u.leak_suspects.iter().take(top) {
            writeln!(
                out,
                "  {:>10} live in {}, {}; ages {}–{} (median {})",
                human_bytes(s.live_bytes),
                label::count(s.live_blocks, "block", "blocks"),
                label::growth(s),
                label::human_duration(s.age_ms.min),
                label::human_duration(s.age_ms.max),
                label::human_duration(s.age_ms.median),
            )?;
            writeln!(out, "{ROW}{}", label::stack(&s.stack, 3))?;
        }
    }
    Ok(())
}

/// The leaks: with a leak check, its categories in a line and the lost (definitely,
/// indirectly, possibly) listed, the still reachable only summed; without, every block live at
/// the end.
fn render_leaks(u: &UserSummary, top: usize, out: &mut impl Write) -> io::Result<()> {
    let check = u.leak_check.as_ref();
    let classified = check.is_some_and(|c| c.outcome == Some(CheckOutcome::Done));
    if let Some(c) = check {
        writeln!(out, "\n{}:", label::leak_check(c))?;
        if classified {
            writeln!(out, "  {}", label::leak_totals(c))?;
        }
        for s in &u.suppressed {
            writeln!(
                out,
                "  suppressed by {}: {} in {}",
                visible(&s.rule),
                human_bytes(s.bytes),
                label::count(s.blocks, "block", "blocks")
            )?;
        }
    }
    let listed: Vec<&LeakReport> = u
        .leaks
        .iter()
        .filter(|l| l.kind != Some(LeakKind::Reachable) && l.suppressed_by.is_none())
        .take(top)
        .collect();
    if listed.is_empty() {
        return Ok(());
    }
    let title = if classified {
        "leaks (lost: no pointer to them is left, or only into their middle)"
    } else {
        "leaks (allocated and not freed by the end)"
    };
    writeln!(out, "\n{title}:")?;
    let depths = label::telling_depths(listed.iter().map(|l| &l.stack[..]), 3, MAX_FRAMES_SHOWN);
    for (leak, depth) in listed.iter().zip(depths) {
        let kind = leak
            .kind
            .map_or(String::new(), |k| format!("{}: ", label::leak_kind(k)));
        writeln!(
            out,
            "  {kind}{:>10} in {}, the oldest {} old",
            human_bytes(leak.bytes),
            label::count(leak.count, "block", "blocks"),
            label::human_duration(leak.oldest_age_ms),
        )?;
        writeln!(out, "{ROW}{}", label::stack(&leak.stack, depth))?;
        writeln!(
            out,
            "{ROW}-> {}: {} resident, {} never touched",
            leak.path,
            human_bytes(leak.resident_bytes),
            human_bytes(leak.virtual_bytes)
        )?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "text_tests.rs"]
mod tests;
