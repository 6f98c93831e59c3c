//! `--system`: every process on the machine, counted in the kernel and sent as nothing. The
//! syscall, fault and kmem programs call these first when the run is a system one: each hit
//! adds to its process's counts in a per-CPU map (no atomics, no ring), and a page block
//! remembers the process it was allocated in, so that its free, wherever it happens, goes
//! back to that process.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::map,
    maps::{Array, LruPerCpuHashMap, PerCpuArray},
};
use tracer_common::{
    CountsSlot, MAX_PAGE_BITS, MAX_SYSTEM_PROCESSES, ProcessCounts, SYSTEM_SLOTS as SLOTS, Syscall,
    config_flags,
};

use crate::maps::page_bits;

#[map(name = "SYSTEM_COUNTS")]
static SYSTEM_COUNTS: LruPerCpuHashMap<u32, ProcessCounts> =
    LruPerCpuHashMap::with_max_entries(MAX_SYSTEM_PROCESSES, 0);

/// Each CPU's counts of the processes it ran last, by tgid modulo the slots.
#[map(name = "SYSTEM_SLOTS")]
static SYSTEM_SLOTS: PerCpuArray<CountsSlot> = PerCpuArray::with_max_entries(SLOTS, 0);

/// Each CPU's object sizes of the slab caches it allocated from last: (cache, size) by the
/// cache's address; reading a size from the cache itself costs a probe read a hit.
#[map(name = "SYSTEM_CACHE_SIZES")]
static CACHE_SIZES: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(CACHE_SIZE_SLOTS, 0);

const CACHE_SIZE_SLOTS: u32 = 256;

/// The object size of slab cache `cache`, read by `read` on a miss.
#[inline(always)]
pub fn cache_size(cache: u64, read: impl FnOnce() -> Option<u32>) -> u64 {
    let index = crate::maps::fibonacci_slot(cache, 8) & (CACHE_SIZE_SLOTS - 1);
    let Some(slot) = CACHE_SIZES.get_ptr_mut(index) else {
        return u64::from(read().unwrap_or(0));
    };
    // SAFETY: this CPU's value of a per-CPU array; see `add`.
    let slot = unsafe { &mut *slot };
    if slot[0] == cache {
        return slot[1];
    }
    let size = u64::from(read().unwrap_or(0));
    *slot = [cache, size];
    size
}

/// The process (tgid + 1) each live page block was allocated in; sized by userspace.
#[map(name = "PAGE_OWNERS")]
static PAGE_OWNERS: Array<u32> = Array::with_max_entries(1, 0);

/// The run's `--system` flags, in one read: 0 when it is not one.
#[inline(always)]
pub fn mode() -> u32 {
    crate::maps::config_flags_now() & (config_flags::SYSTEM | config_flags::SYSTEM_EMPTY)
}

/// A `--system` run whose programs return at once (the floor the bench compares with).
#[inline(always)]
pub fn is_empty(mode: u32) -> bool {
    mode & config_flags::SYSTEM_EMPTY != 0
}

#[inline(always)]
fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// This CPU's counts of process `tgid`: its slot, taken from the process there before (whose
/// counts go to the hash map) when it is another's.
#[inline(always)]
fn counts_of(tgid: u32) -> Option<*mut ProcessCounts> {
    let slot = SYSTEM_SLOTS.get_ptr_mut(tgid & (SLOTS - 1))?;
    // SAFETY: this CPU's value of a per-CPU array; see `add`.
    let slot = unsafe { &mut *slot };
    let tag = u64::from(tgid) + 1;
    if slot.tag != tag {
        if slot.tag != 0 {
            evict((slot.tag - 1) as u32, &slot.counts);
        }
        slot.tag = tag;
        slot.counts = ProcessCounts::ZERO;
    }
    Some(&raw mut slot.counts)
}

/// Adds a slot's counts of `tgid` to its entry in the hash map.
#[inline(never)]
fn evict(tgid: u32, counts: &ProcessCounts) {
    match SYSTEM_COUNTS.get_ptr_mut(tgid) {
        // SAFETY: this CPU's value in a per-CPU map.
        Some(p) => unsafe { (*p).add(counts) },
        None => {
            let _ = SYSTEM_COUNTS.insert(tgid, *counts, 0);
        }
    }
}

#[inline(always)]
fn add(tgid: u32, f: impl FnOnce(&mut ProcessCounts)) {
    if let Some(p) = counts_of(tgid) {
        // SAFETY: this CPU's value in a per-CPU map; a tracepoint program is not preempted by
        // another on the same CPU while it runs.
        f(unsafe { &mut *p });
    }
}

/// The current process entered `syscall` with arguments `len` and `new_len` (the second and
/// third).
#[inline(always)]
pub fn syscall(syscall: Syscall, len: u64, new_len: u64) {
    let tgid = current_tgid();
    match syscall {
        Syscall::Mmap => add(tgid, |c| {
            c.mmap_calls += 1;
            c.mmap_bytes = c.mmap_bytes.wrapping_add(len);
        }),
        Syscall::Munmap => add(tgid, |c| {
            c.munmap_calls += 1;
            c.munmap_bytes = c.munmap_bytes.wrapping_add(len);
        }),
        Syscall::Mremap => add(tgid, |c| {
            c.mremap_calls += 1;
            // Growth by mremap maps more: counted with mmap's bytes, a shrink with munmap's.
            if new_len > len {
                c.mmap_bytes = c.mmap_bytes.wrapping_add(new_len - len);
            } else {
                c.munmap_bytes = c.munmap_bytes.wrapping_add(len - new_len);
            }
        }),
        Syscall::Brk => add(tgid, |c| c.brk_calls += 1),
        _ => {}
    }
}

/// A user page fault of the current process.
#[inline(always)]
pub fn fault() {
    add(current_tgid(), |c| c.faults += 1);
}

/// Page `pfn`'s slot in PAGE_OWNERS, when the map is in use.
#[inline(always)]
fn owner_slot(pfn: u64) -> Option<*mut u32> {
    let bits = page_bits();
    if bits == 0 || bits > MAX_PAGE_BITS {
        return None;
    }
    PAGE_OWNERS.get_ptr_mut((pfn & ((1u64 << bits) - 1)) as u32)
}

/// A page block of `order` given while the current process ran.
#[inline(always)]
pub fn page_alloc(pfn: u64, order: u32) {
    let tgid = current_tgid();
    add(tgid, |c| c.pages_allocated += 1 << (order & 31));
    if let Some(slot) = owner_slot(pfn) {
        // SAFETY: an array value; only this block's allocation and free write it, never at
        // once.
        unsafe { core::ptr::write_volatile(slot, tgid.wrapping_add(1)) };
    }
}

/// A page block of `order` freed, in any context: counted to the process it was allocated in.
#[inline(always)]
pub fn page_free(pfn: u64, order: u32) {
    let Some(slot) = owner_slot(pfn) else {
        return;
    };
    // SAFETY: as in `page_alloc`.
    let owner = unsafe { core::ptr::read_volatile(slot) };
    if owner == 0 {
        return;
    }
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(slot, 0) };
    add(owner - 1, |c| c.pages_freed += 1 << (order & 31));
}

/// A slab object of `bytes` allocated while the current process ran.
#[inline(always)]
pub fn slab_alloc(bytes: u64) {
    add(current_tgid(), |c| {
        c.slab_objects += 1;
        c.slab_bytes = c.slab_bytes.wrapping_add(bytes);
    });
}
