//! Multi-uprobe links and uprobe sessions through the raw `bpf()` syscall.
//!
//! aya 0.14 attaches a uprobe as one perf event per function, and each detach waits for an RCU
//! tasks-trace grace period, one after another: seconds for the allocator family. The kernel's
//! multi-uprobe links (Linux 6.6+) attach every function of one file as one link, detached with
//! one grace period; uprobe sessions (Linux 6.13+) run one program at entry and, only when the
//! entry asks for it, at return. aya 0.14 can neither load a program for these attach types
//! (the type is fixed at load, `expected_attach_type`) nor create the links, so this module
//! does both with two commands of the syscall, `BPF_PROG_LOAD` and `BPF_LINK_CREATE`.
//!
//! The programs come from the same object aya loaded, relocated against aya's maps (so they
//! share the ring, the stack map, the state maps and the configuration), with aya-obj's own
//! relocation passes. When the kernel refuses, the caller falls back to aya's uprobes.
//!
//! The object's BTF is loaded too (`BPF_BTF_LOAD`) and each program given its `func_info`:
//! the kernel requires it of a program with callbacks (the unwinder's `bpf_loop` step), and
//! without it such a program is refused and the allocator probes fall back to slow single
//! uprobes.

use std::{
    collections::HashSet,
    ffi::CString,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    os::unix::ffi::OsStrExt,
    path::Path,
};

use aya::{Ebpf, maps::Map};
use thiserror::Error;

/// `enum bpf_attach_type` values (uapi: fixed forever once released).
const BPF_TRACE_UPROBE_MULTI: u32 = 48;
const BPF_TRACE_UPROBE_SESSION: u32 = 57;
/// `link_create.uprobe_multi.flags`: the link is for the functions' returns.
const BPF_F_UPROBE_MULTI_RETURN: u32 = 1;
const BPF_PROG_TYPE_KPROBE: u32 = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_BTF_LOAD: libc::c_long = 18;
const BPF_LINK_CREATE: libc::c_long = 28;

/// How a program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiKind {
    /// At the functions' entries.
    Entry,
    /// At their returns.
    Return,
    /// At entry, and at return when the entry returned 0.
    Session,
}

impl MultiKind {
    fn attach_type(self) -> u32 {
        match self {
            MultiKind::Entry | MultiKind::Return => BPF_TRACE_UPROBE_MULTI,
            MultiKind::Session => BPF_TRACE_UPROBE_SESSION,
        }
    }
}

#[derive(Debug, Error)]
pub enum MultiError {
    #[error("parsing the eBPF object: {0}")]
    Parse(String),
    #[error("relocating the eBPF object: {0}")]
    Relocate(String),
    #[error("the eBPF object has no program {0}")]
    Missing(String),
    #[error("map {0} of the eBPF object was not created")]
    MissingMap(String),
    #[error("the kernel refused program {program} for {kind:?} attachment: {source}{log}")]
    Load {
        program: String,
        kind: MultiKind,
        source: io::Error,
        log: String,
    },
    #[error("attaching {count} probes to {path}: {source}")]
    Attach {
        path: String,
        count: usize,
        source: io::Error,
    },
}

/// The `BPF_PROG_LOAD` fields this loader sets (a prefix of `union bpf_attr`).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    pad: u32,
}
const _: () = assert!(size_of::<ProgLoadAttr>() == 112);

/// The `BPF_BTF_LOAD` fields.
#[repr(C)]
#[derive(Default)]
struct BtfLoadAttr {
    btf: u64,
    btf_log_buf: u64,
    btf_size: u32,
    btf_log_size: u32,
    btf_log_level: u32,
    pad: u32,
}
const _: () = assert!(size_of::<BtfLoadAttr>() == 32);

/// The `BPF_LINK_CREATE` fields for a multi-uprobe link.
#[repr(C)]
#[derive(Default)]
struct UprobeMultiAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    path: u64,
    offsets: u64,
    ref_ctr_offsets: u64,
    cookies: u64,
    cnt: u32,
    multi_flags: u32,
    pid: u32,
    pad: u32,
}
const _: () = assert!(size_of::<UprobeMultiAttr>() == 64);

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<RawFd> {
    // SAFETY: `attr` is a live, initialized prefix of `union bpf_attr` of the size passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as RawFd)
    }
}

/// The eBPF object, relocated against the maps aya created for it.
pub struct MultiLoader {
    obj: aya_obj::Object,
    /// The object's BTF, loaded into the kernel (absent when the kernel has none or refused
    /// it: programs then load without `func_info`, and those with callbacks are refused).
    btf: Option<OwnedFd>,
}

/// Loads the BTF of `obj`, fixed up for what this kernel supports, as aya does for its own
/// programs.
fn load_btf(obj: &mut aya_obj::Object) -> Option<OwnedFd> {
    let features = aya::features().btf()?;
    let bytes = match obj.fixup_and_sanitize_btf(features) {
        Ok(Some(btf)) => btf.to_bytes(),
        Ok(None) => return None,
        Err(e) => {
            log::debug!("the eBPF object's BTF could not be fixed up: {e}");
            return None;
        }
    };
    let mut attr = BtfLoadAttr {
        btf: bytes.as_ptr() as u64,
        btf_size: bytes.len() as u32,
        ..Default::default()
    };
    match bpf(BPF_BTF_LOAD, &mut attr) {
        // SAFETY: a new descriptor the kernel just returned to us.
        Ok(fd) => Some(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(e) => {
            log::debug!("the kernel refused the eBPF object's BTF: {e}");
            None
        }
    }
}

impl MultiLoader {
    /// Relocates `object` (the bytes aya loaded into `ebpf`) against `ebpf`'s maps. Call it
    /// before any map is taken out of `ebpf`.
    pub fn new(object: &[u8], ebpf: &Ebpf) -> Result<Self, MultiError> {
        let mut obj =
            aya_obj::Object::parse(object).map_err(|e| MultiError::Parse(e.to_string()))?;
        let btf = load_btf(&mut obj);
        let mut fds = Vec::new();
        for (name, map) in ebpf.maps() {
            let fd = map_fd(map).ok_or_else(|| MultiError::MissingMap(name.to_string()))?;
            fds.push((name.to_string(), fd.as_raw_fd()));
        }
        let mut maps = Vec::new();
        for (name, fd) in &fds {
            let map = obj
                .maps
                .get(name)
                .ok_or_else(|| MultiError::MissingMap(name.clone()))?;
            maps.push((name.as_str(), *fd, map.clone()));
        }
        let text: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
        obj.relocate_maps(maps.iter().map(|(n, fd, m)| (*n, *fd, m)), &text)
            .map_err(|e| MultiError::Relocate(e.to_string()))?;
        obj.relocate_calls(&text)
            .map_err(|e| MultiError::Relocate(e.to_string()))?;
        Ok(MultiLoader { obj, btf })
    }

    /// Loads program `name` for attachments of `kind`.
    pub fn load(&self, name: &str, kind: MultiKind) -> Result<OwnedFd, MultiError> {
        let program = self
            .obj
            .programs
            .get(name)
            .ok_or_else(|| MultiError::Missing(name.to_string()))?;
        let function = self
            .obj
            .functions
            .get(&program.function_key())
            .ok_or_else(|| MultiError::Missing(name.to_string()))?;
        let mut prog_name = [0u8; 16];
        for (slot, b) in prog_name.iter_mut().zip(name.bytes().take(15)) {
            *slot = b;
        }
        let license = program.license.clone();
        let func_info = function.func_info.func_info_bytes();
        let attempt = |log: &mut [u8]| {
            let mut attr = ProgLoadAttr {
                prog_type: BPF_PROG_TYPE_KPROBE,
                insn_cnt: function.instructions.len() as u32,
                insns: function.instructions.as_ptr() as u64,
                license: license.as_ptr() as u64,
                prog_name,
                expected_attach_type: kind.attach_type(),
                ..Default::default()
            };
            if let Some(btf) = &self.btf
                && function.func_info_rec_size > 0
            {
                attr.prog_btf_fd = btf.as_raw_fd() as u32;
                attr.func_info_rec_size = function.func_info_rec_size as u32;
                attr.func_info = func_info.as_ptr() as u64;
                attr.func_info_cnt = function.func_info.len() as u32;
            }
            if !log.is_empty() {
                attr.log_level = 1;
                attr.log_size = log.len() as u32;
                attr.log_buf = log.as_mut_ptr() as u64;
            }
            bpf(BPF_PROG_LOAD, &mut attr)
        };
        let started = std::time::Instant::now();
        let first = attempt(&mut []);
        log::debug!("{name}: verified in {:?}", started.elapsed());
        match first {
            // SAFETY: a new descriptor the kernel just returned to us.
            Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(source) => {
                // Again with the verifier's log, for the message.
                let mut log = vec![0u8; 1 << 20];
                let log = match attempt(&mut log) {
                    Ok(fd) => {
                        // SAFETY: as above; it loaded this time.
                        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                    Err(_) => {
                        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                        let text = String::from_utf8_lossy(&log[..end]);
                        let tail: Vec<&str> = text.lines().rev().take(8).collect();
                        if tail.is_empty() {
                            String::new()
                        } else {
                            let tail: Vec<&str> = tail.into_iter().rev().collect();
                            format!("\n{}", tail.join("\n"))
                        }
                    }
                };
                Err(MultiError::Load {
                    program: name.to_string(),
                    kind,
                    source,
                    log,
                })
            }
        }
    }
}

/// One multi-uprobe link: detached, all its probes at once, when dropped.
pub struct MultiLink {
    fd: OwnedFd,
}

impl MultiLink {
    /// Attaches `program` (loaded for `kind`) at every file offset of `offsets` in the file at
    /// `path`, each with its cookie, firing for process `pid` only (0: every process).
    pub fn attach(
        program: BorrowedFd<'_>,
        kind: MultiKind,
        path: &Path,
        offsets: &[u64],
        cookies: &[u64],
        pid: u32,
    ) -> Result<Self, MultiError> {
        assert_eq!(offsets.len(), cookies.len());
        let error = |source| MultiError::Attach {
            path: path.display().to_string(),
            count: offsets.len(),
            source,
        };
        let cpath = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| error(io::Error::from(io::ErrorKind::InvalidInput)))?;
        let mut attr = UprobeMultiAttr {
            prog_fd: program.as_raw_fd() as u32,
            attach_type: kind.attach_type(),
            path: cpath.as_ptr() as u64,
            offsets: offsets.as_ptr() as u64,
            cookies: cookies.as_ptr() as u64,
            cnt: offsets.len() as u32,
            multi_flags: if kind == MultiKind::Return {
                BPF_F_UPROBE_MULTI_RETURN
            } else {
                0
            },
            pid,
            ..Default::default()
        };
        let fd = bpf(BPF_LINK_CREATE, &mut attr).map_err(error)?;
        Ok(MultiLink {
            // SAFETY: a new descriptor the kernel just returned to us.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }
}

impl AsFd for MultiLink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The descriptor of one of aya's maps, for the map kinds tracer's object has.
pub(crate) fn map_fd(map: &Map) -> Option<BorrowedFd<'_>> {
    let (Map::Array(data)
    | Map::HashMap(data)
    | Map::LruHashMap(data)
    | Map::PerCpuArray(data)
    | Map::PerCpuHashMap(data)
    | Map::PerCpuLruHashMap(data)
    | Map::RingBuf(data)
    | Map::StackTraceMap(data)
    | Map::Unsupported(data)) = map
    else {
        return None;
    };
    Some(data.fd().as_fd())
}
