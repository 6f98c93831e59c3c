//! Wire types shared by tracer's eBPF programs and its userspace.
//!
//! Every type that crosses the kernel/user boundary is defined here once: `#[repr(C)]`, `Copy`,
//! without implicit padding, and with its size pinned by a const assertion so that a change on
//! one side cannot silently disagree with the other. Kinds are plain `u32`s on the wire and are
//! decoded with `TryFrom<u32>`.
#![no_std]

mod config;
mod counters;
mod events;
mod maps;
mod slab_counts;
mod unwind_rows;

pub use config::*;
pub use counters::*;
pub use events::*;
pub use maps::*;
pub use slab_counts::{
    LiveObject, MAX_SLAB_COUNTS, SLAB_COUNTED, SLAB_COUNTS_MAP, SlabCount, SlabCountEvent,
    SlabCountKey,
};
pub use unwind_rows::*;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: each type is `#[repr(C)]`, `Copy`, made only of integers, with no padding (the
    // size assertions above pin that), so any bit pattern is valid.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::EventHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SlabCountKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SlabCount {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LiveObject {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SlabCountEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SyscallEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PendingSyscall {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OpenEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AllocEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AllocState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PageEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SlabEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FaultEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FaultPageEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExecEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HeldEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LeakCheckEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BlockKindEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OomEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcessCounts {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CountsSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProcessEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnwindRow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnwindChunk {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnwindMapping {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::UnwindMaps {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DwarfStack {}
}
