//! Compiling files' unwind tables off the event path: a worker thread takes files to compile and
//! hands back their tables, waking whoever waits for them.
//!
//! The drain goes on while a big library (libpython: tens of milliseconds) is compiled; only
//! the process that maps it waits, stopped, for its own table.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{
        Arc,
        mpsc::{Receiver, Sender, TryRecvError, channel},
    },
};

use tokio::sync::Notify;

use super::{UnwindError, UnwindTable, compile_file};

/// A file's identity: (device, inode).
pub type FileKey = (u64, u64);

/// A table compiled by the worker.
pub struct Compiled {
    pub key: FileKey,
    pub build_id: Option<String>,
    pub table: Result<UnwindTable, UnwindError>,
}

/// The worker and what it was asked for.
pub struct Compiler {
    jobs: Sender<(FileKey, Option<String>, PathBuf)>,
    done: Receiver<Compiled>,
    /// Notified after each table the worker finishes (a permit is kept if nobody waits).
    wake: Arc<Notify>,
    /// Asked for, not yet collected.
    in_flight: HashSet<FileKey>,
    /// Compiled on this thread, the worker being gone.
    here: Vec<Compiled>,
}

impl Compiler {
    /// Starts the worker thread, which notifies `wake` after each table.
    pub fn start(wake: Arc<Notify>) -> std::io::Result<Self> {
        let (jobs, queue) = channel::<(FileKey, Option<String>, PathBuf)>();
        let (finished, done) = channel();
        let waker = wake.clone();
        std::thread::Builder::new()
            .name("unwind-tables".into())
            .spawn(move || {
                for (key, build_id, via) in queue {
                    // A file that makes the compiler panic (it should not) is a file without a
                    // table, not a process left waiting for one.
                    let table =
                        std::panic::catch_unwind(|| timed_compile(&via)).unwrap_or_else(|_| {
                            Err(UnwindError::Panicked {
                                path: via.display().to_string(),
                            })
                        });
                    let compiled = Compiled {
                        key,
                        build_id,
                        table,
                    };
                    if finished.send(compiled).is_err() {
                        break;
                    }
                    waker.notify_one();
                }
            })?;
        Ok(Compiler {
            jobs,
            done,
            wake,
            in_flight: HashSet::new(),
            here: Vec::new(),
        })
    }

    /// Asks for the table of the file read at `via`, once: false when it is already asked for.
    pub fn request(&mut self, key: FileKey, build_id: Option<String>, via: PathBuf) -> bool {
        if !self.in_flight.insert(key) {
            return false;
        }
        if let Err(job) = self.jobs.send((key, build_id, via)) {
            // The worker is gone (it cannot be, short of a panic outside the compiler):
            // compiled here instead.
            let (key, build_id, via) = job.0;
            self.here.push(Compiled {
                key,
                build_id,
                table: timed_compile(&via),
            });
            self.wake.notify_one();
        }
        true
    }

    /// Whether the table of `key` is asked for and not collected yet.
    pub fn is_compiling(&self, key: &FileKey) -> bool {
        self.in_flight.contains(key)
    }

    /// The tables finished since the last call.
    pub fn collect(&mut self) -> Vec<Compiled> {
        let mut out = std::mem::take(&mut self.here);
        for c in &out {
            self.in_flight.remove(&c.key);
        }
        loop {
            match self.done.try_recv() {
                Ok(c) => {
                    self.in_flight.remove(&c.key);
                    out.push(c);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return out,
            }
        }
    }
}

/// [`compile_file`], its time logged.
pub fn timed_compile(via: &Path) -> Result<UnwindTable, UnwindError> {
    let started = std::time::Instant::now();
    let table = compile_file(via);
    if let Ok(t) = &table {
        log::debug!(
            "{}: {} unwind rows compiled in {:?}",
            via.display(),
            t.rows.len(),
            started.elapsed()
        );
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each file is compiled once however often it is asked for, its result comes back with
    /// the waker notified, and a file that is not ELF comes back as an error.
    #[test]
    fn compiles_each_file_once_in_the_background() {
        let wake = Arc::new(Notify::new());
        let mut c = Compiler::start(wake.clone()).unwrap();
        let me = std::env::current_exe().unwrap();
        let not_elf = std::env::temp_dir().join(format!("tracer-not-elf-{}", std::process::id()));
        std::fs::write(&not_elf, b"#!/bin/sh\n").unwrap();
        assert!(c.request((1, 1), Some("ab".into()), me.clone()));
        assert!(!c.request((1, 1), None, me));
        assert!(c.request((1, 2), None, not_elf.clone()));
        assert!(c.is_compiling(&(1, 1)) && c.is_compiling(&(1, 2)));
        let mut got = Vec::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        while got.len() < 2 {
            runtime.block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(60), wake.notified())
                    .await
                    .expect("the worker finished a table");
            });
            got.extend(c.collect());
        }
        std::fs::remove_file(&not_elf).unwrap();
        assert!(!c.is_compiling(&(1, 1)) && !c.is_compiling(&(1, 2)));
        got.sort_by_key(|c| c.key);
        assert_eq!(got[0].build_id.as_deref(), Some("ab"));
        // This test binary has call frame information.
        assert!(!got[0].table.as_ref().unwrap().rows.is_empty());
        assert!(got[1].table.is_err());
    }
}
