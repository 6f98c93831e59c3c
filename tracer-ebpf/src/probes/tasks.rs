//! `task:task_newtask`: a traced process creating a child process. Without `--follow` it is
//! not traced, and counted so that the summary can say so; with it, the child joins the
//! followed set before it first runs, and userspace hears of it. `sched:sched_process_exit`:
//! the end of a followed process. `sched:sched_process_exec`: a traced process running a new
//! program, which userspace re-reads and re-probes (held stopped until then, when it launched
//! the command or follows it).

use aya_ebpf::helpers::generated::{bpf_get_current_task, bpf_send_signal};
use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use tracer_common::{ExecEvent, ProcessEvent, config_flags, counter, kind};

use crate::{
    maps::{
        FOLLOWED, SIGSTOP, bump, config_flag, header, holding_exec, kernel_layout, kmem_offsets,
        read_kernel, traced_thread,
    },
    probes::unwind::UNWIND_MAPS,
    ring::reserve,
};

/// `CLONE_THREAD`: the new task is a thread of the same process.
const CLONE_THREAD: u64 = 0x0001_0000;

#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    // The tracepoint fires in the parent, which is current.
    if traced_thread().is_none() {
        return 0;
    }
    let offsets = kmem_offsets();
    // SAFETY: the offsets come from the tracepoint's own format description.
    let read = unsafe {
        (
            ctx.read_at::<u64>(usize::from(offsets.newtask_clone_flags)),
            ctx.read_at::<i32>(usize::from(offsets.newtask_pid)),
        )
    };
    match read {
        (Ok(flags), Ok(pid)) => created(flags, || Some(pid as u32)),
        _ => bump(counter::READ_FAILED),
    }
    0
}

/// `task_newtask(struct task_struct *task, unsigned long clone_flags)`
#[raw_tracepoint(tracepoint = "task_newtask")]
pub fn raw_task_newtask(ctx: RawTracePointContext) -> i32 {
    let task: u64 = ctx.arg(0);
    created(ctx.arg(1), || {
        read_kernel::<i32>(task + u64::from(kernel_layout().task_pid)).map(|p| p as u32)
    });
    0
}

/// The current (parent) task created a task with `clone_flags`; `child` reads the new task's
/// pid.
#[inline(always)]
fn created(clone_flags: u64, child: impl FnOnce() -> Option<u32>) {
    if clone_flags & CLONE_THREAD != 0 {
        return;
    }
    let Some((tgid, tid)) = traced_thread() else {
        return;
    };
    if !config_flag(config_flags::FOLLOW) {
        bump(counter::CHILD_PROCESSES);
        return;
    }
    let Some(pid) = child() else {
        bump(counter::FOLLOW_FULL);
        return;
    };
    // In the set before the child first runs: none of its events is missed.
    if FOLLOWED.insert(pid, tgid, 0).is_err() {
        bump(counter::FOLLOW_FULL);
        return;
    }
    // The child starts with its parent's code, and so with its parent's unwind tables: its
    // first allocations are walked whole, before userspace hears of it.
    if config_flag(config_flags::DWARF)
        && let Some(maps) = UNWIND_MAPS.get_ptr(tgid)
    {
        // By reference: copied out, 4 KiB would not fit on the BPF stack.
        #[allow(
            clippy::needless_borrows_for_generic_args,
            reason = "by value it would be copied onto the BPF stack first"
        )]
        // SAFETY: a value of the map, copied into the child's entry at once.
        let _ = UNWIND_MAPS.insert(pid, unsafe { &*maps }, 0);
    }
    process_event(kind::FORK, tgid, tid, pid, clone_flags as i32);
}

/// `sched_process_exit`: fires in each exiting thread; `group_dead` in the process's last.
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let offset = usize::from(kmem_offsets().exit_group_dead);
    // SAFETY: the offset comes from the tracepoint's own format description.
    match unsafe { ctx.read_at::<u8>(offset) } {
        Ok(group_dead) => exited(group_dead != 0),
        Err(_) => bump(counter::READ_FAILED),
    }
    0
}

/// `sched_process_exit(struct task_struct *p, bool group_dead)`
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn raw_sched_process_exit(ctx: RawTracePointContext) -> i32 {
    let group_dead: u64 = ctx.arg(1);
    exited(group_dead & 0xff != 0);
    0
}

#[inline(always)]
fn exited(group_dead: bool) {
    if !group_dead || !config_flag(config_flags::FOLLOW) {
        return;
    }
    let Some((tgid, tid)) = traced_thread() else {
        return;
    };
    // The exiting task is current, its exit code already set.
    // SAFETY: a helper without preconditions.
    let task = unsafe { bpf_get_current_task() };
    let offset = kernel_layout().task_exit_code;
    let status = if offset == 0 {
        -1
    } else {
        read_kernel::<i32>(task + u64::from(offset)).unwrap_or(-1)
    };
    process_event(kind::EXIT, tgid, tid, tgid, status);
    // Its pid may be reused by a process outside the traced tree; its tables' slot is free
    // for the next.
    let _ = FOLLOWED.remove(tgid);
    let _ = UNWIND_MAPS.remove(tgid);
}

#[inline(always)]
fn process_event(kind: u32, tgid: u32, tid: u32, pid: u32, status: i32) {
    let Some(mut entry) = reserve::<ProcessEvent>() else {
        return;
    };
    entry.write(ProcessEvent {
        header: header(kind, tgid, tid),
        pid,
        status,
    });
    entry.submit(0);
}

/// `sched_process_exec`: fires in the task that ran `execve`, once the new image is mapped.
#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    exec_seen();
    0
}

/// `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn raw_sched_process_exec(_ctx: RawTracePointContext) -> i32 {
    exec_seen();
    0
}

#[inline(always)]
fn exec_seen() {
    let Some((tgid, tid)) = traced_thread() else {
        return;
    };
    let hold = config_flag(config_flags::HOLD_EXEC) && holding_exec();
    let Some(mut entry) = reserve::<ExecEvent>() else {
        return;
    };
    entry.write(ExecEvent {
        header: header(kind::EXEC, tgid, tid),
        held: u32::from(hold),
        _pad: 0,
    });
    if hold {
        // Delivered before the new image's first instruction; userspace sends SIGCONT once it
        // has probed it. Sent before the event is submitted, so that the SIGCONT cannot come
        // first. SAFETY: a helper that signals the current task only.
        unsafe { bpf_send_signal(SIGSTOP) };
    }
    // Woken at once: the process may be waiting for us.
    entry.submit(0);
}
