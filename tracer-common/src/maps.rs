//! The maps userspace opens by name, and the sizes both sides agree on.

use core::mem::size_of;

use crate::{
    DWARF_STACKS_MAP, MAX_SYSCALL_ARGS, SLAB_COUNTS_MAP, UNWIND_MAPS_MAP, UNWIND_ROWS_MAP,
};

/// Every map userspace opens by name: a test checks each is in the eBPF object.
pub const MAP_NAMES: [&str; 20] = [
    EVENTS_MAP,
    COUNTERS_MAP,
    CONTROL_MAP,
    PENDING_SYSCALLS_MAP,
    ALLOC_STATE_MAP,
    STACKS_MAP,
    SAMPLED_MAP,
    SAMPLE_TABLE_MAP,
    KSTACKS_MAP,
    LIVE_PAGES_MAP,
    LIVE_PAGE_BITS_MAP,
    FOLLOWED_MAP,
    UNWIND_ROWS_MAP,
    UNWIND_MAPS_MAP,
    DWARF_STACKS_MAP,
    FAULT_STASH_MAP,
    SLAB_COUNTS_MAP,
    SYSTEM_COUNTS_MAP,
    SYSTEM_SLOTS_MAP,
    PAGE_OWNERS_MAP,
];

/// Name of the ring buffer that carries every event to userspace.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the per-CPU array of counters (see [`counter`](crate::counter)).
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Name of the one-slot array userspace writes while the programs run: slot 0 nonzero holds a
/// launched command at each exec ([`config_flags::HOLD_EXEC`](crate::config_flags::HOLD_EXEC)); cleared when tracing ends, so
/// that probes still attached during teardown stop nothing.
pub const CONTROL_MAP: &str = "CONTROL";
/// Name of the per-thread map of syscalls entered but not yet returned.
pub const PENDING_SYSCALLS_MAP: &str = "PENDING_SYSCALLS";
/// Name of the read-only global holding the [`Config`](crate::Config).
pub const CONFIG_GLOBAL: &str = "CONFIG";

/// Size of the event ring buffer in bytes (a power of two, a multiple of the page size).
pub const EVENTS_RING_BYTES: u32 = 8 << 20;
/// Entries of the per-thread pending-syscall map.
pub const MAX_PENDING_SYSCALLS: u32 = 16384;

/// Name of the per-thread map of allocator calls in flight.
pub const ALLOC_STATE_MAP: &str = "ALLOC_STATE";
/// Name of the stack-trace map that allocation events refer to by id.
pub const STACKS_MAP: &str = "STACKS";
/// Entries of the stack-trace map.
pub const MAX_STACKS: u32 = 16384;
/// Entries of the per-thread allocator-call map.
pub const MAX_ALLOC_THREADS: u32 = 16384;
/// Name of the map of sampled blocks still live (`--sample`).
pub const SAMPLED_MAP: &str = "SAMPLED";
/// Entries of [`SAMPLED_MAP`] when sampling (1 otherwise): sampled blocks live at once.
pub const MAX_SAMPLED_BLOCKS: u32 = 1 << 18;
/// Name of the table of sampling intervals (`--sample`).
pub const SAMPLE_TABLE_MAP: &str = "SAMPLE_TABLE";
/// Entries of [`SAMPLE_TABLE_MAP`]: quantiles of the exponential distribution.
pub const SAMPLE_TABLE_LEN: u32 = 1024;
/// Fixed-point scale of [`SAMPLE_TABLE_MAP`]'s entries: the table's mean is this.
pub const SAMPLE_TABLE_ONE: u32 = 1 << 16;

/// Name of the kernel stack-trace map (`--kernel-stacks`).
pub const KSTACKS_MAP: &str = "KSTACKS";
/// Entries of the maps of pages and slab objects allocated by the traced process and not yet
/// freed, which let frees in any context be matched.
pub const MAX_LIVE_KERNEL_OBJECTS: u32 = 1 << 18;

/// Name of the hash map of page blocks given to the traced processes, used when the bitmap is
/// not ([`Config::page_bits`](crate::Config::page_bits) 0): page frame to order.
pub const LIVE_PAGES_MAP: &str = "LIVE_PAGES";
/// Name of the bitmap of page blocks given to the traced processes, one bit per page frame
/// (see [`Config::page_bits`](crate::Config::page_bits)): an array of `u64` words.
pub const LIVE_PAGE_BITS_MAP: &str = "LIVE_PAGE_BITS";
/// The largest [`Config::page_bits`](crate::Config::page_bits): 2^30 page frames (4 TiB of 4 KiB pages), a 128 MiB
/// bitmap. Past it the hash map is used.
pub const MAX_PAGE_BITS: u32 = 30;

/// Name of the map of the processes `--follow` traces besides the target: tgid to parent tgid.
pub const FOLLOWED_MAP: &str = "FOLLOWED";
/// `--system`: each process's [`ProcessCounts`] by tgid, per CPU (an LRU: a process long gone
/// gives way).
pub const SYSTEM_COUNTS_MAP: &str = "SYSTEM_COUNTS";
/// Entries of [`SYSTEM_COUNTS_MAP`].
pub const MAX_SYSTEM_PROCESSES: u32 = 16384;
/// `--system`: each CPU's counts of the processes it ran last, by tgid modulo
/// [`SYSTEM_SLOTS`] ([`CountsSlot`]): an array slot is found without hashing; a process that
/// takes the slot of another moves that one's counts into [`SYSTEM_COUNTS_MAP`] first.
pub const SYSTEM_SLOTS_MAP: &str = "SYSTEM_SLOTS";
/// Slots of [`SYSTEM_SLOTS_MAP`] per CPU: a power of two.
pub const SYSTEM_SLOTS: u32 = 4096;

/// A slot of [`SYSTEM_SLOTS_MAP`]: a process's counts on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountsSlot {
    /// The process's tgid + 1; 0 for an empty slot.
    pub tag: u64,
    pub counts: ProcessCounts,
}
/// `--system`: the process each live page block was allocated in (its tgid + 1; 0: none), by
/// the page's name masked as [`LIVE_PAGE_BITS_MAP`] masks it; `1 << Config::page_bits` entries.
pub const PAGE_OWNERS_MAP: &str = "PAGE_OWNERS";

/// `--system`: what one process did, counted in the kernel (summed over CPUs by userspace).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessCounts {
    pub mmap_calls: u64,
    /// Bytes asked for (the length argument).
    pub mmap_bytes: u64,
    pub munmap_calls: u64,
    pub munmap_bytes: u64,
    pub mremap_calls: u64,
    pub brk_calls: u64,
    /// User page faults.
    pub faults: u64,
    /// Pages of the blocks the buddy allocator gave while the process ran.
    pub pages_allocated: u64,
    /// Of those, pages freed again (by anyone).
    pub pages_freed: u64,
    /// Slab objects allocated while it ran, and their bytes.
    pub slab_objects: u64,
    pub slab_bytes: u64,
}

impl ProcessCounts {
    pub const ZERO: ProcessCounts = ProcessCounts {
        mmap_calls: 0,
        mmap_bytes: 0,
        munmap_calls: 0,
        munmap_bytes: 0,
        mremap_calls: 0,
        brk_calls: 0,
        faults: 0,
        pages_allocated: 0,
        pages_freed: 0,
        slab_objects: 0,
        slab_bytes: 0,
    };

    /// Adds another CPU's counts (wrapping, as the kernel's do).
    pub fn add(&mut self, o: &ProcessCounts) {
        self.mmap_calls = self.mmap_calls.wrapping_add(o.mmap_calls);
        self.mmap_bytes = self.mmap_bytes.wrapping_add(o.mmap_bytes);
        self.munmap_calls = self.munmap_calls.wrapping_add(o.munmap_calls);
        self.munmap_bytes = self.munmap_bytes.wrapping_add(o.munmap_bytes);
        self.mremap_calls = self.mremap_calls.wrapping_add(o.mremap_calls);
        self.brk_calls = self.brk_calls.wrapping_add(o.brk_calls);
        self.faults = self.faults.wrapping_add(o.faults);
        self.pages_allocated = self.pages_allocated.wrapping_add(o.pages_allocated);
        self.pages_freed = self.pages_freed.wrapping_add(o.pages_freed);
        self.slab_objects = self.slab_objects.wrapping_add(o.slab_objects);
        self.slab_bytes = self.slab_bytes.wrapping_add(o.slab_bytes);
    }
}
/// Entries of [`FOLLOWED_MAP`]: processes traced at once besides the target.
pub const MAX_FOLLOWED: u32 = 8192;

/// Name of the per-CPU map holding a fault not yet sent (one [`FaultEvent`](crate::FaultEvent) per CPU, its
/// `header.kind` 0 when empty): read once more when tracing ends.
pub const FAULT_STASH_MAP: &str = "FAULT_STASH";

/// Per-thread state of the outermost allocator call in flight.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocState {
    pub func: u32,
    /// How many probed allocator calls are in flight on this thread (nested calls included).
    pub depth: u32,
    pub nmemb: u64,
    pub size: u64,
    pub old_ptr: u64,
    /// posix_memalign: where the result will be stored.
    pub out_ptr: u64,
    /// Stack pointer at the outermost entry, to recognise a stale state after a missed return.
    pub sp: u64,
    pub caller: u64,
    pub stack_id: i64,
    pub enter_ns: u64,
}
const _: () = assert!(size_of::<AllocState>() == 72);

/// What `sys_enter_*` stores per thread until `sys_exit_*`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingSyscall {
    pub enter_ns: u64,
    pub syscall: u32,
    pub reserved: u32,
    pub args: [u64; MAX_SYSCALL_ARGS],
}
const _: () = assert!(size_of::<PendingSyscall>() == 64);
