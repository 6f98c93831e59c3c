//! Root tests of the leak check against memcheck (Debian's valgrind, installed by `cargo xtask
//! setup`): the categories of workloads/reach.c, correct programs with nothing lost, the
//! README's gate, exit statuses kept, and a recording that replays the check.

use std::process::Command;

use serde_json::Value;

use crate::support::{build, json_path, replays_to, stderr, trace_with, tracer};

/// memcheck's leak summary of `argv`: (definitely, indirectly, possibly lost, still
/// reachable), each (bytes, blocks).
fn memcheck(argv: &[&str]) -> [(u64, u64); 4] {
    let run = || {
        Command::new("valgrind")
            .env("LC_ALL", "C")
            .args([
                "--leak-check=full",
                "--show-leak-kinds=all",
                "--run-libc-freeres=no",
                "--run-cxx-freeres=no",
            ])
            .args(argv)
            .output()
            .expect("running valgrind (cargo xtask setup installs it)")
    };
    // While another test traces with --follow or --cgroup, its uprobes sit in libc's shared
    // pages of every process, and valgrind, which translates the code it reads, runs their
    // breakpoints as the program's own: the program dies of SIGTRAP at the first probed call.
    // Such a run is no reference; it is run again once those tests are done.
    let mut out = run();
    for _ in 0..30 {
        if !String::from_utf8_lossy(&out.stderr).contains("signal 5 (SIGTRAP)") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
        out = run();
    }
    let text = String::from_utf8_lossy(&out.stderr);
    // A reference that did not run its program through is no reference.
    assert!(
        out.status.success(),
        "memcheck of {argv:?}: {}\n{text}",
        out.status
    );
    let number = |s: &str| s.replace(',', "").parse::<u64>().unwrap();
    let category = |name: &str| -> (u64, u64) {
        let Some(line) = text.lines().find(|l| l.contains(&format!("{name}:"))) else {
            // No leak summary at all: nothing was live at the end.
            assert!(text.contains("All heap blocks were freed"), "{text}");
            return (0, 0);
        };
        let rest = line.split(&format!("{name}:")).nth(1).unwrap();
        let words: Vec<&str> = rest.split_whitespace().collect();
        (number(words[0]), number(words[3]))
    };
    [
        category("definitely lost"),
        category("indirectly lost"),
        category("possibly lost"),
        category("still reachable"),
    ]
}

/// tracer's leak check of the same, from the summary.
fn categories(v: &Value) -> [(u64, u64); 4] {
    let c = &v["user"]["leak_check"];
    assert_eq!(c["outcome"], "done", "{c}");
    let n = |k: &str| c[k].as_u64().unwrap();
    [
        (n("lost_bytes"), n("lost_blocks")),
        (n("indirect_bytes"), n("indirect_blocks")),
        (n("possible_bytes"), n("possible_blocks")),
        (n("reachable_bytes"), n("reachable_blocks")),
    ]
}

fn reach() -> std::path::PathBuf {
    build("reach", "reach.c", &["cc", "-O0", "-g", "-pthread"])
}

/// Every category of workloads/reach.c equals memcheck's, and each block is where the
/// workload put it: the dropped list's head lost and its tail indirect, the ring's first block
/// lost and the other two indirect, the block held through its middle possible, those held by a
/// global, a thread-local, a blocked thread's stack and a spinning thread's register reachable.
#[test]
fn categories_equal_memchecks() {
    let prog = reach();
    let prog = prog.to_str().unwrap();
    let (v, out) = trace_with(&[], &[prog], &[("LC_ALL", "C")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ours = categories(&v);
    let theirs = memcheck(&[prog]);
    // memcheck scans the registers of the threads still there when it checks; under load the
    // spinning thread is sometimes gone by then (exit_group took it) and its r15 with it, and
    // memcheck calls that block lost. tracer holds every thread: reachable, always.
    let register_lost = [
        (ours[0].0 + 7000, ours[0].1 + 1),
        ours[1],
        ours[2],
        (ours[3].0 - 7000, ours[3].1 - 1),
    ];
    assert!(
        theirs == ours || theirs == register_lost,
        "ours {ours:?}, memcheck {theirs:?}"
    );
    assert_eq!(ours[0], (12_000, 4));
    let kinds: Vec<(String, &str, u64, u64)> = v["user"]["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["stack"][0]["file"]
                .as_str()
                .is_some_and(|f| f.ends_with("reach.c"))
        })
        .map(|l| {
            (
                l["stack"][0]["function"].as_str().unwrap().to_string(),
                l["kind"].as_str().unwrap(),
                l["count"].as_u64().unwrap(),
                l["bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    let has = |f: &str, kind: &str, count: u64, bytes: u64| {
        assert!(
            kinds.contains(&(f.to_string(), kind, count, bytes)),
            "{f} {kind} {count} {bytes}: {kinds:?}"
        );
    };
    has("list", "lost", 1, 2000);
    has("list", "indirect", 4, 8000);
    has("cycle", "lost", 1, 8000);
    has("cycle", "indirect", 2, 16000);
    has("interior", "possible", 1, 3000);
    has("stack_holder", "reachable", 1, 6000);
    has("register_holder", "reachable", 1, 7000);
    let pause = v["user"]["leak_check"]["pause_ms"].as_f64().unwrap();
    assert!(pause > 0.0, "the pause is measured");
    // The text says what was found, lost first.
    let text = String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .find(|l| l.contains("definitely lost 11.7 KiB in 4 blocks"));
    assert!(line.is_some(), "{text}");
}

/// Correct programs lose nothing, and what they keep on purpose (glibc's locale data,
/// libstdc++'s emergency pool, Python's interned objects) is still reachable, as memcheck
/// counts it, block for block.
#[test]
fn correct_programs_lose_nothing() {
    let hello = build("hello", "hello.cpp", &["g++", "-O0", "-g"]);
    let hello = hello.to_str().unwrap();
    // A directory of the test's own: what ls keeps depends on what it lists (the root
    // directory changes under other tests and other users).
    let dir = json_path("ls").with_extension("d");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["alpha", "beta", "gamma", "delta"] {
        std::fs::write(dir.join(name), name).unwrap();
    }
    let dir = dir.to_str().unwrap();
    let commands: [&[&str]; 4] = [
        &["/bin/echo", "hi"],
        &["ls", dir],
        &[hello],
        &["/usr/bin/python3", "-c", "pass"],
    ];
    // One locale for both (what ls and python load depends on it).
    for argv in commands {
        let (v, out) = trace_with(&[], argv, &[("LC_ALL", "C")]);
        assert!(out.status.success(), "{argv:?}: {}", stderr(&out));
        let ours = categories(&v);
        assert_eq!(ours, memcheck(argv), "{argv:?}");
        assert_eq!(ours[0], (0, 0), "{argv:?}");
        assert!(ours[3].1 > 0, "{argv:?}: something is kept on purpose");
        // No finding calls what is reachable a leak.
        let findings = v["findings"].as_array().unwrap();
        assert!(
            findings.iter().all(|f| f["kind"] != "leak"),
            "{argv:?}: {findings:?}"
        );
    }
}

/// The README's gate passes on a correct program and fails on a real leak, and the command's
/// own status comes through a check (here 7).
#[test]
fn the_gate_passes_correct_programs_and_fails_leaks() {
    let gate = ["-q", "--fail-if", "lost_bytes>0", "--"];
    let out = tracer()
        .args(gate)
        .args(["/bin/echo", "hi"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let prog = reach();
    let out = tracer().args(gate).arg(&prog).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("lost_bytes = 12000"),
        "{}",
        stderr(&out)
    );
    let (v, out) = trace_with(&[], &["sh", "-c", "exit 7"], &[]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(v["user"]["leak_check"]["outcome"], "done");
    // tracer diff compares the check's numbers and gates on their change.
    let (before, after) = (json_path("diff-before"), json_path("diff-after"));
    for (json, argv) in [
        (&before, vec!["/bin/echo", "hi"]),
        (&after, vec![prog.to_str().unwrap()]),
    ] {
        let out = tracer()
            .arg("-q")
            .arg("--json")
            .arg(json)
            .arg("--")
            .args(argv)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = tracer()
        .arg("diff")
        .args([&before, &after])
        .args(["--fail-if", "lost_bytes>+0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = stderr(&out);
    let row = text
        .lines()
        .find(|l| l.starts_with("lost_bytes"))
        .unwrap_or_default();
    assert!(row.contains("12000"), "{text}");
}

/// Without a check (--no-leak-check, --sample) the blocks are unclassified, and a gate on the
/// check's numbers fails rather than pass on nothing.
#[test]
fn no_check_no_classes() {
    let notes = |v: &Value| v["notes"].to_string();
    for options in [&["--no-leak-check"][..], &["--sample", "4K"]] {
        let (v, _) = trace_with(options, &["/bin/echo", "hi"], &[]);
        assert!(v["user"]["leak_check"].is_null(), "{options:?}");
        assert!(v["user"]["leaks"][0]["kind"].is_null(), "{options:?}");
        // A sampled run says why it has no check.
        assert_eq!(
            notes(&v).contains("no leak check: --sample"),
            options[0] == "--sample",
            "{options:?}: {}",
            notes(&v)
        );
    }
    // Killed by a signal, a process never reaches _exit: said too.
    let prog = reach();
    let (v, _) = trace_with(
        &[],
        &[
            "sh",
            "-c",
            &format!("{} & sleep 0.2; kill -9 $$", prog.display()),
        ],
        &[],
    );
    assert!(v["user"]["leak_check"].is_null());
    assert!(notes(&v).contains("killed by signal 9"), "{}", notes(&v));
    let out = tracer()
        .args([
            "-q",
            "--no-leak-check",
            "--fail-if",
            "lost_bytes>0",
            "--",
            "/bin/echo",
            "hi",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("no leak check"), "{}", stderr(&out));
}

/// A recording keeps the check: `tracer report` shows the same categories and kinds.
#[test]
fn a_recording_replays_the_check() {
    let prog = reach();
    let json = json_path("reach-rec");
    let rec = json.with_extension("trace");
    let out = tracer()
        .args(["-q", "--record"])
        .arg(&rec)
        .arg("--json")
        .arg(&json)
        .arg("--")
        .arg(&prog)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let live = std::fs::read_to_string(&json).unwrap();
    let v: Value = serde_json::from_str(&live).unwrap();
    assert_eq!(categories(&v)[0], (12_000, 4));
    replays_to(&rec, &live);
}

/// A service that leaks one block per request, checked live twice (SIGUSR2) and at the end
/// (--leak-check): lost blocks grow with the requests, the service keeps serving through each
/// check, the pause is reported, /metrics carries the categories, and its kept sessions are
/// still reachable.
#[test]
fn live_checks_of_a_running_service() {
    use std::{
        io::{BufRead, BufReader, Read, Write},
        process::Stdio,
        sync::mpsc,
        time::Duration,
    };
    let prog = crate::support::workload("service");
    let served = json_path("served").with_extension("count");
    let mut service = Command::new(&prog)
        .arg(&served)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = [0u8; 6];
    service
        .stdout
        .take()
        .unwrap()
        .read_exact(&mut ready)
        .unwrap();
    let pid = service.id();
    let json = json_path("service");
    let tracer = tracer()
        .args([
            "--pid",
            &pid.to_string(),
            "--leak-check",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--json")
        .arg(&json)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Whatever happens below, neither outlives the test (a Child already waited for is not
    // signalled again: its pid may be another process's by then).
    struct Procs(std::process::Child, std::process::Child);
    impl Drop for Procs {
        fn drop(&mut self) {
            for c in [&mut self.0, &mut self.1] {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let tracer_pid = tracer.id();
    let mut procs = Procs(tracer, service);
    let (tx, rx) = mpsc::channel();
    let pipe = procs.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut addr: Option<std::net::SocketAddr> = None;
    let mut attached = false;
    while !(attached && addr.is_some()) {
        let line = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        if let Some(rest) = line.strip_prefix("tracer: serving http://") {
            addr = rest.split('/').next().and_then(|a| a.parse().ok());
        }
        attached |= line.contains("attached to pid");
    }
    procs.1.stdin.take().unwrap().write_all(b"g").unwrap();
    // The count the service wrote last (a read that catches the file rewritten is retried).
    let count = || -> u64 {
        (0..100)
            .find_map(|_| {
                let n = std::fs::read_to_string(&served)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                if n.is_none() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                n
            })
            .unwrap_or(0)
    };
    // Two checks on request, each said with its lost blocks.
    let mut lost = Vec::new();
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(400));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(tracer_pid as i32, libc::SIGUSR2) };
        let line = loop {
            let line = rx.recv_timeout(Duration::from_secs(60)).unwrap();
            if line.contains(&format!("leak check of pid {pid}")) {
                break line;
            }
        };
        assert!(line.contains("stopped"), "{line}");
        let blocks: u64 = line
            .split("definitely lost ")
            .nth(1)
            .and_then(|r| r.split(" in ").nth(1))
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        lost.push((blocks, count()));
    }
    assert!(lost[1].0 > lost[0].0, "lost blocks grow: {lost:?}");
    // It kept serving through the checks.
    let before = count();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while count() <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the service serves on"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = crate::support::wait_for_metrics(addr.unwrap(), &[], |l| {
        l.starts_with("tracer_leak_check_blocks{") && l.contains("kind=\"lost\"")
    });
    assert!(
        metrics.contains("tracer_leak_check_pause_seconds"),
        "{metrics}"
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(tracer_pid as i32, libc::SIGINT) };
    assert!(procs.0.wait().unwrap().success());
    drop(procs);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let c = &v["user"]["leak_check"];
    assert_eq!(c["at"], "at_end", "{c}");
    assert_eq!(c["checks"], 3, "{c}");
    assert!(c["pause_ms"].as_f64().unwrap() > 0.0, "{c}");
    // Every request's block is lost but the one in flight; every session block is reachable.
    let site = |f: &str, kind: &str| -> (u64, u64) {
        v["user"]["leaks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["stack"][0]["function"] == f && l["kind"] == kind)
            .fold((0, 0), |(n, b), l| {
                (
                    n + l["count"].as_u64().unwrap(),
                    b + l["bytes"].as_u64().unwrap(),
                )
            })
    };
    let live_handles = crate::support::site_in(&v, "handle")["live_bytes"]
        .as_u64()
        .unwrap()
        / 512;
    let (lost_handles, _) = site("handle", "lost");
    assert!(
        lost_handles + 1 >= live_handles && lost_handles > lost[1].0,
        "{lost_handles} of {live_handles}"
    );
    let (kept, kept_bytes) = site("session", "reachable");
    assert!(kept > 0 && kept <= 64 && kept_bytes == kept * 256, "{kept}");
    assert_eq!(site("session", "lost"), (0, 0));
}

/// A check that would keep the process stopped longer than --leak-check-max-pause is given up:
/// the process exits as it would, the report says so, and no block is classified.
#[test]
fn a_check_over_its_pause_is_given_up() {
    let (v, out) = trace_with(
        &["--leak-check-max-pause", "1"],
        &[
            "/usr/bin/python3",
            "-c",
            "x = [bytearray(4096) for _ in range(20000)]",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let c = &v["user"]["leak_check"];
    assert_eq!(c["outcome"], "gave_up", "{c}");
    assert!(c["pause_ms"].as_f64().unwrap() >= 1.0, "{c}");
    assert!(
        v["user"]["leaks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["kind"].is_null())
    );
    assert!(stderr(&out).contains("given up"), "{}", stderr(&out));
}

/// --suppress in LeakSanitizer's format: a rule takes its leaks out of the lost totals and the
/// findings, says what it suppressed, and a rule for everything of reach.c's passes the gate;
/// a file with a line that is no rule is refused before anything runs.
#[test]
fn suppressions_take_known_leaks_out() {
    let prog = reach();
    let prog = prog.to_str().unwrap();
    let rules = json_path("rules").with_extension("supp");
    std::fs::write(
        &rules,
        "# known: direct() drops its blocks\nleak:^direct$\n",
    )
    .unwrap();
    let rules = rules.to_str().unwrap();
    let (v, out) = trace_with(&["--suppress", rules], &[prog], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let c = &v["user"]["leak_check"];
    assert_eq!(
        (c["lost_bytes"].clone(), c["lost_blocks"].clone()),
        (10_000.into(), 2.into())
    );
    assert_eq!(
        (
            c["suppressed_bytes"].clone(),
            c["suppressed_blocks"].clone()
        ),
        (2000.into(), 2.into())
    );
    assert_eq!(v["user"]["suppressed"][0]["rule"], "leak:^direct$");
    assert_eq!(v["user"]["suppressed"][0]["bytes"], 2000);
    let direct: Vec<&Value> = v["user"]["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["stack"][0]["function"] == "direct")
        .collect();
    assert!(!direct.is_empty() && direct.iter().all(|l| l["suppressed_by"] == "leak:^direct$"));
    let text = stderr(&out);
    assert!(
        text.contains("suppressed by leak:^direct$: 2.0 KiB in 2 blocks"),
        "{text}"
    );

    let all = json_path("all").with_extension("supp");
    std::fs::write(&all, "leak:reach.c\n").unwrap();
    let out = tracer()
        .args([
            "-q",
            "--suppress",
            all.to_str().unwrap(),
            "--fail-if",
            "lost_bytes>0",
            "--",
        ])
        .arg(prog)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    std::fs::write(&all, "leak:ok\nrace:no\n").unwrap();
    let out = tracer()
        .args(["-q", "--suppress", all.to_str().unwrap(), "--", "/bin/true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("line 2: `race:no` is not a rule"),
        "{}",
        stderr(&out)
    );
}

/// tracer killed while it holds a process at `_exit` for its check (a 200 MiB heap: the drain
/// and the scan take a while): the process is not left stopped, and exits.
#[test]
fn killed_during_a_check_leaves_the_process_to_exit() {
    use std::{
        io::{BufRead, BufReader},
        process::Stdio,
        time::{Duration, Instant},
    };
    let big = crate::support::workload("big_heap");
    let mut tracer = tracer()
        .args(["-q", "--"])
        .arg(&big)
        .args(["200", "1024", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tracer.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "exiting");
    // The command: tracer's child (from whichever of its threads started it).
    let pid: i32 = std::fs::read_dir(format!("/proc/{}/task", tracer.id()))
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .find(|&p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("big_heap"))
        })
        .expect("the command is tracer's child");
    let state = || -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    };
    // Held at _exit, stopped (by its SIGSTOP, or by ptrace for the scan: both 't' or 'T').
    let held = Instant::now() + Duration::from_secs(5);
    while !matches!(state(), Some('T' | 't')) {
        assert!(Instant::now() < held, "pid {pid} never held: {:?}", state());
        std::thread::sleep(Duration::from_millis(2));
    }
    tracer.kill().unwrap();
    tracer.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while matches!(state(), Some(s) if s != 'Z') {
        assert!(
            Instant::now() < deadline,
            "pid {pid} still there, state {:?}",
            state()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
