//! Unwinding through code built without frame pointers: each executable file's call frame
//! information (`.eh_frame`, and `.debug_frame` where present) compiled into compact rows,
//! sorted by address, that a program can search with a bounded binary search: for each range
//! of the file's addresses, how to find the canonical frame address (CFA) and where the
//! caller's rbp was saved. The return address is at CFA - 8 on x86-64.
//!
//! The rows keep what compilers emit for ordinary code and PLT entries; anything else (a CFA
//! in another register, an expression other than the PLT's, a return address not at CFA - 8)
//! is [`tracer_common::unwind::CFA_UNKNOWN`]: a walk falls back to the frame pointer there.

pub mod compiler;
pub mod loader;
pub mod rows;

pub use loader::UnwindTables;
pub use rows::{UnwindError, UnwindTable, compile_file};
