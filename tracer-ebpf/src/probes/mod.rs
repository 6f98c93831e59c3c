pub mod syscalls;
