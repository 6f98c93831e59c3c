//! Maps and configuration shared by every probe family.

use aya_ebpf::{
    bindings::{BPF_F_USER_STACK, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    cty::c_long,
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf, StackTrace},
    programs::tracing::StackIdContext,
};
use tracer_common::{
    Config, EVENTS_RING_BYTES, EventHeader, KernelLayout, KmemOffsets, MAX_FOLLOWED, MAX_STACKS,
    Syscall, SyscallOffsets, config_flags, counter,
};

/// Adds `delta` (wrapping) to a 64-bit counter in a map value, atomically. The BPF target has
/// no atomic types; the add compiles to the instruction the kernel's atomics use.
#[inline(always)]
pub fn atomic_add(counter: *mut u64, delta: u64) {
    // SAFETY: `counter` is inside a map value, valid for the program's run.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            counter, delta,
        )
    };
}

/// The top `bits` bits of `key` times 2^64 over the golden ratio (Fibonacci hashing): every bit
/// of the key reaches them, so aligned addresses and page numbers spread over the slots.
#[inline(always)]
pub fn fibonacci_slot(key: u64, bits: u32) -> u32 {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as u32
}

/// Every event, reserved and written in place.
#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// What userspace switches while tracing (see `tracer_common::CONTROL_MAP`).
#[map(name = "CONTROL")]
pub static CONTROL: Array<u32> = Array::with_max_entries(1, 0);

/// `SIGSTOP` on every Linux architecture tracer builds for: how a process is held until
/// userspace continues it.
pub const SIGSTOP: u32 = 19;

/// Whether userspace still holds a launched command at each exec.
#[inline(always)]
pub fn holding_exec() -> bool {
    CONTROL.get(0).is_some_and(|&v| v != 0)
}

/// User stacks of allocations, syscalls and faults, referenced from events by id.
#[map(name = "STACKS")]
pub static STACKS: StackTrace = StackTrace::with_max_entries(MAX_STACKS, 0);

/// The current thread's user stack, stored in [`STACKS`]: its id, or -1 (counted) when it
/// could not be stored.
#[inline(always)]
pub fn user_stack_id<C: StackIdContext>(ctx: &C) -> i32 {
    stack_id(ctx.get_stackid(&STACKS, u64::from(BPF_F_USER_STACK)))
}

/// A stack id from `bpf_get_stackid`, or -1 with the reason counted: the two that a larger map
/// helps with (a hash collision, no free entry) apart from a failed walk.
#[inline(always)]
pub fn stack_id(result: Result<c_long, i32>) -> i32 {
    const EEXIST: i32 = 17;
    const ENOMEM: i32 = 12;
    match result {
        Ok(id) => id as i32,
        Err(e) => {
            bump(match -e {
                EEXIST => counter::STACK_COLLIDED,
                ENOMEM => counter::STACK_MAP_FULL,
                _ => counter::STACK_FAILED,
            });
            -1
        }
    }
}

/// Per-CPU counters indexed by [`tracer_common::counter`].
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Written by userspace at load time; read-only afterwards.
#[unsafe(no_mangle)]
static CONFIG: Config = Config::ZERO;

/// The traced process, or zero.
#[inline(always)]
pub fn target_tgid() -> u32 {
    // SAFETY: CONFIG is a plain global; the volatile read keeps the compiler from folding in
    // the zero it was compiled with, since the loader rewrites it.
    unsafe { core::ptr::read_volatile(&raw const CONFIG.target_tgid) }
}

/// log2 of the live-page bitmap's bits, or 0 (see `tracer_common::Config::page_bits`).
#[inline(always)]
pub fn page_bits() -> u32 {
    // SAFETY: as in `target_tgid`.
    unsafe { core::ptr::read_volatile(&raw const CONFIG.page_bits) }
}

/// `--follow`: the other traced processes, tgid to parent tgid (see
/// `tracer_common::FOLLOWED_MAP`).
#[map(name = "FOLLOWED")]
pub static FOLLOWED: HashMap<u32, u32> = HashMap::with_max_entries(MAX_FOLLOWED, 0);

/// Whether process `tgid` is traced: the target, or with `--follow` one of its descendants.
#[inline(always)]
pub fn is_traced(tgid: u32) -> bool {
    if tgid == 0 {
        return false;
    }
    // The target first: without --follow that is all there is, and no map is looked up.
    tgid == target_tgid()
        // SAFETY: the value is only tested for presence.
        || (config_flag(config_flags::FOLLOW) && unsafe { FOLLOWED.get(tgid) }.is_some())
}

/// The current thread if it belongs to a traced process: `(tgid, tid)`.
#[inline(always)]
pub fn traced_thread() -> Option<(u32, u32)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_traced(tgid) {
        return None;
    }
    Some((tgid, pid_tgid as u32))
}

/// The current thread if its allocator calls are traced: a thread of the traced process, and
/// the one `--tid` names when it names one.
#[inline(always)]
pub fn traced_alloc_thread() -> Option<(u32, u32)> {
    let (tgid, tid) = traced_thread()?;
    // SAFETY: as in `target_tgid`.
    let only = unsafe { core::ptr::read_volatile(&raw const CONFIG.target_tid) };
    (only == 0 || only == tid).then_some((tgid, tid))
}

/// Where `syscall`'s tracepoint fields are.
#[inline(always)]
pub fn syscall_offsets(syscall: Syscall) -> SyscallOffsets {
    // SAFETY: as in `target_tgid`; the index is a constant below SYSCALL_SLOTS once inlined.
    unsafe { core::ptr::read_volatile(&raw const CONFIG.syscalls[syscall as usize]) }
}

/// Adds one to counter `index` on this CPU.
#[inline(always)]
pub fn bump(index: u32) {
    add(index, 1);
}

/// Adds `n` to counter `index` (see `tracer_common::counter`).
#[inline(always)]
pub fn add(index: u32, n: u64) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, so no other program writes it concurrently on this CPU.
        unsafe { *p += n };
    }
}

/// A header for an event of `kind` from the current thread.
#[inline(always)]
pub fn header(kind: u32, tgid: u32, tid: u32) -> EventHeader {
    EventHeader {
        // SAFETY: helpers without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        kind,
        tgid,
        tid,
        // SAFETY: as above.
        cpu: unsafe { bpf_get_smp_processor_id() },
    }
}

/// The kmem and fault tracepoint layouts.
#[inline(always)]
pub fn kmem_offsets() -> KmemOffsets {
    // SAFETY: as in `target_tgid`.
    unsafe { core::ptr::read_volatile(&raw const CONFIG.kmem) }
}

/// Where the raw programs find their values in kernel structures.
#[inline(always)]
pub fn kernel_layout() -> KernelLayout {
    // SAFETY: as in `target_tgid`.
    unsafe { core::ptr::read_volatile(&raw const CONFIG.layout) }
}

/// A value read from kernel memory, or `None` (counted) when it cannot be read.
#[inline(always)]
pub fn read_kernel<T>(addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly.
    match unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(addr as *const T) } {
        Ok(v) => Some(v),
        Err(_) => {
            bump(counter::READ_FAILED);
            None
        }
    }
}

/// `--sample`: mean bytes between sampled allocations, or 0 to trace every one.
#[inline(always)]
pub fn sample_bytes() -> u32 {
    // SAFETY: as in `target_tgid`.
    unsafe { core::ptr::read_volatile(&raw const CONFIG.sample_bytes) }
}

/// Every [`tracer_common::config_flags`] bit, in one read.
#[inline(always)]
pub fn config_flags_now() -> u32 {
    // SAFETY: as in `target_tgid`.
    unsafe { core::ptr::read_volatile(&raw const CONFIG.flags) }
}

/// Whether a [`tracer_common::config_flags`] bit is set.
#[inline(always)]
pub fn config_flag(flag: u32) -> bool {
    // SAFETY: as in `target_tgid`.
    unsafe { core::ptr::read_volatile(&raw const CONFIG.flags) & flag != 0 }
}

/// Submit flags that batch wakeups: the reader is woken only once enough bytes are waiting
/// (it also drains on a timer), which is an order of magnitude cheaper than a wakeup per event.
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    // SAFETY: as in `target_tgid`.
    let threshold = unsafe { core::ptr::read_volatile(&raw const CONFIG.wakeup_bytes) };
    if threshold == 0 {
        return 0;
    }
    if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= u64::from(threshold) {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}
