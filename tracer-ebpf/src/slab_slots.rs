//! The slab objects the traced processes hold, in a table of our own: an array of slots found
//! by the object's address, claimed and released with compare-and-swap.
//!
//! Every object a traced process is given goes in, and comes out at its free (which may run in
//! any context), so on a busy process this is two map operations per kernel object. A BPF hash
//! map update takes a bucket lock and an element from a free list, and a delete gives it back:
//! about 250 ns for the pair here. A slot of this table is claimed by one compare-and-swap of
//! its address word, and released by another: no lock, no element, a cache line or two.
//!
//! An object's home is slot `fibonacci_slot(ptr)`; it may lie in any of the [`WINDOW`] slots
//! from there (taken in turn, wrapping at the end). Lookups always read the whole window, so an
//! emptied slot needs no tombstone. When the window is full the caller falls back to the hash
//! map.

use core::intrinsics::{AtomicOrdering, atomic_cxchg};

use aya_ebpf::{macros::map, maps::Array};
use tracer_common::LiveObject;

use crate::maps::fibonacci_slot;

/// log2 of the table's slots: 65,536 slots of 24 bytes (1.5 MiB). A process holds far fewer
/// kernel objects than that at once, so windows are rarely full.
const SLOT_BITS: u32 = 16;

/// Slots an object may lie in, from its home.
const WINDOW: u32 = 8;

/// A slot: the object's address (0 when empty) and what its free needs.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LiveSlot {
    ptr: u64,
    object: LiveObject,
}

#[map(name = "LIVE_SLOTS")]
static LIVE_SLOTS: Array<LiveSlot> = Array::with_max_entries(1 << SLOT_BITS, 0);

#[inline(always)]
fn slot(ptr: u64, i: u32) -> Option<*mut LiveSlot> {
    LIVE_SLOTS.get_ptr_mut((fibonacci_slot(ptr, SLOT_BITS) + i) & ((1 << SLOT_BITS) - 1))
}

/// Swaps `old` for `new` in `word` if it holds `old`; whether it did.
#[inline(always)]
fn swap(word: *mut u64, old: u64, new: u64) -> bool {
    // SAFETY: `word` is inside a map value, valid for the program's run.
    unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
            word, old, new,
        )
        .1
    }
}

/// Puts `ptr` in the table with `object`; false when its window is full. An object already
/// there (given out again without a free seen) has its entry replaced, as a map update would.
#[inline(always)]
pub fn insert(ptr: u64, object: LiveObject) -> bool {
    // The window is read whole first: an entry of `ptr` may lie past an empty slot.
    let mut empty = None;
    for i in 0..WINDOW {
        let Some(s) = slot(ptr, i) else {
            return false;
        };
        // SAFETY: a map value's address; a stale read is settled by the swap below.
        let held = unsafe { core::ptr::read_volatile(&raw const (*s).ptr) };
        if held == ptr {
            // SAFETY: as above. The slot is this object's: only its free empties it, and that
            // cannot run while it is being given out.
            unsafe { (*s).object = object };
            return true;
        }
        if held == 0 && empty.is_none() {
            empty = Some(s);
        }
    }
    let Some(s) = empty else {
        return false;
    };
    // SAFETY: as above.
    if swap(unsafe { &raw mut (*s).ptr }, 0, ptr) {
        // Written after the claim: the object's free, the only reader of these fields, comes
        // after the allocation returns, and so after this program.
        // SAFETY: as above; the slot is claimed.
        unsafe { (*s).object = object };
        return true;
    }
    // Another CPU claimed it first: the rest of the window, in turn.
    for i in 0..WINDOW {
        let Some(s) = slot(ptr, i) else {
            return false;
        };
        // SAFETY: as above.
        if swap(unsafe { &raw mut (*s).ptr }, 0, ptr) {
            // SAFETY: as above.
            unsafe { (*s).object = object };
            return true;
        }
    }
    false
}

/// Takes `ptr` out of the table: what was put in with it, or `None` if it is not there.
#[inline(always)]
pub fn take(ptr: u64) -> Option<LiveObject> {
    if ptr == 0 {
        return None;
    }
    for i in 0..WINDOW {
        let s = slot(ptr, i)?;
        // SAFETY: a map value's address.
        if unsafe { core::ptr::read_volatile(&raw const (*s).ptr) } == ptr {
            // SAFETY: as above; read before the slot is released.
            let object = unsafe { (*s).object };
            // Released by swap, so that of two frees racing on one address (a double free),
            // one is counted.
            // SAFETY: as above.
            return swap(unsafe { &raw mut (*s).ptr }, ptr, 0).then_some(object);
        }
    }
    None
}
