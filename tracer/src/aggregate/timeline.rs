//! Memory over time, sampled from the event stream itself (so a replay draws the same lines).
//!
//! A point is taken whenever event time has moved on by the sampling interval; when there are
//! too many points, every other one is dropped and the interval doubles, so a run of any
//! length ends up with between [`MAX_POINTS`]/2 and [`MAX_POINTS`] points.

use serde::Serialize;

pub const MAX_POINTS: usize = 1024;
const MAX_MARKERS: usize = 4096;
const FIRST_INTERVAL_NS: u64 = 100_000;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Bytes in live user allocations.
    pub live_heap: u64,
    /// Bytes mapped for data: the brk heap, anonymous mmaps, thread arenas.
    pub mapped: u64,
    /// Bytes of resident user pages first touched while tracing.
    pub resident: u64,
    /// Bytes of slab objects made for the process and still live.
    pub slab: u64,
    /// Bytes of buddy pages given to the process and still held.
    pub buddy: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Milliseconds since the first event.
    pub t_ms: f64,
    #[serde(flatten)]
    pub sample: Sample,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Marker {
    pub t_ms: f64,
    /// "brk", "mmap" or "munmap".
    pub kind: &'static str,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timeline {
    pub points: Vec<Point>,
    pub markers: Vec<Marker>,
    /// Markers left out once there were too many.
    pub markers_dropped: u64,
    #[serde(skip)]
    start_ns: Option<u64>,
    #[serde(skip)]
    last_ns: u64,
    #[serde(skip)]
    interval_ns: u64,
}

impl Timeline {
    /// A finished timeline of these points and markers (the totals of several processes).
    pub fn from_parts(points: Vec<Point>, markers: Vec<Marker>, markers_dropped: u64) -> Self {
        Timeline {
            points,
            markers,
            markers_dropped,
            ..Timeline::default()
        }
    }

    /// An empty timeline whose times count from `ts_ns` (a forked process's, from its fork).
    pub fn starting_at(ts_ns: u64) -> Self {
        Timeline {
            start_ns: Some(ts_ns),
            ..Timeline::default()
        }
    }

    fn t_ms(&mut self, ts_ns: u64) -> f64 {
        let start = *self.start_ns.get_or_insert(ts_ns);
        ts_ns.saturating_sub(start) as f64 / 1e6
    }

    /// Called for every event; `sample` is taken only when a point is due.
    pub fn observe(&mut self, ts_ns: u64, sample: impl FnOnce() -> Sample) {
        if self.start_ns.is_some() && ts_ns < self.last_ns.saturating_add(self.interval_ns) {
            return;
        }
        if self.interval_ns == 0 {
            self.interval_ns = FIRST_INTERVAL_NS;
        }
        let t_ms = self.t_ms(ts_ns);
        self.last_ns = ts_ns;
        self.points.push(Point {
            t_ms,
            sample: sample(),
        });
        if self.points.len() >= MAX_POINTS {
            let mut i = 0;
            self.points.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.interval_ns *= 2;
        }
    }

    /// The final state, at the last event.
    pub fn close(&mut self, ts_ns: u64, sample: Sample) {
        if self.start_ns.is_some() {
            let t_ms = self.t_ms(ts_ns);
            self.points.push(Point { t_ms, sample });
        }
    }

    pub fn mark(&mut self, ts_ns: u64, kind: &'static str, bytes: u64) {
        if self.markers.len() >= MAX_MARKERS {
            self.markers_dropped += 1;
            return;
        }
        let t_ms = self.t_ms(ts_ns);
        self.markers.push(Marker { t_ms, kind, bytes });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_on_an_interval_and_thins_out() {
        let mut t = Timeline::default();
        let mut taken = 0;
        for i in 0..10_000u64 {
            t.observe(1_000_000 + i * 10_000, || {
                taken += 1;
                Sample {
                    live_heap: i,
                    ..Default::default()
                }
            });
        }
        // 10k events 10 µs apart: a point per 100 µs at first.
        assert_eq!(taken, 1000);
        assert_eq!(t.points.len(), 1000);
        assert_eq!(t.points[1].t_ms, 0.1);
        for i in 10_000..100_000u64 {
            t.observe(1_000_000 + i * 10_000, Sample::default);
        }
        assert!(
            t.points.len() < MAX_POINTS && t.points.len() >= MAX_POINTS / 2,
            "{}",
            t.points.len()
        );
        assert!(t.points.windows(2).all(|w| w[0].t_ms < w[1].t_ms));
        t.close(1_000_000 + 100_000 * 10_000, Sample::default());
        assert_eq!(t.points.last().unwrap().t_ms, 1000.0);
        t.mark(1_500_000, "mmap", 4096);
        assert_eq!(t.markers[0].t_ms, 0.5);
    }
}
