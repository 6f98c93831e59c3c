//! Root tests of `--follow`: every process a command creates is traced, each with its own
//! sites, leaks and exit status, and the totals add up; without it the summary says how many
//! went untraced. A recording of a followed run replays to the same summary.

use std::fs;

use crate::support::*;
use serde_json::Value;

fn site<'a>(v: &'a Value, function: &str) -> &'a Value {
    site_in(v, function)
}

fn leak(v: &Value, function: &str) -> Value {
    leak_at(v, function)
}

fn processes(v: &Value) -> &Vec<Value> {
    v["processes"]
        .as_array()
        .unwrap_or_else(|| panic!("no processes in {v:#}"))
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// A process that forks a child that forks a grandchild: three processes, each with its known
/// allocations, exit status and parent; the child's free of a block it inherited is a free of
/// an unknown block, not the parent's.
#[test]
fn a_child_that_forks_is_followed_with_its_own_books() {
    let w = workload("forker");
    let dir = json_path("follow").with_extension("d");
    fs::create_dir_all(&dir).unwrap();
    let live = dir.join("live.json");
    let recording = dir.join("run.trace");
    let out = tracer()
        .args(["--follow", "--json"])
        .arg(&live)
        .arg("--record")
        .arg(&recording)
        .arg("--")
        .arg(&w)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = fs::read_to_string(&live).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let ps = processes(&v);
    assert_eq!(ps.len(), 3, "{:#}", v["processes"]);
    let (parent, child, grandchild) = (&ps[0], &ps[1], &ps[2]);
    assert_eq!(parent["ppid"], Value::Null);
    assert_eq!(parent["pid"], v["target"]["pid"]);
    assert_eq!(child["ppid"], parent["pid"]);
    assert_eq!(grandchild["ppid"], child["pid"]);
    let codes: Vec<&Value> = ps.iter().map(|p| &p["exit_code"]).collect();
    assert_eq!(codes, [&Value::from(0), &Value::from(3), &Value::from(5)]);
    assert_eq!(child["command"][0], w.to_str().unwrap());

    let s = site(parent, "in_parent");
    assert_eq!((u(&s["allocs"]), u(&s["bytes"])), (10, 10_000));
    assert_eq!(u(&leak(parent, "in_parent")["bytes"]), 10_000);
    let s = site(child, "in_child");
    assert_eq!(
        (u(&s["allocs"]), u(&s["bytes"]), u(&s["live_bytes"])),
        (20, 40_000, 0)
    );
    assert_eq!(
        u(&child["user"]["free"]["unknown"]),
        1,
        "{:#}",
        child["user"]["free"]
    );
    let l = leak(grandchild, "in_grandchild");
    assert_eq!((u(&l["count"]), u(&l["bytes"])), (30, 90_000));
    // Each process's sites are its own.
    for (p, own) in [
        (parent, "in_parent"),
        (child, "in_child"),
        (grandchild, "in_grandchild"),
    ] {
        for other in ["in_parent", "in_child", "in_grandchild"] {
            let listed = p["user"]["sites"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["stack"][0]["function"] == other);
            assert_eq!(listed, other == own, "{other} in pid {}", p["pid"]);
        }
    }

    // The totals are the sums.
    let sum = |f: &dyn Fn(&Value) -> u64| ps.iter().map(f).sum::<u64>();
    assert_eq!(
        u(&v["user"]["malloc"]["calls"]),
        sum(&|p| u(&p["user"]["malloc"]["calls"]))
    );
    assert_eq!(
        u(&v["user"]["leaked_bytes"]),
        sum(&|p| u(&p["user"]["leaked_bytes"]))
    );
    assert_eq!(
        u(&v["syscalls"]["mmap"]["calls"]),
        sum(&|p| u(&p["syscalls"]["mmap"]["calls"]))
    );
    assert_eq!(u(&site(&v, "in_grandchild")["bytes"]), 90_000);
    assert_eq!(u(&leak(&v, "in_parent")["count"]), 10);
    assert!(
        stderr(&out).contains("processes: 3 traced"),
        "{}",
        stderr(&out)
    );

    // The recording replays to the same summary.
    replays_to(&recording, &text);
}

/// `sh -c './a; ./b & wait'`: the shell and the two programs it runs (one in the foreground,
/// one in the background), each program's sites resolved by name in its own process.
#[test]
fn a_shell_and_the_programs_it_runs() {
    let findings = workload("findings");
    let alloc = workload("alloc");
    let script = format!("{} leak; {} 3 & wait", findings.display(), alloc.display());
    let (v, out) = trace_with(&["--follow", "--no-kernel"], &["sh", "-c", &script], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ps = processes(&v);
    assert_eq!(ps.len(), 3, "{:#}", v["processes"]);
    assert_eq!(ps[0]["command"][0], "sh");
    let by_program = |path: &std::path::Path| {
        ps.iter()
            .find(|p| p["command"][0] == path.to_str().unwrap())
            .unwrap_or_else(|| panic!("no process ran {}: {:#}", path.display(), v["processes"]))
    };
    let f = by_program(&findings);
    let l = leak(f, "leak100");
    assert_eq!((u(&l["count"]), u(&l["bytes"])), (2000, 200_000));
    assert_eq!(f["ppid"], ps[0]["pid"]);
    let a = by_program(&alloc);
    // Three iterations of the family: one pvalloc and one valloc each, and the one leak.
    assert_eq!(u(&a["user"]["pvalloc"]["calls"]), 3);
    assert_eq!(u(&a["user"]["valloc"]["calls"]), 3);
    assert_eq!(u(&leak(a, "leak_here")["bytes"]), 4242);
    assert_eq!(u(&v["user"]["pvalloc"]["calls"]), 3);
    // No process is cut short, and the shell's own exit status is the run's.
    for p in ps {
        assert_eq!(p["exit_code"], 0, "{p:#}");
    }
    assert_eq!(out.status.code(), Some(0));
}

/// Without --follow the children run untraced, and the summary says so and how to trace them.
#[test]
fn without_follow_the_untraced_children_are_counted() {
    let w = workload("forker");
    let (v, out) = trace_with(&["--no-kernel"], &[w.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["events"]["child_processes"], 1);
    assert!(v.get("processes").is_none());
    let err = stderr(&out);
    assert!(
        err.contains("1 child process, which was not traced (use --follow)"),
        "{err}"
    );
    // Only the parent's own allocations.
    assert_eq!(u(&site(&v, "in_parent")["allocs"]), 10);
    assert!(
        !v["user"]["sites"].to_string().contains("in_child"),
        "{:#}",
        v["user"]["sites"]
    );
}

/// `--pid --follow` of a shell that, once attached to, runs a program that forks: the shell,
/// the process it forks to run the program (which execs it), and that program's two children,
/// each of the program's processes with its own sites.
#[test]
fn attached_to_a_running_shell_its_new_processes_are_followed() {
    let w = workload("forker");
    let script = format!("echo ready; read x; {}; exit 0", w.display());
    let v = trace_gated(
        std::path::Path::new("/bin/sh"),
        &["-c", &script],
        &["--follow", "--no-kernel"],
        |_| {},
    );
    let ps = processes(&v);
    assert_eq!(ps.len(), 4, "{:#}", v["processes"]);
    assert_eq!(ps[0]["command"][0], "/bin/sh");
    assert_eq!(ps[0]["exit_code"], 0);
    // The shell's child ran the program: its command, and its parent's.
    assert_eq!(ps[1]["command"][0], w.to_str().unwrap());
    assert_eq!(ps[1]["ppid"], ps[0]["pid"]);
    assert_eq!(u(&site(&ps[1], "in_parent")["allocs"]), 10);
    assert_eq!(u(&site(&ps[2], "in_child")["allocs"]), 20);
    assert_eq!(u(&leak(&ps[3], "in_grandchild")["bytes"]), 90_000);
    // Each child has its parent's unwind tables from its first instruction (copied in the
    // kernel at the fork): its stacks are whole, past libc's code without frame pointers.
    for (p, function) in [(&ps[2], "in_child"), (&ps[3], "in_grandchild")] {
        let stack: Vec<&str> = site(p, function)["stack"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["function"].as_str())
            .collect();
        assert!(
            stack.contains(&"__libc_start_main_impl"),
            "{function}: {stack:?}"
        );
    }
    let codes: Vec<&Value> = ps.iter().map(|p| &p["exit_code"]).collect();
    assert_eq!(
        codes,
        [
            &Value::from(0),
            &Value::from(0),
            &Value::from(3),
            &Value::from(5)
        ]
    );
}

/// `--pid --follow` of a shell that already runs a child: the child is named as started before
/// tracer attached and not traced (only processes created while tracing are followed).
#[test]
fn children_started_before_attaching_are_named_not_traced() {
    let mut before = Vec::new();
    let v = trace_gated(
        std::path::Path::new("/bin/sh"),
        &[
            "-c",
            "sleep 30 >/dev/null & echo ready; read x; kill $!; wait; exit 0",
        ],
        &["--follow", "--no-kernel"],
        |pid| {
            // The shell's child, as /proc says it is now.
            for entry in fs::read_dir("/proc").unwrap().flatten() {
                let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
                let ppid = stat
                    .rsplit(") ")
                    .next()
                    .and_then(|r| r.split(' ').nth(1))
                    .and_then(|p| p.parse::<u32>().ok());
                if ppid == Some(pid) {
                    before.push(entry.file_name().to_str().unwrap().parse::<u32>().unwrap());
                }
            }
        },
    );
    assert_eq!(before.len(), 1, "the shell's sleep");
    assert_eq!(v["target"]["children_at_attach"], serde_json::json!(before));
    // The shell alone is traced (a run of one process has no per-process list): the sleep
    // was there before, and the shell made nothing new.
    assert!(v.get("processes").is_none(), "{:#}", v["processes"]);
    assert_eq!(v["events"]["children_lost"], Value::Null);
}

/// `--follow --listen`: /metrics has each running process's series under its own pid, while
/// the run goes on.
#[test]
fn metrics_are_served_per_followed_process() {
    use std::{
        io::{BufRead, BufReader},
        process::Stdio,
    };
    let w = workload("growing");
    // Long enough for a loaded machine; ended by the test once it has seen both.
    let script = format!("{0} 3000 & {0} 3000 & wait", w.display());
    let mut tracer = tracer()
        .args(["-q", "--no-kernel", "--follow", "--listen", "127.0.0.1:0"])
        .args(["--", "sh", "-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tracer.stderr.take().unwrap()).lines();
    let addr: std::net::SocketAddr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("tracer: serving http://")
                .and_then(|r| r.split('/').next()?.parse().ok())
        })
        .expect("tracer said where it serves");
    // The pids with a leak_step series of a growing process.
    let leaking = |text: &str| -> std::collections::BTreeSet<String> {
        text.lines()
            .filter(|l| l.starts_with("tracer_site_live_bytes{") && l.contains("comm=\"growing\""))
            .filter(|l| l.contains("leak_step"))
            .filter_map(|l| Some(l.split("pid=\"").nth(1)?.split('"').next()?.to_string()))
            .collect()
    };
    // Both processes are seen (each has run a few steps), 30 s at most.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let text = loop {
        let text = wait_for_metrics(addr, &[], |_| true);
        if leaking(&text).len() == 2 {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(
        text.lines()
            .any(|l| l.starts_with("tracer_processes{") && l.contains("state=\"running\"")),
        "{text}"
    );
    // The two workloads end; the shell's wait returns; the run ends with it.
    for pid in leaking(&text) {
        // SAFETY: a signal to a process of the test's own making.
        unsafe { libc::kill(pid.parse().unwrap(), libc::SIGTERM) };
    }
    let status = tracer.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// `--follow` of a command that exits leaving a process of its own running: the first Ctrl-C
/// says what the run waits for, the second ends it, and tracer exits with the command's status.
#[test]
fn an_orphan_keeps_the_run_and_ctrl_c_says_so() {
    use std::{io::Read as _, time::Duration};
    let mut child = tracer()
        .args(["-q", "--follow", "--", "sh", "-c", "sleep 29.7 & exit 3"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: signals to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first Ctrl-C ended the run"
    );
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    // The orphan holds tracer's stderr too: it goes first.
    let _ = std::process::Command::new("pkill")
        .args(["-f", "^sleep 29.7$"])
        .status();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("exited; waiting for 1 process it created (pid "),
        "{err}"
    );
    assert_eq!(status.code(), Some(3), "{err}");
}
