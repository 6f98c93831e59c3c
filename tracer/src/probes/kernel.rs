//! Layouts of the kmem and fault tracepoints, read from tracefs.

use tracer_common::KmemOffsets;

use super::tracefs::{Tracefs, TracefsError};

/// The kmem tracepoints tracer attaches, as (tracepoint, program).
pub const KMEM_TRACEPOINTS: [&str; 7] = [
    "mm_page_alloc",
    "mm_page_free",
    "mm_page_free_batched",
    "kmem_cache_alloc",
    "kmem_cache_free",
    "kmalloc",
    "kfree",
];

/// Reads the field offsets of every kmem tracepoint (`kmem:*`) tracer uses.
pub fn kmem_offsets(fs: &Tracefs, into: &mut KmemOffsets) -> Result<(), TracefsError> {
    let f = |name: &str| fs.format("kmem", name);
    let page_alloc = f("mm_page_alloc")?;
    into.page_alloc_pfn = page_alloc.field("pfn")?.offset;
    into.page_alloc_order = page_alloc.field("order")?.offset;
    into.page_alloc_gfp = page_alloc.field("gfp_flags")?.offset;
    into.page_alloc_migratetype = page_alloc.field("migratetype")?.offset;
    let page_free = f("mm_page_free")?;
    into.page_free_pfn = page_free.field("pfn")?.offset;
    into.page_free_order = page_free.field("order")?.offset;
    into.page_free_batched_pfn = f("mm_page_free_batched")?.field("pfn")?.offset;
    let cache_alloc = f("kmem_cache_alloc")?;
    into.cache_alloc_call_site = cache_alloc.field("call_site")?.offset;
    into.cache_alloc_ptr = cache_alloc.field("ptr")?.offset;
    into.cache_alloc_name = cache_alloc.field("name")?.offset;
    into.cache_alloc_bytes_req = cache_alloc.field("bytes_req")?.offset;
    into.cache_alloc_bytes_alloc = cache_alloc.field("bytes_alloc")?.offset;
    into.cache_alloc_gfp = cache_alloc.field("gfp_flags")?.offset;
    into.cache_free_ptr = f("kmem_cache_free")?.field("ptr")?.offset;
    let kmalloc = f("kmalloc")?;
    into.kmalloc_call_site = kmalloc.field("call_site")?.offset;
    into.kmalloc_ptr = kmalloc.field("ptr")?.offset;
    into.kmalloc_bytes_req = kmalloc.field("bytes_req")?.offset;
    into.kmalloc_bytes_alloc = kmalloc.field("bytes_alloc")?.offset;
    into.kmalloc_gfp = kmalloc.field("gfp_flags")?.offset;
    into.kfree_ptr = f("kfree")?.field("ptr")?.offset;
    Ok(())
}

/// Reads the field offsets of `exceptions:page_fault_user`.
pub fn fault_offsets(fs: &Tracefs, into: &mut KmemOffsets) -> Result<(), TracefsError> {
    let fault = fs.format("exceptions", "page_fault_user")?;
    into.fault_address = fault.field("address")?.offset;
    into.fault_ip = fault.field("ip")?.offset;
    into.fault_error_code = fault.field("error_code")?.offset;
    Ok(())
}
