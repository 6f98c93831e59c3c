pub mod alloc;
pub mod syscalls;
