//! Drawing [`TopState`] with ratatui: a header, the table of sites, the selected site's
//! stack and chain (Enter), and a footer with the keys.

use ratatui::{
    Frame,
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Cell, Paragraph, Row as TableRow, Table, TableState, Wrap},
};

use super::{SortBy, TopState};
use crate::summary::{human_bytes, label, visible};

fn signed(n: i64) -> String {
    if n < 0 {
        format!("-{}", human_bytes(n.unsigned_abs()))
    } else {
        format!("+{}", human_bytes(n as u64))
    }
}

/// The most notes the header shows (the JSON and reports have all).
const MAX_NOTES: usize = 2;

/// Table rows that fit in a frame of `height` lines (for paging).
pub fn page(height: u16, detail: bool) -> usize {
    let table = if detail { height / 2 } else { height };
    usize::from(table.saturating_sub(7))
}

pub fn draw(f: &mut Frame, t: &TopState) {
    if let Some(s) = &t.system {
        return draw_system(f, t, s);
    }
    let area = f.area();
    let table_height = if t.detail {
        Constraint::Percentage(50)
    } else {
        Constraint::Min(3)
    };
    // The header, and a line for each of the summary's notes (its losses and caveats).
    let notes = t.header.notes.len().min(MAX_NOTES) + usize::from(t.header.cgroup.is_some());
    let mut constraints = vec![Constraint::Length(3 + notes as u16), table_height];
    if t.detail {
        constraints.push(Constraint::Min(3));
    }
    constraints.push(Constraint::Length(1));
    let parts = Layout::vertical(constraints).split(area);

    let h = &t.header;
    let p = &h.paths;
    let mut suspects = String::new();
    for (name, rate) in h.suspects.iter().take(2) {
        suspects.push_str(&format!(
            "  leak suspect: {} +{}/min",
            visible(name),
            human_bytes(rate.max(0.0) as u64)
        ));
    }
    let mut lines = vec![
        Line::from(vec![
            Span::styled(
                format!("tracer top  pid {}", h.pid),
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!(
                " ({})  {:.1} s  events {}  dropped {}",
                visible(&h.command),
                h.elapsed_s,
                h.received,
                h.dropped
            )),
        ]),
        Line::from(format!(
            "brk {}  mmap {}  arenas {}  buddy {} pages  slab {} objects  live {}  resident {}",
            human_bytes(p.brk.bytes),
            human_bytes(p.mmap.bytes),
            human_bytes(p.thread_arena.bytes),
            p.buddy.pages,
            p.slab.objects,
            label::known_bytes(h.live_bytes),
            human_bytes(h.resident_bytes),
        )),
        Line::from(suspects),
    ];
    if let Some(c) = &h.cgroup {
        lines.push(Line::from(visible(c).into_owned()));
    }
    lines.extend(h.notes.iter().take(MAX_NOTES).map(|n| {
        Line::from(Span::styled(
            n.clone(),
            Style::default().fg(ratatui::style::Color::Yellow),
        ))
    }));
    f.render_widget(Paragraph::new(lines), parts[0]);

    let by = t.sort_by();
    let title = |name: &str, key: char, col: SortBy| {
        let mark = if by == col { "▼" } else { "" };
        Cell::from(format!("{name}({key}){mark}"))
    };
    let head = TableRow::new(vec![
        title("live", 'l', SortBy::Live),
        title("growth/s", 'g', SortBy::Growth),
        title("allocs/s", 'r', SortBy::Rate),
        title("bytes", 'b', SortBy::Bytes),
        title("resident", 'p', SortBy::Resident),
        Cell::from("path"),
        Cell::from("site"),
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let rows = t.rows.iter().map(|r| {
        TableRow::new(vec![
            Cell::from(human_bytes(r.live_bytes)),
            Cell::from(signed(r.growth)),
            Cell::from(format!("{:.0}", r.rate)),
            Cell::from(human_bytes(r.bytes)),
            Cell::from(human_bytes(r.resident_bytes)),
            Cell::from(r.path),
            Cell::from(r.name.clone()),
        ])
    });
    let table = Table::new(
        rows,
        [
            Constraint::Length(11),
            Constraint::Length(11),
            Constraint::Length(11),
            Constraint::Length(11),
            Constraint::Length(12),
            Constraint::Length(12),
            Constraint::Min(20),
        ],
    )
    .header(head)
    .block(
        Block::default()
            .borders(Borders::TOP)
            .title(format!(" {} sites ", t.rows.len())),
    )
    .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(Some(t.selected));
    f.render_stateful_widget(table, parts[1], &mut state);

    if t.detail
        && let Some(r) = t.rows.get(t.selected)
    {
        let mut lines: Vec<Line> = r
            .stack
            .iter()
            .enumerate()
            .map(|(i, frame)| {
                Line::from(format!(
                    "{:>3}  {}",
                    i,
                    label::stack(std::slice::from_ref(frame), 1)
                ))
            })
            .collect();
        lines.push(Line::from(""));
        lines.push(Line::from(format!("chain: {}", r.chain)));
        let detail = Paragraph::new(lines).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::TOP)
                .title(" stack (Esc closes) "),
        );
        f.render_widget(detail, parts[2]);
    }

    let footer = match &t.message {
        Some(m) => m.clone(),
        None => "q quit  ↑↓ select  Enter stack  l g r b p sort  Tab next sort  s snapshot  c leak check".into(),
    };
    f.render_widget(Paragraph::new(footer), parts[parts.len() - 1]);
}

/// `tracer top --system`: the processes that grew most, then the cgroups.
fn draw_system(f: &mut Frame, t: &TopState, s: &crate::summary::system::SystemSummary) {
    let parts = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(5),
        Constraint::Length(8),
        Constraint::Length(1),
    ])
    .split(f.area());
    let head = Line::from(vec![
        Span::styled(
            "tracer top  every process",
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            "  {:.1} s  {} processes, {} counted  grew {}  faults {}",
            t.header.elapsed_s,
            s.processes_seen,
            s.processes_counted,
            human_bytes(s.total.growth_bytes),
            s.total.faults
        )),
    ]);
    f.render_widget(Paragraph::new(head), parts[0]);
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let rows = s.grew_most.iter().map(|r| {
        TableRow::new(vec![
            Cell::from(r.pid.to_string()),
            Cell::from(visible(&r.comm).into_owned()),
            Cell::from(human_bytes(r.totals.growth_bytes)),
            Cell::from(r.resident_bytes.map_or("gone".into(), human_bytes)),
            Cell::from(r.totals.faults.to_string()),
            Cell::from(r.totals.mmap_calls.to_string()),
            Cell::from(visible(&r.cgroup).into_owned()),
        ])
    });
    let processes = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(16),
            Constraint::Length(11),
            Constraint::Length(11),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Min(10),
        ],
    )
    .header(
        TableRow::new([
            "pid", "comm", "grew", "resident", "faults", "mmaps", "cgroup",
        ])
        .style(bold),
    )
    .block(
        Block::default()
            .borders(Borders::TOP)
            .title(" processes that grew most "),
    );
    f.render_widget(processes, parts[1]);
    let cgroups = Table::new(
        s.cgroups.iter().map(|c| {
            TableRow::new(vec![
                Cell::from(human_bytes(c.totals.growth_bytes)),
                Cell::from(human_bytes(c.resident_bytes)),
                Cell::from(c.processes.to_string()),
                Cell::from(visible(&c.cgroup).into_owned()),
            ])
        }),
        [
            Constraint::Length(11),
            Constraint::Length(11),
            Constraint::Length(7),
            Constraint::Min(10),
        ],
    )
    .header(TableRow::new(["grew", "resident", "procs", "cgroup"]).style(bold))
    .block(
        Block::default()
            .borders(Borders::TOP)
            .title(" memory cgroups "),
    );
    f.render_widget(cgroups, parts[2]);
    let footer = t.message.clone().unwrap_or_else(|| "q quit".into());
    f.render_widget(Paragraph::new(footer), parts[3]);
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::{
        aggregate::heap::SiteStats,
        summary::{tests::sample_summary, user::SiteReport},
        symbolize::Frame,
    };

    fn screen(t: &TopState) -> String {
        let mut term = Terminal::new(TestBackend::new(120, 30)).unwrap();
        term.draw(|f| draw(f, t)).unwrap();
        let buf = term.backend().buffer().clone();
        (0..buf.area.height)
            .map(|y| {
                (0..buf.area.width)
                    .map(|x| buf[(x, y)].symbol().to_string())
                    .collect::<String>()
                    + "\n"
            })
            .collect()
    }

    #[test]
    fn the_system_view_ranks_processes_and_cgroups() {
        use crate::summary::system::{SystemCgroupReport, SystemProcessReport, SystemSummary};
        let mut s = sample_summary();
        let grower = SystemProcessReport {
            pid: 4321,
            comm: "grower".into(),
            cgroup: "/app".into(),
            resident_bytes: Some(3 << 20),
            totals: crate::summary::system::SystemTotals {
                growth_bytes: 2 << 20,
                faults: 512,
                ..Default::default()
            },
        };
        s.system = Some(SystemSummary {
            processes_seen: 80,
            processes_counted: 12,
            grew_most: vec![grower],
            cgroups: vec![SystemCgroupReport {
                cgroup: "/app".into(),
                processes: 1,
                resident_bytes: 3 << 20,
                ..Default::default()
            }],
            ..Default::default()
        });
        let mut t = TopState::default();
        t.update(&s, 2.0);
        let text = screen(&t);
        assert!(text.contains("80 processes, 12 counted"), "{text}");
        let row = text.lines().find(|l| l.contains("4321")).expect(&text);
        assert!(
            row.contains("grower") && row.contains("2.0 MiB") && row.contains("3.0 MiB"),
            "{row}"
        );
        assert!(text.contains("memory cgroups"), "{text}");
    }

    #[test]
    fn shows_the_header_the_sorted_table_and_the_stack() {
        let mut s = sample_summary();
        s.user.sites = vec![SiteReport {
            stack: vec![
                Frame {
                    function: Some("leak_step".into()),
                    file: Some("growing.c".into()),
                    line: Some(14),
                    ..Frame::unknown(0x1000)
                },
                Frame {
                    function: Some("main".into()),
                    file: Some("growing.c".into()),
                    line: Some(30),
                    ..Frame::unknown(0x2000)
                },
            ]
            .into(),
            stats: SiteStats {
                allocs: 10,
                bytes: 10_000,
                live_bytes: 10_000,
                ..Default::default()
            },
            path: "brk",
            paths: Default::default(),
            caused: Default::default(),
            bytes_error: None,
            marks: Default::default(),
        }];
        let mut t = TopState::default();
        t.update(&s, 2.0);
        let text = screen(&t);
        assert!(
            text.contains("tracer top  pid 4242 (./app --flag)  2.0 s"),
            "{text}"
        );
        assert!(text.contains("live(l)▼"), "{text}");
        assert!(text.contains("9.8 KiB") && text.contains("leak_step (growing.c:14) <- main"));
        assert!(!text.contains("chain:"));
        t.detail = true;
        let text = screen(&t);
        assert!(text.contains("  1  main (growing.c:30)"), "{text}");
        assert!(text.contains("chain: "), "{text}");
    }
}
