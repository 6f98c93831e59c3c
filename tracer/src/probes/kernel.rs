//! Layouts of the kmem and fault tracepoints: their records, read from tracefs, and their
//! arguments and the kernel structures behind them, read from BTF for the raw programs.

use tracer_common::{
    KernelLayout, KmemOffsets, MAX_PAGE_BITS, MAX_SYSCALL_ARGS, SYSCALL_SLOTS, Syscall,
};

use super::{
    btf::Btf,
    tracefs::{Tracefs, TracefsError},
};

/// How the tracepoint programs attach (syscalls, task, kmem, faults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KernelProbes {
    /// Raw tracepoints for the task, kmem and fault programs where this kernel's prototypes are
    /// the ones the programs know; perf tracepoints for the syscalls.
    #[default]
    Auto,
    /// Raw tracepoints for every program, the syscalls' included, or an error.
    Raw,
    /// Perf tracepoints (the tracefs records), on any kernel.
    Perf,
}

/// The raw tracepoints the raw programs attach to (program `raw_<name>`), with the leading
/// arguments of `TP_PROTO` that the programs read, in order, as BTF names their types (`a|b`:
/// either). These attach in every mode: the two syscall ones first.
pub const RAW_TRACEPOINTS: [(&str, &[&str]); 5] = [
    ("sys_enter", &["struct pt_regs *", "long int"]),
    ("sys_exit", &["struct pt_regs *", "long int"]),
    (
        "task_newtask",
        &["struct task_struct *", "u64|long unsigned int"],
    ),
    // Its program reads no argument.
    ("sched_process_exec", &[]),
    (
        "sched_process_exit",
        &["struct task_struct *", "bool|_Bool"],
    ),
];

/// The kmem and fault raw tracepoints, attached with the kernel paths.
pub const RAW_KERNEL_TRACEPOINTS: [(&str, &[&str]); 8] = [
    (
        "kmem_cache_alloc",
        &[
            "long unsigned int",
            "const void *",
            "struct kmem_cache *",
            "gfp_t",
        ],
    ),
    (
        "kmalloc",
        &[
            "long unsigned int",
            "const void *",
            "size_t",
            "size_t",
            "gfp_t",
        ],
    ),
    ("kfree", &["long unsigned int", "const void *"]),
    ("kmem_cache_free", &["long unsigned int", "const void *"]),
    (
        "mm_page_alloc",
        &["struct page *", "unsigned int", "gfp_t", "int"],
    ),
    ("mm_page_free", &["struct page *"]),
    ("mm_page_free_batched", &["struct page *"]),
    (
        "page_fault_user",
        &["long unsigned int", "struct pt_regs *", "long unsigned int"],
    ),
];

/// The `struct pt_regs` members holding a syscall's arguments, in order, and its number, as
/// x86-64 names them (other architectures' BTF has no such members: they take the perf
/// programs).
const SYSCALL_REGS: ([&str; MAX_SYSCALL_ARGS], &str) =
    (["di", "si", "dx", "r10", "r8", "r9"], "orig_ax");

/// Each traced syscall's number on this architecture.
fn syscall_nr(syscall: Syscall) -> u32 {
    let nr = match syscall {
        Syscall::Brk => libc::SYS_brk,
        Syscall::Mmap => libc::SYS_mmap,
        Syscall::Munmap => libc::SYS_munmap,
        Syscall::Mremap => libc::SYS_mremap,
        Syscall::Openat => libc::SYS_openat,
        Syscall::Mprotect => libc::SYS_mprotect,
        Syscall::Madvise => libc::SYS_madvise,
    };
    nr as u32
}

/// Why the raw programs cannot run on this kernel.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RawUnsupported(pub String);

/// Whether raw tracepoint `name`, taking `args` (`None`: not in BTF), starts with the arguments
/// its program reads.
fn check_prototype(
    name: &str,
    args: Option<Vec<String>>,
    expected: &[&str],
) -> Result<(), RawUnsupported> {
    let args = args
        .ok_or_else(|| RawUnsupported(format!("the kernel's BTF has no raw tracepoint {name}")))?;
    let differs = |a: &String, e: &&str| !e.split('|').any(|alt| alt == a);
    if args.len() < expected.len() || args.iter().zip(expected).any(|(a, e)| differs(a, e)) {
        return Err(RawUnsupported(format!(
            "raw tracepoint {name} takes ({}), not ({}, ...)",
            args.join(", "),
            expected.join(", ")
        )));
    }
    Ok(())
}

/// Checks every raw tracepoint's prototype against the programs' and finds the struct members
/// they read.
pub fn raw_layout(btf: &Btf) -> Result<KernelLayout, RawUnsupported> {
    let no = |why: String| RawUnsupported(why);
    for (name, expected) in RAW_TRACEPOINTS.iter().chain(&RAW_KERNEL_TRACEPOINTS) {
        check_prototype(name, btf.tracepoint_args(name), expected)?;
    }
    let member = |s: &str, m: &str| {
        btf.member_offset(s, m)
            .and_then(|o| u16::try_from(o).ok())
            .ok_or_else(|| no(format!("struct {s} has no member {m} in the kernel's BTF")))
    };
    let page = btf
        .struct_size("page")
        .filter(|s| s.is_power_of_two())
        .ok_or_else(|| no("struct page's size is not a power of two".into()))?;
    let mut regs_args = [0; MAX_SYSCALL_ARGS];
    for (slot, name) in regs_args.iter_mut().zip(SYSCALL_REGS.0) {
        *slot = member("pt_regs", name)?;
    }
    let mut syscall_nrs = [u32::MAX; SYSCALL_SLOTS];
    for syscall in Syscall::ALL {
        syscall_nrs[syscall as usize] = syscall_nr(syscall);
    }
    Ok(KernelLayout {
        page_shift: page.trailing_zeros(),
        cache_name: member("kmem_cache", "name")?,
        cache_object_size: member("kmem_cache", "object_size")?,
        cache_size: member("kmem_cache", "size")?,
        regs_ip: member("pt_regs", "ip")?,
        regs_args,
        regs_orig_ax: member("pt_regs", SYSCALL_REGS.1)?,
        task_pid: member("task_struct", "pid")?,
        task_exit_code: member("task_struct", "exit_code")?,
        reserved: 0,
        syscall_nrs,
    })
}

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

/// The `_node` variants of the slab tracepoints (kernels before 6.1), attached with the plain
/// ones where they are laid out alike.
pub const KMEM_NODE_VARIANTS: [&str; 2] = ["kmalloc_node", "kmem_cache_alloc_node"];

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
    for (variant, plain) in KMEM_NODE_VARIANTS.into_iter().zip([&kmalloc, &cache_alloc]) {
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

/// Where `task:task_newtask` has the new task's clone flags and pid.
pub fn newtask_offsets(fs: &Tracefs, into: &mut KmemOffsets) -> Result<(), TracefsError> {
    let format = fs.format("task", "task_newtask")?;
    into.newtask_clone_flags = format.field("clone_flags")?.offset;
    into.newtask_pid = format.field("pid")?.offset;
    Ok(())
}

/// Where `sched:sched_process_exit` says whether the exiting thread is its process's last.
pub fn exit_offsets(fs: &Tracefs, into: &mut KmemOffsets) -> Result<(), TracefsError> {
    into.exit_group_dead = fs
        .format("sched", "sched_process_exit")?
        .field("group_dead")?
        .offset;
    Ok(())
}

/// Where `oom:mark_victim` has the victim's pid, its sizes and its `oom_score_adj`.
pub fn oom_offsets(fs: &Tracefs, into: &mut KmemOffsets) -> Result<(), TracefsError> {
    let format = fs.format("oom", "mark_victim")?;
    into.oom_pid = format.field("pid")?.offset;
    into.oom_total_vm = format.field("total_vm")?.offset;
    into.oom_anon_rss = format.field("anon_rss")?.offset;
    into.oom_file_rss = format.field("file_rss")?.offset;
    into.oom_shmem_rss = format.field("shmem_rss")?.offset;
    into.oom_pgtables = format.field("pgtables")?.offset;
    into.oom_score_adj = format.field("oom_score_adj")?.offset;
    Ok(())
}

/// `struct task_struct`'s `exit_code`, for the perf exit program (which has no task pointer
/// of its own: it reads the current task), when BTF is there.
pub fn task_exit_code(btf: &Btf) -> Option<u16> {
    btf.member_offset("task_struct", "exit_code")
        .and_then(|o| u16::try_from(o).ok())
}

/// Reads the field offsets of `exceptions:page_fault_user`.
pub fn fault_offsets(fs: &Tracefs, into: &mut KmemOffsets) -> Result<(), TracefsError> {
    let fault = fs.format("exceptions", "page_fault_user")?;
    into.fault_address = fault.field("address")?.offset;
    into.fault_ip = fault.field("ip")?.offset;
    into.fault_error_code = fault.field("error_code")?.offset;
    Ok(())
}

/// One past the highest page frame of any memory zone, from `/proc/zoneinfo` (each zone's
/// `start_pfn` plus its `spanned` pages).
pub fn frames_end(zoneinfo: &str) -> Option<u64> {
    let mut spanned = None;
    let mut end = None;
    for line in zoneinfo.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Node"), _) => spanned = None,
            (Some("spanned"), Some(n)) => spanned = n.parse::<u64>().ok(),
            (Some("start_pfn:"), Some(n)) => {
                if let (Ok(start), Some(pages)) = (n.parse::<u64>(), spanned) {
                    end = end.max(Some(start.saturating_add(pages)));
                }
            }
            _ => {}
        }
    }
    end
}

/// log2 of the bits of the live-page bitmap for frames below `end`, or 0 past
/// [`MAX_PAGE_BITS`]. A page is named by its frame number, or (raw tracepoints) by its
/// `struct page` address over the struct's size, which the raw programs require to be a power
/// of two: either way, the names of `end` consecutive frames are `end` consecutive numbers,
/// which no two share a bit of a bitmap of at least `end` bits.
pub fn page_bits(end: u64) -> u32 {
    let bits = 64 - end.max(1 << 15).saturating_sub(1).leading_zeros();
    if bits > MAX_PAGE_BITS { 0 } else { bits }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn the_page_bitmap_covers_every_zone() {
        // This machine's zones (24 GiB): DMA, DMA32, Normal, and two empty ones.
        let zoneinfo = "Node 0, zone      DMA\n  pages free     3840\n        spanned  4095\n  \
                        start_pfn:           1\nNode 0, zone    DMA32\n        spanned  1044480\n  \
                        start_pfn:           4096\nNode 0, zone   Normal\n        spanned  5505024\n  \
                        start_pfn:           1048576\nNode 0, zone  Movable\n        spanned  0\n";
        assert_eq!(frames_end(zoneinfo), Some(1_048_576 + 5_505_024));
        // 6,553,600 frames need 23 bits: a 1 MiB bitmap.
        assert_eq!(page_bits(6_553_600), 23);
        assert_eq!(page_bits(1 << 23), 23);
        assert_eq!(page_bits((1 << 23) + 1), 24);
        assert_eq!(page_bits(0), 15);
        assert_eq!(page_bits(1 << 30), MAX_PAGE_BITS);
        assert_eq!(page_bits((1 << 30) + 1), 0, "past 4 TiB: the hash map");
        assert_eq!(frames_end("no zones here"), None);
    }

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
    fn raw_programs_refuse_other_prototypes() {
        let args = |a: &[&str]| Some(a.iter().map(ToString::to_string).collect());
        let (name, expected) = RAW_KERNEL_TRACEPOINTS[0];
        // Linux 6.1+, with the trailing node the program does not read.
        let now = [
            "long unsigned int",
            "const void *",
            "struct kmem_cache *",
            "gfp_t",
            "int",
        ];
        assert_eq!(check_prototype(name, args(&now), expected), Ok(()));
        // Linux 5.15: sizes where the cache is.
        let old = [
            "long unsigned int",
            "const void *",
            "size_t",
            "size_t",
            "gfp_t",
        ];
        let err = check_prototype(name, args(&old), expected).unwrap_err();
        assert!(
            err.0
                .contains("takes (long unsigned int, const void *, size_t"),
            "{err}"
        );
        assert!(check_prototype(name, args(&now[..3]), expected).is_err());
        assert!(
            check_prototype(name, None, expected)
                .unwrap_err()
                .0
                .contains("no raw tracepoint")
        );
    }

    #[test]
    fn this_kernel_takes_the_raw_programs() {
        let btf = Btf::from_sys().expect("the kernel has BTF");
        let layout = raw_layout(&btf).expect("Linux 6.18 has the known prototypes");
        assert_eq!(layout.page_shift, 6);
        assert_eq!(layout.regs_ip, 128);
        assert!(layout.cache_name > layout.cache_size, "{layout:?}");
        // x86-64's syscall frame: di at 112, r10 at 56, orig_ax at 120; mmap is syscall 9.
        assert_eq!(layout.regs_args, [112, 104, 96, 56, 72, 64]);
        assert_eq!(layout.regs_orig_ax, 120);
        assert_eq!(layout.syscall_nrs[Syscall::Mmap as usize], 9);
        assert_eq!(layout.syscall_nrs[0], u32::MAX, "slot 0 is no syscall");
    }

    #[test]
    fn this_kernel_names_its_caches() {
        let fs = Tracefs::find_or_mount().expect("tracefs (the tests run as root)");
        let layout = kmem_offsets(&fs, &mut KmemOffsets::default()).unwrap();
        assert!(layout.cache_names, "Linux 6.1+ names the cache");
        assert!(layout.node_variants.is_empty(), "{layout:?}");
    }
}
