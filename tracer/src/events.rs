//! Raw ring-buffer bytes to typed events.

use std::mem::size_of;

use aya::Pod;
use thiserror::Error;
use tracer_common::{EventHeader, Syscall, SyscallEvent, kind};

/// One decoded event. Every variant is `Copy`: decoding borrows the ring buffer and allocates
/// nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Syscall(SyscallEvent),
}

impl Event {
    pub fn header(&self) -> &EventHeader {
        match self {
            Event::Syscall(e) => &e.header,
        }
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
}

/// Decodes one event from the bytes of one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header: EventHeader = read(bytes, "event header")?;
    match header.kind {
        kind::SYSCALL => {
            let event: SyscallEvent = read(bytes, "syscall event")?;
            Syscall::try_from(event.syscall).map_err(DecodeError::UnknownSyscall)?;
            Ok(Event::Syscall(event))
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
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
            reserved: 0,
            args: [0, 8192, 3, 0x22, u64::MAX, 0],
            ret: 0x7f00_0000_0000,
            duration_ns: 1500,
        }
    }

    #[test]
    fn decodes_syscall_event_bytes() {
        let ev = mmap_event();
        let bytes = encode(&ev);
        assert_eq!(bytes.len(), 96);
        // The layout the kernel side writes: header, then syscall id at byte 24, args at 32.
        assert_eq!(&bytes[0..8], &123_456_789u64.to_ne_bytes());
        assert_eq!(&bytes[8..12], &kind::SYSCALL.to_ne_bytes());
        assert_eq!(&bytes[24..28], &(Syscall::Mmap as u32).to_ne_bytes());
        assert_eq!(&bytes[40..48], &8192u64.to_ne_bytes());
        assert_eq!(decode(bytes), Ok(Event::Syscall(ev)));
    }

    #[test]
    fn decodes_from_unaligned_buffer() {
        let ev = mmap_event();
        let mut buf = [0u8; 97];
        buf[1..].copy_from_slice(encode(&ev));
        assert_eq!(decode(&buf[1..]), Ok(Event::Syscall(ev)));
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
                    need: 96,
                    got: len,
                }
            };
            assert_eq!(err, expected, "length {len}");
        }
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
