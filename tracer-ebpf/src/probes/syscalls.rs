//! `syscalls:sys_enter_*` / `sys_exit_*` for the memory-management syscalls.
//!
//! The entry stores the arguments per thread; the exit joins them with the result and emits one
//! [`SyscallEvent`]. Field offsets come from the tracefs `format` files via the configuration.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{bpf_ktime_get_ns, generated::bpf_probe_read_user_str},
    macros::{map, tracepoint},
    maps::{Array, LruHashMap},
    programs::{TracePointContext, tracing::StackIdContext},
};
use tracer_common::{
    MAX_PENDING_SYSCALLS, MAX_SYSCALL_ARGS, OpenEvent, PATH_BYTES, PendingSyscall, Syscall,
    SyscallEvent, config_flags, counter, held, kind,
};

use crate::{
    maps::{
        atomic_add, bump, config_flag, header, holding_exec, syscall_offsets, traced_thread,
        wakeup_flags,
    },
    probes::alloc::alloc_in_flight,
    ring::{hold, reserve},
};

/// Syscalls entered and not yet returned, by thread id. LRU, so a missed exit cannot leak.
#[map(name = "PENDING_SYSCALLS")]
pub static PENDING_SYSCALLS: LruHashMap<u32, PendingSyscall> =
    LruHashMap::with_max_entries(MAX_PENDING_SYSCALLS, 0);

/// How many entries PENDING_SYSCALLS holds, at least: counted up when one goes in and down when
/// one is taken out (an entry the LRU evicts, or one replaced, keeps its count). While it is
/// zero no thread is in a traced syscall, and the kernel programs, which ask for every slab
/// object and page, skip the lookup. A thread's own entry is counted before its syscall goes
/// on, so it always sees it.
#[map(name = "SYSCALLS_IN_FLIGHT")]
static SYSCALLS_IN_FLIGHT: Array<u64> = Array::with_max_entries(1, 0);

#[inline(always)]
fn count_in_flight(delta: u64) {
    if let Some(slot) = SYSCALLS_IN_FLIGHT.get_ptr_mut(0) {
        atomic_add(slot, delta);
    }
}

macro_rules! syscall_probes {
    ($($syscall:ident => $enter:ident, $exit:ident;)*) => {$(
        #[tracepoint]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            syscall_enter(&ctx, Syscall::$syscall);
            0
        }

        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            syscall_exit(&ctx, Syscall::$syscall);
            0
        }
    )*};
}

syscall_probes! {
    Brk => sys_enter_brk, sys_exit_brk;
    Mmap => sys_enter_mmap, sys_exit_mmap;
    Munmap => sys_enter_munmap, sys_exit_munmap;
    Mremap => sys_enter_mremap, sys_exit_mremap;
    Openat => sys_enter_openat, sys_exit_openat;
    Mprotect => sys_enter_mprotect, sys_exit_mprotect;
    Madvise => sys_enter_madvise, sys_exit_madvise;
}

/// Entry time of the traced syscall in flight on thread `tid`, or 0.
#[inline(always)]
pub fn syscall_in_flight(tid: u32) -> u64 {
    // SAFETY: an array slot, read once (a stale nonzero only costs the lookup below).
    let any = SYSCALLS_IN_FLIGHT
        .get_ptr(0)
        .is_none_or(|slot| unsafe { core::ptr::read_volatile(slot) } != 0);
    if !any {
        return 0;
    }
    match PENDING_SYSCALLS.get_ptr(tid) {
        // SAFETY: pointer from a successful lookup, read at once.
        Some(p) => unsafe { (*p).enter_ns },
        None => 0,
    }
}

#[inline(always)]
fn syscall_enter(ctx: &TracePointContext, syscall: Syscall) {
    let system = super::system::mode();
    if super::system::is_empty(system) {
        return;
    }
    if system != 0 {
        let offsets = syscall_offsets(syscall);
        // SAFETY: the offsets come from the tracepoint's own format description.
        let arg = |i: usize| unsafe { ctx.read_at::<u64>(usize::from(offsets.args[i])) };
        super::system::syscall(syscall, arg(1).unwrap_or(0), arg(2).unwrap_or(0));
        return;
    }
    let Some((_, tid)) = traced_thread() else {
        return;
    };
    let offsets = syscall_offsets(syscall);
    let mut args = [0; MAX_SYSCALL_ARGS];
    for (i, arg) in args.iter_mut().enumerate().take(syscall.arg_count()) {
        // SAFETY: the offset comes from the tracepoint's own format description.
        match unsafe { ctx.read_at::<u64>(usize::from(offsets.args[i])) } {
            Ok(v) => *arg = v,
            Err(_) => bump(counter::READ_FAILED),
        }
    }
    entered(tid, syscall, args);
}

/// The traced thread `tid` entered `syscall` with `args`: kept until it returns.
#[inline(always)]
pub fn entered(tid: u32, syscall: Syscall, args: [u64; MAX_SYSCALL_ARGS]) {
    let pending = PendingSyscall {
        // SAFETY: helper without preconditions.
        enter_ns: unsafe { bpf_ktime_get_ns() },
        syscall: syscall as u32,
        reserved: 0,
        args,
    };
    // Counted first: a lookup that finds the entry must not see a zero.
    count_in_flight(1);
    if PENDING_SYSCALLS.insert(tid, pending, 0).is_err() {
        count_in_flight(u64::MAX);
        bump(counter::SYSCALL_ENTRY_STORE_FAILED);
    }
}

#[inline(always)]
fn syscall_exit(ctx: &TracePointContext, syscall: Syscall) {
    let Some((tgid, tid)) = traced_thread() else {
        return;
    };
    let offsets = syscall_offsets(syscall);
    // SAFETY: the offset comes from the tracepoint's own format description.
    match unsafe { ctx.read_at::<i64>(usize::from(offsets.ret)) } {
        Ok(ret) => returned(ctx, tgid, tid, syscall, ret),
        Err(_) => bump(counter::READ_FAILED),
    }
}

/// The traced thread `tid` returned `ret` from `syscall`: joined with its entry and sent.
#[inline(always)]
pub fn returned<C: StackIdContext>(ctx: &C, tgid: u32, tid: u32, syscall: Syscall, ret: i64) {
    let Some(pending) = PENDING_SYSCALLS.get_ptr(tid) else {
        bump(counter::SYSCALL_UNPAIRED_EXIT);
        return;
    };
    // SAFETY: the pointer came from a successful lookup; copy out before removing.
    let pending = unsafe { *pending };
    if PENDING_SYSCALLS.remove(tid).is_ok() {
        count_in_flight(u64::MAX);
    }
    if pending.syscall != syscall as u32 {
        bump(counter::SYSCALL_UNPAIRED_EXIT);
        return;
    }
    if syscall == Syscall::Openat {
        if ret >= 0 {
            emit_open(tgid, tid, &pending, ret as i32);
        }
        return;
    }
    // Who made the call: in `--mode kernel` the only stack there is (for brk, that of the
    // malloc that grew the heap), and for direct mmap calls in any mode. Walked before the
    // reservation: a walk while holding ring space delays the reader.
    let stack_id = super::unwind::user_stack_of_current(ctx, tgid);
    let Some(mut entry) = reserve::<SyscallEvent>() else {
        return;
    };
    let header = header(kind::SYSCALL, tgid, tid);
    entry.write(SyscallEvent {
        duration_ns: header.ts_ns.wrapping_sub(pending.enter_ns),
        header,
        syscall: syscall as u32,
        stack_id,
        args: pending.args,
        ret,
        alloc_enter_ns: alloc_in_flight(tid),
    });
    // Code mapped (a library loaded): userspace gives it its unwind table at once, before the
    // program runs much of it.
    const PROT_EXEC: u64 = 4;
    let mapped_code = syscall == Syscall::Mmap && pending.args[2] & PROT_EXEC != 0 && ret >= 0;
    if !mapped_code {
        entry.submit(wakeup_flags());
        return;
    }
    entry.submit(u64::from(BPF_RB_FORCE_WAKEUP));
    // While a launched or followed command is held at exec, with stacks walked by unwind
    // table, it is held at each code mapping too: the table is in place before the code runs.
    if config_flag(config_flags::DWARF) && config_flag(config_flags::HOLD_EXEC) && holding_exec() {
        hold(tgid, tid, held::MAPPED_CODE);
    }
}

/// An `openat` that returned `fd`: the path is read now, from the caller's buffer, straight into
/// the ring buffer.
#[inline(always)]
fn emit_open(tgid: u32, tid: u32, pending: &PendingSyscall, fd: i32) {
    let Some(mut entry) = reserve::<OpenEvent>() else {
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved record of the right size; every field is written
    // before submit (the path by the helper, which NUL-terminates or zero-length fails).
    unsafe {
        (*event).header = header(kind::OPEN, tgid, tid);
        (*event).fd = fd;
        (*event).dirfd = pending.args[0] as i32;
        let path = (&raw mut (*event).path).cast::<c_void>();
        if bpf_probe_read_user_str(path, PATH_BYTES as u32, pending.args[1] as *const c_void) < 0 {
            (*event).path[0] = 0;
            bump(counter::READ_FAILED);
        }
    }
    entry.submit(wakeup_flags());
}
