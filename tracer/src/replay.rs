//! `tracer report`: a recording fed through the same session code as a live run.

use std::{io::Read, path::Path};

use crate::{
    facts::{EndedBy, TargetFacts},
    process::{
        session::{Finish, Start},
        table::Processes,
    },
    record::{Item, Reader, RecordError},
    summary::{DEFAULT_MAX_SITES, Summary},
};

/// How many events ahead the replay fetches live blocks' slots: a few hundred nanoseconds of
/// work each, enough to cover a miss to memory.
const PREFETCH_AHEAD: usize = 8;

/// Replays the recording at `path`; `progress` is told the bytes read so far and the total.
pub fn replay(
    path: &Path,
    mut progress: impl FnMut(u64, Option<u64>),
) -> Result<Summary, RecordError> {
    let reader = Reader::open(path)?;
    replay_from(reader, &mut progress)
}

/// Replays a recording from any reader (a file, or bytes in memory).
pub fn replay_from<R: Read>(
    mut reader: Reader<R>,
    mut progress: impl FnMut(u64, Option<u64>),
) -> Result<Summary, RecordError> {
    let total = reader.len;
    let start = match reader.next_item()? {
        Some(Item::Start(start)) => start,
        Some(_) => {
            return Err(RecordError::Corrupt {
                offset: 16,
                what: "the first record is not the start record".into(),
            });
        }
        None => {
            return Err(RecordError::Truncated {
                offset: 16,
                what: "the recording has no records",
            });
        }
    };
    start.validate().map_err(|what| RecordError::Corrupt {
        offset: crate::record::HEADER_BYTES,
        what: format!("the start record: {what}"),
    })?;
    let root = start.pid;
    let mut processes = Processes::new(&start);
    let mut events = 0u64;
    loop {
        let offset = reader.offset();
        // The live block an event a few ahead frees or adds: its slot is fetched while this
        // one and those in between are worked on (frees come in no order the cache can guess).
        if let Some(ahead) = reader.ahead(PREFETCH_AHEAD) {
            processes.prefetch(ahead);
        }
        let item = match reader.next_item() {
            // Cut in the middle of a record: what came before it is whole.
            Err(RecordError::Truncated { .. }) => None,
            item => item?,
        };
        match item {
            Some(Item::Event(bytes)) => {
                processes.process(bytes);
                events += 1;
                if events.is_multiple_of(65536) {
                    progress(offset, total);
                }
            }
            Some(Item::Exec(image)) => {
                let pid = if image.pid == 0 { root } else { image.pid };
                // An exec of a process the events never created is the recording's error;
                // it has nothing to apply to.
                if let Some(session) = processes.get_mut(pid) {
                    session.on_exec(&image);
                }
            }
            Some(Item::Joined(joined)) => {
                joined
                    .start
                    .validate()
                    .map_err(|what| RecordError::Corrupt {
                        offset,
                        what: format!("a join record: {what}"),
                    })?;
                processes.adopt(&joined);
            }
            Some(Item::Finish(finish)) => {
                progress(reader.offset(), total);
                return Ok(processes.summarize(&finish));
            }
            Some(Item::Start(_)) => {
                return Err(RecordError::Corrupt {
                    offset,
                    what: "a second start record".into(),
                });
            }
            None => return Ok(ends_early(&processes, &start, offset, total)),
        }
    }
}

/// The summary of a recording that ends at `at`, before its finish record: what tracer
/// writes at the end of a run never came (it was killed, its disk filled). Every whole batch
/// of events before `at` is counted; the run's end is its last event.
fn ends_early(processes: &Processes, start: &Start, at: u64, len: Option<u64>) -> Summary {
    let first = processes.root().first_ts().unwrap_or(0);
    let last = processes.root().last_ts();
    let finish = Finish {
        target: TargetFacts {
            pid: start.pid,
            command: start.command.clone(),
            ended_by: EndedBy::Interrupted.name().into(),
            ..TargetFacts::default()
        },
        duration_ms: last.saturating_sub(first) as f64 / 1e6,
        now_ns: last,
        max_sites: DEFAULT_MAX_SITES,
        recording_ends_early: Some((at, len.unwrap_or(at).max(at))),
        ..Finish::default()
    };
    processes.summarize(&finish)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use tracer_common::{AllocEvent, AllocFn, EventHeader, Syscall, SyscallEvent, kind};

    use super::*;
    use crate::{
        events::{encode, testing},
        process::session::{Finish, Start},
        record::{Recorder, VERSION},
    };

    fn sink(path: &Path) -> crate::output::Sink {
        crate::output::Sink::open(&crate::output::dest::check_file(path, true).unwrap()).unwrap()
    }

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("tracer-replay-{}-{name}", std::process::id()))
    }

    /// A small recording: a brk, a malloc and a free, and its finish.
    fn write_recording(path: &Path) -> Finish {
        let start = Start {
            pid: 42,
            command: vec!["./app".into(), "<script>".into()],
            page_size: 4096,
            maps: "55d0c0a00000-55d0c0a21000 r-xp 00000000 fd:00 1 /usr/bin/app\n\
                   7f0000000000-7f0000100000 r-xp 00000000 fd:00 2 /lib/libc.so.6\n"
                .into(),
            gfp_print_fmt: String::new(),
            initial_break: None,
            sample_bytes: 0,
            resident_at_attach: None,
        };
        let mut rec = Recorder::create(sink(path), &start).unwrap();
        let header = |kind, ts| EventHeader {
            ts_ns: ts,
            kind,
            tgid: 42,
            tid: 42,
            cpu: 0,
        };
        rec.event(encode(&SyscallEvent {
            header: header(kind::SYSCALL, 10),
            syscall: Syscall::Brk as u32,
            stack_id: -1,
            args: [0; 6],
            ret: 0x5600_0000_0000,
            duration_ns: 1,
            alloc_enter_ns: 0,
        }))
        .unwrap();
        let alloc = |func, size, ptr| AllocEvent {
            header: header(kind::ALLOC, 20),
            enter_ns: 19,
            ..testing::alloc(func, size, ptr, 0x55d0_c0a0_1000, 20)
        };
        rec.event(encode(&alloc(AllocFn::Malloc, 100, 0xa0)))
            .unwrap();
        rec.event(encode(&alloc(AllocFn::Malloc, 200, 0xb0)))
            .unwrap();
        rec.event(encode(&alloc(AllocFn::Free, 0, 0xa0))).unwrap();
        let finish = Finish {
            duration_ms: 1.5,
            now_ns: 1_000_000,
            counters: vec![0; 9],
            max_sites: 10,
            stacks: std::collections::HashMap::from([(
                1,
                vec![0x7f00_0000_0000, 0x55d0_c0a0_2000],
            )])
            .into(),
            ..Default::default()
        };
        rec.finish(&finish).unwrap();
        finish
    }

    #[test]
    fn replays_a_recording() {
        let path = temp("ok");
        let finish = write_recording(&path);
        let mut calls = 0;
        let summary = replay(&path, |_, total| {
            calls += 1;
            assert_eq!(total, Some(std::fs::metadata(&path).unwrap().len()));
        })
        .unwrap();
        assert!(calls >= 1, "progress is reported");
        assert_eq!(summary.events.received, 4);
        assert_eq!(summary.syscalls.brk.calls, 1);
        assert_eq!(summary.user.malloc.calls, 2);
        assert_eq!(summary.user.live_bytes_at_end, 200);
        assert_eq!(summary.duration_ms, finish.duration_ms);
        assert_eq!(
            summary.user.sites[0].stack.len(),
            2,
            "caller spliced before the walk"
        );
        std::fs::remove_file(&path).unwrap();
    }

    /// An exec in the middle: the old image's live block is released by it, not leaked, the
    /// new image's block is, and the summary lists both programs.
    #[test]
    fn an_exec_closes_the_old_images_books() {
        use crate::process::session::ExecImage;
        let path = temp("exec");
        let start = Start {
            pid: 42,
            command: vec!["/bin/sh".into(), "wrap.sh".into()],
            page_size: 4096,
            maps: "55d0c0a00000-55d0c0a21000 r-xp 00000000 fd:00 1 /bin/sh\n".into(),
            gfp_print_fmt: String::new(),
            initial_break: None,
            sample_bytes: 0,
            resident_at_attach: None,
        };
        let mut rec = Recorder::create(sink(&path), &start).unwrap();
        let alloc = |size, ptr, ts| AllocEvent {
            header: EventHeader {
                ts_ns: ts,
                kind: kind::ALLOC,
                tgid: 42,
                tid: 42,
                cpu: 0,
            },
            ..testing::alloc(AllocFn::Malloc, size, ptr, 0x55d0_c0a0_1000, ts)
        };
        rec.event(encode(&alloc(100, 0xa0, 10))).unwrap();
        rec.event(encode(&tracer_common::ExecEvent {
            header: EventHeader {
                ts_ns: 20,
                kind: kind::EXEC,
                tgid: 42,
                tid: 42,
                cpu: 0,
            },
            held: 1,
            _pad: 0,
        }))
        .unwrap();
        rec.exec(&ExecImage {
            pid: 0,
            ts_ns: 20,
            command: vec!["./app".into()],
            exe: "/usr/bin/app".into(),
            maps: "600000000000-600000021000 r-xp 00000000 fd:00 2 /usr/bin/app\n".into(),
        })
        .unwrap();
        rec.event(encode(&AllocEvent {
            caller: 0x6000_0000_1000,
            ..alloc(300, 0xb0, 30)
        }))
        .unwrap();
        rec.finish(&Finish {
            max_sites: 10,
            ..Default::default()
        })
        .unwrap();
        let s = replay(&path, |_, _| {}).unwrap();
        assert_eq!(s.user.live_bytes_at_end, 300);
        assert_eq!((s.user.leaked_blocks, s.user.leaked_bytes), (1, 300));
        assert_eq!(s.images.len(), 2);
        assert_eq!(s.images[0].command, ["/bin/sh", "wrap.sh"]);
        assert_eq!(
            (
                s.images[0].live_blocks_at_exec,
                s.images[0].live_bytes_at_exec
            ),
            (Some(1), Some(100))
        );
        assert_eq!(
            (s.images[1].exe.as_str(), s.images[1].started_ms),
            ("/usr/bin/app", 0.00001)
        );
        assert_eq!(s.user.leaks[0].stack[0].addr, 0x6000_0000_1000);
        std::fs::remove_file(&path).unwrap();
    }

    /// A recording cut before its start record is whole is an error naming an offset; one cut
    /// after it is the summary of its whole records, saying where they end. Every flipped byte
    /// is noticed. Never a panic.
    #[test]
    fn truncated_and_corrupt_recordings() {
        let path = temp("src");
        write_recording(&path);
        let bytes = std::fs::read(&path).unwrap();
        let bad = temp("bad");
        let mut ends = Vec::new();
        for len in 0..bytes.len() {
            std::fs::write(&bad, &bytes[..len]).unwrap();
            match replay(&bad, |_, _| {}) {
                Err(err) => {
                    let text = err.to_string();
                    assert!(
                        text.contains("offset") || text.contains("not a tracer recording"),
                        "length {len}: {text}"
                    );
                    assert!(
                        ends.is_empty(),
                        "length {len} failed after a shorter one read"
                    );
                }
                Ok(s) => {
                    let (at, of) = s.events.recording_ends_early.expect("said to end early");
                    assert!(
                        at <= len as u64 && of == len as u64,
                        "{at} of {of}, cut at {len}"
                    );
                    assert!(
                        s.notes[0]
                            .text
                            .contains(&format!("its first {at} bytes of {len}"))
                    );
                    ends.push((len, at, s.events.received));
                }
            }
        }
        // Cut later, as many records read or more; the records' ends are where they end.
        assert!(
            ends.windows(2)
                .all(|w| w[0].1 <= w[1].1 && w[0].2 <= w[1].2)
        );
        assert!(ends.iter().any(|&(len, at, _)| len as u64 == at));
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x41;
            std::fs::write(&bad, &flipped).unwrap();
            // An error, or (a record's length made longer than the file) a recording that says
            // it ends early.
            assert!(
                replay(&bad, |_, _| {}).map_or(true, |s| s.events.recording_ends_early.is_some()),
                "flipping byte {at} went unnoticed"
            );
        }
        std::fs::remove_file(&bad).unwrap();
        std::fs::remove_file(&path).unwrap();
    }

    /// Many events: several compressed batches, read back in order; cut anywhere, the events of
    /// its whole batches.
    #[test]
    fn many_events_across_batches() {
        let path = temp("many");
        let start = Start {
            pid: 1,
            page_size: 4096,
            ..Default::default()
        };
        let mut rec = Recorder::create(sink(&path), &start).unwrap();
        for i in 0..20_000u64 {
            let e = testing::alloc(AllocFn::Malloc, 16 + i % 100, 0x1000 + 64 * i, 0x4000, i);
            rec.event(encode(&e)).unwrap();
        }
        rec.finish(&Finish {
            counters: vec![0; 9],
            max_sites: 10,
            ..Default::default()
        })
        .unwrap();
        let summary = replay(&path, |_, _| {}).unwrap();
        assert_eq!(summary.events.received, 20_000);
        assert_eq!(summary.user.malloc.calls, 20_000);
        let bytes: u64 = (0..20_000u64).map(|i| 16 + i % 100).sum();
        assert_eq!(summary.user.live_bytes_at_end, bytes);
        let full = std::fs::read(&path).unwrap();
        assert!(
            full.len() < 20_000 * 80 / 4,
            "{} bytes: not compact",
            full.len()
        );
        let mut read = 0;
        for cut in [full.len() / 3, full.len() / 2, full.len() - 10] {
            std::fs::write(&path, &full[..cut]).unwrap();
            let s = replay(&path, |_, _| {}).expect("a cut recording's whole batches");
            let (at, len) = s.events.recording_ends_early.expect("said to end early");
            assert!(at < cut as u64 && len == cut as u64, "{at} {len} {cut}");
            // Whole batches only, more of them the later the cut; the finish is lost.
            assert!(s.events.received >= read && s.events.received <= 20_000);
            assert_eq!(s.user.malloc.calls, s.events.received);
            read = s.events.received;
        }
        assert!(read > 0, "no whole batch read");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn newer_versions_are_refused() {
        let path = temp("newer");
        write_recording(&path);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let err = replay(&path, |_, _| {}).err().unwrap().to_string();
        assert!(
            err.contains(&format!("is a version {} recording", VERSION + 1)),
            "{err}"
        );
        assert!(err.contains("newer tracer"), "{err}");
        std::fs::write(&path, b"hello, not a recording").unwrap();
        let err = replay(&path, |_, _| {}).err().unwrap().to_string();
        assert!(
            err.ends_with("is not a tracer recording (no TRACEREC header)"),
            "{err}"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
