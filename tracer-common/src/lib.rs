//! Wire types shared by tracer's eBPF programs and its userspace.
//!
//! Every type that crosses the kernel/user boundary is defined here once: `#[repr(C)]`, `Copy`,
//! without implicit padding, and with its size pinned by a const assertion so that a change on
//! one side cannot silently disagree with the other. Kinds are plain `u32`s on the wire and are
//! decoded with `TryFrom<u32>`.
#![no_std]

use core::mem::size_of;

mod counted;
pub use counted::{
    LiveObject, MAX_SLAB_COUNTS, SLAB_COUNTED, SLAB_COUNTS_MAP, SlabCount, SlabCountEvent,
    SlabCountKey,
};

/// Every map userspace opens by name: a test checks each is in the eBPF object.
pub const MAP_NAMES: [&str; 17] = [
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
];

/// Name of the ring buffer that carries every event to userspace.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the per-CPU array of counters (see [`counter`]).
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Name of the one-slot array userspace writes while the programs run: slot 0 nonzero holds a
/// launched command at each exec ([`config_flags::HOLD_EXEC`]); cleared when tracing ends, so
/// that probes still attached during teardown stop nothing.
pub const CONTROL_MAP: &str = "CONTROL";
/// Name of the per-thread map of syscalls entered but not yet returned.
pub const PENDING_SYSCALLS_MAP: &str = "PENDING_SYSCALLS";
/// Name of the read-only global holding the [`Config`].
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
/// Bytes of a path carried by an [`OpenEvent`], NUL included.
pub const PATH_BYTES: usize = 256;

/// Event kinds: the first field of every event's header.
pub mod kind {
    /// A [`super::SyscallEvent`].
    pub const SYSCALL: u32 = 1;
    /// An [`super::AllocEvent`].
    pub const ALLOC: u32 = 2;
    /// An [`super::OpenEvent`].
    pub const OPEN: u32 = 3;
    /// A [`super::PageEvent`]: `kmem:mm_page_alloc`.
    pub const PAGE_ALLOC: u32 = 4;
    /// A [`super::PageEvent`]: `kmem:mm_page_free` of a page allocated while tracing.
    pub const PAGE_FREE: u32 = 5;
    /// A [`super::SlabEvent`]: `kmem:kmem_cache_alloc` or `kmem:kmalloc`.
    pub const SLAB_ALLOC: u32 = 6;
    /// A [`super::SlabEvent`]: `kmem:kmem_cache_free` or `kmem:kfree` of an object allocated
    /// while tracing.
    pub const SLAB_FREE: u32 = 7;
    /// A [`super::FaultEvent`]: `exceptions:page_fault_user`.
    pub const FAULT: u32 = 8;
    /// An [`super::ExecEvent`]: `sched:sched_process_exec`, the process ran a new program.
    pub const EXEC: u32 = 9;
    /// A [`super::ProcessEvent`]: `task:task_newtask`, a traced process created a child
    /// process (`--follow`), which is traced from now on.
    pub const FORK: u32 = 10;
    /// A [`super::ProcessEvent`]: `sched:sched_process_exit` of a traced process's last thread
    /// (`--follow`).
    pub const EXIT: u32 = 11;
    /// A [`super::HeldEvent`]: the process is stopped until userspace continues it.
    pub const HELD: u32 = 12;
    /// A [`super::SlabCountEvent`]: slab objects counted in the kernel, as userspace read
    /// them (see [`super::SLAB_COUNTS_MAP`]).
    pub const SLAB_COUNT: u32 = 13;
    /// A [`super::FaultPageEvent`]: a fault and the first page block allocated while it was
    /// handled, in one record.
    pub const FAULT_PAGE: u32 = 14;
}

/// Name of the kernel stack-trace map (`--kernel-stacks`).
pub const KSTACKS_MAP: &str = "KSTACKS";
/// Entries of the maps of pages and slab objects allocated by the traced process and not yet
/// freed, which let frees in any context be matched.
pub const MAX_LIVE_KERNEL_OBJECTS: u32 = 1 << 18;
/// Bytes of a slab cache name carried by a [`SlabEvent`], NUL included.
pub const CACHE_NAME_BYTES: usize = 32;

/// Bits of [`Config::flags`].
pub mod config_flags {
    /// Record a kernel stack id with page and slab allocations.
    pub const KERNEL_STACKS: u32 = 1;
    /// The kmem tracepoints are attached.
    pub const KMEM: u32 = 2;
    /// Record the user stack of every page fault (`--fault-stacks`).
    pub const FAULT_STACKS: u32 = 4;
    /// `kmem:kmem_cache_alloc` has the cache's `name` (Linux 6.1 and later).
    pub const CACHE_NAMES: u32 = 8;
    /// Stop the process (SIGSTOP) when it runs a new program, until userspace has probed the
    /// new image and continues it: for launched commands, whose parent is tracer.
    pub const HOLD_EXEC: u32 = 16;
    /// `--follow`: the child processes of traced processes are traced too (kept in
    /// [`super::FOLLOWED_MAP`]), and every traced process's fork and exit is an event.
    pub const FOLLOW: u32 = 32;
    /// Walk allocation stacks with the unwind tables ([`super::UNWIND_MAPS_MAP`]), frame
    /// pointers where there are none.
    pub const DWARF: u32 = 64;
    /// The allocator uprobes are attached (not `--mode kernel`): only then can an allocator
    /// call be in flight, so only then do the kernel programs look one up.
    pub const ALLOCATOR_PROBES: u32 = 128;
    /// Count slab objects made outside traced calls in [`super::SLAB_COUNTS_MAP`] instead of
    /// sending each (not with `--kernel-stacks`, whose stacks are per object).
    pub const COUNT_SLAB: u32 = 256;
}

/// Name of the hash map of page blocks given to the traced processes, used when the bitmap is
/// not ([`Config::page_bits`] 0): page frame to order.
pub const LIVE_PAGES_MAP: &str = "LIVE_PAGES";
/// Name of the bitmap of page blocks given to the traced processes, one bit per page frame
/// (see [`Config::page_bits`]): an array of `u64` words.
pub const LIVE_PAGE_BITS_MAP: &str = "LIVE_PAGE_BITS";
/// The largest [`Config::page_bits`]: 2^30 page frames (4 TiB of 4 KiB pages), a 128 MiB
/// bitmap. Past it the hash map is used.
pub const MAX_PAGE_BITS: u32 = 30;

/// Name of the map of the processes `--follow` traces besides the target: tgid to parent tgid.
pub const FOLLOWED_MAP: &str = "FOLLOWED";
/// Entries of [`FOLLOWED_MAP`]: processes traced at once besides the target.
pub const MAX_FOLLOWED: u32 = 8192;

/// Indices into the per-CPU counters array. Each counts occurrences on one CPU; userspace sums.
pub mod counter {
    /// An event could not be reserved in the ring buffer: it is lost.
    pub const RINGBUF_DROPPED: u32 = 0;
    /// A syscall return arrived without its entry (entered before attaching, or entry evicted).
    pub const SYSCALL_UNPAIRED_EXIT: u32 = 1;
    /// A syscall entry could not be stored.
    pub const SYSCALL_ENTRY_STORE_FAILED: u32 = 2;
    /// A tracepoint field could not be read.
    pub const READ_FAILED: u32 = 3;
    /// An allocator return arrived without its entry (entered before attaching).
    pub const ALLOC_UNPAIRED_EXIT: u32 = 4;
    /// An allocator call's state could not be stored: the call is lost.
    pub const ALLOC_STATE_STORE_FAILED: u32 = 5;
    /// A stack could not be walked (the event is still counted, without a stack).
    pub const STACK_FAILED: u32 = 6;
    /// An allocator call nested in another on the same thread, counted as part of the outer one.
    pub const ALLOC_NESTED: u32 = 7;
    /// A page or slab object could not be remembered, so its free will not be matched.
    pub const KERNEL_LIVE_FULL: u32 = 8;
    /// `--sample`: an outermost allocator call that was not sampled.
    pub const ALLOC_UNSAMPLED: u32 = 9;
    /// `--sample`: a sampled block could not be remembered, so its free will not be seen.
    pub const SAMPLED_FULL: u32 = 10;
    /// The traced process created a child process (not a thread), which is not traced.
    pub const CHILD_PROCESSES: u32 = 11;
    /// A stack hashed to the slot of another one in the stack map, so it was not stored.
    pub const STACK_COLLIDED: u32 = 12;
    /// The stack map had no free entry for a new stack.
    pub const STACK_MAP_FULL: u32 = 13;
    /// `--follow`: a child process could not be added to the followed set: it is not traced.
    pub const FOLLOW_FULL: u32 = 14;
    /// The unwinder stopped at its frame limit with more stack to walk.
    pub const UNWIND_TRUNCATED: u32 = 15;
    /// A walked stack hashed to the id of another one: it was stored by frame pointer instead.
    pub const UNWIND_COLLIDED: u32 = 16;
    /// The map of walked stacks had no free entry: the stack was stored by frame pointer
    /// instead.
    pub const UNWIND_MAP_FULL: u32 = 17;
    /// Number of counters.
    pub const COUNT: u32 = 18;
}

/// The header that starts every event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// `bpf_ktime_get_ns()` when the event completed (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// One of [`kind`].
    pub kind: u32,
    /// Process id (kernel tgid).
    pub tgid: u32,
    /// Thread id (kernel pid).
    pub tid: u32,
    /// CPU the event was recorded on.
    pub cpu: u32,
}
const _: () = assert!(size_of::<EventHeader>() == 24);

/// The memory-management syscalls tracer follows. Discriminants are fixed: they are on the wire
/// and index [`Config::syscalls`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Syscall {
    Brk = 1,
    Mmap = 2,
    Munmap = 3,
    Mremap = 4,
    /// Followed so that file mappings can be named: `mmap` gets a descriptor, `openat` its path.
    Openat = 5,
    Mprotect = 6,
    Madvise = 7,
}

impl Syscall {
    /// Every traced syscall, in discriminant order.
    pub const ALL: [Syscall; 7] = [
        Syscall::Brk,
        Syscall::Mmap,
        Syscall::Munmap,
        Syscall::Mremap,
        Syscall::Openat,
        Syscall::Mprotect,
        Syscall::Madvise,
    ];

    /// The name used by the kernel's `syscalls:sys_enter_<name>` tracepoints.
    pub const fn name(self) -> &'static str {
        match self {
            Syscall::Brk => "brk",
            Syscall::Mmap => "mmap",
            Syscall::Munmap => "munmap",
            Syscall::Mremap => "mremap",
            Syscall::Openat => "openat",
            Syscall::Mprotect => "mprotect",
            Syscall::Madvise => "madvise",
        }
    }

    /// How many of the syscall's arguments tracer records.
    pub const fn arg_count(self) -> usize {
        match self {
            Syscall::Brk => 1,
            Syscall::Mmap => 6,
            Syscall::Munmap => 2,
            Syscall::Mremap => 5,
            Syscall::Openat => 4,
            Syscall::Mprotect => 3,
            Syscall::Madvise => 3,
        }
    }
}

impl TryFrom<u32> for Syscall {
    type Error = u32;

    fn try_from(v: u32) -> Result<Self, u32> {
        Ok(match v {
            1 => Syscall::Brk,
            2 => Syscall::Mmap,
            3 => Syscall::Munmap,
            4 => Syscall::Mremap,
            5 => Syscall::Openat,
            6 => Syscall::Mprotect,
            7 => Syscall::Madvise,
            other => return Err(other),
        })
    }
}

/// Maximum number of syscall arguments.
pub const MAX_SYSCALL_ARGS: usize = 6;
/// Slots in [`Config::syscalls`]: one per [`Syscall`] discriminant, slot 0 unused.
pub const SYSCALL_SLOTS: usize = 8;

/// A completed syscall: its arguments from `sys_enter_*`, its result from `sys_exit_*`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallEvent {
    pub header: EventHeader,
    /// A [`Syscall`] discriminant.
    pub syscall: u32,
    /// Id in the user stack map of the stack that made the call, or negative if none.
    pub stack_id: i32,
    /// Arguments in the kernel's order; unused ones are zero.
    pub args: [u64; MAX_SYSCALL_ARGS],
    /// The syscall's return value (negative errno on failure).
    pub ret: i64,
    /// Time from entry to return.
    pub duration_ns: u64,
    /// Entry time of the allocator call in flight on the thread (see [`AllocEvent::enter_ns`]),
    /// or 0: this syscall was made by that call.
    pub alloc_enter_ns: u64,
}
const _: () = assert!(size_of::<SyscallEvent>() == 104);

/// The traced process replaced its program image (`execve`): the new image is mapped, not yet
/// run.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// Whether the process was stopped for userspace to probe the new image first.
    pub held: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<ExecEvent>() == 32);

/// The process stopped itself (SIGSTOP) for userspace to act before it runs on, and waits for
/// SIGCONT. Follows, in the ring, the event it was stopped for. A live control, not recorded.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldEvent {
    pub header: EventHeader,
    /// One of [`held`].
    pub reason: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<HeldEvent>() == 32);

/// Why a process was held ([`HeldEvent::reason`]).
pub mod held {
    /// A launched or followed process mapped code (its loader mapping a library, dlopen):
    /// userspace gives the mapping its unwind table before the code runs, so that its first
    /// allocations are walked whole.
    pub const MAPPED_CODE: u32 = 1;
}

/// One row of a compiled unwind table (see `tracer::unwind`): from `pc` (an address of the
/// file's own, as its ELF headers lay it out) up to the next row's, how to find the canonical
/// frame address and the caller's frame pointer. The return address is always at CFA - 8
/// (x86-64); rows whose unwind information says otherwise are [`unwind::CFA_UNKNOWN`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindRow {
    pub pc: u64,
    /// Added to the register [`UnwindRow::cfa`] names.
    pub cfa_offset: i32,
    /// [`unwind::RBP_AT_CFA`]: the caller's rbp is saved at CFA + this.
    pub rbp_offset: i16,
    /// One of the `unwind::CFA_*`.
    pub cfa: u8,
    /// One of the `unwind::RBP_*`.
    pub rbp: u8,
}
const _: () = assert!(size_of::<UnwindRow>() == 16);

/// Rows per value of [`UNWIND_ROWS_MAP`]: one lookup finds a chunk, the rest is memory.
pub const UNWIND_CHUNK_ROWS: usize = 4096;
/// Values of [`UNWIND_ROWS_MAP`] (a million rows: 16 MiB).
pub const MAX_UNWIND_CHUNKS: u32 = 256;
/// Name of the array of unwind rows, in chunks of [`UNWIND_CHUNK_ROWS`]: every table, each
/// at its own run of row indices.
pub const UNWIND_ROWS_MAP: &str = "UNWIND_ROWS";
/// Name of the map of each traced process's executable mappings with unwind tables.
pub const UNWIND_MAPS_MAP: &str = "UNWIND_MAPS";
/// Executable mappings with tables per process.
pub const MAX_UNWIND_MAPPINGS: usize = 128;
/// Name of the map of stacks the unwinder walked, by id (ids from [`DWARF_STACK_ID_BASE`]).
pub const DWARF_STACKS_MAP: &str = "DWARF_STACKS";
/// Stack ids of [`DWARF_STACKS_MAP`] start here, above any id of the kernel's stack map.
pub const DWARF_STACK_ID_BASE: i32 = 1 << 30;
/// Frames an unwound stack keeps: where it started, and 64 callers above it.
pub const MAX_DWARF_FRAMES: usize = 65;

/// One chunk of [`UNWIND_ROWS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UnwindChunk {
    pub rows: [UnwindRow; UNWIND_CHUNK_ROWS],
}
const _: () = assert!(size_of::<UnwindChunk>() == 16 * UNWIND_CHUNK_ROWS);

/// An executable mapping of a process whose file has a table: addresses in `[start, end)`
/// are the table's `pc` plus `bias`; its rows are `rows` from index `first_row`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindMapping {
    pub start: u64,
    pub end: u64,
    pub bias: u64,
    pub first_row: u32,
    pub rows: u32,
}
const _: () = assert!(size_of::<UnwindMapping>() == 32);

/// A process's mappings with tables, sorted by `start`; the first `count` are set.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UnwindMaps {
    pub count: u32,
    /// Always 0: where the kernel's search of `mappings` starts. Read from the map, it is a
    /// number the verifier does not know, so it checks the search's paths together instead of
    /// each of its 2^7 outcomes (with its own constant index) through the rest of the walk.
    pub search_from: u32,
    pub mappings: [UnwindMapping; MAX_UNWIND_MAPPINGS],
}
const _: () = assert!(size_of::<UnwindMaps>() == 8 + 32 * MAX_UNWIND_MAPPINGS);

/// A stack the unwinder walked: where it started (inside the allocator), then the return
/// addresses, innermost (the allocator's caller) first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DwarfStack {
    pub len: u32,
    /// Frames found by frame pointer where no table covered the code.
    pub fp_frames: u32,
    pub frames: [u64; MAX_DWARF_FRAMES],
}
const _: () = assert!(size_of::<DwarfStack>() == 8 + 8 * MAX_DWARF_FRAMES);

/// The rules of an [`UnwindRow`].
pub mod unwind {
    /// No rule tracer can follow (an expression, a register other than rsp or rbp), or no
    /// unwind information here: the walk falls back to the frame pointer.
    pub const CFA_UNKNOWN: u8 = 0;
    /// CFA = rsp + offset.
    pub const CFA_RSP: u8 = 1;
    /// CFA = rbp + offset.
    pub const CFA_RBP: u8 = 2;
    /// A PLT entry: CFA = rsp + 8, plus 8 more once past the entry's push (rip & 15 >= 11),
    /// the one expression compilers emit for `.plt`.
    pub const CFA_PLT: u8 = 3;
    /// The caller's rbp is still in rbp.
    pub const RBP_SAME: u8 = 0;
    /// The caller's rbp is saved at CFA + rbp_offset.
    pub const RBP_AT_CFA: u8 = 1;
    /// The caller's rbp cannot be recovered (a rule tracer does not follow).
    pub const RBP_UNKNOWN: u8 = 2;
}

/// A traced process created a child process ([`kind::FORK`], from the parent) or ended
/// ([`kind::EXIT`], from its last thread).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessEvent {
    pub header: EventHeader,
    /// FORK: the child's pid (its tgid). EXIT: the process's own.
    pub pid: u32,
    /// EXIT: the status as `wait` reports it (`code << 8`, or the signal number), or -1 when it
    /// could not be read. FORK: the low half of the clone flags.
    pub status: i32,
}
const _: () = assert!(size_of::<ProcessEvent>() == 32);

/// A successful `openat`: the descriptor and the path it was opened with.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenEvent {
    pub header: EventHeader,
    /// The new descriptor.
    pub fd: i32,
    /// The directory descriptor the path is relative to (`AT_FDCWD` is -100).
    pub dirfd: i32,
    /// NUL-terminated path as the program passed it.
    pub path: [u8; PATH_BYTES],
}
const _: () = assert!(size_of::<OpenEvent>() == 32 + PATH_BYTES);

/// The allocator functions tracer probes. Discriminants are fixed: they are on the wire and are
/// the uprobes' attach cookies.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AllocFn {
    Malloc = 1,
    Calloc = 2,
    Realloc = 3,
    Reallocarray = 4,
    PosixMemalign = 5,
    AlignedAlloc = 6,
    Memalign = 7,
    Valloc = 8,
    Pvalloc = 9,
    /// Every `operator new` and `operator new[]`: plain, aligned, nothrow.
    OperatorNew = 10,
    Free = 11,
    /// Every `operator delete` and `operator delete[]`: plain, sized, aligned.
    OperatorDelete = 12,
}

impl AllocFn {
    pub const ALL: [AllocFn; 12] = [
        AllocFn::Malloc,
        AllocFn::Calloc,
        AllocFn::Realloc,
        AllocFn::Reallocarray,
        AllocFn::PosixMemalign,
        AllocFn::AlignedAlloc,
        AllocFn::Memalign,
        AllocFn::Valloc,
        AllocFn::Pvalloc,
        AllocFn::OperatorNew,
        AllocFn::Free,
        AllocFn::OperatorDelete,
    ];

    /// Whether the function releases memory rather than allocating it.
    pub const fn is_free(self) -> bool {
        matches!(self, AllocFn::Free | AllocFn::OperatorDelete)
    }

    /// The name used in reports and in the JSON summary.
    pub const fn name(self) -> &'static str {
        match self {
            AllocFn::Malloc => "malloc",
            AllocFn::Calloc => "calloc",
            AllocFn::Realloc => "realloc",
            AllocFn::Reallocarray => "reallocarray",
            AllocFn::PosixMemalign => "posix_memalign",
            AllocFn::AlignedAlloc => "aligned_alloc",
            AllocFn::Memalign => "memalign",
            AllocFn::Valloc => "valloc",
            AllocFn::Pvalloc => "pvalloc",
            AllocFn::OperatorNew => "operator_new",
            AllocFn::Free => "free",
            AllocFn::OperatorDelete => "operator_delete",
        }
    }
}

impl TryFrom<u32> for AllocFn {
    type Error = u32;

    fn try_from(v: u32) -> Result<Self, u32> {
        AllocFn::ALL
            .get((v as usize).wrapping_sub(1))
            .copied()
            .ok_or(v)
    }
}

/// One outermost call of an allocator function, reported when it returns (allocations) or when
/// it is entered (frees, which have no result).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocEvent {
    pub header: EventHeader,
    /// An [`AllocFn`] discriminant.
    pub func: u32,
    /// Id in the stack-trace map of the user stack at entry, or negative if none.
    pub stack_id: i32,
    /// Elements requested: calloc's and reallocarray's count, 1 for the others.
    pub nmemb: u64,
    /// Bytes requested per element.
    pub size: u64,
    /// The block returned (0 when the call failed), or the block freed.
    pub ptr: u64,
    /// realloc/reallocarray: the block passed in.
    pub old_ptr: u64,
    /// The return address at entry: the direct caller, which a frame-pointer walk from inside
    /// the allocator misses.
    pub caller: u64,
    /// When the outermost call was entered: with the thread id, it names the call, so kernel
    /// events made during it can be joined to it.
    pub enter_ns: u64,
}
const _: () = assert!(size_of::<AllocEvent>() == 80);

/// What was in flight on the thread when a kernel event happened, as entry times that name the
/// calls (with the thread id): the traced syscall, the outermost allocator call. 0 for none.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InFlight {
    pub syscall_enter_ns: u64,
    pub alloc_enter_ns: u64,
}
const _: () = assert!(size_of::<InFlight>() == 16);

/// A buddy-allocator page block allocated or freed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageEvent {
    pub header: EventHeader,
    pub in_flight: InFlight,
    /// Names the page block, to pair its allocation and free: its frame number from the perf
    /// tracepoints, its `struct page` address over that struct's size from the raw ones (the
    /// same one-to-one naming, shifted).
    pub pfn: u64,
    pub gfp_flags: u64,
    /// The block is 2^order pages.
    pub order: u32,
    pub migratetype: i32,
    /// Kernel stack id, or negative.
    pub kstack_id: i32,
    pub reserved: u32,
}
const _: () = assert!(size_of::<PageEvent>() == 72);

/// [`SlabEvent::flags`]: the object came from `kmalloc` (its cache is named by size).
pub const SLAB_KMALLOC: u32 = 1;

/// A slab object allocated or freed.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlabEvent {
    pub header: EventHeader,
    pub in_flight: InFlight,
    pub ptr: u64,
    pub call_site: u64,
    pub bytes_req: u64,
    pub bytes_alloc: u64,
    pub gfp_flags: u64,
    /// Kernel stack id, or negative.
    pub kstack_id: i32,
    /// [`SLAB_KMALLOC`] or 0.
    pub flags: u32,
    /// The cache name for `kmem_cache_alloc`, NUL-terminated; empty for kmalloc.
    pub cache: [u8; CACHE_NAME_BYTES],
}
const _: () = assert!(size_of::<SlabEvent>() == 120);

/// A user page fault.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultEvent {
    pub header: EventHeader,
    pub in_flight: InFlight,
    pub address: u64,
    pub ip: u64,
    /// The fault's error code bits (x86: present, write, user, ...).
    pub error_code: u32,
    /// Id in the user stack map of the faulting stack (`--fault-stacks`), or negative.
    pub stack_id: i32,
}
const _: () = assert!(size_of::<FaultEvent>() == 64);

/// A fault and the page block its thread was given next on the same CPU, the two events one
/// reservation: a first touch costs one record instead of two. The kernel holds each fault
/// back (per CPU) until that CPU's next event, so the records of a CPU keep their order;
/// `fault.header.kind` is [`kind::FAULT_PAGE`], and `page.header` repeats the fault's stamp
/// with kind [`kind::PAGE_ALLOC`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultPageEvent {
    pub fault: FaultEvent,
    pub page: PageEvent,
}
const _: () = assert!(size_of::<FaultPageEvent>() == 136);

/// Name of the per-CPU map holding a fault not yet sent (one [`FaultEvent`] per CPU, its
/// `header.kind` 0 when empty): read once more when tracing ends.
pub const FAULT_STASH_MAP: &str = "FAULT_STASH";

/// Field offsets of the kmem and fault tracepoints, from their tracefs formats.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KmemOffsets {
    pub page_alloc_pfn: u16,
    pub page_alloc_order: u16,
    pub page_alloc_gfp: u16,
    pub page_alloc_migratetype: u16,
    pub page_free_pfn: u16,
    pub page_free_order: u16,
    pub page_free_batched_pfn: u16,
    pub cache_alloc_call_site: u16,
    pub cache_alloc_ptr: u16,
    pub cache_alloc_name: u16,
    pub cache_alloc_bytes_req: u16,
    pub cache_alloc_bytes_alloc: u16,
    pub cache_alloc_gfp: u16,
    pub cache_free_ptr: u16,
    pub kmalloc_call_site: u16,
    pub kmalloc_ptr: u16,
    pub kmalloc_bytes_req: u16,
    pub kmalloc_bytes_alloc: u16,
    pub kmalloc_gfp: u16,
    pub kfree_ptr: u16,
    pub fault_address: u16,
    pub fault_ip: u16,
    pub fault_error_code: u16,
    /// `task:task_newtask`'s `clone_flags`.
    pub newtask_clone_flags: u16,
    /// `task:task_newtask`'s `pid`: the new task's.
    pub newtask_pid: u16,
    /// `sched:sched_process_exit`'s `group_dead`: the last thread of its process.
    pub exit_group_dead: u16,
}
const _: () = assert!(size_of::<KmemOffsets>() == 52);

/// Where the raw kmem and fault programs find what the tracepoint records would have held, in
/// kernel structures (offsets from BTF). Raw tracepoints skip the
/// building of a record that every hit of a perf tracepoint pays, filter or not: the kmem
/// tracepoints fire for the whole machine.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    /// log2 of `sizeof(struct page)`.
    pub page_shift: u32,
    /// `struct kmem_cache`: `name` (a `const char *`), `object_size` and `size` (u32 each).
    pub cache_name: u16,
    pub cache_object_size: u16,
    pub cache_size: u16,
    /// `struct pt_regs`: `ip`.
    pub regs_ip: u16,
    /// `struct pt_regs`: the registers of a syscall's six arguments, in order (x86-64: `di`,
    /// `si`, `dx`, `r10`, `r8`, `r9`), and `orig_ax`, its number.
    pub regs_args: [u16; MAX_SYSCALL_ARGS],
    pub regs_orig_ax: u16,
    /// `struct task_struct`: `pid` and `exit_code` (an int each), for fork and exit events.
    pub task_pid: u16,
    pub task_exit_code: u16,
    pub reserved: u16,
    /// The number of each [`Syscall`] (by discriminant) on this architecture, for the raw
    /// `sys_enter`/`sys_exit` programs; `u32::MAX` in unused slots.
    pub syscall_nrs: [u32; SYSCALL_SLOTS],
}
const _: () = assert!(size_of::<KernelLayout>() == 32 + 4 * SYSCALL_SLOTS);

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

/// Where one syscall's fields are in its tracepoint records, read from the tracefs `format`
/// files at load time (field offsets differ between kernels).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallOffsets {
    /// Byte offsets of the arguments in the `sys_enter_*` record.
    pub args: [u16; MAX_SYSCALL_ARGS],
    /// How many entries of `args` are valid.
    pub nargs: u16,
    /// Byte offset of `ret` in the `sys_exit_*` record.
    pub ret: u16,
}
const _: () = assert!(size_of::<SyscallOffsets>() == 16);

/// Load-time configuration, written into the eBPF object's read-only global [`CONFIG_GLOBAL`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// The traced process (kernel tgid). Zero traces nothing.
    pub target_tgid: u32,
    /// Wake the reader only once this many bytes are waiting (0: wake on every event).
    pub wakeup_bytes: u32,
    /// [`config_flags`] bits.
    pub flags: u32,
    /// `--sample`: mean bytes between sampled allocations (0: every allocation is traced).
    pub sample_bytes: u32,
    /// `--tid`: only this thread's allocator calls are traced (0: every thread's).
    pub target_tid: u32,
    /// log2 of the bits of [`LIVE_PAGE_BITS_MAP`], which then marks the page blocks the traced
    /// processes were given (0: they are kept in a hash map instead).
    pub page_bits: u32,
    pub syscalls: [SyscallOffsets; SYSCALL_SLOTS],
    pub kmem: KmemOffsets,
    pub layout: KernelLayout,
}
const _: () = assert!(size_of::<Config>() == 24 + 16 * SYSCALL_SLOTS + 52 + 32 + 4 * SYSCALL_SLOTS);

impl Config {
    /// The configuration the eBPF object is compiled with: trace nothing.
    pub const ZERO: Config = Config {
        target_tgid: 0,
        wakeup_bytes: 0,
        flags: 0,
        sample_bytes: 0,
        target_tid: 0,
        page_bits: 0,
        kmem: KmemOffsets {
            page_alloc_pfn: 0,
            page_alloc_order: 0,
            page_alloc_gfp: 0,
            page_alloc_migratetype: 0,
            page_free_pfn: 0,
            page_free_order: 0,
            page_free_batched_pfn: 0,
            cache_alloc_call_site: 0,
            cache_alloc_ptr: 0,
            cache_alloc_name: 0,
            cache_alloc_bytes_req: 0,
            cache_alloc_bytes_alloc: 0,
            cache_alloc_gfp: 0,
            cache_free_ptr: 0,
            kmalloc_call_site: 0,
            kmalloc_ptr: 0,
            kmalloc_bytes_req: 0,
            kmalloc_bytes_alloc: 0,
            kmalloc_gfp: 0,
            kfree_ptr: 0,
            fault_address: 0,
            fault_ip: 0,
            fault_error_code: 0,
            newtask_clone_flags: 0,
            newtask_pid: 0,
            exit_group_dead: 0,
        },
        syscalls: [SyscallOffsets {
            args: [0; MAX_SYSCALL_ARGS],
            nargs: 0,
            ret: 0,
        }; SYSCALL_SLOTS],
        layout: KernelLayout {
            page_shift: 0,
            cache_name: 0,
            cache_object_size: 0,
            cache_size: 0,
            regs_ip: 0,
            regs_args: [0; MAX_SYSCALL_ARGS],
            regs_orig_ax: 0,
            task_pid: 0,
            task_exit_code: 0,
            reserved: 0,
            syscall_nrs: [u32::MAX; SYSCALL_SLOTS],
        },
    };
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is `#[repr(C)]`, `Copy`, made only of integers, with no padding (the
    // size assertions above pin that), so any bit pattern is valid.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EventHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SlabCountKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SlabCount {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LiveObject {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SlabCountEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SyscallEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PendingSyscall {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OpenEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AllocEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AllocState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PageEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SlabEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FaultEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FaultPageEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExecEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HeldEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcessEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnwindRow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnwindChunk {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnwindMapping {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnwindMaps {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DwarfStack {}
}
