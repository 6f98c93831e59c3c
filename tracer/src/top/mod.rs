//! `tracer top`: an interactive view of a live run, refreshed every `--interval` (1 s).
//!
//! [`TopState`] is the pure part: summaries and keys in, rows and actions out. [`view`] draws
//! it with ratatui; [`term`] owns the terminal (raw mode, the alternate screen, restored on
//! every exit, panics included) and reads keys on a thread of its own.

pub mod term;
pub mod view;

use std::collections::HashMap;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::summary::{
    Summary,
    kernel::PathsSummary,
    label::{self, Stack},
    merge::{FramesKey, frames_key},
};

/// What the table is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Live,
    Rate,
    Bytes,
    Resident,
    Growth,
}

impl SortBy {
    pub const ALL: [SortBy; 5] = [
        SortBy::Live,
        SortBy::Rate,
        SortBy::Bytes,
        SortBy::Resident,
        SortBy::Growth,
    ];

    fn next(self) -> SortBy {
        let i = SortBy::ALL.iter().position(|&s| s == self).unwrap_or(0);
        SortBy::ALL[(i + 1) % SortBy::ALL.len()]
    }
}

/// One site as the table shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub stack: Stack,
    pub name: String,
    pub path: &'static str,
    pub live_bytes: u64,
    pub allocs: u64,
    pub bytes: u64,
    pub resident_bytes: u64,
    /// Allocations per second over the last refresh.
    pub rate: f64,
    /// Live bytes gained per second over the last refresh.
    pub growth: i64,
    /// path → syscalls → faults → pages → slab.
    pub chain: String,
}

/// The header's numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Header {
    pub pid: u32,
    pub command: String,
    pub elapsed_s: f64,
    pub received: u64,
    pub dropped: u64,
    pub paths: PathsSummary,
    /// None under `--mode kernel`, which cannot know them.
    pub live_bytes: Option<u64>,
    pub resident_bytes: u64,
    pub suspects: Vec<(String, f64)>,
    /// The summary's notes, as `level: text` (see [`crate::summary::notes`]).
    pub notes: Vec<String>,
    /// `--cgroup`: the cgroup's numbers in a line.
    pub cgroup: Option<String>,
}

/// What a key asks of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    None,
    Quit,
    Snapshot,
    /// A leak check of the traced processes now.
    LeakCheck,
}

#[derive(Debug, Default)]
pub struct TopState {
    pub header: Header,
    pub rows: Vec<Row>,
    pub sort: Option<SortBy>,
    pub selected: usize,
    /// Enter: the selected site's whole stack and chain.
    pub detail: bool,
    /// A line for the footer (a snapshot written, an error).
    pub message: Option<String>,
    /// `tracer top --system`: the machine's rankings, shown instead of sites.
    pub system: Option<crate::summary::system::SystemSummary>,
    prev: HashMap<FramesKey, (u64, u64)>,
    prev_s: f64,
}

impl TopState {
    pub fn sort_by(&self) -> SortBy {
        self.sort.unwrap_or(SortBy::Live)
    }

    /// A new summary (every site listed), `elapsed_s` into the run.
    pub fn update(&mut self, s: &Summary, elapsed_s: f64) {
        if let Some(system) = &s.system {
            self.system = Some(system.clone());
            self.header.elapsed_s = elapsed_s;
            return;
        }
        let dt = (elapsed_s - self.prev_s).max(1e-3);
        let last = s.timeline.points.last().map(|p| p.sample);
        self.header = Header {
            pid: s.target.pid,
            command: s.target.command.join(" "),
            elapsed_s,
            received: s.events.received,
            dropped: s.events.dropped,
            notes: s
                .notes
                .iter()
                .map(|n| format!("{}: {}", n.level.name(), n.text))
                .collect(),
            paths: s.paths,
            cgroup: s.cgroup.as_ref().map(crate::summary::cgroup::brief),
            live_bytes: s.live_bytes_now(),
            resident_bytes: last.map_or(0, |p| p.resident),
            suspects: s
                .user
                .leak_suspects
                .iter()
                .map(|x| (label::stack(&x.stack, 1), x.growth_bytes_per_min))
                .collect(),
        };
        let selected_key = self.rows.get(self.selected).map(|r| frames_key(&r.stack));
        let mut prev = HashMap::with_capacity(s.user.sites.len());
        self.rows = s
            .user
            .sites
            .iter()
            .map(|site| {
                let key = frames_key(&site.stack);
                let (allocs_before, live_before) = self.prev.get(&key).copied().unwrap_or((0, 0));
                prev.insert(key, (site.stats.allocs, site.stats.live_bytes));
                Row {
                    stack: site.stack.clone(),
                    name: label::stack(&site.stack, 2),
                    path: site.path,
                    live_bytes: site.stats.live_bytes,
                    allocs: site.stats.allocs,
                    bytes: site.stats.bytes,
                    resident_bytes: site.paths.resident_bytes,
                    rate: site.stats.allocs.saturating_sub(allocs_before) as f64 / dt,
                    growth: (crate::periodic::interval::delta(site.stats.live_bytes, live_before)
                        as f64
                        / dt) as i64,
                    chain: label::chain(site),
                }
            })
            .collect();
        self.prev = prev;
        self.prev_s = elapsed_s;
        self.sort_rows();
        // The same site stays selected as rows move.
        if let Some(key) = selected_key
            && let Some(i) = self.rows.iter().position(|r| frames_key(&r.stack) == key)
        {
            self.selected = i;
        }
        self.selected = self.selected.min(self.rows.len().saturating_sub(1));
    }

    fn sort_rows(&mut self) {
        let by = self.sort_by();
        self.rows.sort_by(|a, b| {
            let order = match by {
                SortBy::Live => b.live_bytes.cmp(&a.live_bytes),
                SortBy::Rate => b.rate.total_cmp(&a.rate),
                SortBy::Bytes => b.bytes.cmp(&a.bytes),
                SortBy::Resident => b.resident_bytes.cmp(&a.resident_bytes),
                SortBy::Growth => b.growth.cmp(&a.growth),
            };
            order.then_with(|| b.bytes.cmp(&a.bytes))
        });
    }

    fn resort(&mut self, by: SortBy) {
        self.sort = Some(by);
        self.sort_rows();
        self.selected = 0;
    }

    /// Applies a key; `page` is the number of table rows shown.
    pub fn key(&mut self, k: KeyEvent, page: usize) -> KeyAction {
        let last = self.rows.len().saturating_sub(1);
        match k.code {
            KeyCode::Char('q') => return KeyAction::Quit,
            KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                return KeyAction::Quit;
            }
            KeyCode::Char('s') => return KeyAction::Snapshot,
            KeyCode::Char('c') => return KeyAction::LeakCheck,
            KeyCode::Char('l') => self.resort(SortBy::Live),
            KeyCode::Char('r') => self.resort(SortBy::Rate),
            KeyCode::Char('b') => self.resort(SortBy::Bytes),
            KeyCode::Char('p') => self.resort(SortBy::Resident),
            KeyCode::Char('g') => self.resort(SortBy::Growth),
            KeyCode::Tab => self.resort(self.sort_by().next()),
            KeyCode::Down | KeyCode::Char('j') => self.selected = (self.selected + 1).min(last),
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::PageDown => self.selected = (self.selected + page.max(1)).min(last),
            KeyCode::PageUp => self.selected = self.selected.saturating_sub(page.max(1)),
            KeyCode::Home => self.selected = 0,
            KeyCode::End => self.selected = last,
            KeyCode::Enter => self.detail = !self.detail,
            KeyCode::Esc => self.detail = false,
            _ => {}
        }
        KeyAction::None
    }
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

    fn site(f: &str, allocs: u64, bytes: u64, live: u64) -> SiteReport {
        let stats = SiteStats {
            allocs,
            bytes,
            live_bytes: live,
            ..Default::default()
        };
        site_at(f, 3, stats)
    }

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    /// Growth is per second, whatever the refresh period.
    #[test]
    fn growth_is_per_second() {
        let mut t = TopState::default();
        let mut s = sample_summary();
        s.user.sites = vec![site("leak", 10, 1000, 1000)];
        t.update(&s, 1.0);
        s.user.sites = vec![site("leak", 40, 4000, 4000)];
        t.update(&s, 3.0);
        assert_eq!(t.rows[0].growth, 1500);
    }

    #[test]
    fn sorts_rates_growth_and_keeps_the_selection() {
        let mut t = TopState::default();
        let mut s = sample_summary();
        s.user.sites = vec![site("leak", 10, 1000, 1000), site("churn", 100, 80_000, 0)];
        t.update(&s, 1.0);
        assert_eq!(t.rows[0].name, "leak (app.c:3)");
        s.user.sites = vec![site("leak", 20, 2000, 2000), site("churn", 300, 240_000, 0)];
        t.update(&s, 2.0);
        let churn = t.rows.iter().find(|r| r.name.starts_with("churn")).unwrap();
        assert_eq!((churn.rate, churn.growth), (200.0, 0));
        assert_eq!(t.rows[0].growth, 1000);

        assert_eq!(t.key(key(KeyCode::Char('b')), 10), KeyAction::None);
        assert_eq!(t.sort_by(), SortBy::Bytes);
        assert!(t.rows[0].name.starts_with("churn"));
        t.key(key(KeyCode::Char('g')), 10);
        assert!(t.rows[0].name.starts_with("leak"));
        t.key(key(KeyCode::Tab), 10);
        assert_eq!(t.sort_by(), SortBy::Live);
        // Select churn; it stays selected when an update reorders the rows.
        t.key(key(KeyCode::Down), 10);
        assert!(t.rows[t.selected].name.starts_with("churn"));
        s.user.sites = vec![
            site("churn", 400, 320_000, 5000),
            site("leak", 20, 2000, 2000),
        ];
        t.update(&s, 3.0);
        assert!(t.rows[t.selected].name.starts_with("churn"));
        t.key(key(KeyCode::Down), 10);
        t.key(key(KeyCode::Down), 10);
        assert_eq!(t.selected, 1);
        t.key(key(KeyCode::Enter), 10);
        assert!(t.detail);
        t.key(key(KeyCode::Esc), 10);
        assert!(!t.detail);
        assert_eq!(t.key(key(KeyCode::Char('s')), 10), KeyAction::Snapshot);
        assert_eq!(t.key(key(KeyCode::Char('c')), 10), KeyAction::LeakCheck);
        assert_eq!(t.key(key(KeyCode::Char('q')), 10), KeyAction::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(t.key(ctrl_c, 10), KeyAction::Quit);
    }
}
