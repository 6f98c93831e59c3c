//! `exceptions:page_fault_user`: the traced process touching memory, first touch included.

use aya_ebpf::{
    macros::tracepoint,
    programs::{TracePointContext, tracing::StackIdContext},
};
use tracer_common::{FaultEvent, config_flags, counter, kind};

use crate::{
    maps::{bump, config_flag, header, kmem_offsets, traced_thread},
    probes::kmem::in_flight,
    ring::hold_fault,
};

#[tracepoint]
pub fn page_fault_user(ctx: TracePointContext) -> u32 {
    let system = crate::probes::system::mode();
    if crate::probes::system::is_empty(system) {
        return 0;
    }
    if system != 0 {
        crate::probes::system::fault();
        return 0;
    }
    let Some((tgid, tid)) = traced_thread() else {
        return 0;
    };
    let o = kmem_offsets();
    // SAFETY: offsets come from the tracepoint's own format description.
    let fields = unsafe {
        (
            ctx.read_at::<u64>(usize::from(o.fault_address)),
            ctx.read_at::<u64>(usize::from(o.fault_ip)),
            ctx.read_at::<u64>(usize::from(o.fault_error_code)),
        )
    };
    let (Ok(address), Ok(ip), Ok(error_code)) = fields else {
        bump(counter::READ_FAILED);
        return 0;
    };
    fault(&ctx, tgid, tid, address, ip, error_code);
    0
}

/// A fault of the traced thread `tid` at `address`, from the instruction at `ip`: held back,
/// to go with the page block it takes (see `crate::ring`).
#[inline(always)]
pub fn fault<C: StackIdContext>(
    ctx: &C,
    tgid: u32,
    tid: u32,
    address: u64,
    ip: u64,
    error_code: u64,
) {
    let stack_id = if config_flag(config_flags::FAULT_STACKS) {
        super::unwind::user_stack_of_current(ctx, tgid)
    } else {
        -1
    };
    hold_fault(FaultEvent {
        header: header(kind::FAULT, tgid, tid),
        in_flight: in_flight(tid),
        address,
        ip,
        error_code: error_code as u32,
        stack_id,
    });
}
