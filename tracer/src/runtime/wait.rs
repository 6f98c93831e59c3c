//! What the run loop waits on, each a future that never completes when there is nothing to
//! wait for; and the signals and reaping of the command it launched.

use std::{io, os::fd::AsRawFd};

use tokio::io::{Interest, unix::AsyncFd};

/// The next request of the HTTP server for a fresh summary, and every other one already
/// waiting with it (one summary answers them all); never, without a server.
pub(super) async fn next_requests(requests: Option<&mut tokio::sync::mpsc::UnboundedReceiver<()>>) {
    match requests {
        Some(r) => {
            if r.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
            while r.try_recv().is_ok() {}
        }
        None => std::future::pending().await,
    }
}

/// The next tick of an optional interval; never, without one.
pub(super) async fn next_tick(interval: Option<&mut tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Registers a descriptor-owning value with the reactor for readability.
pub(super) fn watch<T: AsRawFd>(inner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: the caller passes a value that owns its descriptor (the target's pidfd) and
    // keeps it open and unchanged until the `AsyncFd` drops it.
    Ok(unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }?)
}

/// The target's exit; never, once it was seen.
pub(super) async fn exited(pidfd: Option<&AsyncFd<std::os::fd::OwnedFd>>) {
    match pidfd {
        Some(fd) => {
            let _ = fd.readable().await;
        }
        None => std::future::pending().await,
    }
}

/// A notification; never, without something to notify.
pub(super) async fn notified(notify: Option<&tokio::sync::Notify>) {
    match notify {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

pub(super) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

pub(super) fn kill(pid: i32, sig: i32) {
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(pid, sig) };
}

/// Reaps an exited child: (exit code, killing signal).
pub(super) fn wait_status(pid: i32) -> (Option<i32>, Option<i32>) {
    let mut status = 0;
    // SAFETY: reaping our own child with a valid status pointer.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return (None, None);
    }
    if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    }
}
