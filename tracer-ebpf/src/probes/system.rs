//! `--system`: every process on the machine, counted in the kernel and sent as nothing. The
//! syscall, fault and kmem programs call these first when the run is a system one: each hit
//! adds to its process's counts in a per-CPU map (no atomics, no ring), and a page block
//! remembers the process it was allocated in, so that its free, wherever it happens, goes
//! back to that process.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::map,
    maps::{Array, LruPerCpuHashMap},
};
use tracer_common::{MAX_PAGE_BITS, MAX_SYSTEM_PROCESSES, ProcessCounts, Syscall, config_flags};

use crate::maps::{config_flag, page_bits};

#[map(name = "SYSTEM_COUNTS")]
static SYSTEM_COUNTS: LruPerCpuHashMap<u32, ProcessCounts> =
    LruPerCpuHashMap::with_max_entries(MAX_SYSTEM_PROCESSES, 0);

/// The process (tgid + 1) each live page block was allocated in; sized by userspace.
#[map(name = "PAGE_OWNERS")]
static PAGE_OWNERS: Array<u32> = Array::with_max_entries(1, 0);

/// Whether this is a `--system` run.
#[inline(always)]
pub fn on() -> bool {
    config_flag(config_flags::SYSTEM)
}

#[inline(always)]
fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// This CPU's counts of process `tgid`, made when it has none.
#[inline(always)]
fn counts_of(tgid: u32) -> Option<*mut ProcessCounts> {
    if let Some(p) = SYSTEM_COUNTS.get_ptr_mut(tgid) {
        return Some(p);
    }
    SYSTEM_COUNTS.insert(tgid, ProcessCounts::ZERO, 0).ok()?;
    SYSTEM_COUNTS.get_ptr_mut(tgid)
}

#[inline(always)]
fn add(tgid: u32, f: impl FnOnce(&mut ProcessCounts)) {
    if config_flag(config_flags::SYSTEM_EMPTY) {
        return;
    }
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
    if config_flag(config_flags::SYSTEM_EMPTY) {
        return None;
    }
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
