//! uprobes on the allocator family: malloc, calloc, realloc, ..., free, operator new/delete.
//!
//! One entry program and one return program serve every allocating function; the attach cookie
//! says which function fired. Per-thread state pairs entry and return and tracks nesting, so
//! that when one allocator function calls another (operator new calls malloc, realloc(NULL, n)
//! calls malloc) only the outermost call is reported, attributed to the code that called it.

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_probe_read_user,
        generated::bpf_get_attach_cookie,
    },
    macros::{map, uprobe, uretprobe},
    maps::{Array, HashMap, LruHashMap},
    programs::{ProbeContext, RetProbeContext},
};
use tracer_common::{
    AllocEvent, AllocFn, AllocState, MAX_ALLOC_THREADS, SAMPLE_TABLE_LEN, SAMPLE_TABLE_ONE,
    config_flags, counter, kind,
};

use crate::{
    maps::{
        bump, config_flag, header, sample_bytes, traced_alloc_thread, user_stack_id, wakeup_flags,
    },
    ring::reserve,
};

/// The outermost allocator call in flight, by thread id (none when `depth` is 0). Each
/// thread's entry is written in place, call after call: an insert and a delete per call cost
/// an LRU map about 150 ns. LRU, so the entries of threads gone are reused.
#[map(name = "ALLOC_STATE")]
pub static ALLOC_STATE: LruHashMap<u32, AllocState> =
    LruHashMap::with_max_entries(MAX_ALLOC_THREADS, 0);

/// The block an `operator delete` on this thread is releasing: its inner `free` of the same
/// block is part of it, not a second call.
#[map(name = "DELETE_PENDING")]
static DELETE_PENDING: LruHashMap<u32, u64> = LruHashMap::with_max_entries(MAX_ALLOC_THREADS, 0);

/// `--sample`: bytes each thread has left to allocate before its next sampled allocation.
#[map(name = "SAMPLE_LEFT")]
static SAMPLE_LEFT: LruHashMap<u32, u64> = LruHashMap::with_max_entries(MAX_ALLOC_THREADS, 0);

/// `--sample`: quantiles of the exponential distribution with mean [`SAMPLE_TABLE_ONE`],
/// written by userspace: the next interval is one, picked at random, times the mean.
#[map(name = "SAMPLE_TABLE")]
static SAMPLE_TABLE: Array<u32> = Array::with_max_entries(SAMPLE_TABLE_LEN, 0);

/// `--sample`: the sampled blocks still live. Only their release is reported; the size is set
/// by userspace at load (one entry when not sampling).
#[map(name = "SAMPLED")]
static SAMPLED: HashMap<u64, u8> = HashMap::with_max_entries(1, 0);

/// `--sample`: an unsampled call that may call another allocator function (operator new calls
/// malloc, realloc(NULL, n) jumps to it), by thread: (stack pointer, return address). The next
/// allocator call on the thread consumes it; if it runs inside that call, it is part of it.
#[map(name = "UNSAMPLED_OUTER")]
static UNSAMPLED_OUTER: LruHashMap<u32, [u64; 2]> =
    LruHashMap::with_max_entries(MAX_ALLOC_THREADS, 0);

/// How far below an unsampled call's stack pointer an allocator call counts as inside it.
const NESTED_SPAN: u64 = 1024;

/// A sampling interval: the mean times a random quantile of the exponential distribution.
#[inline(always)]
fn draw_interval(mean: u32) -> u64 {
    // SAFETY: helper without preconditions.
    let index = unsafe { bpf_get_prandom_u32() } % SAMPLE_TABLE_LEN;
    let q = SAMPLE_TABLE.get(index).copied().unwrap_or(SAMPLE_TABLE_ONE);
    (u64::from(mean) * u64::from(q)) >> 16
}

/// Whether an allocation of `bytes` on thread `tid` is sampled: a Poisson process over the
/// thread's allocated bytes with mean interval `mean` (what tcmalloc and jemalloc do), so a
/// block of `bytes` is sampled with probability 1 - exp(-bytes / mean).
#[inline(always)]
fn take_sample(tid: u32, bytes: u64, mean: u32) -> bool {
    let slot = SAMPLE_LEFT.get_ptr_mut(tid);
    let left = match slot {
        // SAFETY: pointer from a successful lookup, read at once.
        Some(left) => unsafe { *left },
        None => draw_interval(mean),
    };
    let (sampled, left) = if bytes < left {
        (false, left - bytes)
    } else {
        (true, draw_interval(mean))
    };
    match slot {
        // Written in place: an update of an LRU map's entry allocates a new one.
        // SAFETY: as above; only this thread touches its entry.
        Some(entry) => unsafe { *entry = left },
        None => {
            let _ = SAMPLE_LEFT.insert(tid, left, 0);
        }
    }
    sampled
}

/// Entry time of the outermost allocator call in flight on thread `tid`, or 0.
#[inline(always)]
pub fn alloc_in_flight(tid: u32) -> u64 {
    // In --mode kernel no allocator call is ever in flight: no lookup for it.
    if !config_flag(config_flags::ALLOCATOR_PROBES) {
        return 0;
    }
    match ALLOC_STATE.get_ptr(tid) {
        // SAFETY: pointer from a successful lookup, read at once.
        Some(state) => unsafe {
            if (*state).depth > 0 {
                (*state).enter_ns
            } else {
                0
            }
        },
        None => 0,
    }
}

#[uprobe]
pub fn alloc_enter(ctx: ProbeContext) -> u32 {
    on_alloc_enter(&ctx, false);
    0
}

#[uretprobe]
pub fn alloc_exit(ctx: RetProbeContext) -> u32 {
    if let Some((tgid, tid)) = traced_alloc_thread() {
        on_alloc_exit(tgid, tid, ctx.ret());
    }
    0
}

/// Entry and return of every allocating function in one program, attached as a uprobe session
/// (Linux 6.13+, loaded by tracer's own loader: see `tracer/src/probes/multi.rs`). At entry it
/// returns [`KEEP_RETURN`] only for an outermost call, so nested calls (operator new's malloc,
/// realloc's tail call) cost one uprobe hit instead of two.
///
/// The kernel runs the same program at the return; it is recognised as the return of the call
/// this thread's state describes by its registers: the stack pointer is one slot above the one
/// at entry (the return address was popped) and the instruction pointer is that return address.
// Written out, not with `#[uprobe]`: that macro's wrapper returns 0 whatever the function
// returns, and a session program's return value is what matters.
#[unsafe(no_mangle)]
#[unsafe(link_section = "uprobe/alloc_session")]
pub fn alloc_session(ctx: *mut core::ffi::c_void) -> u32 {
    on_session(&ProbeContext::new(ctx))
}

#[inline(always)]
fn on_session(ctx: &ProbeContext) -> u32 {
    let Some((tgid, tid)) = traced_alloc_thread() else {
        return SKIP_RETURN;
    };
    // SAFETY: `regs` is the probe's register snapshot.
    let (sp, ip, ret) = unsafe { ((*ctx.regs).rsp, (*ctx.regs).rip, (*ctx.regs).rax) };
    if let Some(state) = ALLOC_STATE.get_ptr(tid) {
        // SAFETY: pointer from a successful lookup, read at once.
        let (depth, entry_sp, caller) = unsafe { ((*state).depth, (*state).sp, (*state).caller) };
        if depth > 0 && sp == entry_sp.wrapping_add(8) && ip == caller {
            on_alloc_exit(tgid, tid, ret);
            return KEEP_RETURN;
        }
    }
    if on_alloc_enter(ctx, true) {
        KEEP_RETURN
    } else {
        SKIP_RETURN
    }
}

/// What a session program's entry returns to have its return run too, or skipped.
const KEEP_RETURN: u32 = 0;
const SKIP_RETURN: u32 = 1;

#[uprobe]
pub fn free_enter(ctx: ProbeContext) -> u32 {
    on_free_enter(&ctx);
    0
}

#[inline(always)]
fn func_of(ctx: &impl EbpfContext) -> Option<AllocFn> {
    // SAFETY: the context pointer is the program's own.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    AllocFn::try_from(cookie as u32).ok()
}

#[inline(always)]
fn stack_pointer(ctx: &ProbeContext) -> u64 {
    // SAFETY: `regs` is the probe's register snapshot.
    unsafe { (*ctx.regs).rsp }
}

/// Whether a call entered at `sp`, returning to `ret`, runs inside the in-flight call recorded
/// in `state`. The stack grows down, so a nested call has a lower stack pointer. A tail call
/// (glibc's realloc(NULL, n) jumps to malloc) enters at the same stack pointer, but its return
/// address is then the outer call's uretprobe trampoline, not the outer caller. A state whose
/// call returned unseen (an exception thrown through operator new) is recognised by a new entry
/// above its `sp`, or at it from the same caller.
#[inline(always)]
fn nested_in(state: &AllocState, sp: u64, ret: u64) -> bool {
    state.depth > 0 && (sp < state.sp || (sp == state.sp && ret != state.caller))
}

/// The return address on top of the stack at entry: the direct caller.
#[inline(always)]
fn return_address(sp: u64) -> u64 {
    // SAFETY: reading user memory through the helper, which handles faults.
    unsafe { bpf_probe_read_user(sp as *const u64) }.unwrap_or(0)
}

/// Handles an allocating function's entry. Returns whether this is an outermost call whose
/// return must be seen. In a `session`, nested calls are not counted in the depth: their return
/// is skipped.
#[inline(always)]
fn on_alloc_enter(ctx: &ProbeContext, session: bool) -> bool {
    let Some((tgid, tid)) = traced_alloc_thread() else {
        return false;
    };
    let Some(func) = func_of(ctx) else {
        return false;
    };
    let sp = stack_pointer(ctx);
    let caller = return_address(sp);
    let slot = ALLOC_STATE.get_ptr_mut(tid);
    if let Some(state) = slot {
        // SAFETY: pointer from a successful lookup; only this thread touches its entry.
        let state = unsafe { &mut *state };
        if nested_in(state, sp, caller) {
            if !session {
                state.depth += 1;
            }
            bump(counter::ALLOC_NESTED);
            return false;
        }
    }
    let mean = sample_bytes();
    if mean != 0 {
        // SAFETY: value copied out at once.
        if let Some(outer) = unsafe { UNSAMPLED_OUTER.get(tid) }.copied() {
            let _ = UNSAMPLED_OUTER.remove(tid);
            let inside = (sp < outer[0] && outer[0] - sp <= NESTED_SPAN)
                || (sp == outer[0] && caller == outer[1]);
            if inside {
                // operator new[] jumps to operator new, which calls malloc: still inside.
                if func == AllocFn::OperatorNew {
                    let _ = UNSAMPLED_OUTER.insert(tid, [sp, caller], 0);
                }
                bump(counter::ALLOC_NESTED);
                return false;
            }
        }
    }
    // Constant register offsets only: the verifier rejects a computed context pointer.
    let a0: u64 = ctx.arg(0).unwrap_or(0);
    let a1: u64 = ctx.arg(1).unwrap_or(0);
    let a2: u64 = ctx.arg(2).unwrap_or(0);
    // (element count, element size, block passed in, where the result goes). The product is
    // taken in userspace: the BPF target has no 128-bit multiply for an overflow check.
    let (nmemb, size, old_ptr, out_ptr) = match func {
        AllocFn::Calloc => (a0, a1, 0, 0),
        AllocFn::Realloc => (1, a1, a0, 0),
        AllocFn::Reallocarray => (a1, a2, a0, 0),
        AllocFn::PosixMemalign => (1, a2, 0, a0),
        AllocFn::AlignedAlloc | AllocFn::Memalign => (1, a1, 0, 0),
        _ => (1, a0, 0, 0),
    };
    if mean != 0 {
        // The BPF target has no 128-bit multiply for an overflow check: factors below 2^32
        // cannot overflow, and a product that might is as good as certain to be sampled.
        let bytes = if nmemb > 1 && (nmemb | size) >> 32 != 0 {
            u64::MAX
        } else {
            nmemb.wrapping_mul(size)
        };
        if !take_sample(tid, bytes, mean) {
            bump(counter::ALLOC_UNSAMPLED);
            let resizes = matches!(func, AllocFn::Realloc | AllocFn::Reallocarray);
            if func == AllocFn::OperatorNew || (resizes && old_ptr == 0) {
                let _ = UNSAMPLED_OUTER.insert(tid, [sp, caller], 0);
            }
            if resizes && old_ptr != 0 && SAMPLED.remove(old_ptr).is_ok() {
                // The block moves or goes: its sampled life ends here.
                let header = header(kind::ALLOC, tgid, tid);
                emit(AllocEvent {
                    enter_ns: header.ts_ns,
                    header,
                    func: AllocFn::Free as u32,
                    stack_id: -1,
                    nmemb: 0,
                    size: 0,
                    ptr: old_ptr,
                    old_ptr: 0,
                    caller,
                });
            }
            return false;
        }
    }
    // The unwind tables first, where the process has them; else the kernel's frame-pointer
    // walk.
    let stack_id = i64::from(if config_flag(config_flags::DWARF) {
        super::unwind::dwarf_stack_id(ctx.regs, tgid).unwrap_or_else(|| user_stack_id(ctx))
    } else {
        user_stack_id(ctx)
    });
    let state = AllocState {
        func: func as u32,
        depth: 1,
        nmemb,
        size,
        old_ptr,
        out_ptr,
        sp,
        caller,
        stack_id,
        // SAFETY: helper without preconditions.
        enter_ns: unsafe { bpf_ktime_get_ns() },
    };
    match slot {
        // SAFETY: as above; the entry may have been evicted and reused since the lookup only
        // for another thread of a full map, which is then counted as lost either way.
        Some(entry) => unsafe { *entry = state },
        None => {
            if ALLOC_STATE.insert(tid, state, 0).is_err() {
                bump(counter::ALLOC_STATE_STORE_FAILED);
                return false;
            }
        }
    }
    true
}

/// Handles the return, with value `ret`, of the outermost call in flight on thread `tid`.
#[inline(always)]
fn on_alloc_exit(tgid: u32, tid: u32, ret: u64) {
    let in_flight = ALLOC_STATE
        .get_ptr_mut(tid)
        // SAFETY: pointer from a successful lookup; only this thread touches its entry.
        .map(|state| unsafe { &mut *state })
        .filter(|state| state.depth > 0);
    let Some(state) = in_flight else {
        // Sampling: the return of an unsampled call (probed when sessions are not available).
        if sample_bytes() == 0 {
            bump(counter::ALLOC_UNPAIRED_EXIT);
        }
        return;
    };
    if state.depth > 1 {
        state.depth -= 1;
        return;
    }
    // The call is over; the entry stays for the thread's next one.
    state.depth = 0;
    let state = *state;
    let ptr = if state.func == AllocFn::PosixMemalign as u32 {
        if ret == 0 {
            // SAFETY: reading user memory through the helper, which handles faults.
            unsafe { bpf_probe_read_user(state.out_ptr as *const u64) }.unwrap_or(0)
        } else {
            0
        }
    } else {
        ret
    };
    if sample_bytes() != 0 {
        if state.old_ptr != 0 {
            let _ = SAMPLED.remove(state.old_ptr);
        }
        if ptr != 0 && SAMPLED.insert(ptr, 1, 0).is_err() {
            bump(counter::SAMPLED_FULL);
        }
    }
    emit(AllocEvent {
        header: header(kind::ALLOC, tgid, tid),
        func: state.func,
        stack_id: state.stack_id as i32,
        nmemb: state.nmemb,
        size: state.size,
        ptr,
        old_ptr: state.old_ptr,
        caller: state.caller,
        enter_ns: state.enter_ns,
    });
}

#[inline(always)]
fn on_free_enter(ctx: &ProbeContext) {
    let Some((tgid, tid)) = traced_alloc_thread() else {
        return;
    };
    let Some(func) = func_of(ctx) else {
        return;
    };
    let ptr = ctx.arg::<u64>(0).unwrap_or(0);
    let sampling = sample_bytes() != 0;
    // Sampling: only the release of a sampled block is reported (operator delete's inner free
    // finds it already gone).
    if sampling && (ptr == 0 || SAMPLED.remove(ptr).is_err()) {
        return;
    }
    if let Some(state) = ALLOC_STATE.get_ptr(tid) {
        // SAFETY: pointer from a successful lookup.
        let state = unsafe { &*state };
        // The return address only when a call is in flight (a user read costs about 100 ns,
        // and a free's caller is not reported).
        if state.depth > 0 {
            let sp = stack_pointer(ctx);
            if nested_in(state, sp, return_address(sp)) {
                // realloc(p, 0) frees through free(): part of the realloc.
                bump(counter::ALLOC_NESTED);
                return;
            }
        }
    }
    // SAFETY: value copied out at once.
    let pending = unsafe { DELETE_PENDING.get(tid) }.copied();
    if pending == Some(ptr) {
        // Inside an operator delete of this block: its free(), or the variant it forwards to
        // (libstdc++'s sized delete calls the unsized one). The free ends the delete.
        if func == AllocFn::Free {
            let _ = DELETE_PENDING.remove(tid);
        }
        bump(counter::ALLOC_NESTED);
        return;
    }
    if !sampling && func == AllocFn::OperatorDelete && DELETE_PENDING.insert(tid, ptr, 0).is_err() {
        bump(counter::ALLOC_STATE_STORE_FAILED);
    }
    let header = header(kind::ALLOC, tgid, tid);
    emit(AllocEvent {
        enter_ns: header.ts_ns,
        header,
        func: func as u32,
        stack_id: -1,
        nmemb: 0,
        size: 0,
        ptr,
        old_ptr: 0,
        caller: 0,
    });
}

#[inline(always)]
fn emit(event: AllocEvent) {
    if let Some(mut entry) = reserve::<AllocEvent>() {
        entry.write(event);
        entry.submit(wakeup_flags());
    }
}
