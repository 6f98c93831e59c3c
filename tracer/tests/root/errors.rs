//! Bad input gives one clear line and a non-zero exit, never a panic.

use std::process::Command;

use crate::support::*;

fn one_line_error(out: &std::process::Output) -> String {
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{err}");
    assert!(lines[0].starts_with("tracer: error: "), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    lines[0].to_string()
}

#[test]
fn missing_command() {
    let out = tracer()
        .args(["--", "no-such-command-xyz"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(
        one_line_error(&out),
        "tracer: error: command not found: no-such-command-xyz (not a file, and not in PATH)"
    );
}

#[test]
fn command_that_cannot_execute() {
    let path = json_path("not-a-program");
    std::fs::write(&path, "not an executable format").unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = tracer().arg("--").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(126));
    assert_eq!(
        one_line_error(&out),
        format!(
            "tracer: error: could not execute {}: Exec format error (os error 8)",
            path.display()
        )
    );
}

#[test]
fn bad_pids() {
    let out = tracer().args(["--pid", "99999999"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        one_line_error(&out),
        "tracer: error: no process with pid 99999999"
    );

    let out = tracer().args(["--pid", "0"]).output().unwrap();
    assert_eq!(
        one_line_error(&out),
        "tracer: error: invalid pid 0: must be a positive process id"
    );
}

/// Without root or CAP_BPF/CAP_PERFMON: say so, before touching anything.
#[test]
fn unprivileged_user() {
    require_root();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_tracer"))
        .args(["--", "true"])
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        one_line_error(&out),
        "tracer: error: tracer needs root (or CAP_BPF and CAP_PERFMON) to load eBPF programs: \
         run it with sudo"
    );
}

#[test]
fn usage_errors_name_the_fix() {
    let out = tracer().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("nothing to trace: give --pid PID, --cgroup PATH, --system or --"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_recordings() {
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["report", "/nonexistent/run.trace"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let line = one_line_error(&out);
    assert!(
        line.contains("/nonexistent/run.trace") && line.contains("No such file"),
        "{line}"
    );

    let not_one = json_path("not-a-recording");
    std::fs::write(&not_one, "just text").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .arg("report")
        .arg(&not_one)
        .output()
        .unwrap();
    assert!(one_line_error(&out).ends_with("is not a tracer recording (no TRACEREC header)"));
}

#[test]
fn unwritable_recording() {
    let out = tracer()
        .args(["--record", "/nonexistent/dir/run.trace", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        one_line_error(&out),
        "tracer: error: --record /nonexistent/dir/run.trace: the directory /nonexistent/dir \
         does not exist"
    );
}

/// With CAP_BPF and CAP_PERFMON but no root, tracefs (mode 0700) is what is missing: say that,
/// not "not mounted".
#[test]
fn bpf_capabilities_without_tracefs_access() {
    require_root();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata("/sys/kernel/tracing")
            .unwrap()
            .permissions(),
    );
    assert_eq!(
        mode & 0o007,
        0,
        "this test needs tracefs closed to others (mode {mode:o})"
    );
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=+bpf,+perfmon",
            "--ambient-caps=+bpf,+perfmon",
        ])
        .arg(env!("CARGO_BIN_EXE_tracer"))
        .args(["--", "true"])
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = one_line_error(&out);
    assert!(
        line.contains("tracefs is mounted at /sys/kernel/tracing but uid 65534 cannot read it"),
        "{line}"
    );
    assert!(line.contains("CAP_DAC_READ_SEARCH"), "{line}");
}

/// A FIFO given where a file is read is refused at once; one given for a report is written
/// through when a reader comes, and never waited on for ever: at most ten seconds, and no
/// longer once SIGTERM comes.
#[test]
fn fifos_never_block_for_ever() {
    use std::time::{Duration, Instant};
    let dir = json_path("fifos").with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let fifo_s = fifo.to_str().unwrap();
    for option in [["--allocator-lib", fifo_s], ["--listen-token", fifo_s]] {
        let started = Instant::now();
        let out = tracer()
            .args(option)
            .args(["--listen", "127.0.0.1:0", "--", "true"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("not a regular file"),
            "{}",
            stderr(&out)
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // A reader: the summary goes through the FIFO.
    let reader = std::thread::spawn({
        let fifo = fifo.clone();
        move || std::fs::read_to_string(fifo).unwrap()
    });
    let out = tracer()
        .args(["-q", "--json", fifo_s, "--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        reader
            .join()
            .unwrap()
            .contains("\"schema\": \"tracer.summary/1\"")
    );
    // No reader: the run ends, the wait for one ends at SIGTERM, and the report is said lost.
    let mut child = tracer()
        .args(["-q", "--json", fifo_s, "--", "true"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let signalled = Instant::now();
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "{:?}",
        signalled.elapsed()
    );
    assert_eq!(status.code(), Some(74));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("no reader opened the FIFO"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A `--pid` target that exits while tracer attaches gets a report of what was seen, not an
/// error about its files.
#[test]
fn a_target_gone_during_attach_is_reported() {
    let mut target = Command::new("sleep").arg("0.3").spawn().unwrap();
    let json = json_path("gone");
    let out = tracer()
        .args(["-q", "--pid", &target.id().to_string(), "--json"])
        .arg(&json)
        .output()
        .unwrap();
    target.wait().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["target"]["pid"], target.id());
    assert_eq!(v["target"]["ended_by"], "exited");
}

/// `tracer top` without a terminal says so before it attaches or starts anything.
#[test]
fn top_without_a_terminal_starts_nothing() {
    let marker = json_path("top-ran").with_extension("ran");
    let out = tracer()
        .args(["top", "--", "touch"])
        .arg(&marker)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line_error(&out).contains("tracer top draws on a terminal"));
    assert!(!marker.exists(), "the command ran");
}

/// `-v` says each phase of the run and how long it took, in order; the eBPF loader's own logs
/// wait for `-vvv`.
#[test]
fn verbose_says_the_phases_with_their_times() {
    let out = tracer()
        .args(["-v", "-q", "--", "/bin/true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stderr(&out);
    let phases: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("tracer: info: "))
        .filter(|l| l.contains(" in ") && (l.ends_with(" ms") || l.ends_with(" s")))
        .map(|l| {
            l.split(" (")
                .next()
                .unwrap_or(l)
                .split(" in ")
                .next()
                .unwrap_or(l)
        })
        .collect();
    assert_eq!(
        phases,
        ["prepared", "started", "traced", "finished"],
        "{text}"
    );
    assert!(!text.to_lowercase().contains("aya"), "{text}");
}
