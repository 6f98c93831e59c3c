//! tracer's eBPF programs. One file per probe family under `probes/`; maps and configuration
//! shared between families in `maps.rs`.
#![no_std]
#![no_main]
// Atomic adds, compare-and-swaps and exchanges on map values (`probes/kmem.rs`, `live.rs`,
// `ring.rs`): the BPF target's core has no atomic types.
#![feature(core_intrinsics)]
#![expect(internal_features, reason = "core_intrinsics, for atomics")]

mod maps;
mod probes;
mod ring;
mod slab_slots;

/// A loop, not `unreachable_unchecked`: that would let LLVM assume every panicking path away
/// and delete the bounds checks before it, where a loop keeps them and makes any reachable
/// panic a program the verifier rejects (an unbounded loop).
#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    #[allow(
        clippy::empty_loop,
        reason = "a BPF program cannot panic: the verifier rejects the path"
    )]
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
