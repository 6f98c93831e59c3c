//! Aggregation of decoded events into the statistics a report shows: pure data, no I/O.

pub mod heap;
pub mod syscalls;

use serde::Serialize;

use crate::events::Event;
pub use syscalls::SyscallStats;

/// Everything measured about the traced process.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Aggregate {
    pub syscalls: SyscallStats,
}

impl Aggregate {
    pub fn new(page_size: u64) -> Self {
        Aggregate {
            syscalls: SyscallStats::new(page_size),
        }
    }

    pub fn on_event(&mut self, event: &Event) {
        match event {
            Event::Syscall(e) => self.syscalls.on_syscall(e),
            Event::Alloc(_) | Event::Open(_) => {}
        }
    }
}
