//! Walking a user stack with the unwind tables userspace compiled from each file's call frame
//! information (`tracer_common::UnwindRow`), frame pointers where a file has none: code built
//! without frame pointers gets its whole stack. The walk stores the stack in [`DWARF_STACKS`]
//! under a hash of its frames, so that events carry an id.
//!
//! Every frame is checked: a return address of zero, a CFA that does not move up the stack, or
//! an unreadable slot ends the walk (nothing is guessed).

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{
            bpf_get_current_task_btf, bpf_ktime_get_ns, bpf_loop,
            bpf_probe_read_user as bpf_probe_read_user_raw, bpf_task_pt_regs,
        },
    },
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
    programs::tracing::StackIdContext,
};
use tracer_common::{
    DWARF_STACK_ID_BASE, DwarfStack, MAX_DWARF_FRAMES, MAX_FOLLOWED, MAX_STACKS, MAX_UNWIND_CHUNKS,
    MAX_UNWIND_MAPPINGS, UNWIND_CHUNK_ROWS, UNWIND_ROW_CACHE_ENTRIES, UnwindChunk, UnwindMaps,
    UnwindRow, config_flags, counter, unwind,
};

use crate::maps::{add, bump, config_flag, user_stack_id};

#[map(name = "UNWIND_ROWS")]
pub static UNWIND_ROWS: Array<UnwindChunk> = Array::with_max_entries(MAX_UNWIND_CHUNKS, 0);

#[map(name = "UNWIND_MAPS")]
pub static UNWIND_MAPS: HashMap<u32, UnwindMaps> = HashMap::with_max_entries(MAX_FOLLOWED + 1, 0);

#[map(name = "DWARF_STACKS")]
pub static DWARF_STACKS: HashMap<u32, DwarfStack> = HashMap::with_max_entries(MAX_STACKS, 0);

/// A row the search found for an address (`found` 0: no table covers it), under the
/// generation of the process's mappings it was searched in (see `UnwindMaps::generation`).
#[repr(C)]
#[derive(Clone, Copy)]
struct CachedRow {
    addr: u64,
    generation: u32,
    found: u32,
    row: UnwindRow,
}

/// The rows last found, per CPU, by address: most frames of most stacks are the same few
/// hundred return addresses, and a hit skips both binary searches (about 30 steps). Direct
/// mapped: a slot holds the last address that hashed to it.
#[map(name = "UNWIND_ROW_CACHE")]
static ROW_CACHE: PerCpuArray<CachedRow> =
    PerCpuArray::with_max_entries(UNWIND_ROW_CACHE_ENTRIES, 0);

/// The stack being walked, per CPU (too large for the BPF stack).
#[map(name = "UNWIND_SCRATCH")]
static SCRATCH: PerCpuArray<DwarfStack> = PerCpuArray::with_max_entries(1, 0);

/// Steps of the binary searches: 2^7 mappings, 2^22 rows.
const MAPPING_STEPS: usize = 7;
const ROW_STEPS: usize = 22;
/// The most a frame may span: a CFA further up the stack than this ends the walk.
const MAX_FRAME_BYTES: u64 = 1 << 20;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

#[inline(always)]
fn fnv(hash: u64, frame: u64) -> u64 {
    (hash ^ frame).wrapping_mul(0x0100_0000_01b3)
}

#[inline(always)]
fn read_user(addr: u64) -> Option<u64> {
    // SAFETY: bpf_probe_read_user checks the address and fails cleanly.
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

/// Words of the stack read at once (2 KiB): a read of the user stack costs about a hundred
/// nanoseconds whatever its size up to a few KiB (the checks of `copy_from_user_nofault`
/// cost more than the copy), and the walk reads two words a frame, frame after frame up the
/// stack. Most frames' words are then already in the window.
const WINDOW_WORDS: usize = 256;
const PAGE: u64 = 4096;

/// The part of the stack read last in this walk, per CPU: `words` words from `base`
/// (8-aligned). Emptied at the start of every walk: the stack changes between two.
#[repr(C)]
struct Window {
    base: u64,
    words: u64,
    /// Two more than are read, so that an index masked to the window and the one after it are
    /// both within the value (for the verifier).
    data: [u64; WINDOW_WORDS + 2],
}

#[map(name = "UNWIND_WINDOW")]
static WINDOW: PerCpuArray<Window> = PerCpuArray::with_max_entries(1, 0);

/// Empties this CPU's window.
#[inline(always)]
fn clear_window() {
    if let Some(w) = WINDOW.get_ptr_mut(0) {
        // SAFETY: this CPU's window.
        unsafe { (*w).words = 0 };
    }
}

/// The two words at `addr` of the user stack: from the window, or read into it from `addr`
/// up (a whole window when `windowed`, else just the two words).
#[inline(always)]
fn read_pair(addr: u64, windowed: bool) -> Option<[u64; 2]> {
    let win = WINDOW.get_ptr_mut(0)?;
    // SAFETY: this CPU's window.
    let win = unsafe { &mut *win };
    let off = addr.wrapping_sub(win.base);
    if win.words < 2 || off & 7 != 0 || off > (win.words - 2) * 8 {
        fill_window(win, addr, windowed);
        if win.words < 2 {
            return None;
        }
    }
    let i = (addr.wrapping_sub(win.base) / 8) as usize & (WINDOW_WORDS - 1);
    Some([win.data[i], win.data[i + 1]])
}

/// Reads the window from `addr` up: all of it (two words unless `windowed`), or if that fails
/// (the stack's last page) as far as the end of `addr`'s page. Empty if nothing could be read.
#[inline(always)]
fn fill_window(win: &mut Window, addr: u64, windowed: bool) {
    let dst = win.data.as_mut_ptr().cast::<core::ffi::c_void>();
    let src = addr as *const core::ffi::c_void;
    win.base = addr;
    win.words = 0;
    let words = if windowed { WINDOW_WORDS as u64 } else { 2 };
    // SAFETY: `data` holds more than WINDOW_WORDS words; the helper checks the source.
    if unsafe { bpf_probe_read_user_raw(dst, (words * 8) as u32, src) } == 0 {
        win.words = words;
        return;
    }
    let to_page_end = (PAGE - (addr & (PAGE - 1))).min(words * 8);
    if to_page_end < 16 || to_page_end == words * 8 {
        return;
    }
    // SAFETY: as above; at most the window's size.
    if unsafe { bpf_probe_read_user_raw(dst, to_page_end as u32, src) } == 0 {
        win.words = to_page_end / 8;
    }
}

#[inline(always)]
fn row_at(i: u32) -> Option<UnwindRow> {
    let chunk = UNWIND_ROWS.get(i / UNWIND_CHUNK_ROWS as u32)?;
    Some(chunk.rows[(i as usize) & (UNWIND_CHUNK_ROWS - 1)])
}

/// A binary search over `[lo, hi)` (of rows, or of a process's mappings), shared with its
/// step through `bpf_loop`. Kept in a per-CPU map, not on the BPF stack: the verifier tracks
/// the values on the stack, and would check the step again for each range they take; map
/// memory it takes as any number, and checks the step once.
#[repr(C)]
struct Search {
    pc: u64,
    lo: u32,
    hi: u32,
    /// A row could not be read.
    failed: u32,
    pad: u32,
}

#[map(name = "UNWIND_SEARCH")]
static SEARCH: PerCpuArray<Search> = PerCpuArray::with_max_entries(1, 0);

/// What a search step is given: where the search is, and the mappings searched.
#[repr(C)]
struct SearchCtx {
    search: *mut Search,
    maps: *const UnwindMaps,
}

/// One step of the row search: `bpf_loop`'s callback. Written as a callback and not as a
/// loop, the verifier checks one step once instead of every unrolled path through 22 of them
/// (which took it 650,000 instructions and over a second). Returns 1 to stop.
#[inline(never)]
extern "C" fn search_step(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `SearchCtx` that `find_row` passed to bpf_loop, its search this
    // CPU's.
    let s = unsafe { &mut *(*ctx.cast::<SearchCtx>()).search };
    if s.hi <= s.lo || s.hi - s.lo <= 1 {
        return 1;
    }
    let mid = s.lo + (s.hi - s.lo) / 2;
    let Some(row) = row_at(mid) else {
        s.failed = 1;
        return 1;
    };
    if row.pc <= s.pc {
        s.lo = mid;
    } else {
        s.hi = mid;
    }
    0
}

/// The row of the table at rows `[first, first + len)` that holds at `pc`.
#[inline(always)]
fn find_row(first: u32, len: u32, pc: u64) -> Option<UnwindRow> {
    if len == 0 {
        return None;
    }
    let search = SEARCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's search slot.
    unsafe {
        *search = Search {
            pc,
            lo: first,
            hi: first.saturating_add(len),
            failed: 0,
            pad: 0,
        };
    }
    let mut ctx = SearchCtx {
        search,
        maps: core::ptr::null(),
    };
    // SAFETY: `search_step` is a callback of bpf_loop's type; `ctx` outlives the call.
    unsafe {
        bpf_loop(
            ROW_STEPS as u32,
            search_step as *mut core::ffi::c_void,
            (&raw mut ctx).cast(),
            0,
        )
    };
    // SAFETY: as above.
    let (failed, lo) = unsafe { ((*search).failed, (*search).lo) };
    if failed != 0 {
        return None;
    }
    let row = row_at(lo)?;
    (row.pc <= pc).then_some(row)
}

/// One step of the mapping search: `bpf_loop`'s callback, like [`search_step`]. Returns 1 to
/// stop.
#[inline(never)]
extern "C" fn mapping_step(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `SearchCtx` that `find_mapping` passed to bpf_loop, its search
    // this CPU's and its `maps` checked.
    let ctx = unsafe { &*ctx.cast::<SearchCtx>() };
    // SAFETY: the search is this CPU's (see `SearchCtx`), borrowed only here.
    let s = unsafe { &mut *ctx.search };
    if s.hi <= s.lo || s.hi - s.lo <= 1 {
        return 1;
    }
    let mid = s.lo + (s.hi - s.lo) / 2;
    // SAFETY: as above.
    let maps = unsafe { &*ctx.maps };
    if maps.mappings[mid as usize & (MAX_UNWIND_MAPPINGS - 1)].start <= s.pc {
        s.lo = mid;
    } else {
        s.hi = mid;
    }
    0
}

/// The mapping of `maps` that holds `pc`: its table's first row, row count and bias.
#[inline(always)]
fn find_mapping(maps: &UnwindMaps, pc: u64) -> Option<(u32, u32, u64)> {
    // Both ends of the search come from the map (see `UnwindMaps::search_from`).
    let count = maps.count;
    let from = maps.search_from;
    if count == 0 || count as usize > MAX_UNWIND_MAPPINGS || from >= count {
        return None;
    }
    let search = SEARCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's search slot.
    unsafe {
        *search = Search {
            pc,
            lo: from,
            hi: count,
            failed: 0,
            pad: 0,
        };
    }
    let mut ctx = SearchCtx { search, maps };
    // SAFETY: `mapping_step` is a callback of bpf_loop's type; `ctx` outlives the call.
    unsafe {
        bpf_loop(
            MAPPING_STEPS as u32 + 1,
            mapping_step as *mut core::ffi::c_void,
            (&raw mut ctx).cast(),
            0,
        )
    };
    // SAFETY: as above.
    let lo = unsafe { (*search).lo };
    let m = &maps.mappings[lo as usize & (MAX_UNWIND_MAPPINGS - 1)];
    (m.start <= pc && pc < m.end).then_some((m.first_row, m.rows, m.bias))
}

/// Sets `w.row` to the row that holds at `lookup` in the process's tables, and returns 1, or
/// 0 if none does: from this CPU's cache when it holds the address under the mappings'
/// current generation, else searched for (and kept; a miss is counted). A function of its own,
/// verified apart from the rest of the step: inlined, its two outcomes (a row from the cache,
/// one searched for) would each be verified through all that follows.
#[inline(never)]
fn row_for(w: &mut Walk, maps: &UnwindMaps, lookup: u64) -> u32 {
    let generation = maps.generation;
    let slot = (lookup ^ (lookup >> 17) ^ u64::from(generation).wrapping_mul(0x9e37_79b9)) as u32
        & (UNWIND_ROW_CACHE_ENTRIES - 1);
    // Looked up whether the cache is used or not: a pointer set on one path only would leave
    // the compiler a register the verifier calls unread on the other.
    let Some(c) = ROW_CACHE.get_ptr_mut(slot) else {
        return 0;
    };
    // SAFETY: this CPU's slot; no other program runs on this CPU meanwhile.
    let c = unsafe { &mut *c };
    let used = w.cached != 0;
    if used && c.addr == lookup && c.generation == generation {
        w.row = c.row;
        return c.found;
    }
    // The one search (each call of it would be verified on its own).
    bump(counter::UNWIND_ROW_MISSES);
    let row = find_mapping(maps, lookup)
        .and_then(|(first, len, bias)| find_row(first, len, lookup.wrapping_sub(bias)));
    let found = u32::from(row.is_some());
    if let Some(r) = row {
        w.row = r;
    }
    if used {
        c.addr = lookup;
        c.generation = generation;
        c.found = found;
        c.row = w.row;
    }
    found
}

/// What [`step`] is given through `bpf_loop`: the walk so far, the process's mappings and
/// this CPU's scratch stack, looked up once per walk (the verifier keeps their types on the
/// stack).
#[repr(C)]
struct WalkCtx {
    walk: *mut Walk,
    maps: *const UnwindMaps,
    stack: *mut DwarfStack,
}

/// The walk so far, per CPU. In a map, not on the BPF stack: the verifier takes map memory as
/// any number, so it checks [`step`] once instead of once for each value a counter takes.
#[repr(C)]
struct Walk {
    /// Frames stored in the scratch stack.
    n: u32,
    fp_frames: u32,
    /// The walk ended before the frame limit.
    ended: u32,
    /// Whether the caches (of rows, and the window on the stack) are used.
    cached: u32,
    /// The row [`row_for`] found.
    row: UnwindRow,
    /// FNV-1a over the frames stored so far.
    hash: u64,
    pc: u64,
    sp: u64,
    bp: u64,
}

#[map(name = "UNWIND_WALK")]
static WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

/// One frame of the walk: `bpf_loop`'s callback (verified once, not once per frame). Returns
/// 1 to stop.
#[inline(never)]
extern "C" fn step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: `ctx` is the `WalkCtx` that `walk_and_store` passed to bpf_loop, its pointers
    // checked non-null there: this CPU's walk and scratch stack, the process's mappings.
    let (w, maps, stack) = unsafe {
        let c = &*ctx.cast::<WalkCtx>();
        (&mut *c.walk, &*c.maps, &mut *c.stack)
    };
    let stop = |w: &mut Walk| {
        w.ended = 1;
        1
    };
    // The frame this step stores: `index + 1` (frame 0 is the pc the walk starts at), which
    // is `w.n` as each step stores one frame or ends the loop. Taken from the index, which the
    // verifier knows only by its bounds, not from `w.n`, which it would track as a constant
    // and so verify the step once per frame (300,000 instructions, a second at every load).
    let i = index as usize + 1;
    if i >= MAX_DWARF_FRAMES {
        return 1;
    }
    let (pc, sp, bp) = (w.pc, w.sp, w.bp);
    // A return address is the instruction after a call: its rule is the call's.
    let lookup = if i == 1 { pc } else { pc.wrapping_sub(1) };
    let row = if row_for(w, maps, lookup) != 0 {
        Some(w.row)
    } else {
        None
    };
    let (cfa, rule) = match row {
        Some(r) if r.cfa == unwind::CFA_RSP => (sp.wrapping_add(i64::from(r.cfa_offset) as u64), r),
        Some(r) if r.cfa == unwind::CFA_RBP => (bp.wrapping_add(i64::from(r.cfa_offset) as u64), r),
        Some(r) if r.cfa == unwind::CFA_PLT => {
            let past_push = u64::from((pc & 15) >= r.cfa_offset as u64);
            (sp.wrapping_add(8 + (past_push << 3)), r)
        }
        // No table, or a rule not followed: the frame pointer, if it is one.
        _ => {
            if bp <= sp || bp - sp > MAX_FRAME_BYTES {
                return stop(w);
            }
            w.fp_frames += 1;
            (
                bp.wrapping_add(16),
                UnwindRow {
                    rbp: unwind::RBP_AT_CFA,
                    rbp_offset: -16,
                    ..UnwindRow::default()
                },
            )
        }
    };
    // The stack grows down: each caller's frame lies above its callee's.
    if cfa <= sp || cfa - sp > MAX_FRAME_BYTES {
        return stop(w);
    }
    // The saved rbp is most often just below the return address (a `push rbp` on entry):
    // both in one read.
    let (ra, saved_bp) = if rule.rbp == unwind::RBP_AT_CFA && rule.rbp_offset == -16 {
        match read_pair(cfa - 16, w.cached != 0) {
            Some([saved, ra]) => (ra, saved),
            None => return stop(w),
        }
    } else {
        let Some([_, ra]) = read_pair(cfa - 16, w.cached != 0) else {
            return stop(w);
        };
        let saved = match rule.rbp {
            // Below the return address: both words within the frames walked.
            unwind::RBP_AT_CFA if rule.rbp_offset <= -16 => read_pair(
                cfa.wrapping_add(i64::from(rule.rbp_offset) as u64),
                w.cached != 0,
            )
            .map_or(0, |p| p[0]),
            unwind::RBP_AT_CFA => {
                read_user(cfa.wrapping_add(i64::from(rule.rbp_offset) as u64)).unwrap_or(0)
            }
            unwind::RBP_SAME => bp,
            _ => 0,
        };
        (ra, saved)
    };
    if ra == 0 {
        return stop(w);
    }
    w.bp = saved_bp;
    stack.frames[i] = ra;
    w.n = i as u32 + 1;
    w.hash = fnv(w.hash, ra);
    w.pc = ra;
    w.sp = cfa;
    0
}

/// Walks the stack of the current thread of process `tgid` from `regs` (at an allocator's
/// entry) and returns the id it is stored under, -1 when it could not be stored (counted:
/// lost, never walked again another way), or `None` when the process has no tables (the
/// caller falls back to the kernel's frame-pointer walk).
#[inline(always)]
pub fn dwarf_stack_id(regs: *const pt_regs, tgid: u32) -> Option<i32> {
    // SAFETY: `regs` is the probe's register snapshot.
    let (pc, sp, bp) = unsafe { ((*regs).rip, (*regs).rsp, (*regs).rbp) };
    walk_from(pc, sp, bp, tgid)
}

/// As [`dwarf_stack_id`], from the user registers the current task entered the kernel with:
/// for events in the kernel on the process's behalf (a syscall, a page fault), whose own
/// context holds no user registers.
#[inline(always)]
pub fn dwarf_stack_id_of_current(tgid: u32) -> Option<i32> {
    // SAFETY: the UNWIND_MAPS probe only tests for presence: a process without tables is not
    // walked (and its registers not read).
    unsafe { UNWIND_MAPS.get(tgid) }?;
    // SAFETY: helpers without preconditions; the registers are read through the helper.
    let (pc, sp, bp) = unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs;
        if regs.is_null() {
            return None;
        }
        (
            bpf_probe_read_kernel(&raw const (*regs).rip).ok()?,
            bpf_probe_read_kernel(&raw const (*regs).rsp).ok()?,
            bpf_probe_read_kernel(&raw const (*regs).rbp).ok()?,
        )
    };
    walk_from(pc, sp, bp, tgid)
}

/// The user stack of an event in the kernel on the current thread's behalf: walked with the
/// unwind tables where the process has them (and tracer walks that way), else by the kernel's
/// frame-pointer walk.
#[inline(always)]
pub fn user_stack_of_current<C: StackIdContext>(ctx: &C, tgid: u32) -> i32 {
    if config_flag(config_flags::DWARF) {
        dwarf_stack_id_of_current(tgid).unwrap_or_else(|| user_stack_id(ctx))
    } else {
        user_stack_id(ctx)
    }
}

#[inline(always)]
fn walk_from(pc: u64, sp: u64, bp: u64, tgid: u32) -> Option<i32> {
    // SAFETY: the value is only read.
    let maps: *const UnwindMaps = unsafe { UNWIND_MAPS.get(tgid) }?;
    let stack_ptr = SCRATCH.get_ptr_mut(0)?;
    let timed = config_flag(config_flags::TIME_UNWIND);
    let began = if timed {
        // SAFETY: a helper without preconditions.
        unsafe { bpf_ktime_get_ns() }
    } else {
        0
    };
    let id = walk_and_store(maps, stack_ptr, pc, sp, bp);
    if timed {
        // SAFETY: as above.
        add(
            counter::UNWIND_NS,
            unsafe { bpf_ktime_get_ns() }.wrapping_sub(began),
        );
    }
    id
}

/// The walk of [`walk_from`] and the storing of its stack.
#[inline(always)]
fn walk_and_store(
    maps: *const UnwindMaps,
    stack_ptr: *mut DwarfStack,
    pc: u64,
    sp: u64,
    bp: u64,
) -> Option<i32> {
    // SAFETY: this CPU's scratch slot.
    let stack = unsafe { &mut *stack_ptr };
    // Frame 0 is where the walk starts (inside the allocator), as in the kernel's walks.
    stack.frames[0] = pc;
    clear_window();
    let walk_ptr = WALK.get_ptr_mut(0)?;
    // SAFETY: this CPU's walk.
    let walk = unsafe { &mut *walk_ptr };
    *walk = Walk {
        n: 1,
        fp_frames: 0,
        ended: 0,
        cached: u32::from(!config_flag(config_flags::NO_UNWIND_CACHES)),
        row: UnwindRow::default(),
        hash: fnv(FNV_OFFSET, pc),
        pc,
        sp,
        bp,
    };
    let mut ctx = WalkCtx {
        walk: walk_ptr,
        maps,
        stack: stack_ptr,
    };
    // SAFETY: `step` is a callback of bpf_loop's type; `ctx` outlives the call.
    unsafe {
        bpf_loop(
            (MAX_DWARF_FRAMES - 1) as u32,
            step as *mut core::ffi::c_void,
            (&raw mut ctx).cast(),
            0,
        )
    };
    let n = (walk.n as usize).min(MAX_DWARF_FRAMES);
    bump(counter::UNWIND_WALKS);
    add(counter::UNWIND_FRAMES, n as u64 - 1);
    // Each step looked up one row: the frames found, and the one that ended the walk.
    add(
        counter::UNWIND_ROW_LOOKUPS,
        n as u64 - 1 + u64::from(walk.ended),
    );
    let fp_frames = walk.fp_frames;
    let truncated = walk.ended == 0;
    if truncated {
        bump(counter::UNWIND_TRUNCATED);
    }
    if n == 1 {
        return None;
    }
    stack.len = n as u32;
    stack.fp_frames = fp_frames;
    // The hash was taken frame by frame in the walk: a loop over the frames here would be
    // verified once per possible length.
    let hash = walk.hash;
    let id = (hash as u32 & (DWARF_STACK_ID_BASE as u32 - 1)) | DWARF_STACK_ID_BASE as u32;
    // SAFETY: the value is only read.
    match unsafe { DWARF_STACKS.get(id) } {
        Some(known) if known.len == stack.len && known.frames[1] == stack.frames[1] => {}
        // A stack that cannot be kept is lost (-1, counted), never walked again by frame
        // pointer through code that keeps none: its site shows its calling frame only.
        Some(_) => {
            bump(counter::UNWIND_COLLIDED);
            return Some(-1);
        }
        None => {
            // Frames past `len` are whatever an earlier walk left; readers stop at `len`.
            if DWARF_STACKS.insert(id, stack, 0).is_err() {
                bump(counter::UNWIND_MAP_FULL);
                return Some(-1);
            }
        }
    }
    Some(id as i32)
}
