//! The kernel's allocators on the process's behalf: buddy pages, slab objects, user faults.
//!
//! Counted raw, without allocating per event: GFP flags and migrate types as the kernel gave
//! them, caches by an interned key. They become names when the summary is built
//! (`summary::kernel`).

use std::collections::BTreeMap;

use foldhash::HashMap as FastMap;
use serde::Serialize;
use tracer_common::{CACHE_NAME_BYTES, PageEvent, SLAB_KMALLOC, SlabCountEvent, SlabEvent};

const PAGE_BYTES: u64 = 4096;

/// `kmem:mm_page_alloc`/`mm_page_free`: page blocks by order, GFP flags and migrate type.
#[derive(Debug, Clone, Default)]
pub struct BuddyModel {
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
    /// Pages by the raw GFP flags.
    pub by_gfp_flags: FastMap<u64, u64>,
    /// Pages by the raw migrate type.
    pub by_migratetype: BTreeMap<i32, u64>,
    live: FastMap<u64, u32>,
}

/// One slab cache's objects made for the process.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct CacheStats {
    pub allocs: u64,
    pub bytes: u64,
    pub bytes_req: u64,
    pub frees: u64,
    pub live_at_end: u64,
}

impl CacheStats {
    pub fn add(&mut self, o: &CacheStats) {
        self.allocs = self.allocs.saturating_add(o.allocs);
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.bytes_req = self.bytes_req.saturating_add(o.bytes_req);
        self.frees = self.frees.saturating_add(o.frees);
        self.live_at_end = self.live_at_end.saturating_add(o.live_at_end);
    }
}

/// A slab cache as the events tell it, before it has a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheKey {
    /// A kmalloc object: its size class.
    Kmalloc(u64),
    /// A cache the tracepoint names (NUL-padded as the kernel copied it).
    Named([u8; CACHE_NAME_BYTES]),
    /// A cache of a kernel before 6.1, which does not name it: its object size.
    Unnamed(u64),
}

impl CacheKey {
    pub fn of(e: &SlabEvent) -> Self {
        if e.flags & SLAB_KMALLOC != 0 {
            CacheKey::Kmalloc(e.bytes_alloc)
        } else if e.cache[0] == 0 {
            CacheKey::Unnamed(e.bytes_alloc)
        } else {
            CacheKey::Named(e.cache)
        }
    }

    /// The cache's name: the kernel's, or for kmalloc its size class (`kmalloc-64`).
    pub fn name(&self) -> String {
        match self {
            CacheKey::Kmalloc(size) => format!("kmalloc-{size}"),
            CacheKey::Unnamed(size) => format!("cache-{size}"),
            CacheKey::Named(bytes) => {
                let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                String::from_utf8_lossy(&bytes[..len]).into_owned()
            }
        }
    }
}

/// `kmem:kmem_cache_alloc`/`kmalloc` and their frees.
#[derive(Debug, Clone, Default)]
pub struct SlabModel {
    pub allocs: u64,
    /// Bytes handed out (the objects' sizes).
    pub bytes: u64,
    /// Bytes asked for: `bytes - bytes_req` is internal fragmentation.
    pub bytes_req: u64,
    pub frees: u64,
    pub live_at_end: u64,
    pub live_bytes_at_end: u64,
    /// Of `allocs`, the objects counted in the kernel rather than sent one by one.
    pub counted_in_kernel: u64,
    /// Each cache met, by the id its objects carry in `live`.
    caches: Vec<(CacheKey, CacheStats)>,
    ids: FastMap<CacheKey, u32>,
    /// Live objects by address: their cache's id and bytes.
    live: FastMap<u64, (u32, u64)>,
    /// Objects the kernel counted, by (flags, the kernel's cache key): the last counts read.
    counted: FastMap<(u32, u64), Counted>,
}

/// A kernel-side count as last read, and what it added to the totals.
#[derive(Debug, Clone, Copy, Default)]
struct Counted {
    allocs: u64,
    frees: u64,
    bytes_req: u64,
    /// Live objects and their size, as added to the live totals.
    live: u64,
    size: u64,
}

impl SlabModel {
    /// Every cache met, with its objects.
    pub fn caches(&self) -> impl Iterator<Item = &(CacheKey, CacheStats)> {
        self.caches.iter()
    }

    fn id(&mut self, key: CacheKey) -> u32 {
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = self.caches.len() as u32;
        self.caches.push((key, CacheStats::default()));
        self.ids.insert(key, id);
        id
    }
}

/// User page faults by the kind of region they hit.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct FaultStats {
    pub user: u64,
    pub by_region: BTreeMap<&'static str, u64>,
}

/// Kernel allocations made along one kernel stack (`--kernel-stacks`).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct KStackCount {
    pub pages: u64,
    pub slab_objects: u64,
}

#[derive(Debug, Clone, Default)]
pub struct KernelStats {
    pub buddy: BuddyModel,
    pub slab: SlabModel,
    pub faults: FaultStats,
    /// By kernel stack id.
    pub kstacks: FastMap<i32, KStackCount>,
}

impl KernelStats {
    pub fn on_page_alloc(&mut self, e: &PageEvent) {
        let b = &mut self.buddy;
        let pages = 1u64 << e.order.min(20);
        b.allocs += 1;
        b.pages = b.pages.saturating_add(pages);
        b.bytes = b.bytes.saturating_add(pages * PAGE_BYTES);
        *b.by_order.entry(e.order).or_default() += 1;
        *b.by_gfp_flags.entry(e.gfp_flags).or_default() += pages;
        *b.by_migratetype.entry(e.migratetype).or_default() += pages;
        // A pfn handed out again without a free we saw replaces the old record.
        if let Some(old) = b.live.insert(e.pfn, e.order) {
            b.live_pages_at_end = b.live_pages_at_end.saturating_sub(1u64 << old.min(20));
        }
        b.live_pages_at_end = b.live_pages_at_end.saturating_add(pages);
        if e.kstack_id >= 0 {
            self.kstacks.entry(e.kstack_id).or_default().pages += pages;
        }
    }

    /// Whether page `pfn` was allocated here and is not freed yet.
    pub fn has_page(&self, pfn: u64) -> bool {
        self.buddy.live.contains_key(&pfn)
    }

    /// Whether slab object `ptr` was allocated here and is not freed yet.
    pub fn has_object(&self, ptr: u64) -> bool {
        self.slab.live.contains_key(&ptr)
    }

    pub fn on_page_free(&mut self, e: &PageEvent) {
        let b = &mut self.buddy;
        if let Some(order) = b.live.remove(&e.pfn) {
            let pages = 1u64 << order.min(20);
            b.frees += 1;
            b.freed_pages = b.freed_pages.saturating_add(pages);
            b.live_pages_at_end = b.live_pages_at_end.saturating_sub(pages);
        }
    }

    pub fn on_slab_alloc(&mut self, e: &SlabEvent) {
        let s = &mut self.slab;
        let id = s.id(CacheKey::of(e));
        s.allocs = s.allocs.saturating_add(1);
        s.bytes = s.bytes.saturating_add(e.bytes_alloc);
        s.bytes_req = s.bytes_req.saturating_add(e.bytes_req);
        let c = &mut s.caches[id as usize].1;
        c.allocs = c.allocs.saturating_add(1);
        c.bytes = c.bytes.saturating_add(e.bytes_alloc);
        c.bytes_req = c.bytes_req.saturating_add(e.bytes_req);
        c.live_at_end = c.live_at_end.saturating_add(1);
        s.live_at_end = s.live_at_end.saturating_add(1);
        s.live_bytes_at_end = s.live_bytes_at_end.saturating_add(e.bytes_alloc);
        if e.kstack_id >= 0 {
            self.kstacks.entry(e.kstack_id).or_default().slab_objects += 1;
        }
        if let Some((old, bytes)) = s.live.insert(e.ptr, (id, e.bytes_alloc)) {
            s.live_at_end = s.live_at_end.saturating_sub(1);
            s.live_bytes_at_end = s.live_bytes_at_end.saturating_sub(bytes);
            let old = &mut s.caches[old as usize].1;
            old.live_at_end = old.live_at_end.saturating_sub(1);
        }
    }

    pub fn on_slab_free(&mut self, e: &SlabEvent) {
        let s = &mut self.slab;
        if let Some((id, bytes)) = s.live.remove(&e.ptr) {
            s.frees = s.frees.saturating_add(1);
            s.live_at_end = s.live_at_end.saturating_sub(1);
            s.live_bytes_at_end = s.live_bytes_at_end.saturating_sub(bytes);
            let c = &mut s.caches[id as usize].1;
            c.frees = c.frees.saturating_add(1);
            c.live_at_end = c.live_at_end.saturating_sub(1);
        }
    }

    /// Slab objects counted in the kernel: the counts are totals since tracing began, so what
    /// changed since the last one read is added (a count smaller than before, which only a
    /// damaged recording has, changes nothing).
    pub fn on_slab_count(&mut self, e: &SlabCountEvent) {
        let s = &mut self.slab;
        let c = &e.count;
        let key = if e.key.flags & SLAB_KMALLOC != 0 {
            CacheKey::Kmalloc(c.object_size)
        } else if c.name[0] == 0 {
            CacheKey::Unnamed(c.object_size)
        } else {
            CacheKey::Named(c.name)
        };
        let id = s.id(key);
        let last = s.counted.entry((e.key.flags, e.key.cache)).or_default();
        let now = Counted {
            allocs: c.allocs.max(last.allocs),
            frees: c.frees.max(last.frees),
            bytes_req: c.bytes_req.max(last.bytes_req),
            live: c
                .allocs
                .max(last.allocs)
                .saturating_sub(c.frees.max(last.frees)),
            size: c.object_size,
        };
        let allocs = now.allocs - last.allocs;
        let frees = now.frees - last.frees;
        let bytes = allocs.saturating_mul(now.size);
        let bytes_req = now.bytes_req - last.bytes_req;
        let (live_bytes, last_live_bytes) = (
            now.live.saturating_mul(now.size),
            last.live.saturating_mul(last.size),
        );
        let (last_live, live) = (last.live, now.live);
        *last = now;
        s.counted_in_kernel = s.counted_in_kernel.saturating_add(allocs);
        let cache = &mut s.caches[id as usize].1;
        for (stats_allocs, stats_bytes, stats_req, stats_frees, stats_live) in [
            (
                &mut s.allocs,
                &mut s.bytes,
                &mut s.bytes_req,
                &mut s.frees,
                &mut s.live_at_end,
            ),
            (
                &mut cache.allocs,
                &mut cache.bytes,
                &mut cache.bytes_req,
                &mut cache.frees,
                &mut cache.live_at_end,
            ),
        ] {
            *stats_allocs = stats_allocs.saturating_add(allocs);
            *stats_bytes = stats_bytes.saturating_add(bytes);
            *stats_req = stats_req.saturating_add(bytes_req);
            *stats_frees = stats_frees.saturating_add(frees);
            *stats_live = stats_live.saturating_sub(last_live).saturating_add(live);
        }
        s.live_bytes_at_end = s
            .live_bytes_at_end
            .saturating_sub(last_live_bytes)
            .saturating_add(live_bytes);
    }

    /// A user page fault in a region of kind `region` (its name).
    pub fn on_fault(&mut self, region: &'static str) {
        self.faults.user += 1;
        *self.faults.by_region.entry(region).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::{EventHeader, InFlight, kind};

    use super::*;

    fn page(kind: u32, pfn: u64, order: u32, gfp_flags: u64) -> PageEvent {
        PageEvent {
            header: EventHeader {
                kind,
                ..Default::default()
            },
            in_flight: InFlight::default(),
            pfn,
            gfp_flags,
            order,
            migratetype: 1,
            kstack_id: -1,
            reserved: 0,
        }
    }

    fn slab(kind: u32, ptr: u64, name: &str, req: u64, alloc: u64) -> SlabEvent {
        let mut cache = [0u8; CACHE_NAME_BYTES];
        cache[..name.len()].copy_from_slice(name.as_bytes());
        SlabEvent {
            header: EventHeader {
                kind,
                ..Default::default()
            },
            in_flight: InFlight::default(),
            ptr,
            call_site: 0,
            bytes_req: req,
            bytes_alloc: alloc,
            gfp_flags: 0,
            kstack_id: -1,
            flags: if name.is_empty() { SLAB_KMALLOC } else { 0 },
            cache,
        }
    }

    #[test]
    fn caches_are_named_by_the_kernel_or_by_object_size() {
        let name = |e: &SlabEvent| CacheKey::of(e).name();
        let mut e = slab(kind::SLAB_ALLOC, 0x10, "vm_area_struct", 176, 184);
        assert_eq!(name(&e), "vm_area_struct");
        e.flags = SLAB_KMALLOC;
        assert_eq!(name(&e), "kmalloc-184");
        // Before Linux 6.1 kmem_cache_alloc has no name.
        e.flags = 0;
        e.cache = [0; CACHE_NAME_BYTES];
        assert_eq!(name(&e), "cache-184");
    }

    #[test]
    fn buddy_pages_by_order_gfp_and_pfn_reuse() {
        let mut k = KernelStats::default();
        k.on_page_alloc(&page(kind::PAGE_ALLOC, 100, 0, 0x102));
        k.on_page_alloc(&page(kind::PAGE_ALLOC, 200, 2, 0x2));
        k.on_page_free(&page(kind::PAGE_FREE, 100, 0, 0));
        // pfn 100 reused: a new allocation of the same frame.
        k.on_page_alloc(&page(kind::PAGE_ALLOC, 100, 0, 0x2));
        // A free of a frame never seen allocated is not counted.
        k.on_page_free(&page(kind::PAGE_FREE, 999, 0, 0));
        let b = &k.buddy;
        assert_eq!((b.allocs, b.pages, b.bytes), (3, 6, 6 * 4096));
        assert_eq!((b.frees, b.freed_pages, b.live_pages_at_end), (1, 1, 5));
        assert_eq!(b.by_order, BTreeMap::from([(0, 2), (2, 1)]));
        // Raw flags and migrate types: named only in the summary.
        assert_eq!((b.by_gfp_flags[&0x102], b.by_gfp_flags[&0x2]), (1, 5));
        assert_eq!(b.by_migratetype, BTreeMap::from([(1, 6)]));
        assert!(k.kstacks.is_empty(), "no stacks without --kernel-stacks");
        let mut with_stack = page(kind::PAGE_ALLOC, 300, 1, 0x2);
        with_stack.kstack_id = 4;
        k.on_page_alloc(&with_stack);
        let mut obj = slab(kind::SLAB_ALLOC, 0x5000, "filp", 232, 256);
        obj.kstack_id = 4;
        k.on_slab_alloc(&obj);
        assert_eq!(
            k.kstacks[&4],
            KStackCount {
                pages: 2,
                slab_objects: 1
            }
        );
    }

    /// The objects of the cache called `name`.
    fn cache_named(s: &SlabModel, name: &str) -> CacheStats {
        s.caches()
            .find(|(key, _)| key.name() == name)
            .map_or_else(|| panic!("no cache {name}"), |(_, c)| *c)
    }

    #[test]
    fn slab_objects_by_cache_with_fragmentation() {
        let mut k = KernelStats::default();
        k.on_slab_alloc(&slab(kind::SLAB_ALLOC, 0x1000, "vm_area_struct", 176, 184));
        k.on_slab_alloc(&slab(kind::SLAB_ALLOC, 0x2000, "vm_area_struct", 176, 184));
        k.on_slab_alloc(&slab(kind::SLAB_ALLOC, 0x3000, "", 40, 64));
        k.on_slab_free(&slab(kind::SLAB_FREE, 0x1000, "", 0, 0));
        k.on_slab_free(&slab(kind::SLAB_FREE, 0x9000, "", 0, 0));
        let s = &k.slab;
        assert_eq!(
            (s.allocs, s.bytes, s.bytes_req, s.frees, s.live_at_end),
            (3, 432, 392, 1, 2)
        );
        let cache = |name: &str| cache_named(s, name);
        assert_eq!(
            cache("vm_area_struct"),
            CacheStats {
                allocs: 2,
                bytes: 368,
                bytes_req: 352,
                frees: 1,
                live_at_end: 1
            }
        );
        assert_eq!(cache("kmalloc-64").allocs, 1);
        assert_eq!(s.caches().count(), 2, "one id per cache");
    }

    fn count(flags: u32, cache: u64, name: &str, allocs: u64, frees: u64) -> SlabCountEvent {
        let mut bytes = [0u8; CACHE_NAME_BYTES];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        SlabCountEvent {
            header: EventHeader {
                kind: kind::SLAB_COUNT,
                ..Default::default()
            },
            key: tracer_common::SlabCountKey {
                tgid: 1,
                flags,
                cache,
            },
            count: tracer_common::SlabCount {
                allocs,
                frees,
                bytes_req: allocs * 500,
                object_size: 512,
                req_size: 500,
                name: bytes,
            },
        }
    }

    /// Counts are totals since tracing began: each read adds what changed, objects sent as
    /// events and objects counted in the kernel add up in one cache, and a count that went
    /// down (a damaged recording) changes nothing.
    #[test]
    fn kernel_counts_add_what_changed() {
        let mut k = KernelStats::default();
        k.on_slab_alloc(&slab(
            kind::SLAB_ALLOC,
            0x1000,
            "skbuff_small_head",
            500,
            512,
        ));
        k.on_slab_count(&count(0, 0xffff_1000, "skbuff_small_head", 10, 4));
        k.on_slab_count(&count(0, 0xffff_1000, "skbuff_small_head", 25, 24));
        // The same count read again: nothing changes.
        k.on_slab_count(&count(0, 0xffff_1000, "skbuff_small_head", 25, 24));
        // Another cache of the same name (two caches, one name) and a kmalloc class.
        k.on_slab_count(&count(0, 0xffff_2000, "skbuff_small_head", 3, 0));
        k.on_slab_count(&count(SLAB_KMALLOC, 512, "", 7, 7));
        let s = &k.slab;
        assert_eq!(
            (s.allocs, s.bytes, s.bytes_req, s.frees),
            (1 + 25 + 3 + 7, 36 * 512, 36 * 500, 24 + 7)
        );
        assert_eq!((s.live_at_end, s.live_bytes_at_end), (1 + 1 + 3, 5 * 512));
        assert_eq!(s.counted_in_kernel, 25 + 3 + 7);
        let cache = |name: &str| cache_named(s, name);
        assert_eq!(
            cache("skbuff_small_head"),
            CacheStats {
                allocs: 29,
                bytes: 29 * 512,
                bytes_req: 29 * 500,
                frees: 24,
                live_at_end: 5
            }
        );
        assert_eq!(
            (
                cache("kmalloc-512").allocs,
                cache("kmalloc-512").live_at_end
            ),
            (7, 0)
        );
        // Fewer than before: ignored; then more frees: live goes down.
        k.on_slab_count(&count(0, 0xffff_1000, "skbuff_small_head", 2, 1));
        assert_eq!((k.slab.allocs, k.slab.live_at_end), (36, 5));
        k.on_slab_count(&count(0, 0xffff_1000, "skbuff_small_head", 25, 25));
        assert_eq!(
            (k.slab.frees, k.slab.live_at_end, k.slab.live_bytes_at_end),
            (32, 4, 4 * 512)
        );
        // A free read before its allocation (two fields copied while another CPU ran) is
        // made good by the next read.
        k.on_slab_count(&count(0, 0xffff_2000, "skbuff_small_head", 3, 4));
        assert_eq!(k.slab.live_at_end, 1);
        k.on_slab_count(&count(0, 0xffff_2000, "skbuff_small_head", 5, 4));
        assert_eq!(k.slab.live_at_end, 2);
    }

    #[test]
    fn faults_by_region() {
        let mut k = KernelStats::default();
        k.on_fault("heap");
        k.on_fault("anon_mmap");
        k.on_fault("anon_mmap");
        assert_eq!(k.faults.user, 3);
        assert_eq!(
            k.faults.by_region,
            BTreeMap::from([("heap", 1), ("anon_mmap", 2)])
        );
    }
}
