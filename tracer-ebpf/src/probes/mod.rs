pub mod alloc;
pub mod faults;
pub mod kmem;
pub mod syscalls;
pub mod tasks;
