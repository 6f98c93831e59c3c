pub mod alloc;
pub mod faults;
pub mod kmem;
pub mod kmem_raw;
pub mod syscalls;
pub mod syscalls_raw;
pub mod tasks;
pub mod unwind;
