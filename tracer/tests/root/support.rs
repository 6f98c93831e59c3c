//! Helpers for the root tests: building workloads and running the real tracer binary.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

use serde_json::Value;

/// Root tests load real eBPF programs: refuse loudly rather than pass vacuously.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "root tests must run as root: use `sudo -E cargo xtask test`"
    );
}

pub fn tracer() -> Command {
    require_root();
    Command::new(env!("CARGO_BIN_EXE_tracer"))
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Compiles `workloads/<name>.c` once per test run, with frame pointers.
pub fn workload(name: &'static str) -> PathBuf {
    let src = format!("{name}.c");
    build(
        name,
        &src,
        &["cc", "-O1", "-g", "-fno-omit-frame-pointer", "-pthread"],
    )
}

/// Compiles `workloads/<src>` into `out` once per test run with `compiler` (argv, flags
/// included); `-o OUT SRC` is appended.
pub fn build(out: &str, src: &str, compiler: &[&str]) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<Vec<(String, PathBuf)>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap();
    if let Some((_, path)) = built.iter().find(|(n, _)| n == out) {
        return path.clone();
    }
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(out);
    let src = workspace_root().join("workloads").join(src);
    let status = Command::new(compiler[0])
        .args(&compiler[1..])
        .arg("-o")
        .arg(&path)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", compiler[0]));
    assert!(status.success(), "compiling {}", src.display());
    built.push((out.to_string(), path.clone()));
    path
}

/// `workloads/dl_lib.c` built as a shared library (lib_alloc(n): n blocks of 333 bytes).
pub fn dl_lib() -> PathBuf {
    build(
        "libdl_lib.so",
        "dl_lib.c",
        &[
            "cc",
            "-O1",
            "-g",
            "-fno-omit-frame-pointer",
            "-shared",
            "-fPIC",
        ],
    )
}

/// The line of `workloads/<src>` that contains `marker`.
pub fn line_of(src: &str, marker: &str) -> u64 {
    let text = std::fs::read_to_string(workspace_root().join("workloads").join(src)).unwrap();
    text.lines()
        .position(|l| l.contains(marker))
        .expect("marker in source") as u64
        + 1
}

/// A fresh path for a JSON summary.
pub fn json_path(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{tag}-{}-{n}.json", std::process::id()))
}

/// Runs `tracer --json PATH -- argv...` and returns the summary and the tracer's output.
pub fn trace_command(argv: &[&str]) -> (Value, Output) {
    trace_with(&[], argv, &[])
}

/// Runs `tracer OPTIONS --json PATH -- argv...` with extra environment variables and returns the
/// summary and the tracer's output.
pub fn trace_with(options: &[&str], argv: &[&str], env: &[(&str, &str)]) -> (Value, Output) {
    let json = json_path("cmd");
    let out = tracer()
        .args(options)
        .arg("--json")
        .arg(&json)
        .arg("--")
        .args(argv)
        .envs(env.iter().copied())
        .output()
        .expect("running tracer");
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "no JSON summary ({e}); tracer stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (serde_json::from_str(&text).unwrap(), out)
}

/// `a - b` for every number in two JSON objects of the same shape.
pub fn delta(a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => Value::Object(
            a.iter()
                .filter_map(|(k, va)| b.get(k).map(|vb| (k.clone(), delta(va, vb))))
                .collect(),
        ),
        (Value::Number(a), Value::Number(b)) => (a.as_i64().unwrap() - b.as_i64().unwrap()).into(),
        _ => Value::Null,
    }
}

pub fn page_size() -> i64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as i64 }
}

/// The syscalls part of the summary that `iterations` iterations of `workloads/syscalls.c`'s
/// pattern add, per thread, `with_brk` on the main thread only.
pub fn syscalls_pattern(iterations: i64, threads: i64, with_brk: bool) -> Value {
    let p = page_size();
    let n = iterations * threads;
    let b = if with_brk { iterations } else { 0 };
    serde_json::json!({
        "brk": { "calls": 5 * b, "queries": b, "grow_bytes": 131072 * b,
                 "shrink_bytes": 131072 * b, "failed": b },
        "mmap": { "calls": 4 * n, "bytes": 6 * p * n, "anon_calls": 2 * n, "anon_bytes": 4 * p * n,
                  "file_calls": n, "file_bytes": 2 * p * n, "private_calls": 2 * n,
                  "private_bytes": 5 * p * n, "shared_calls": n, "shared_bytes": p * n,
                  "failed": n },
        "munmap": { "calls": 4 * n, "bytes": 8 * p * n, "failed": n },
        "mremap": { "calls": n, "old_bytes": 3 * p * n, "new_bytes": 5 * p * n, "failed": 0 },
        "mprotect": { "calls": 0, "commit_bytes": 0, "failed": 0 },
        "madvise": { "calls": 0, "dontneed_bytes": 0, "free_bytes": 0, "resident_bytes": 0, "failed": 0 },
    })
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The stderr lines of a running tracer.
pub type StderrLines = std::io::Lines<std::io::BufReader<std::process::ChildStderr>>;

/// Starts `tracer --pid PID --json JSON ARGS...` and waits until it says it is attached to
/// `pid`: the tracer, and the rest of its stderr.
pub fn attach_tracer(pid: u32, json: &Path, args: &[&str]) -> (std::process::Child, StderrLines) {
    use std::io::BufRead;
    let mut tracer = tracer()
        .arg("--pid")
        .arg(pid.to_string())
        .arg("--json")
        .arg(json)
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(tracer.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with(&format!("tracer: attached to pid {pid}")),
        "{first}"
    );
    (tracer, lines)
}

/// Starts `workload args...` (which prints "ready" and waits for a byte on stdin), calls
/// `before_attach` with its pid, attaches `tracer --pid` (with `tracer_args`), releases the
/// workload once tracer says it is attached, and returns the summary when both have ended.
pub fn trace_gated(
    workload: &Path,
    args: &[&str],
    tracer_args: &[&str],
    before_attach: impl FnOnce(u32),
) -> Value {
    use std::{
        io::{Read, Write},
        process::Stdio,
    };
    let mut child = Command::new(workload)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = [0u8; 6];
    child.stdout.take().unwrap().read_exact(&mut ready).unwrap();
    assert_eq!(&ready, b"ready\n");
    before_attach(child.id());
    let json = json_path("gated");
    let (mut tracer, lines) = attach_tracer(child.id(), &json, tracer_args);
    child.stdin.take().unwrap().write_all(b"g").unwrap();
    assert!(child.wait().unwrap().success());
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(tracer.wait().unwrap().success(), "{rest:?}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["target"]["pid"], child.id());
    v
}

/// The leaks of the site whose innermost frame is `function`, whatever the leak check found
/// them to be (a site's blocks may be lost and reachable both): the first entry, its count and
/// bytes summed over all.
pub fn leak_at(v: &Value, function: &str) -> Value {
    let of_site: Vec<&Value> = v["user"]["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["stack"][0]["function"] == function)
        .collect();
    let mut leak = (*of_site
        .first()
        .unwrap_or_else(|| panic!("no leak {function} in {:#}", v["user"]["leaks"])))
    .clone();
    let sum = |k: &str| of_site.iter().map(|l| l[k].as_u64().unwrap()).sum::<u64>();
    leak["count"] = sum("count").into();
    leak["bytes"] = sum("bytes").into();
    leak
}

/// The leak of `bytes` bytes in a summary.
pub fn leak_of(v: &Value, bytes: i64) -> Value {
    v["user"]["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["bytes"] == bytes)
        .cloned()
        .unwrap_or_else(|| panic!("no {bytes}-byte leak in {}", v["user"]["leaks"]))
}

/// A plain HTTP/1.0 GET: (status, headers, body).
pub fn get(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    use std::io::{Read, Write};
    s.write_all(req.as_bytes()).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, all[split + 4..].to_vec())
}

/// Polls `/metrics` (30 s at most) until a line passes `ready`; returns the exposition.
pub fn wait_for_metrics(
    addr: std::net::SocketAddr,
    headers: &[(&str, &str)],
    ready: impl Fn(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, _, body) = get(addr, "/metrics", headers);
        let text = String::from_utf8_lossy(&body).into_owned();
        // 503 until the first publish.
        if status == 200 && text.lines().any(&ready) {
            return text;
        }
        assert!(std::time::Instant::now() < deadline, "{status}: {text}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The site whose innermost frame is `function`, in a summary's (or a process's) sites.
pub fn site_in<'a>(v: &'a Value, function: &str) -> &'a Value {
    v["user"]["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stack"][0]["function"] == function)
        .unwrap_or_else(|| panic!("no site in {function}: {}", v["user"]["sites"]))
}

/// `tracer report --json` of `recording` is `live`, byte for byte.
pub fn replays_to(recording: &Path, live: &str) {
    let replayed = recording.with_extension("replayed.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["report", "-q", "--json"])
        .arg(&replayed)
        .arg(recording)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&replayed).unwrap(), live);
}
