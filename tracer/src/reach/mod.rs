//! The leak check: which of a process's live blocks it can still reach, read from its memory
//! while every thread is stopped, in memcheck's categories (lost, indirectly lost, possibly
//! lost, still reachable).
//!
//! tracer knows every live block (start, size); the roots are the process's writable memory
//! outside its heaps and its threads' registers ([`memory`]); marking is [`mark`]; the threads
//! are stopped and let go by [`stop`]. The caller drains the events the process sent before
//! it stopped between [`Check::stop`] and [`Check::scan`], so the block table is whole.

pub mod mark;
pub mod memory;
pub mod stop;

use std::time::{Duration, Instant};

pub use stop::StopError;

use crate::events::LeakKind;

/// A process stopped for a leak check.
pub struct Check {
    pid: i32,
    stopped: stop::Stopped,
    began: Instant,
}

/// What a scan found.
#[derive(Debug)]
pub struct Scanned {
    /// Each block's kind, by the index of the blocks given; empty when the scan gave up.
    pub kinds: Vec<LeakKind>,
    /// Bytes read: roots and blocks.
    pub scanned_bytes: u64,
    /// From the stop to the scan's end (the threads run again when the `Check` is dropped,
    /// just after).
    pub pause: Duration,
    /// The scan took longer than allowed and was given up.
    pub gave_up: bool,
}

impl Check {
    /// Stops every thread of `pid`.
    pub fn stop(pid: i32) -> Result<Check, StopError> {
        let began = Instant::now();
        let stopped = stop::Stopped::stop(pid)?;
        Ok(Check {
            pid,
            stopped,
            began,
        })
    }

    /// Classifies the live blocks (`starts` ascending, `sizes` by the same index), giving up
    /// once the process has been stopped for `max_pause`. The threads run on when `self` is
    /// dropped.
    pub fn scan(&self, starts: &[u64], sizes: &[u64], max_pause: Option<Duration>) -> Scanned {
        let over = || max_pause.is_some_and(|m| self.began.elapsed() > m);
        let pid = self.pid;
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        let maps = memory::parse_maps(&maps);
        let sps: Vec<u64> = self.stopped.stack_pointers().collect();
        let roots = memory::roots(&maps, &sps, starts, sizes);
        // Every block's bytes, read at once.
        let ranges: Vec<(u64, u64)> = starts.iter().zip(sizes).map(|(&s, &z)| (s, z)).collect();
        let mut image = Vec::new();
        let t = Instant::now();
        let offsets = memory::read_many(pid, &ranges, &mut image);
        log::debug!(
            "leak check: {} bytes of blocks read in {:?}",
            image.len(),
            t.elapsed()
        );
        let t = Instant::now();
        let contents = |i: usize| &image[offsets[i]..offsets[i] + sizes[i] as usize];
        let mut marker = mark::Marker::new(mark::Blocks {
            starts,
            sizes,
            contents: &contents,
        });
        for word in self.stopped.register_words() {
            marker.root(word);
        }
        let mut root_bytes = 0u64;
        let mut buf = Vec::new();
        for &(from, to) in &roots {
            let mut at = from;
            while at < to {
                let len = (to - at).min(1 << 20);
                memory::read(pid, at, len as usize, &mut buf);
                marker.root_bytes(&buf);
                root_bytes += len;
                at += len;
                if over() {
                    return self.gave_up(root_bytes);
                }
            }
        }
        log::debug!(
            "leak check: {root_bytes} bytes of roots scanned in {:?}",
            t.elapsed()
        );
        let t = Instant::now();
        if !marker.propagate(&over) {
            return self.gave_up(root_bytes);
        }
        let (kinds, block_bytes) = marker.finish();
        log::debug!("leak check: blocks marked in {:?}", t.elapsed());
        Scanned {
            kinds,
            scanned_bytes: root_bytes + block_bytes,
            pause: self.began.elapsed(),
            gave_up: false,
        }
    }

    fn gave_up(&self, scanned_bytes: u64) -> Scanned {
        Scanned {
            kinds: Vec::new(),
            scanned_bytes,
            pause: self.began.elapsed(),
            gave_up: true,
        }
    }
}
