//! Wire types shared by tracer's eBPF programs and its userspace.
//!
//! Every type that crosses the kernel/user boundary is defined here once: `#[repr(C)]`, `Copy`,
//! without implicit padding, and with its size pinned by a const assertion so that a change on
//! one side cannot silently disagree with the other. Kinds are plain `u32`s on the wire and are
//! decoded with `TryFrom<u32>`.
#![no_std]

use core::mem::size_of;

/// Name of the ring buffer that carries every event to userspace.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the per-CPU array of counters (see [`counter`]).
pub const COUNTERS_MAP: &str = "COUNTERS";
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
}

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
    /// A user stack could not be collected (the allocation is still counted, without a stack).
    pub const STACK_FAILED: u32 = 6;
    /// An allocator call nested in another on the same thread, counted as part of the outer one.
    pub const ALLOC_NESTED: u32 = 7;
    /// Number of counters.
    pub const COUNT: u32 = 8;
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
}

impl Syscall {
    /// Every traced syscall, in discriminant order.
    pub const ALL: [Syscall; 5] = [
        Syscall::Brk,
        Syscall::Mmap,
        Syscall::Munmap,
        Syscall::Mremap,
        Syscall::Openat,
    ];

    /// The name used by the kernel's `syscalls:sys_enter_<name>` tracepoints.
    pub const fn name(self) -> &'static str {
        match self {
            Syscall::Brk => "brk",
            Syscall::Mmap => "mmap",
            Syscall::Munmap => "munmap",
            Syscall::Mremap => "mremap",
            Syscall::Openat => "openat",
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
    /// Reserved, zero.
    pub reserved: u32,
    /// Arguments in the kernel's order; unused ones are zero.
    pub args: [u64; MAX_SYSCALL_ARGS],
    /// The syscall's return value (negative errno on failure).
    pub ret: i64,
    /// Time from entry to return.
    pub duration_ns: u64,
}
const _: () = assert!(size_of::<SyscallEvent>() == 96);

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
}
const _: () = assert!(size_of::<AllocEvent>() == 72);

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
    pub syscalls: [SyscallOffsets; SYSCALL_SLOTS],
}
const _: () = assert!(size_of::<Config>() == 8 + 16 * SYSCALL_SLOTS);

impl Config {
    /// The configuration the eBPF object is compiled with: trace nothing.
    pub const ZERO: Config = Config {
        target_tgid: 0,
        wakeup_bytes: 0,
        syscalls: [SyscallOffsets {
            args: [0; MAX_SYSCALL_ARGS],
            nargs: 0,
            ret: 0,
        }; SYSCALL_SLOTS],
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
    unsafe impl aya::Pod for super::SyscallEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PendingSyscall {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OpenEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AllocEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AllocState {}
}
