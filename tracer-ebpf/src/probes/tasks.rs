//! `task:task_newtask`: the traced process creating child processes, which are not traced;
//! counted so that the summary can say so. `sched:sched_process_exec`: the traced process
//! running a new program, which userspace re-reads and re-probes (held stopped until then,
//! when it launched the command).

use aya_ebpf::helpers::generated::bpf_send_signal;
use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use tracer_common::{ExecEvent, config_flags, counter, kind};

use crate::maps::{EVENTS, bump, config_flag, header, holding_exec, kmem_offsets, traced_thread};

/// `SIGSTOP` on every Linux architecture tracer builds for.
const SIGSTOP: u32 = 19;

/// `CLONE_THREAD`: the new task is a thread of the same process.
const CLONE_THREAD: u64 = 0x0001_0000;

#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    // The tracepoint fires in the parent, which is current.
    if traced_thread().is_none() {
        return 0;
    }
    let offset = usize::from(kmem_offsets().newtask_clone_flags);
    // SAFETY: the offset comes from the tracepoint's own format description.
    match unsafe { ctx.read_at::<u64>(offset) } {
        Ok(flags) => created(flags),
        Err(_) => bump(counter::READ_FAILED),
    }
    0
}

/// `task_newtask(struct task_struct *task, unsigned long clone_flags)`
#[raw_tracepoint(tracepoint = "task_newtask")]
pub fn raw_task_newtask(ctx: RawTracePointContext) -> i32 {
    if traced_thread().is_some() {
        created(ctx.arg(1));
    }
    0
}

#[inline(always)]
fn created(clone_flags: u64) {
    if clone_flags & CLONE_THREAD == 0 {
        bump(counter::CHILD_PROCESSES);
    }
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
    let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) else {
        bump(counter::RINGBUF_DROPPED);
        return;
    };
    entry.write(ExecEvent {
        header: header(kind::EXEC, tgid, tid),
        held: u32::from(hold),
        _pad: 0,
    });
    // Woken at once: the process may be waiting for us.
    entry.submit(0);
    if hold {
        // Delivered before the new image's first instruction; userspace sends SIGCONT once it
        // has probed it. SAFETY: a helper that signals the current task only.
        unsafe { bpf_send_signal(SIGSTOP) };
    }
}
