//! Who made the kernel work: memory syscalls and page faults by the user stack that made them.
//!
//! Every memory syscall carries the stack of its caller, and with `--fault-stacks` every user
//! page fault carries the stack that touched the page. In `--mode kernel`, where no allocator
//! call is probed, these are the call sites: the stack of a `brk` is the `malloc` that grew the
//! heap, that of a fault the code that first wrote the memory.

use std::collections::HashMap;

use crate::events::SyscallCall;
use serde::Serialize;
use tracer_common::{FaultEvent, Syscall};

use super::syscalls::{is_error, page_up};

/// What one stack made the kernel do. Bytes are page-rounded lengths of successful calls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallerStats {
    pub brk_calls: u64,
    pub brk_grow_bytes: u64,
    pub brk_shrink_bytes: u64,
    pub mmap_calls: u64,
    pub mmap_bytes: u64,
    pub munmap_calls: u64,
    pub munmap_bytes: u64,
    pub mremap_calls: u64,
    pub mprotect_calls: u64,
    pub mprotect_bytes: u64,
    pub madvise_calls: u64,
    pub madvise_bytes: u64,
    pub page_faults: u64,
}

impl CallerStats {
    /// Address space this stack asked for: heap growth and new mappings.
    pub fn requested_bytes(&self) -> u64 {
        self.brk_grow_bytes.saturating_add(self.mmap_bytes)
    }
}

/// Statistics by user stack id; calls whose stack could not be taken are under -1.
#[derive(Debug, Clone, Default)]
pub struct Callers {
    by_stack: HashMap<i32, CallerStats>,
}

impl Callers {
    /// A memory syscall; `brk_before` is the program break before it, when known.
    pub fn on_syscall(&mut self, e: &SyscallCall, brk_before: Option<u64>) {
        let syscall = e.syscall;
        if syscall == Syscall::Openat {
            return;
        }
        let s = self.by_stack.entry(e.stack_id.max(-1)).or_default();
        let ok = !is_error(e.ret);
        let len = |n: u64| if ok { page_up(n) } else { 0 };
        let a = e.args;
        match syscall {
            Syscall::Brk => {
                s.brk_calls += 1;
                if ok
                    && a[0] != 0
                    && let Some(before) = brk_before
                {
                    let now = e.ret as u64;
                    if now > before {
                        s.brk_grow_bytes = s.brk_grow_bytes.saturating_add(now - before);
                    } else {
                        s.brk_shrink_bytes = s.brk_shrink_bytes.saturating_add(before - now);
                    }
                }
            }
            Syscall::Mmap => {
                s.mmap_calls += 1;
                s.mmap_bytes = s.mmap_bytes.saturating_add(len(a[1]));
            }
            Syscall::Munmap => {
                s.munmap_calls += 1;
                s.munmap_bytes = s.munmap_bytes.saturating_add(len(a[1]));
            }
            Syscall::Mremap => s.mremap_calls += 1,
            Syscall::Mprotect => {
                s.mprotect_calls += 1;
                s.mprotect_bytes = s.mprotect_bytes.saturating_add(len(a[1]));
            }
            Syscall::Madvise => {
                s.madvise_calls += 1;
                s.madvise_bytes = s.madvise_bytes.saturating_add(len(a[1]));
            }
            Syscall::Openat => {}
        }
    }

    /// A user page fault (counted by stack only when stacks are taken).
    pub fn on_fault(&mut self, e: &FaultEvent) {
        if e.stack_id >= 0 {
            self.by_stack.entry(e.stack_id).or_default().page_faults += 1;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (i32, &CallerStats)> {
        self.by_stack.iter().map(|(&id, s)| (id, s))
    }

    /// The stack ids a report needs read from the kernel.
    pub fn stack_ids(&self) -> impl Iterator<Item = i32> + '_ {
        self.by_stack.keys().copied().filter(|&id| id >= 0)
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::{EventHeader, kind};

    use super::*;

    fn call(syscall: Syscall, stack_id: i32, args: [u64; 6], ret: i64) -> SyscallCall {
        crate::events::testing::call(tracer_common::SyscallEvent {
            header: EventHeader {
                kind: kind::SYSCALL,
                ..Default::default()
            },
            syscall: syscall as u32,
            stack_id,
            args,
            ret,
            ..Default::default()
        })
    }

    #[test]
    fn syscalls_and_faults_by_stack() {
        let mut c = Callers::default();
        let brk = 0x5000_0000;
        c.on_syscall(
            &call(
                Syscall::Brk,
                3,
                [brk + 0x21000, 0, 0, 0, 0, 0],
                (brk + 0x21000) as i64,
            ),
            Some(brk),
        );
        c.on_syscall(
            &call(Syscall::Brk, 3, [brk, 0, 0, 0, 0, 0], brk as i64),
            Some(brk + 0x21000),
        );
        c.on_syscall(
            &call(
                Syscall::Mmap,
                5,
                [0, 200_000, 3, 0x22, u64::MAX, 0],
                0x7f00_0000_0000,
            ),
            None,
        );
        c.on_syscall(
            &call(Syscall::Mmap, 5, [0, 1 << 50, 3, 0x22, u64::MAX, 0], -12),
            None,
        );
        c.on_syscall(
            &call(
                Syscall::Munmap,
                -14,
                [0x7f00_0000_0000, 200_000, 0, 0, 0, 0],
                0,
            ),
            None,
        );
        c.on_syscall(&call(Syscall::Openat, 5, [0; 6], 3), None);
        for stack_id in [5, 5, -1] {
            c.on_fault(&FaultEvent {
                stack_id,
                ..Default::default()
            });
        }
        let get = |id: i32| {
            c.iter()
                .find(|(i, _)| *i == id)
                .map(|(_, s)| s.clone())
                .unwrap()
        };
        let brk_site = get(3);
        assert_eq!(
            (
                brk_site.brk_calls,
                brk_site.brk_grow_bytes,
                brk_site.brk_shrink_bytes
            ),
            (2, 0x21000, 0x21000)
        );
        let mmap_site = get(5);
        assert_eq!(
            (mmap_site.mmap_calls, mmap_site.mmap_bytes),
            (2, 200_704),
            "a failed call has no bytes"
        );
        assert_eq!(mmap_site.page_faults, 2);
        assert_eq!(mmap_site.requested_bytes(), 200_704);
        let no_stack = get(-1);
        assert_eq!((no_stack.munmap_calls, no_stack.munmap_bytes), (1, 200_704));
        let mut ids: Vec<i32> = c.stack_ids().collect();
        ids.sort();
        assert_eq!(ids, [3, 5]);
    }
}
