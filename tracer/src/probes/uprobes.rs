//! Finding the allocator in a process's files and attaching the allocator uprobes to it.
//!
//! Any file that defines one of the family's names is probed: glibc, libstdc++ (operator
//! new/delete), a statically linked program, or jemalloc/tcmalloc/mimalloc exporting `malloc`.
//! Each probe's offset is chosen by decoding the function's first instructions (see
//! [`super::offset`]): a uprobe on an instruction the kernel must single-step costs about four
//! times one it emulates.

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
use thiserror::Error;
use tracer_common::AllocFn;

use super::{
    multi::{MultiError, MultiKind, MultiLink, MultiLoader},
    offset::{arguments_read, probe_offset},
};

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

/// The most of a function's body read to place its probe.
const MAX_BODY: usize = 16 << 10;

/// Fills as much of `buf` as the file has; false when it has none of it.
fn read_some(file: &mut File, buf: &mut Vec<u8>) -> bool {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    buf.truncate(got);
    got > 0
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
            // The whole body, for the branches into its first instructions.
            let len = info.size.unwrap_or(MAX_BODY).clamp(16, MAX_BODY);
            let mut code = vec![0u8; len];
            let read = file
                .as_mut()
                .is_some_and(|f| f.seek(SeekFrom::Start(entry)).is_ok() && read_some(f, &mut code));
            let probe = if read {
                entry + probe_offset(&code, arguments_read(*func))
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

/// A probed file: by device and inode, so that one file reached by two paths (`/lib/…` and
/// `/usr/lib/…` on a merged /usr, as the loader and /proc name it) is probed once: probed
/// twice, every call would be seen twice.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ProbedFile {
    Inode(u64, u64),
    /// Where the file's metadata could not be read.
    Path(PathBuf),
}

impl ProbedFile {
    fn of(shown: &Path, via: &Path) -> Self {
        use std::os::unix::fs::MetadataExt as _;
        match std::fs::metadata(via) {
            Ok(m) => ProbedFile::Inode(m.dev(), m.ino()),
            Err(_) => ProbedFile::Path(shown.to_path_buf()),
        }
    }
}

/// The attached allocator probes of one session.
pub struct AllocatorProbes {
    probed: HashSet<ProbedFile>,
    backend: Backend,
    single_loaded: bool,
    links: Vec<MultiLink>,
    /// Each attached function, for diagnostics: (file, symbol).
    pub attached: Vec<(PathBuf, &'static str)>,
    /// Whether `_exit` is probed too, to hold processes for their leak check at exit.
    exit_probe: bool,
}

impl AllocatorProbes {
    /// The programs tracer loaded itself for the links, by name (none with single uprobes,
    /// which aya loads).
    pub fn own_programs(&self) -> Vec<(&'static str, BorrowedFd<'_>)> {
        match &self.backend {
            Backend::Session { alloc, free } => {
                vec![(SESSION, alloc.as_fd()), (FREE, free.as_fd())]
            }
            Backend::Multi { enter, exit, free } => vec![
                (ENTER, enter.as_fd()),
                (EXIT, exit.as_fd()),
                (FREE, free.as_fd()),
            ],
            Backend::Single => Vec::new(),
        }
    }
}

const ENTER: &str = "alloc_enter";
const EXIT: &str = "alloc_exit";
const SESSION: &str = "alloc_session";
const FREE: &str = "free_enter";
/// Every allocator program.
pub const PROGRAMS: [&str; 4] = [ENTER, EXIT, SESSION, FREE];

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
            exit_probe: false,
        })
    }

    /// From now on every probed file that defines `_exit` has it probed too (see
    /// [`super::exit`]).
    pub fn probe_exit(&mut self) {
        self.exit_probe = true;
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
    /// we read it: see [`crate::process::target::TargetFiles`]), releasing functions first in
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
            if !self.probed.insert(ProbedFile::of(shown, via)) {
                continue;
            }
            match find_allocator(via) {
                Ok(symbols) if !symbols.is_empty() => {
                    self.attach_exit(ebpf, shown, via, pid, &mut errors);
                    found.push((shown, via, symbols));
                }
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

    /// The `_exit` probe of a file with allocator functions, when asked for and defined.
    fn attach_exit(
        &mut self,
        ebpf: &mut Ebpf,
        shown: &Path,
        via: &Path,
        pid: u32,
        errors: &mut Vec<(PathBuf, UprobeError)>,
    ) {
        if !self.exit_probe {
            return;
        }
        let Some(offset) = super::exit::find_exit(via) else {
            return;
        };
        let scope = NonZeroU32::new(pid).map_or(UProbeScope::AllProcesses, UProbeScope::OneProcess);
        match super::exit::attach_exit(ebpf, shown, via, offset, scope) {
            Ok(()) => self.attached.push((shown.to_path_buf(), "_exit")),
            Err(e) => errors.push((shown.to_path_buf(), e)),
        }
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
        log::debug!(
            "{}: {} allocator functions probed (read at {})",
            shown.display(),
            symbols.len(),
            via.display()
        );
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
    needed_libraries_with(loader, program, &[])
}

/// As [`needed_libraries`], with the program's own loader variables (`LD_PRELOAD`,
/// `LD_LIBRARY_PATH`) set as it will see them.
pub fn needed_libraries_with(
    loader: &Path,
    program: &Path,
    env: &[(String, String)],
) -> Vec<PathBuf> {
    use std::{io::Read, process::Stdio, time::Duration};
    let Ok(mut child) = std::process::Command::new(loader)
        .arg("--list")
        .arg(program)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
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

    /// jemalloc's `free` starts with eleven register instructions the kernel would single-step;
    /// its probe goes past them onto its first branch.
    #[test]
    fn jemalloc_free_is_probed_on_an_emulated_instruction() {
        let lib = Path::new("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2");
        assert!(lib.exists(), "cargo xtask test installs libjemalloc2");
        let syms = find_allocator(lib).unwrap();
        for name in ["malloc", "free", "calloc", "realloc"] {
            let sym = syms.iter().find(|s| s.symbol == name).unwrap();
            let mut code = [0u8; 16];
            let mut f = File::open(lib).unwrap();
            f.seek(SeekFrom::Start(sym.probe)).unwrap();
            f.read_exact(&mut code).unwrap();
            let insn = iced_x86::Decoder::new(64, &code, 0).decode();
            assert!(
                insn.is_jcc_short_or_near()
                    || insn.is_jmp_short_or_near()
                    || insn.is_call_near()
                    || insn.mnemonic() == iced_x86::Mnemonic::Push,
                "{name} probed at +{:#x} on {:?}",
                sym.probe - sym.entry,
                insn.mnemonic()
            );
        }
        let free = syms.iter().find(|s| s.symbol == "free").unwrap();
        assert!(free.probe > free.entry, "free is probed past its entry");
    }
}
