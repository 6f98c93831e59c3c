//! The syscall programs as two raw tracepoints, `sys_enter(struct pt_regs *regs, long id)` and
//! `sys_exit(struct pt_regs *regs, long ret)`, in place of a perf tracepoint per syscall and
//! direction: the same events as `syscalls.rs`, with the arguments read from the registers.
//!
//! Enabling any per-syscall tracepoint already routes every syscall of the machine through
//! these two, so a program on them costs about what the kernel's own dispatch did; what it
//! saves is the teardown, where each perf tracepoint waits for a grace period of its own.
//! Userspace attaches these after checking both prototypes in BTF, with the register offsets
//! and this architecture's syscall numbers in `Config::layout`.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use tracer_common::{MAX_SYSCALL_ARGS, Syscall};

use crate::{
    maps::{kernel_layout, read_kernel, traced_thread},
    probes::syscalls::{entered, returned},
};

/// Which traced syscall number `nr` is.
#[inline(always)]
fn traced_syscall(nr: u64) -> Option<Syscall> {
    let nrs = kernel_layout().syscall_nrs;
    Syscall::ALL
        .into_iter()
        .find(|&s| u64::from(nrs[s as usize]) == nr)
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn raw_sys_enter(ctx: RawTracePointContext) -> i32 {
    let Some((_, tid)) = traced_thread() else {
        return 0;
    };
    let Some(syscall) = traced_syscall(ctx.arg(1)) else {
        return 0;
    };
    let regs: u64 = ctx.arg(0);
    let offsets = kernel_layout().regs_args;
    let mut args = [0; MAX_SYSCALL_ARGS];
    for (arg, offset) in args.iter_mut().zip(offsets).take(syscall.arg_count()) {
        *arg = read_kernel::<u64>(regs + u64::from(offset)).unwrap_or(0);
    }
    entered(tid, syscall, args);
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn raw_sys_exit(ctx: RawTracePointContext) -> i32 {
    let Some((tgid, tid)) = traced_thread() else {
        return 0;
    };
    let regs: u64 = ctx.arg(0);
    let Some(nr) = read_kernel::<u64>(regs + u64::from(kernel_layout().regs_orig_ax)) else {
        return 0;
    };
    if let Some(syscall) = traced_syscall(nr) {
        returned(&ctx, tgid, tid, syscall, ctx.arg(1));
    }
    0
}
