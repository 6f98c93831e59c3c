//! The traced program's files, read as the program sees them, never opened by name.
//!
//! Paths in a process's memory map (and in its `openat` calls) are the process's: relative to
//! its working directory, inside its mount namespace (a container), possibly deleted or
//! replaced since. Opening them by name in our own namespace reads the wrong file, or none; and
//! a hostile program can rename a FIFO over a mapped library so that `open()` blocks forever.
//! So each file is opened through `/proc/PID/map_files/START-END` (the very inode mapped, even
//! deleted), or, for a library not mapped yet, through `/proc/PID/root/PATH` with `O_NONBLOCK`
//! and only if it is a regular file. The descriptors stay open for the whole run, so uprobes
//! attach and blazesym reads through `/proc/self/fd/N`, also after the process is gone or the
//! library was unloaded.
//!
//! A library mapped just before the process exits may be gone from /proc by the time we look.
//! Then, and only if the process shared our mount namespace and root, its path means the same
//! to us: it is opened by that path (relative ones in the process's last known working
//! directory), still without blocking and only if it is a regular file.

use std::{
    collections::HashMap,
    fs::{self, File},
    os::{fd::AsRawFd, unix::fs::OpenOptionsExt},
    path::{Path, PathBuf},
};

/// Files of one process, each kept open and reachable as `/proc/self/fd/N`.
#[derive(Debug)]
pub struct TargetFiles {
    pid: i32,
    kept: Vec<File>,
    /// The path as the process names it → the path we read it by.
    by_path: HashMap<PathBuf, PathBuf>,
    /// The process's working directory when last seen, if its paths mean what ours do (same
    /// mount namespace, same root).
    shared_cwd: Option<PathBuf>,
}

fn same_mount_namespace(pid: i32) -> bool {
    let ns = |p: &str| fs::read_link(format!("/proc/{p}/ns/mnt")).ok();
    let theirs = ns(&pid.to_string());
    theirs.is_some()
        && theirs == ns("self")
        && fs::read_link(format!("/proc/{pid}/root")).ok() == Some(PathBuf::from("/"))
}

/// A mapping line of `/proc/PID/maps`: range text, executable, path.
fn exec_mapping(line: &str) -> Option<(&str, PathBuf)> {
    let mut cols = line.split_whitespace();
    let (range, perms) = (cols.next()?, cols.next()?);
    if perms.as_bytes().get(2) != Some(&b'x') {
        return None;
    }
    let path = line.get(line.find('/')?..)?;
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    Some((range, PathBuf::from(path)))
}

fn regular(file: File) -> Option<File> {
    file.metadata().ok()?.is_file().then_some(file)
}

impl TargetFiles {
    pub fn new(pid: i32) -> Self {
        let shared_cwd = same_mount_namespace(pid)
            .then(|| fs::read_link(format!("/proc/{pid}/cwd")).ok())
            .flatten();
        TargetFiles {
            pid,
            kept: Vec::new(),
            by_path: HashMap::new(),
            shared_cwd,
        }
    }

    /// The files of `pid`, a child this process forked: until it runs another program it maps
    /// what its parent did, read through the parent's descriptors (which the parent's
    /// `TargetFiles` keeps open for the run).
    pub fn forked(&self, pid: i32) -> Self {
        TargetFiles {
            pid,
            kept: Vec::new(),
            by_path: self.by_path.clone(),
            shared_cwd: self.shared_cwd.clone(),
        }
    }

    fn keep(&mut self, path: PathBuf, file: File) -> PathBuf {
        let fd = file.as_raw_fd();
        let via = PathBuf::from(format!("/proc/self/fd/{fd}"));
        self.kept.push(file);
        self.by_path.insert(path, via.clone());
        via
    }

    /// Opens every file the process maps executable now (a `/proc/PID/maps` text).
    pub fn open_mapped(&mut self, maps: &str) {
        for line in maps.lines() {
            let Some((range, path)) = exec_mapping(line) else {
                continue;
            };
            if self.by_path.contains_key(&path) {
                continue;
            }
            if let Some(file) = self.open_range(range) {
                self.keep(path, file);
            } else {
                self.open_path(&path);
            }
        }
    }

    /// Opens `/proc/PID/map_files/START-END` for a range as maps prints it (zero-padded:
    /// `00401000-0048b000`), which map_files names without the padding (`401000-48b000`).
    fn open_range(&self, range: &str) -> Option<File> {
        let (start, end) = range.split_once('-')?;
        let start = u64::from_str_radix(start, 16).ok()?;
        let end = u64::from_str_radix(end, 16).ok()?;
        let path = format!("/proc/{}/map_files/{start:x}-{end:x}", self.pid);
        regular(File::open(path).ok()?)
    }

    /// The file `path` mapped (executable) at `addr`, opened through the mapping, or by its
    /// path in the process's root when the mapping cannot be opened.
    pub fn open_mapping_at(&mut self, path: &Path, addr: u64) -> Option<PathBuf> {
        if let Some(via) = self.by_path.get(path) {
            return Some(via.clone());
        }
        let dir = format!("/proc/{}/map_files", self.pid);
        // A process already gone has no map_files: its path is tried instead.
        let range = fs::read_dir(dir).ok().and_then(|mut d| {
            d.find_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                let (start, end) = name.split_once('-')?;
                let start = u64::from_str_radix(start, 16).ok()?;
                let end = u64::from_str_radix(end, 16).ok()?;
                (start..end).contains(&addr).then_some(name)
            })
        });
        match range.and_then(|r| self.open_range(&r)) {
            Some(file) => Some(self.keep(path.to_path_buf(), file)),
            None => self.open_path(path),
        }
    }

    /// A file the process names by `path` (absolute, or relative to its working directory),
    /// opened inside its root without blocking, and only if it is a regular file.
    pub fn open_path(&mut self, path: &Path) -> Option<PathBuf> {
        if let Some(via) = self.by_path.get(path) {
            return Some(via.clone());
        }
        let proc = PathBuf::from(format!("/proc/{}", self.pid));
        let inside = if path.is_absolute() {
            proc.join("root").join(path.strip_prefix("/").ok()?)
        } else {
            proc.join("cwd").join(path)
        };
        let open = |p: &Path| {
            fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
                .open(p)
        };
        let file = match open(&inside) {
            Ok(file) => file,
            // The process is gone, or exiting (its root can no longer be followed): our
            // namespace is its namespace, if it was shared.
            Err(_) => {
                let cwd = self.shared_cwd.as_ref()?;
                open(&cwd.join(path)).ok()?
            }
        };
        if !path.is_absolute()
            && self.shared_cwd.is_some()
            && let Ok(cwd) = fs::read_link(proc.join("cwd"))
        {
            self.shared_cwd = Some(cwd);
        }
        let file = regular(file)?;
        Some(self.keep(path.to_path_buf(), file))
    }

    /// Where to read the file the process calls `path`, if it could be opened.
    pub fn get(&self, path: &Path) -> Option<&PathBuf> {
        self.by_path.get(path)
    }

    /// Every file opened: the process's path → ours.
    pub fn substitutes(&self) -> &HashMap<PathBuf, PathBuf> {
        &self.by_path
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    fn pid() -> i32 {
        std::process::id() as i32
    }

    #[test]
    fn opens_our_own_mapped_files_through_map_files() {
        let maps = fs::read_to_string("/proc/self/maps").unwrap();
        let mut files = TargetFiles::new(pid());
        files.open_mapped(&maps);
        let exe = fs::read_link("/proc/self/exe").unwrap();
        let via = files
            .get(&exe)
            .expect("the test binary is mapped executable");
        assert!(via.starts_with("/proc/self/fd"), "{}", via.display());
        // The same file: same inode.
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            fs::metadata(via).unwrap().ino(),
            fs::metadata(&exe).unwrap().ino()
        );
    }

    #[test]
    fn never_blocks_on_a_fifo_and_reads_only_regular_files() {
        let dir = std::env::temp_dir().join(format!("tracer-files-{}", pid()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("lib.so");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let mut files = TargetFiles::new(pid());
        assert_eq!(files.open_path(&fifo), None, "a FIFO is not a library");
        assert_eq!(files.open_path(&dir), None, "nor is a directory");
        // A relative path is the process's, resolved in its working directory.
        let cwd = std::env::current_dir().unwrap();
        let name = Path::new("Cargo.toml");
        assert!(cwd.join(name).is_file());
        assert!(files.open_path(name).is_some());
        fs::remove_dir_all(&dir).unwrap();
    }
}
