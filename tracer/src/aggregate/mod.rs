//! Aggregation of decoded events into the statistics a report shows: pure data, no I/O.

pub mod blocks;
pub mod callers;
pub mod heap;
pub mod kernel;
pub mod syscalls;
pub mod system;
pub mod threads;
pub mod timeline;
pub mod trend;

pub use heap::HeapStats;
pub use syscalls::SyscallStats;

/// Everything measured about the traced process.
#[derive(Debug, Clone, Default)]
pub struct Aggregate {
    pub syscalls: SyscallStats,
    pub heap: HeapStats,
    pub callers: callers::Callers,
}

impl Aggregate {
    pub fn new(page_size: u64) -> Self {
        Aggregate {
            syscalls: SyscallStats::new(page_size),
            heap: HeapStats::default(),
            callers: callers::Callers::default(),
        }
    }
}
