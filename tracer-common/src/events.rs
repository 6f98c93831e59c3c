//! The events: a fixed header, the kind of what follows, and one payload type per kind.

use core::mem::size_of;

/// Bytes of a path carried by an [`OpenEvent`], NUL included.
pub const PATH_BYTES: usize = 256;
/// Bytes of a slab cache name carried by a [`SlabEvent`], NUL included.
pub const CACHE_NAME_BYTES: usize = 32;

/// What an event is: the `kind` field of its header, which says which payload type follows.
/// Discriminants are fixed: they are on the wire and in recordings.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A [`SyscallEvent`].
    Syscall = 1,
    /// An [`AllocEvent`].
    Alloc = 2,
    /// An [`OpenEvent`].
    Open = 3,
    /// A [`PageEvent`]: `kmem:mm_page_alloc`.
    PageAlloc = 4,
    /// A [`PageEvent`]: `kmem:mm_page_free` of a page allocated while tracing.
    PageFree = 5,
    /// A [`SlabEvent`]: `kmem:kmem_cache_alloc` or `kmem:kmalloc`.
    SlabAlloc = 6,
    /// A [`SlabEvent`]: `kmem:kmem_cache_free` or `kmem:kfree` of an object allocated while
    /// tracing.
    SlabFree = 7,
    /// A [`FaultEvent`]: `exceptions:page_fault_user`.
    Fault = 8,
    /// An [`ExecEvent`]: `sched:sched_process_exec`, the process ran a new program.
    Exec = 9,
    /// A [`ProcessEvent`]: `task:task_newtask`, a traced process created a child process
    /// (`--follow`), which is traced from now on.
    Fork = 10,
    /// A [`ProcessEvent`]: `sched:sched_process_exit` of a traced process's last thread
    /// (`--follow`).
    Exit = 11,
    /// A [`HeldEvent`]: the process is stopped until userspace continues it.
    Held = 12,
    /// A [`crate::SlabCountEvent`]: slab objects counted in the kernel, as userspace read them
    /// (see [`crate::SLAB_COUNTS_MAP`]).
    SlabCount = 13,
    /// A [`FaultPageEvent`]: a fault and the first page block allocated while it was handled,
    /// in one record.
    FaultPage = 14,
    /// A [`LeakCheckEvent`]: userspace scanned a stopped process's memory for pointers to its
    /// live blocks (never from the kernel; recorded so that a report shows the check).
    LeakCheck = 15,
    /// A [`BlockKindEvent`]: what the leak check before it found one live block to be.
    BlockKind = 16,
    /// An [`OomEvent`]: `oom:mark_victim`, the OOM killer chose a traced process.
    Oom = 17,
}

impl EventKind {
    /// Every kind, in discriminant order.
    pub const ALL: [EventKind; 17] = [
        EventKind::Syscall,
        EventKind::Alloc,
        EventKind::Open,
        EventKind::PageAlloc,
        EventKind::PageFree,
        EventKind::SlabAlloc,
        EventKind::SlabFree,
        EventKind::Fault,
        EventKind::Exec,
        EventKind::Fork,
        EventKind::Exit,
        EventKind::Held,
        EventKind::SlabCount,
        EventKind::FaultPage,
        EventKind::LeakCheck,
        EventKind::BlockKind,
        EventKind::Oom,
    ];

    /// The bytes of a record of this kind: its payload type's size.
    pub const fn record_bytes(self) -> usize {
        match self {
            EventKind::Syscall => size_of::<SyscallEvent>(),
            EventKind::Alloc => size_of::<AllocEvent>(),
            EventKind::Open => size_of::<OpenEvent>(),
            EventKind::PageAlloc | EventKind::PageFree => size_of::<PageEvent>(),
            EventKind::SlabAlloc | EventKind::SlabFree => size_of::<SlabEvent>(),
            EventKind::Fault => size_of::<FaultEvent>(),
            EventKind::Exec => size_of::<ExecEvent>(),
            EventKind::Fork | EventKind::Exit => size_of::<ProcessEvent>(),
            EventKind::Held => size_of::<HeldEvent>(),
            EventKind::SlabCount => size_of::<crate::SlabCountEvent>(),
            EventKind::FaultPage => size_of::<FaultPageEvent>(),
            EventKind::LeakCheck => size_of::<LeakCheckEvent>(),
            EventKind::BlockKind => size_of::<BlockKindEvent>(),
            EventKind::Oom => size_of::<OomEvent>(),
        }
    }
}

impl TryFrom<u32> for EventKind {
    type Error = u32;

    fn try_from(v: u32) -> Result<Self, u32> {
        match v {
            1..=17 => Ok(EventKind::ALL[v as usize - 1]),
            other => Err(other),
        }
    }
}

/// The kinds as the header's `kind` field holds them (what the eBPF programs write).
pub mod kind {
    use super::EventKind;

    pub const SYSCALL: u32 = EventKind::Syscall as u32;
    pub const ALLOC: u32 = EventKind::Alloc as u32;
    pub const OPEN: u32 = EventKind::Open as u32;
    pub const PAGE_ALLOC: u32 = EventKind::PageAlloc as u32;
    pub const PAGE_FREE: u32 = EventKind::PageFree as u32;
    pub const SLAB_ALLOC: u32 = EventKind::SlabAlloc as u32;
    pub const SLAB_FREE: u32 = EventKind::SlabFree as u32;
    pub const FAULT: u32 = EventKind::Fault as u32;
    pub const EXEC: u32 = EventKind::Exec as u32;
    pub const FORK: u32 = EventKind::Fork as u32;
    pub const EXIT: u32 = EventKind::Exit as u32;
    pub const HELD: u32 = EventKind::Held as u32;
    pub const SLAB_COUNT: u32 = EventKind::SlabCount as u32;
    pub const FAULT_PAGE: u32 = EventKind::FaultPage as u32;
    pub const LEAK_CHECK: u32 = EventKind::LeakCheck as u32;
    pub const BLOCK_KIND: u32 = EventKind::BlockKind as u32;
    pub const OOM: u32 = EventKind::Oom as u32;
}

/// The header that starts every event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// `bpf_ktime_get_ns()` when the event completed (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// An [`EventKind`] (see [`kind`]).
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
/// and index [`Config::syscalls`](crate::Config::syscalls).
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
/// Slots in [`Config::syscalls`](crate::Config::syscalls): one per [`Syscall`] discriminant, slot 0 unused.
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
    /// A launched or followed process called `_exit` (its last user code has run, its memory is
    /// whole): userspace checks its live blocks for leaks, then lets it exit.
    pub const EXIT: u32 = 2;
}

/// A leak check of one process: every block live at `header.ts_ns` was classified; those
/// found not reachable follow as [`BlockKindEvent`]s (the rest are reachable).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeakCheckEvent {
    pub header: EventHeader,
    /// One of [`leak_check`]'s outcomes.
    pub outcome: u32,
    /// One of [`leak_check`]'s moments.
    pub moment: u32,
    /// How long the process was stopped, in microseconds.
    pub pause_us: u64,
    /// Bytes of memory read: the roots and the blocks reached.
    pub scanned_bytes: u64,
    /// Live blocks classified.
    pub blocks: u64,
}
const _: () = assert!(size_of::<LeakCheckEvent>() == 56);

/// What a leak check came to, and when it ran ([`LeakCheckEvent`]).
pub mod leak_check {
    /// Every live block was classified.
    pub const DONE: u32 = 1;
    /// The scan took longer than `--leak-check-max-pause` allowed: given up, nothing
    /// classified.
    pub const GAVE_UP: u32 = 2;
    /// The process could not be stopped or read (traced by another debugger, gone).
    pub const FAILED: u32 = 3;

    /// At the process's exit (`_exit`).
    pub const AT_EXIT: u32 = 1;
    /// When tracing ended, the process still running (`--leak-check`).
    pub const AT_END: u32 = 2;
    /// Asked for while tracing (SIGUSR2, a key in `tracer top`).
    pub const ON_REQUEST: u32 = 3;
}

/// One live block that the leak check before it did not find reachable.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockKindEvent {
    pub header: EventHeader,
    /// The block's start, as the allocator returned it.
    pub addr: u64,
    /// One of [`block_kind`].
    pub kind: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<BlockKindEvent>() == 40);

/// What a leak check found a live block to be, as memcheck names its categories.
pub mod block_kind {
    /// No pointer reaches it: definitely lost.
    pub const LOST: u32 = 1;
    /// Reached only from lost blocks: indirectly lost.
    pub const INDIRECT: u32 = 2;
    /// Reached only by pointers into its middle: possibly lost.
    pub const POSSIBLE: u32 = 3;
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

/// The OOM killer chose a traced process (`oom:mark_victim`): the header's tgid is the victim,
/// the sizes are the kernel's at that moment, in KiB.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomEvent {
    pub header: EventHeader,
    /// The task the killer chose (its tgid unless the leader had no memory left).
    pub pid: u32,
    /// `oom_score_adj` of the victim.
    pub oom_score_adj: i32,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub pgtables_kb: u64,
}
const _: () = assert!(size_of::<OomEvent>() == 72);

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
