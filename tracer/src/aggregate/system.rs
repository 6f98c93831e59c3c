//! `--system`: every process on the machine as the kernel counted it (see
//! `tracer_common::ProcessCounts`), with what userspace read of each when it first saw it.

use std::collections::BTreeMap;

use tracer_common::ProcessCounts;

/// One process of the machine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SystemProcess {
    /// Its name as the kernel knows it (`/proc/PID/comm`); empty when it was gone before it
    /// was first read.
    pub comm: String,
    /// Its memory cgroup (`/proc/PID/cgroup`: the v1 memory controller's, else the unified
    /// hierarchy's), relative to the hierarchy's root.
    pub cgroup: String,
    /// The kernel's counts since tracing began.
    pub counts: ProcessCounts,
    /// Resident pages when last read; `None` once it is gone.
    pub resident_pages: Option<u64>,
}

/// Every process the kernel counted, by pid.
#[derive(Debug, Clone, Default)]
pub struct SystemModel {
    pub processes: BTreeMap<u32, SystemProcess>,
}

impl SystemModel {
    /// The counts of `pid` as read now; `identify` names a process seen for the first time.
    pub fn counted(
        &mut self,
        pid: u32,
        counts: ProcessCounts,
        identify: impl FnOnce() -> (String, String),
    ) {
        let p = self.processes.entry(pid).or_insert_with(|| {
            let (comm, cgroup) = identify();
            SystemProcess {
                comm,
                cgroup,
                ..SystemProcess::default()
            }
        });
        p.counts = counts;
    }

    /// Process `pid`, known now even if the kernel counted nothing of it (the largest are
    /// ranked whether or not they did anything).
    pub fn known(&mut self, pid: u32, identify: impl FnOnce() -> (String, String)) {
        self.processes.entry(pid).or_insert_with(|| {
            let (comm, cgroup) = identify();
            SystemProcess {
                comm,
                cgroup,
                ..SystemProcess::default()
            }
        });
    }

    /// Every process's resident pages as `resident` reads them now (`None`: gone).
    pub fn read_resident(&mut self, resident: impl Fn(u32) -> Option<u64>) {
        for (&pid, p) in &mut self.processes {
            p.resident_pages = resident(pid);
        }
    }
}
