//! Raw ring-buffer bytes to typed events.

use std::{mem::size_of, ops::Deref};

use aya::Pod;
use thiserror::Error;
use tracer_common::{
    AllocEvent, AllocFn, BlockKindEvent, EventHeader, EventKind, ExecEvent, FaultEvent,
    FaultPageEvent, HeldEvent, LeakCheckEvent, OomEvent, OpenEvent, PageEvent, ProcessEvent,
    SlabCountEvent, SlabEvent, Syscall, SyscallEvent, block_kind, kind, leak_check,
};

/// One decoded event. Every variant is `Copy`: decoding borrows the ring buffer and allocates
/// nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Syscall(SyscallCall),
    Alloc(AllocCall),
    Open(OpenEvent),
    PageAlloc(PageEvent),
    PageFree(PageEvent),
    SlabAlloc(SlabEvent),
    SlabFree(SlabEvent),
    /// Slab objects counted in the kernel, as read at `header.ts_ns`.
    SlabCount(SlabCountEvent),
    Fault(FaultEvent),
    /// A fault and the page block it took, sent as one record: the two events, in order
    /// (the fault's kind is [`kind::FAULT`] again).
    FaultPage(FaultEvent, PageEvent),
    Exec(ExecEvent),
    /// `--follow`: a traced process created child process `pid`.
    Fork(ProcessEvent),
    /// `--follow`: a traced process ended.
    Exit(ProcessEvent),
    /// The process stopped itself until continued (a live control; not recorded).
    Held(HeldEvent),
    /// A leak check of the process ran; the blocks it did not find reachable follow.
    LeakCheck(LeakCheck),
    /// One block the leak check before it did not find reachable.
    BlockKind(BlockKind),
    /// The kernel's OOM killer chose the process.
    Oom(OomEvent),
}

impl Event {
    pub fn header(&self) -> &EventHeader {
        match self {
            Event::Syscall(e) => &e.header,
            Event::Alloc(e) => &e.header,
            Event::Open(e) => &e.header,
            Event::PageAlloc(e) | Event::PageFree(e) => &e.header,
            Event::SlabAlloc(e) | Event::SlabFree(e) => &e.header,
            Event::SlabCount(e) => &e.header,
            Event::Fault(e) | Event::FaultPage(e, _) => &e.header,
            Event::Exec(e) => &e.header,
            Event::Fork(e) | Event::Exit(e) => &e.header,
            Event::Held(e) => &e.header,
            Event::LeakCheck(e) => &e.raw.header,
            Event::BlockKind(e) => &e.raw.header,
            Event::Oom(e) => &e.header,
        }
    }
}

/// A syscall event with its syscall decoded: what `decode` checked, typed, so that nothing
/// after it reads the number again. Its wire fields are reached through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyscallCall {
    pub syscall: Syscall,
    pub raw: SyscallEvent,
}

impl Deref for SyscallCall {
    type Target = SyscallEvent;

    fn deref(&self) -> &SyscallEvent {
        &self.raw
    }
}

impl TryFrom<SyscallEvent> for SyscallCall {
    type Error = DecodeError;

    fn try_from(raw: SyscallEvent) -> Result<Self, DecodeError> {
        let syscall = Syscall::try_from(raw.syscall).map_err(DecodeError::UnknownSyscall)?;
        Ok(SyscallCall { syscall, raw })
    }
}

/// An allocator event with its function decoded (see [`SyscallCall`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocCall {
    pub func: AllocFn,
    pub raw: AllocEvent,
}

impl Deref for AllocCall {
    type Target = AllocEvent;

    fn deref(&self) -> &AllocEvent {
        &self.raw
    }
}

impl TryFrom<AllocEvent> for AllocCall {
    type Error = DecodeError;

    fn try_from(raw: AllocEvent) -> Result<Self, DecodeError> {
        let func = AllocFn::try_from(raw.func).map_err(DecodeError::UnknownAllocFn)?;
        Ok(AllocCall { func, raw })
    }
}

/// What a leak check found a live block to be: memcheck's categories.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LeakKind {
    /// No pointer reaches it ("definitely lost").
    Lost,
    /// Reached only from lost blocks ("indirectly lost").
    Indirect,
    /// Reached only by pointers into its middle ("possibly lost").
    Possible,
    /// A pointer to its start is in the process's memory or registers ("still reachable").
    Reachable,
}

impl LeakKind {
    pub const ALL: [LeakKind; 4] = [
        LeakKind::Lost,
        LeakKind::Indirect,
        LeakKind::Possible,
        LeakKind::Reachable,
    ];

    /// As the wire carries it; reachable blocks are not sent (see [`BlockKindEvent`]).
    pub fn wire(self) -> u32 {
        match self {
            LeakKind::Lost => block_kind::LOST,
            LeakKind::Indirect => block_kind::INDIRECT,
            LeakKind::Possible => block_kind::POSSIBLE,
            LeakKind::Reachable => 0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LeakKind::Lost => "lost",
            LeakKind::Indirect => "indirect",
            LeakKind::Possible => "possible",
            LeakKind::Reachable => "reachable",
        }
    }
}

/// What a leak check came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckOutcome {
    Done,
    GaveUp,
    Failed,
}

/// When a leak check ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckMoment {
    AtExit,
    AtEnd,
    OnRequest,
}

/// A leak check event with its outcome and moment decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeakCheck {
    pub outcome: CheckOutcome,
    pub moment: CheckMoment,
    pub raw: LeakCheckEvent,
}

impl TryFrom<LeakCheckEvent> for LeakCheck {
    type Error = DecodeError;

    fn try_from(raw: LeakCheckEvent) -> Result<Self, DecodeError> {
        let outcome = match raw.outcome {
            leak_check::DONE => CheckOutcome::Done,
            leak_check::GAVE_UP => CheckOutcome::GaveUp,
            leak_check::FAILED => CheckOutcome::Failed,
            other => return Err(DecodeError::UnknownCheck(other)),
        };
        let moment = match raw.moment {
            leak_check::AT_EXIT => CheckMoment::AtExit,
            leak_check::AT_END => CheckMoment::AtEnd,
            leak_check::ON_REQUEST => CheckMoment::OnRequest,
            other => return Err(DecodeError::UnknownCheck(other)),
        };
        Ok(LeakCheck {
            outcome,
            moment,
            raw,
        })
    }
}

/// A block kind event with its kind decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockKind {
    pub kind: LeakKind,
    pub raw: BlockKindEvent,
}

impl TryFrom<BlockKindEvent> for BlockKind {
    type Error = DecodeError;

    fn try_from(raw: BlockKindEvent) -> Result<Self, DecodeError> {
        let kind = match raw.kind {
            block_kind::LOST => LeakKind::Lost,
            block_kind::INDIRECT => LeakKind::Indirect,
            block_kind::POSSIBLE => LeakKind::Possible,
            other => return Err(DecodeError::UnknownLeakKind(other)),
        };
        Ok(BlockKind { kind, raw })
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("{what} needs {need} bytes, got {got}")]
    Truncated {
        what: &'static str,
        need: usize,
        got: usize,
    },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
    #[error("unknown syscall {0}")]
    UnknownSyscall(u32),
    #[error("unknown allocator function {0}")]
    UnknownAllocFn(u32),
    #[error("unknown leak check outcome or moment {0}")]
    UnknownCheck(u32),
    #[error("unknown leak kind {0}")]
    UnknownLeakKind(u32),
}

/// The header of a record, without decoding the rest.
pub fn decode_header(bytes: &[u8]) -> Result<EventHeader, DecodeError> {
    read(bytes, "event header")
}

/// For an allocator event: its process, and the blocks it returns and passes in (0 for
/// none). Read ahead of the decode, to fetch the live blocks' slots (see
/// [`crate::aggregate::blocks::LiveTable::prefetch`]).
pub fn block_addresses(bytes: &[u8]) -> Option<(u32, u64, u64)> {
    let header = decode_header(bytes).ok()?;
    if header.kind != kind::ALLOC {
        return None;
    }
    let event: AllocEvent = read(bytes, "allocation event").ok()?;
    Some((header.tgid, event.ptr, event.old_ptr))
}

/// Decodes one event from the bytes of one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header = decode_header(bytes)?;
    let kind = EventKind::try_from(header.kind).map_err(DecodeError::UnknownKind)?;
    Ok(match kind {
        EventKind::Syscall => {
            let event: SyscallEvent = read(bytes, "syscall event")?;
            Event::Syscall(event.try_into()?)
        }
        EventKind::Alloc => {
            let event: AllocEvent = read(bytes, "allocation event")?;
            Event::Alloc(event.try_into()?)
        }
        EventKind::Open => Event::Open(read(bytes, "open event")?),
        EventKind::PageAlloc => Event::PageAlloc(read(bytes, "page event")?),
        EventKind::PageFree => Event::PageFree(read(bytes, "page event")?),
        EventKind::SlabAlloc => Event::SlabAlloc(read(bytes, "slab event")?),
        EventKind::SlabFree => Event::SlabFree(read(bytes, "slab event")?),
        EventKind::SlabCount => Event::SlabCount(read(bytes, "slab count event")?),
        EventKind::Fault => Event::Fault(read(bytes, "fault event")?),
        EventKind::FaultPage => {
            let FaultPageEvent { mut fault, page } = read(bytes, "fault and page event")?;
            fault.header.kind = kind::FAULT;
            Event::FaultPage(fault, page)
        }
        EventKind::Exec => Event::Exec(read(bytes, "exec event")?),
        EventKind::Fork => Event::Fork(read(bytes, "fork event")?),
        EventKind::Exit => Event::Exit(read(bytes, "exit event")?),
        EventKind::Held => Event::Held(read(bytes, "held event")?),
        EventKind::LeakCheck => {
            let event: LeakCheckEvent = read(bytes, "leak check event")?;
            Event::LeakCheck(event.try_into()?)
        }
        EventKind::BlockKind => {
            let event: BlockKindEvent = read(bytes, "block kind event")?;
            Event::BlockKind(event.try_into()?)
        }
        EventKind::Oom => Event::Oom(read(bytes, "OOM event")?),
    })
}

/// The bytes of a wire value, as the kernel writes them.
pub fn encode<T: Pod>(value: &T) -> &[u8] {
    // SAFETY: `T: Pod` is plain old data without padding, so all its bytes are initialised.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

fn read<T: Pod>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Truncated {
            what,
            need,
            got: bytes.len(),
        });
    }
    // SAFETY: length checked above; `T: Pod` accepts any bit pattern; unaligned read.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Builders of synthetic events for tests.
#[cfg(test)]
pub(crate) mod testing {
    use tracer_common::{AllocEvent, AllocFn, EventHeader, Syscall, SyscallEvent, kind};

    use super::{AllocCall, SyscallCall};

    /// `func` called from `caller` (stack id 1) on thread 1 at `ts_ns`, returning `ptr` for a
    /// request of `size` bytes; `enter_ns` equals `ts_ns`. Adjust the rest with `..`; see
    /// [`alloc_call`] for it typed.
    pub fn alloc(func: AllocFn, size: u64, ptr: u64, caller: u64, ts_ns: u64) -> AllocEvent {
        AllocEvent {
            header: EventHeader {
                ts_ns,
                kind: kind::ALLOC,
                tgid: 1,
                tid: 1,
                cpu: 0,
            },
            func: func as u32,
            stack_id: 1,
            nmemb: 1,
            size,
            ptr,
            old_ptr: 0,
            caller,
            enter_ns: ts_ns,
        }
    }

    /// `raw`, typed as `decode` would type it (its numbers must be known ones).
    pub fn call(raw: SyscallEvent) -> SyscallCall {
        SyscallCall {
            syscall: Syscall::try_from(raw.syscall).expect("a known syscall"),
            raw,
        }
    }

    /// `raw`, typed as `decode` would type it.
    pub fn alloc_call(raw: AllocEvent) -> AllocCall {
        AllocCall {
            func: AllocFn::try_from(raw.func).expect("a known allocator function"),
            raw,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mmap_event() -> SyscallEvent {
        SyscallEvent {
            header: EventHeader {
                ts_ns: 123_456_789,
                kind: kind::SYSCALL,
                tgid: 42,
                tid: 43,
                cpu: 1,
            },
            syscall: Syscall::Mmap as u32,
            stack_id: -1,
            args: [0, 8192, 3, 0x22, u64::MAX, 0],
            ret: 0x7f00_0000_0000,
            duration_ns: 1500,
            alloc_enter_ns: 0,
        }
    }

    #[test]
    fn decodes_syscall_event_bytes() {
        let ev = mmap_event();
        let bytes = encode(&ev);
        assert_eq!(bytes.len(), 104);
        // The layout the kernel side writes: header, then syscall id at byte 24, args at 32.
        assert_eq!(&bytes[0..8], &123_456_789u64.to_ne_bytes());
        assert_eq!(&bytes[8..12], &kind::SYSCALL.to_ne_bytes());
        assert_eq!(&bytes[24..28], &(Syscall::Mmap as u32).to_ne_bytes());
        assert_eq!(&bytes[40..48], &8192u64.to_ne_bytes());
        assert_eq!(decode(bytes), Ok(Event::Syscall(testing::call(ev))));
    }

    #[test]
    fn decodes_from_unaligned_buffer() {
        let ev = mmap_event();
        let mut buf = [0u8; 105];
        buf[1..].copy_from_slice(encode(&ev));
        assert_eq!(decode(&buf[1..]), Ok(Event::Syscall(testing::call(ev))));
    }

    #[test]
    fn truncated_input_is_an_error_at_every_length() {
        let ev = mmap_event();
        let bytes = encode(&ev);
        for len in 0..bytes.len() {
            let err = decode(&bytes[..len]).unwrap_err();
            let expected = if len < 24 {
                DecodeError::Truncated {
                    what: "event header",
                    need: 24,
                    got: len,
                }
            } else {
                DecodeError::Truncated {
                    what: "syscall event",
                    need: 104,
                    got: len,
                }
            };
            assert_eq!(err, expected, "length {len}");
        }
    }

    fn header(kind: u32) -> EventHeader {
        EventHeader {
            ts_ns: 5,
            kind,
            tgid: 7,
            tid: 8,
            cpu: 0,
        }
    }

    #[test]
    fn decodes_alloc_and_open_events() {
        let alloc = AllocEvent {
            header: header(kind::ALLOC),
            func: AllocFn::Calloc as u32,
            stack_id: 17,
            nmemb: 4,
            size: 24,
            ptr: 0x5555_0000_1000,
            old_ptr: 0,
            caller: 0x5555_0000_0123,
            enter_ns: 4,
        };
        let bytes = encode(&alloc);
        assert_eq!(bytes.len(), 80);
        assert_eq!(&bytes[24..28], &(AllocFn::Calloc as u32).to_ne_bytes());
        assert_eq!(&bytes[28..32], &17i32.to_ne_bytes());
        assert_eq!(decode(bytes), Ok(Event::Alloc(testing::alloc_call(alloc))));
        for len in 24..80 {
            assert_eq!(
                decode(&bytes[..len]),
                Err(DecodeError::Truncated {
                    what: "allocation event",
                    need: 80,
                    got: len
                })
            );
        }
        let mut bad = alloc;
        bad.func = 0;
        assert_eq!(decode(encode(&bad)), Err(DecodeError::UnknownAllocFn(0)));

        let mut path = [0u8; tracer_common::PATH_BYTES];
        path[..9].copy_from_slice(b"/lib/x.so");
        let open = OpenEvent {
            header: header(kind::OPEN),
            fd: 3,
            dirfd: -100,
            path,
        };
        let bytes = encode(&open);
        assert_eq!(&bytes[32..41], b"/lib/x.so");
        assert_eq!(decode(bytes), Ok(Event::Open(open)));
        assert!(matches!(
            decode(&bytes[..100]),
            Err(DecodeError::Truncated { need: 288, .. })
        ));
    }

    #[test]
    fn decodes_kernel_events() {
        use tracer_common::{CACHE_NAME_BYTES, InFlight};
        let in_flight = InFlight {
            syscall_enter_ns: 11,
            alloc_enter_ns: 12,
        };
        let page = PageEvent {
            header: header(kind::PAGE_ALLOC),
            in_flight,
            pfn: 0x12345,
            gfp_flags: 0x140cca,
            order: 0,
            migratetype: 1,
            kstack_id: -1,
            reserved: 0,
        };
        let bytes = encode(&page);
        assert_eq!(bytes.len(), 72);
        assert_eq!(&bytes[24..32], &11u64.to_ne_bytes());
        assert_eq!(&bytes[40..48], &0x12345u64.to_ne_bytes());
        assert_eq!(decode(bytes), Ok(Event::PageAlloc(page)));
        let mut free = page;
        free.header.kind = kind::PAGE_FREE;
        assert_eq!(decode(encode(&free)), Ok(Event::PageFree(free)));

        let mut cache = [0u8; CACHE_NAME_BYTES];
        cache[..14].copy_from_slice(b"vm_area_struct");
        let slab = SlabEvent {
            header: header(kind::SLAB_ALLOC),
            in_flight,
            ptr: 0xffff_8880_0000_1000,
            call_site: 0xffff_ffff_8100_0000,
            bytes_req: 176,
            bytes_alloc: 184,
            gfp_flags: 0xcc0,
            kstack_id: 3,
            flags: 0,
            cache,
        };
        let bytes = encode(&slab);
        assert_eq!(bytes.len(), 120);
        assert_eq!(&bytes[88..102], b"vm_area_struct");
        assert_eq!(decode(bytes), Ok(Event::SlabAlloc(slab)));
        assert!(matches!(
            decode(&bytes[..119]),
            Err(DecodeError::Truncated {
                what: "slab event",
                need: 120,
                got: 119
            })
        ));

        let count = SlabCountEvent {
            header: header(kind::SLAB_COUNT),
            key: tracer_common::SlabCountKey {
                tgid: 42,
                flags: 0,
                cache: 0xffff_8880_0001_0000,
            },
            count: tracer_common::SlabCount {
                allocs: 9,
                frees: 4,
                bytes_req: 9 * 176,
                object_size: 184,
                req_size: 176,
                name: cache,
            },
        };
        let bytes = encode(&count);
        assert_eq!(bytes.len(), 112);
        assert_eq!(&bytes[24..28], &42u32.to_ne_bytes());
        assert_eq!(&bytes[40..48], &9u64.to_ne_bytes());
        assert_eq!(&bytes[80..94], b"vm_area_struct");
        assert_eq!(decode(bytes), Ok(Event::SlabCount(count)));
        assert!(matches!(
            decode(&bytes[..111]),
            Err(DecodeError::Truncated { need: 112, .. })
        ));

        let fault = FaultEvent {
            header: header(kind::FAULT),
            in_flight,
            address: 0x7f00_0000_1234,
            ip: 0x5555_0000_0100,
            error_code: 6,
            stack_id: -1,
        };
        let bytes = encode(&fault);
        assert_eq!(bytes.len(), 64);
        assert_eq!(decode(bytes), Ok(Event::Fault(fault)));

        // A fault and its page in one record: the fault first, its kind FAULT again.
        let both = FaultPageEvent {
            fault: FaultEvent {
                header: header(kind::FAULT_PAGE),
                ..fault
            },
            page,
        };
        let bytes = encode(&both);
        assert_eq!(bytes.len(), 136);
        assert_eq!(&bytes[8..12], &kind::FAULT_PAGE.to_ne_bytes());
        assert_eq!(&bytes[40..48], &0x7f00_0000_1234u64.to_ne_bytes());
        assert_eq!(&bytes[64 + 8..64 + 12], &kind::PAGE_ALLOC.to_ne_bytes());
        assert_eq!(&bytes[64 + 40..64 + 48], &0x12345u64.to_ne_bytes());
        assert_eq!(decode(bytes), Ok(Event::FaultPage(fault, page)));
        assert_eq!(decode(bytes).unwrap().header(), &fault.header);
        assert!(matches!(
            decode(&bytes[..135]),
            Err(DecodeError::Truncated {
                what: "fault and page event",
                need: 136,
                got: 135
            })
        ));
    }

    #[test]
    fn unknown_kinds_are_errors() {
        let mut ev = mmap_event();
        ev.header.kind = 99;
        assert_eq!(decode(encode(&ev)), Err(DecodeError::UnknownKind(99)));
        let mut ev = mmap_event();
        ev.syscall = 77;
        assert_eq!(decode(encode(&ev)), Err(DecodeError::UnknownSyscall(77)));
    }
}

/// What one probe program cost while tracing, as the kernel's bpf_stats counted it
/// (`--costs`): its runs and the nanoseconds they took.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeCost {
    pub program: String,
    pub runs: u64,
    pub ns: u64,
}
