//! The keeper: a process of its own, started with the probes, that lets go every process tracer
//! holds if tracer dies without doing so itself (SIGKILL, an OOM kill, a crash).
//!
//! tracer holds processes by having the kernel stop them (`SIGSTOP` from the eBPF side, at an
//! exec or a code mapping) until it has read what they run; only tracer continues them. The
//! keeper is `tracer` run again (a fresh process, not a fork of a multithreaded one) in a
//! session of its own, so the terminal's Ctrl-C does not reach it, with three descriptors: the
//! read end of a pipe whose write end only tracer holds, and the eBPF object's control and
//! followed-processes maps. When the pipe reads end of file without tracer's word that it let
//! everyone go, tracer is gone: the keeper turns holding off in the control map (so no program
//! still attached stops anyone again) and, for a second, continues every traced process it
//! finds stopped: the command tracer started, and every process it followed.
//!
//! A traced process that somebody else stopped at that moment (Ctrl-Z in its shell) is
//! continued too: a process left stopped for ever is the worse mistake.

use std::{
    ffi::OsString,
    io::{self, Read as _, Write as _},
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::process::CommandExt as _,
    },
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// The argument that makes `tracer` the keeper (not in `--help`: only tracer starts it).
pub const ARG: &str = "__keep-held-processes";

/// The keeper's descriptors, where it finds them.
const PIPE_FD: i32 = 3;
const CONTROL_FD: i32 = 4;
const FOLLOWED_FD: i32 = 5;

/// What tracer writes before it closes the pipe when it let every process go itself.
const DISMISSED: u8 = b'x';

/// How long the keeper goes on continuing stopped processes after tracer died: a program that
/// was running when tracer died can still stop one just after the keeper looked.
const WATCH: Duration = Duration::from_secs(1);
const STEP: Duration = Duration::from_millis(20);

/// tracer's end of the keeper: the pipe's write end.
pub struct Keeper {
    pipe: std::fs::File,
}

impl Keeper {
    /// Starts the keeper for `root` (the process tracer launched, or 0) and the processes in the
    /// followed map, with the control map to turn holding off.
    pub fn start(
        root: u32,
        control: BorrowedFd<'_>,
        followed: Option<BorrowedFd<'_>>,
    ) -> io::Result<Keeper> {
        let (read, write) = pipe()?;
        let fds = [
            read.as_raw_fd(),
            control.as_raw_fd(),
            followed.map_or(-1, |f| f.as_raw_fd()),
        ];
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg(ARG)
            .arg(root.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: between fork and exec only async-signal-safe calls (setsid, fcntl, dup2,
        // close) on descriptors this process owns.
        unsafe {
            cmd.pre_exec(move || place_fds(fds));
        }
        cmd.spawn()?;
        Ok(Keeper {
            pipe: std::fs::File::from(write),
        })
    }

    /// tracer let every process go itself: the keeper exits without touching any.
    pub fn dismiss(mut self) {
        let _ = self.pipe.write_all(&[DISMISSED]);
    }
}

/// A pipe, both ends close-on-exec (the keeper's end is moved to [`PIPE_FD`] for it).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: a valid array of two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two new descriptors, ours alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// In the keeper's child before exec: a session of its own, and `fds` at 3, 4 and 5 without
/// close-on-exec (copied high first, so that no copy overwrites another's source).
fn place_fds(fds: [i32; 3]) -> io::Result<()> {
    // SAFETY: async-signal-safe calls on descriptors of this process.
    unsafe {
        libc::setsid();
        let mut high = [-1i32; 3];
        for (h, &fd) in high.iter_mut().zip(&fds) {
            if fd >= 0 {
                *h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
                if *h < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        for (target, h) in [PIPE_FD, CONTROL_FD, FOLLOWED_FD].into_iter().zip(high) {
            if h >= 0 && libc::dup2(h, target) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// The keeper's whole life (`tracer __keep-held-processes ROOT`): returns its exit status.
pub fn run(args: &[OsString]) -> i32 {
    let root: u32 = args
        .first()
        .and_then(|a| a.to_str())
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    for sig in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGPIPE,
    ] {
        // SAFETY: ignoring a signal has no preconditions.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    // SAFETY: tracer gave us these descriptors (see `place_fds`); nothing else owns them.
    let mut pipe = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(PIPE_FD) });
    let mut byte = [0u8; 1];
    loop {
        match pipe.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == DISMISSED => return 0,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let maps = held_maps();
    let deadline = Instant::now() + WATCH;
    while Instant::now() < deadline {
        let followed = maps.followed();
        for pid in std::iter::once(root).chain(followed).filter(|&p| p > 0) {
            if stopped(pid) {
                // SAFETY: continuing a process; a pid that no longer exists is an error only.
                unsafe { libc::kill(pid as i32, libc::SIGCONT) };
            }
        }
        std::thread::sleep(STEP);
    }
    0
}

/// The eBPF maps the keeper was given; holding turned off in the control map.
struct HeldMaps {
    followed: Option<aya::maps::HashMap<aya::maps::MapData, u32, u32>>,
}

impl HeldMaps {
    /// The processes tracer followed (their keys in the map).
    fn followed(&self) -> Vec<u32> {
        self.followed
            .as_ref()
            .map(|m| m.keys().filter_map(Result::ok).collect())
            .unwrap_or_default()
    }
}

fn held_maps() -> HeldMaps {
    let map = |fd: i32| {
        // SAFETY: descriptors tracer gave us; one that is not open fails to read as a map.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        aya::maps::MapData::from_fd(fd).ok()
    };
    if let Some(control) = map(CONTROL_FD)
        && let Ok(mut control) =
            aya::maps::Array::<_, u32>::try_from(aya::maps::Map::Array(control))
    {
        let _ = control.set(0, 0, 0);
    }
    HeldMaps {
        followed: map(FOLLOWED_FD).and_then(|m| {
            aya::maps::HashMap::<_, u32, u32>::try_from(aya::maps::Map::HashMap(m)).ok()
        }),
    }
}

/// Whether any thread of process `pid` is stopped (`T` in its stat).
fn stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(Result::ok).any(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.trim_start().chars().next())
            })
            == Some('T')
    })
}
