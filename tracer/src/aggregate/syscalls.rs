//! Accounting of brk, mmap, munmap and mremap calls.

use crate::events::SyscallCall;
use serde::Serialize;
use tracer_common::Syscall;

const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_TYPE: u64 = 0x0f;
const MAP_ANONYMOUS: u64 = 0x20;

/// `len` rounded up to whole pages; lengths that no process can map stay at the top of the
/// address range instead of wrapping to zero.
pub fn page_up(len: u64) -> u64 {
    len.checked_next_multiple_of(4096).unwrap_or(u64::MAX)
}

/// A raw syscall return value that is a `-errno`.
pub fn is_error(ret: i64) -> bool {
    (-4095..0).contains(&ret)
}

/// `brk`: the heap's end moving. Grown and shrunk bytes are measured from the previous break,
/// which the first call (glibc's `brk(0)` query) establishes.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct BrkStats {
    /// Every call, queries and failures included.
    pub calls: u64,
    /// `brk(0)` queries.
    pub queries: u64,
    pub grow_bytes: u64,
    pub shrink_bytes: u64,
    /// Calls that asked for a new break and did not get it.
    pub failed: u64,
    /// The break after the last call, if known.
    #[serde(skip)]
    pub current_break: Option<u64>,
}

/// `mmap`: bytes are the page-rounded lengths of successful calls.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MmapStats {
    pub calls: u64,
    pub bytes: u64,
    pub anon_calls: u64,
    pub anon_bytes: u64,
    pub file_calls: u64,
    pub file_bytes: u64,
    pub private_calls: u64,
    pub private_bytes: u64,
    pub shared_calls: u64,
    pub shared_bytes: u64,
    pub failed: u64,
}

/// `munmap`: bytes are the page-rounded lengths of successful calls.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MunmapStats {
    pub calls: u64,
    pub bytes: u64,
    pub failed: u64,
}

/// `mremap`: old and new page-rounded lengths of successful calls.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MremapStats {
    pub calls: u64,
    pub old_bytes: u64,
    pub new_bytes: u64,
    pub failed: u64,
}

/// `mprotect`: commits are calls that make memory writable (glibc commits thread-arena heaps
/// this way); bytes page-rounded.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MprotectStats {
    pub calls: u64,
    pub commit_bytes: u64,
    pub failed: u64,
}

/// `madvise`: memory handed back with MADV_DONTNEED (and MADV_FREE), page-rounded.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MadviseStats {
    pub calls: u64,
    pub dontneed_bytes: u64,
    pub free_bytes: u64,
    /// Of the bytes handed back (DONTNEED and FREE), those on pages resident then, first
    /// touched while traced (the lengths above count address space, reserved or not).
    pub resident_bytes: u64,
    pub failed: u64,
}

pub const PROT_WRITE: u64 = 0x2;
pub const MADV_DONTNEED: u64 = 4;
pub const MADV_FREE: u64 = 8;

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SyscallStats {
    pub brk: BrkStats,
    pub mmap: MmapStats,
    pub munmap: MunmapStats,
    pub mremap: MremapStats,
    pub mprotect: MprotectStats,
    pub madvise: MadviseStats,
    #[serde(skip)]
    page_size: u64,
}

impl SyscallStats {
    pub fn new(page_size: u64) -> Self {
        assert!(page_size.is_power_of_two(), "page size {page_size}");
        SyscallStats {
            page_size,
            ..Default::default()
        }
    }

    /// Starts brk accounting from a break read from the process (for `--pid` runs, where the
    /// calls that set it happened before attaching).
    pub fn set_initial_break(&mut self, brk: u64) {
        self.brk.current_break = Some(brk);
    }

    fn pages(&self, len: u64) -> u64 {
        len.checked_add(self.page_size - 1)
            .map_or(len, |l| l & !(self.page_size - 1))
    }

    pub fn on_syscall(&mut self, e: &SyscallCall) {
        let syscall = e.syscall;
        let failed = is_error(e.ret);
        let a = e.args;
        match syscall {
            Syscall::Brk => self.on_brk(a[0], e.ret as u64),
            Syscall::Mmap => {
                let m = &mut self.mmap;
                m.calls += 1;
                if failed {
                    m.failed += 1;
                    return;
                }
                let len = self.pages(a[1]);
                let m = &mut self.mmap;
                let flags = a[3];
                m.bytes = m.bytes.saturating_add(len);
                if flags & MAP_ANONYMOUS != 0 {
                    m.anon_calls += 1;
                    m.anon_bytes = m.anon_bytes.saturating_add(len);
                } else {
                    m.file_calls += 1;
                    m.file_bytes = m.file_bytes.saturating_add(len);
                }
                // MAP_SHARED_VALIDATE (0x03) is a shared mapping too.
                if flags & MAP_TYPE == MAP_PRIVATE {
                    m.private_calls += 1;
                    m.private_bytes = m.private_bytes.saturating_add(len);
                } else if flags & MAP_SHARED != 0 {
                    m.shared_calls += 1;
                    m.shared_bytes = m.shared_bytes.saturating_add(len);
                }
            }
            Syscall::Munmap => {
                self.munmap.calls += 1;
                if failed {
                    self.munmap.failed += 1;
                } else {
                    self.munmap.bytes = self.munmap.bytes.saturating_add(self.pages(a[1]));
                }
            }
            // Arrives as an OpenEvent; it names files for the address-space model.
            Syscall::Openat => {}
            Syscall::Mprotect => {
                self.mprotect.calls += 1;
                if failed {
                    self.mprotect.failed += 1;
                } else if a[2] & PROT_WRITE != 0 {
                    self.mprotect.commit_bytes =
                        self.mprotect.commit_bytes.saturating_add(self.pages(a[1]));
                }
            }
            Syscall::Madvise => {
                self.madvise.calls += 1;
                if failed {
                    self.madvise.failed += 1;
                } else if a[2] == MADV_DONTNEED {
                    self.madvise.dontneed_bytes =
                        self.madvise.dontneed_bytes.saturating_add(self.pages(a[1]));
                } else if a[2] == MADV_FREE {
                    self.madvise.free_bytes =
                        self.madvise.free_bytes.saturating_add(self.pages(a[1]));
                }
            }
            Syscall::Mremap => {
                self.mremap.calls += 1;
                if failed {
                    self.mremap.failed += 1;
                } else {
                    self.mremap.old_bytes = self.mremap.old_bytes.saturating_add(self.pages(a[1]));
                    self.mremap.new_bytes = self.mremap.new_bytes.saturating_add(self.pages(a[2]));
                }
            }
        }
    }

    /// The kernel's `brk(addr)` returns the break after the call: `addr` on success, the old
    /// break when it refuses (and for `brk(0)`, which only asks).
    fn on_brk(&mut self, requested: u64, result: u64) {
        let b = &mut self.brk;
        b.calls += 1;
        if requested == 0 {
            b.queries += 1;
        } else if result != requested {
            b.failed += 1;
        } else if let Some(prev) = b.current_break {
            if result > prev {
                b.grow_bytes = b.grow_bytes.saturating_add(result - prev);
            } else {
                b.shrink_bytes = b.shrink_bytes.saturating_add(prev - result);
            }
        }
        b.current_break = Some(result);
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::{EventHeader, kind};

    use super::*;

    fn call(syscall: Syscall, args: &[u64], ret: i64) -> SyscallCall {
        let mut a = [0; 6];
        a[..args.len()].copy_from_slice(args);
        crate::events::testing::call(tracer_common::SyscallEvent {
            header: EventHeader {
                kind: kind::SYSCALL,
                ..Default::default()
            },
            syscall: syscall as u32,
            stack_id: -1,
            args: a,
            ret,
            duration_ns: 0,
            alloc_enter_ns: 0,
        })
    }

    const ENOMEM: i64 = -12;

    #[test]
    fn brk_grow_and_shrink_from_the_first_query() {
        let mut s = SyscallStats::new(4096);
        let base = 0x5555_0000_0000u64;
        for e in [
            call(Syscall::Brk, &[0], base as i64),
            call(Syscall::Brk, &[base + 0x21000], (base + 0x21000) as i64),
            call(Syscall::Brk, &[base + 0x42000], (base + 0x42000) as i64),
            // Refused: the break stays where it was.
            call(
                Syscall::Brk,
                &[base + 0x1_0000_0000_0000],
                (base + 0x42000) as i64,
            ),
            call(Syscall::Brk, &[base + 0x10000], (base + 0x10000) as i64),
            call(Syscall::Brk, &[0], (base + 0x10000) as i64),
        ] {
            s.on_syscall(&e);
        }
        assert_eq!(
            s.brk,
            BrkStats {
                calls: 6,
                queries: 2,
                grow_bytes: 0x42000,
                shrink_bytes: 0x32000,
                failed: 1,
                current_break: Some(base + 0x10000),
            }
        );
    }

    #[test]
    fn brk_without_a_known_break_counts_from_the_next_call() {
        let mut s = SyscallStats::new(4096);
        s.on_syscall(&call(Syscall::Brk, &[0x2000], 0x2000));
        s.on_syscall(&call(Syscall::Brk, &[0x5000], 0x5000));
        assert_eq!((s.brk.grow_bytes, s.brk.calls), (0x3000, 2));

        let mut s = SyscallStats::new(4096);
        s.set_initial_break(0x1000);
        s.on_syscall(&call(Syscall::Brk, &[0x2000], 0x2000));
        assert_eq!(s.brk.grow_bytes, 0x1000);
    }

    #[test]
    fn mmap_kinds_rounding_and_failures() {
        let mut s = SyscallStats::new(4096);
        let anon_private = 0x22;
        let file_shared = 0x01;
        let file_shared_validate = 0x03;
        let file_private = 0x02;
        for e in [
            call(
                Syscall::Mmap,
                &[0, 100, 3, anon_private, u64::MAX, 0],
                0x7000_0000,
            ),
            call(Syscall::Mmap, &[0, 8192, 1, file_shared, 3, 0], 0x7000_1000),
            call(
                Syscall::Mmap,
                &[0, 4096, 1, file_shared_validate, 3, 0],
                0x7000_4000,
            ),
            call(
                Syscall::Mmap,
                &[0, 12288, 1, file_private, 3, 0],
                0x7000_8000,
            ),
            call(
                Syscall::Mmap,
                &[0, 1 << 40, 3, anon_private, u64::MAX, 0],
                ENOMEM,
            ),
        ] {
            s.on_syscall(&e);
        }
        assert_eq!(
            s.mmap,
            MmapStats {
                calls: 5,
                bytes: 4096 + 8192 + 4096 + 12288,
                anon_calls: 1,
                anon_bytes: 4096,
                file_calls: 3,
                file_bytes: 8192 + 4096 + 12288,
                private_calls: 2,
                private_bytes: 4096 + 12288,
                shared_calls: 2,
                shared_bytes: 8192 + 4096,
                failed: 1,
            }
        );
    }

    #[test]
    fn munmap_and_mremap() {
        let mut s = SyscallStats::new(4096);
        for e in [
            call(Syscall::Munmap, &[0x7000_0000, 4097], 0),
            call(Syscall::Munmap, &[0x7000_0001, 4096], -22),
            call(
                Syscall::Mremap,
                &[0x7000_0000, 8192, 65536, 1, 0],
                0x7100_0000,
            ),
            call(Syscall::Mremap, &[0x7000_0000, 8192, 1 << 45, 0, 0], ENOMEM),
        ] {
            s.on_syscall(&e);
        }
        assert_eq!(
            s.munmap,
            MunmapStats {
                calls: 2,
                bytes: 8192,
                failed: 1
            }
        );
        assert_eq!(
            s.mremap,
            MremapStats {
                calls: 2,
                old_bytes: 8192,
                new_bytes: 65536,
                failed: 1
            }
        );
    }

    #[test]
    fn mprotect_commits_and_madvise_returns() {
        let mut s = SyscallStats::new(4096);
        for e in [
            call(Syscall::Mprotect, &[0x7000_0000, 135168, 3], 0),
            call(Syscall::Mprotect, &[0x7000_0000, 4096, 0], 0), // a guard page: not a commit
            call(Syscall::Mprotect, &[0x7000_0001, 4096, 3], -22),
            call(Syscall::Madvise, &[0x7000_0000, 8192, 4], 0),
            call(Syscall::Madvise, &[0x7000_0000, 4096, 8], 0),
            call(Syscall::Madvise, &[0x7000_0000, 4096, 14], 0), // MADV_HUGEPAGE
        ] {
            s.on_syscall(&e);
        }
        assert_eq!(
            s.mprotect,
            MprotectStats {
                calls: 3,
                commit_bytes: 135168,
                failed: 1
            }
        );
        assert_eq!(
            s.madvise,
            MadviseStats {
                calls: 3,
                dontneed_bytes: 8192,
                free_bytes: 4096,
                resident_bytes: 0,
                failed: 0
            }
        );
    }

    #[test]
    fn error_range() {
        assert!(is_error(-1));
        assert!(is_error(-4095));
        assert!(!is_error(-4096));
        assert!(!is_error(0));
        // A high user address returned by mmap is not an error even though it is "negative".
        assert!(!is_error(0xffff_8000_0000_0000u64 as i64));
    }
}
