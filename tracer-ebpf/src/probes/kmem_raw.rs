//! The kmem and fault programs as raw tracepoints: the same events as `kmem.rs` and
//! `faults.rs`, from the tracepoints' arguments instead of their records.
//!
//! A perf tracepoint builds its whole record (the cache name copied in included) on every hit
//! before any program can filter, and these tracepoints fire for every allocation of the
//! machine. A raw tracepoint hands the program the arguments as they are, so a hit outside the
//! traced process costs a pid check. Userspace attaches these only after checking each
//! prototype in the kernel's BTF against the argument order written here (`TP_PROTO` of
//! Linux 6.1 and later), and passes the struct offsets in `Config::layout`.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use tracer_common::SLAB_KMALLOC;

use crate::{
    maps::{kernel_layout, read_kernel, traced_thread},
    probes::{
        faults::fault,
        kmem::{
            SlabObject, count_existing, counting, in_flight, page_allocated, page_freed,
            slab_allocated, slab_freed,
        },
        system,
    },
};

/// gfp_t is 32 bits; the argument slot is 64.
const GFP_MASK: u64 = 0xffff_ffff;

/// `kmem_cache_alloc(unsigned long call_site, const void *ptr, struct kmem_cache *s,
/// gfp_t gfp_flags, int node)`
#[raw_tracepoint(tracepoint = "kmem_cache_alloc")]
pub fn raw_kmem_cache_alloc(ctx: RawTracePointContext) -> i32 {
    let system = system::mode();
    if system::is_empty(system) {
        return 0;
    }
    if system != 0 {
        let (ptr, cache): (u64, u64) = (ctx.arg(1), ctx.arg(2));
        if ptr != 0 && cache != 0 {
            let size = system::cache_size(cache, || {
                read_kernel::<u32>(cache + u64::from(kernel_layout().cache_size))
            });
            system::slab_alloc(size);
        }
        return 0;
    }
    let Some((tgid, tid)) = traced_thread() else {
        return 0;
    };
    let (call_site, ptr, cache, gfp): (u64, u64, u64, u64) =
        (ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.arg(3));
    if ptr == 0 || cache == 0 {
        return 0;
    }
    // Most objects: counted in an entry made by an earlier one, without reading the cache.
    let in_flight = in_flight(tid);
    if counting(&in_flight) && count_existing(tgid, ptr, 0, cache, None) {
        return 0;
    }
    let l = kernel_layout();
    let (Some(bytes_req), Some(bytes_alloc), Some(name)) = (
        read_kernel::<u32>(cache + u64::from(l.cache_object_size)),
        read_kernel::<u32>(cache + u64::from(l.cache_size)),
        read_kernel::<u64>(cache + u64::from(l.cache_name)),
    ) else {
        return 0;
    };
    let object = SlabObject {
        ptr,
        call_site,
        bytes_req: u64::from(bytes_req),
        bytes_alloc: u64::from(bytes_alloc),
        gfp_flags: gfp & GFP_MASK,
        flags: 0,
    };
    slab_allocated(
        &ctx,
        tgid,
        tid,
        &object,
        cache,
        (name != 0).then_some(name),
        in_flight,
    );
    0
}

/// `kmalloc(unsigned long call_site, const void *ptr, size_t bytes_req, size_t bytes_alloc,
/// gfp_t gfp_flags, int node)`
#[raw_tracepoint(tracepoint = "kmalloc")]
pub fn raw_kmalloc(ctx: RawTracePointContext) -> i32 {
    let system = system::mode();
    if system::is_empty(system) {
        return 0;
    }
    if system != 0 {
        if ctx.arg::<u64>(1) != 0 {
            system::slab_alloc(ctx.arg(3));
        }
        return 0;
    }
    let Some((tgid, tid)) = traced_thread() else {
        return 0;
    };
    let object = SlabObject {
        call_site: ctx.arg(0),
        ptr: ctx.arg(1),
        bytes_req: ctx.arg(2),
        bytes_alloc: ctx.arg(3),
        gfp_flags: ctx.arg::<u64>(4) & GFP_MASK,
        flags: SLAB_KMALLOC,
    };
    slab_allocated(&ctx, tgid, tid, &object, 0, None, in_flight(tid));
    0
}

/// `kfree(unsigned long call_site, const void *ptr)`
#[raw_tracepoint(tracepoint = "kfree")]
pub fn raw_kfree(ctx: RawTracePointContext) -> i32 {
    slab_freed(ctx.arg(1));
    0
}

/// `kmem_cache_free(unsigned long call_site, const void *ptr, const struct kmem_cache *s)`
#[raw_tracepoint(tracepoint = "kmem_cache_free")]
pub fn raw_kmem_cache_free(ctx: RawTracePointContext) -> i32 {
    slab_freed(ctx.arg(1));
    0
}

/// What names `struct page *page` in [`tracer_common::PageEvent::pfn`]: its address over the
/// struct's size. The frame number itself would need `vmemmap`, which is not a symbol on
/// kernels without memory layout randomization; pairing frees with allocations needs only a
/// one-to-one name.
#[inline(always)]
fn page_name(page: u64) -> u64 {
    page >> kernel_layout().page_shift
}

/// `mm_page_alloc(struct page *page, unsigned int order, gfp_t gfp_flags, int migratetype)`
#[raw_tracepoint(tracepoint = "mm_page_alloc")]
pub fn raw_mm_page_alloc(ctx: RawTracePointContext) -> i32 {
    let system = system::mode();
    if system::is_empty(system) {
        return 0;
    }
    if system != 0 {
        let page: u64 = ctx.arg(0);
        if page != 0 {
            system::page_alloc(page_name(page), ctx.arg::<u64>(1) as u32);
        }
        return 0;
    }
    let Some((tgid, tid)) = traced_thread() else {
        return 0;
    };
    let page: u64 = ctx.arg(0);
    if page == 0 {
        return 0; // a failed allocation
    }
    let pfn = page_name(page);
    let order = ctx.arg::<u64>(1) as u32;
    let gfp = ctx.arg::<u64>(2) & GFP_MASK;
    let migratetype = ctx.arg::<u64>(3) as i32;
    page_allocated(&ctx, tgid, tid, pfn, order, gfp, migratetype);
    0
}

/// `mm_page_free(struct page *page, unsigned int order)`
#[raw_tracepoint(tracepoint = "mm_page_free")]
pub fn raw_mm_page_free(ctx: RawTracePointContext) -> i32 {
    page_freed(page_name(ctx.arg(0)), ctx.arg::<u64>(1) as u32);
    0
}

/// `mm_page_free_batched(struct page *page)`
#[raw_tracepoint(tracepoint = "mm_page_free_batched")]
pub fn raw_mm_page_free_batched(ctx: RawTracePointContext) -> i32 {
    page_freed(page_name(ctx.arg(0)), 0);
    0
}

/// `page_fault_user(unsigned long address, struct pt_regs *regs, unsigned long error_code)`
#[raw_tracepoint(tracepoint = "page_fault_user")]
pub fn raw_page_fault_user(ctx: RawTracePointContext) -> i32 {
    let system = system::mode();
    if system::is_empty(system) {
        return 0;
    }
    if system != 0 {
        system::fault();
        return 0;
    }
    let Some((tgid, tid)) = traced_thread() else {
        return 0;
    };
    let (address, regs, error_code): (u64, u64, u64) = (ctx.arg(0), ctx.arg(1), ctx.arg(2));
    let Some(ip) = read_kernel::<u64>(regs + u64::from(kernel_layout().regs_ip)) else {
        return 0;
    };
    fault(&ctx, tgid, tid, address, ip, error_code);
    0
}
