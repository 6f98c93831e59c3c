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

/// `--cgroup`: the followed cgroup as the kernel counts it, read from its files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupFacts {
    /// The cgroup's directory, as given (resolved).
    pub path: String,
    /// 1 (a v1 hierarchy, such as `/sys/fs/cgroup/memory`) or 2 (the unified hierarchy).
    pub version: u8,
    /// Its memory numbers when the summary was made.
    pub memory: CgroupMemory,
    /// Its processes when the summary was made (its child cgroups' included).
    pub processes: Vec<u32>,
    /// Its memory use while tracing: (ms after tracing began, bytes), about once a second.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usage: Vec<(f64, u64)>,
}

/// A cgroup's memory numbers; `None` where the kernel does not keep one (the memory controller
/// is not enabled in that hierarchy, or the version has no such file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupMemory {
    /// `memory.current` (v2), `memory.usage_in_bytes` (v1).
    pub usage_bytes: Option<u64>,
    /// The most it ever used: `memory.peak` (v2), `memory.max_usage_in_bytes` (v1).
    #[serde(default)]
    pub peak_bytes: Option<u64>,
    /// `memory.max` (v2), `memory.limit_in_bytes` (v1); `None` when unlimited.
    pub limit_bytes: Option<u64>,
    /// `memory.high` (v2): where the kernel starts to throttle; `None` when unlimited.
    pub high_bytes: Option<u64>,
    /// From `memory.stat`: anonymous memory (v1: `total_rss`).
    pub anon_bytes: Option<u64>,
    /// From `memory.stat`: the page cache (v1: `total_cache`).
    pub file_bytes: Option<u64>,
    /// Kernel memory charged to it (v1: `memory.kmem.usage_in_bytes`).
    pub kernel_bytes: Option<u64>,
    /// Of that, slab (v2 only).
    pub slab_bytes: Option<u64>,
    /// Socket buffers (v1: `memory.kmem.tcp.usage_in_bytes`).
    pub sock_bytes: Option<u64>,
    /// `memory.events` (v2); v1 counts `max` as `memory.failcnt` and `oom_kill` in
    /// `memory.oom_control`.
    pub events: CgroupEvents,
    /// Memory pressure: the cgroup's own (`memory.pressure`, v2), else the machine's
    /// (`/proc/pressure/memory`), as `pressure_scope` says.
    pub pressure: Option<Pressure>,
    /// `cgroup` or `machine`.
    #[serde(default)]
    pub pressure_scope: String,
}

/// The memory events a cgroup counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupEvents {
    /// Times usage went over `memory.high` (v2).
    pub high: Option<u64>,
    /// Times usage was about to go over the limit.
    pub max: Option<u64>,
    /// Times the limit was hit and reclaim failed (v2).
    pub oom: Option<u64>,
    /// Processes the OOM killer killed in it.
    pub oom_kill: Option<u64>,
}

/// A pressure stall line pair (`some`, `full`): the share of time tasks waited for memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Pressure {
    /// Percent of the last 10 s, 60 s, in which some task waited.
    pub some_avg10: f64,
    pub some_avg60: f64,
    /// Microseconds some task waited, in all.
    pub some_total_us: u64,
    /// The same for all tasks at once.
    pub full_avg10: f64,
    pub full_avg60: f64,
    pub full_total_us: u64,
}
