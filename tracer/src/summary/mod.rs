//! The summary: everything a report shows, built once from the model (the `tracer.summary/1`
//! document). The renderers in [`crate::report`] read it and nothing below it; names, labels
//! and notes are made here ([`label`]) and only here.

pub mod callers;
pub mod cgroup;
pub mod costs;
pub mod findings;
pub mod kernel;
pub mod label;
pub mod leak_check;
pub mod merge;
pub mod notes;
pub mod oom;
pub mod plumbing;
pub mod site_frames;
pub mod suppress;
pub mod suspects;
pub mod system;
pub mod totals;
pub mod user;

use serde::Serialize;

pub use label::{Frame, human_bytes, visible};

/// The model's types a summary holds as they are: renderers reach them through here.
pub use crate::aggregate::{SyscallStats, timeline};
pub use crate::facts::{CgroupEvents, CgroupFacts, CgroupMemory, Pressure};

pub const SCHEMA: &str = "tracer.summary/1";

/// Sites and leaks listed without `--max-sites`.
pub const DEFAULT_MAX_SITES: usize = 200;

/// The traced process.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TargetInfo {
    pub pid: u32,
    /// The pid inside the process's own pid namespace (a container), when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_pid: Option<u32>,
    /// The launched command line, or the process's own (`/proc/PID/cmdline`) for `--pid`.
    pub command: Vec<String>,
    /// Exit status of a launched command; null for `--pid` runs or when killed by a signal.
    pub exit_code: Option<i32>,
    /// The signal that killed a launched command.
    pub signal: Option<i32>,
    /// Why tracing ended: "exited", "duration", "interrupted".
    pub ended_by: String,
    /// Names of the threads seen (by thread id), read while they ran.
    #[serde(default)]
    pub threads: std::collections::BTreeMap<u32, String>,
    /// `--pid`: the processes the target had created before tracer attached (its descendants
    /// then): not traced, `--follow` or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children_at_attach: Vec<u32>,
}

impl From<&crate::facts::TargetFacts> for TargetInfo {
    fn from(t: &crate::facts::TargetFacts) -> Self {
        TargetInfo {
            pid: t.pid,
            namespace_pid: t.namespace_pid,
            command: t.command.clone(),
            exit_code: t.exit_code,
            signal: t.signal,
            ended_by: t.ended_by.clone(),
            threads: t.threads.clone(),
            children_at_attach: t.children_at_attach.clone(),
        }
    }
}

/// What happened to the events on their way from the kernel.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct EventCounts {
    /// Events read from the ring buffer.
    pub received: u64,
    /// Events lost: the ring buffer was full, or per-thread state could not be stored.
    pub dropped: u64,
    /// Syscalls whose entry was not seen (in flight when tracing started).
    pub unpaired: u64,
    /// Tracepoint fields that could not be read.
    pub read_failures: u64,
    /// Records that did not decode.
    pub decode_errors: u64,
    /// Allocator calls made inside another (operator new's malloc), counted once as the outer.
    pub nested_allocator_calls: u64,
    /// Events recorded without a stack, for any of the reasons below or a failed walk.
    pub stacks_lost: u64,
    /// Of those: stacks that hashed to the slot of another one in the stack map.
    #[serde(default)]
    pub stack_collisions: u64,
    /// Of those: stacks that found the stack map with no free entry.
    #[serde(default)]
    pub stack_map_full: u64,
    /// Stacks walked with the unwind tables that were cut at the frame limit (64 frames).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stacks_truncated: u64,
    /// Stacks walked by frame pointer that were ended at a return address following no call
    /// instruction (a walk that left code keeping frame pointers).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fp_stacks_ended: u64,
    /// Stacks walked with the unwind tables whose hash was another stack's: walked again by
    /// frame pointer (so cut short where code has none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unwound_collisions: u64,
    /// Stacks walked with the unwind tables that found their map full: walked again by frame
    /// pointer.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unwound_map_full: u64,
    /// Child processes the traced process created: not traced (without `--follow`).
    #[serde(default)]
    pub child_processes: u64,
    /// `--follow`: events of a process whose creation was not seen (its fork event was
    /// lost): not in any process's figures.
    #[serde(skip_serializing_if = "is_zero")]
    pub unknown_process: u64,
    /// `--follow`: child processes that could not join the traced set (it was full, or the
    /// new process's id could not be read): not traced.
    #[serde(skip_serializing_if = "is_zero")]
    pub children_lost: u64,
    /// A recording made with `--record-max`: events cut from its start (the report covers
    /// the rest; blocks allocated before it are not known).
    #[serde(skip_serializing_if = "is_zero")]
    pub cut_from_recording: u64,
    /// A recording that ended before its finish record (tracer was killed, the disk filled):
    /// (where its last whole record ends, the file's length). The report covers the events
    /// before; stacks are symbolized at the end of a run, so its sites have none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_ends_early: Option<(u64, u64)>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Everything a report shows: the `tracer.summary/1` document.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub schema: &'static str,
    /// `--max-sites`: how many sites, leaks and suspects reports for people list (see
    /// [`Summary::listed`]); the summary holds every one.
    #[serde(skip)]
    pub max_sites: usize,
    /// `full`, or `kernel` (no uprobes: `user` is empty, `callers` are the call sites).
    pub mode: String,
    pub target: TargetInfo,
    pub duration_ms: f64,
    pub events: EventCounts,
    /// Every loss and caveat, warnings first (see [`notes`]): what each format shows first.
    pub notes: Vec<notes::Note>,
    pub syscalls: SyscallStats,
    pub user: user::UserSummary,
    pub kernel: kernel::KernelSummary,
    pub paths: kernel::PathsSummary,
    /// Memory syscalls and page faults by the user stack that made them.
    pub callers: Vec<callers::CallerReport>,
    /// Memory over time, with markers for brk, mmap and munmap calls.
    pub timeline: timeline::Timeline,
    /// What the numbers say, most bytes at stake first (see [`findings`]).
    pub findings: Vec<findings::Finding>,
    /// The program images that ran, when the process ran more than one (`execve`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageReport>,
    /// `--follow`, when the traced process created others: each process's own summary, in the
    /// order they were created; everything above is then the total of all of them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessReport>,
    /// How many sites, leaks and callers the text lists (`--max-sites` when given).
    #[serde(skip)]
    pub text_sites: Option<usize>,
    /// `--costs`: what tracing cost, as measured while it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub costs: Option<costs::Costs>,
    /// `--cgroup`: the cgroup as the kernel counts it (its usage, limit, events, pressure),
    /// beside the traced processes' own figures above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<CgroupFacts>,
    /// The kernel's OOM killer chose this process (a process's own summary; in an OOM report,
    /// with the processes beside it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom: Option<oom::OomVictim>,
    /// `--system`: the machine's processes and cgroups (everything above is then empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<system::SystemSummary>,
}

/// One process of a `--follow` run, and its summary.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProcessReport {
    pub pid: u32,
    /// The process that created it; null for the one traced from the start.
    pub ppid: Option<u32>,
    /// What it ran last.
    pub command: Vec<String>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Milliseconds after the first event: when it was created, and when it exited (null when
    /// it still ran at the end).
    pub started_ms: f64,
    pub ended_ms: Option<f64>,
    #[serde(flatten)]
    pub summary: Summary,
}

impl ImageReport {
    /// What was live when it ran the next program, in words; `None` for the last image.
    pub fn released(&self) -> Option<String> {
        let (blocks, bytes) = (self.live_blocks_at_exec?, self.live_bytes_at_exec?);
        Some(format!(
            "{} in {blocks} blocks live at its exec, released",
            human_bytes(bytes)
        ))
    }
}

/// A program image the process ran.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ImageReport {
    pub command: Vec<String>,
    /// The program file (empty for the first image, which is the command started or attached).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub exe: String,
    /// Milliseconds after the first event.
    pub started_ms: f64,
    /// What was live when it ran the next program: released by the exec, not leaked.
    pub live_blocks_at_exec: Option<u64>,
    pub live_bytes_at_exec: Option<u64>,
}

impl Summary {
    /// `--follow`: the processes, most bytes allocated first (then the first created).
    pub fn processes_by_bytes(&self) -> Vec<&ProcessReport> {
        let mut order: Vec<&ProcessReport> = self.processes.iter().collect();
        order.sort_by(|a, b| {
            b.summary
                .user
                .total_bytes()
                .cmp(&a.summary.user.total_bytes())
                .then(a.started_ms.total_cmp(&b.started_ms))
        });
        order
    }

    /// Bytes in live user allocations now (the timeline's last point), or None when they are
    /// not known: `--mode kernel` sees no allocator call.
    pub fn live_bytes_now(&self) -> Option<u64> {
        (self.mode != "kernel").then(|| {
            self.timeline
                .points
                .last()
                .map_or(self.user.live_bytes_at_end, |p| p.sample.live_heap)
        })
    }

    /// The summary as reports for people list it: at most [`Summary::max_sites`] sites,
    /// leaks and leak suspects (folded stacks and pprof, for tools, take every one).
    pub fn listed(&self) -> std::borrow::Cow<'_, Summary> {
        let u = &self.user;
        let over = [
            u.sites.len(),
            u.leaks.len(),
            u.leak_suspects.len(),
            self.callers.len(),
        ]
        .into_iter()
        .any(|n| n > self.max_sites);
        if over {
            std::borrow::Cow::Owned(self.truncated(self.max_sites))
        } else {
            std::borrow::Cow::Borrowed(self)
        }
    }

    /// The summary with at most `max` sites, leaks, leak suspects and callers, as a report
    /// built with `--max-sites max` lists them (each list is already in its order).
    pub fn truncated(&self, max: usize) -> Summary {
        let mut s = self.clone();
        s.user.sites.truncate(max);
        s.user.leaks.truncate(max);
        s.user.leak_suspects.truncate(max);
        s.callers.truncate(max);
        s
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use tracer_common::{EventHeader, Syscall, SyscallEvent, kind};

    use super::*;

    /// The user part of a summary with one 64-byte block allocated at `frame.addr`, whose
    /// stack symbolizes to `frame`.
    pub fn one_site(frame: Frame, allocator_files: Vec<String>) -> user::UserSummary {
        let mut heap = crate::aggregate::HeapStats::default();
        heap.on_alloc(&crate::events::testing::alloc_call(
            crate::events::testing::alloc(tracer_common::AllocFn::Malloc, 64, 0xa0, frame.addr, 1),
        ));
        let mut sym = crate::symbolize::TableSymbolizer::default();
        sym.table.insert(frame.addr, vec![frame]);
        user::build_symbolizing(
            &heap,
            &Default::default(),
            &std::collections::HashMap::<i32, Vec<u64>>::new(),
            &mut sym,
            user::BuildOptions {
                now_ns: 10,
                min_age_ns: 0,
                trend: &Default::default(),
                resident: None,
                allocator_files,
            },
        )
    }

    /// A listed site on the brk path whose one frame is `function` at `app.c:line`.
    pub fn site_at(
        function: &str,
        line: u32,
        stats: crate::aggregate::heap::SiteStats,
    ) -> user::SiteReport {
        user::SiteReport {
            stack: vec![Frame {
                function: Some(function.into()),
                file: Some("app.c".into()),
                line: Some(line),
                ..Frame::unknown(0x401000)
            }]
            .into(),
            stats,
            path: "brk",
            paths: Default::default(),
            caused: Default::default(),
            bytes_error: None,
            marks: Default::default(),
        }
    }

    pub fn sample_summary() -> Summary {
        let mut syscalls = SyscallStats::new(4096);
        let mut ev = |syscall: Syscall, args: [u64; 6], ret: i64| {
            syscalls.on_syscall(&crate::events::testing::call(SyscallEvent {
                header: EventHeader {
                    kind: kind::SYSCALL,
                    ..Default::default()
                },
                syscall: syscall as u32,
                stack_id: -1,
                args,
                ret,
                duration_ns: 0,
                alloc_enter_ns: 0,
            }));
        };
        ev(Syscall::Brk, [0; 6], 0x1000_0000);
        ev(Syscall::Brk, [0x1002_1000, 0, 0, 0, 0, 0], 0x1002_1000);
        ev(
            Syscall::Mmap,
            [0, 200_000, 3, 0x22, u64::MAX, 0],
            0x7f00_0000_0000,
        );
        ev(Syscall::Mmap, [0, 4096, 1, 0x01, 3, 0], 0x7f00_1000_0000);
        ev(Syscall::Munmap, [0x7f00_0000_0000, 200_000, 0, 0, 0, 0], 0);
        ev(
            Syscall::Mremap,
            [0x7f00_1000_0000, 4096, 8192, 1, 0, 0],
            0x7f00_2000_0000,
        );
        let mut sym = crate::symbolize::TableSymbolizer::default();
        let user = user::build_symbolizing(
            &crate::aggregate::HeapStats::default(),
            &Default::default(),
            &std::collections::HashMap::<i32, Vec<u64>>::new(),
            &mut sym,
            user::BuildOptions {
                now_ns: 0,
                min_age_ns: 0,
                trend: &Default::default(),
                resident: None,
                allocator_files: Vec::new(),
            },
        );
        Summary {
            schema: SCHEMA,
            max_sites: 10,
            mode: "full".into(),
            callers: Vec::new(),
            target: TargetInfo {
                pid: 4242,
                namespace_pid: None,
                command: vec!["./app".into(), "--flag".into()],
                exit_code: Some(3),
                signal: None,
                ended_by: "exited".into(),
                threads: Default::default(),
                children_at_attach: Vec::new(),
            },
            duration_ms: 12.5,
            events: EventCounts {
                received: 6,
                dropped: 2,
                ..Default::default()
            },
            notes: Vec::new(),
            syscalls,
            user,
            kernel: Default::default(),
            paths: Default::default(),
            timeline: Default::default(),
            findings: Vec::new(),
            images: Vec::new(),
            costs: None,
            cgroup: None,
            oom: None,
            system: None,
            processes: Vec::new(),
            text_sites: None,
        }
    }
}
