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

/// What differs between kernels in the kmem tracepoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KmemLayout {
    /// `kmem_cache_alloc` names its cache (Linux 6.1 and later).
    pub cache_names: bool,
    /// `kmalloc_node` and `kmem_cache_alloc_node`, where the kernel has them (before 6.1) laid
    /// out as the plain tracepoints, to attach too.
    pub node_variants: Vec<&'static str>,
}

/// The fields the slab programs read, by (tracepoint, field): a `_node` variant is attached
/// only if it has them where its plain tracepoint does.
const SLAB_FIELDS: [&str; 5] = ["call_site", "ptr", "bytes_req", "bytes_alloc", "gfp_flags"];

/// Reads the field offsets of every kmem tracepoint (`kmem:*`) tracer uses, and what this
/// kernel's variants are.
pub fn kmem_offsets(fs: &Tracefs, into: &mut KmemOffsets) -> Result<KmemLayout, TracefsError> {
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
    let mut layout = KmemLayout::default();
    if let Ok(name) = cache_alloc.field("name") {
        into.cache_alloc_name = name.offset;
        layout.cache_names = true;
    }
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
    for (variant, plain) in [
        ("kmalloc_node", &kmalloc),
        ("kmem_cache_alloc_node", &cache_alloc),
    ] {
        let Ok(format) = f(variant) else {
            continue;
        };
        let same = SLAB_FIELDS.iter().all(
            |field| matches!((format.field(field), plain.field(field)), (Ok(a), Ok(b)) if a == b),
        );
        if same {
            layout.node_variants.push(variant);
        } else {
            log::warn!(
                "kmem:{variant} is laid out unlike its plain tracepoint: its slab objects are not traced"
            );
        }
    }
    Ok(layout)
}

/// Where `task:task_newtask` has the new task's clone flags.
pub fn newtask_offsets(fs: &Tracefs, into: &mut KmemOffsets) -> Result<(), TracefsError> {
    into.newtask_clone_flags = fs
        .format("task", "task_newtask")?
        .field("clone_flags")?
        .offset;
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Writes a tracepoint `format` file with `fields` as (declaration, offset, size).
    fn tracepoint(root: &Path, name: &str, fields: &[(&str, u16, u16)]) {
        let dir = root.join("events/kmem").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = format!("name: {name}\nID: 1\nformat:\n");
        text.push_str("\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n");
        for (decl, offset, size) in fields {
            text.push_str(&format!(
                "\tfield:{decl};\toffset:{offset};\tsize:{size};\tsigned:0;\n"
            ));
        }
        text.push_str("\nprint fmt: \"\"\n");
        std::fs::write(dir.join("format"), text).unwrap();
    }

    /// kmem as Linux 5.15 lays it out: no cache names, and `_node` tracepoints of their own.
    fn old_kernel(root: &Path, node_layout_differs: bool) {
        let slab = [
            ("unsigned long call_site", 8, 8),
            ("const void * ptr", 16, 8),
            ("size_t bytes_req", 24, 8),
            ("size_t bytes_alloc", 32, 8),
            ("gfp_t gfp_flags", 40, 4),
        ];
        let page = [
            ("unsigned long pfn", 8, 8),
            ("unsigned int order", 16, 4),
            ("gfp_t gfp_flags", 20, 4),
            ("int migratetype", 24, 4),
        ];
        tracepoint(root, "mm_page_alloc", &page);
        tracepoint(root, "mm_page_free", &page[..2]);
        tracepoint(root, "mm_page_free_batched", &page[..1]);
        tracepoint(root, "kmem_cache_alloc", &slab);
        tracepoint(root, "kmalloc", &slab);
        tracepoint(root, "kmem_cache_free", &slab[..2]);
        tracepoint(root, "kfree", &slab[..2]);
        tracepoint(root, "kmem_cache_alloc_node", &slab);
        let mut node = slab.to_vec();
        if node_layout_differs {
            node[1].1 = 48;
        }
        tracepoint(root, "kmalloc_node", &node);
    }

    #[test]
    fn older_kernels_keep_slab_tracing_with_their_variants() {
        let root = std::env::temp_dir().join(format!("tracer-old-kmem-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        old_kernel(&root, false);
        let mut offsets = KmemOffsets::default();
        let layout = kmem_offsets(&Tracefs::at(&root), &mut offsets).unwrap();
        assert_eq!(
            layout,
            KmemLayout {
                cache_names: false,
                node_variants: vec!["kmalloc_node", "kmem_cache_alloc_node"],
            }
        );
        assert_eq!(
            (offsets.kmalloc_ptr, offsets.cache_alloc_bytes_alloc),
            (16, 32)
        );

        // A variant laid out otherwise is left out (the programs read the plain offsets).
        std::fs::remove_dir_all(&root).unwrap();
        old_kernel(&root, true);
        let layout = kmem_offsets(&Tracefs::at(&root), &mut offsets).unwrap();
        assert_eq!(layout.node_variants, ["kmem_cache_alloc_node"]);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn this_kernel_names_its_caches() {
        let fs = Tracefs::find_or_mount().expect("tracefs (the tests run as root)");
        let layout = kmem_offsets(&fs, &mut KmemOffsets::default()).unwrap();
        assert!(layout.cache_names, "Linux 6.1+ names the cache");
        assert!(layout.node_variants.is_empty(), "{layout:?}");
    }
}
