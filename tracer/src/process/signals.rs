//! SIGINT and SIGTERM (and SIGUSR1, a snapshot), handled from the first moment of a run.
//!
//! A terminal's Ctrl-C goes to the whole foreground process group, the traced command
//! included; `kill -INT <tracer>` reaches tracer alone. The two differ in `si_code`
//! (`SI_KERNEL` for the terminal, `SI_USER`/`SI_QUEUE`/`SI_TKILL` for a process), so each
//! signal is counted by where it came from: a signal a process sent us is forwarded to the
//! command; one the terminal sent is not sent twice.

use std::{
    sync::atomic::{AtomicU32, Ordering::Relaxed},
    task::{Context, Poll, Waker},
};

use tokio::signal::unix::{Signal, SignalKind, signal};

/// What arrived since the last [`Signals::take`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Arrived {
    /// SIGINTs from the terminal (the command's process group got them too).
    pub tty_interrupts: u32,
    /// SIGINTs sent by a process to tracer.
    pub sent_interrupts: u32,
    pub terminates: u32,
}

impl Arrived {
    pub fn any(&self) -> bool {
        self.tty_interrupts + self.sent_interrupts + self.terminates > 0
    }
}

/// Whether SIGINT or SIGTERM came since the run loop last took them: what a wait outside the
/// loop (a FIFO's reader) checks to end early.
pub fn interrupted() -> bool {
    TTY_INT.load(Relaxed) + SENT_INT.load(Relaxed) + TERM.load(Relaxed) > 0
}

static TTY_INT: AtomicU32 = AtomicU32::new(0);
static SENT_INT: AtomicU32 = AtomicU32::new(0);
static TERM: AtomicU32 = AtomicU32::new(0);

/// The run's signal streams and counters.
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
    /// SIGUSR1: a snapshot of every report (taken by the run loop).
    snapshot: Option<Signal>,
    /// SIGUSR2: a leak check now (taken by the run loop).
    check: Option<Signal>,
}

impl Signals {
    /// Installs the handlers; from now on SIGINT and SIGTERM no longer kill us.
    pub fn install() -> std::io::Result<Self> {
        let interrupt = signal(SignalKind::interrupt())?;
        let terminate = signal(SignalKind::terminate())?;
        // Installed first thing too: SIGUSR1's default action would kill us.
        let snapshot = Some(signal(SignalKind::user_defined1())?);
        let check = Some(signal(SignalKind::user_defined2())?);
        // SAFETY: the actions only touch atomics, which is async-signal-safe.
        unsafe {
            signal_hook_registry::register_sigaction(libc::SIGINT, |info: &libc::siginfo_t| {
                if info.si_code == libc::SI_KERNEL {
                    TTY_INT.fetch_add(1, Relaxed);
                } else {
                    SENT_INT.fetch_add(1, Relaxed);
                }
            })?;
            signal_hook_registry::register(libc::SIGTERM, || {
                TERM.fetch_add(1, Relaxed);
            })?;
        }
        Ok(Signals {
            interrupt,
            terminate,
            snapshot,
            check,
        })
    }

    /// The SIGUSR1 stream, for the run loop to wait on beside [`Signals::recv`].
    pub fn take_snapshot_requests(&mut self) -> Option<Signal> {
        self.snapshot.take()
    }

    /// The SIGUSR2 stream: leak checks asked for while tracing.
    pub fn take_check_requests(&mut self) -> Option<Signal> {
        self.check.take()
    }

    /// Whether a signal is waiting, without taking it: setup stops at its next step.
    pub fn pending(&self) -> bool {
        interrupted()
    }

    /// Waits for the next signal and takes what arrived.
    pub async fn recv(&mut self) -> Arrived {
        if !self.pending() {
            tokio::select! {
                _ = self.interrupt.recv() => {}
                _ = self.terminate.recv() => {}
            }
        }
        // Drop wakeups that the counters below account for.
        let mut cx = Context::from_waker(Waker::noop());
        while let Poll::Ready(Some(())) = self.interrupt.poll_recv(&mut cx) {}
        while let Poll::Ready(Some(())) = self.terminate.poll_recv(&mut cx) {}
        Self::take()
    }

    fn take() -> Arrived {
        Arrived {
            tty_interrupts: TTY_INT.swap(0, Relaxed),
            sent_interrupts: SENT_INT.swap(0, Relaxed),
            terminates: TERM.swap(0, Relaxed),
        }
    }
}
