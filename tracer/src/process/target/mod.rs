//! Facts about the traced process and about our own privileges, read from /proc.

pub mod code;
mod files;

pub use files::TargetFiles;

use std::{
    collections::{HashMap, HashSet},
    fs, io,
    os::fd::{FromRawFd, OwnedFd},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TargetError {
    #[error("no process with pid {0}")]
    NoSuchProcess(i32),
    #[error("pid {0} is a thread of process {1}: pass the process id, --pid {1}")]
    IsThread(i32, i32),
    #[error("invalid pid {0}: must be a positive process id")]
    InvalidPid(i32),
    #[error("--tid {tid}: no thread {tid} in process {pid} (its threads are in /proc/{pid}/task)")]
    NoSuchThread { pid: i32, tid: u32 },
    #[error(
        "pid {0} is a zombie: it has exited and waits for its parent to reap it; nothing to trace"
    )]
    Zombie(i32),
    #[error("pid {0} ({1}) is a kernel thread: it has no user-space memory to trace")]
    KernelThread(i32, String),
    #[error(
        "tracer needs root (or CAP_BPF and CAP_PERFMON) to load eBPF programs: run it with sudo"
    )]
    NotPrivileged,
    #[error("pid {pid}: {what}")]
    Os {
        pid: i32,
        what: &'static str,
        source: io::Error,
    },
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Whether the effective capabilities in a `/proc/PID/status` text allow loading tracing
/// programs: CAP_SYS_ADMIN, or CAP_BPF with CAP_PERFMON.
pub fn status_allows_tracing(status: &str) -> bool {
    let Some(eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    else {
        return false;
    };
    let has = |cap: u32| eff & (1 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

pub fn check_privileges() -> Result<(), TargetError> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    if status_allows_tracing(&status) {
        Ok(())
    } else {
        Err(TargetError::NotPrivileged)
    }
}

/// Checks that `pid` names a live process (a thread-group leader).
pub fn check_pid(pid: i32) -> Result<(), TargetError> {
    if pid <= 0 {
        return Err(TargetError::InvalidPid(pid));
    }
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|_| TargetError::NoSuchProcess(pid))?;
    let tgid = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse::<i32>().ok())
        .unwrap_or(pid);
    if tgid != pid {
        return Err(TargetError::IsThread(pid, tgid));
    }
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    if field("State:").is_some_and(|s| s.starts_with('Z')) {
        return Err(TargetError::Zombie(pid));
    }
    if is_kernel_thread(pid) {
        let name = field("Name:").unwrap_or_default().to_string();
        return Err(TargetError::KernelThread(pid, name));
    }
    Ok(())
}

/// PF_KTHREAD in the flags of `/proc/PID/stat`.
fn is_kernel_thread(pid: i32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The command name may hold spaces and parentheses: fields count from the last `)`.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(6))
        .and_then(|flags| flags.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

/// The users process `pid` runs as (real, effective, saved, filesystem), as its status says;
/// none once it is gone.
pub fn uids(pid: i32) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mut uids: Vec<u32> = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .map(|v| {
            v.split_whitespace()
                .filter_map(|u| u.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    uids.sort_unstable();
    uids.dedup();
    uids
}

/// The pid of `pid` inside its own pid namespace, when that differs (a container).
pub fn namespace_pid(pid: i32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let inner = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()?;
    (inner != pid as u32).then_some(inner)
}

/// The command line of `pid`, as its arguments.
/// Every process descended from `pid` now (children, their children, ...), by pid.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(ppid) = parent_in_stat(&stat) {
            children.entry(ppid).or_default().push(child);
        }
    }
    // A pid reused while the scan ran could make a cycle: each is taken once.
    let mut seen = HashSet::from([pid]);
    let mut next = vec![pid];
    while let Some(p) = next.pop() {
        for &c in children.get(&p).map_or(&[][..], Vec::as_slice) {
            if seen.insert(c) {
                next.push(c);
            }
        }
    }
    seen.remove(&pid);
    let mut out: Vec<u32> = seen.into_iter().collect();
    out.sort_unstable();
    out
}

/// The parent of process `pid` now.
pub fn parent(pid: u32) -> Option<u32> {
    parent_in_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The parent's pid in a `/proc/PID/stat` line: after the command in parentheses (which may
/// hold anything), the state, then the parent's pid.
fn parent_in_stat(stat: &str) -> Option<u32> {
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
        .and_then(|p| p.parse::<u32>().ok())
}

/// Whether process `pid` still runs: it exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command, which is in parentheses and may hold anything.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X" | "x") | None)
}

/// Raises our limit of open files to the hard limit: `--follow` keeps every traced program's
/// files open to symbolize them, which for a build is thousands.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointers to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

pub fn cmdline(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The end of the `[heap]` mapping in a `/proc/PID/maps` text: the program break (page-aligned),
/// from which brk accounting of a process attached mid-run starts.
pub fn heap_end(maps: &str) -> Option<u64> {
    maps.lines()
        .find(|l| l.trim_end().ends_with("[heap]"))
        .and_then(|l| l.split('-').nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|end| u64::from_str_radix(end, 16).ok())
}

/// The program break of a running process, if it has a heap yet.
pub fn current_break(pid: i32) -> Option<u64> {
    heap_end(&fs::read_to_string(format!("/proc/{pid}/maps")).ok()?)
}

/// A pidfd for `pid`: readable once the process has exited.
pub fn pidfd_open(pid: i32) -> Result<OwnedFd, TargetError> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let source = io::Error::last_os_error();
        return Err(if source.raw_os_error() == Some(libc::ESRCH) {
            TargetError::NoSuchProcess(pid)
        } else {
            TargetError::Os {
                pid,
                what: "pidfd_open",
                source,
            }
        });
    }
    // SAFETY: the syscall returned a fresh descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

/// The loader variables of the process's environment (`LD_PRELOAD`, `LD_LIBRARY_PATH`), as
/// its loader will see them.
pub fn loader_env(pid: i32) -> Vec<(String, String)> {
    let Ok(environ) = fs::read(format!("/proc/{pid}/environ")) else {
        return Vec::new();
    };
    environ
        .split(|&b| b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok()?.split_once('='))
        .filter(|(k, _)| matches!(*k, "LD_PRELOAD" | "LD_LIBRARY_PATH"))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The present pages of `ranges` (page-aligned `[start, end)`, in address order) from
/// `/proc/PID/pagemap`: bit 63 of each page's entry. Needs root (CAP_SYS_ADMIN) for the
/// entries to mean anything; reading stops at `max_pages` pages in all.
/// The resident pages of process `pid`'s data regions (as `maps` lists them) now, when
/// pagemap can be read: at most [`MAX_PAGEMAP_PAGES`].
pub fn resident_now(pid: u32, maps: &str) -> Option<crate::attribution::resident::PageSet> {
    let ranges = crate::attribution::AddressSpace::from_proc_maps(maps).data_ranges();
    read_pagemap(pid, &ranges, page_size(), MAX_PAGEMAP_PAGES)
        .map_err(|e| log::debug!("reading /proc/{pid}/pagemap: {e}"))
        .ok()
}

/// The most pages of data regions read from pagemap at once (16 GiB of 4 KiB pages, 32 MiB
/// read): the rest counts as not resident.
pub const MAX_PAGEMAP_PAGES: u64 = 1 << 22;

pub fn read_pagemap(
    pid: u32,
    ranges: &[(u64, u64)],
    page_size: u64,
    max_pages: u64,
) -> io::Result<crate::attribution::resident::PageSet> {
    use std::os::unix::fs::FileExt;
    let file = fs::File::open(format!("/proc/{pid}/pagemap"))?;
    let mut set = crate::attribution::resident::PageSet {
        page_size,
        runs: Vec::new(),
    };
    let mut budget = max_pages;
    let mut buf = Vec::new();
    let mut read_any = ranges.is_empty();
    for &(start, end) in ranges {
        let pages = (end.saturating_sub(start) / page_size).min(budget);
        if pages == 0 {
            continue;
        }
        budget -= pages;
        buf.resize(pages as usize * 8, 0);
        let got = file.read_at(&mut buf, start / page_size * 8)?;
        read_any |= got > 0;
        let present = buf[..got - got % 8]
            .chunks_exact(8)
            .map(|e| u64::from_le_bytes(e.try_into().expect("8 bytes")) >> 63 == 1);
        set.add_range(start, present);
    }
    // A process that exited has no pages to tell (its pagemap reads empty).
    if !read_any {
        return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
    }
    Ok(set)
}

/// Checks that `tid` is a thread of process `pid` (for `--tid`).
pub fn check_tid(pid: i32, tid: u32) -> Result<(), TargetError> {
    if std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists() {
        return Ok(());
    }
    Err(TargetError::NoSuchThread { pid, tid })
}

/// The slab caches the kernel merged (`/sys/kernel/slab`: names linked to one cache): for each
/// of `names` that shares its cache, the other names. The kernel's tracepoints name a merged
/// cache after the first that was created, whatever its objects are.
pub fn slab_merges(
    names: impl IntoIterator<Item = impl AsRef<str>>,
) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut by_target: std::collections::BTreeMap<std::ffi::OsString, Vec<String>> =
        Default::default();
    let Ok(dir) = fs::read_dir("/sys/kernel/slab") else {
        return Default::default();
    };
    for entry in dir.flatten() {
        if let Ok(target) = fs::read_link(entry.path())
            && let Some(name) = entry.file_name().to_str()
        {
            by_target
                .entry(target.into_os_string())
                .or_default()
                .push(name.to_string());
        }
    }
    let mut out = std::collections::BTreeMap::new();
    for name in names {
        let name = name.as_ref();
        if let Some(group) = by_target.values().find(|g| g.iter().any(|n| n == name))
            && group.len() > 1
        {
            let mut others: Vec<String> = group.iter().filter(|n| *n != name).cloned().collect();
            others.sort();
            out.insert(name.to_string(), others);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_check() {
        let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert!(status_allows_tracing(root));
        let bpf_perfmon = format!("CapEff:\t{:016x}\n", (1u64 << 39) | (1 << 38));
        assert!(status_allows_tracing(&bpf_perfmon));
        let bpf_only = format!("CapEff:\t{:016x}\n", 1u64 << 39);
        assert!(!status_allows_tracing(&bpf_only));
        assert!(!status_allows_tracing("CapEff:\t0000000000000000\n"));
        assert!(!status_allows_tracing("garbage"));
    }

    #[test]
    fn heap_end_from_maps() {
        let maps = "55d0c0a00000-55d0c0a21000 r--p 00000000 fd:00 123 /usr/bin/x\n\
                    55d0c1b3e000-55d0c1b5f000 rw-p 00000000 00:00 0                          [heap]\n\
                    7ffc0d2e0000-7ffc0d301000 rw-p 00000000 00:00 0 [stack]\n";
        assert_eq!(heap_end(maps), Some(0x55d0_c1b5_f000));
        assert_eq!(
            heap_end("7ffc0d2e0000-7ffc0d301000 rw-p 0 00:00 0 [stack]\n"),
            None
        );
    }

    #[test]
    fn pid_checks() {
        assert!(matches!(check_pid(0), Err(TargetError::InvalidPid(0))));
        assert!(matches!(check_pid(-5), Err(TargetError::InvalidPid(-5))));
        check_pid(std::process::id() as i32).unwrap();
        // Pid numbers are at most 2^22; this one cannot exist.
        let err = check_pid(99_999_999).unwrap_err();
        assert_eq!(err.to_string(), "no process with pid 99999999");
        let own = std::process::id() as i32;
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() }).unwrap();
            done_rx.recv().unwrap();
        });
        let tid = rx.recv().unwrap();
        let err = check_pid(tid).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("pid {tid} is a thread of process {own}: pass the process id, --pid {own}")
        );
        done_tx.send(()).unwrap();
        thread.join().unwrap();
        assert!(!cmdline(own).is_empty());
    }

    #[test]
    fn zombies_and_kernel_threads_are_refused() {
        // A child that exits and is not reaped yet is a zombie.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .contains("State:\tZ")
        {
            assert!(std::time::Instant::now() < deadline, "child never exited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let err = check_pid(pid).unwrap_err();
        assert!(matches!(err, TargetError::Zombie(p) if p == pid), "{err}");
        child.wait().unwrap();

        // kthreadd, or whichever kernel thread this namespace shows.
        let kthread = fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .find(|&p| is_kernel_thread(p))
            .expect("a kernel thread in /proc");
        let err = check_pid(kthread).unwrap_err();
        assert!(
            err.to_string().contains("is a kernel thread"),
            "{kthread}: {err}"
        );
        assert!(!is_kernel_thread(std::process::id() as i32));
    }

    /// Every name of a cache the kernel merged lists the other names of the same cache.
    #[test]
    fn merged_slab_caches_name_each_other() {
        let link = |n: &str| fs::read_link(format!("/sys/kernel/slab/{n}")).ok();
        let names: Vec<String> = fs::read_dir("/sys/kernel/slab")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let merges = slab_merges(names.iter());
        for (name, others) in &merges {
            assert!(!others.is_empty() && !others.contains(name));
            for other in others {
                assert_eq!(link(name), link(other), "{name} and {other}");
            }
        }
        assert!(slab_merges([&"no-such-cache".to_string()]).is_empty());
        let kernel = crate::summary::kernel::KernelSummary {
            slab_merges: [("pool_workqueue".into(), vec!["skbuff_fclone_cache".into()])].into(),
            ..Default::default()
        };
        assert_eq!(
            kernel.cache_name("pool_workqueue"),
            "pool_workqueue (merged with skbuff_fclone_cache)"
        );
        assert_eq!(kernel.cache_name("filp"), "filp");
    }
}
