//! Where a report may be written, decided before anything runs, and writing it there safely.
//!
//! `tracer` runs as root next to programs it does not trust, so an output path is never taken
//! at its word:
//! - `-`, `/dev/stdout`, `/dev/fd/N` and `/proc/self/fd/N` write to our own descriptor, as a
//!   shell redirection would (sharing its offset);
//! - an existing character device or FIFO (`/dev/null`, a named pipe) is written through,
//!   never replaced;
//! - a regular file is replaced atomically: written to a temporary file created with
//!   `O_CREAT|O_EXCL|O_NOFOLLOW` under an unpredictable name in the same directory, then
//!   renamed over the target (which replaces a symlink planted there instead of following it);
//!   the temporary file is removed on any failure;
//! - a symlink at the path is followed only when it belongs to root or to the invoking user
//!   (the rule of the kernel's `protected_symlinks`), otherwise refused;
//! - under `sudo`, files and directories we create belong to the invoking user.

use std::{
    ffi::{CString, OsStr, OsString},
    fs::{self, File},
    io::{self, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{
            ffi::OsStrExt,
            fs::{FileTypeExt, MetadataExt},
        },
    },
    path::{Path, PathBuf},
    time::Duration,
};

use thiserror::Error;

use crate::process::sudo_user;

#[derive(Debug, Error)]
pub enum DestError {
    #[error("{path}: the directory {dir} does not exist")]
    NoDirectory { path: PathBuf, dir: PathBuf },
    #[error("{path}: {dir} is not a directory")]
    ParentNotDirectory { path: PathBuf, dir: PathBuf },
    #[error("{path} is a directory; give a file name")]
    IsDirectory { path: PathBuf },
    #[error("{path} exists and is not a directory")]
    NotDirectory { path: PathBuf },
    #[error("{path} is a {kind}; refusing to write a report there")]
    Unsupported { path: PathBuf, kind: &'static str },
    #[error(
        "{path} is a symlink owned by uid {owner}, neither root nor you: refusing to follow it \
         (remove it, or give another path)"
    )]
    UntrustedSymlink { path: PathBuf, owner: u32 },
    #[error("{path}: too many levels of symlinks")]
    SymlinkLoop { path: PathBuf },
    #[error("{path}: descriptor {fd} is not open")]
    ClosedDescriptor { path: PathBuf, fd: i32 },
    #[error("{path}: {dir} is not writable")]
    NotWritable {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: stdout is a terminal; redirect it to write binary output there")]
    BinaryToTerminal { path: PathBuf },
    #[error("writing {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A checked destination for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// One of our own descriptors: `-` and `/dev/stdout` are 1.
    Fd { fd: i32, shown: PathBuf },
    /// An existing character device or FIFO, written through.
    Through { path: PathBuf, shown: PathBuf },
    /// A regular file (existing or not) replaced atomically: `dir`/`name`.
    File {
        dir: PathBuf,
        name: OsString,
        shown: PathBuf,
    },
}

/// A checked directory (for `--svg`): existing, or to be created in an existing parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestDir {
    pub path: PathBuf,
    pub exists: bool,
    pub shown: PathBuf,
}

impl Dest {
    /// The path as the user gave it.
    pub fn shown(&self) -> &Path {
        match self {
            Dest::Fd { shown, .. } | Dest::Through { shown, .. } | Dest::File { shown, .. } => {
                shown
            }
        }
    }

    pub fn is_stdout(&self) -> bool {
        matches!(self, Dest::Fd { fd: 1, .. })
    }

    /// The destination of a snapshot of this report: a regular file gets `suffix` before its
    /// extension (`out.json` → `out.SUFFIX.json`) in the same checked directory; a descriptor,
    /// device or FIFO is written through again.
    pub fn suffixed(&self, suffix: &str) -> Dest {
        match self {
            Dest::File { dir, name, shown } => {
                let name = suffixed_name(Path::new(name), suffix);
                let shown = shown.with_file_name(&name);
                Dest::File {
                    dir: dir.clone(),
                    name,
                    shown,
                }
            }
            other => other.clone(),
        }
    }
}

/// `stem.SUFFIX.ext`, or `name.SUFFIX` without an extension.
fn suffixed_name(name: &Path, suffix: &str) -> OsString {
    let stem = name.file_stem().unwrap_or(name.as_os_str());
    let mut out = stem.to_os_string();
    out.push(".");
    out.push(suffix);
    if let Some(ext) = name.extension() {
        out.push(".");
        out.push(ext);
    }
    out
}

/// An own-descriptor path: `-`, `/dev/stdout`, `/dev/stderr`, `/dev/fd/N`, `/proc/self/fd/N`.
fn own_fd(path: &Path) -> Option<i32> {
    let text = path.to_str()?;
    match text {
        "-" | "/dev/stdout" => Some(1),
        "/dev/stderr" => Some(2),
        "/dev/stdin" => Some(0),
        _ => text
            .strip_prefix("/dev/fd/")
            .or_else(|| text.strip_prefix("/proc/self/fd/"))
            .or_else(|| text.strip_prefix(&format!("/proc/{}/fd/", std::process::id())))
            .and_then(|n| n.parse().ok()),
    }
}

fn fd_is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD on any integer is harmless; it fails with EBADF when not open.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Follows `path` through trusted symlinks; returns the final path and its metadata, if any.
fn resolve(shown: &Path) -> Result<(PathBuf, Option<fs::Metadata>), DestError> {
    let trusted = sudo_user::trusted_uid();
    let mut path = shown.to_path_buf();
    for _ in 0..16 {
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            // Missing, or under something that is no directory: the parent check says which.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok((path, None));
            }
            Err(source) => {
                return Err(DestError::Io {
                    path: shown.into(),
                    source,
                });
            }
        };
        if !meta.file_type().is_symlink() {
            return Ok((path, Some(meta)));
        }
        if meta.uid() != 0 && meta.uid() != trusted {
            return Err(DestError::UntrustedSymlink {
                path,
                owner: meta.uid(),
            });
        }
        // Magic links under /proc (another process's descriptors) are opened, not read.
        if path.starts_with("/proc") {
            let target = fs::metadata(&path).map_err(|source| DestError::Io {
                path: shown.into(),
                source,
            })?;
            return Ok((path, Some(target)));
        }
        let target = fs::read_link(&path).map_err(|source| DestError::Io {
            path: shown.into(),
            source,
        })?;
        path = parent_of(&path).join(target);
    }
    Err(DestError::SymlinkLoop { path: shown.into() })
}

fn kind_name(ft: fs::FileType) -> &'static str {
    if ft.is_block_device() {
        "block device"
    } else if ft.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

fn check_writable_dir(shown: &Path, dir: &Path) -> Result<(), DestError> {
    match fs::metadata(dir) {
        Err(_) => {
            return Err(DestError::NoDirectory {
                path: shown.into(),
                dir: dir.into(),
            });
        }
        Ok(m) if !m.is_dir() => {
            return Err(DestError::ParentNotDirectory {
                path: shown.into(),
                dir: dir.into(),
            });
        }
        Ok(_) => {}
    }
    let c = CString::new(dir.as_os_str().as_bytes()).map_err(|_| DestError::Io {
        path: shown.into(),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })?;
    // SAFETY: a valid NUL-terminated path; faccessat only reads it.
    let rc = unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::W_OK, libc::AT_EACCESS) };
    if rc != 0 {
        return Err(DestError::NotWritable {
            path: shown.into(),
            dir: dir.into(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Checks where a file report can go; `binary` outputs refuse a terminal.
pub fn check_file(shown: &Path, binary: bool) -> Result<Dest, DestError> {
    if let Some(fd) = own_fd(shown) {
        if !fd_is_open(fd) {
            return Err(DestError::ClosedDescriptor {
                path: shown.into(),
                fd,
            });
        }
        // SAFETY: isatty on an open descriptor.
        if binary && unsafe { libc::isatty(fd) } == 1 {
            return Err(DestError::BinaryToTerminal { path: shown.into() });
        }
        return Ok(Dest::Fd {
            fd,
            shown: shown.into(),
        });
    }
    let (path, meta) = resolve(shown)?;
    match meta {
        None => {}
        Some(m) if m.is_dir() => return Err(DestError::IsDirectory { path: shown.into() }),
        Some(m) if m.file_type().is_char_device() || m.file_type().is_fifo() => {
            return Ok(Dest::Through {
                path,
                shown: shown.into(),
            });
        }
        Some(m) if path.starts_with("/proc") => {
            if !m.is_file() {
                return Err(DestError::Unsupported {
                    path: shown.into(),
                    kind: kind_name(m.file_type()),
                });
            }
            return Ok(Dest::Through {
                path,
                shown: shown.into(),
            });
        }
        Some(m) if !m.is_file() => {
            return Err(DestError::Unsupported {
                path: shown.into(),
                kind: kind_name(m.file_type()),
            });
        }
        Some(_) => {}
    }
    let dir = parent_of(&path);
    check_writable_dir(shown, &dir)?;
    let name = path
        .file_name()
        .map(OsStr::to_os_string)
        .ok_or_else(|| DestError::IsDirectory { path: shown.into() })?;
    Ok(Dest::File {
        dir,
        name,
        shown: shown.into(),
    })
}

/// Checks a directory for `--svg`: an existing directory, or a new one in an existing parent.
pub fn check_dir(shown: &Path) -> Result<DestDir, DestError> {
    let (path, meta) = resolve(shown)?;
    match meta {
        Some(m) if m.is_dir() => {
            check_writable_dir(shown, &path)?;
            Ok(DestDir {
                path,
                exists: true,
                shown: shown.into(),
            })
        }
        Some(_) => Err(DestError::NotDirectory { path: shown.into() }),
        None => {
            check_writable_dir(shown, &parent_of(&path))?;
            Ok(DestDir {
                path,
                exists: false,
                shown: shown.into(),
            })
        }
    }
}

impl DestDir {
    /// A sibling directory for a snapshot: `charts` → `charts.SUFFIX`, created when written.
    pub fn suffixed(&self, suffix: &str) -> DestDir {
        let name = self
            .path
            .file_name()
            .map_or_else(OsString::new, OsStr::to_os_string);
        let mut new = name;
        new.push(".");
        new.push(suffix);
        DestDir {
            path: self.path.with_file_name(&new),
            exists: false,
            shown: self.shown.with_file_name(&new),
        }
    }

    /// Creates the directory if it is new (given to the sudo user), and the destination of
    /// `name` in it.
    pub fn file(&self, name: &str) -> Result<Dest, DestError> {
        if !self.path.is_dir() {
            fs::create_dir(&self.path).map_err(|source| DestError::Io {
                path: self.shown.clone(),
                source,
            })?;
            if let Some((uid, gid)) = sudo_user::sudo_ids() {
                let _ = std::os::unix::fs::lchown(&self.path, Some(uid), Some(gid));
            }
        }
        // A symlink planted at the directory after the check is not followed.
        let meta = fs::symlink_metadata(&self.path).map_err(|source| DestError::Io {
            path: self.shown.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(DestError::NotDirectory {
                path: self.shown.clone(),
            });
        }
        Ok(Dest::File {
            dir: self.path.clone(),
            name: name.into(),
            shown: self.shown.join(name),
        })
    }
}

/// An open destination being written; [`Sink::commit`] makes it final.
pub struct Sink {
    out: io::BufWriter<File>,
    /// For a regular file: the directory, the temporary name and the final name.
    rename: Option<(OwnedFd, CString, CString)>,
    shown: PathBuf,
    committed: bool,
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most bytes.len() bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // Not predictable enough to plant in advance: O_EXCL still refuses what is there.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        bytes = (t.as_nanos() as u64 ^ u64::from(std::process::id()) << 32).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn cstr(path: &Path, bytes: &[u8]) -> Result<CString, DestError> {
    CString::new(bytes).map_err(|_| DestError::Io {
        path: path.into(),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })
}

impl Sink {
    pub fn open(dest: &Dest) -> Result<Self, DestError> {
        let shown = dest.shown().to_path_buf();
        let io_err = |source| DestError::Io {
            path: shown.clone(),
            source,
        };
        let (file, rename) = match dest {
            Dest::Fd { fd, .. } => {
                // SAFETY: F_DUPFD_CLOEXEC on a descriptor checked open; we own the copy.
                let dup = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3) };
                if dup < 0 {
                    return Err(io_err(io::Error::last_os_error()));
                }
                // SAFETY: a fresh descriptor owned by nobody else.
                (unsafe { File::from_raw_fd(dup) }, None)
            }
            Dest::Through { path, .. } => {
                let file = open_through(path).map_err(io_err)?;
                let ft = file.metadata().map_err(io_err)?.file_type();
                // Replaced by something else since the check: write nothing there.
                if !(ft.is_char_device() || ft.is_fifo() || path.starts_with("/proc")) {
                    return Err(DestError::Unsupported {
                        path: shown,
                        kind: "file that changed since it was checked",
                    });
                }
                (file, None)
            }
            Dest::File { dir, name, .. } => {
                let cdir = cstr(&shown, dir.as_os_str().as_bytes())?;
                // SAFETY: a valid path; the descriptor returned is ours.
                let dfd = unsafe {
                    libc::open(
                        cdir.as_ptr(),
                        libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
                    )
                };
                if dfd < 0 {
                    return Err(io_err(io::Error::last_os_error()));
                }
                // SAFETY: fresh descriptor.
                let dfd = unsafe { OwnedFd::from_raw_fd(dfd) };
                // Named for this process: what a killed tracer left is found and removed by
                // the next write of the same report.
                remove_stale_temps(dir, name);
                let mut tmp_name = b".".to_vec();
                tmp_name.extend_from_slice(name.as_bytes());
                tmp_name.extend_from_slice(
                    format!(".{}.{}.tmp", std::process::id(), random_suffix()).as_bytes(),
                );
                let tmp = cstr(&shown, &tmp_name)?;
                let fin = cstr(&shown, name.as_bytes())?;
                // What the replaced file had: its mode and owner stay.
                // SAFETY: an all-zero stat buffer is valid for fstatat to fill.
                let mut old: libc::stat = unsafe { std::mem::zeroed() };
                // SAFETY: valid descriptor, name and stat buffer.
                let had = unsafe {
                    libc::fstatat(
                        dfd.as_raw_fd(),
                        fin.as_ptr(),
                        &mut old,
                        libc::AT_SYMLINK_NOFOLLOW,
                    )
                } == 0
                    && old.st_mode & libc::S_IFMT == libc::S_IFREG;
                // SAFETY: valid descriptor and name; O_EXCL|O_NOFOLLOW never reuse what is there.
                let fd = unsafe {
                    libc::openat(
                        dfd.as_raw_fd(),
                        tmp.as_ptr(),
                        // Read too: a bounded --jsonl keeps its newest lines (`keep_newest_lines`).
                        libc::O_RDWR
                            | libc::O_CREAT
                            | libc::O_EXCL
                            | libc::O_NOFOLLOW
                            | libc::O_CLOEXEC,
                        0o666 as libc::c_uint,
                    )
                };
                if fd < 0 {
                    return Err(io_err(io::Error::last_os_error()));
                }
                // SAFETY: fresh descriptor.
                let file = unsafe { File::from_raw_fd(fd) };
                let owner = if had {
                    Some((old.st_uid, old.st_gid))
                } else {
                    sudo_user::sudo_ids()
                };
                // SAFETY: fchown/fchmod on our own new file.
                unsafe {
                    if had {
                        libc::fchmod(fd, old.st_mode & 0o7777);
                    }
                    if let Some((uid, gid)) = owner {
                        libc::fchown(fd, uid, gid);
                    }
                }
                (file, Some((dfd, tmp, fin)))
            }
        };
        Ok(Sink {
            out: io::BufWriter::with_capacity(256 << 10, file),
            rename,
            shown,
            committed: false,
        })
    }

    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// Makes a file written as it goes (`--jsonl`) visible at its path now: the temporary
    /// file is renamed over the target at once, and what is written later lands there.
    pub fn publish(&mut self) -> io::Result<()> {
        self.out.flush()?;
        if let Some((dir, tmp, fin)) = self.rename.take() {
            // SAFETY: valid descriptor and names; renameat replaces, never follows, the target.
            let rc = unsafe {
                libc::renameat(dir.as_raw_fd(), tmp.as_ptr(), dir.as_raw_fd(), fin.as_ptr())
            };
            if rc != 0 {
                let e = io::Error::last_os_error();
                self.rename = Some((dir, tmp, fin));
                return Err(e);
            }
        }
        Ok(())
    }

    /// A regular file grown past `max` bytes keeps its newest whole lines within `max / 2`:
    /// rewritten in place from its start (a reader that follows it sees it truncated). Other
    /// destinations (a pipe, a device, stdout) cannot be shortened and are left as they are.
    pub fn keep_newest_lines(&mut self, max: u64) -> io::Result<()> {
        use std::{
            io::{Seek as _, SeekFrom},
            os::unix::fs::FileExt as _,
        };
        self.out.flush()?;
        let file = self.out.get_mut();
        let meta = file.metadata()?;
        if !meta.is_file() || meta.len() <= max {
            return Ok(());
        }
        let keep = (max / 2).min(meta.len());
        let mut tail = vec![0u8; keep as usize];
        file.read_exact_at(&mut tail, meta.len() - keep)?;
        // From the first whole line on.
        let start = tail
            .iter()
            .position(|&b| b == b'\n')
            .map_or(tail.len(), |i| i + 1);
        let kept = &tail[start..];
        file.write_all_at(kept, 0)?;
        file.set_len(kept.len() as u64)?;
        file.seek(SeekFrom::Start(kept.len() as u64))?;
        Ok(())
    }

    /// Flushes and, for a regular file, renames the temporary file over the target.
    pub fn commit(mut self) -> io::Result<()> {
        self.out.flush()?;
        if let Some((dir, tmp, fin)) = &self.rename {
            // SAFETY: valid descriptor and names; renameat replaces, never follows, the target.
            let rc = unsafe {
                libc::renameat(dir.as_raw_fd(), tmp.as_ptr(), dir.as_raw_fd(), fin.as_ptr())
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        self.committed = true;
        Ok(())
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.out.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Drop for Sink {
    /// A sink never committed leaves nothing behind.
    fn drop(&mut self) {
        if !self.committed
            && let Some((dir, tmp, _)) = &self.rename
        {
            // SAFETY: valid descriptor and name of the temporary file we created.
            unsafe { libc::unlinkat(dir.as_raw_fd(), tmp.as_ptr(), 0) };
        }
    }
}

/// What went wrong making or writing a report, from the renderer or the destination.
pub type RenderFailure = Box<dyn std::error::Error + Send + Sync>;

/// A report that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Dest(#[from] DestError),
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: RenderFailure,
    },
}

/// Removes `.NAME.PID.RANDOM.tmp` files in `dir` that a tracer no longer running left (it was
/// killed while writing NAME). Only regular files of that exact shape are touched.
fn remove_stale_temps(dir: &Path, name: &OsStr) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    for entry in entries.filter_map(Result::ok) {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        let Some(rest) = file
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".tmp"))
        else {
            continue;
        };
        let Some((pid, random)) = rest.split_once('.') else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        let shaped = !random.is_empty() && random.chars().all(|c| c.is_ascii_hexdigit());
        if !alive && shaped && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// How long a FIFO without a reader is waited for before its output is given up.
const FIFO_WAIT: Duration = Duration::from_secs(10);

/// A device or FIFO opened for writing, never blocking for ever: a FIFO with no reader is
/// waited for up to [`FIFO_WAIT`], and no longer once SIGINT or SIGTERM came.
fn open_through(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let open = || {
        fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
    };
    let deadline = std::time::Instant::now() + FIFO_WAIT;
    let file = loop {
        match open() {
            // A FIFO with no reader yet.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                if crate::process::signals::interrupted() || std::time::Instant::now() >= deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!("no reader opened the FIFO within {} s", FIFO_WAIT.as_secs()),
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            other => break other?,
        }
    };
    // Writes block again (a slow reader is waited for, as a shell redirection would).
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
    }
    Ok(file)
}

/// Writes a whole report to `dest`: rendered straight into the sink, committed only if the
/// render and every write succeeded.
pub fn write_to(
    dest: &Dest,
    render: impl FnOnce(&mut dyn Write) -> Result<(), RenderFailure>,
) -> Result<(), WriteError> {
    let mut sink = Sink::open(dest)?;
    let failed = |source| WriteError::Write {
        path: dest.shown().to_path_buf(),
        source,
    };
    render(&mut sink).map_err(failed)?;
    sink.commit().map_err(|e| failed(e.into()))?;
    Ok(())
}

#[cfg(test)]
#[path = "dest_tests.rs"]
mod tests;
