//! The slab objects the kernel counts instead of sending (see `tracer_common::SLAB_COUNTS_MAP`),
//! read while tracing and turned into events where they changed.

use std::collections::HashMap;

use aya::{Ebpf, maps::HashMap as BpfHashMap};
use tracer_common::{EventHeader, SLAB_COUNTS_MAP, SlabCount, SlabCountEvent, SlabCountKey, kind};

use super::ProbeError;

/// What was last read of each (process, cache) count.
#[derive(Debug, Default)]
pub struct SlabCounts {
    last: HashMap<SlabCountKey, (u64, u64)>,
}

impl SlabCounts {
    /// The counts that changed since the last read, as events stamped `now_ns`
    /// (CLOCK_MONOTONIC), in key order. Nothing when the programs have no such map.
    pub fn read(&mut self, ebpf: &Ebpf, now_ns: u64) -> Result<Vec<SlabCountEvent>, ProbeError> {
        let Some(map) = ebpf.map(SLAB_COUNTS_MAP) else {
            return Ok(Vec::new());
        };
        let map_error = |source| ProbeError::Map {
            name: SLAB_COUNTS_MAP,
            source: Box::new(source),
        };
        let map = BpfHashMap::<_, SlabCountKey, SlabCount>::try_from(map).map_err(map_error)?;
        let mut read = Vec::new();
        for entry in &map {
            read.push(entry.map_err(map_error)?);
        }
        Ok(self.changed(read, now_ns))
    }

    fn changed(
        &mut self,
        mut read: Vec<(SlabCountKey, SlabCount)>,
        now_ns: u64,
    ) -> Vec<SlabCountEvent> {
        read.sort_unstable_by_key(|(key, _)| *key);
        read.retain(|(key, count)| {
            let now = (count.allocs, count.frees);
            self.last.insert(*key, now) != Some(now)
        });
        read.into_iter()
            .map(|(key, count)| SlabCountEvent {
                header: EventHeader {
                    ts_ns: now_ns,
                    kind: kind::SLAB_COUNT,
                    tgid: key.tgid,
                    tid: key.tgid,
                    cpu: 0,
                },
                key,
                count,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::CACHE_NAME_BYTES;

    use super::*;

    fn count(allocs: u64, frees: u64) -> SlabCount {
        SlabCount {
            allocs,
            frees,
            bytes_req: allocs * 100,
            object_size: 128,
            req_size: 100,
            name: [0; CACHE_NAME_BYTES],
        }
    }

    #[test]
    fn only_changed_counts_become_events_in_key_order() {
        let a = SlabCountKey {
            tgid: 7,
            flags: 0,
            cache: 0xffff_8880_0000_1000,
        };
        let b = SlabCountKey { tgid: 5, ..a };
        let mut counts = SlabCounts::default();
        let first = counts.changed(vec![(a, count(3, 1)), (b, count(1, 0))], 10);
        assert_eq!(
            first
                .iter()
                .map(|e| (e.header.tgid, e.count.allocs))
                .collect::<Vec<_>>(),
            [(5, 1), (7, 3)]
        );
        assert!(
            first
                .iter()
                .all(|e| e.header.ts_ns == 10 && e.header.kind == kind::SLAB_COUNT)
        );
        // Unchanged: nothing. A free alone is a change.
        assert!(
            counts
                .changed(vec![(a, count(3, 1)), (b, count(1, 0))], 20)
                .is_empty()
        );
        let third = counts.changed(vec![(a, count(3, 2)), (b, count(1, 0))], 30);
        assert_eq!(third.len(), 1);
        assert_eq!((third[0].key, third[0].count.frees), (a, 2));
    }
}
