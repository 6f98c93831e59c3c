//! Reserving records in the event ring, with one fault held back per CPU.
//!
//! A first touch of a page is a fault and then, while the kernel handles it, the page block
//! it takes: two events, each a reservation, a timestamp and a submit, which on a page-touch
//! loop cost more than the programs' own work. So the fault program does not send its event:
//! it leaves it in this CPU's slot of [`FAULT_STASH`], and the next event this CPU sends
//! carries it. When that is the page allocation of the same thread (no syscall in flight),
//! both go as one [`FaultPageEvent`]; anything else sends the held fault first, on its own,
//! through [`reserve`]. So the records of one CPU keep the order the events had. A held
//! fault waits only for the next event of its CPU; userspace reads what is still held when
//! tracing ends (`tracer_common::FAULT_STASH_MAP`).
//!
//! The slot is emptied with one atomic exchange of its kind (and the tgid beside it), so that
//! a program interrupting another on the same CPU (a slab allocation in an interrupt, say)
//! never sends it twice.

use core::intrinsics::{AtomicOrdering, atomic_xchg};

use aya_ebpf::{bindings::BPF_RB_FORCE_WAKEUP, helpers::generated::bpf_send_signal};
use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, ring_buf::RingBufEntry},
};
use tracer_common::{
    EventHeader, FaultEvent, FaultPageEvent, HeldEvent, InFlight, PageEvent, counter, kind,
};

use crate::maps::{EVENTS, SIGSTOP, bump, header, wakeup_flags};

/// The fault each CPU holds back, `header.kind` 0 when there is none.
#[map(name = "FAULT_STASH")]
static FAULT_STASH: PerCpuArray<FaultEvent> = PerCpuArray::with_max_entries(1, 0);

/// A record of `T` in the ring, after this CPU's held fault (if any) is sent.
#[inline(always)]
pub fn reserve<T: 'static>() -> Option<RingBufEntry<T>> {
    flush_fault();
    reserve_now()
}

/// A record of `T`, counted as dropped when the ring is full.
#[inline(always)]
fn reserve_now<T: 'static>() -> Option<RingBufEntry<T>> {
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        bump(counter::RINGBUF_DROPPED);
    }
    entry
}

/// The held fault, taken out of its slot (`None` when the slot was empty).
#[inline(always)]
fn take(slot: *mut FaultEvent) -> Option<FaultEvent> {
    // The exchange is 64 bits (what the instruction set exchanges): the header's kind and,
    // above it, its tgid, both zeroed.
    // SAFETY: `slot` is this CPU's map value, valid for the program's run and 8-aligned, and
    // `kind` sits at offset 8 of it with `tgid` after it; the exchange decides which program
    // takes the fault.
    let was = unsafe {
        atomic_xchg::<u64, { AtomicOrdering::Relaxed }>(
            (&raw mut (*slot).header.kind).cast::<u64>(),
            0,
        )
    };
    if was as u32 == 0 {
        return None;
    }
    // SAFETY: as above; nothing writes the slot but a fault, and no fault interrupts this.
    let mut fault = unsafe { core::ptr::read_volatile(slot) };
    fault.header.kind = was as u32;
    fault.header.tgid = (was >> 32) as u32;
    Some(fault)
}

/// Sends this CPU's held fault, if there is one.
#[inline(always)]
pub fn flush_fault() {
    let Some(slot) = FAULT_STASH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: as in `take`; a plain read first, so an empty slot costs no atomic.
    if unsafe { core::ptr::read_volatile(&raw const (*slot).header.kind) } == 0 {
        return;
    }
    let Some(fault) = take(slot) else {
        return;
    };
    let Some(mut entry) = reserve_now::<FaultEvent>() else {
        return;
    };
    entry.write(fault);
    entry.submit(wakeup_flags());
}

/// Holds `fault` back until this CPU's next event (sending the one held before, if any).
#[inline(always)]
pub fn hold_fault(fault: FaultEvent) {
    flush_fault();
    let Some(slot) = FAULT_STASH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: as in `take`. The kind goes last: a program that interrupts this one sees an
    // empty slot or a whole fault.
    unsafe {
        core::ptr::write_volatile(
            slot,
            FaultEvent {
                header: EventHeader {
                    kind: 0,
                    ..fault.header
                },
                ..fault
            },
        );
        core::ptr::write_volatile(&raw mut (*slot).header.kind, kind::FAULT);
    }
}

/// The page block `page` given to thread `tid`: sent as one record with the fault this CPU
/// holds for that thread, or else on its own, after whatever this CPU holds. `page.header`
/// is written here (with the fault's stamp when the two go together).
#[inline(always)]
pub fn send_page(tgid: u32, tid: u32, page: PageEvent, header: impl FnOnce() -> EventHeader) {
    if let Some(fault) = held_fault_of(tid, &page.in_flight) {
        let Some(mut entry) = reserve_now::<FaultPageEvent>() else {
            // Two events lost: the page's is counted, and the fault's.
            bump(counter::RINGBUF_DROPPED);
            return;
        };
        entry.write(FaultPageEvent {
            fault: FaultEvent {
                header: EventHeader {
                    kind: kind::FAULT_PAGE,
                    ..fault.header
                },
                ..fault
            },
            page: PageEvent {
                header: EventHeader {
                    kind: kind::PAGE_ALLOC,
                    tgid,
                    tid,
                    ..fault.header
                },
                ..page
            },
        });
        entry.submit(wakeup_flags());
        return;
    }
    let Some(mut entry) = reserve::<PageEvent>() else {
        return;
    };
    entry.write(PageEvent {
        header: header(),
        ..page
    });
    entry.submit(wakeup_flags());
}

/// This CPU's held fault, taken, if it is thread `tid`'s and the page comes from handling it
/// (no syscall in flight: a page a syscall takes is the syscall's, and goes after the fault).
#[inline(always)]
fn held_fault_of(tid: u32, in_flight: &InFlight) -> Option<FaultEvent> {
    if in_flight.syscall_enter_ns != 0 {
        return None;
    }
    let slot = FAULT_STASH.get_ptr_mut(0)?;
    // SAFETY: as in `take`.
    let (held, of) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*slot).header.kind),
            core::ptr::read_volatile(&raw const (*slot).header.tid),
        )
    };
    if held == 0 || of != tid {
        return None;
    }
    take(slot)
}

const _: () = assert!(
    core::mem::offset_of!(FaultEvent, header) == 0
        && core::mem::offset_of!(EventHeader, kind) == 8
        && core::mem::offset_of!(EventHeader, tgid) == 12
);

/// Stops the current process until userspace, told by a [`HeldEvent`], continues it. Not
/// stopped when the event cannot be written: nobody would continue it. The signal is sent
/// before the event is submitted: a SIGCONT sent before the stop would be lost, and the process
/// left stopped (one sent after it, before the process stops, cancels the pending stop).
#[inline(always)]
pub fn hold(tgid: u32, tid: u32, reason: u32) {
    let Some(mut entry) = reserve::<HeldEvent>() else {
        return;
    };
    entry.write(HeldEvent {
        header: header(kind::HELD, tgid, tid),
        reason,
        _pad: 0,
    });
    // SAFETY: a helper that signals the current task only (delivered on return to user).
    unsafe { bpf_send_signal(SIGSTOP) };
    entry.submit(u64::from(BPF_RB_FORCE_WAKEUP));
}
