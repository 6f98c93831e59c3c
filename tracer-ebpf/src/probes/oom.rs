//! `oom:mark_victim`: the kernel's OOM killer chose a task. Rare (once per kill), so a perf
//! tracepoint with its fields read from the record; only a traced process's is sent.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{OomEvent, counter, kind};

use crate::{
    maps::{bump, header, is_traced, kmem_offsets},
    ring::reserve,
};

#[tracepoint]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    let o = kmem_offsets();
    // SAFETY: every offset comes from the tracepoint's own format description.
    let pid = match unsafe { ctx.read_at::<i32>(usize::from(o.oom_pid)) } {
        Ok(pid) if pid > 0 => pid as u32,
        Ok(_) => return 0,
        Err(_) => {
            bump(counter::READ_FAILED);
            return 0;
        }
    };
    if !is_traced(pid) {
        return 0;
    }
    // SAFETY: as above.
    let kb = |at: u16| unsafe { ctx.read_at::<u64>(usize::from(at)) }.unwrap_or(0);
    // SAFETY: as above.
    let adj = unsafe { ctx.read_at::<i16>(usize::from(o.oom_score_adj)) }.unwrap_or(0);
    let Some(mut entry) = reserve::<OomEvent>() else {
        return 0;
    };
    entry.write(OomEvent {
        header: header(kind::OOM, pid, pid),
        pid,
        oom_score_adj: i32::from(adj),
        total_vm_kb: kb(o.oom_total_vm),
        anon_rss_kb: kb(o.oom_anon_rss),
        file_rss_kb: kb(o.oom_file_rss),
        shmem_rss_kb: kb(o.oom_shmem_rss),
        pgtables_kb: kb(o.oom_pgtables),
    });
    entry.submit(0);
    0
}
