//! The kernel's allocators on the traced process's behalf: `kmem:mm_page_alloc`/`mm_page_free`
//! (buddy) and `kmem:kmem_cache_alloc`/`kmalloc`/`kmem_cache_free`/`kfree` (slab).
//!
//! Allocations are taken in the traced process's context only. Frees are matched in any
//! context against the blocks the process was given (pages and objects are often freed later
//! by RCU callbacks or other tasks), through maps of what is live.

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_xadd},
};

use aya_ebpf::{
    EbpfContext,
    helpers::generated::bpf_probe_read_kernel_str,
    macros::{map, tracepoint},
    maps::{Array, HashMap, StackTrace},
    programs::{TracePointContext, tracing::StackIdContext},
};
use tracer_common::{
    CACHE_NAME_BYTES, EventHeader, InFlight, LiveObject, MAX_LIVE_KERNEL_OBJECTS, MAX_PAGE_BITS,
    MAX_SLAB_COUNTS, MAX_STACKS, PageEvent, SLAB_COUNTED, SLAB_KMALLOC, SlabCount, SlabCountKey,
    SlabEvent, config_flags, counter, kind,
};

use crate::{
    maps::{
        atomic_add, bump, config_flag, fibonacci_slot, header, kmem_offsets, page_bits, stack_id,
        traced_thread, wakeup_flags,
    },
    probes::{alloc::alloc_in_flight, syscalls::syscall_in_flight},
    ring::{reserve, send_page},
    slab_slots,
};

/// Page blocks the traced process was given, by pfn, with their order.
#[map(name = "LIVE_PAGES")]
static LIVE_PAGES: HashMap<u64, u32> = HashMap::with_max_entries(MAX_LIVE_KERNEL_OBJECTS, 0);

/// Slab objects the traced process was given, by address, where their window of the table of
/// slots (`crate::slab_slots`) was full: whether they came from kmalloc, and for a counted one, whose
/// count its free goes to.
#[map(name = "LIVE_SLAB")]
static LIVE_SLAB: HashMap<u64, LiveObject> = HashMap::with_max_entries(MAX_LIVE_KERNEL_OBJECTS, 0);

/// Slab objects counted instead of sent (see `tracer_common::SLAB_COUNTS_MAP`).
#[map(name = "SLAB_COUNTS")]
static SLAB_COUNTS: HashMap<SlabCountKey, SlabCount> =
    HashMap::with_max_entries(MAX_SLAB_COUNTS, 0);

/// `bpf_map_update_elem` flag: only create, never replace.
const BPF_NOEXIST: u64 = 1;

/// The page blocks the traced processes were given, a bit per page frame (when userspace sized
/// it: `Config::page_bits`). A page's name (its frame number, or its `struct page` address
/// over the struct's size) masked to the bitmap's bits: `struct page`s lie in one array, so
/// names of frames below 2^page_bits never share a bit. A bit is set and cleared by adding
/// and subtracting it (the instruction set's one atomic), which is safe because only the
/// allocation of its page sets it and only that page's free clears it, and the allocator never
/// runs the two at once for one page.
#[map(name = "LIVE_PAGE_BITS")]
static LIVE_PAGE_BITS: Array<u64> = Array::with_max_entries(1, 0);

/// The word and bit of page `pfn` in LIVE_PAGE_BITS, if the bitmap is in use.
#[inline(always)]
fn page_bit(pfn: u64) -> Option<(*mut u64, u64)> {
    let bits = page_bits();
    if bits == 0 || bits > MAX_PAGE_BITS {
        return None;
    }
    let index = pfn & ((1u64 << bits) - 1);
    let word = LIVE_PAGE_BITS.get_ptr_mut((index >> 6) as u32)?;
    Some((word, 1u64 << (index & 63)))
}

/// Slots of each counting filter in front of LIVE_PAGES and LIVE_SLAB.
const FILTER_BITS: u32 = 14;

/// How many keys of LIVE_PAGES (LIVE_SLAB) fall in each slot, counted up before a key goes in
/// and down after it comes out, so a zero proves a key absent. Frees come from the whole
/// machine and nearly all are of blocks the traced process never had: a lookup in a small
/// array, which stays in the cache, spares them a lookup in a large hash map, which does not.
#[map(name = "LIVE_PAGES_FILTER")]
static LIVE_PAGES_FILTER: Array<u32> = Array::with_max_entries(1 << FILTER_BITS, 0);

#[map(name = "LIVE_SLAB_FILTER")]
static LIVE_SLAB_FILTER: Array<u32> = Array::with_max_entries(1 << FILTER_BITS, 0);

#[inline(always)]
fn filter_slot(key: u64) -> u32 {
    fibonacci_slot(key, FILTER_BITS)
}

/// Adds `delta` (wrapping: `u32::MAX` subtracts one) to a filter slot. The BPF target has no
/// atomic types; the add compiles to the instruction the kernel's atomics use.
#[inline(always)]
fn count(slot: *mut u32, delta: u32) {
    // SAFETY: `slot` is a map value's address, valid for the program's run.
    unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(slot, delta) };
}

/// Remembers that the traced process has `key` (with `value`).
#[inline(always)]
fn remember<V>(live: &HashMap<u64, V>, filter: &Array<u32>, key: u64, value: V) {
    remember_with(filter, key, || live.insert(key, &value, 0).is_ok());
}

/// Counts `key` into its filter slot and stores it with `put`, which says whether it found
/// room. The slot is counted up first, so that a free on another CPU never misses the key.
#[inline(always)]
fn remember_with(filter: &Array<u32>, key: u64, put: impl FnOnce() -> bool) {
    let Some(slot) = filter.get_ptr_mut(filter_slot(key)) else {
        return;
    };
    count(slot, 1);
    if !put() {
        count(slot, u32::MAX);
        bump(counter::KERNEL_LIVE_FULL);
    }
}

/// The filter slot of `key`, if it says the key may be there. A stale read errs towards a
/// lookup, never against one, since a slot is counted up before its key goes in.
#[inline(always)]
fn maybe_there(filter: &Array<u32>, key: u64) -> Option<*mut u32> {
    let slot = filter.get_ptr_mut(filter_slot(key))?;
    // SAFETY: as in `count`.
    (unsafe { core::ptr::read_volatile(slot) } != 0).then_some(slot)
}

/// Takes `key` out of what the traced process has, if it is there.
#[inline(always)]
fn take<V: Copy>(live: &HashMap<u64, V>, filter: &Array<u32>, key: u64) -> Option<V> {
    let slot = maybe_there(filter, key)?;
    take_from_map(live, slot, key)
}

/// `take` past the filter: the map's entry of `key`, removed, and its filter slot counted down.
#[inline(always)]
fn take_from_map<V: Copy>(live: &HashMap<u64, V>, slot: *mut u32, key: u64) -> Option<V> {
    // SAFETY: value copied out at once.
    let value = (unsafe { live.get(key) }).copied()?;
    if live.remove(key).is_ok() {
        count(slot, u32::MAX);
    }
    Some(value)
}

/// Remembers that the traced process has slab object `ptr`: in the table of slots
/// (`crate::slab_slots`), or where its window is full, in LIVE_SLAB.
#[inline(always)]
fn remember_object(ptr: u64, object: LiveObject) {
    remember_with(&LIVE_SLAB_FILTER, ptr, || {
        slab_slots::insert(ptr, object) || LIVE_SLAB.insert(ptr, object, 0).is_ok()
    });
}

/// Takes slab object `ptr` out of what the traced process has, if it is there.
#[inline(always)]
fn take_object(ptr: u64) -> Option<LiveObject> {
    let slot = maybe_there(&LIVE_SLAB_FILTER, ptr)?;
    match slab_slots::take(ptr) {
        Some(object) => {
            count(slot, u32::MAX);
            Some(object)
        }
        None => take_from_map(&LIVE_SLAB, slot, ptr),
    }
}

/// Kernel stacks of page and slab allocations (`--kernel-stacks`).
#[map(name = "KSTACKS")]
static KSTACKS: StackTrace = StackTrace::with_max_entries(MAX_STACKS, 0);

/// What the thread is doing in user terms: the syscall and allocator call in flight.
#[inline(always)]
pub fn in_flight(tid: u32) -> InFlight {
    InFlight {
        syscall_enter_ns: syscall_in_flight(tid),
        alloc_enter_ns: alloc_in_flight(tid),
    }
}

#[inline(always)]
fn kernel_stack<C: StackIdContext>(ctx: &C) -> i32 {
    if !config_flag(config_flags::KERNEL_STACKS) {
        return -1;
    }
    stack_id(ctx.get_stackid(&KSTACKS, 0))
}

#[inline(always)]
fn read<T>(ctx: &TracePointContext, offset: u16) -> Option<T> {
    // SAFETY: offsets come from the tracepoint's own format description.
    match unsafe { ctx.read_at::<T>(usize::from(offset)) } {
        Ok(v) => Some(v),
        Err(_) => {
            bump(counter::READ_FAILED);
            None
        }
    }
}

#[tracepoint]
pub fn mm_page_alloc(ctx: TracePointContext) -> u32 {
    let system = super::system::mode();
    if super::system::is_empty(system) {
        return 0;
    }
    if system != 0 {
        let o = kmem_offsets();
        if let (Some(pfn), Some(order)) = (
            read::<u64>(&ctx, o.page_alloc_pfn),
            read::<u32>(&ctx, o.page_alloc_order),
        ) && pfn != u64::MAX
        {
            super::system::page_alloc(pfn, order);
        }
        return 0;
    }
    let Some((tgid, tid)) = traced_thread() else {
        return 0;
    };
    // Read once the process is known traced: the tracepoint fires for the whole machine.
    let o = kmem_offsets();
    let (Some(pfn), Some(order), Some(gfp_flags), Some(migratetype)) = (
        read::<u64>(&ctx, o.page_alloc_pfn),
        read::<u32>(&ctx, o.page_alloc_order),
        read::<u64>(&ctx, o.page_alloc_gfp),
        read::<i32>(&ctx, o.page_alloc_migratetype),
    ) else {
        return 0;
    };
    if pfn == u64::MAX {
        return 0; // a failed allocation
    }
    page_allocated(&ctx, tgid, tid, pfn, order, gfp_flags, migratetype);
    0
}

/// A page block given to the traced thread `tid`: remembered, and sent.
#[inline(always)]
pub fn page_allocated<C: StackIdContext>(
    ctx: &C,
    tgid: u32,
    tid: u32,
    pfn: u64,
    order: u32,
    gfp_flags: u64,
    migratetype: i32,
) {
    match page_bit(pfn) {
        Some((word, bit)) => {
            // SAFETY: a map value's address; a set bit is a block handed out again without a
            // free seen, which stays set.
            if unsafe { core::ptr::read_volatile(word) } & bit == 0 {
                atomic_add(word, bit);
            }
        }
        None => remember(&LIVE_PAGES, &LIVE_PAGES_FILTER, pfn, order),
    }
    let page = PageEvent {
        header: EventHeader::default(),
        in_flight: in_flight(tid),
        pfn,
        gfp_flags,
        order,
        migratetype,
        kstack_id: kernel_stack(ctx),
        reserved: 0,
    };
    send_page(tgid, tid, page, || header(kind::PAGE_ALLOC, tgid, tid));
}

#[tracepoint]
pub fn mm_page_free(ctx: TracePointContext) -> u32 {
    let o = kmem_offsets();
    if let (Some(pfn), Some(order)) = (
        read::<u64>(&ctx, o.page_free_pfn),
        read::<u32>(&ctx, o.page_free_order),
    ) {
        page_freed(pfn, order);
    }
    0
}

#[tracepoint]
pub fn mm_page_free_batched(ctx: TracePointContext) -> u32 {
    let o = kmem_offsets();
    if let Some(pfn) = read::<u64>(&ctx, o.page_free_batched_pfn) {
        page_freed(pfn, 0);
    }
    0
}

/// A page block of `order` freed, by anyone: sent if the traced process had it (with the
/// order it was allocated with, where the hash map keeps it).
#[inline(always)]
pub fn page_freed(pfn: u64, order: u32) {
    let system = super::system::mode();
    if super::system::is_empty(system) {
        return;
    }
    if system != 0 {
        super::system::page_free(pfn, order);
        return;
    }
    let order = match page_bit(pfn) {
        Some((word, bit)) => {
            // SAFETY: a map value's address.
            if unsafe { core::ptr::read_volatile(word) } & bit == 0 {
                return;
            }
            atomic_add(word, bit.wrapping_neg());
            order
        }
        None => {
            let Some(order) = take(&LIVE_PAGES, &LIVE_PAGES_FILTER, pfn) else {
                return;
            };
            order
        }
    };
    let (tgid, tid) = current();
    let Some(mut entry) = reserve::<PageEvent>() else {
        return;
    };
    entry.write(PageEvent {
        header: header(kind::PAGE_FREE, tgid, tid),
        in_flight: InFlight::default(),
        pfn,
        gfp_flags: 0,
        order,
        migratetype: 0,
        kstack_id: -1,
        reserved: 0,
    });
    entry.submit(wakeup_flags());
}

/// The current task's (tgid, tid), whichever process it is.
#[inline(always)]
fn current() -> (u32, u32) {
    let id = aya_ebpf::helpers::bpf_get_current_pid_tgid();
    ((id >> 32) as u32, id as u32)
}

#[tracepoint]
pub fn kmem_cache_alloc(ctx: TracePointContext) -> u32 {
    cache_alloc(&ctx);
    0
}

/// Before Linux 6.1, allocations on a given NUMA node had tracepoints of their own, laid out as
/// the plain ones (userspace attaches them only when they are).
#[tracepoint]
pub fn kmem_cache_alloc_node(ctx: TracePointContext) -> u32 {
    cache_alloc(&ctx);
    0
}

#[tracepoint]
pub fn kmalloc(ctx: TracePointContext) -> u32 {
    kmalloc_alloc(&ctx);
    0
}

#[tracepoint]
pub fn kmalloc_node(ctx: TracePointContext) -> u32 {
    kmalloc_alloc(&ctx);
    0
}

#[inline(always)]
fn cache_alloc(ctx: &TracePointContext) {
    let o = kmem_offsets();
    // Kernels before 6.1 do not name the cache.
    let name = config_flag(config_flags::CACHE_NAMES).then_some(o.cache_alloc_name);
    slab_alloc(
        ctx,
        o.cache_alloc_ptr,
        o.cache_alloc_call_site,
        o.cache_alloc_bytes_req,
        o.cache_alloc_bytes_alloc,
        o.cache_alloc_gfp,
        SlabSource::Cache(name),
    );
}

#[inline(always)]
fn kmalloc_alloc(ctx: &TracePointContext) {
    let o = kmem_offsets();
    slab_alloc(
        ctx,
        o.kmalloc_ptr,
        o.kmalloc_call_site,
        o.kmalloc_bytes_req,
        o.kmalloc_bytes_alloc,
        o.kmalloc_gfp,
        SlabSource::Kmalloc,
    );
}

/// Where a slab object came from: kmalloc (a cache named by size), or a cache, with the offset
/// of its name's `__data_loc` field where the kernel has one.
#[derive(Clone, Copy)]
enum SlabSource {
    Kmalloc,
    Cache(Option<u16>),
}

#[tracepoint]
pub fn kmem_cache_free(ctx: TracePointContext) -> u32 {
    let o = kmem_offsets();
    if let Some(ptr) = read::<u64>(&ctx, o.cache_free_ptr) {
        slab_freed(ptr);
    }
    0
}

#[tracepoint]
pub fn kfree(ctx: TracePointContext) -> u32 {
    let o = kmem_offsets();
    if let Some(ptr) = read::<u64>(&ctx, o.kfree_ptr) {
        slab_freed(ptr);
    }
    0
}

#[inline(always)]
fn slab_alloc(
    ctx: &TracePointContext,
    ptr_off: u16,
    call_site_off: u16,
    req_off: u16,
    alloc_off: u16,
    gfp_off: u16,
    source: SlabSource,
) {
    let system = super::system::mode();
    if super::system::is_empty(system) {
        return;
    }
    if system != 0 {
        if read::<u64>(ctx, ptr_off).is_some_and(|p| p != 0) {
            super::system::slab_alloc(read::<u64>(ctx, alloc_off).unwrap_or(0));
        }
        return;
    }
    let Some((tgid, tid)) = traced_thread() else {
        return;
    };
    let (Some(ptr), Some(call_site), Some(bytes_req), Some(bytes_alloc), Some(gfp_flags)) = (
        read::<u64>(ctx, ptr_off),
        read::<u64>(ctx, call_site_off),
        read::<u64>(ctx, req_off),
        read::<u64>(ctx, alloc_off),
        read::<u64>(ctx, gfp_off),
    ) else {
        return;
    };
    let in_flight = in_flight(tid);
    let (flags, name) = match source {
        SlabSource::Kmalloc => (SLAB_KMALLOC, None),
        // A __data_loc field: the string's offset in the record (low 16 bits).
        SlabSource::Cache(name_off) => (
            0,
            name_off
                .and_then(|off| read::<u32>(ctx, off))
                .map(|loc| ctx.as_ptr() as u64 + u64::from(loc & 0xffff)),
        ),
    };
    let object = SlabObject {
        ptr,
        call_site,
        bytes_req,
        bytes_alloc,
        gfp_flags,
        flags,
    };
    slab_allocated(ctx, tgid, tid, &object, 0, name, in_flight);
}

/// A slab object as the allocation tracepoints describe it.
pub struct SlabObject {
    pub ptr: u64,
    pub call_site: u64,
    pub bytes_req: u64,
    pub bytes_alloc: u64,
    pub gfp_flags: u64,
    /// [`SLAB_KMALLOC`] or 0.
    pub flags: u32,
}

/// A slab object given to the traced thread `tid`: remembered, and counted, or sent with its
/// cache's name copied from the kernel address `name` when there is one. `cache` is the
/// cache's `struct kmem_cache` address when the tracepoint gives it (raw tracepoints), else 0.
#[inline(always)]
pub fn slab_allocated<C: StackIdContext>(
    ctx: &C,
    tgid: u32,
    tid: u32,
    object: &SlabObject,
    cache: u64,
    name: Option<u64>,
    in_flight: InFlight,
) {
    if object.ptr == 0 {
        return;
    }
    // A kmalloc cache is its size class; any other needs its address (a perf tracepoint's
    // record lacks it).
    let cache = if object.flags & SLAB_KMALLOC != 0 {
        object.bytes_alloc
    } else {
        cache
    };
    if cache != 0 && counting(&in_flight) && counted(tgid, object, cache, name) {
        return;
    }
    remember_object(
        object.ptr,
        LiveObject {
            flags: object.flags,
            ..LiveObject::default()
        },
    );
    let kstack_id = kernel_stack(ctx);
    let Some(mut entry) = reserve::<SlabEvent>() else {
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at a reserved record; every field is written before submit.
    unsafe {
        (*event).header = header(kind::SLAB_ALLOC, tgid, tid);
        (*event).in_flight = in_flight;
        (*event).ptr = object.ptr;
        (*event).call_site = object.call_site;
        (*event).bytes_req = object.bytes_req;
        (*event).bytes_alloc = object.bytes_alloc;
        (*event).gfp_flags = object.gfp_flags;
        (*event).kstack_id = kstack_id;
        (*event).flags = object.flags;
        (*event).cache = [0; CACHE_NAME_BYTES];
        if let Some(src) = name {
            let dst = (&raw mut (*event).cache).cast::<c_void>();
            if bpf_probe_read_kernel_str(dst, CACHE_NAME_BYTES as u32, src as *const c_void) < 0 {
                bump(counter::READ_FAILED);
            }
        }
    }
    entry.submit(wakeup_flags());
}

/// Whether an object made now is counted rather than sent: counting is on, and no traced call
/// is in flight on the thread (the object can be charged to its cache alone).
#[inline(always)]
pub fn counting(in_flight: &InFlight) -> bool {
    config_flag(config_flags::COUNT_SLAB) && *in_flight == InFlight::default()
}

/// Counts object `ptr` of a cache whose (process, cache) entry exists, reading nothing of the
/// cache: `bytes_req` is the request, or `None` for the cache's own. False without an entry.
#[inline(always)]
pub fn count_existing(tgid: u32, ptr: u64, flags: u32, cache: u64, bytes_req: Option<u64>) -> bool {
    let key = SlabCountKey { tgid, flags, cache };
    let Some(slot) = SLAB_COUNTS.get_ptr_mut(key) else {
        return false;
    };
    count_object(slot, key, ptr, bytes_req);
    true
}

/// Counts `object` in its (process, cache) entry, made on the first object with the cache's
/// name copied from `name`; false when the map is full (the object is then sent).
#[inline(always)]
fn counted(tgid: u32, object: &SlabObject, cache: u64, name: Option<u64>) -> bool {
    let bytes_req = Some(object.bytes_req);
    if count_existing(tgid, object.ptr, object.flags, cache, bytes_req) {
        return true;
    }
    let mut fresh = SlabCount {
        allocs: 0,
        frees: 0,
        bytes_req: 0,
        object_size: object.bytes_alloc,
        req_size: object.bytes_req,
        name: [0; CACHE_NAME_BYTES],
    };
    if let Some(src) = name {
        let dst = (&raw mut fresh.name).cast::<c_void>();
        // SAFETY: `dst` is the stack array, CACHE_NAME_BYTES long.
        if unsafe { bpf_probe_read_kernel_str(dst, CACHE_NAME_BYTES as u32, src as _) } < 0 {
            bump(counter::READ_FAILED);
        }
    }
    let key = SlabCountKey {
        tgid,
        flags: object.flags,
        cache,
    };
    // Another CPU may have made it meanwhile: then this insert fails and the count goes to
    // theirs.
    let _ = SLAB_COUNTS.insert(key, fresh, BPF_NOEXIST);
    count_existing(tgid, object.ptr, object.flags, cache, bytes_req)
}

#[inline(always)]
fn count_object(slot: *mut SlabCount, key: SlabCountKey, ptr: u64, bytes_req: Option<u64>) {
    // Counted before it is remembered, so that a free on another CPU cannot be counted first.
    // SAFETY: `slot` is the map value's address, valid for the program's run.
    unsafe {
        let bytes_req = bytes_req.unwrap_or((*slot).req_size);
        atomic_add(&raw mut (*slot).allocs, 1);
        atomic_add(&raw mut (*slot).bytes_req, bytes_req);
    }
    remember_object(
        ptr,
        LiveObject {
            flags: key.flags | SLAB_COUNTED,
            tgid: key.tgid,
            cache: key.cache,
        },
    );
}

/// A slab object freed, by anyone: counted or sent if the traced process had it.
#[inline(always)]
pub fn slab_freed(ptr: u64) {
    let Some(live) = take_object(ptr) else {
        return;
    };
    let flags = live.flags;
    if flags & SLAB_COUNTED != 0 {
        let key = SlabCountKey {
            tgid: live.tgid,
            flags: flags & !SLAB_COUNTED,
            cache: live.cache,
        };
        if let Some(slot) = SLAB_COUNTS.get_ptr_mut(key) {
            // SAFETY: as in `counted`.
            atomic_add(unsafe { &raw mut (*slot).frees }, 1);
        }
        return;
    }
    let (tgid, tid) = current();
    let Some(mut entry) = reserve::<SlabEvent>() else {
        return;
    };
    entry.write(SlabEvent {
        header: header(kind::SLAB_FREE, tgid, tid),
        in_flight: InFlight::default(),
        ptr,
        call_site: 0,
        bytes_req: 0,
        bytes_alloc: 0,
        gfp_flags: 0,
        kstack_id: -1,
        flags,
        cache: [0; CACHE_NAME_BYTES],
    });
    entry.submit(wakeup_flags());
}
