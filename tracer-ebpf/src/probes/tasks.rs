//! `task:task_newtask`: the traced process creating child processes, which are not traced;
//! counted so that the summary can say so.

use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use tracer_common::counter;

use crate::maps::{bump, kmem_offsets, traced_thread};

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
