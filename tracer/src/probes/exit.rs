//! The `_exit` uprobe: where a launched or followed process is held for its leak check at exit
//! (see `tracer-ebpf/src/probes/exit.rs`). Attached to every probed file that defines `_exit`
//! (glibc, a statically linked program), one perf-event uprobe each: it fires once a process.

use std::path::Path;

use aya::{
    Ebpf,
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
    },
};
use blazesym::{
    SymType,
    inspect::{Inspector, source::Elf, source::Source},
};

use super::uprobes::UprobeError;

pub const PROGRAM: &str = "exit_enter";
const SYMBOL: &str = "_exit";

/// The file offset of `_exit` in `path`, if it defines one.
pub fn find_exit(path: &Path) -> Option<u64> {
    let mut elf = Elf::new(path);
    elf.debug_syms = false;
    let inspector = Inspector::new();
    let found = inspector.lookup(&Source::Elf(elf), &[SYMBOL]).ok()?;
    found
        .into_iter()
        .flatten()
        .find(|i| i.sym_type == SymType::Function)
        .and_then(|i| i.file_offset)
        .filter(|&o| o != 0)
}

/// Attaches the exit probe at `offset` of the file the process calls `shown` (read through
/// `via`), loading its program first if need be.
pub fn attach_exit(
    ebpf: &mut Ebpf,
    shown: &Path,
    via: &Path,
    offset: u64,
    scope: UProbeScope,
) -> Result<(), UprobeError> {
    let program: &mut UProbe = ebpf
        .program_mut(PROGRAM)
        .and_then(|p| p.try_into().ok())
        .ok_or(UprobeError::Program(PROGRAM))?;
    if program.fd().is_err() {
        program.load().map_err(|source| UprobeError::Load {
            program: PROGRAM,
            source: Box::new(source),
        })?;
    }
    let point = UProbeAttachPoint {
        location: UProbeAttachLocation::AbsoluteOffset(offset),
        cookie: None,
    };
    program
        .attach(point, via, scope)
        .map_err(|source| UprobeError::Attach {
            symbol: SYMBOL.to_string(),
            path: shown.to_path_buf(),
            source: Box::new(source),
        })?;
    Ok(())
}
