//! The `kernel` and `paths` sections of the summary.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    aggregate::kernel::{BuddyStats, FaultStats, KernelStats, SlabStats},
    attribution::join::{Join, SyscallKernel},
};

/// Region kinds, always all listed.
const REGIONS: [&str; 6] = [
    "heap",
    "anon_mmap",
    "thread_arena",
    "file",
    "stack",
    "other",
];

/// A kernel allocation path: the kernel stack, innermost first, and what it allocated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct KernelStack {
    pub stack: Vec<String>,
    pub pages: u64,
    pub slab_objects: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KernelSummary {
    /// Whether the kmem and fault tracepoints were attached (not with `--no-kernel`, or on a
    /// kernel without them).
    pub traced: bool,
    pub buddy: BuddyStats,
    pub slab: SlabStats,
    pub faults: FaultStats,
    /// Pages and slab objects the kernel allocated inside each traced syscall.
    pub by_syscall: BTreeMap<&'static str, SyscallKernel>,
    /// Resident pages touched outside any live block, by region kind.
    pub resident_pages_by_region: BTreeMap<&'static str, u64>,
    /// With `--kernel-stacks`: the kernel paths that allocated most, symbolized.
    pub stacks: Vec<KernelStack>,
    /// Caches the kernel merged: a cache's objects (named after the merge's first cache) may
    /// be any of these.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub slab_merges: BTreeMap<String, Vec<String>>,
}

impl KernelSummary {
    /// A cache's name, with the caches merged into it: `pool_workqueue (merged with
    /// skbuff_fclone_cache, ...)`.
    pub fn cache_name(&self, name: &str) -> String {
        match self.slab_merges.get(name) {
            Some(others) => format!("{name} (merged with {})", others.join(", ")),
            None => name.to_string(),
        }
    }
}

impl KernelSummary {
    pub fn new(kernel: &KernelStats, join: &Join) -> Self {
        let mut faults = kernel.faults.clone();
        let mut resident = join.region_resident_pages.clone();
        for region in REGIONS {
            faults.by_region.entry(region).or_default();
            resident.entry(region).or_default();
        }
        KernelSummary {
            traced: false,
            buddy: kernel.buddy.clone(),
            slab: kernel.slab.clone(),
            faults,
            by_syscall: join.by_syscall.clone(),
            resident_pages_by_region: resident,
            stacks: Vec::new(),
            slab_merges: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BytesPath {
    pub bytes: u64,
    /// Allocations served (each allocator call that returned a block there).
    pub allocs: u64,
    pub sites: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PagesPath {
    pub pages: u64,
    pub sites: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ObjectsPath {
    pub objects: u64,
    pub sites: u64,
}

/// The four paths side by side, summed over every call site.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PathsSummary {
    /// Allocated bytes served from the brk heap, and the sites that got them.
    pub brk: BytesPath,
    /// Allocated bytes served by dedicated mmaps.
    pub mmap: BytesPath,
    /// Allocated bytes served from thread arenas (mmapped heaps).
    pub thread_arena: BytesPath,
    /// Buddy pages charged to sites.
    pub buddy: PagesPath,
    /// Slab objects charged to sites.
    pub slab: ObjectsPath,
}

impl PathsSummary {
    pub fn new(join: &Join) -> Self {
        let mut p = PathsSummary::default();
        let count = |sites: &mut u64, n: u64| *sites += u64::from(n > 0);
        [p.brk.allocs, p.mmap.allocs, p.thread_arena.allocs] = [
            join.path_allocs[0],
            join.path_allocs[1],
            join.path_allocs[2],
        ];
        for (paths, _) in join.sites.values() {
            p.brk.bytes = p.brk.bytes.saturating_add(paths.brk_bytes);
            count(&mut p.brk.sites, paths.brk_bytes);
            p.mmap.bytes = p.mmap.bytes.saturating_add(paths.mmap_bytes);
            count(&mut p.mmap.sites, paths.mmap_bytes);
            p.thread_arena.bytes = p
                .thread_arena
                .bytes
                .saturating_add(paths.thread_arena_bytes);
            count(&mut p.thread_arena.sites, paths.thread_arena_bytes);
            p.buddy.pages += paths.buddy_pages;
            count(&mut p.buddy.sites, paths.buddy_pages);
            p.slab.objects += paths.slab_objects;
            count(&mut p.slab.sites, paths.slab_objects);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{aggregate::heap::SiteKey, attribution::join::SitePaths};

    #[test]
    fn sums_paths_over_sites_and_lists_every_region() {
        let mut join = Join::default();
        let key = |caller| SiteKey {
            stack_id: 1,
            caller,
        };
        join.sites.insert(
            key(1),
            (
                SitePaths {
                    brk_bytes: 100,
                    buddy_pages: 3,
                    ..Default::default()
                },
                Default::default(),
            ),
        );
        join.sites.insert(
            key(2),
            (
                SitePaths {
                    mmap_bytes: 200_000,
                    buddy_pages: 50,
                    slab_objects: 4,
                    ..Default::default()
                },
                Default::default(),
            ),
        );
        join.path_allocs = [4, 1, 0, 2];
        let p = PathsSummary::new(&join);
        assert_eq!(
            p.brk,
            BytesPath {
                bytes: 100,
                allocs: 4,
                sites: 1
            }
        );
        assert_eq!(
            p.mmap,
            BytesPath {
                bytes: 200_000,
                allocs: 1,
                sites: 1
            }
        );
        assert_eq!(p.thread_arena, BytesPath::default());
        assert_eq!(
            p.buddy,
            PagesPath {
                pages: 53,
                sites: 2
            }
        );
        assert_eq!(
            p.slab,
            ObjectsPath {
                objects: 4,
                sites: 1
            }
        );

        let k = KernelSummary::new(&KernelStats::default(), &join);
        let json = serde_json::to_value(&k).unwrap();
        for region in REGIONS {
            assert_eq!(json["faults"]["by_region"][region], 0, "{region}");
        }
        assert_eq!(json["buddy"]["by_order"], serde_json::json!({}));
    }
}
