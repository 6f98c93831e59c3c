//! Recordings built from a seed: valid structure with hostile contents, and broken structure
//! with valid checksums.

use std::collections::HashMap;

use tracer::{
    facts::{KernelPath, TargetFacts},
    process::session::{Finish, ProcessFinish, Start},
    record::{self, EVENTS, FINISH, START},
    symbolize::Frame,
};
use tracer_common::{EventKind, FaultEvent, FaultPageEvent, kind};

/// splitmix64: small, fast, and the same everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const PID: u32 = 4242;
/// Where addresses cluster, so that events meet each other's blocks and mappings.
const BASES: [u64; 5] = [
    0x5555_0000_0000,
    0x7f00_0000_0000,
    0x1000,
    0,
    u64::MAX - 0xffff,
];

/// A value that tends to be interesting: edges, small numbers, addresses near the bases.
fn word(rng: &mut Rng) -> u64 {
    match rng.below(10) {
        0 => *rng.pick(&[
            0,
            1,
            2,
            4095,
            4096,
            1 << 20,
            u64::MAX,
            u64::MAX - 1,
            1 << 63,
            1 << 47,
        ]),
        1..=2 => rng.below(300),
        3..=6 => rng.pick(&BASES).wrapping_add(rng.below(1 << 22) & !0xf),
        7 => 1u64 << rng.below(64),
        _ => rng.next(),
    }
}

fn text(rng: &mut Rng, max: u64) -> String {
    const PIECES: [&str; 12] = [
        "a", "/", "(", ")", "~", "<", "&", "\x1b[2J", "\n", "\u{202e}", "é", "[heap]",
    ];
    let n = rng.below(max + 1);
    (0..n).map(|_| *rng.pick(&PIECES)).collect()
}

fn maps(rng: &mut Rng) -> String {
    let mut out = String::new();
    for _ in 0..rng.below(12) {
        let start = word(rng);
        let end = if rng.chance(4) {
            word(rng)
        } else {
            start.wrapping_add(rng.below(1 << 24))
        };
        let perms = rng.pick(&["r-xp", "rw-p", "---p", "r--s", "rwxp", "xxxx"]);
        let path = rng.pick(&[
            "/usr/lib/libc.so.6",
            "[heap]",
            "[stack]",
            "",
            "/bin/app (deleted)",
            "weird path",
        ]);
        out.push_str(&format!(
            "{start:x}-{end:x} {perms} {:x} 00:00 0 {path}\n",
            word(rng)
        ));
    }
    if rng.chance(20) {
        out.push_str(&text(rng, 200));
    }
    out
}

fn gfp_format(rng: &mut Rng) -> String {
    const REAL: &str = r#"print fmt: "x", __print_flags(REC->gfp_flags, "|", {( unsigned long)(((( gfp_t)((((1UL))) << (10))) | (( gfp_t)((((1UL))) << (6))))), "GFP_KERNEL"}, {( unsigned long)(( gfp_t)((((1UL))) << (8))), "__GFP_ZERO"})"#;
    match rng.below(6) {
        0 => String::new(),
        1 => REAL.into(),
        2 => format!(
            "__print_flags(x, \"|\", {{{}1, \"N\"}})",
            "(".repeat(rng.below(200_000) as usize)
        ),
        3 => format!(
            "__print_flags(x, \"|\", {{{}1, \"N\"}})",
            "~".repeat(rng.below(200_000) as usize)
        ),
        4 => format!("__print_flags({}", text(rng, 400)),
        _ => {
            let mut s = String::from("__print_flags(x, \"|\", ");
            for _ in 0..rng.below(50) {
                s.push_str(&format!("{{{} << {}, \"F\"}}, ", word(rng), word(rng)));
            }
            s
        }
    }
}

fn start(rng: &mut Rng) -> Start {
    let page_size = if rng.chance(6) {
        word(rng)
    } else {
        *rng.pick(&[4096, 16384, 65536])
    };
    Start {
        pid: if rng.chance(8) { word(rng) as u32 } else { PID },
        command: (0..rng.below(3)).map(|_| text(rng, 20)).collect(),
        page_size,
        maps: maps(rng),
        gfp_print_fmt: gfp_format(rng),
        initial_break: rng.chance(3).then(|| word(rng)),
        sample_bytes: *rng.pick(&[0, 0, 1, 4096, 1 << 19, u64::from(u32::MAX), u64::MAX]),
        resident_at_attach: page_set(rng).map(|mut p| {
            // Usually the page size the start claims (a mismatch is refused), and runs of a few
            // pages: each seeds the model page by page (up to 2^22 pages: slow to fuzz).
            if !rng.chance(8) {
                p.page_size = page_size;
            }
            for run in &mut p.runs {
                run[1] %= 64;
            }
            p
        }),
    }
}

/// One event: the right size for its kind (usually), header set, fields from [`word`].
fn event(rng: &mut Rng) -> Vec<u8> {
    // Every kind a recording holds (a held process is a live control, never recorded; an exec
    // comes with the image it read), at its payload's size.
    let kinds: Vec<(u32, usize)> = EventKind::ALL
        .into_iter()
        .filter(|k| !matches!(k, EventKind::Held | EventKind::Exec))
        .map(|k| (k as u32, k.record_bytes()))
        .collect();
    let (k, size) = if rng.chance(50) {
        (rng.below(20) as u32, 64)
    } else {
        *rng.pick(&kinds)
    };
    let mut bytes: Vec<u8> = (0..size / 8)
        .flat_map(|_| word(rng).to_le_bytes())
        .collect();
    let ts = rng.below(1 << 40);
    bytes[..8].copy_from_slice(&ts.to_le_bytes());
    bytes[8..12].copy_from_slice(&k.to_le_bytes());
    // Children (--follow): forks name PID+1..PID+3, whose events follow.
    let tgid = match rng.below(10) {
        0 => word(rng) as u32,
        1..=2 => PID + rng.below(4) as u32,
        _ => PID,
    };
    bytes[12..16].copy_from_slice(&tgid.to_le_bytes());
    if matches!(k, kind::FORK | kind::EXIT) && !rng.chance(8) {
        bytes[24..28].copy_from_slice(&(PID + rng.below(4) as u32).to_le_bytes());
    }
    bytes[16..20].copy_from_slice(&(rng.below(2) as u32 + PID).to_le_bytes());
    // The small enums after the header: syscall number, allocator function, fd.
    if rng.chance(4) || k == kind::ALLOC || k == kind::SYSCALL {
        let small = if rng.chance(10) {
            word(rng) as u32
        } else {
            rng.below(16) as u32
        };
        bytes[24..28].copy_from_slice(&small.to_le_bytes());
    }
    if k == kind::ALLOC && rng.chance(2) {
        // A live-looking stack id.
        bytes[28..32].copy_from_slice(&(rng.below(8) as i32 - 1).to_le_bytes());
    }
    // Kernel events: nothing in flight half the time (user faults), small orders and
    // migrate types (movable is 1), so faults and page allocations join into resident pages.
    if matches!(
        k,
        kind::PAGE_ALLOC | kind::PAGE_FREE | kind::SLAB_ALLOC | kind::FAULT | kind::FAULT_PAGE
    ) && rng.chance(2)
    {
        bytes[24..40].fill(0);
    }
    // A fault and its page in one record: the page's half as a page allocation's.
    if k == kind::FAULT_PAGE && bytes.len() >= size_of::<FaultPageEvent>() && !rng.chance(8) {
        let (fault, page) = bytes.split_at_mut(size_of::<FaultEvent>());
        page[..24].copy_from_slice(&fault[..24]);
        page[8..12].copy_from_slice(&kind::PAGE_ALLOC.to_le_bytes());
        page[24..40].fill(0);
        page[56..60].copy_from_slice(&(rng.below(4) as u32).to_le_bytes());
        page[60..64].copy_from_slice(&(rng.below(3) as i32).to_le_bytes());
    }
    if matches!(k, kind::PAGE_ALLOC | kind::PAGE_FREE) && !rng.chance(8) {
        bytes[56..60].copy_from_slice(&(rng.below(4) as u32).to_le_bytes());
        bytes[60..64].copy_from_slice(&(rng.below(3) as i32).to_le_bytes());
    }
    match rng.below(30) {
        0 => bytes.truncate(rng.below(size as u64) as usize),
        1 => bytes.extend((0..rng.below(64)).map(|_| rng.below(256) as u8)),
        _ => {}
    }
    bytes
}

fn finish(rng: &mut Rng) -> Finish {
    let addrs: Vec<u64> = (0..rng.below(10)).map(|_| word(rng)).collect();
    let mut stacks = HashMap::new();
    for id in -1..rng.below(8) as i32 {
        let len = if rng.chance(30) {
            rng.below(5000)
        } else {
            rng.below(8)
        };
        let stack: Vec<u64> = (0..len)
            .map(|_| {
                if addrs.is_empty() {
                    word(rng)
                } else {
                    *rng.pick(&addrs)
                }
            })
            .collect();
        stacks.insert(id, stack);
    }
    let mut symbols = HashMap::new();
    for &addr in &addrs {
        let frames = (0..rng.below(4))
            .map(|_| Frame {
                addr,
                function: rng.chance(2).then(|| text(rng, 30).into()),
                file: rng.chance(2).then(|| text(rng, 30).into()),
                line: rng.chance(2).then(|| word(rng) as u32),
                inlined: rng.chance(3),
                module: rng.chance(2).then(|| text(rng, 30).into()),
                offset: rng.chance(2).then(|| word(rng)),
                build_id: rng.chance(2).then(|| text(rng, 40).into()),
                plumbing: rng.chance(4),
            })
            .collect();
        symbols.insert(addr, frames);
    }
    Finish {
        symbols_epoch: 0,
        target: TargetFacts {
            pid: PID,
            command: vec![text(rng, 10)],
            exit_code: rng.chance(2).then(|| word(rng) as i32),
            signal: rng.chance(4).then(|| word(rng) as i32),
            ended_by: rng
                .pick(&["exited", "duration", "interrupted", "?"])
                .to_string(),
            threads: (0..rng.below(3))
                .map(|t| (t as u32, text(rng, 16)))
                .collect(),
            ..Default::default()
        },
        duration_ms: f64::from_bits(word(rng)).abs().min(1e300),
        now_ns: word(rng),
        counters: (0..rng.below(30)).map(|_| word(rng)).collect(),
        probe_costs: (0..rng.below(3))
            .map(|_| tracer::events::ProbeCost {
                program: text(rng, 12),
                runs: *rng.pick(&[0, 1, u64::MAX]),
                ns: word(rng),
            })
            .collect(),
        tracer_cpu_ms: rng
            .chance(2)
            .then(|| f64::from_bits(word(rng)).abs().min(1e300)),
        cgroup: rng.chance(3).then(|| cgroup(rng)),
        kernel_traced: rng.chance(2),
        allocator_files: (0..rng.below(3)).map(|_| text(rng, 20)).collect(),
        stacks: stacks.into(),
        symbols: symbols.into(),
        kernel_stacks: (0..rng.below(3))
            .map(|_| KernelPath {
                stack: (0..rng.below(5)).map(|_| text(rng, 12)).collect(),
                pages: word(rng),
                slab_objects: word(rng),
            })
            .collect(),
        max_sites: *rng.pick(&[0, 1, 10, 200, usize::MAX]),
        mode: rng.pick(&["full", "kernel", "", "?"]).to_string(),
        uprobe_links: rng.pick(&["session", "multi", "single", ""]).to_string(),
        min_age_ns: *rng.pick(&[0, 1_000_000_000, u64::MAX]),
        recording_cut_events: *rng.pick(&[0, 1, u64::MAX]),
        fp_stacks_ended: *rng.pick(&[0, 3, u64::MAX]),
        // Set by the replay of a cut recording, never recorded.
        recording_ends_early: None,
        slab_merges: (0..rng.below(2))
            .map(|_| (text(rng, 10), vec![text(rng, 10)]))
            .collect(),
        resident: page_set(rng),
        // Rules of any text: a file with one that is no rule is ignored whole.
        suppressions: (0..rng.below(3))
            .map(|_| {
                format!(
                    "{}{}",
                    rng.pick(&["leak:", "leak:^", "race:", ""]),
                    text(rng, 8)
                )
            })
            .collect(),
        // Hostile patterns too: one that does not compile is reported and ignored.
        wrappers: (0..rng.below(3))
            .map(|_| {
                rng.pick(&["^zmalloc$", "(", "a*", "[[:alpha:]]+", ""])
                    .to_string()
            })
            .collect(),
        text_sites: rng.chance(3).then(|| *rng.pick(&[0, 1, 15, usize::MAX])),
        processes: (0..rng.below(4))
            .map(|i| ProcessFinish {
                pid: if rng.chance(4) {
                    word(rng) as u32
                } else {
                    PID + 1 + i as u32
                },
                threads: (0..rng.below(2))
                    .map(|t| (t as u32, text(rng, 16)))
                    .collect(),
                symbols: Default::default(),
                resident: page_set(rng),
            })
            .collect(),
    }
}

/// A cgroup's numbers of any size, some missing.
fn cgroup(rng: &mut Rng) -> tracer::facts::CgroupFacts {
    use tracer::facts::{CgroupEvents, CgroupMemory, Pressure};
    let mut n = || rng.chance(2).then(|| word(rng));
    let memory = CgroupMemory {
        usage_bytes: n(),
        peak_bytes: n(),
        limit_bytes: n(),
        high_bytes: n(),
        anon_bytes: n(),
        file_bytes: n(),
        kernel_bytes: n(),
        slab_bytes: n(),
        sock_bytes: n(),
        events: CgroupEvents {
            high: n(),
            max: n(),
            oom: n(),
            oom_kill: n(),
        },
        pressure: rng.chance(2).then(|| Pressure {
            some_avg10: f64::from_bits(word(rng)).abs().min(1e300),
            some_total_us: word(rng),
            ..Pressure::default()
        }),
        pressure_scope: text(rng, 8),
    };
    tracer::facts::CgroupFacts {
        path: text(rng, 40),
        version: rng.below(4) as u8,
        memory,
        processes: (0..rng.below(5)).map(|_| word(rng) as u32).collect(),
        usage: (0..rng.below(5))
            .map(|_| (f64::from_bits(word(rng)).abs().min(1e300), word(rng)))
            .collect(),
    }
}

fn page_set(rng: &mut Rng) -> Option<tracer::attribution::resident::PageSet> {
    rng.chance(2)
        .then(|| tracer::attribution::resident::PageSet {
            page_size: *rng.pick(&[0, 1, 4096, u64::MAX]),
            runs: (0..rng.below(4)).map(|_| [word(rng), word(rng)]).collect(),
        })
}

fn push_record(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    out.extend_from_slice(&record::record_header(kind, payload));
    out.extend_from_slice(payload);
}

/// The recording for input `index` of `seed`.
pub fn recording(seed: u64, index: u64) -> Vec<u8> {
    let mut rng = Rng(seed ^ index.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut out = record::file_header().to_vec();
    // Some are version 5 files, whose batches are deflated.
    let deflated = rng.chance(8);
    if deflated {
        out[8] = 5;
    } else if rng.chance(40) {
        out[8] = rng.below(4) as u8;
    }
    let mut records: Vec<(u8, Vec<u8>)> = Vec::new();
    let start_json = if rng.chance(20) {
        text(&mut rng, 50).into_bytes()
    } else {
        serde_json::to_vec(&start(&mut rng)).unwrap()
    };
    records.push((START, start_json));
    for _ in 0..rng.below(4) {
        let mut batch = Vec::new();
        for _ in 0..rng.below(120) {
            let e = event(&mut rng);
            let len = if rng.chance(200) {
                rng.below(65536) as u16
            } else {
                e.len() as u16
            };
            batch.extend_from_slice(&len.to_le_bytes());
            batch.extend_from_slice(&e);
        }
        let packed = match rng.below(40) {
            0 => (0..rng.below(200)).map(|_| rng.below(256) as u8).collect(),
            // A crafted column layout: a count, lengths and columns that may not agree.
            1 => {
                let mut cols = (rng.below(300) as u32).to_le_bytes().to_vec();
                cols.extend((0..rng.below(2000)).map(|_| rng.below(4) as u8 * 40));
                if deflated {
                    record::deflate(&cols)
                } else {
                    record::compress(&cols)
                }
            }
            _ if deflated => record::encode_batch_deflated(&batch),
            _ => record::encode_batch(&batch),
        };
        records.push((EVENTS, packed));
        // A process that joined (--cgroup): its events may come before or after.
        if rng.chance(6) {
            let mut start = start(&mut rng);
            start.pid = PID + rng.below(6) as u32;
            let joined = tracer::process::session::Joined {
                ts_ns: rng.below(1 << 40),
                ppid: word(&mut rng) as u32,
                start,
            };
            records.push((record::JOIN, serde_json::to_vec(&joined).unwrap()));
        }
    }
    records.push((FINISH, serde_json::to_vec(&finish(&mut rng)).unwrap()));
    // Structure: reorder, repeat, drop, or break a record.
    match rng.below(12) {
        0 => {
            let last = records.len() - 1;
            records.swap(0, last);
        }
        1 => {
            records.pop();
        }
        2 => records.push(records[0].clone()),
        3 => {
            let i = rng.below(records.len() as u64) as usize;
            records[i].0 = rng.below(256) as u8;
        }
        _ => {}
    }
    for (kind, payload) in &records {
        push_record(&mut out, *kind, payload);
    }
    match rng.below(16) {
        // A record that claims more than the file holds.
        0 => {
            out.push(EVENTS);
            out.extend_from_slice(&(word(&mut rng) as u32).to_le_bytes());
            out.extend_from_slice(&[0; 4]);
        }
        1 => out.truncate(rng.below(out.len() as u64) as usize),
        _ => {}
    }
    out
}
