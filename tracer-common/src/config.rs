//! The configuration userspace writes before the programs run: flags, the kernel's layouts
//! and the tracepoints' field offsets.

use core::mem::size_of;

use crate::{MAX_SYSCALL_ARGS, SYSCALL_SLOTS};

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
    /// [`crate::FOLLOWED_MAP`]), and every traced process's fork and exit is an event.
    pub const FOLLOW: u32 = 32;
    /// Walk allocation stacks with the unwind tables ([`crate::UNWIND_MAPS_MAP`]), frame
    /// pointers where there are none.
    pub const DWARF: u32 = 64;
    /// The allocator uprobes are attached (not `--mode kernel`): only then can an allocator
    /// call be in flight, so only then do the kernel programs look one up.
    pub const ALLOCATOR_PROBES: u32 = 128;
    /// Count slab objects made outside traced calls in [`crate::SLAB_COUNTS_MAP`] instead of
    /// sending each (not with `--kernel-stacks`, whose stacks are per object).
    pub const COUNT_SLAB: u32 = 256;
    /// Stop a launched or followed process when it calls `_exit` (the `exit_enter` uprobe),
    /// until userspace has checked its live blocks for leaks.
    pub const HOLD_EXIT: u32 = 512;
    /// Time each stack walk (`bpf_ktime_get_ns` at both ends) into
    /// [`crate::counter::UNWIND_NS`]: `--costs`.
    pub const TIME_UNWIND: u32 = 1024;
    /// Walk without the unwinder's caches (rows by address in front of the table search, a
    /// window of the stack read at once): every frame searched for and read alone, to check
    /// that the caches change no stack.
    pub const NO_UNWIND_CACHES: u32 = 2048;
    /// `--system`: every process on the machine counted in the kernel
    /// ([`crate::SYSTEM_COUNTS_MAP`]), no event sent.
    pub const SYSTEM: u32 = 4096;
    /// With [`SYSTEM`]: the programs return at once (what any program there costs).
    pub const SYSTEM_EMPTY: u32 = 8192;
}

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
    /// `oom:mark_victim`'s fields: the victim's pid, its sizes and its `oom_score_adj`.
    pub oom_pid: u16,
    pub oom_total_vm: u16,
    pub oom_anon_rss: u16,
    pub oom_file_rss: u16,
    pub oom_shmem_rss: u16,
    pub oom_pgtables: u16,
    pub oom_score_adj: u16,
    pub reserved: u16,
}
const _: () = assert!(size_of::<KmemOffsets>() == 68);

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
    /// The number of each [`Syscall`](crate::Syscall) (by discriminant) on this architecture, for the raw
    /// `sys_enter`/`sys_exit` programs; `u32::MAX` in unused slots.
    pub syscall_nrs: [u32; SYSCALL_SLOTS],
}
const _: () = assert!(size_of::<KernelLayout>() == 32 + 4 * SYSCALL_SLOTS);

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

/// Load-time configuration, written into the eBPF object's read-only global [`CONFIG_GLOBAL`](crate::CONFIG_GLOBAL).
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
    /// log2 of the bits of [`LIVE_PAGE_BITS_MAP`](crate::LIVE_PAGE_BITS_MAP), which then marks the page blocks the traced
    /// processes were given (0: they are kept in a hash map instead).
    pub page_bits: u32,
    pub syscalls: [SyscallOffsets; SYSCALL_SLOTS],
    pub kmem: KmemOffsets,
    pub layout: KernelLayout,
}
const _: () = assert!(size_of::<Config>() == 24 + 16 * SYSCALL_SLOTS + 68 + 32 + 4 * SYSCALL_SLOTS);

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
            oom_pid: 0,
            oom_total_vm: 0,
            oom_anon_rss: 0,
            oom_file_rss: 0,
            oom_shmem_rss: 0,
            oom_pgtables: 0,
            oom_score_adj: 0,
            reserved: 0,
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
