//! Processes on synthetic events: routing by pid, forks and exits, per-process books, the
//! totals, and kernel objects freed in another context.

use std::collections::HashMap;

use tracer_common::{AllocEvent, AllocFn, EventHeader, PageEvent, ProcessEvent, kind};

use super::*;
use crate::{
    events::{encode, testing},
    symbolize::Frame,
};

const ROOT: u32 = 100;
const CHILD: u32 = 200;
const CALLER: u64 = 0x5555_5555_4100;

fn start() -> Start {
    Start {
        pid: ROOT,
        page_size: 4096,
        maps: "555555554000-555555556000 r-xp 00000000 08:01 1 /usr/bin/app\n\
               555555560000-555555580000 rw-p 00000000 00:00 0 [heap]\n"
            .into(),
        ..Default::default()
    }
}

fn header(kind: u32, tgid: u32, ts_ns: u64) -> EventHeader {
    EventHeader {
        ts_ns,
        kind,
        tgid,
        tid: tgid,
        cpu: 0,
    }
}

fn alloc(tgid: u32, func: AllocFn, size: u64, ptr: u64, ts_ns: u64) -> AllocEvent {
    AllocEvent {
        header: header(kind::ALLOC, tgid, ts_ns),
        ..testing::alloc(func, size, ptr, CALLER, ts_ns)
    }
}

fn process_event(kind: u32, tgid: u32, pid: u32, status: i32, ts_ns: u64) -> ProcessEvent {
    ProcessEvent {
        header: header(kind, tgid, ts_ns),
        pid,
        status,
    }
}

fn page(kind: u32, tgid: u32, pfn: u64) -> PageEvent {
    PageEvent {
        header: header(kind, tgid, 50),
        pfn,
        migratetype: 1,
        ..Default::default()
    }
}

fn symbols() -> HashMap<u64, Vec<Frame>> {
    HashMap::from([(
        CALLER,
        vec![Frame {
            function: Some("make_blocks".into()),
            ..Frame::unknown(CALLER)
        }],
    )])
}

/// The root allocates two blocks and forks; the child frees one it inherited (unknown to it),
/// allocates one at the address of the root's other (its own block: separate books), and
/// exits 3; a page the child allocated is freed by the kernel (another pid).
fn run() -> Processes {
    let mut p = Processes::new(&start());
    let mut feed = |bytes: &[u8]| p.process(bytes);
    feed(encode(&alloc(
        ROOT,
        AllocFn::Malloc,
        64,
        0x5555_5556_0010,
        10,
    )));
    feed(encode(&alloc(
        ROOT,
        AllocFn::Malloc,
        64,
        0x5555_5556_0060,
        11,
    )));
    let forked = feed(encode(&process_event(kind::FORK, ROOT, CHILD, 0x11, 20)));
    assert_eq!(forked, Some((ROOT, Followup::Forked { child: CHILD })));
    feed(encode(&alloc(
        CHILD,
        AllocFn::Free,
        0,
        0x5555_5556_0010,
        30,
    )));
    feed(encode(&alloc(
        CHILD,
        AllocFn::Malloc,
        100,
        0x5555_5556_0060,
        31,
    )));
    feed(encode(&page(kind::PAGE_ALLOC, CHILD, 7)));
    feed(encode(&page(kind::PAGE_FREE, 0, 7)));
    feed(encode(&process_event(kind::EXIT, CHILD, CHILD, 3 << 8, 40)));
    // An event of a process never forked (its fork event was lost).
    feed(encode(&alloc(999, AllocFn::Malloc, 8, 0x10, 41)));
    p
}

fn finish() -> Finish {
    Finish {
        max_sites: 10,
        stacks: HashMap::from([(1, vec![0x7f00_0000_1234])]).into(),
        symbols: symbols().into(),
        processes: vec![ProcessFinish {
            pid: CHILD,
            symbols: symbols().into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn each_process_keeps_its_own_books() {
    let p = run();
    assert_eq!(p.len(), 2);
    assert_eq!(p.running().collect::<Vec<_>>(), [ROOT]);
    let s = p.summarize(&finish());
    assert_eq!(s.processes.len(), 2);
    let (root, child) = (&s.processes[0], &s.processes[1]);
    assert_eq!((root.pid, root.ppid), (ROOT, None));
    assert_eq!((child.pid, child.ppid), (CHILD, Some(ROOT)));
    assert_eq!((child.exit_code, child.signal), (Some(3), None));
    assert_eq!(child.started_ms, 10e-6);
    assert_eq!(child.ended_ms, Some(30e-6));
    // The root's two blocks are still live in the root: the child's free was of a block it
    // never allocated.
    assert_eq!(root.summary.user.malloc.calls, 2);
    assert_eq!(root.summary.user.live_bytes_at_end, 128);
    assert_eq!(root.summary.user.free.calls, 0);
    assert_eq!(child.summary.user.free.unknown, 1);
    assert_eq!(child.summary.user.live_bytes_at_end, 100);
    // The page the kernel freed was the child's.
    assert_eq!(child.summary.kernel.buddy.frees, 1);
    assert_eq!(root.summary.kernel.buddy.allocs, 0);
    // The child's target is its own; its exit is an exit.
    assert_eq!(child.summary.target.pid, CHILD);
    assert_eq!(child.summary.target.ended_by, "exited");
}

#[test]
fn the_totals_add_up_and_merge_sites_by_their_frames() {
    let s = run().summarize(&finish());
    let u = &s.user;
    assert_eq!(u.malloc.calls, 3);
    assert_eq!(u.malloc.bytes, 228);
    assert_eq!(u.live_bytes_at_end, 228);
    assert_eq!(u.free.unknown, 1);
    // One site (make_blocks) in both processes: one listed site.
    assert_eq!(u.site_count, 1, "{:#?}", u.sites);
    assert_eq!(u.sites[0].stats.allocs, 3);
    assert_eq!(u.sites[0].stats.bytes, 228);
    assert_eq!(u.leaks.len(), 1);
    assert_eq!((u.leaks[0].count, u.leaks[0].bytes), (3, 228));
    assert_eq!(u.leaked_bytes, 228);
    // The lost fork's event is counted, not given to anyone.
    assert_eq!(s.events.unknown_process, 1);
    let received: u64 = s.processes.iter().map(|p| p.summary.events.received).sum();
    assert_eq!(s.events.received, received + 1);
    // Both processes' memory at once: the root's 128 and the child's 100.
    assert_eq!(u.peak_live_bytes, 228);
}

#[test]
fn one_process_summarizes_as_it_always_did() {
    let mut p = Processes::new(&start());
    let mut s = Session::new(&start());
    for e in [
        alloc(ROOT, AllocFn::Malloc, 64, 0x5555_5556_0010, 10),
        alloc(ROOT, AllocFn::Free, 0, 0x5555_5556_0010, 11),
    ] {
        p.process(encode(&e));
        s.process(encode(&e));
    }
    let f = finish();
    assert_eq!(p.summarize(&f), s.summarize(&f));
    assert!(p.summarize(&f).processes.is_empty());
}

/// A process that stopped itself after mapping code asks to be continued, and the event is
/// not one of its facts: the summary is the one it would be without it (a replay, which never
/// sees it, gives the same).
#[test]
fn a_held_process_is_continued_and_its_books_are_unchanged() {
    let mut held = Processes::new(&start());
    let mut plain = Processes::new(&start());
    let a = alloc(ROOT, AllocFn::Malloc, 64, 0x5555_5556_0010, 10);
    let stop = tracer_common::HeldEvent {
        header: header(kind::HELD, ROOT, 11),
        reason: tracer_common::held::MAPPED_CODE,
        _pad: 0,
    };
    held.process(encode(&a));
    assert_eq!(held.process(encode(&stop)), Some((ROOT, Followup::Held)));
    plain.process(encode(&a));
    let f = finish();
    assert_eq!(held.summarize(&f), plain.summarize(&f));
}
