//! The state of one tracing session and what each event does to it.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{MapData, RingBuf, StackTraceMap},
};
use tracer_common::{KSTACKS_MAP, STACKS_MAP, Syscall, SyscallEvent};

use crate::{
    aggregate::{
        Aggregate,
        kernel::{KStackCount, KernelStats},
        syscalls::is_error,
    },
    attribution::{AddressSpace, join::Join},
    events::{self, Event},
    gfp::GfpTable,
    probes::uprobes::{AllocatorProbes, UprobeError, needed_libraries},
    report::{EventCounts, kernel::KernelStack, user},
    symbolize::BlazeSymbolizer,
};

pub struct Session {
    pub pid: u32,
    pub agg: Aggregate,
    pub space: AddressSpace,
    pub counts: EventCounts,
    pub allocators: AllocatorProbes,
    pub kernel: KernelStats,
    pub join: Join,
    pub gfp: GfpTable,
}

/// Whether a file is a dynamic loader (`ld-linux-x86-64.so.2`, `ld-linux-aarch64.so.1`, ...):
/// its internal malloc serves the loader, not the program.
fn is_loader(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("ld-"))
}

impl Session {
    pub fn new(pid: u32, space: AddressSpace, page_size: u64) -> Self {
        Session {
            pid,
            agg: Aggregate::new(page_size),
            space,
            counts: EventCounts::default(),
            allocators: AllocatorProbes::default(),
            kernel: KernelStats::default(),
            join: Join::default(),
            gfp: GfpTable::default(),
        }
    }

    /// Attaches the allocator probes to every file the process has mapped or, for a command
    /// stopped at exec, will load, and to `extra` files named by the user.
    pub fn attach_allocators(
        &mut self,
        ebpf: &mut Ebpf,
        launched: Option<&Path>,
        extra: &[PathBuf],
    ) -> anyhow::Result<()> {
        let mut files = self.space.exec_files();
        if let Some(program) = launched
            && let Some(loader) = files.iter().find(|f| is_loader(f)).cloned()
        {
            files.extend(needed_libraries(&loader, program));
        }
        files.retain(|f| !is_loader(f));
        for file in files {
            match self.allocators.attach_file(ebpf, &file, self.pid) {
                Err(e @ (UprobeError::Load { .. } | UprobeError::Program(_))) => {
                    return Err(e.into());
                }
                Err(e) => log::warn!("{:#}", anyhow::Error::from(e)),
                Ok(_) => {}
            }
        }
        for file in extra {
            self.allocators.attach_file(ebpf, file, self.pid)?;
        }
        if self.allocators.attached.is_empty() {
            log::warn!(
                "no allocator functions found in the process's files: user-space allocations are not traced"
            );
        }
        Ok(())
    }

    /// Processes every record waiting in the ring buffer.
    pub fn drain(&mut self, ring: &mut RingBuf<MapData>, ebpf: &mut Ebpf) {
        while let Some(record) = ring.next() {
            self.counts.received += 1;
            match events::decode(&record) {
                Ok(event) => self.on_event(&event, ebpf),
                Err(e) => {
                    self.counts.decode_errors += 1;
                    log::debug!("undecodable record: {e}");
                }
            }
        }
    }

    fn on_event(&mut self, event: &Event, ebpf: &mut Ebpf) {
        match event {
            Event::Syscall(e) => {
                let brk_before = self.agg.syscalls.brk.current_break;
                self.agg.syscalls.on_syscall(e);
                self.join.on_syscall(e, brk_before);
                if let Some(lib) = self.follow_mapping(e) {
                    // A library mapped executable after start (dlopen): probe it if it brings
                    // an allocator. Calls made before this point are not seen.
                    if !self.allocators.seen(&lib)
                        && !is_loader(&lib)
                        && let Err(e) = self.allocators.attach_file(ebpf, &lib, self.pid)
                    {
                        log::warn!("{:#}", anyhow::Error::from(e));
                    }
                }
            }
            Event::Open(e) => self.space.on_open(e.fd, &e.path),
            Event::Alloc(e) => {
                self.agg.heap.on_alloc(e);
                self.join.on_alloc(e, &self.space);
            }
            Event::PageAlloc(e) => {
                self.kernel.on_page_alloc(e, &self.gfp);
                self.join.on_page_alloc(e);
            }
            Event::PageFree(e) => self.kernel.on_page_free(e),
            Event::SlabAlloc(e) => {
                self.kernel.on_slab_alloc(e);
                self.join.on_slab_alloc(e);
            }
            Event::SlabFree(e) => self.kernel.on_slab_free(e),
            Event::Fault(e) => {
                self.kernel.on_fault(self.space.region(e.address));
                self.join.on_fault(e, &self.agg.heap, &self.space);
            }
        }
    }

    /// Keeps the address-space model current; returns a file newly mapped executable.
    fn follow_mapping(&mut self, e: &SyscallEvent) -> Option<PathBuf> {
        if is_error(e.ret) {
            return None;
        }
        let a = e.args;
        match Syscall::try_from(e.syscall).ok()? {
            Syscall::Mmap => self
                .space
                .on_mmap(e.ret as u64, a[1], a[2], a[3], a[4] as i32, a[5])
                .map(|p| p.to_path_buf()),
            Syscall::Munmap => {
                self.space.on_munmap(a[0], a[1]);
                None
            }
            Syscall::Mremap => {
                self.space.on_mremap(a[0], a[1], a[2], e.ret as u64);
                None
            }
            Syscall::Brk => {
                self.space.on_brk(e.ret as u64);
                None
            }
            Syscall::Openat | Syscall::Mprotect | Syscall::Madvise => None,
        }
    }

    /// The kernel stacks that allocated most, symbolized from kallsyms (`--kernel-stacks`).
    pub fn kernel_stacks(&self, ebpf: &Ebpf, max: usize) -> Vec<KernelStack> {
        let Some(map) = ebpf.map(KSTACKS_MAP) else {
            return Vec::new();
        };
        let Ok(map) = StackTraceMap::try_from(map) else {
            return Vec::new();
        };
        let mut ids: Vec<(&i32, &KStackCount)> = self.kernel.kstacks.iter().collect();
        ids.sort_by_key(|(id, c)| (std::cmp::Reverse(c.pages + c.slab_objects), **id));
        ids.truncate(max);
        let traces: Vec<(Vec<u64>, KStackCount)> = ids
            .into_iter()
            .filter_map(|(id, c)| {
                let trace = map.get(&(*id as u32), 0).ok()?;
                Some((trace.frames().iter().map(|f| f.ip).collect(), *c))
            })
            .collect();
        let names = symbolize_kernel(traces.iter().flat_map(|(t, _)| t.iter().copied()));
        traces
            .into_iter()
            .map(|(trace, c)| KernelStack {
                stack: trace
                    .iter()
                    .map(|a| names.get(a).cloned().unwrap_or_else(|| format!("{a:#x}")))
                    .collect(),
                pages: c.pages,
                slab_objects: c.slab_objects,
            })
            .collect()
    }

    /// The symbolized `user` section of the summary.
    pub fn user_summary(&self, ebpf: &Ebpf, now_ns: u64, max_sites: usize) -> user::UserSummary {
        let mut stacks = HashMap::new();
        if let Some(map) = ebpf.map(STACKS_MAP) {
            match StackTraceMap::try_from(map) {
                Ok(map) => {
                    for id in self.agg.heap.stack_ids() {
                        if let Ok(trace) = map.get(&(id as u32), 0) {
                            stacks.insert(id, trace.frames().iter().map(|f| f.ip).collect());
                        }
                    }
                }
                Err(e) => log::warn!("reading stacks: {e}"),
            }
        }
        let mut files: Vec<String> = self
            .allocators
            .attached
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        files.dedup();
        let mut symbolizer = BlazeSymbolizer::new(&self.space);
        user::build(
            &self.agg.heap,
            &self.join,
            &stacks,
            &mut symbolizer,
            now_ns,
            max_sites,
            files,
        )
    }
}

/// Kernel function names for `addrs`, from kallsyms.
fn symbolize_kernel(addrs: impl Iterator<Item = u64>) -> HashMap<u64, String> {
    use blazesym::{
        MaybeDefault,
        symbolize::{Input, Symbolized, Symbolizer, source::Kernel, source::Source},
    };
    let mut unique: Vec<u64> = addrs.collect();
    unique.sort_unstable();
    unique.dedup();
    let src = Source::Kernel(Kernel {
        vmlinux: MaybeDefault::None,
        ..Default::default()
    });
    let symbolizer = Symbolizer::new();
    let Ok(results) = symbolizer.symbolize(&src, Input::AbsAddr(&unique)) else {
        log::warn!("could not read kernel symbols (kallsyms)");
        return HashMap::new();
    };
    unique
        .into_iter()
        .zip(results)
        .filter_map(|(addr, r)| match r {
            Symbolized::Sym(sym) => Some((addr, sym.name.to_string())),
            Symbolized::Unknown(_) => None,
        })
        .collect()
}
