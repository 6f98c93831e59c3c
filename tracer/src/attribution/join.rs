//! The cross-layer join: from an allocation call site to the syscalls, page faults, buddy pages
//! and slab objects it caused, and which path served its bytes.
//!
//! Kernel-side events carry what was in flight on their thread (the traced syscall and the
//! outermost allocator call, named by their entry times), so:
//! 1. brk/mmap/... calls and kernel allocations made during an allocator call are held per
//!    thread until that call's own event (sent when it returns) names its site;
//! 2. kernel allocations made during a syscall are charged to that syscall;
//! 3. a user page fault is charged, by its address, to the live block it falls in (or to its
//!    region), and so are the pages the kernel allocates while handling it: the first page the
//!    fault brings in is the touched page, now resident;
//! 4. an allocation's bytes are served by the path its address lies in: the brk heap, a
//!    dedicated anonymous mmap, or a thread arena's heap;
//! 5. `munmap`, `madvise(MADV_DONTNEED)` and brk shrinking hand resident pages back.
//!
//! State is bounded by what is live: one pending call and syscall per thread, and one entry per
//! resident page; nothing is a log of events.

use std::collections::BTreeMap;

use foldhash::HashMap as FastMap;

use crate::events::{AllocCall, SyscallCall};
use serde::Serialize;
use tracer_common::{FaultEvent, PageEvent, SlabEvent, Syscall};

use super::resident::PageSet;
use super::space::{AddressSpace, RegionKind};
use crate::aggregate::{
    heap::{HeapStats, SiteId},
    syscalls::{MADV_DONTNEED, MADV_FREE, is_error, page_up},
};

const PAGE: u64 = 4096;
/// User data pages are movable; page tables and other kernel pages are not.
const MIGRATE_MOVABLE: i32 = 1;

/// What a site's calls caused in the kernel, beyond the bytes they returned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Caused {
    pub brk_calls: u64,
    pub brk_grow_bytes: u64,
    pub mmap_calls: u64,
    pub mmap_bytes: u64,
    pub munmap_calls: u64,
    pub mprotect_calls: u64,
    pub page_faults: u64,
    pub buddy_pages: u64,
    pub slab_objects: u64,
    pub slab_bytes: u64,
}

impl Caused {
    pub fn add(&mut self, o: &Caused) {
        self.brk_calls = self.brk_calls.saturating_add(o.brk_calls);
        self.brk_grow_bytes = self.brk_grow_bytes.saturating_add(o.brk_grow_bytes);
        self.mmap_calls = self.mmap_calls.saturating_add(o.mmap_calls);
        self.mmap_bytes = self.mmap_bytes.saturating_add(o.mmap_bytes);
        self.munmap_calls = self.munmap_calls.saturating_add(o.munmap_calls);
        self.mprotect_calls = self.mprotect_calls.saturating_add(o.mprotect_calls);
        self.page_faults = self.page_faults.saturating_add(o.page_faults);
        self.buddy_pages = self.buddy_pages.saturating_add(o.buddy_pages);
        self.slab_objects = self.slab_objects.saturating_add(o.slab_objects);
        self.slab_bytes = self.slab_bytes.saturating_add(o.slab_bytes);
    }
}

/// Which paths served a site, and what it holds in the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SitePaths {
    /// Bytes of its allocations that lie in the brk heap.
    pub brk_bytes: u64,
    /// Bytes in anonymous mmaps (dedicated ones above the mmap threshold).
    pub mmap_bytes: u64,
    /// Bytes in thread arenas' heaps.
    pub thread_arena_bytes: u64,
    /// Bytes elsewhere (file mappings, stacks, unknown).
    pub other_bytes: u64,
    /// Buddy pages charged to it: allocated during its calls, or on first touch of its blocks.
    pub buddy_pages: u64,
    /// Slab objects made during its calls, and their bytes.
    pub slab_objects: u64,
    pub slab_bytes: u64,
    /// Bytes of its blocks' pages resident now (touched, not handed back).
    pub resident_bytes: u64,
}

impl SitePaths {
    /// Adds another site's paths to these (reports merge sites that resolve alike).
    pub fn add(&mut self, o: &SitePaths) {
        self.brk_bytes = self.brk_bytes.saturating_add(o.brk_bytes);
        self.mmap_bytes = self.mmap_bytes.saturating_add(o.mmap_bytes);
        self.thread_arena_bytes = self.thread_arena_bytes.saturating_add(o.thread_arena_bytes);
        self.other_bytes = self.other_bytes.saturating_add(o.other_bytes);
        self.buddy_pages = self.buddy_pages.saturating_add(o.buddy_pages);
        self.slab_objects = self.slab_objects.saturating_add(o.slab_objects);
        self.slab_bytes = self.slab_bytes.saturating_add(o.slab_bytes);
        self.resident_bytes = self.resident_bytes.saturating_add(o.resident_bytes);
    }

    /// "brk", "mmap", "thread_arena", "mixed", or "other".
    pub fn path(&self) -> &'static str {
        let served = [
            (self.brk_bytes, "brk"),
            (self.mmap_bytes, "mmap"),
            (self.thread_arena_bytes, "thread_arena"),
        ];
        let mut used = served.iter().filter(|(b, _)| *b > 0);
        match (used.next(), used.next()) {
            (Some((_, name)), None) => name,
            (Some(_), Some(_)) => "mixed",
            _ => "other",
        }
    }
}

/// Kernel allocations made during one kind of syscall.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyscallKernel {
    pub buddy_pages: u64,
    pub slab_objects: u64,
}

/// Whom a resident page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Site(SiteId),
    Region(RegionKind),
}

/// A fault a thread is handling: the page it touched, whom that page belongs to (None: the
/// allocator call in flight), and whether its page has been brought in yet.
#[derive(Debug, Clone, Copy)]
struct Fault {
    page: u64,
    owner: Option<Owner>,
    brought_in: bool,
}

#[derive(Debug, Default)]
struct PendingCall {
    enter_ns: u64,
    caused: Caused,
    /// Pages first touched during the call.
    touched: Vec<u64>,
}

#[derive(Debug, Default)]
pub struct Join {
    pending_call: FastMap<u32, PendingCall>,
    /// Per thread: the traced syscall in flight and its kernel allocations so far.
    pending_syscall: FastMap<u32, (u64, SyscallKernel)>,
    /// Per thread: the fault being handled.
    faulting: FastMap<u32, Fault>,
    resident: BTreeMap<u64, Owner>,
    /// By site id (see [`crate::aggregate::heap::SiteId`]).
    sites: Vec<(SitePaths, Caused)>,
    /// Resident pages by region kind (of pages touched outside any live block).
    pub region_resident_pages: BTreeMap<&'static str, u64>,
    pub by_syscall: BTreeMap<&'static str, SyscallKernel>,
    /// Of what `madvise` handed back: bytes of pages resident then (first touched while
    /// traced). The syscall's own length counts address space, reserved or not.
    pub madvise_resident_bytes: u64,
    /// Allocations served by each user path: brk heap, dedicated mmap, thread arena, other.
    pub path_allocs: [u64; 4],
}

impl Join {
    fn call(&mut self, tid: u32, enter_ns: u64) -> &mut PendingCall {
        let slot = self.pending_call.entry(tid).or_default();
        if slot.enter_ns != enter_ns {
            // A call whose own event never came (lost, or it is still running): start over.
            *slot = PendingCall {
                enter_ns,
                ..Default::default()
            };
        }
        slot
    }

    /// Every event from a thread other than a page allocation ends the fault it was handling.
    fn end_fault(&mut self, tid: u32) {
        // Without kernel events there is never a fault in flight: no hash for nothing.
        if !self.faulting.is_empty() {
            self.faulting.remove(&tid);
        }
    }

    /// A completed syscall. Call before the address-space model is updated with it.
    pub fn on_syscall(&mut self, e: &SyscallCall, brk_before: Option<u64>) {
        let tid = e.header.tid;
        self.end_fault(tid);
        let syscall = e.syscall;
        let enter_ns = e.header.ts_ns.wrapping_sub(e.duration_ns);
        if let Some((pending_enter, kernel)) = self.pending_syscall.remove(&tid)
            && pending_enter == enter_ns
        {
            let total = self.by_syscall.entry(syscall.name()).or_default();
            total.buddy_pages = total.buddy_pages.saturating_add(kernel.buddy_pages);
            total.slab_objects = total.slab_objects.saturating_add(kernel.slab_objects);
        }
        if is_error(e.ret) {
            return;
        }
        let a = e.args;
        if e.alloc_enter_ns != 0 {
            let c = &mut self.call(tid, e.alloc_enter_ns).caused;
            match syscall {
                Syscall::Brk if a[0] != 0 => {
                    c.brk_calls += 1;
                    c.brk_grow_bytes +=
                        (e.ret as u64).saturating_sub(brk_before.unwrap_or(e.ret as u64));
                }
                Syscall::Mmap => {
                    c.mmap_calls += 1;
                    c.mmap_bytes = c.mmap_bytes.saturating_add(page_up(a[1]));
                }
                Syscall::Munmap => c.munmap_calls += 1,
                Syscall::Mprotect => c.mprotect_calls += 1,
                _ => {}
            }
        }
        match syscall {
            Syscall::Munmap => {
                self.release(a[0], a[0].saturating_add(a[1]));
            }
            Syscall::Madvise if a[2] == MADV_DONTNEED || a[2] == MADV_FREE => {
                let pages = self.release(a[0], a[0].saturating_add(a[1]));
                self.madvise_resident_bytes = self
                    .madvise_resident_bytes
                    .saturating_add(pages.saturating_mul(PAGE));
            }
            Syscall::Brk => {
                if let Some(before) = brk_before
                    && (e.ret as u64) < before
                {
                    // Rounded without wrapping: a break near 2^64 (a crafted recording).
                    self.release(page_up(e.ret as u64), page_up(before));
                }
            }
            Syscall::Mremap => self.relocate(a[0], a[1], a[2], e.ret as u64),
            _ => {}
        }
    }

    /// Resident pages in `[start, end)` are handed back; returns how many there were.
    fn release(&mut self, start: u64, end: u64) -> u64 {
        let start = start & !(PAGE - 1);
        if start >= end {
            return 0;
        }
        let pages: Vec<u64> = self.resident.range(start..end).map(|(&p, _)| p).collect();
        let n = pages.len() as u64;
        for page in pages {
            if let Some(owner) = self.resident.remove(&page) {
                self.unown(owner);
            }
        }
        n
    }

    fn unown(&mut self, owner: Owner) {
        match owner {
            Owner::Site(site) => {
                if let Some((paths, _)) = self.sites.get_mut(site as usize) {
                    paths.resident_bytes = paths.resident_bytes.saturating_sub(PAGE);
                }
            }
            Owner::Region(kind) => {
                if let Some(n) = self.region_resident_pages.get_mut(kind.name()) {
                    *n = n.saturating_sub(1);
                }
            }
        }
    }

    fn own(&mut self, page: u64, owner: Owner) {
        if let Some(old) = self.resident.insert(page, owner) {
            self.unown(old);
        }
        match owner {
            Owner::Site(site) => self.site_mut(site).0.resident_bytes += PAGE,
            Owner::Region(kind) => *self.region_resident_pages.entry(kind.name()).or_default() += 1,
        }
    }

    /// Pages resident before tracing began (`/proc/PID/pagemap` at attach), owned by their
    /// region: a live block on them is resident. At most `MAX_SEEDED_PAGES` (a recording may
    /// claim anything).
    pub fn seed_resident(&mut self, pages: &PageSet, space: &AddressSpace) {
        const MAX_SEEDED_PAGES: u64 = 1 << 22;
        let mut budget = MAX_SEEDED_PAGES;
        for &[first, count] in &pages.runs {
            for i in 0..count.min(budget) {
                let page = first.wrapping_add(i.wrapping_mul(PAGE)) & !(PAGE - 1);
                self.own(page, Owner::Region(space.region(page)));
            }
            budget = budget.saturating_sub(count);
            if budget == 0 {
                return;
            }
        }
    }

    /// mremap moves resident pages with their mapping (or drops those beyond a shrink).
    fn relocate(&mut self, old: u64, old_len: u64, new_len: u64, new: u64) {
        let moved: Vec<(u64, Owner)> = self
            .resident
            .range(old..old.saturating_add(old_len))
            .map(|(&p, &o)| (p, o))
            .collect();
        for (page, owner) in moved {
            self.resident.remove(&page);
            let offset = page - old;
            if offset < new_len {
                self.resident.insert(new.wrapping_add(offset), owner);
            } else {
                self.unown(owner);
            }
        }
    }

    /// A user page fault at `addr`. Its owner is the live block containing it, or its region.
    pub fn on_fault(&mut self, e: &FaultEvent, heap: &mut HeapStats, space: &AddressSpace) {
        let tid = e.header.tid;
        let page = e.address & !(PAGE - 1);
        if e.in_flight.alloc_enter_ns != 0 {
            // Touched by the allocator itself (headers, calloc's zeroing): its call's block.
            self.call(tid, e.in_flight.alloc_enter_ns)
                .caused
                .page_faults += 1;
            self.faulting.insert(
                tid,
                Fault {
                    page,
                    owner: None,
                    brought_in: false,
                },
            );
            return;
        }
        let owner = match heap.block_at(e.address) {
            Some((_, _, site)) => {
                self.site_mut(site).1.page_faults += 1;
                Owner::Site(site)
            }
            None => Owner::Region(space.region(e.address)),
        };
        self.faulting.insert(
            tid,
            Fault {
                page,
                owner: Some(owner),
                brought_in: false,
            },
        );
    }

    /// A buddy allocation in the traced process's context.
    pub fn on_page_alloc(&mut self, e: &PageEvent) {
        let tid = e.header.tid;
        let pages = 1u64 << e.order.min(20);
        if e.in_flight.syscall_enter_ns != 0 {
            let slot = self.pending_syscall.entry(tid).or_default();
            if slot.0 != e.in_flight.syscall_enter_ns {
                *slot = (e.in_flight.syscall_enter_ns, SyscallKernel::default());
            }
            slot.1.buddy_pages = slot.1.buddy_pages.saturating_add(pages);
        }
        // The first movable page a fault brings in is the touched user page; page tables and
        // other kernel pages come on top and are charged, but are not resident user memory.
        let fault = self.faulting.get(&tid).copied();
        let user_page = e.migratetype == MIGRATE_MOVABLE && e.in_flight.syscall_enter_ns == 0;
        let first_touch = fault.filter(|f| user_page && !f.brought_in);
        if let Some(f) = first_touch {
            self.faulting.insert(
                tid,
                Fault {
                    brought_in: true,
                    ..f
                },
            );
        }
        if e.in_flight.alloc_enter_ns != 0 {
            let call = self.call(tid, e.in_flight.alloc_enter_ns);
            call.caused.buddy_pages = call.caused.buddy_pages.saturating_add(pages);
            if let Some(Fault {
                page, owner: None, ..
            }) = first_touch
            {
                call.touched.push(page);
            }
            return;
        }
        let Some(Fault {
            page,
            owner: Some(owner),
            ..
        }) = fault
        else {
            return;
        };
        if let Owner::Site(site) = owner {
            self.site_mut(site).0.buddy_pages += pages;
        }
        if first_touch.is_some() {
            self.own(page, owner);
        }
    }

    /// A slab object made in the traced process's context.
    pub fn on_slab_alloc(&mut self, e: &SlabEvent) {
        let tid = e.header.tid;
        if e.in_flight.syscall_enter_ns != 0 {
            let slot = self.pending_syscall.entry(tid).or_default();
            if slot.0 != e.in_flight.syscall_enter_ns {
                *slot = (e.in_flight.syscall_enter_ns, SyscallKernel::default());
            }
            slot.1.slab_objects += 1;
        }
        if e.in_flight.alloc_enter_ns != 0 {
            let caused = &mut self.call(tid, e.in_flight.alloc_enter_ns).caused;
            caused.slab_objects += 1;
            caused.slab_bytes = caused.slab_bytes.saturating_add(e.bytes_alloc);
        }
    }

    /// An allocator call returned: its site takes what it caused. Call after the heap recorded
    /// it, with the address space as it is now; `site` is where the heap model put the block (none for a free or a failed call).
    pub fn on_alloc(&mut self, e: &AllocCall, space: &AddressSpace, site: Option<SiteId>) {
        let tid = e.header.tid;
        self.end_fault(tid);
        let func = e.func;
        let pending = if self.pending_call.is_empty() {
            None
        } else {
            self.pending_call.remove(&tid)
        };
        let pending = match pending {
            Some(p) if p.enter_ns == e.enter_ns => Some(p),
            Some(p) => {
                self.pending_call.insert(tid, p);
                None
            }
            None => None,
        };
        let Some(site) = site.filter(|_| !func.is_free() && e.ptr != 0) else {
            return;
        };
        let bytes = e.nmemb.saturating_mul(e.size);
        let path = match space.region(e.ptr) {
            RegionKind::Heap => 0,
            RegionKind::AnonMmap => 1,
            RegionKind::ThreadArena => 2,
            _ => 3,
        };
        self.path_allocs[path] = self.path_allocs[path].saturating_add(1);
        let entry = self.site_mut(site);
        let slot = match path {
            0 => &mut entry.0.brk_bytes,
            1 => &mut entry.0.mmap_bytes,
            2 => &mut entry.0.thread_arena_bytes,
            _ => &mut entry.0.other_bytes,
        };
        *slot = slot.saturating_add(bytes);
        if let Some(p) = pending {
            entry.0.buddy_pages = entry.0.buddy_pages.saturating_add(p.caused.buddy_pages);
            entry.0.slab_objects = entry.0.slab_objects.saturating_add(p.caused.slab_objects);
            entry.0.slab_bytes = entry.0.slab_bytes.saturating_add(p.caused.slab_bytes);
            entry.1.add(&p.caused);
            for page in p.touched {
                self.own(page, Owner::Site(site));
            }
        }
    }

    /// The paths of a site, if it has any.
    pub fn site(&self, site: SiteId) -> Option<&(SitePaths, Caused)> {
        self.sites.get(site as usize)
    }

    /// Every site's paths, by site id (sites that never got any may be missing at the end).
    pub fn sites(&self) -> &[(SitePaths, Caused)] {
        &self.sites
    }

    #[cfg(test)]
    pub fn insert_site(&mut self, site: SiteId, paths: (SitePaths, Caused)) {
        *self.site_mut(site) = paths;
    }

    /// A site's paths, made when it is met first.
    fn site_mut(&mut self, site: SiteId) -> &mut (SitePaths, Caused) {
        let i = site as usize;
        if i >= self.sites.len() {
            self.sites.resize_with(i + 1, Default::default);
        }
        &mut self.sites[i]
    }

    /// Bytes of all resident user pages first touched while tracing.
    pub fn resident_bytes(&self) -> u64 {
        self.resident.len() as u64 * PAGE
    }

    /// The process ran a new program: its old address space, and every page in it, is gone.
    pub fn on_exec(&mut self) {
        self.pending_call.clear();
        self.pending_syscall.clear();
        self.faulting.clear();
        self.resident.clear();
        self.region_resident_pages.values_mut().for_each(|n| *n = 0);
        for (paths, _) in &mut self.sites {
            paths.resident_bytes = 0;
        }
    }

    /// Bytes of the resident user pages first touched while tracing whose address passes
    /// `keep`.
    pub fn resident_bytes_where(&self, keep: impl Fn(u64) -> bool) -> u64 {
        self.resident.keys().filter(|&&p| keep(p)).count() as u64 * PAGE
    }

    /// The resident pages first touched while tracing (and not handed back), as a
    /// [`PageSet`]: what resident bytes are split from when the process could not be read.
    pub fn page_set(&self) -> PageSet {
        let mut set = PageSet {
            page_size: PAGE,
            runs: Vec::new(),
        };
        for &page in self.resident.keys() {
            match set.runs.last_mut() {
                Some([first, n]) if first.saturating_add(n.saturating_mul(PAGE)) == page => *n += 1,
                _ => set.runs.push([page, 1]),
            }
        }
        set
    }
}

#[cfg(test)]
#[path = "join_tests.rs"]
mod tests;
