//! tracer killed with SIGKILL at random moments (attaching, holding a process at an exec or a
//! code mapping, writing the reports): no traced process is left stopped, and no program
//! tracer loaded stays in the kernel.

use std::{
    collections::BTreeSet,
    fs,
    path::Path,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use crate::support::*;

/// Runs in all; each kills tracer once.
const RUNS: u64 = 50;

/// A small generator of kill delays: the seed is printed, so a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// The processes whose command line holds `mark`, and all their descendants.
fn tree_of(mark: &str) -> BTreeSet<u32> {
    let mut all: Vec<(u32, u32, String)> = Vec::new();
    for e in fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
        all.push((pid, ppid, String::from_utf8_lossy(&cmdline).into_owned()));
    }
    let mut tree: BTreeSet<u32> = all
        .iter()
        .filter(|(_, _, c)| c.contains(mark) && !is_tracer(c))
        .map(|(p, _, _)| *p)
        .collect();
    loop {
        let more: Vec<u32> = all
            .iter()
            .filter(|(p, pp, _)| tree.contains(pp) && !tree.contains(p))
            .map(|(p, _, _)| *p)
            .collect();
        if more.is_empty() {
            return tree;
        }
        tree.extend(more);
    }
}

/// Whether a command line (NUL-separated) runs tracer itself, whose arguments hold the mark.
fn is_tracer(cmdline: &str) -> bool {
    let argv0 = cmdline.split('\0').next().unwrap_or_default();
    Path::new(argv0).file_name().is_some_and(|n| n == "tracer")
}

/// Whether a thread of `pid` is stopped.
fn stopped(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(Result::ok).any(|t| {
        fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('T'))
            })
            .unwrap_or(false)
    })
}

/// The ids of the BPF programs a process holds (its program and link descriptors).
fn program_ids(pid: u32) -> BTreeSet<u32> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return BTreeSet::new();
    };
    fds.filter_map(Result::ok)
        .filter_map(|f| fs::read_to_string(f.path()).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:"))
                .filter_map(|id| id.trim().parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn loaded_program_ids() -> BTreeSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect()
}

/// Starts tracer on `argv`, waits `delay`, kills it, and checks what it leaves.
fn kill_and_check(options: &[&str], argv: &[&str], mark: &str, delay: Duration) {
    let mut tracer: Child = tracer()
        .args(["-q", "--html"])
        .arg(json_path("killed").with_extension("html"))
        .args(options)
        .arg("--")
        .args(argv)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut ids = BTreeSet::new();
    while started.elapsed() < delay {
        ids.extend(program_ids(tracer.id()));
        sleep(Duration::from_millis(10));
    }
    tracer.kill().unwrap();
    tracer.wait().unwrap();
    // The keeper lets go within a second; a process still stopped after three never goes on.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut left: Vec<u32> = Vec::new();
    while Instant::now() < deadline {
        left = tree_of(mark).into_iter().filter(|&p| stopped(p)).collect();
        if left.is_empty() {
            break;
        }
        sleep(Duration::from_millis(50));
    }
    let gone = Instant::now() + Duration::from_secs(5);
    let mut kept: Vec<u32> = Vec::new();
    while Instant::now() < gone {
        let loaded = loaded_program_ids();
        kept = ids.iter().copied().filter(|i| loaded.contains(i)).collect();
        if kept.is_empty() {
            break;
        }
        sleep(Duration::from_millis(50));
    }
    // The workload goes, whatever the verdict.
    for pid in tree_of(mark) {
        // SAFETY: ending a process of this test's workload.
        unsafe {
            libc::kill(pid as i32, libc::SIGCONT);
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
    assert!(
        left.is_empty(),
        "{argv:?} {options:?}, killed after {delay:?}: left stopped: {left:?}"
    );
    assert!(
        kept.is_empty(),
        "{argv:?} {options:?}, killed after {delay:?}: programs still loaded: {kept:?}"
    );
}

#[test]
fn killed_tracer_leaves_no_process_stopped_and_no_program_loaded() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("killed: seed {seed}");
    let mut rng = Lcg(seed);
    let dl_loop = workload("dl_loop");
    let lib = dl_lib();
    let lib = lib.to_str().unwrap();
    for run in 0..RUNS {
        let mark = format!("killed-{}-{run}", std::process::id());
        // Attaching (the first 300 ms), holds at exec and code mappings, and the reports of a
        // command that ended on its own (a short loop, a long delay).
        let delay = Duration::from_millis(match rng.below(4) {
            0 => rng.below(300),
            _ => 300 + rng.below(1500),
        });
        match run % 3 {
            0 => {
                let script =
                    format!("i=0; while [ $i -lt 400 ]; do /bin/true; i=$((i+1)); done # {mark}");
                kill_and_check(&["--follow"], &["sh", "-c", &script], &mark, delay);
            }
            1 => kill_and_check(
                &[],
                &[dl_loop.to_str().unwrap(), lib, "200000", &mark],
                &mark,
                delay,
            ),
            _ => {
                let script = format!("/bin/true; /bin/true # {mark}");
                kill_and_check(&["--follow"], &["sh", "-c", &script], &mark, delay);
            }
        }
    }
}

/// A recording cut by SIGKILL is left as `.NAME.<random>.tmp` beside NAME (`--help` says so),
/// and `tracer report` reads its whole batches, says how much is missing, and succeeds.
#[test]
fn a_recording_cut_by_sigkill_is_read_up_to_its_last_whole_batch() {
    let w = workload("alloc");
    let dir = json_path("cut").with_extension("d");
    fs::create_dir_all(&dir).unwrap();
    let mut tracer = tracer()
        .args(["-q", "--record"])
        .arg(dir.join("run.trace"))
        .args(["--", w.to_str().unwrap(), "200000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Long enough for whole batches (256 KiB of events each) to be written.
    let deadline = Instant::now() + Duration::from_secs(20);
    let tmp = loop {
        let tmp = fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(".tmp"));
        if let Some(tmp) = tmp
            && fs::metadata(&tmp).unwrap().len() > 600 << 10
        {
            break tmp;
        }
        assert!(Instant::now() < deadline, "no recording written");
        sleep(Duration::from_millis(50));
    };
    tracer.kill().unwrap();
    tracer.wait().unwrap();
    let name = tmp.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(".run.trace.") && name.ends_with(".tmp"),
        "{name}"
    );
    let json = dir.join("cut.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .arg("report")
        .arg(&tmp)
        .args(["-q", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("ends before its finish"),
        "{}",
        stderr(&out)
    );
    let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    let (at, len) = (
        v["events"]["recording_ends_early"][0].as_u64().unwrap(),
        v["events"]["recording_ends_early"][1].as_u64().unwrap(),
    );
    assert!(
        at <= len && len == fs::metadata(&tmp).unwrap().len(),
        "{at} {len}"
    );
    // Events of whole batches: the family's mallocs, 4 an iteration.
    let calls = v["user"]["malloc"]["calls"].as_u64().unwrap();
    assert!(calls > 1000, "{calls} mallocs read");
    assert_eq!(v["notes"][0]["level"], "warning");
    fs::remove_dir_all(&dir).unwrap();
    // The workload goes on untraced after tracer died: end it.
    let _ = Command::new("pkill")
        .args(["-f", &format!("{} 200000", w.display())])
        .status();
}
