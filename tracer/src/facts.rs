//! What a run ends with about its target and the kernel, as recordings keep it: facts, in
//! types of the recording's own, so that a report's fields can be renamed or reshaped without
//! changing the file format. Reports build their own types from these (`summary::TargetInfo`,
//! `summary::kernel::KernelStack`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The traced process, as the run saw it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TargetFacts {
    pub pid: u32,
    /// The pid inside the process's own pid namespace (a container), when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_pid: Option<u32>,
    /// The launched command line, or the process's own (`/proc/PID/cmdline`) for `--pid`.
    pub command: Vec<String>,
    /// Exit status of a launched command; none for `--pid` runs or when killed by a signal.
    pub exit_code: Option<i32>,
    /// The signal that killed a launched command.
    pub signal: Option<i32>,
    /// Why tracing ended: "exited", "duration", "interrupted", ...
    pub ended_by: String,
    /// Names of the threads seen (by thread id), read while they ran.
    #[serde(default)]
    pub threads: BTreeMap<u32, String>,
    /// `--pid`: the processes the target had created before tracer attached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children_at_attach: Vec<u32>,
}

/// How a run ended, or that it still runs (a snapshot taken while tracing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EndedBy {
    #[default]
    Running,
    /// The target exited (with `--follow`, every process it created too).
    Exited,
    /// `--duration` was reached.
    Duration,
    /// Ctrl-C, SIGTERM, or `q` in `tracer top`.
    Interrupted,
}

impl EndedBy {
    /// As [`TargetFacts::ended_by`] and the summary's `target.ended_by` say it.
    pub fn name(self) -> &'static str {
        match self {
            EndedBy::Running => "running",
            EndedBy::Exited => "exited",
            EndedBy::Duration => "duration",
            EndedBy::Interrupted => "interrupted",
        }
    }
}

/// A kernel allocation path (`--kernel-stacks`): its frames symbolized from kallsyms,
/// innermost first, and what was allocated along it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelPath {
    pub stack: Vec<String>,
    pub pages: u64,
    pub slab_objects: u64,
}
