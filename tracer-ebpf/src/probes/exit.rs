//! `_exit` of a launched or followed process: its last user code has run (atexit handlers,
//! destructors, stdio flushed) and its memory is still whole. It is held there (SIGSTOP) until
//! userspace has checked its live blocks for leaks; the exit then goes on, its status unchanged.

use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use tracer_common::{config_flags, held};

use crate::{
    maps::{config_flag, holding_exec, traced_thread},
    ring::hold,
};

#[uprobe]
pub fn exit_enter(_ctx: ProbeContext) -> u32 {
    if !config_flag(config_flags::HOLD_EXIT) || !holding_exec() {
        return 0;
    }
    if let Some((tgid, tid)) = traced_thread() {
        hold(tgid, tid, held::EXIT);
    }
    0
}
