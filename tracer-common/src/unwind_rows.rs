//! Unwind tables as the kernel walks them: rows of each file's call frame information, the
//! mappings that point into them, and the stacks walked with them.

use core::mem::size_of;

/// One row of a compiled unwind table (see `tracer::unwind`): from `pc` (an address of the
/// file's own, as its ELF headers lay it out) up to the next row's, how to find the canonical
/// frame address and the caller's frame pointer. The return address is always at CFA - 8
/// (x86-64); rows whose unwind information says otherwise are [`unwind::CFA_UNKNOWN`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindRow {
    pub pc: u64,
    /// Added to the register [`UnwindRow::cfa`] names.
    pub cfa_offset: i32,
    /// [`unwind::RBP_AT_CFA`]: the caller's rbp is saved at CFA + this.
    pub rbp_offset: i16,
    /// One of the `unwind::CFA_*`.
    pub cfa: u8,
    /// One of the `unwind::RBP_*`.
    pub rbp: u8,
}
const _: () = assert!(size_of::<UnwindRow>() == 16);

/// Rows per value of [`UNWIND_ROWS_MAP`]: one lookup finds a chunk, the rest is memory.
pub const UNWIND_CHUNK_ROWS: usize = 4096;
/// Values of [`UNWIND_ROWS_MAP`] (a million rows: 16 MiB).
pub const MAX_UNWIND_CHUNKS: u32 = 256;
/// Name of the array of unwind rows, in chunks of [`UNWIND_CHUNK_ROWS`]: every table, each
/// at its own run of row indices.
pub const UNWIND_ROWS_MAP: &str = "UNWIND_ROWS";
/// Name of the map of each traced process's executable mappings with unwind tables.
pub const UNWIND_MAPS_MAP: &str = "UNWIND_MAPS";
/// Executable mappings with tables per process.
pub const MAX_UNWIND_MAPPINGS: usize = 128;
/// Name of the map of stacks the unwinder walked, by id (ids from [`DWARF_STACK_ID_BASE`]).
pub const DWARF_STACKS_MAP: &str = "DWARF_STACKS";
/// Stack ids of [`DWARF_STACKS_MAP`] start here, above any id of the kernel's stack map.
pub const DWARF_STACK_ID_BASE: i32 = 1 << 30;
/// Frames an unwound stack keeps: where it started, and 64 callers above it.
pub const MAX_DWARF_FRAMES: usize = 65;

/// One chunk of [`UNWIND_ROWS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UnwindChunk {
    pub rows: [UnwindRow; UNWIND_CHUNK_ROWS],
}
const _: () = assert!(size_of::<UnwindChunk>() == 16 * UNWIND_CHUNK_ROWS);

/// An executable mapping of a process whose file has a table: addresses in `[start, end)`
/// are the table's `pc` plus `bias`; its rows are `rows` from index `first_row`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindMapping {
    pub start: u64,
    pub end: u64,
    pub bias: u64,
    pub first_row: u32,
    pub rows: u32,
}
const _: () = assert!(size_of::<UnwindMapping>() == 32);

/// A process's mappings with tables, sorted by `start`; the first `count` are set.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UnwindMaps {
    pub count: u32,
    /// Always 0: where the kernel's search of `mappings` starts. Read from the map, it is a
    /// number the verifier does not know, so it checks the search's paths together instead of
    /// each of its 2^7 outcomes (with its own constant index) through the rest of the walk.
    pub search_from: u32,
    /// Which writing of a process's mappings this is: never 0, never the same twice in a run
    /// (for any process). The kernel's cache of rows by address keeps it with each row, and
    /// takes a row only while it is the current one: a process that maps new code (dlopen,
    /// exec), or another process at the same addresses, never gets a row of other code.
    pub generation: u32,
    pub pad: u32,
    pub mappings: [UnwindMapping; MAX_UNWIND_MAPPINGS],
}
const _: () = assert!(size_of::<UnwindMaps>() == 16 + 32 * MAX_UNWIND_MAPPINGS);

/// Entries of the kernel's per-CPU cache of unwind rows by address (32 bytes each).
pub const UNWIND_ROW_CACHE_ENTRIES: u32 = 8192;

/// A stack the unwinder walked: where it started (inside the allocator), then the return
/// addresses, innermost (the allocator's caller) first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DwarfStack {
    pub len: u32,
    /// Frames found by frame pointer where no table covered the code.
    pub fp_frames: u32,
    pub frames: [u64; MAX_DWARF_FRAMES],
}
const _: () = assert!(size_of::<DwarfStack>() == 8 + 8 * MAX_DWARF_FRAMES);

/// The rules of an [`UnwindRow`].
pub mod unwind {
    /// No rule tracer can follow (an expression, a register other than rsp or rbp), or no
    /// unwind information here: the walk falls back to the frame pointer.
    pub const CFA_UNKNOWN: u8 = 0;
    /// CFA = rsp + offset.
    pub const CFA_RSP: u8 = 1;
    /// CFA = rbp + offset.
    pub const CFA_RBP: u8 = 2;
    /// A PLT entry: CFA = rsp + 8, plus 8 more once past the entry's push (rip & 15 >= 11),
    /// the one expression compilers emit for `.plt`.
    pub const CFA_PLT: u8 = 3;
    /// The caller's rbp is still in rbp.
    pub const RBP_SAME: u8 = 0;
    /// The caller's rbp is saved at CFA + rbp_offset.
    pub const RBP_AT_CFA: u8 = 1;
    /// The caller's rbp cannot be recovered (a rule tracer does not follow).
    pub const RBP_UNKNOWN: u8 = 2;
}
