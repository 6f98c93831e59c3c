//! Stopping every thread of a process for a leak check, and letting them go.
//!
//! ptrace, not SIGSTOP: `PTRACE_SEIZE` and `PTRACE_INTERRUPT` stop each thread without a signal
//! its parent or its shell would see, give its registers, and, if tracer dies while the threads
//! are stopped, the kernel detaches them and they run on. A process stopped already (held at
//! `_exit` by SIGSTOP) is seized the same way and stays in its group stop when detached.

use std::{
    collections::BTreeSet,
    io,
    time::{Duration, Instant},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StopError {
    #[error("process {pid} is traced by another program (a debugger?): it cannot be checked")]
    Traced { pid: i32 },
    #[error("process {pid} is gone")]
    Gone { pid: i32 },
    #[error("stopping thread {tid} of process {pid}")]
    Os {
        pid: i32,
        tid: i32,
        #[source]
        source: io::Error,
    },
    #[error("thread {tid} of process {pid} did not stop within {waited:?}")]
    Slow {
        pid: i32,
        tid: i32,
        waited: Duration,
    },
}

/// The threads of a process, each stopped under ptrace, with its registers; detached when
/// dropped.
pub struct Stopped {
    pid: i32,
    seized: Vec<i32>,
    /// Each thread's general registers.
    pub registers: Vec<(i32, libc::user_regs_struct)>,
}

/// The longest a thread may take to stop (one in an uninterruptible sleep stops when it wakes).
const STOP_WAIT: Duration = Duration::from_secs(2);

fn threads(pid: i32) -> io::Result<BTreeSet<i32>> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        if let Some(tid) = entry?.file_name().to_str().and_then(|s| s.parse().ok()) {
            out.insert(tid);
        }
    }
    Ok(out)
}

impl Stopped {
    /// Stops every thread of `pid` (threads started meanwhile too) and reads their registers.
    pub fn stop(pid: i32) -> Result<Stopped, StopError> {
        let mut s = Stopped {
            pid,
            seized: Vec::new(),
            registers: Vec::new(),
        };
        // Threads may start while the first are seized: listed again until no new one.
        loop {
            let all = threads(pid).map_err(|_| StopError::Gone { pid })?;
            let new: Vec<i32> = all.into_iter().filter(|t| !s.seized.contains(t)).collect();
            if new.is_empty() {
                break;
            }
            for tid in new {
                s.seize(tid)?;
            }
        }
        if s.seized.is_empty() {
            return Err(StopError::Gone { pid });
        }
        for i in 0..s.seized.len() {
            let tid = s.seized[i];
            s.wait_stopped(tid)?;
            if let Some(regs) = registers(tid) {
                s.registers.push((tid, regs));
            }
        }
        Ok(s)
    }

    fn seize(&mut self, tid: i32) -> Result<(), StopError> {
        let pid = self.pid;
        // SAFETY: ptrace requests on a thread id; no memory is passed.
        if unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0) } != 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                // A thread that just ended.
                Some(libc::ESRCH) => Ok(()),
                Some(libc::EPERM) => Err(StopError::Traced { pid }),
                _ => Err(StopError::Os {
                    pid,
                    tid,
                    source: err,
                }),
            };
        }
        self.seized.push(tid);
        // SAFETY: as above, on a thread we now trace.
        if unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0) } != 0 {
            let source = io::Error::last_os_error();
            return Err(StopError::Os { pid, tid, source });
        }
        Ok(())
    }

    /// Waits for `tid`'s ptrace stop. A thread that exits meanwhile is dropped.
    fn wait_stopped(&mut self, tid: i32) -> Result<(), StopError> {
        let begun = Instant::now();
        loop {
            let mut status = 0;
            // SAFETY: waiting for a thread we trace, with a valid status pointer.
            let got = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
            if got == tid {
                if libc::WIFSTOPPED(status) {
                    return Ok(());
                }
                // It ended: nothing to detach.
                self.seized.retain(|&t| t != tid);
                return Ok(());
            }
            if got < 0 {
                self.seized.retain(|&t| t != tid);
                return Ok(());
            }
            if begun.elapsed() > STOP_WAIT {
                return Err(StopError::Slow {
                    pid: self.pid,
                    tid,
                    waited: STOP_WAIT,
                });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// The stack pointer of each stopped thread.
    pub fn stack_pointers(&self) -> impl Iterator<Item = u64> + '_ {
        self.registers.iter().map(|(_, r)| r.rsp)
    }

    /// Every general register of every stopped thread, as words.
    pub fn register_words(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for (_, r) in &self.registers {
            out.extend([
                r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx, r.r11, r.r10, r.r9, r.r8, r.rax, r.rcx,
                r.rdx, r.rsi, r.rdi, r.rip, r.rsp, r.fs_base, r.gs_base,
            ]);
        }
        out
    }
}

fn registers(tid: i32) -> Option<libc::user_regs_struct> {
    // SAFETY: all-zero is a valid value of this plain struct of integers.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes one user_regs_struct to the pointer given.
    let ok = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            tid,
            0,
            &mut regs as *mut libc::user_regs_struct,
        )
    } == 0;
    ok.then_some(regs)
}

impl Drop for Stopped {
    /// Every thread runs on (or, held in a group stop, stays in it).
    fn drop(&mut self) {
        for &tid in &self.seized {
            // SAFETY: detaching a thread we trace; no signal is injected.
            unsafe { libc::ptrace(libc::PTRACE_DETACH, tid, 0, 0) };
        }
    }
}
