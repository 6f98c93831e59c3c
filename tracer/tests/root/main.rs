//! The root tests: the real eBPF programs loaded and attached, against workloads whose
//! allocations are known, one module per subject, in one test binary. They refuse to run
//! without root rather than pass; `cargo xtask test` runs them as root.
//!
//! The tests that need no root are beside this directory: `recordings.rs` (checked-in
//! recordings through every format and `tracer diff`) and `layers.rs` (the source's layers).

mod support;

mod alloc;
mod cgroups;
mod diff;
mod errors;
mod exec;
mod findings;
mod flood;
mod follow;
mod kernel;
mod killed;
mod live;
mod modes;
mod reach;
mod reports;
mod resident;
mod safety;
mod sampling;
mod serve;
mod stacks;
mod syscalls;
mod target_files;
mod top;
