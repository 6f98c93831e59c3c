//! Finding the allocator in a process's files and attaching the allocator uprobes to it.
//!
//! Any file that defines one of the family's names is probed: glibc, libstdc++ (operator
//! new/delete), a statically linked program, or jemalloc/tcmalloc/mimalloc exporting `malloc`.
//! Each probe's offset is chosen by decoding the function's first instructions: a uprobe on an
//! instruction the kernel must single-step costs about four times one it emulates.

use std::{
    collections::HashSet,
    fs::File,
    io::{Read, Seek, SeekFrom},
    num::NonZeroU32,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{
        ProgramError, UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
    },
};
use blazesym::{
    SymType,
    inspect::{Inspector, source::Elf, source::Source},
};
use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
use thiserror::Error;
use tracer_common::AllocFn;

use super::multi::{MultiError, MultiKind, MultiLink, MultiLoader};

/// Symbol names of the family, C first, then the Itanium-mangled C++ operators.
pub const SYMBOLS: &[(&str, AllocFn)] = &[
    ("malloc", AllocFn::Malloc),
    ("calloc", AllocFn::Calloc),
    ("realloc", AllocFn::Realloc),
    ("reallocarray", AllocFn::Reallocarray),
    ("posix_memalign", AllocFn::PosixMemalign),
    ("aligned_alloc", AllocFn::AlignedAlloc),
    ("memalign", AllocFn::Memalign),
    ("valloc", AllocFn::Valloc),
    ("pvalloc", AllocFn::Pvalloc),
    ("free", AllocFn::Free),
    ("_Znwm", AllocFn::OperatorNew),
    ("_Znam", AllocFn::OperatorNew),
    ("_ZnwmRKSt9nothrow_t", AllocFn::OperatorNew),
    ("_ZnamRKSt9nothrow_t", AllocFn::OperatorNew),
    ("_ZnwmSt11align_val_t", AllocFn::OperatorNew),
    ("_ZnamSt11align_val_t", AllocFn::OperatorNew),
    ("_ZnwmSt11align_val_tRKSt9nothrow_t", AllocFn::OperatorNew),
    ("_ZnamSt11align_val_tRKSt9nothrow_t", AllocFn::OperatorNew),
    ("_ZdlPv", AllocFn::OperatorDelete),
    ("_ZdaPv", AllocFn::OperatorDelete),
    ("_ZdlPvm", AllocFn::OperatorDelete),
    ("_ZdaPvm", AllocFn::OperatorDelete),
    ("_ZdlPvSt11align_val_t", AllocFn::OperatorDelete),
    ("_ZdaPvSt11align_val_t", AllocFn::OperatorDelete),
    ("_ZdlPvmSt11align_val_t", AllocFn::OperatorDelete),
    ("_ZdaPvmSt11align_val_t", AllocFn::OperatorDelete),
    ("_ZdlPvRKSt9nothrow_t", AllocFn::OperatorDelete),
    ("_ZdaPvRKSt9nothrow_t", AllocFn::OperatorDelete),
    (
        "_ZdlPvSt11align_val_tRKSt9nothrow_t",
        AllocFn::OperatorDelete,
    ),
    (
        "_ZdaPvSt11align_val_tRKSt9nothrow_t",
        AllocFn::OperatorDelete,
    ),
];

#[derive(Debug, Error)]
pub enum UprobeError {
    #[error("reading the symbols of {path}")]
    Symbols {
        path: PathBuf,
        #[source]
        source: blazesym::Error,
    },
    #[error("eBPF program {0} is missing or not a uprobe")]
    Program(&'static str),
    #[error("loading eBPF program {program}")]
    Load {
        program: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("loading the allocator programs")]
    MultiLoad(#[from] MultiError),
    #[error("attaching the allocator probes of {path}")]
    Multi {
        path: PathBuf,
        #[source]
        source: Box<MultiError>,
    },
    #[error("attaching to {symbol} in {path}")]
    Attach {
        symbol: String,
        path: PathBuf,
        #[source]
        source: Box<ProgramError>,
    },
}

/// One allocator function found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocatorSymbol {
    pub symbol: &'static str,
    pub func: AllocFn,
    /// File offset of the function's first byte.
    pub entry: u64,
    /// File offset the probe goes to (see [`probe_offset`]).
    pub probe: u64,
}

/// The family's functions that `path` defines, one per address (aliases such as glibc's
/// `memalign`/`aligned_alloc` share one probe, reported under the first name in [`SYMBOLS`]).
pub fn find_allocator(path: &Path) -> Result<Vec<AllocatorSymbol>, UprobeError> {
    let inspector = Inspector::new();
    let mut elf = Elf::new(path);
    elf.debug_syms = false;
    let src = Source::Elf(elf);
    let names: Vec<&str> = SYMBOLS.iter().map(|(n, _)| *n).collect();
    let found = inspector
        .lookup(&src, &names)
        .map_err(|source| UprobeError::Symbols {
            path: path.to_path_buf(),
            source,
        })?;
    let mut file = File::open(path).ok();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for ((symbol, func), infos) in SYMBOLS.iter().zip(found) {
        for info in infos {
            let (SymType::Function, Some(entry)) = (info.sym_type, info.file_offset) else {
                continue;
            };
            if entry == 0 || !seen.insert(entry) {
                continue;
            }
            let mut code = [0u8; 32];
            let read = file.as_mut().is_some_and(|f| {
                f.seek(SeekFrom::Start(entry)).is_ok() && f.read_exact(&mut code).is_ok()
            });
            let probe = if read {
                entry + probe_offset(&code)
            } else {
                entry
            };
            out.push(AllocatorSymbol {
                symbol,
                func: *func,
                entry,
                probe,
            });
        }
    }
    Ok(out)
}

/// How far into a function, starting with `code`, its probe can go.
///
/// The kernel emulates a few x86 instructions at a uprobe (push of a register, relative jumps
/// and calls, conditional jumps, nops) and single-steps all others out of line, which costs
/// several times more. Instructions that only set flags (`test`, `cmp`, `endbr64`) can be
/// stepped over: the registers holding the arguments and the stack pointer, with the return
/// address at its top, are the same after them. So the probe moves past such instructions onto
/// the first emulated one; if none comes within four instructions, it stays at the entry.
pub fn probe_offset(code: &[u8]) -> u64 {
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    for _ in 0..4 {
        if !decoder.can_decode() {
            break;
        }
        let insn = decoder.decode();
        if insn.is_invalid() {
            break;
        }
        let emulated = insn.is_jcc_short_or_near()
            || insn.is_jmp_short_or_near()
            || insn.is_call_near()
            || insn.mnemonic() == Mnemonic::Nop
            || (insn.mnemonic() == Mnemonic::Push
                && insn.op0_kind() == OpKind::Register
                && insn.op0_register().is_gpr64());
        if emulated {
            return insn.ip();
        }
        let flags_only = matches!(
            insn.mnemonic(),
            Mnemonic::Test | Mnemonic::Cmp | Mnemonic::Endbr64
        ) && (0..insn.op_count())
            .all(|i| insn.op_kind(i) != OpKind::Register || insn.op_register(i) != Register::RSP);
        if !flags_only {
            break;
        }
    }
    0
}

/// How allocator probes are attached, best first. `Auto` takes the best the kernel accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum UprobeLinks {
    #[default]
    Auto,
    /// One multi-uprobe link per file and kind; one program for entry and return (Linux 6.13+).
    Session,
    /// Multi-uprobe links, separate entry and return programs (Linux 6.6+).
    Multi,
    /// One perf-event uprobe per function and program (any kernel with uprobes).
    Single,
}

impl UprobeLinks {
    pub fn name(self) -> &'static str {
        match self {
            UprobeLinks::Auto => "auto",
            UprobeLinks::Session => "session",
            UprobeLinks::Multi => "multi",
            UprobeLinks::Single => "single",
        }
    }
}

/// The allocator programs, loaded for the way they attach.
enum Backend {
    Session {
        alloc: OwnedFd,
        free: OwnedFd,
    },
    Multi {
        enter: OwnedFd,
        exit: OwnedFd,
        free: OwnedFd,
    },
    Single,
}

impl Backend {
    /// Loads the programs for `wanted`, or with `Auto` for the best the kernel accepts.
    fn load(loader: &MultiLoader, wanted: UprobeLinks) -> Result<Backend, MultiError> {
        let session = || -> Result<Backend, MultiError> {
            Ok(Backend::Session {
                alloc: loader.load(SESSION, MultiKind::Session)?,
                free: loader.load(FREE, MultiKind::Entry)?,
            })
        };
        let multi = || -> Result<Backend, MultiError> {
            Ok(Backend::Multi {
                enter: loader.load(ENTER, MultiKind::Entry)?,
                exit: loader.load(EXIT, MultiKind::Return)?,
                free: loader.load(FREE, MultiKind::Entry)?,
            })
        };
        match wanted {
            UprobeLinks::Session => session(),
            UprobeLinks::Multi => multi(),
            UprobeLinks::Single => Ok(Backend::Single),
            UprobeLinks::Auto => session()
                .or_else(|e| {
                    log::debug!("no uprobe sessions: {e}");
                    multi()
                })
                .or_else(|e| {
                    log::debug!("no multi-uprobe links: {e}");
                    Ok(Backend::Single)
                }),
        }
    }

    fn links(&self) -> UprobeLinks {
        match self {
            Backend::Session { .. } => UprobeLinks::Session,
            Backend::Multi { .. } => UprobeLinks::Multi,
            Backend::Single => UprobeLinks::Single,
        }
    }
}

/// The attached allocator probes of one session.
pub struct AllocatorProbes {
    probed: HashSet<PathBuf>,
    backend: Backend,
    single_loaded: bool,
    links: Vec<MultiLink>,
    /// Each attached function, for diagnostics: (file, symbol).
    pub attached: Vec<(PathBuf, &'static str)>,
}

const ENTER: &str = "alloc_enter";
const EXIT: &str = "alloc_exit";
const SESSION: &str = "alloc_session";
const FREE: &str = "free_enter";

fn uprobe<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut UProbe, UprobeError> {
    ebpf.program_mut(name)
        .and_then(|p| <&mut UProbe>::try_from(p).ok())
        .ok_or(UprobeError::Program(name))
}

impl AllocatorProbes {
    /// Loads the allocator programs of `object` (the bytes `ebpf` was loaded from) for the
    /// links `wanted`. Call it before any map is taken out of `ebpf`.
    pub fn load(object: &[u8], ebpf: &Ebpf, wanted: UprobeLinks) -> Result<Self, UprobeError> {
        let backend = match wanted {
            UprobeLinks::Single => Backend::Single,
            _ => match MultiLoader::new(object, ebpf) {
                Ok(loader) => Backend::load(&loader, wanted)?,
                Err(e) if wanted == UprobeLinks::Auto => {
                    log::debug!("tracer's own loader failed, using aya's uprobes: {e}");
                    Backend::Single
                }
                Err(e) => return Err(e.into()),
            },
        };
        log::debug!(
            "allocator probes attach as {} links",
            backend.links().name()
        );
        Ok(AllocatorProbes {
            probed: HashSet::new(),
            backend,
            single_loaded: false,
            links: Vec::new(),
            attached: Vec::new(),
        })
    }

    /// How the probes are attached.
    pub fn links(&self) -> UprobeLinks {
        self.backend.links()
    }

    /// The files whose functions were attached, in the order they were probed.
    pub fn files(&self) -> Vec<String> {
        let mut files: Vec<String> = Vec::new();
        for (path, _) in &self.attached {
            let path = path.display().to_string();
            if !files.contains(&path) {
                files.push(path);
            }
        }
        files
    }

    /// Detaches every probe now, the multi-uprobe links in parallel: each waits for a grace
    /// period of its own, and the waits overlap.
    pub fn detach(&mut self) {
        let links = std::mem::take(&mut self.links);
        if links.len() <= 1 {
            return;
        }
        std::thread::scope(|scope| {
            for link in links {
                scope.spawn(move || drop(link));
            }
        });
    }

    /// Probes every allocator function of the file the process calls `shown`, read through
    /// `via`, for process `pid` only. Returns how many functions were attached (0 for files
    /// without any).
    pub fn attach_file(
        &mut self,
        ebpf: &mut Ebpf,
        shown: &Path,
        via: &Path,
        pid: u32,
    ) -> Result<usize, UprobeError> {
        let files = [(shown.to_path_buf(), via.to_path_buf())];
        let (attached, mut errors) = self.attach_files(ebpf, &files, pid, &|| false);
        match errors.pop() {
            Some((_, e)) => Err(e),
            None => Ok(attached),
        }
    }

    /// Probes the allocator functions of every file in `files` (the process's path, and where
    /// we read it: see [`crate::target::TargetFiles`]), releasing functions first in
    /// all of them (free and delete, then realloc, then the rest): a block allocated once
    /// probing began always has its release seen, so nothing looks live that is not. Stops
    /// early when `stop` says so. Returns how many functions were attached, and the files that
    /// failed with why (a failure to load the programs ends it).
    pub fn attach_files(
        &mut self,
        ebpf: &mut Ebpf,
        files: &[(PathBuf, PathBuf)],
        pid: u32,
        stop: &dyn Fn() -> bool,
    ) -> (usize, Vec<(PathBuf, UprobeError)>) {
        let mut errors = Vec::new();
        let mut found = Vec::new();
        for (shown, via) in files {
            if !self.probed.insert(shown.clone()) {
                continue;
            }
            match find_allocator(via) {
                Ok(symbols) if !symbols.is_empty() => found.push((shown, via, symbols)),
                Ok(_) => {}
                Err(e) => errors.push((shown.clone(), e)),
            }
        }
        if found.is_empty() {
            return (0, errors);
        }
        if let Err(e) = self.load_single(ebpf) {
            errors.push((found[0].0.clone(), e));
            return (0, errors);
        }
        let scope = NonZeroU32::new(pid).map_or(UProbeScope::AllProcesses, UProbeScope::OneProcess);
        let mut attached = 0;
        let rank = |f: AllocFn| match f {
            _ if f.is_free() => 0,
            AllocFn::Realloc | AllocFn::Reallocarray => 1,
            _ => 2,
        };
        for phase in 0..3 {
            for (shown, via, symbols) in &found {
                if stop() {
                    return (attached, errors);
                }
                let symbols: Vec<&AllocatorSymbol> =
                    symbols.iter().filter(|s| rank(s.func) == phase).collect();
                if symbols.is_empty() {
                    continue;
                }
                if matches!(self.backend, Backend::Single) {
                    for sym in symbols {
                        match self.attach_single(ebpf, shown, via, sym, scope) {
                            Ok(()) => attached += 1,
                            Err(e) => errors.push(((*shown).clone(), e)),
                        }
                    }
                } else {
                    match self.attach_multi(shown, via, &symbols, pid) {
                        Ok(()) => attached += symbols.len(),
                        Err(e) => errors.push(((*shown).clone(), e)),
                    }
                }
            }
        }
        (attached, errors)
    }

    /// Attaches `symbols` of one file as multi-uprobe links.
    fn attach_multi(
        &mut self,
        shown: &Path,
        via: &Path,
        symbols: &[&AllocatorSymbol],
        pid: u32,
    ) -> Result<(), UprobeError> {
        let offsets: Vec<u64> = symbols.iter().map(|s| s.probe).collect();
        let cookies: Vec<u64> = symbols.iter().map(|s| s.func as u64).collect();
        let releasing = symbols[0].func.is_free();
        let programs: Vec<(BorrowedFd<'_>, MultiKind)> = match &self.backend {
            Backend::Session { free, .. } | Backend::Multi { free, .. } if releasing => {
                vec![(free.as_fd(), MultiKind::Entry)]
            }
            Backend::Session { alloc, .. } => vec![(alloc.as_fd(), MultiKind::Session)],
            // The return probe first: an entry seen without it would leave state behind.
            Backend::Multi { enter, exit, .. } => vec![
                (exit.as_fd(), MultiKind::Return),
                (enter.as_fd(), MultiKind::Entry),
            ],
            Backend::Single => unreachable!("single uprobes attach one by one"),
        };
        let mut links = Vec::new();
        for (program, kind) in programs {
            let link = MultiLink::attach(program, kind, via, &offsets, &cookies, pid).map_err(
                |source| UprobeError::Multi {
                    path: shown.to_path_buf(),
                    source: Box::new(source),
                },
            )?;
            links.push(link);
        }
        self.links.extend(links);
        self.attached
            .extend(symbols.iter().map(|s| (shown.to_path_buf(), s.symbol)));
        Ok(())
    }

    fn load_single(&mut self, ebpf: &mut Ebpf) -> Result<(), UprobeError> {
        if matches!(self.backend, Backend::Single) && !self.single_loaded {
            for name in [ENTER, EXIT, FREE] {
                uprobe(ebpf, name)?
                    .load()
                    .map_err(|source| UprobeError::Load {
                        program: name,
                        source: Box::new(source),
                    })?;
            }
            self.single_loaded = true;
        }
        Ok(())
    }

    fn attach_single(
        &mut self,
        ebpf: &mut Ebpf,
        shown: &Path,
        via: &Path,
        sym: &AllocatorSymbol,
        scope: UProbeScope,
    ) -> Result<(), UprobeError> {
        let programs: &[&'static str] = if sym.func.is_free() {
            &[FREE]
        } else {
            // The return probe first: an entry seen without it would leave state behind.
            &[EXIT, ENTER]
        };
        for &program in programs {
            let point = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(sym.probe),
                cookie: Some(sym.func as u64),
            };
            uprobe(ebpf, program)?
                .attach(point, via, scope)
                .map_err(|source| UprobeError::Attach {
                    symbol: sym.symbol.to_string(),
                    path: shown.to_path_buf(),
                    source: Box::new(source),
                })?;
        }
        self.attached.push((shown.to_path_buf(), sym.symbol));
        Ok(())
    }
}

/// The shared libraries a dynamically linked `program` will load, as its dynamic loader
/// resolves them (`ld.so --list`, what `ldd` runs), with the process's environment.
///
/// The loader gets two seconds: a library path of the program's that leads to a FIFO must not
/// hang us (what it did not list is still found when it is mapped).
pub fn needed_libraries(loader: &Path, program: &Path) -> Vec<PathBuf> {
    use std::{io::Read, process::Stdio, time::Duration};
    let Ok(mut child) = std::process::Command::new(loader)
        .arg("--list")
        .arg(program)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return Vec::new();
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut text = String::new();
    if status.is_some_and(|s| s.success())
        && let Some(mut out) = child.stdout.take()
    {
        let _ = out.read_to_string(&mut text);
    }
    parse_ld_list(&text)
}

/// Paths in `ld.so --list` output: `libc.so.6 => /lib/.../libc.so.6 (0x...)` or
/// `/lib64/ld-linux-x86-64.so.2 (0x...)`.
pub fn parse_ld_list(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_moves_past_flag_setting_instructions_onto_emulated_ones() {
        // glibc free: test %rdi,%rdi; je ...; push %rbp
        let free = [0x48, 0x85, 0xff, 0x0f, 0x84, 0xbf, 0, 0, 0, 0x55];
        assert_eq!(probe_offset(&free), 3);
        // glibc malloc: push %r12 is emulated already.
        assert_eq!(probe_offset(&[0x41, 0x54, 0x55, 0x53]), 0);
        // endbr64; push %rbp
        assert_eq!(probe_offset(&[0xf3, 0x0f, 0x1e, 0xfa, 0x55]), 4);
        // cmpb $0,0x140e71(%rip); je ...
        let memalign = [0x80, 0x3d, 0x71, 0x0e, 0x14, 0, 0, 0x74, 0x07];
        assert_eq!(probe_offset(&memalign), 7);
        // mov %rdi,%rbx changes state: stay at the entry.
        assert_eq!(probe_offset(&[0x48, 0x89, 0xfb, 0x55]), 0);
        // sub $0x18,%rsp moves the stack: stay.
        assert_eq!(probe_offset(&[0x48, 0x83, 0xec, 0x18, 0x55]), 0);
        // Garbage or nothing: stay.
        assert_eq!(probe_offset(&[]), 0);
        assert_eq!(probe_offset(&[0x0f, 0x0b]), 0);
    }

    #[test]
    fn parses_loader_list() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd3a5f2000)\n\
                    \tlibstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f1b2a000000)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f1b29e1f000)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f1b2a2c6000)\n\
                    \tlibmissing.so => not found\n";
        assert_eq!(
            parse_ld_list(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libstdc++.so.6"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn finds_glibc_allocator() {
        let libc = needed_libraries(
            Path::new("/lib64/ld-linux-x86-64.so.2"),
            Path::new("/bin/true"),
        )
        .into_iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libc.so"))
        })
        .expect("true links libc");
        let syms = find_allocator(&libc).unwrap();
        let names: Vec<&str> = syms.iter().map(|s| s.symbol).collect();
        for name in [
            "malloc",
            "calloc",
            "realloc",
            "free",
            "posix_memalign",
            "valloc",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        let free = syms.iter().find(|s| s.symbol == "free").unwrap();
        assert!(free.probe >= free.entry && free.probe < free.entry + 16);
        // One probe per address.
        let mut entries: Vec<u64> = syms.iter().map(|s| s.entry).collect();
        entries.dedup();
        assert_eq!(entries.len(), syms.len());
    }
}
