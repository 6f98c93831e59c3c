//! Root tests of `--cgroup` and of OOM kills: a cgroup's processes (in it before tracing, moved
//! in later, created by its processes) each traced with their exact allocator calls; the
//! kernel's own OOM killer ending a process in a v1 memory cgroup with a limit, and the
//! victim's report written at that moment.

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::support::*;

/// A cgroup made for one test, removed (its processes killed first) however the test ends.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new(hierarchy: &str, tag: &str) -> Self {
        let path = Path::new(hierarchy).join(format!("tracer-test-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir(&path);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TestCgroup(path)
    }

    fn add(&self, pid: u32) {
        fs::write(self.0.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.0.display()));
    }

    fn procs(&self) -> Vec<u32> {
        fs::read_to_string(self.0.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for pid in self.procs() {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::remove_dir(&self.0).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A workload that printed "ready" and waits for a byte on stdin.
struct Gated {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Gated {
    fn start(program: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut gated = Gated { child, out };
        assert_eq!(gated.line(), "ready");
        gated
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim_end().to_string()
    }

    fn go(&mut self) {
        self.child.stdin.as_mut().unwrap().write_all(b"g").unwrap();
    }

    /// Closes stdin (the workload exits) and waits for it.
    fn end(mut self) -> std::process::ExitStatus {
        drop(self.child.stdin.take());
        self.child.wait().unwrap()
    }
}

/// Starts `tracer --cgroup CG ARGS` and waits until it says it follows the cgroup.
fn follow(cgroup: &Path, args: &[&str]) -> (Child, StderrLines) {
    let mut tracer = tracer()
        .arg("--cgroup")
        .arg(cgroup)
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(tracer.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("tracer: following cgroup "), "{first}");
    (tracer, lines)
}

/// Ends a tracer with SIGINT and returns the rest of its stderr.
fn interrupt(mut tracer: Child, lines: StderrLines) -> String {
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = tracer.wait().unwrap();
    assert!(status.success(), "{status}: {}", rest.join("\n"));
    rest.join("\n")
}

fn process_of(v: &Value, pid: u32) -> &Value {
    v["processes"]
        .as_array()
        .unwrap_or_else(|| panic!("no processes in {v:#}"))
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap_or_else(|| panic!("pid {pid} not in {:#}", v["processes"]))
}

fn calls(p: &Value, func: &str) -> u64 {
    p["user"][func]["calls"].as_u64().unwrap()
}

/// Three processes in a (v2) cgroup before tracing starts, one moved in from outside after it
/// started, and one created by fork: each traced with exactly its own allocator calls, and the
/// recording replays to the same summary.
#[test]
fn every_process_of_a_cgroup_before_and_after_tracing_has_its_books() {
    require_root();
    let w = workload("member");
    let cg = TestCgroup::new("/sys/fs/cgroup/unified", "members");
    let mut before: Vec<(Gated, u64)> = [10u64, 20, 30]
        .iter()
        .map(|&n| {
            let args = if n == 30 {
                vec![n.to_string(), "5".to_string()]
            } else {
                vec![n.to_string()]
            };
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let g = Gated::start(&w, &args);
            cg.add(g.pid());
            (g, n)
        })
        .collect();
    let json = json_path("cgroup-members");
    let recording = json.with_extension("trace");
    let (tracer, mut lines) = follow(
        &cg.0,
        &[
            "--json",
            json.to_str().unwrap(),
            "--record",
            recording.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let serving = lines.next().unwrap().unwrap();
    let addr: std::net::SocketAddr = serving
        .strip_prefix("tracer: serving http://")
        .and_then(|r| r.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{serving}"));
    // Started outside after tracing began, then moved in: found at the next poll (a second).
    let mut moved = Gated::start(&w, &["40"]);
    cg.add(moved.pid());
    std::thread::sleep(Duration::from_millis(2500));
    for (g, _) in &mut before {
        g.go();
    }
    moved.go();
    for (g, _) in &mut before {
        assert_eq!(g.line(), "done");
    }
    assert_eq!(moved.line(), "done");
    let members: Vec<(u32, u64)> = before
        .iter()
        .map(|(g, n)| (g.pid(), *n))
        .chain([(moved.pid(), 40)])
        .collect();
    let forker = before[2].0.pid();
    // While they run: the cgroup's series, and one process's profile by ?pid=.
    let cg_label = format!("tracer_cgroup_processes{{cgroup=\"{}\"}} 4", cg.0.display());
    wait_for_metrics(addr, &[], |l| l == cg_label);
    let moved_pid = moved.pid();
    let (status, _, body) = get(addr, &format!("/debug/pprof/heap?pid={moved_pid}"), &[]);
    assert_eq!(status, 200);
    assert!(!body.is_empty());
    let (status, _, body) = get(addr, "/debug/pprof/heap?pid=1", &[]);
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    for (g, _) in before {
        assert!(g.end().success());
    }
    assert!(moved.end().success());
    std::thread::sleep(Duration::from_millis(300));
    let said = interrupt(tracer, lines);
    let v: Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    for (pid, n) in &members {
        let p = process_of(&v, *pid);
        assert_eq!(calls(p, "malloc"), *n, "pid {pid}: {p:#}");
        assert_eq!(calls(p, "free"), *n, "pid {pid}");
        // malloc(2000 + i) for i in 0..n.
        let bytes = n * 2000 + n * (n - 1) / 2;
        assert_eq!(p["user"]["malloc"]["bytes"], bytes, "pid {pid}");
        assert_eq!(p["exit_code"], 0, "pid {pid}");
    }
    // The forked child: its parent is the process that forked it; its own five calls.
    let child = v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["ppid"] == forker)
        .unwrap_or_else(|| panic!("no child of {forker} in {:#}", v["processes"]));
    assert_eq!(calls(child, "malloc"), 5, "{child:#}");
    assert_eq!(child["user"]["malloc"]["bytes"], 5000);
    assert_eq!(child["exit_code"], 0);
    assert_eq!(v["processes"].as_array().unwrap().len(), 5, "{said}");
    // The totals are the processes' sums.
    assert_eq!(calls(&v, "malloc"), 10 + 20 + 30 + 40 + 5);
    let c = &v["cgroup"];
    assert_eq!(c["path"], cg.0.to_str().unwrap());
    assert_eq!(c["version"], 2);
    // This v2 hierarchy counts no memory (no controller): nothing is made up.
    if !fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
        .unwrap_or_default()
        .contains("memory")
    {
        assert_eq!(c["memory"]["usage_bytes"], Value::Null, "{c:#}");
    }
    replays_to(&recording, &fs::read_to_string(&json).unwrap());
}

/// A workload grows one site in a v1 memory cgroup limited to 64 MiB until the kernel's OOM
/// killer ends it: the report written at the kill names the victim, the site with at least
/// 90% of what the workload said it had allocated there, the cgroup's limit and its kill.
#[test]
fn an_oom_kill_writes_the_victims_report_at_once() {
    require_root();
    let w = workload("oom_grow");
    let cg = TestCgroup::new("/sys/fs/cgroup/memory", "oom");
    fs::write(
        cg.0.join("memory.limit_in_bytes"),
        (64u64 << 20).to_string(),
    )
    .unwrap();
    let mut g = Gated::start(&w, &[]);
    cg.add(g.pid());
    let dir = json_path("oom").with_extension("d");
    let _ = fs::remove_dir_all(&dir);
    let json = json_path("oom-run");
    let (tracer, mut lines) = follow(
        &cg.0,
        &[
            "--on-oom",
            dir.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let pid = g.pid();
    g.go();
    // The running total it printed last before the kill.
    let mut total = 0u64;
    loop {
        let line = g.line();
        match line.strip_prefix("total ") {
            Some(n) => total = n.parse().unwrap(),
            None => break,
        }
    }
    let status = g.end();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "{status}"
    );
    assert!(total >= 32 << 20, "it grew to {total} bytes only");
    // Tracing goes on after the report is written: its line comes, then the run is ended.
    let said = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("OOM killer chose"))
        .expect("tracer says it wrote the report");
    assert!(said.contains(&format!("pid {pid}")), "{said}");
    let rest = interrupt(tracer, lines);
    let reports: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let json_report = reports
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap_or_else(|| panic!("no JSON report in {reports:?}"));
    let name = json_report.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("oom-"), "{name}");
    assert!(name.ends_with(&format!("-{pid}-oom_grow.json")), "{name}");
    assert!(
        reports
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "txt"))
    );
    let v: Value = serde_json::from_str(&fs::read_to_string(json_report).unwrap()).unwrap();
    assert_eq!(v["oom"]["pid"], pid, "{:#}", v["oom"]);
    assert_eq!(v["target"]["pid"], pid);
    // The kernel's own view of the victim: its anonymous memory near the limit.
    let anon = v["oom"]["anon_rss_bytes"].as_u64().unwrap();
    assert!((48 << 20..=64 << 20).contains(&anon), "anon rss {anon}");
    let site = site_in(&v, "hoard");
    let bytes = site["bytes"].as_u64().unwrap();
    assert!(
        bytes * 10 >= total * 9 && bytes <= total + (1 << 20),
        "hoard: {bytes} bytes in the report; the workload said {total}"
    );
    assert_eq!(v["cgroup"]["memory"]["limit_bytes"], 64u64 << 20);
    assert!(
        v["cgroup"]["memory"]["events"]["oom_kill"]
            .as_u64()
            .unwrap()
            >= 1
    );
    let text = fs::read_to_string(json_report.with_extension("txt")).unwrap();
    assert!(
        text.contains(&format!("the kernel's OOM killer chose pid {pid}")),
        "{text}"
    );
    assert!(text.contains("hoard (oom_grow.c:"), "{text}");
    // The run's own summary says so too.
    let run: Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    let notes = run["notes"].to_string();
    assert!(notes.contains("OOM killer chose pid"), "{notes}\n{rest}");
}

/// What is not a cgroup is refused at once, saying what a cgroup path looks like.
#[test]
fn a_path_that_is_no_cgroup_is_refused() {
    require_root();
    for (path, says) in [
        ("/tmp", "not a cgroup"),
        ("/sys/fs/cgroup/memory/no-such-cgroup-here", "No such file"),
    ] {
        let out = tracer().args(["--cgroup", path]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{path}");
        let err = stderr(&out);
        assert!(err.contains(says) && err.contains(path), "{path}: {err}");
    }
    let out = tracer()
        .args(["--cgroup", "/sys/fs/cgroup/memory", "--pid", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// `--system` with a process growing 1 GiB among the machine's others (the other tests run
/// beside it, compilers among them): it ranks first by growth, and its faults, mmap calls and
/// pages equal what a `--pid --mode kernel` run beside it counted of the same kernel events.
#[test]
fn system_ranks_a_growing_process_first_with_a_pid_runs_counts() {
    require_root();
    let w = workload("oom_grow");
    let mut g = Gated::start(&w, &["1024", "0"]);
    let pid = g.pid();
    // The --pid run first: loading its maps takes pages in it, which --system would count.
    let pid_json = json_path("system-pid");
    let (one, one_lines) = attach_tracer(pid, &pid_json, &["--mode", "kernel", "-q"]);
    let sys_json = json_path("system");
    let mut sys = tracer()
        .args(["--system", "-q", "--json"])
        .arg(&sys_json)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sys_lines = BufReader::new(sys.stderr.take().unwrap()).lines();
    let first = sys_lines.next().unwrap().unwrap();
    assert!(
        first.starts_with("tracer: counting every process"),
        "{first}"
    );
    g.go();
    while g.line() != "done" {}
    std::thread::sleep(Duration::from_millis(300));
    interrupt(sys, sys_lines);
    interrupt(one, one_lines);
    assert!(g.end().success());
    let v: Value = serde_json::from_str(&fs::read_to_string(&sys_json).unwrap()).unwrap();
    let s = &v["system"];
    let top = &s["grew_most"][0];
    assert_eq!(top["pid"], pid, "{:#}", s["grew_most"]);
    assert_eq!(top["comm"], "oom_grow");
    let growth = top["growth_bytes"].as_u64().unwrap();
    assert!(
        (1 << 30..=(1 << 30) + (16 << 20)).contains(&growth),
        "grew {growth}"
    );
    let p: Value = serde_json::from_str(&fs::read_to_string(&pid_json).unwrap()).unwrap();
    assert_eq!(top["faults"], p["kernel"]["faults"]["user"], "faults");
    assert_eq!(
        top["mmap_calls"], p["syscalls"]["mmap"]["calls"],
        "mmap calls"
    );
    assert_eq!(
        top["munmap_calls"], p["syscalls"]["munmap"]["calls"],
        "munmap calls"
    );
    assert_eq!(
        top["pages_allocated"], p["kernel"]["buddy"]["pages"],
        "pages"
    );
    // Bounded: at most the top 20 of each ranking, the rest summed.
    assert!(s["grew_most"].as_array().unwrap().len() <= 20);
    assert!(s["largest"].as_array().unwrap().len() <= 20);
    assert!(s["processes_seen"].as_u64().unwrap() > 1);
}

/// `--on-pressure`: when the pressure watched rises above the threshold, every report is
/// written as a snapshot, once per rise (here the pressure file is one the test writes, as
/// `--pressure-file` allows).
#[test]
fn pressure_above_the_threshold_writes_one_snapshot_per_rise() {
    require_root();
    let w = workload("member");
    let g = Gated::start(&w, &["5"]);
    let dir = json_path("pressure").with_extension("d");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let psi = dir.join("memory.pressure");
    let write_psi = |avg10: f64| {
        fs::write(
            &psi,
            format!(
                "some avg10={avg10:.2} avg60=0.50 avg300=0.00 total=100\n\
                 full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
            ),
        )
        .unwrap();
    };
    write_psi(1.0);
    let json = dir.join("run.json");
    let (tracer, lines) = attach_tracer(
        g.pid(),
        &json,
        &[
            "-q",
            "--duration",
            "6",
            "--on-pressure",
            "some avg10>20",
            "--pressure-file",
            psi.to_str().unwrap(),
        ],
    );
    let snapshots = || {
        fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("run.") && n != "run.json")
            .count()
    };
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(snapshots(), 0, "below the threshold");
    write_psi(25.5);
    std::thread::sleep(Duration::from_millis(2500));
    // Still above: no second one.
    write_psi(30.0);
    let said: Vec<String> = lines.map_while(Result::ok).collect();
    let mut tracer = tracer;
    assert!(tracer.wait().unwrap().success(), "{said:?}");
    let rises: Vec<&String> = said
        .iter()
        .filter(|l| l.contains("memory pressure"))
        .collect();
    assert_eq!(rises.len(), 1, "{said:#?}");
    assert!(rises[0].contains("25.50 (some avg10>20)"), "{}", rises[0]);
    assert_eq!(snapshots(), 1, "{said:#?}");
    // Never released: it exits at the end of its input.
    g.end();
}
