//! Root tests of `--listen` with the real scrapers: a Prometheus server scraping `/metrics`
//! and `go tool pprof` reading `/debug/pprof/heap`, on workloads/growing.c (1000-byte blocks
//! that leak, a cache of fifty 2000-byte blocks). `cargo xtask setup` installs both.

use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::support::*;
use serde_json::Value;

/// A traced workload serving on a free loopback port, killed when dropped.
struct Served {
    /// The workload, when traced by --pid.
    target: Option<Child>,
    tracer: Child,
    addr: SocketAddr,
    _stderr: mpsc::Receiver<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(t) = self.target.as_mut() {
            let _ = t.kill();
            let _ = t.wait();
        }
        // A launched workload ends the run when killed with tracer's SIGTERM.
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.tracer.id() as i32, libc::SIGTERM) };
        let _ = self.tracer.wait();
    }
}

/// `tracer` of `growing STEPS` (by `--pid` when `by_pid`, else launched) with `--listen
/// 127.0.0.1:0` and `options`; returns once it says where it serves (after attaching).
fn serve(steps: &str, by_pid: bool, options: &[&str]) -> Served {
    serve_with(steps, by_pid, options, tracer())
}

/// [`serve`] with `cmd`, a tracer command made ready (limits set).
fn serve_with(steps: &str, by_pid: bool, options: &[&str], mut cmd: Command) -> Served {
    let w = workload("growing");
    cmd.args(["-q", "--no-kernel", "--listen", "127.0.0.1:0"])
        .args(options)
        .stderr(Stdio::piped());
    let target = if by_pid {
        let target = Command::new(&w).arg(steps).spawn().unwrap();
        cmd.arg("--pid").arg(target.id().to_string());
        Some(target)
    } else {
        cmd.arg("--").arg(&w).arg(steps);
        None
    };
    let mut tracer = cmd.spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let pipe = tracer.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            eprintln!("tracer: {line}");
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let (mut addr, mut attached) = (None, false);
    for line in &rx {
        if let Some(rest) = line.strip_prefix("tracer: serving http://") {
            addr = rest.split('/').next().and_then(|a| a.parse().ok());
        }
        attached |= line.contains("attached to pid") || !by_pid;
        if attached && addr.is_some() {
            break;
        }
    }
    Served {
        target,
        tracer,
        addr: addr.expect("tracer said where it serves"),
        _stderr: rx,
    }
}

/// `n` connections (as many as connect) that ask for the page and never read the answer.
fn page_readers_that_never_read(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    use std::io::Write as _;
    (0..n)
        .filter_map(|_| {
            let mut c = TcpStream::connect(addr).ok()?;
            c.write_all(b"GET /report.html HTTP/1.1\r\nHost: x\r\n\r\n")
                .ok()?;
            Some(c)
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scratch(tag: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Prometheus scrapes `tracer --pid` every second: its API shows `tracer_live_bytes` rising
/// and the leaking site's series, labelled with the pid and comm.
#[test]
fn prometheus_scrapes_live_bytes_and_sites() {
    let served = serve("1500", true, &["--interval", "0.5"]);
    let dir = scratch("prometheus");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: \
             tracer\n    static_configs:\n      - targets: ['{}']\n",
            served.addr
        ),
    )
    .unwrap();
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is installed by `cargo xtask setup`");
    let query = |q: &str| -> Value {
        let path = format!("/api/v1/query?query={}", q.replace(' ', "%20"));
        let (status, _, body) = get(web, &path, &[]);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    };
    // Until five scrapes of live bytes are stored (or a minute passes).
    let deadline = Instant::now() + Duration::from_secs(60);
    let samples = loop {
        std::thread::sleep(Duration::from_secs(1));
        let up = TcpStream::connect(web).is_ok();
        if up {
            let v = query("tracer_live_bytes[30s]");
            let values = v["data"]["result"][0]["values"].as_array().cloned();
            if let Some(values) = values
                && values.len() >= 5
            {
                break (v, values);
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus stored no five scrapes"
        );
    };
    let (v, values) = samples;
    let metric = &v["data"]["result"][0]["metric"];
    assert_eq!(metric["comm"], "growing");
    assert_eq!(
        metric["pid"],
        served.target.as_ref().unwrap().id().to_string()
    );
    let live: Vec<f64> = values
        .iter()
        .map(|p| p[1].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(live.windows(2).all(|w| w[0] <= w[1]), "{live:?}");
    assert!(live.last() > live.first(), "{live:?}");
    let site = query("tracer_site_live_bytes");
    let sites: Vec<String> = site["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metric"]["site"].as_str().unwrap().to_string())
        .collect();
    assert!(
        sites.iter().any(|s| s.starts_with("leak_step (growing.c:")),
        "{sites:?}"
    );
    let rate = query("rate(tracer_site_allocations_total{site=~\"leak_step.*\"}[5s])");
    let per_second: f64 = rate["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // One a step of at least 10 ms: at most 100/s, and rate() extrapolates its window to the
    // range's edges, which overshoots by a few percent when scrapes come late (101.75 seen on
    // a loaded machine).
    assert!(per_second > 10.0 && per_second <= 110.0, "{per_second}");
    let _ = prometheus.kill();
    let _ = prometheus.wait();
}

/// `go tool pprof -raw` reads the heap profile of a launched workload: the leak's in-use bytes
/// are 1000 per in-use block, the filled cache holds its 50 blocks of 2000 bytes.
#[test]
fn go_pprof_reads_the_heap_profile() {
    // Launched, so the cache's every block is seen.
    let served = serve("1500", false, &[]);
    // The cache fills in its first 50 steps: wait until a publish shows it full.
    wait_for_metrics(served.addr, &[], |l| {
        l.starts_with("tracer_site_live_bytes{")
            && l.contains("cache_fill")
            && l.ends_with(" 100000")
    });
    let out = Command::new("go")
        .args(["tool", "pprof", "-raw", "-symbolize=none"])
        .arg(format!("http://{}/debug/pprof/heap", served.addr))
        .env("HOME", scratch("gohome"))
        .output()
        .expect("go is installed by `cargo xtask setup`");
    let raw = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{raw}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values = |function: &str| -> Vec<i64> {
        let loc = raw
            .lines()
            .find(|l| l.contains(&format!(" {function} ")) && l.contains("growing.c"))
            .unwrap_or_else(|| panic!("no location of {function} in\n{raw}"))
            .split(':')
            .next()
            .unwrap()
            .trim()
            .to_string();
        // A sample line: "values: location ids"; its first location is the site's frame.
        raw.lines()
            .find_map(|l| {
                let (values, ids) = l.split_once(':')?;
                (ids.split_whitespace().next()? == loc).then(|| {
                    values
                        .split_whitespace()
                        .map(|v| v.parse().unwrap())
                        .collect()
                })
            })
            .unwrap_or_else(|| panic!("no sample of {function} in\n{raw}"))
    };
    assert!(raw.contains("inuse_space/bytes"), "{raw}");
    // alloc_objects alloc_space inuse_objects inuse_space resident_space
    let leak = values("leak_step");
    assert!(leak[2] > 0 && leak[3] == 1000 * leak[2], "{leak:?}");
    let cache = values("cache_fill");
    assert_eq!(&cache[..4], &[50, 100_000, 50, 100_000], "{cache:?}");
    // The index and the other endpoints answer.
    let (status, _, page) = get(served.addr, "/", &[]);
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("/debug/pprof/allocs"));
    let (status, head, _) = get(served.addr, "/report.html", &[]);
    assert_eq!(status, 200);
    assert!(head.contains("text/html"));
    let (status, _, _) = get(served.addr, "/debug/pprof/allocs?seconds=0", &[]);
    assert_eq!(status, 400);
    let (status, _, _) = get(served.addr, "/nothing", &[]);
    assert_eq!(status, 404);
}

/// `?seconds=2` on allocs: the allocations of those two seconds, about 200 of the leak's.
#[test]
fn allocs_over_seconds_is_a_delta_and_tokens_are_required() {
    let dir = scratch("token");
    let token = dir.join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let served = serve("1500", true, &["--listen-token", token.to_str().unwrap()]);
    let (status, head, _) = get(served.addr, "/metrics", &[]);
    assert_eq!(status, 401);
    assert!(head.contains("WWW-Authenticate: Bearer") || head.contains("www-authenticate: Bearer"));
    let auth = [("Authorization", "Bearer s3cret")];
    wait_for_metrics(served.addr, &auth, |l| l.starts_with("tracer_live_bytes{"));
    let (status, head, _) = get(
        served.addr,
        "/metrics",
        &[
            ("Authorization", "Bearer s3cret"),
            ("Accept", "application/openmetrics-text; version=1.0.0"),
        ],
    );
    assert_eq!(status, 200);
    assert!(head.contains("application/openmetrics-text"), "{head}");
    let (status, _, body) = get(served.addr, "/debug/pprof/allocs?seconds=2", &auth);
    assert_eq!(status, 200);
    let delta = leak_step_allocs(&dir, &body);
    // Since the start, after it: more, by the allocations before the two seconds began (the
    // metrics above waited for some).
    let (status, _, body) = get(served.addr, "/debug/pprof/allocs", &auth);
    assert_eq!(status, 200);
    let total = leak_step_allocs(&dir, &body);
    // Two seconds at one allocation per step of at least 10 ms: some, and fewer than in all.
    assert!(delta >= 20 && delta < total, "{delta} of {total}");
}

/// The allocations of the leak's site in a gzipped allocs profile, as `go tool pprof -raw`
/// reads it.
fn leak_step_allocs(dir: &Path, gzipped: &[u8]) -> i64 {
    let out = Command::new("go")
        .args(["tool", "pprof", "-raw", "-symbolize=none"])
        .arg(write_profile(dir, gzipped))
        .env("HOME", dir)
        .output()
        .unwrap();
    let raw = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let loc = raw
        .lines()
        .find(|l| l.contains(" leak_step ") && l.contains("growing.c"))
        .unwrap_or_else(|| panic!("{raw}"))
        .split(':')
        .next()
        .unwrap()
        .trim()
        .to_string();
    raw.lines()
        .find_map(|l| {
            let (values, ids) = l.split_once(':')?;
            (ids.split_whitespace().next()? == loc)
                .then(|| values.split_whitespace().next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("{raw}"))
}

fn write_profile(dir: &Path, gzipped: &[u8]) -> PathBuf {
    let path = dir.join("allocs.pb.gz");
    std::fs::write(&path, gzipped).unwrap();
    path
}

/// Ten clients asking for fresh profiles over and over: their requests are answered together,
/// at most a summary a quarter second, and none of them is an interval (the `--jsonl` lines
/// come once a second, as asked, not once a request).
#[test]
fn scrapes_are_coalesced_and_are_not_intervals() {
    let dir = scratch("coalesced");
    let jsonl = dir.join("live.jsonl");
    let served = serve(
        "600",
        false,
        &["--interval", "1", "--jsonl", jsonl.to_str().unwrap()],
    );
    wait_for_metrics(served.addr, &[], |l| l.starts_with("tracer_live_bytes{"));
    let started = Instant::now();
    let clients: Vec<_> = (0..10)
        .map(|_| {
            let addr = served.addr;
            std::thread::spawn(move || {
                let mut answered = 0;
                while started.elapsed() < Duration::from_secs(3) {
                    let (status, _, _) = get(addr, "/debug/pprof/allocs?seconds=1", &[]);
                    assert_eq!(status, 200);
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    let answered: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let lines_during = std::fs::read_to_string(&jsonl).unwrap().lines().count();
    let elapsed = started.elapsed().as_secs_f64();
    drop(served);
    // Two summaries a request, forty requests or so: the lines are still one a second.
    assert!(answered >= 20, "{answered} answered");
    assert!(
        (lines_during as f64) <= elapsed + 3.0,
        "{lines_during} interval lines in {elapsed:.1} s ({answered} requests)"
    );
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// 150 clients that ask for the page and never read: at most 64 are served at once (the rest
/// are closed at once), a client that stops reading or sends nothing is let go, memory stays
/// bounded (one page per state, shared), and the run's own reports are still written.
#[test]
fn slow_and_idle_clients_are_let_go() {
    use std::io::Read as _;
    let dir = scratch("slow");
    let json = dir.join("summary.json");
    let served = serve(
        "2500",
        false,
        &["--interval", "0.5", "--json", json.to_str().unwrap()],
    );
    wait_for_metrics(served.addr, &[], |l| l.starts_with("tracer_live_bytes{"));
    let before = rss_kib(served.tracer.id());
    let mut clients = page_readers_that_never_read(served.addr, 150);
    std::thread::sleep(Duration::from_secs(1));
    let during = rss_kib(served.tracer.id());
    // Let go within the header timeout (10 s) or the write stall (10 s): every client reads
    // its end.
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut open = clients.len();
    for c in &mut clients {
        c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        while Instant::now() < deadline {
            match c.read(&mut buf) {
                Ok(0) => {
                    open -= 1;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    open -= 1;
                    break;
                }
            }
        }
    }
    assert_eq!(open, 0, "connections still open after {:?}", Instant::now());
    let (status, _, _) = get(served.addr, "/metrics", &[]);
    assert_eq!(status, 200);
    assert!(
        during < before + 64 * 1024,
        "RSS {before} KiB -> {during} KiB with 150 clients"
    );
    drop(served);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(v["user"]["malloc"]["calls"].as_u64().unwrap() > 0);
}

/// At a file limit of 150 (soft and hard: tracer cannot raise it), 170 clients that ask for
/// the page and never read neither starve the server nor cost the reports their files:
/// `/metrics` still answers once they are let go, and the final JSON is written whole.
#[test]
fn a_low_file_limit_loses_no_report() {
    use std::os::unix::process::CommandExt as _;
    let dir = scratch("nofile");
    let json = dir.join("summary.json");
    let mut cmd = tracer();
    // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 150,
                rlim_max: 150,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let served = serve_with(
        "2500",
        false,
        &["--interval", "0.5", "--json", json.to_str().unwrap()],
        cmd,
    );
    wait_for_metrics(served.addr, &[], |l| l.starts_with("tracer_live_bytes{"));
    let clients = page_readers_that_never_read(served.addr, 170);
    assert!(clients.len() >= 150, "{} clients connected", clients.len());
    std::thread::sleep(Duration::from_secs(2));
    drop(clients);
    wait_for_metrics(served.addr, &[], |l| l.starts_with("tracer_live_bytes{"));
    drop(served);
    let text = std::fs::read_to_string(&json).expect("the final JSON was written");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(v["user"]["malloc"]["calls"].as_u64().unwrap() > 0);
}

/// Without a token, what shows the target's memory layout (pprof, the page) is served only to
/// root and the target's own user; another local user (here `nobody`) gets 403, and the
/// metrics, which hold no address, still.
#[test]
fn the_layout_is_not_shown_to_other_users() {
    let served = serve("1500", false, &["--interval", "0.5"]);
    wait_for_metrics(served.addr, &[], |l| l.starts_with("tracer_live_bytes{"));
    let status_as = |nobody: bool, path: &str| -> String {
        let url = format!("http://{}{path}", served.addr);
        let mut cmd = if nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "curl"]);
            c
        } else {
            Command::new("curl")
        };
        let out = cmd
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
            .output()
            .expect("curl (cargo xtask setup installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for path in ["/report.html", "/debug/pprof/heap", "/debug/pprof/allocs"] {
        assert_eq!(status_as(true, path), "403", "{path} as nobody");
        assert_eq!(status_as(false, path), "200", "{path} as root");
    }
    assert_eq!(status_as(true, "/metrics"), "200");
}
