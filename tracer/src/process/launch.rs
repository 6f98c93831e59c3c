//! Starting a command held at its first instruction, so probes attach before it runs.
//!
//! `std::process::Command::spawn` cannot hold a child. We fork ourselves: the child asks to be
//! traced (`PTRACE_TRACEME`) and `exec`s, which stops it with SIGTRAP as soon as the new program
//! is loaded, before its first instruction. There its executable and dynamic loader are mapped,
//! so they can be read from /proc; the tracer attaches every probe, then detaches and the command
//! runs. An `exec` failure comes back through a close-on-exec pipe as an errno.
//!
//! The command starts as it would from a shell: every signal at its default disposition and
//! none blocked (Rust ignores SIGPIPE in its own processes), none of our descriptors beyond
//! 0, 1 and 2, and, when we are root under `sudo`, as the invoking user (uid, gid,
//! supplementary groups, HOME/USER/LOGNAME; no capabilities) unless asked to keep root.

use std::{
    env,
    ffi::{CString, OsStr, OsString},
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::PermissionsExt},
    },
    path::{Path, PathBuf},
};

use thiserror::Error;

use crate::process::sudo_user::Invoker;

#[derive(Debug, Error)]
pub enum LaunchError {
    #[error("command not found: {0} (not a file, and not in PATH)")]
    NotFound(String),
    #[error("{0} is not an executable file")]
    NotExecutable(PathBuf),
    #[error("{what} contains a NUL byte")]
    Nul { what: &'static str },
    #[error("could not execute {path}")]
    Exec { path: PathBuf, source: io::Error },
    #[error("{what}")]
    Os {
        what: &'static str,
        source: io::Error,
    },
}

fn os(what: &'static str) -> impl FnOnce(io::Error) -> LaunchError {
    move |source| LaunchError::Os { what, source }
}

/// Resolves `program` the way a shell does: a name with a slash is a path, others are looked up
/// in `PATH`.
pub fn resolve(program: &OsStr) -> Result<PathBuf, LaunchError> {
    let check = |p: &Path| -> Result<PathBuf, LaunchError> {
        let meta = p
            .metadata()
            .map_err(|_| LaunchError::NotFound(p.display().to_string()))?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(LaunchError::NotExecutable(p.to_path_buf()));
        }
        Ok(p.to_path_buf())
    };
    if program.as_bytes().contains(&b'/') {
        return check(Path::new(program));
    }
    let path = env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut not_executable = None;
    for dir in env::split_paths(&path) {
        let candidate = dir.join(program);
        match check(&candidate) {
            Ok(p) => return Ok(p),
            Err(e @ LaunchError::NotExecutable(_)) => not_executable = not_executable.or(Some(e)),
            Err(_) => {}
        }
    }
    Err(not_executable.unwrap_or_else(|| LaunchError::NotFound(program.to_string_lossy().into())))
}

fn cstring(s: &[u8], what: &'static str) -> Result<CString, LaunchError> {
    CString::new(s).map_err(|_| LaunchError::Nul { what })
}

fn pipe() -> Result<(OwnedFd, OwnedFd), LaunchError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os("pipe2")(io::Error::last_os_error()));
    }
    // SAFETY: pipe2 succeeded, so both are fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A command stopped right after `exec`, not yet running.
#[derive(Debug)]
pub struct HeldChild {
    pid: i32,
}

impl HeldChild {
    /// Starts `argv` and returns once it is stopped after a successful `exec`; as `user` when
    /// given.
    pub fn spawn(argv: &[OsString], user: Option<&Invoker>) -> Result<Self, LaunchError> {
        let program = argv
            .first()
            .ok_or_else(|| LaunchError::NotFound(String::new()))?;
        let path = resolve(program)?;
        // Everything the child needs is prepared before fork: after it, only async-signal-safe
        // calls are allowed.
        let c_path = cstring(path.as_os_str().as_bytes(), "the program path")?;
        let c_args = argv
            .iter()
            .map(|a| cstring(a.as_bytes(), "an argument"))
            .collect::<Result<Vec<_>, _>>()?;
        let identity: Vec<(&str, &OsStr)> = match user {
            Some(u) if !u.name.is_empty() => vec![
                ("HOME", u.home.as_os_str()),
                ("USER", u.name.as_os_str()),
                ("LOGNAME", u.name.as_os_str()),
            ],
            _ => Vec::new(),
        };
        let c_env = env::vars_os()
            .filter(|(k, _)| !identity.iter().any(|(name, _)| k == name))
            .chain(
                identity
                    .iter()
                    .map(|(k, v)| (OsString::from(k), v.to_os_string())),
            )
            .map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                cstring(&kv, "the environment")
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut arg_ptrs: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
        arg_ptrs.push(std::ptr::null());
        let mut env_ptrs: Vec<*const libc::c_char> = c_env.iter().map(|a| a.as_ptr()).collect();
        env_ptrs.push(std::ptr::null());

        let ids = user.map(|u| (u.uid, u.gid, u.groups.clone()));
        let (err_r, err_w) = pipe()?;
        // SAFETY: fork has no preconditions; the child below calls only async-signal-safe
        // functions (sigaction, sigprocmask, close_range, setgroups, setgid, setuid, ptrace,
        // execve, write, _exit) on memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(os("fork")(io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: async-signal-safe calls only, see above.
            unsafe {
                if clean_start(ids.as_ref()) && libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) == 0 {
                    libc::execve(c_path.as_ptr(), arg_ptrs.as_ptr(), env_ptrs.as_ptr());
                }
                let errno = *libc::__errno_location();
                libc::write(err_w.as_raw_fd(), (&raw const errno).cast(), 4);
                libc::_exit(127);
            }
        }
        drop(err_w);
        let mut errno = [0u8; 4];
        // The write end closes at exec (O_CLOEXEC): 0 bytes on success, 4 on failure.
        let n = loop {
            // SAFETY: reading into a valid 4-byte buffer from a descriptor we own.
            let n = unsafe { libc::read(err_r.as_raw_fd(), errno.as_mut_ptr().cast(), 4) };
            if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break n;
            }
        };
        if n == 4 {
            reap(pid);
            return Err(LaunchError::Exec {
                path,
                source: io::Error::from_raw_os_error(i32::from_ne_bytes(errno)),
            });
        }
        let child = HeldChild { pid };
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid status pointer.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        if waited != pid || !libc::WIFSTOPPED(status) {
            return Err(os("waiting for the command to stop after exec")(
                io::Error::other(format!("unexpected wait status {status:#x}")),
            ));
        }
        // If the tracer dies before releasing it, the command dies too rather than run untraced.
        // SAFETY: ptrace request on our own stopped tracee.
        unsafe { libc::ptrace(libc::PTRACE_SETOPTIONS, pid, 0, libc::PTRACE_O_EXITKILL) };
        Ok(child)
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Lets the command run.
    pub fn release(mut self) -> Result<i32, LaunchError> {
        let pid = std::mem::replace(&mut self.pid, 0);
        // SAFETY: detaching our own stopped tracee, suppressing the exec SIGTRAP.
        if unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) } != 0 {
            let err = io::Error::last_os_error();
            self.pid = pid;
            return Err(os("releasing the command")(err));
        }
        Ok(pid)
    }
}

impl Drop for HeldChild {
    /// A child never released is killed: the command must not run untraced.
    fn drop(&mut self) {
        if self.pid > 0 {
            // SAFETY: signalling and reaping our own child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            reap(self.pid);
        }
    }
}

/// In the forked child: default signal dispositions, nothing blocked, none of our descriptors
/// past stderr kept across exec, and the user's identity when given. False when a step that
/// must not be skipped failed (errno tells which).
///
/// # Safety
/// Only between fork and exec; calls async-signal-safe functions only.
unsafe fn clean_start(ids: Option<&(u32, u32, Vec<libc::gid_t>)>) -> bool {
    // SAFETY: plain system calls on valid, pre-allocated memory.
    unsafe {
        // The raw system call: glibc's sigaction refuses its own signals 32 and 33, which a
        // parent may have left ignored too. All zero is SIG_DFL, no flags, nothing masked.
        let dfl = [0u64; 4];
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(libc::SYS_rt_sigaction, sig, dfl.as_ptr(), 0usize, 8usize);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        // Close-on-exec rather than close: the error pipe must live until execve.
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        if let Some((uid, gid, groups)) = ids
            && (libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(*gid) != 0
                || libc::setuid(*uid) != 0)
        {
            return false;
        }
        true
    }
}

fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid status pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_from_path_and_rejects_missing() {
        let sh = resolve(OsStr::new("sh")).unwrap();
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        let err = resolve(OsStr::new("no-such-command-xyz")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "command not found: no-such-command-xyz (not a file, and not in PATH)"
        );
        let plain = env::temp_dir().join(format!("tracer-plain-{}", std::process::id()));
        std::fs::write(&plain, "data").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = resolve(plain.as_os_str()).unwrap_err();
        assert!(matches!(err, LaunchError::NotExecutable(_)), "{err}");
        std::fs::remove_file(&plain).unwrap();
        let err = resolve(OsStr::new("/")).unwrap_err();
        assert!(matches!(err, LaunchError::NotExecutable(_)), "{err}");
    }

    #[test]
    fn held_child_runs_only_when_released() {
        let dir = env::temp_dir().join(format!("tracer-launch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("ran");
        let script = format!("touch {}", marker.display());
        let argv: Vec<OsString> = ["sh", "-c", &script].iter().map(Into::into).collect();

        let held = HeldChild::spawn(&argv, None).unwrap();
        // Stopped after exec: /proc shows the new program, which has not run yet.
        let exe = std::fs::read_link(format!("/proc/{}/exe", held.pid())).unwrap();
        assert!(
            exe.ends_with("sh") || exe.to_string_lossy().contains("dash"),
            "{exe:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!marker.exists(), "the command ran before release");
        let pid = held.release().unwrap();
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert!(marker.exists());

        // Dropped without release: killed, never runs.
        std::fs::remove_file(&marker).unwrap();
        drop(HeldChild::spawn(&argv, None).unwrap());
        assert!(!marker.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
