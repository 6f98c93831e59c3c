//! Live bytes of every call site over time, sampled from the event stream itself (so a replay
//! finds the same leak suspects as the live run).
//!
//! As with the timeline, a point is taken whenever event time has moved on by the sampling
//! interval, and when the points reach [`MAX_POINTS`] every other one is dropped and the
//! interval doubles: memory is bounded by sites × [`MAX_POINTS`], whatever the run's length.

use super::heap::HeapStats;

pub const MAX_POINTS: usize = 128;
const FIRST_INTERVAL_NS: u64 = 10_000_000;

#[derive(Debug, Clone, Default)]
pub struct SiteTrend {
    /// Event time of each point (CLOCK_MONOTONIC ns).
    times: Vec<u64>,
    /// Per site (the heap's site index): live bytes at each point. Sparse: a site is zero at
    /// every point before its first live byte, and a site that never had one (most of them,
    /// where blocks are freed as soon as they are made) holds nothing.
    series: Vec<Series>,
    last_ns: u64,
    interval_ns: u64,
}

/// One site's live bytes from point `first` on; zero before.
#[derive(Debug, Clone, Default)]
struct Series {
    first: usize,
    values: Vec<u64>,
}

impl Series {
    /// Keeps the points [`thin`] keeps of the whole series.
    fn thin(&mut self) {
        let mut i = self.first;
        self.values.retain(|_| {
            i += 1;
            (i - 1).is_multiple_of(2)
        });
        self.first = self.first.div_ceil(2);
    }
}

impl SiteTrend {
    /// Called for every event: takes a point when one is due.
    pub fn observe(&mut self, ts_ns: u64, heap: &HeapStats) {
        if !self.times.is_empty() && ts_ns < self.last_ns.saturating_add(self.interval_ns) {
            return;
        }
        if self.interval_ns == 0 {
            self.interval_ns = FIRST_INTERVAL_NS;
        }
        self.last_ns = ts_ns;
        self.push(ts_ns, heap);
        if self.times.len() >= MAX_POINTS {
            thin(&mut self.times);
            for s in &mut self.series {
                s.thin();
            }
            self.interval_ns *= 2;
        }
    }

    fn push(&mut self, ts_ns: u64, heap: &HeapStats) {
        let n = self.times.len();
        self.times.push(ts_ns);
        let sites = heap.sites();
        self.series.resize_with(sites.len(), Series::default);
        for (s, (_, stats)) in self.series.iter_mut().zip(sites) {
            if s.values.is_empty() {
                if stats.live_bytes == 0 {
                    continue;
                }
                s.first = n;
            }
            s.values.push(stats.live_bytes);
        }
    }

    /// The points, with one more at `now_ns` for the state then (the end of a run).
    pub fn closed(&self, now_ns: u64, heap: &HeapStats) -> SiteTrend {
        let mut t = self.clone();
        if t.times.last().is_none_or(|&last| now_ns > last) {
            t.push(now_ns, heap);
        }
        t
    }

    pub fn times(&self) -> &[u64] {
        &self.times
    }

    /// Whether the site with heap index `site` had live bytes at any point.
    pub fn ever_live(&self, site: usize) -> bool {
        self.series.get(site).is_some_and(|s| !s.values.is_empty())
    }

    /// Adds the live bytes of the site with heap index `site` at each point to `sums` (one
    /// entry a point).
    pub fn add_series(&self, site: usize, sums: &mut [u64]) {
        if let Some(s) = self.series.get(site) {
            for (a, &b) in sums.iter_mut().skip(s.first).zip(&s.values) {
                *a = a.saturating_add(b);
            }
        }
    }

    /// Live bytes of the site with heap index `site` at each point.
    #[cfg(test)]
    pub fn series(&self, site: usize) -> Vec<u64> {
        let mut v = vec![0; self.times.len()];
        self.add_series(site, &mut v);
        v
    }
}

/// Keeps the first of every two.
fn thin<T>(v: &mut Vec<T>) {
    let mut i = 0;
    v.retain(|_| {
        i += 1;
        i % 2 == 1
    });
}

#[cfg(test)]
mod tests {
    use tracer_common::AllocFn;

    use super::*;
    use crate::events::testing;

    fn alloc(heap: &mut HeapStats, ts: u64, addr: u64, caller: u64) {
        let e = testing::alloc_call(testing::alloc(AllocFn::Malloc, 100, addr, caller, ts));
        heap.on_alloc(&e);
    }

    #[test]
    fn samples_every_site_and_stays_bounded() {
        let mut heap = HeapStats::default();
        let mut trend = SiteTrend::default();
        let ms = 1_000_000;
        // One site allocates 100 bytes every millisecond for 10 s; a second one starts at 5 s.
        for i in 0..10_000u64 {
            let ts = 1_000 * ms + i * ms;
            alloc(&mut heap, ts, 0x1000 + i * 0x100, 0x40_0000);
            if i >= 5_001 {
                alloc(&mut heap, ts, 0x1000_0000 + i * 0x100, 0x50_0000);
            }
            trend.observe(ts, &heap);
        }
        let n = trend.times().len();
        assert!((MAX_POINTS / 2..MAX_POINTS).contains(&n), "{n}");
        assert_eq!(trend.series(0).len(), n);
        assert_eq!(trend.series(1).len(), n);
        // Rising steadily; the late site is zero before it began.
        assert!(trend.series(0).windows(2).all(|w| w[0] < w[1]));
        let half = trend
            .times()
            .iter()
            .position(|&t| t >= 1_000 * ms + 5_001 * ms);
        let half = half.unwrap();
        assert!(trend.series(1)[..half].iter().all(|&b| b == 0));
        assert!(trend.series(1)[half..].iter().all(|&b| b > 0));
        // Closing adds the state at the end.
        let end = 1_000 * ms + 20_000 * ms;
        let closed = trend.closed(end, &heap);
        assert_eq!(closed.times().len(), n + 1);
        assert_eq!(*closed.series(0).last().unwrap(), 10_000 * 100);
        // Each point holds the live bytes at its own time, through every thinning, for the
        // site that began at an odd point as for the first.
        for (k, &t) in trend.times().iter().enumerate() {
            let i = (t - 1_000 * ms) / ms;
            assert_eq!(trend.series(0)[k], 100 * (i + 1), "point {k}");
            let late = if i >= 5_001 { 100 * (i - 5_000) } else { 0 };
            assert_eq!(trend.series(1)[k], late, "point {k}");
        }
        assert!(trend.series(7).iter().all(|&b| b == 0));
        assert!(!trend.ever_live(7));
    }
}
