//! Resident memory as the kernel states it: the pages of the process's data regions present in
//! RAM, read from `/proc/PID/pagemap` (see [`crate::process::target::read_pagemap`]) while the process
//! lives, kept as runs of pages (a recording carries them, so a replay says the same).
//!
//! A block's share of a resident page is in proportion to the live bytes on that page: the
//! page's bytes are split between the blocks on it, so the sites' resident bytes add up to
//! the resident pages that hold anything live.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Resident pages, as sorted, disjoint runs `[first page address, page count]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageSet {
    pub page_size: u64,
    pub runs: Vec<[u64; 2]>,
}

impl PageSet {
    /// From present-page flags: `present[i]` for the page at `start + i * page_size`, added
    /// to the runs (ranges must come in address order).
    pub fn add_range(&mut self, start: u64, present: impl IntoIterator<Item = bool>) {
        let page = self.page_size;
        let mut addr = start;
        for p in present {
            if p {
                match self.runs.last_mut() {
                    Some([first, n]) if *first + *n * page == addr => *n += 1,
                    _ => self.runs.push([addr, 1]),
                }
            }
            addr = addr.saturating_add(page);
        }
    }

    /// Resident bytes in all.
    pub fn bytes(&self) -> u64 {
        self.runs.iter().fold(0u64, |a, r| {
            a.saturating_add(r[1].saturating_mul(self.page_size))
        })
    }

    /// Resident bytes within `[start, end)` (page-aligned), from the runs overlapping it.
    pub fn bytes_in(&self, start: u64, end: u64) -> u64 {
        let page = self.page_size.max(1);
        let run_end = |r: &[u64; 2]| r[0].saturating_add(r[1].saturating_mul(page));
        let from = self.runs.partition_point(|r| run_end(r) <= start);
        let mut total = 0u64;
        for r in self.runs[from..].iter().take_while(|r| r[0] < end) {
            let overlap = run_end(r).min(end).saturating_sub(r[0].max(start));
            total = total.saturating_add(overlap);
        }
        total
    }

    /// Resident bytes within any of `ranges`.
    pub fn bytes_in_ranges(&self, ranges: &[(u64, u64)]) -> u64 {
        ranges
            .iter()
            .fold(0u64, |a, &(s, e)| a.saturating_add(self.bytes_in(s, e)))
    }

    fn is_resident(&self, page: u64) -> bool {
        self.bytes_in(page, page.saturating_add(1)) > 0
    }

    /// Each block's resident bytes: `blocks` are (start, size, key) in address order, not
    /// overlapping; every resident page they touch is split between the blocks on it in
    /// proportion to their bytes on it (a page inside one block is that block's).
    pub fn split<K: Copy + Eq + std::hash::Hash>(
        &self,
        blocks: impl IntoIterator<Item = (u64, u64, K)>,
    ) -> HashMap<K, u64> {
        let page = self.page_size.max(1);
        let mut out: HashMap<K, u64> = HashMap::new();
        // The page being shared, and the (key, bytes on it) of each block on it.
        let mut current: Option<u64> = None;
        let mut on_page: Vec<(K, u64)> = Vec::new();
        let settle = |p: Option<u64>, on: &mut Vec<(K, u64)>, out: &mut HashMap<K, u64>| {
            if let Some(p) = p
                && self.is_resident(p)
            {
                let live = on.iter().fold(0u64, |a, (_, b)| a.saturating_add(*b));
                for (k, b) in on.iter() {
                    let share =
                        (u128::from(page) * u128::from(*b) / u128::from(live.max(1))) as u64;
                    let e = out.entry(*k).or_default();
                    *e = e.saturating_add(share);
                }
            }
            on.clear();
        };
        for (start, size, key) in blocks {
            let end = start.saturating_add(size.max(1));
            let first = start - start % page;
            let last = (end - 1) - (end - 1) % page;
            let mut share = |p: u64, bytes: u64, out: &mut HashMap<K, u64>| {
                if current != Some(p) {
                    settle(current, &mut on_page, out);
                    current = Some(p);
                }
                on_page.push((key, bytes));
            };
            share(first, end.min(first.saturating_add(page)) - start, &mut out);
            if last > first {
                let inside = self.bytes_in(first.saturating_add(page), last);
                let e = out.entry(key).or_default();
                *e = e.saturating_add(inside);
                share(last, end - last, &mut out);
            }
        }
        settle(current, &mut on_page, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(present: &[bool]) -> PageSet {
        let mut s = PageSet {
            page_size: 4096,
            runs: Vec::new(),
        };
        s.add_range(0x10000, present.iter().copied());
        s
    }

    #[test]
    fn runs_and_totals() {
        let s = set(&[true, true, false, true]);
        assert_eq!(s.runs, [[0x10000, 2], [0x13000, 1]]);
        assert_eq!(s.bytes(), 3 * 4096);
        assert_eq!(s.bytes_in(0x11000, 0x14000), 2 * 4096);
        assert_eq!(
            s.bytes_in_ranges(&[(0x10000, 0x11000), (0x13000, 0x20000)]),
            2 * 4096
        );
        assert_eq!(s.bytes_in(0x20000, 0x30000), 0);
        assert!(s.is_resident(0x11000) && !s.is_resident(0x12000) && !s.is_resident(0xf000));
    }

    #[test]
    fn shared_pages_split_by_live_bytes_and_add_up() {
        let s = set(&[true, true, false, true]);
        let blocks = [
            // Two blocks on the first page: 1000 and 3000 bytes.
            (0x10000, 1000, 'a'),
            (0x10400, 3000, 'b'),
            // One block over the end of page 2 and all of the absent page 3.
            (0x11800, 0x1800, 'c'),
            // Alone on the last page.
            (0x13000, 16, 'd'),
        ];
        let r = s.split(blocks);
        assert_eq!(r[&'a'], 1024);
        assert_eq!(r[&'b'], 3072);
        // Page 2 is the block's alone; page 3 is not resident.
        assert_eq!(r[&'c'], 4096);
        assert_eq!(r[&'d'], 4096);
        // Everything resident that holds a live byte is someone's.
        assert_eq!(r.values().sum::<u64>(), s.bytes());
        // A huge block (a hostile recording's) costs no more than its runs.
        let r = s.split([(0, u64::MAX, 'x')]);
        assert_eq!(r[&'x'], s.bytes());
    }
}
