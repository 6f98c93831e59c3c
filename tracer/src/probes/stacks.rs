//! Reading stacks out of the eBPF stack maps at the end of a run.

use std::collections::HashMap;

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, StackTraceMap},
};
use tracer_common::{DWARF_STACK_ID_BASE, DWARF_STACKS_MAP, DwarfStack, KSTACKS_MAP};

use crate::{aggregate::kernel::KernelStats, facts::KernelPath};

/// The frames (instruction pointers, innermost first) of each stack id in `ids`, from the
/// stack map `name`, or for ids from [`DWARF_STACK_ID_BASE`] on, from the unwinder's map. Ids
/// no longer in the map are left out.
pub fn read_stacks(
    ebpf: &Ebpf,
    name: &str,
    ids: impl IntoIterator<Item = i32>,
) -> HashMap<i32, Vec<u64>> {
    let (walked, ids): (Vec<i32>, Vec<i32>) =
        ids.into_iter().partition(|&id| id >= DWARF_STACK_ID_BASE);
    let mut out = HashMap::new();
    if !walked.is_empty()
        && let Some(map) = ebpf.map(DWARF_STACKS_MAP)
        && let Ok(map) = BpfHashMap::<_, u32, DwarfStack>::try_from(map)
    {
        for id in walked {
            if let Ok(stack) = map.get(&(id as u32), 0) {
                let len = (stack.len as usize).min(stack.frames.len());
                out.insert(id, stack.frames[..len].to_vec());
            }
        }
    }
    let Some(map) = ebpf.map(name) else {
        return out;
    };
    let map = match StackTraceMap::try_from(map) {
        Ok(map) => map,
        Err(e) => {
            log::warn!("reading stack map {name}: {e}");
            return out;
        }
    };
    for id in ids {
        if let Ok(trace) = map.get(&(id as u32), 0) {
            out.insert(id, trace.frames().iter().map(|f| f.ip).collect());
        }
    }
    out
}

/// Kernel function names for `addrs`, from kallsyms.
pub fn symbolize_kernel(addrs: impl Iterator<Item = u64>) -> HashMap<u64, String> {
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

/// The `max` kernel stacks that allocated most (`--kernel-stacks`), symbolized.
pub fn kernel_stacks(ebpf: &Ebpf, kernel: &KernelStats, max: usize) -> Vec<KernelPath> {
    let mut ids: Vec<_> = kernel.kstacks.iter().collect();
    ids.sort_by_key(|(id, c)| (std::cmp::Reverse(c.pages + c.slab_objects), **id));
    ids.truncate(max);
    let traces = read_stacks(ebpf, KSTACKS_MAP, ids.iter().map(|(id, _)| **id));
    let names = symbolize_kernel(traces.values().flatten().copied());
    ids.into_iter()
        .filter_map(|(id, c)| {
            let trace = traces.get(id)?;
            Some(KernelPath {
                stack: trace
                    .iter()
                    .map(|a| names.get(a).cloned().unwrap_or_else(|| format!("{a:#x}")))
                    .collect(),
                pages: c.pages,
                slab_objects: c.slab_objects,
            })
        })
        .collect()
}
