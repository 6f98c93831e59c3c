//! Tests of the session: recordings' round trip, stacks that walk into data, hostile values.

mod round_trip {
    use super::super::*;

    /// A replay must reproduce the live summary exactly, floats included: the recording's
    /// JSON must give back the very same f64 (serde_json's float_roundtrip).
    #[test]
    fn finish_round_trips_exactly() {
        // Bit patterns spread over every exponent and mantissa (a simple LCG).
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for i in 0..50_000u64 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let value = f64::from_bits(x >> 2);
            if !value.is_finite() {
                continue;
            }
            let finish = Finish {
                duration_ms: value,
                now_ns: i,
                ..Default::default()
            };
            let json = serde_json::to_vec(&finish).unwrap();
            let back: Finish = serde_json::from_slice(&json).unwrap();
            assert_eq!(
                back.duration_ms.to_bits(),
                finish.duration_ms.to_bits(),
                "{}",
                finish.duration_ms
            );
        }
    }
}

mod stack_tests {
    use tracer_common::{AllocEvent, AllocFn};

    use super::super::*;
    use crate::events::{encode, testing};

    /// A frame-pointer walk through code built without frame pointers: one call site, its
    /// stacks differing only past the first address that is no code (program data, heap bytes
    /// read as return addresses), is one site, with no such frame in it.
    #[test]
    fn walks_into_data_end_there_and_merge() {
        let mut s = Session::new(&Start {
            pid: 1,
            page_size: 4096,
            maps: "555555554000-555555556000 r-xp 00000000 08:01 1 /usr/bin/app\n\
                   555555556000-555555558000 rw-p 00002000 08:01 1 /usr/bin/app\n\
                   7f0000000000-7f0000100000 r-xp 00000000 08:01 2 /lib/libc.so.6\n"
                .into(),
            ..Default::default()
        });
        let caller = 0x5555_5555_4100;
        for (i, stack_id) in [1, 2, 3].into_iter().enumerate() {
            s.process(encode(&AllocEvent {
                stack_id,
                ..testing::alloc(AllocFn::Malloc, 64, 0x1000 + 64 * i as u64, caller, 10)
            }));
        }
        let in_malloc = 0x7f00_0000_1234;
        let main = 0x5555_5555_4200;
        let finish = Finish {
            max_sites: 10,
            stacks: HashMap::from([
                (1, vec![in_malloc, main, 0x0404_0404_0404_0404]),
                (2, vec![in_malloc, main, 0x5555_5555_6010, main]),
                (3, vec![in_malloc, main]),
            ])
            .into(),
            ..Default::default()
        };
        let summary = s.summarize(&finish);
        let sites = &summary.user.sites;
        assert_eq!(summary.user.site_count, 1, "{sites:#?}");
        assert_eq!(sites[0].stats.allocs, 3);
        let addrs: Vec<u64> = sites[0].stack.iter().map(|f| f.addr).collect();
        assert_eq!(addrs, [caller, main]);
        assert_eq!(summary.user.leaks.len(), 1);
        assert_eq!(summary.user.leaks[0].count, 3);
    }
}

mod hostile_tests {
    use tracer_common::{EventHeader, FaultEvent, PageEvent, Syscall, SyscallEvent, kind};

    use super::super::*;
    use crate::events::encode;

    fn header(kind: u32) -> EventHeader {
        EventHeader {
            kind,
            tgid: 1,
            tid: 1,
            ..Default::default()
        }
    }

    /// Values no real process produces, from a crafted recording: no panic, whatever they are.
    #[test]
    fn extreme_breaks_and_ranges_do_not_panic() {
        for brk in [u64::MAX - 100, u64::MAX, 1 << 63] {
            let mut s = Session::new(&Start {
                pid: 1,
                page_size: 4096,
                initial_break: Some(brk),
                maps: "5000-9000 rw-p 0 00:00 0 [heap]\n".into(),
                ..Default::default()
            });
            // A page made resident, so that the releases below have something to range over.
            s.process(encode(&FaultEvent {
                header: header(kind::FAULT),
                address: 0x6000,
                ..Default::default()
            }));
            s.process(encode(&PageEvent {
                header: header(kind::PAGE_ALLOC),
                migratetype: 1,
                ..Default::default()
            }));
            assert_eq!(
                s.join.resident_bytes(),
                4096,
                "the setup makes a page resident"
            );
            for (syscall, args, ret) in [
                (Syscall::Brk, [0x5000, 0, 0, 0, 0, 0], 0x5000i64),
                (Syscall::Brk, [u64::MAX, 0, 0, 0, 0, 0], -1),
                (Syscall::Munmap, [u64::MAX - 10, 1 << 40, 0, 0, 0, 0], 0),
                (
                    Syscall::Mremap,
                    [u64::MAX - 10, 1 << 40, 1 << 41, 0, 0, 0],
                    0x1000,
                ),
                (Syscall::Mmap, [0, u64::MAX, 3, 0x22, u64::MAX, 0], -4096),
                (Syscall::Mprotect, [u64::MAX - 4095, 8192, 3, 0, 0, 0], 0),
            ] {
                s.process(encode(&SyscallEvent {
                    header: header(kind::SYSCALL),
                    syscall: syscall as u32,
                    args,
                    ret,
                    ..Default::default()
                }));
            }
            s.summarize(&Finish::default());
        }
    }
}

mod fault_page {
    use tracer_common::{EventHeader, FaultEvent, FaultPageEvent, PageEvent, kind};

    use super::super::*;
    use crate::events::encode;

    fn session() -> Session {
        Session::new(&Start {
            pid: 1,
            page_size: 4096,
            maps: "5000-9000 rw-p 0 00:00 0 [heap]\n\
                   7f0000000000-7f0000100000 rw-p 0 00:00 0\n"
                .into(),
            ..Default::default()
        })
    }

    fn header(kind: u32, ts_ns: u64) -> EventHeader {
        EventHeader {
            ts_ns,
            kind,
            tgid: 1,
            tid: 1,
            cpu: 0,
        }
    }

    /// The kernel sends a fault and the page it took as one record: the session takes it as
    /// the two events, in order, and ends where the two records would have left it.
    #[test]
    fn one_record_is_the_fault_then_its_page() {
        let faults: Vec<(FaultEvent, PageEvent)> = (0..5u64)
            .map(|i| {
                let fault = FaultEvent {
                    header: header(kind::FAULT, 1000 + i),
                    address: 0x7f00_0000_0000 + i * 4096 + 8,
                    error_code: 6,
                    stack_id: -1,
                    ..Default::default()
                };
                let page = PageEvent {
                    header: header(kind::PAGE_ALLOC, 1000 + i),
                    pfn: 0x1000 + i,
                    gfp_flags: 0x140cca,
                    migratetype: 1,
                    kstack_id: -1,
                    ..Default::default()
                };
                (fault, page)
            })
            .collect();
        let mut apart = session();
        let mut joined = session();
        for (fault, page) in &faults {
            apart.process(encode(fault));
            apart.process(encode(page));
            joined.process(encode(&FaultPageEvent {
                fault: FaultEvent {
                    header: EventHeader {
                        kind: kind::FAULT_PAGE,
                        ..fault.header
                    },
                    ..*fault
                },
                page: *page,
            }));
        }
        // A page freed after: the one record's page is known by its frame, as a lone one is.
        let free = PageEvent {
            header: header(kind::PAGE_FREE, 2000),
            pfn: 0x1002,
            kstack_id: -1,
            ..Default::default()
        };
        apart.process(encode(&free));
        joined.process(encode(&free));

        assert_eq!(joined.counts.received, 11);
        assert_eq!(joined.join.resident_bytes(), 5 * 4096);
        let (a, j) = (
            apart.summarize(&Finish::default()),
            joined.summarize(&Finish::default()),
        );
        assert_eq!(j.kernel.faults.user, 5);
        assert_eq!(j.kernel.faults.by_region["anon_mmap"], 5);
        assert_eq!((j.kernel.buddy.pages, j.kernel.buddy.freed_pages), (5, 1));
        assert_eq!(a, j);
    }
}
