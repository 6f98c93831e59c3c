//! The `kernel` and `paths` sections of the summary.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    aggregate::kernel::{BuddyModel, CacheStats, FaultStats, KernelStats, SlabModel},
    attribution::join::{Join, SyscallKernel},
    gfp::GfpTable,
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

/// Buddy pages by order, GFP class and migrate type, in the kernel's names.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct BuddyStats {
    /// Blocks allocated.
    pub allocs: u64,
    /// Pages in them (a block of order n is 2^n pages).
    pub pages: u64,
    pub bytes: u64,
    /// Blocks freed, in any context, of those allocated while tracing.
    pub frees: u64,
    pub freed_pages: u64,
    /// Pages allocated while tracing and not freed by the end.
    pub live_pages_at_end: u64,
    /// Blocks by order.
    pub by_order: BTreeMap<u32, u64>,
    /// Pages by GFP class (the kernel's first name for the flags).
    pub by_gfp: BTreeMap<String, u64>,
    /// Pages by the full decoded GFP flags.
    pub by_gfp_flags: BTreeMap<String, u64>,
    /// Pages by migrate type.
    pub by_migratetype: BTreeMap<String, u64>,
}

impl BuddyStats {
    pub fn new(m: &BuddyModel, gfp: &GfpTable) -> Self {
        let mut by_gfp = BTreeMap::<String, u64>::new();
        let mut by_gfp_flags = BTreeMap::<String, u64>::new();
        for (&flags, &pages) in &m.by_gfp_flags {
            let (class, full) = gfp.decode(flags);
            let add = |map: &mut BTreeMap<String, u64>, name| {
                let n = map.entry(name).or_default();
                *n = n.saturating_add(pages);
            };
            add(&mut by_gfp, class);
            add(&mut by_gfp_flags, full);
        }
        let mut by_migratetype = BTreeMap::<String, u64>::new();
        for (&mt, &pages) in &m.by_migratetype {
            let n = by_migratetype.entry(migratetype_name(mt)).or_default();
            *n = n.saturating_add(pages);
        }
        BuddyStats {
            allocs: m.allocs,
            pages: m.pages,
            bytes: m.bytes,
            frees: m.frees,
            freed_pages: m.freed_pages,
            live_pages_at_end: m.live_pages_at_end,
            by_order: m.by_order.clone(),
            by_gfp,
            by_gfp_flags,
            by_migratetype,
        }
    }
}

/// The kernel's migrate-type names for the common values.
fn migratetype_name(mt: i32) -> String {
    match mt {
        0 => "Unmovable".into(),
        1 => "Movable".into(),
        2 => "Reclaimable".into(),
        3 => "HighAtomic".into(),
        n => n.to_string(),
    }
}

/// Slab objects by cache name.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SlabStats {
    pub allocs: u64,
    /// Bytes handed out (the objects' sizes).
    pub bytes: u64,
    /// Bytes asked for: `bytes - bytes_req` is internal fragmentation.
    pub bytes_req: u64,
    pub frees: u64,
    pub live_at_end: u64,
    pub live_bytes_at_end: u64,
    /// Of `allocs`, the objects made outside traced calls, counted in the kernel per cache
    /// instead of sent one by one.
    pub counted_in_kernel: u64,
    /// By cache name; kmalloc objects by their size class (`kmalloc-64`, ...).
    pub by_cache: BTreeMap<String, CacheStats>,
}

impl SlabStats {
    pub fn new(m: &SlabModel) -> Self {
        let mut by_cache = BTreeMap::<String, CacheStats>::new();
        for (key, stats) in m.caches() {
            // Two keys can share a name (a cache literally called `kmalloc-64`): one entry.
            by_cache.entry(key.name()).or_default().add(stats);
        }
        SlabStats {
            allocs: m.allocs,
            bytes: m.bytes,
            bytes_req: m.bytes_req,
            frees: m.frees,
            live_at_end: m.live_at_end,
            live_bytes_at_end: m.live_bytes_at_end,
            counted_in_kernel: m.counted_in_kernel,
            by_cache,
        }
    }
}

/// A kernel allocation path: the kernel stack, innermost first, and what it allocated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KernelStack {
    pub stack: Vec<String>,
    pub pages: u64,
    pub slab_objects: u64,
}

impl From<&crate::facts::KernelPath> for KernelStack {
    fn from(p: &crate::facts::KernelPath) -> Self {
        KernelStack {
            stack: p.stack.clone(),
            pages: p.pages,
            slab_objects: p.slab_objects,
        }
    }
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
    pub fn new(kernel: &KernelStats, join: &Join, gfp: &GfpTable) -> Self {
        let mut faults = kernel.faults.clone();
        let mut resident = join.region_resident_pages.clone();
        for region in REGIONS {
            faults.by_region.entry(region).or_default();
            resident.entry(region).or_default();
        }
        KernelSummary {
            traced: false,
            buddy: BuddyStats::new(&kernel.buddy, gfp),
            slab: SlabStats::new(&kernel.slab),
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
        for (paths, _) in join.sites() {
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
    use tracer_common::{CACHE_NAME_BYTES, EventHeader, InFlight, PageEvent, SlabEvent, kind};

    use crate::attribution::join::SitePaths;

    /// The raw counts get the kernel's names only here: GFP flags decoded with the kernel's
    /// table (each distinct value once), migrate types named, caches by name with two keys of
    /// one name in one entry.
    #[test]
    fn raw_kernel_counts_are_named_in_the_summary() {
        let gfp = GfpTable::from_print_fmt(
            r#"__print_flags(REC->gfp_flags, "|", {( unsigned long)(1UL << 1), "GFP_USERISH"}, {( unsigned long)(1UL << 8), "__GFP_ZERO"})"#,
        );
        let mut k = KernelStats::default();
        for (pfn, order, flags, migratetype) in [
            (1, 0, 0x102, 1),
            (2, 2, 0x2, 1),
            (3, 0, 0x2, 0),
            (4, 0, 0, 7),
        ] {
            k.on_page_alloc(&PageEvent {
                header: EventHeader {
                    kind: kind::PAGE_ALLOC,
                    ..Default::default()
                },
                in_flight: InFlight::default(),
                pfn,
                gfp_flags: flags,
                order,
                migratetype,
                kstack_id: -1,
                reserved: 0,
            });
        }
        let b = BuddyStats::new(&k.buddy, &gfp);
        assert_eq!(
            b.by_gfp,
            BTreeMap::from([("GFP_USERISH".to_string(), 6), ("none".to_string(), 1)])
        );
        assert_eq!(b.by_gfp_flags["GFP_USERISH|__GFP_ZERO"], 1);
        assert_eq!(b.by_gfp_flags["GFP_USERISH"], 5);
        assert_eq!(
            b.by_migratetype,
            BTreeMap::from([
                ("7".to_string(), 1),
                ("Movable".to_string(), 5),
                ("Unmovable".to_string(), 1)
            ])
        );
        assert_eq!((b.allocs, b.pages), (4, 7));

        let object = |ptr, name: &str, flags, bytes| {
            let mut cache = [0u8; CACHE_NAME_BYTES];
            cache[..name.len()].copy_from_slice(name.as_bytes());
            SlabEvent {
                header: EventHeader {
                    kind: kind::SLAB_ALLOC,
                    ..Default::default()
                },
                in_flight: InFlight::default(),
                ptr,
                call_site: 0,
                bytes_req: bytes,
                bytes_alloc: bytes,
                gfp_flags: 0,
                kstack_id: -1,
                flags,
                cache,
            }
        };
        k.on_slab_alloc(&object(0x10, "", tracer_common::SLAB_KMALLOC, 64));
        k.on_slab_alloc(&object(0x20, "kmalloc-64", 0, 64));
        k.on_slab_alloc(&object(0x30, "filp", 0, 256));
        let s = SlabStats::new(&k.slab);
        assert_eq!(s.by_cache.len(), 2, "{:?}", s.by_cache);
        assert_eq!(
            (s.by_cache["kmalloc-64"].allocs, s.by_cache["filp"].bytes),
            (2, 256)
        );
    }

    #[test]
    fn sums_paths_over_sites_and_lists_every_region() {
        let mut join = Join::default();
        join.insert_site(
            0,
            (
                SitePaths {
                    brk_bytes: 100,
                    buddy_pages: 3,
                    ..Default::default()
                },
                Default::default(),
            ),
        );
        join.insert_site(
            1,
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

        let k = KernelSummary::new(&KernelStats::default(), &join, &GfpTable::default());
        let json = serde_json::to_value(&k).unwrap();
        for region in REGIONS {
            assert_eq!(json["faults"]["by_region"][region], 0, "{region}");
        }
        assert_eq!(json["buddy"]["by_order"], serde_json::json!({}));
    }
}
