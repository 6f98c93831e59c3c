//! One self-contained HTML page: works offline, no network, every target string escaped.
//!
//! Charts and flamegraphs are embedded as `data:` SVG documents (flamegraphs in `<object>` so
//! their zoom and search work; charts as images), so nothing in them can reach the page.

use std::io::Write;

use base64::{Engine as _, engine::general_purpose::STANDARD};

use super::{Result, charts, flame, flame::FLAMEGRAPHS};
use crate::summary::{
    Summary, human_bytes,
    label::{self, Frame, Outcome},
    notes::Level,
};

/// Escapes text for HTML element content and quoted attribute values; control characters
/// become visible escapes first (see [`super::visible`]).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in super::visible(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header,section{max-width:1200px;margin:0 auto;padding:12px 24px}
header{background:#20232a;color:#eee;max-width:none}
header h1{font-size:20px;margin:4px 0} header code{color:#ffd866}
h2{font-size:17px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:20px}
.note{background:#eef3fb;border:1px solid #b8c8e0;padding:8px;border-radius:4px}
.warn{background:#fff3cd;border:1px solid #e0c060;padding:8px;border-radius:4px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{border:1px solid #e2e2e2;padding:4px 6px;text-align:right;vertical-align:top}
th{background:#f0f0f0;cursor:pointer;user-select:none;position:sticky;top:0}
th.sorted-asc::after{content:' \\25b2'} th.sorted-desc::after{content:' \\25bc'}
td.l,th.l{text-align:left} details summary{cursor:pointer} .chain{color:#555;margin:4px 0}
td:not(.l),th:not(.l){white-space:nowrap} td.l{overflow-wrap:anywhere;min-width:14em}
.wide{overflow-x:auto} input.filter{margin:4px 0 8px;padding:4px 6px;width:20em;max-width:100%}
@media (max-width:900px){header,section{padding:8px 10px}}
ol.stack{margin:4px 0;padding-left:22px;font-family:ui-monospace,monospace;font-size:12px}
img.chart,object.flame{width:100%;background:#fff;border:1px solid #ddd;margin:6px 0}
object.flame{height:520px}
";

const SORT_SCRIPT: &str = "
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      // A number column sorts largest first on the first click; text A to Z.
      var asc = th.classList.contains('sorted-desc') ? true
        : th.classList.contains('sorted-asc') ? false : th.classList.contains('l');
      table.querySelectorAll('th').forEach(function (h) { h.classList.remove('sorted-asc', 'sorted-desc'); });
      th.classList.add(asc ? 'sorted-asc' : 'sorted-desc');
      // Each row's key read once; the rows put back in one move.
      var keyed = rows.map(function (r) {
        var v = r.cells[col].getAttribute('data-v') || r.cells[col].textContent;
        return { r: r, v: v, n: parseFloat(v) };
      });
      keyed.sort(function (a, b) {
        var c = (!isNaN(a.n) && !isNaN(b.n)) ? a.n - b.n : a.v.localeCompare(b.v);
        return asc ? c : -c;
      });
      var sorted = document.createDocumentFragment();
      keyed.forEach(function (k) { sorted.appendChild(k.r); });
      body.appendChild(sorted);
    });
  });
});
document.querySelectorAll('input.filter').forEach(function (input) {
  var table = document.getElementById(input.getAttribute('data-table'));
  input.addEventListener('input', function () {
    var want = input.value.toLowerCase();
    Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
      r.hidden = want !== '' && r.textContent.toLowerCase().indexOf(want) < 0
        && stackText(r).indexOf(want) < 0;
    });
  });
});
";

/// The process selector: shows the chosen view, hides the others.
const VIEW_SCRIPT: &str = "
document.getElementById('process-select').addEventListener('change', function (e) {
  document.querySelectorAll('div.view').forEach(function (v) { v.hidden = v.id !== e.target.value; });
});
";

fn svg_data(svg: &[u8]) -> String {
    format!("data:image/svg+xml;base64,{}", STANDARD.encode(svg))
}

fn stack_list(stack: &[Frame]) -> String {
    super::html_stacks::list(stack)
}

/// The memory syscalls and faults by the stack that made them.
fn render_callers(s: &Summary, out: &mut impl Write) -> Result<()> {
    writeln!(
        out,
        "<section id=\"callers\"><h2>Memory syscalls and faults by caller ({} stacks)</h2>\
         <div class=\"wide\"><table class=\"sortable\"><thead><tr><th class=\"l\">stack</th><th>requested</th>\
         <th>brk calls</th><th>brk grew</th><th>mmap calls</th><th>mmap bytes</th>\
         <th>munmap calls</th><th>mprotect calls</th><th>madvise calls</th><th>page faults</th>\
         </tr></thead><tbody>",
        s.callers.len()
    )?;
    for c in &s.callers {
        let st = &c.stats;
        let requested = st.requested_bytes();
        writeln!(
            out,
            "<tr><td class=\"l\"><details><summary>{}</summary>{}</details></td>{}{}{}{}{}{}{}{}{}</tr>",
            esc(&label::stack(&c.stack, 3)),
            stack_list(&c.stack),
            num(requested, human_bytes(requested)),
            num(st.brk_calls, st.brk_calls.to_string()),
            num(st.brk_grow_bytes, human_bytes(st.brk_grow_bytes)),
            num(st.mmap_calls, st.mmap_calls.to_string()),
            num(st.mmap_bytes, human_bytes(st.mmap_bytes)),
            num(st.munmap_calls, st.munmap_calls.to_string()),
            num(st.mprotect_calls, st.mprotect_calls.to_string()),
            num(st.madvise_calls, st.madvise_calls.to_string()),
            num(st.page_faults, st.page_faults.to_string()),
        )?;
    }
    writeln!(out, "</tbody></table></div></section>")?;
    Ok(())
}

/// A box that shows only the rows of table `table` holding what is typed (any column).
fn filter_box(table: &str, what: &str) -> String {
    format!(
        "<input type=\"search\" class=\"filter\" data-table=\"{table}\" \
         placeholder=\"filter {what}: a function, file or path\" aria-label=\"filter {what}\">"
    )
}

/// A numeric cell: shown for people, sorted by the number.
fn num(v: u64, shown: String) -> String {
    format!("<td data-v=\"{v}\">{}</td>", esc(&shown))
}

/// The page of the summary as listed ([`Summary::listed`]).
pub fn render(s: &Summary, mut out: &mut dyn Write) -> Result<()> {
    let s = &*s.listed();
    let t = &s.target;
    let command = esc(&t.command.join(" "));
    super::html_stacks::begin();
    write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>tracer: {command}</title><style>{STYLE}</style></head><body>\n"
    )?;
    writeln!(
        out,
        "<header><h1>Memory of <code>{command}</code></h1><p>pid {} {}; traced {}; \
         {} events received, {} dropped</p></header>",
        t.pid,
        Outcome::of_target(t).phrase(),
        label::human_duration(s.duration_ms),
        s.events.received,
        s.events.dropped
    )?;
    if s.processes.is_empty() {
        body(s, &mut out)?;
    } else {
        processes(s, &mut out)?;
    }
    writeln!(
        out,
        "{}<script>{SORT_SCRIPT}</script>\n</body></html>",
        super::html_stacks::end()
    )?;
    Ok(())
}

/// The most processes given a view of their own in the page (the largest by bytes); the
/// table lists every one.
const MAX_PROCESS_VIEWS: usize = 32;

/// `--follow`: a table of the processes, a selector, the totals' view and one per process
/// (each a whole report; ids prefixed by `p<pid>-` so that they stay unique).
fn processes(s: &Summary, out: &mut impl Write) -> Result<()> {
    let order = s.processes_by_bytes();
    writeln!(
        out,
        "<section id=\"processes\"><h2>Processes ({} traced)</h2>\
         <p><label>Show <select id=\"process-select\"><option value=\"view-all\">all {} \
         processes (totals)</option>",
        s.processes.len(),
        s.processes.len()
    )?;
    for p in order.iter().take(MAX_PROCESS_VIEWS) {
        writeln!(
            out,
            "<option value=\"view-p{}\">pid {}: {}</option>",
            p.pid,
            p.pid,
            esc(&p.command.join(" "))
        )?;
    }
    writeln!(
        out,
        "</select></label></p><div class=\"wide\"><table class=\"sortable\" id=\"process-table\"><thead><tr>\
         <th>pid</th><th>ppid</th><th>allocs</th><th>bytes</th><th>peak live</th>\
         <th>leaked</th><th class=\"l\">ended</th><th class=\"l\">command</th></tr></thead><tbody>"
    )?;
    for p in &order {
        let u = &p.summary.user;
        writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td>{}{}{}<td class=\"l\">{}</td>\
             <td class=\"l\"><code>{}</code></td></tr>",
            p.pid,
            p.ppid.map_or("-".into(), |p| p.to_string()),
            u.total_calls(),
            num(u.total_bytes(), human_bytes(u.total_bytes())),
            num(u.peak_live_bytes, human_bytes(u.peak_live_bytes)),
            num(u.leaked_bytes, human_bytes(u.leaked_bytes)),
            Outcome::of_process(p).phrase(),
            esc(&p.command.join(" "))
        )?;
    }
    writeln!(out, "</tbody></table></div></section>")?;
    writeln!(out, "<div class=\"view\" id=\"view-all\">")?;
    body(s, out)?;
    writeln!(out, "</div>")?;
    for p in order.iter().take(MAX_PROCESS_VIEWS) {
        let mut view = Vec::new();
        body(&p.summary, &mut view)?;
        let view = String::from_utf8(view)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        // Every id the body writes is `id="`: text in it is escaped, quotes included.
        let view = view.replace("id=\"", &format!("id=\"p{}-", p.pid));
        writeln!(
            out,
            "<div class=\"view\" id=\"view-p{}\" hidden>{view}</div>",
            p.pid
        )?;
    }
    writeln!(out, "<script>{VIEW_SCRIPT}</script>")?;
    Ok(())
}

/// Everything below the header: the report of one summary.
fn body(s: &Summary, out: &mut impl Write) -> Result<()> {
    if !s.images.is_empty() {
        let steps: Vec<String> = s
            .images
            .iter()
            .map(|i| {
                let live = i.released().map(|r| format!(" ({r})")).unwrap_or_default();
                format!("<code>{}</code>{live}", esc(&i.command.join(" ")))
            })
            .collect();
        writeln!(out, "<p>Programs run: {}</p>", steps.join(" → "))?;
    }
    if !s.notes.is_empty() {
        writeln!(out, "<section id=\"notes\">")?;
        for n in &s.notes {
            writeln!(
                out,
                "<p class=\"{}\">{}: {}</p>",
                if n.level == Level::Warning {
                    "warn"
                } else {
                    "note"
                },
                n.level.name(),
                esc(&n.text)
            )?;
        }
        writeln!(out, "</section>")?;
    }

    if !s.findings.is_empty() {
        writeln!(out, "<section id=\"findings\"><h2>Findings</h2><ol>")?;
        for f in &s.findings {
            writeln!(
                out,
                "<li class=\"finding {}\"><b>{}</b> <span class=\"sev\">{}</span>: {}{}\
                 <details><summary>what to do, and the evidence</summary>{}<pre>{}</pre>\
                 </details></li>",
                f.severity,
                f.kind,
                f.severity,
                esc(&f.message),
                label::also(f)
                    .map_or_else(String::new, |a| format!("<br><i>Also:</i> {}", esc(&a))),
                esc(&f.suggestion),
                esc(&serde_json::to_string_pretty(&f.evidence).unwrap_or_default()),
            )?;
        }
        writeln!(out, "</ol></section>")?;
    }

    let p = &s.paths;
    writeln!(
        out,
        "<section id=\"paths\"><h2>Where the memory came from</h2><div class=\"cards\">"
    )?;
    for (name, value, sites) in [
        ("brk heap", human_bytes(p.brk.bytes), p.brk.sites),
        ("mmap", human_bytes(p.mmap.bytes), p.mmap.sites),
        (
            "thread arenas",
            human_bytes(p.thread_arena.bytes),
            p.thread_arena.sites,
        ),
        (
            "buddy pages charged to sites",
            format!("{} pages", p.buddy.pages),
            p.buddy.sites,
        ),
        (
            "slab objects charged to sites",
            format!("{} objects", p.slab.objects),
            p.slab.sites,
        ),
    ] {
        writeln!(
            out,
            "<div class=\"card\" data-path=\"{name}\">{name}<b>{value}</b>{sites} call sites</div>"
        )?;
    }
    let k = &s.kernel;
    writeln!(
        out,
        "<div class=\"card\">the process in all<b>{} pages, {} slab objects</b>the kernel's \
         totals, charged to a site or not</div>",
        k.buddy.pages, k.slab.allocs
    )?;
    let u = &s.user;
    writeln!(
        out,
        "<div class=\"card\">live at the end<b>{}</b>peak {}</div></div></section>",
        human_bytes(u.live_bytes_at_end),
        human_bytes(u.peak_live_bytes)
    )?;

    writeln!(out, "<section id=\"charts\"><h2>Charts</h2>")?;
    for (stem, title, svg) in charts::all(s)? {
        writeln!(
            out,
            "<img class=\"chart\" id=\"chart-{stem}\" alt=\"{title}\" src=\"{}\">",
            svg_data(svg.as_bytes())
        )?;
    }
    writeln!(out, "</section>")?;

    if s.mode == "kernel" {
        writeln!(
            out,
            "<section id=\"mode\"><h2>Call sites</h2><p>Traced with <code>--mode kernel</code>: \
             no uprobes, so allocator calls are not seen, and there are no per-allocation sites \
             and no leaks. The call sites are those of the memory syscalls and page faults, \
             below.</p></section>"
        )?;
    }
    render_callers(s, out)?;

    writeln!(
        out,
        "<section id=\"sites\"><h2>Call sites ({} seen, {} listed)</h2>{}\
         <div class=\"wide\"><table class=\"sortable\" id=\"sites-table\"><thead><tr><th class=\"l\">site</th><th class=\"l\">path</th>\
         <th>allocs</th><th>bytes</th><th>frees</th><th>live</th><th>peak live</th>\
         <th>temporary</th><th>resident</th><th>buddy pages</th><th>slab objects</th></tr></thead><tbody>",
        u.site_count,
        u.sites.len(),
        filter_box("sites-table", "sites"),
    )?;
    for site in &u.sites {
        let st = &site.stats;
        writeln!(
            out,
            "<tr><td class=\"l\"><details><summary>{}</summary><div class=\"chain\">{}</div>{}</details></td>\
             <td class=\"l\">{}</td>{}{}{}{}{}{}{}{}{}</tr>",
            esc(&label::stack(&site.stack, 2)),
            esc(&label::chain(site)),
            stack_list(&site.stack),
            site.path,
            num(st.allocs, st.allocs.to_string()),
            num(st.bytes, human_bytes(st.bytes)),
            num(st.frees, st.frees.to_string()),
            num(st.live_bytes, human_bytes(st.live_bytes)),
            num(st.peak_live_bytes, human_bytes(st.peak_live_bytes)),
            num(st.temporary, st.temporary.to_string()),
            num(
                site.paths.resident_bytes,
                human_bytes(site.paths.resident_bytes)
            ),
            num(site.paths.buddy_pages, site.paths.buddy_pages.to_string()),
            num(site.paths.slab_objects, site.paths.slab_objects.to_string()),
        )?;
    }
    writeln!(out, "</tbody></table></div></section>")?;

    // With a leak check: its line, and the kind of each leak (lost first; still reachable
    // blocks last, kept on purpose or not, never leaks).
    let (title, check) = match &u.leak_check {
        Some(c) => (
            "Leaks: what the leak check found",
            format!(
                "<p>{}: {}</p>",
                esc(&label::leak_check(c)),
                esc(&label::leak_totals(c))
            ),
        ),
        None => ("Leaks: allocated and not freed by the end", String::new()),
    };
    writeln!(
        out,
        "<section id=\"leaks\"><h2>{title}</h2>{check}{}\
         <div class=\"wide\"><table class=\"sortable\" id=\"leaks-table\"><thead><tr><th class=\"l\">site</th><th class=\"l\">kind</th><th class=\"l\">path</th>\
         <th>blocks</th><th>bytes</th><th>resident</th><th>never touched</th>\
         <th>oldest (ms)</th></tr></thead><tbody>",
        filter_box("leaks-table", "leaks"),
    )?;
    for leak in &u.leaks {
        writeln!(
            out,
            "<tr><td class=\"l\"><details><summary>{}</summary>{}</details></td><td class=\"l\">{}</td><td class=\"l\">{}</td>\
             {}{}{}{}<td data-v=\"{:.3}\">{:.1}</td></tr>",
            esc(&label::stack(&leak.stack, 2)),
            stack_list(&leak.stack),
            match (&leak.suppressed_by, leak.kind) {
                (Some(rule), Some(k)) =>
                    esc(&format!("{} (suppressed: {rule})", label::leak_kind(k))),
                (_, k) => k.map_or("unchecked", label::leak_kind).to_string(),
            },
            leak.path,
            num(leak.count, leak.count.to_string()),
            num(leak.bytes, human_bytes(leak.bytes)),
            num(leak.resident_bytes, human_bytes(leak.resident_bytes)),
            num(leak.virtual_bytes, human_bytes(leak.virtual_bytes)),
            leak.oldest_age_ms,
            leak.oldest_age_ms,
        )?;
    }
    writeln!(out, "</tbody></table></div></section>")?;

    if !u.leak_suspects.is_empty() {
        writeln!(
            out,
            "<section id=\"suspects\"><h2>Leak suspects: live bytes kept growing, old blocks \
             still alive</h2><div class=\"wide\"><table class=\"sortable\"><thead><tr><th class=\"l\">site</th>\
             <th>growth per minute</th><th>live</th><th>blocks</th><th>median age (s)</th>\
             <th class=\"l\">live bytes over time</th></tr></thead><tbody>"
        )?;
        for suspect in &u.leak_suspects {
            let rate = suspect.growth_bytes_per_min.max(0.0) as u64;
            writeln!(
                out,
                "<tr><td class=\"l\"><details><summary>{}</summary>{}</details></td>{}{}{}\
                 <td data-v=\"{:.3}\">{:.1}</td><td class=\"l\">{}</td></tr>",
                esc(&label::stack(&suspect.stack, 2)),
                stack_list(&suspect.stack),
                num(rate, human_bytes(rate)),
                num(suspect.live_bytes, human_bytes(suspect.live_bytes)),
                num(suspect.live_blocks, suspect.live_blocks.to_string()),
                suspect.age_ms.median / 1e3,
                suspect.age_ms.median / 1e3,
                sparkline(&suspect.points),
            )?;
        }
        writeln!(out, "</tbody></table></div></section>")?;
    }

    let k = &s.kernel;
    writeln!(
        out,
        "<section id=\"kernel\"><h2>Kernel</h2><p>buddy: {} blocks, {} pages ({}), {} freed, \
         {} pages held at the end. Page faults: {}.</p>",
        k.buddy.allocs,
        k.buddy.pages,
        human_bytes(k.buddy.bytes),
        k.buddy.frees,
        k.buddy.live_pages_at_end,
        k.faults.user
    )?;
    writeln!(
        out,
        "<div class=\"wide\"><table class=\"sortable\" id=\"slab-caches\"><thead><tr><th class=\"l\">slab cache</th>\
         <th>objects</th><th>bytes</th><th>bytes asked for</th><th>freed</th><th>live at the end</th>\
         </tr></thead><tbody>"
    )?;
    for (name, c) in &k.slab.by_cache {
        writeln!(
            out,
            "<tr><td class=\"l\">{}</td>{}{}{}{}{}</tr>",
            esc(&k.cache_name(name)),
            num(c.allocs, c.allocs.to_string()),
            num(c.bytes, human_bytes(c.bytes)),
            num(c.bytes_req, human_bytes(c.bytes_req)),
            num(c.frees, c.frees.to_string()),
            num(c.live_at_end, c.live_at_end.to_string()),
        )?;
    }
    writeln!(out, "</tbody></table></div></section>")?;

    writeln!(out, "<section id=\"flamegraphs\"><h2>Flamegraphs</h2>")?;
    for flame in FLAMEGRAPHS {
        let (stem, title) = (flame.stem, flame.heading);
        let mut svg = Vec::new();
        if flame::render(s, flame.weight, &mut svg)? {
            // Framed to its own height: no empty band below it.
            let height = flame::height(&svg).unwrap_or(520);
            writeln!(
                out,
                "<h3>{title}</h3><object class=\"flame\" id=\"flame-{stem}\" type=\"image/svg+xml\" \
                 style=\"height:{}px\" data=\"{}\"></object>",
                height + 4,
                svg_data(&svg)
            )?;
        }
    }
    writeln!(out, "</section>")?;
    Ok(())
}

/// A small inline SVG of (ms, bytes) points, from zero to the largest value.
fn sparkline(points: &[(f64, u64)]) -> String {
    const W: f64 = 160.0;
    const H: f64 = 32.0;
    let t_max = points.iter().map(|p| p.0).fold(0.0, f64::max).max(1e-9);
    let v_max = points.iter().map(|p| p.1).max().unwrap_or(0).max(1) as f64;
    let coords: Vec<String> = points
        .iter()
        .map(|&(t, v)| format!("{:.1},{:.1}", t / t_max * W, H - v as f64 / v_max * H))
        .collect();
    format!(
        "<svg class=\"spark\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
         role=\"img\"><title>{} over {:.1} s</title><polyline fill=\"none\" stroke=\"#c0392b\" \
         stroke-width=\"1.5\" points=\"{}\"/></svg>",
        human_bytes(v_max as u64),
        t_max / 1e3,
        coords.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::tests::sample_summary;

    /// A resolved frame says where it lies, its file in full and its build id on hover; an
    /// unresolved one is named by where it lies.
    #[test]
    fn frames_say_where_they_lie() {
        let f = Frame {
            function: Some("inflate".into()),
            module: Some("/usr/lib/libz.so.1".into()),
            offset: Some(0x4a2f1),
            build_id: Some("709f60bf".into()),
            ..Frame::unknown(0x7f00_0004_a2f1)
        };
        let unresolved = Frame {
            function: None,
            build_id: None,
            ..f.clone()
        };
        super::super::html_stacks::begin();
        assert_eq!(
            stack_list(&[f, unresolved]),
            "<ol class=\"stack\" data-s=\"0\"></ol>"
        );
        let table = super::super::html_stacks::end();
        for drawn in [
            "\"0x7f000004a2f1 inflate in libz.so.1+0x4a2f1\"",
            "\"0x7f000004a2f1 libz.so.1+0x4a2f1\"",
            "\"/usr/lib/libz.so.1 (build id 709f60bf)\"",
            "\"/usr/lib/libz.so.1\"",
        ] {
            assert!(table.contains(drawn), "{drawn} in {table}");
        }
    }

    #[test]
    fn escapes_everything_from_the_target() {
        assert_eq!(
            esc("<script>alert(1)</script>"),
            "&lt;script&gt;alert(1)&lt;/script&gt;"
        );
        assert_eq!(esc("a&b \"c\" 'd'"), "a&amp;b &quot;c&quot; &#39;d&#39;");
        let mut s = sample_summary();
        s.target.command = vec!["./app".into(), "<img src=x onerror=alert(1)>".into()];
        let evil = Frame {
            addr: 0x1000,
            function: Some("<script>alert(1)</script>".into()),
            file: Some("<b>file.c</b>".into()),
            line: Some(1),
            inlined: false,
            module: None,
            offset: None,
            build_id: None,
            plumbing: false,
        };
        s.user = crate::summary::tests::one_site(evil, vec![]);
        s.kernel
            .slab
            .by_cache
            .insert("<cache>".into(), Default::default());
        let mut page = Vec::new();
        render(&s, &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(!page.contains("<script>alert"), "unescaped symbol");
        assert!(!page.contains("<img src=x"), "unescaped command line");
        assert!(!page.contains("<b>file.c"), "unescaped file name");
        assert!(!page.contains("<cache>"), "unescaped cache name");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
        // Inside the embedded SVG documents too: the flamegraph runs as a document of its own.
        let mut flame_svg = Vec::new();
        assert!(
            flame::render(&s, super::super::folded::Weight::Allocated, &mut flame_svg).unwrap()
        );
        let flame_svg = String::from_utf8(flame_svg).unwrap();
        assert!(
            flame_svg.contains("&lt;script&gt;alert(1)"),
            "symbol missing from the flamegraph"
        );
        assert!(
            !flame_svg.contains("<script>alert"),
            "unescaped symbol in the flamegraph"
        );
        let paths_svg = charts::paths(&s).unwrap();
        assert!(
            !paths_svg.contains("<script>alert"),
            "unescaped symbol in a chart"
        );
        // Only our scripts on the page: the stacks' and the tables'.
        assert_eq!(page.matches("<script>").count(), 2);
        // Self-contained: nothing fetched from elsewhere.
        for remote in ["http://", "https://", "src=\"//"] {
            let outside = page.matches(remote).count();
            assert_eq!(outside, 0, "{remote} in the page");
        }
    }

    #[test]
    fn has_every_section() {
        let mut page = Vec::new();
        render(&sample_summary(), &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        for id in [
            "id=\"paths\"",
            "id=\"charts\"",
            "id=\"sites\"",
            "id=\"leaks\"",
            "id=\"kernel\"",
            "id=\"flamegraphs\"",
        ] {
            assert!(page.contains(id), "{id}");
        }
        assert_eq!(page.matches("<img class=\"chart\"").count(), 4);
        assert!(page.trim_end().ends_with("</html>"));
        // No suspects, no section.
        assert!(!page.contains("id=\"suspects\""));
    }

    /// The sites and leaks tables have a filter box each, every table scrolls in its own box
    /// (the page never sideways), numbers do not wrap, and a number column sorts largest
    /// first; `cargo xtask html-check` runs them in a browser at 1280 and 800 px.
    #[test]
    fn tables_filter_scroll_and_sort_largest_first() {
        let mut page = Vec::new();
        render(&sample_summary(), &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        for table in ["sites-table", "leaks-table"] {
            assert!(page.contains(&format!("id=\"{table}\"")), "{table}");
            assert!(
                page.contains(&format!("class=\"filter\" data-table=\"{table}\"")),
                "{table}"
            );
        }
        assert_eq!(
            page.matches("<div class=\"wide\"><table").count(),
            page.matches("<table").count()
        );
        assert!(page.contains("td:not(.l),th:not(.l){white-space:nowrap}"));
        assert!(
            page.contains(": th.classList.contains('l');"),
            "desc first for numbers"
        );
    }

    #[test]
    fn suspects_have_a_growth_chart() {
        let mut s = sample_summary();
        s.user
            .leak_suspects
            .push(crate::summary::suspects::LeakSuspect {
                stack: vec![Frame {
                    function: Some("leak_step".into()),
                    ..Frame::unknown(0x401000)
                }]
                .into(),
                live_bytes: 3000,
                live_blocks: 3,
                growth_bytes_per_min: 60_000.0,
                rank_correlation: 1.0,
                old_live_bytes: 1000,
                age_ms: Default::default(),
                points: vec![(0.0, 1000), (1000.0, 2000), (2000.0, 3000)],
            });
        let mut page = Vec::new();
        render(&s, &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.contains("id=\"suspects\""));
        assert!(page.contains("leak_step"));
        assert!(
            page.contains("points=\"0.0,21.3 80.0,10.7 160.0,0.0\""),
            "{}",
            &page[page.find("<polyline").unwrap()..][..200]
        );
    }

    /// `--follow`: a table of every process, a selector, the totals' view shown and each
    /// process's view hidden, and no id twice on the page.
    #[test]
    fn a_followed_run_has_a_process_selector_and_unique_ids() {
        let mut s = sample_summary();
        for (pid, command) in [(10, "sh"), (11, "<b>cc1</b>")] {
            s.processes.push(crate::summary::ProcessReport {
                pid,
                ppid: (pid == 11).then_some(10),
                command: vec![command.into()],
                exit_code: Some(0),
                signal: None,
                started_ms: 0.0,
                ended_ms: Some(1.0),
                summary: sample_summary(),
            });
        }
        let mut page = Vec::new();
        render(&s, &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        for needle in [
            "id=\"process-select\"",
            "<option value=\"view-p11\">pid 11: &lt;b&gt;cc1&lt;/b&gt;</option>",
            "<div class=\"view\" id=\"view-all\">",
            "<div class=\"view\" id=\"view-p10\" hidden>",
            "id=\"p11-sites\"",
            "id=\"p10-paths\"",
        ] {
            assert!(page.contains(needle), "{needle}");
        }
        let mut ids: Vec<&str> = page
            .split("id=\"")
            .skip(1)
            .map(|rest| &rest[..rest.find('"').unwrap()])
            .collect();
        let all = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), all, "an id is used twice");
        // Ours only: the stacks', the selector's and the tables'.
        assert_eq!(page.matches("<script>").count(), 3);
    }
}
