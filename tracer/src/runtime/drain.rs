//! Moving records from the ring into the session, the recording and the probes.

use super::*;

/// Moves records from the ring buffer into the session (and the recording).
pub(super) struct Drain<'a> {
    pub(super) session: &'a mut Session,
    /// The recording, until writing it fails (a full disk): then it is dropped, which
    /// removes it, and the run goes on.
    pub(super) recorder: Option<Recorder>,
    pub(super) record_failed: bool,
    /// Probes for libraries loaded later; none in `--mode kernel`.
    pub(super) allocators: Option<&'a mut AllocatorProbes>,
    pub(super) files: &'a mut TargetFiles,
    /// Thread names, read from /proc when a thread is first seen (while it still runs).
    pub(super) threads: BTreeMap<u32, String>,
    /// A file was mapped executable since the last snapshot.
    pub(super) new_code: bool,
    /// The command line of the program the process runs now, after an exec.
    pub(super) command: Option<Vec<String>>,
}

impl Drain<'_> {
    /// Takes at most `budget` records; returns whether the budget ran out (more may wait).
    pub(super) fn drain(
        &mut self,
        ring: &mut RingBuf<MapData>,
        ebpf: &mut Ebpf,
        budget: usize,
    ) -> Result<bool> {
        for _ in 0..budget {
            let Some(record) = ring.next() else {
                return Ok(false);
            };
            if let Ok(header) = events::decode_header(&record)
                && header.tgid == self.session.pid
                && !self.threads.contains_key(&header.tid)
            {
                let name = thread_name(header.tgid, header.tid).unwrap_or_default();
                self.threads.insert(header.tid, name);
            }
            if let Some(recorder) = self.recorder.as_mut()
                && let Err(e) = recorder.event(&record)
            {
                eprintln!(
                    "tracer: warning: recording stopped after {} events ({:#}); the partial \
                     recording is discarded and tracing goes on",
                    recorder.events(),
                    anyhow::Error::from(e)
                );
                self.recorder = None;
                self.record_failed = true;
            }
            match self.session.process(&record) {
                Some(Followup::Mapped(lib)) => {
                    self.new_code = true;
                    // A file mapped executable after start (the libraries of a launched
                    // command, dlopen): kept open to symbolize, and probed if it brings an
                    // allocator. Calls made before this point are not seen.
                    drop(record);
                    let Some(via) = self.files.open_mapping_at(&lib.path, lib.addr) else {
                        log::warn!("{}: could not be opened: not probed", lib.path.display());
                        continue;
                    };
                    if let Some(allocators) = self.allocators.as_deref_mut()
                        && let Err(e) =
                            allocators.attach_file(ebpf, &lib.path, &via, self.session.pid)
                    {
                        log::warn!("{:#}", anyhow::Error::from(e));
                    }
                }
                Some(Followup::Exec { held, ts_ns }) => {
                    drop(record);
                    self.on_exec(ebpf, held, ts_ns);
                }
                None => {}
            }
        }
        Ok(true)
    }
}

impl Drain<'_> {
    /// Reads every known thread's name again: threads rename themselves
    /// (pthread_setname_np) after they start. A thread gone keeps its last name.
    pub(super) fn refresh_thread_names(&mut self) {
        let pid = self.session.pid;
        for (&tid, name) in self.threads.iter_mut() {
            if let Some(now) = thread_name(pid, tid)
                && !now.is_empty()
            {
                *name = now;
            }
        }
    }

    /// The process ran a new program: the session and the recording learn its image, its
    /// files are opened and probed (with what its loader will load, when it is held), and a
    /// held process is continued.
    pub(super) fn on_exec(&mut self, ebpf: &mut Ebpf, held: bool, ts_ns: u64) {
        let pid = self.session.pid;
        let image = ExecImage {
            ts_ns,
            command: target::cmdline(pid as i32),
            exe: std::fs::read_link(format!("/proc/{pid}/exe"))
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            maps: std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default(),
        };
        self.session.on_exec(&image);
        if let Some(recorder) = self.recorder.as_mut()
            && let Err(e) = recorder.exec(&image)
        {
            eprintln!(
                "tracer: warning: recording stopped ({:#}); the partial recording is discarded \
                 and tracing goes on",
                anyhow::Error::from(e)
            );
            self.recorder = None;
            self.record_failed = true;
        }
        self.files.open_mapped(&image.maps);
        self.new_code = true;
        self.command = Some(image.command.clone());
        if let Some(allocators) = self.allocators.as_deref_mut() {
            let mut paths = self.session.space.exec_files();
            if held && let Some(loader) = paths.iter().find(|f| is_loader(f)).cloned() {
                let env = target::loader_env(pid as i32);
                paths.extend(needed_libraries_with(&loader, Path::new(&image.exe), &env));
            }
            paths.retain(|f| !is_loader(f));
            for path in paths {
                let Some(via) = self.files.open_path(&path) else {
                    continue;
                };
                if let Err(e) = allocators.attach_file(ebpf, &path, &via, pid) {
                    log::warn!("{:#}", anyhow::Error::from(e));
                }
            }
        }
        if held {
            kill(pid as i32, libc::SIGCONT);
        }
    }

    /// What a report needs as of now (see [`Snapshotter::finish`]).
    pub(super) fn snapshot(
        &mut self,
        snapshotter: &mut Snapshotter,
        probes: &Probes,
        ending: Ending,
        max_sites: Option<usize>,
    ) -> Finish {
        if std::mem::take(&mut self.new_code) {
            snapshotter.forget_symbols();
        }
        self.refresh_thread_names();
        if let Some(command) = self.command.take() {
            snapshotter.target.command = command;
        }
        let counters = probes.counters().map(|c| c.to_vec()).unwrap_or_else(|e| {
            log::warn!("reading the kernel-side counters: {e}");
            Vec::new()
        });
        let allocators = self.allocators.as_deref();
        snapshotter.finish(
            Now {
                session: self.session,
                ebpf: &probes.ebpf,
                counters,
                kernel_traced: probes.kernel_traced,
                allocator_files: allocators.map(|a| a.files()).unwrap_or_default(),
                uprobe_links: allocators
                    .map(|a| a.links().name().to_string())
                    .unwrap_or_default(),
                substitutes: self.files.substitutes(),
                threads: &self.threads,
            },
            ending,
            max_sites,
        )
    }
}

/// A thread's name now (`/proc/PID/task/TID/comm`), if it still runs.
pub(super) fn thread_name(pid: u32, tid: u32) -> Option<String> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
    Some(comm.trim_end().to_string())
}
