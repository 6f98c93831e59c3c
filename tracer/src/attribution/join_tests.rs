//! The join on synthetic event sequences.

use tracer_common::{
    AllocEvent, AllocFn, EventHeader, FaultEvent, InFlight, PageEvent, SlabEvent, Syscall,
    SyscallEvent, kind,
};

use super::*;
use crate::events::testing;

const TID: u32 = 7;

/// Builds events for one thread; `ts` is what the kernel stamped, which the join must not rely
/// on across CPUs.
struct Seq {
    space: AddressSpace,
    heap: HeapStats,
    join: Join,
    ts: u64,
}

impl Seq {
    fn new() -> Self {
        let mut space = AddressSpace::default();
        space.on_brk(0x55_0000_0000);
        space.on_brk(0x55_0002_1000);
        Seq {
            space,
            heap: HeapStats::default(),
            join: Join::default(),
            ts: 1_000,
        }
    }

    fn header(&mut self, kind: u32, cpu: u32) -> EventHeader {
        self.ts += 10;
        // Stamps from another CPU may run behind: the join must not care.
        let ts_ns = if cpu == 1 { self.ts - 25 } else { self.ts };
        EventHeader {
            ts_ns,
            kind,
            tgid: 1,
            tid: TID,
            cpu,
        }
    }

    fn syscall(&mut self, syscall: Syscall, args: &[u64], ret: i64, in_alloc: u64, enter: u64) {
        let mut a = [0; 6];
        a[..args.len()].copy_from_slice(args);
        let header = self.header(kind::SYSCALL, 0);
        let e = testing::call(SyscallEvent {
            header,
            syscall: syscall as u32,
            stack_id: -1,
            args: a,
            ret,
            duration_ns: header.ts_ns - enter,
            alloc_enter_ns: in_alloc,
        });
        let brk_before = self.space.lookup(0x55_0000_0000).map(|m| m.end);
        self.join.on_syscall(&e, brk_before);
        if syscall == Syscall::Mmap {
            self.space
                .on_mmap(ret as u64, a[1], a[2], a[3], a[4] as i32, a[5]);
        } else if syscall == Syscall::Munmap {
            self.space.on_munmap(a[0], a[1]);
        }
    }

    fn page(&mut self, in_flight: InFlight, migratetype: i32, cpu: u32) {
        let header = self.header(kind::PAGE_ALLOC, cpu);
        self.join.on_page_alloc(&PageEvent {
            header,
            in_flight,
            pfn: header.ts_ns,
            gfp_flags: 0,
            order: 0,
            migratetype,
            kstack_id: -1,
            reserved: 0,
        });
    }

    fn slab(&mut self, in_flight: InFlight) {
        let header = self.header(kind::SLAB_ALLOC, 0);
        self.join.on_slab_alloc(&SlabEvent {
            header,
            in_flight,
            ptr: header.ts_ns,
            call_site: 0,
            bytes_req: 176,
            bytes_alloc: 184,
            gfp_flags: 0,
            kstack_id: -1,
            flags: 0,
            cache: [0; 32],
        });
    }

    fn fault(&mut self, address: u64, in_flight: InFlight) {
        let header = self.header(kind::FAULT, 0);
        self.join.on_fault(
            &FaultEvent {
                header,
                in_flight,
                address,
                ip: 0,
                error_code: 6,
                stack_id: -1,
            },
            &mut self.heap,
            &self.space,
        );
    }

    fn alloc(&mut self, size: u64, ptr: u64, caller: u64, enter: u64) -> SiteId {
        let e = testing::alloc_call(AllocEvent {
            header: self.header(kind::ALLOC, 0),
            enter_ns: enter,
            ..testing::alloc(AllocFn::Malloc, size, ptr, caller, 0)
        });
        let site = self.heap.on_alloc(&e);
        self.join.on_alloc(&e, &self.space, site);
        let site = site.expect("an allocation has a site");
        assert_eq!(self.heap.sites()[site as usize].0.caller, caller);
        site
    }
}

const fn call(enter: u64) -> InFlight {
    InFlight {
        syscall_enter_ns: 0,
        alloc_enter_ns: enter,
    }
}

#[test]
fn a_large_malloc_brings_its_mmap_and_slab_objects() {
    let mut s = Seq::new();
    let enter = 5;
    // Inside malloc(200000): mmap makes a VMA (slab, charged to the syscall and the call).
    s.slab(InFlight {
        syscall_enter_ns: 900,
        alloc_enter_ns: enter,
    });
    s.syscall(
        Syscall::Mmap,
        &[0, 200_704, 3, 0x22, u64::MAX, 0],
        0x7f00_0000_0000,
        enter,
        900,
    );
    // glibc writes the chunk header: a fault inside the call, its page charged to the call.
    s.fault(0x7f00_0000_0008, call(enter));
    s.page(call(enter), 1, 0);
    let site = s.alloc(200_000, 0x7f00_0000_0010, 0x4000_1000, enter);
    let (paths, caused) = s.join.site(site).unwrap();
    assert_eq!(paths.path(), "mmap");
    assert_eq!((paths.mmap_bytes, paths.brk_bytes), (200_000, 0));
    assert_eq!(
        (paths.slab_objects, paths.buddy_pages, paths.resident_bytes),
        (1, 1, 4096)
    );
    // The object's bytes as the cache hands them out (184), not as asked for (176).
    assert_eq!((paths.slab_bytes, caused.slab_bytes), (184, 184));
    assert_eq!(
        (caused.mmap_calls, caused.mmap_bytes, caused.page_faults),
        (1, 200_704, 1)
    );
    assert_eq!(
        s.join.by_syscall["mmap"],
        SyscallKernel {
            buddy_pages: 0,
            slab_objects: 1
        }
    );

    // First touch of two more pages of the block, from the program (another CPU's clock).
    s.fault(0x7f00_0000_2000, InFlight::default());
    s.page(InFlight::default(), 1, 1);
    s.page(InFlight::default(), 0, 1); // a page-table page: charged, not resident
    s.fault(0x7f00_0000_3000, InFlight::default());
    s.page(InFlight::default(), 1, 0);
    let (paths, caused) = s.join.site(site).unwrap();
    assert_eq!(
        (paths.buddy_pages, paths.resident_bytes, caused.page_faults),
        (4, 3 * 4096, 1 + 2)
    );
    assert_eq!(
        s.join
            .page_set()
            .bytes_in(0x7f00_0000_0010, 0x7f00_0000_0010 + 200_000),
        3 * 4096 - 16
    );

    // free() unmaps it: its resident pages leave the site.
    s.syscall(Syscall::Munmap, &[0x7f00_0000_0000, 200_704], 0, 0, s.ts);
    assert_eq!(s.join.site(site).unwrap().0.resident_bytes, 0);
}

#[test]
fn small_mallocs_are_served_by_brk_and_touching_them_is_resident() {
    let mut s = Seq::new();
    let a = s.alloc(64, 0x55_0000_1010, 0x4000_2000, 11);
    s.alloc(64, 0x55_0000_1050, 0x4000_2000, 12);
    s.fault(0x55_0000_1060, InFlight::default());
    s.page(InFlight::default(), 1, 0);
    let (paths, _) = s.join.site(a).unwrap();
    assert_eq!(
        (paths.path(), paths.brk_bytes, paths.resident_bytes),
        ("brk", 128, 4096)
    );
    // The heap shrinks below the page: handed back.
    let before = s.space.lookup(0x55_0000_0000).map(|m| m.end);
    assert_eq!(before, Some(0x55_0002_1000));
    s.syscall(Syscall::Brk, &[0x55_0000_1000], 0x55_0000_1000, 0, s.ts);
    assert_eq!(s.join.site(a).unwrap().0.resident_bytes, 0);
}

#[test]
fn faults_outside_blocks_belong_to_regions_and_madvise_returns_them() {
    let mut s = Seq::new();
    s.syscall(
        Syscall::Mmap,
        &[0, 16384, 3, 0x22, u64::MAX, 0],
        0x7e00_0000_0000,
        0,
        s.ts,
    );
    s.fault(0x7e00_0000_0000, InFlight::default());
    s.page(InFlight::default(), 1, 0);
    s.fault(0x7e00_0000_1000, InFlight::default());
    s.page(InFlight::default(), 1, 0);
    assert_eq!(s.join.region_resident_pages["anon_mmap"], 2);
    s.syscall(Syscall::Madvise, &[0x7e00_0000_0000, 4096, 4], 0, 0, s.ts);
    assert_eq!(s.join.region_resident_pages["anon_mmap"], 1);
    // Unmapped, then touched: the address belongs to no region any more.
    s.syscall(Syscall::Munmap, &[0x7e00_0000_0000, 16384], 0, 0, s.ts);
    assert_eq!(s.join.region_resident_pages["anon_mmap"], 0);
    s.fault(0x7e00_0000_2000, InFlight::default());
    s.page(InFlight::default(), 1, 0);
    assert_eq!(s.join.region_resident_pages["other"], 1);
}

#[test]
fn a_lost_call_does_not_leak_its_charges_into_the_next() {
    let mut s = Seq::new();
    s.slab(call(21));
    s.slab(call(21));
    // The event of call 21 never arrives; call 22's does.
    s.slab(call(22));
    let site = s.alloc(64, 0x55_0000_2000, 0x4000_3000, 22);
    assert_eq!(s.join.site(site).unwrap().0.slab_objects, 1);
    // A page allocated with no fault and no call in flight is nobody's.
    s.page(InFlight::default(), 1, 0);
    assert_eq!(s.join.site(site).unwrap().0.buddy_pages, 0);
}

#[test]
fn mremap_moves_resident_pages() {
    let mut s = Seq::new();
    s.syscall(
        Syscall::Mmap,
        &[0, 8192, 3, 0x22, u64::MAX, 0],
        0x7d00_0000_0000,
        0,
        s.ts,
    );
    s.fault(0x7d00_0000_1000, InFlight::default());
    s.page(InFlight::default(), 1, 0);
    s.syscall(
        Syscall::Mremap,
        &[0x7d00_0000_0000, 8192, 16384, 1],
        0x7c00_0000_0000,
        0,
        s.ts,
    );
    assert_eq!(
        s.join
            .page_set()
            .bytes_in(0x7c00_0000_0000, 0x7c00_0000_0000 + 16384),
        4096
    );
    assert_eq!(
        s.join
            .page_set()
            .bytes_in(0x7d00_0000_0000, 0x7d00_0000_0000 + 8192),
        0
    );
}
