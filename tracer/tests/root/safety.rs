//! Running as root next to programs we do not trust: output files, privilege, the command's
//! start, signals. Each test fails on a tracer without the behaviour it names.

use std::{
    io::{BufRead, BufReader, Read},
    os::unix::fs::{FileTypeExt, MetadataExt},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::support::*;
use serde_json::Value;

fn scratch(tag: &str) -> std::path::PathBuf {
    let dir = json_path(tag).with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn device_outputs_are_written_through() {
    let out = tracer()
        .args([
            "-q",
            "--json",
            "/dev/null",
            "--folded",
            "/dev/null",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let meta = std::fs::symlink_metadata("/dev/null").unwrap();
    assert!(meta.file_type().is_char_device(), "/dev/null was replaced");
    assert_eq!(meta.rdev(), libc::makedev(1, 3));

    // `-` and /dev/stdout are one stdout: two outputs cannot share it.
    let out = tracer()
        .args(["-q", "--json", "-", "--folded", "/dev/stdout", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--json and --folded both write to stdout"),
        "{}",
        stderr(&out)
    );
    // One of them alone streams there.
    let out = tracer()
        .args(["-q", "--json", "/dev/stdout", "--", "true"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "tracer.summary/1");
}

/// A bad destination stops the run before the command starts; nothing is written.
#[test]
fn outputs_are_checked_before_the_command_runs() {
    let dir = scratch("precheck");
    let marker = dir.join("ran");
    let html = dir.join("ok.html");
    let started = Instant::now();
    let out = tracer()
        .args(["--json", "/nonexistent/dir/x.json", "--html"])
        .arg(&html)
        .arg("--")
        .args(["sh", "-c", &format!("touch {}", marker.display())])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "tracer: error: --json /nonexistent/dir/x.json: the directory /nonexistent/dir does not exist"
    );
    assert!(!marker.exists(), "the command ran");
    assert!(!html.exists());
    assert!(started.elapsed() < Duration::from_secs(5));

    let file = dir.join("file");
    std::fs::write(&file, "").unwrap();
    let out = tracer()
        .arg("--svg")
        .arg(&file)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("exists and is not a directory"),
        "{}",
        stderr(&out)
    );
}

/// A report that cannot be written (a full disk) is named; the others are still written, and
/// the exit status tells without hiding the command's own.
#[test]
fn one_failed_output_does_not_lose_the_others() {
    let dir = scratch("full");
    let html = dir.join("ok.html");
    let run = |cmd: &str| {
        tracer()
            .args(["-q", "--json", "/dev/full", "--html"])
            .arg(&html)
            .args(["--", "sh", "-c", cmd])
            .output()
            .unwrap()
    };
    let out = run("exit 0");
    assert_eq!(out.status.code(), Some(74), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("writing /dev/full"),
        "{}",
        stderr(&out)
    );
    assert!(std::fs::read_to_string(&html).unwrap().contains("</html>"));
    std::fs::remove_file(&html).unwrap();
    let out = run("exit 3");
    assert_eq!(
        out.status.code(),
        Some(3),
        "the command's own failure comes first"
    );
    assert!(html.exists());
    assert!(
        std::fs::symlink_metadata("/dev/full")
            .unwrap()
            .file_type()
            .is_char_device()
    );
}

/// A recording that fails mid-run stops with a warning; tracing and the summary go on.
#[test]
fn recording_to_a_full_disk_stops_the_recording_only() {
    let alloc = workload("alloc");
    let json = json_path("record-full");
    let out = tracer()
        .args(["-q", "--record", "/dev/full", "--json"])
        .arg(&json)
        .arg("--")
        .arg(&alloc)
        .arg("3000")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(err.contains("recording stopped after"), "{err}");
    assert_eq!(out.status.code(), Some(74), "{err}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["user"]["malloc"]["calls"], 4 * 3000 + 1);
}

/// Under sudo the command runs as the invoking user, without capabilities, and the files
/// tracer creates are theirs; --run-as-root keeps root.
#[test]
fn under_sudo_the_command_runs_as_the_user() {
    let dir = scratch("sudo");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let json = dir.join("s.json");
    let script = "id -u; id -g; id -G; echo $HOME $USER $LOGNAME; grep CapEff /proc/self/status";
    let out = tracer()
        .args(["-q", "--json"])
        .arg(&json)
        .args(["--", "sh", "-c", script])
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .env("HOME", "/root")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "65534");
    assert_eq!(lines[1], "65534");
    assert_eq!(lines[2], "65534", "supplementary groups are the user's");
    let home = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find(|l| l.split(':').nth(2) == Some("65534"))
        .map(|l| l.split(':').nth(5).unwrap().to_string())
        .unwrap();
    assert!(lines[3].starts_with(&format!("{home} ")), "{}", lines[3]);
    assert_eq!(lines[4], "CapEff:\t0000000000000000");
    assert_eq!(
        std::fs::metadata(&json).unwrap().uid(),
        65534,
        "the user's file"
    );

    let out = tracer()
        .args(["-q", "--run-as-root", "--", "id", "-u"])
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
}

/// The command gets default signal dispositions, an empty mask and only stdin, stdout and
/// stderr: `yes | head -1` ends `yes` by SIGPIPE, as without tracer.
#[test]
fn the_command_starts_clean() {
    let mut child = tracer()
        .args(["-q", "--", "yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 2];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert_eq!(&first, b"y\n");
    assert_eq!(
        out.status.code(),
        Some(128 + libc::SIGPIPE),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("Broken pipe"), "{}", stderr(&out));

    // A descriptor tracer inherited (7) does not reach the command; signals are at defaults.
    // The masks are read by the command itself (grep exec'd in sh's place keeps them): sh's own,
    // read from a child, would show what sh blocks around spawning that child.
    let script = format!(
        "exec 7>/dev/null; exec {} -q -- sh -c 'ls /proc/$$/fd; exec grep -E \"^Sig(Ign|Blk)\" /proc/self/status'",
        env!("CARGO_BIN_EXE_tracer")
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let fds: Vec<&str> = text.lines().take_while(|l| !l.starts_with("Sig")).collect();
    assert_eq!(fds, ["0", "1", "2"], "{text}");
    assert!(text.contains("SigIgn:\t0000000000000000"), "{text}");
    assert!(text.contains("SigBlk:\t0000000000000000"), "{text}");
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: signalling a process we started.
    unsafe { libc::kill(pid as i32, sig) };
}

/// SIGINT or SIGTERM while tracer is still attaching: handled, reported, never a silent death.
#[test]
fn signals_during_setup_still_give_a_report() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let json = json_path("setup-signal");
        let child = tracer()
            .args(["-q", "--json"])
            .arg(&json)
            .args(["--", "sleep", "30"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(150));
        let started = Instant::now();
        kill(child.id(), sig);
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(128 + sig),
            "signal {sig}: {:?} {}",
            out.status,
            stderr(&out)
        );
        assert!(started.elapsed() < Duration::from_secs(20));
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(v["target"]["signal"], sig, "the command got the signal");
    }
}

/// `kill -INT <tracer>` reaches the command; a second one stops waiting for it.
#[test]
fn sigint_to_tracer_is_forwarded_then_stops_waiting() {
    let json = json_path("forward");
    let mut child = tracer()
        .args(["-q", "--json"])
        .arg(&json)
        .args(["--", "sh", "-c", "echo ready; sleep 30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    kill(child.id(), libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["target"]["signal"], libc::SIGINT);

    // A command that ignores SIGINT: the second one ends the wait (its sleep lets go of our
    // pipes, so the wait below is for tracer alone).
    let mut child = tracer()
        .args([
            "-q",
            "--",
            "sh",
            "-c",
            "trap '' INT; echo ready; exec sleep 10 >/dev/null 2>&1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let started = Instant::now();
    kill(child.id(), libc::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    kill(child.id(), libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(130));
    assert!(
        stderr(&out).contains("stopped waiting for pid"),
        "{}",
        stderr(&out)
    );
}

/// Free is probed before malloc, so attaching to a busy loop misses no release: every block
/// allocated while traced is either seen freed or still live at the end (glibc reuses the
/// address, so a missed free shows in the counts, not as a leak).
#[test]
fn attaching_to_a_busy_allocator_misses_no_free() {
    let churn = workload("churn");
    let v = trace_gated(&churn, &[], &[], |_| {});
    let user = &v["user"];
    let n = |v: &Value| v.as_i64().unwrap();
    let allocated = n(&user["malloc"]["calls"]);
    assert!(
        allocated > 10_000,
        "the loop ran while traced: {allocated} mallocs"
    );
    for other in ["calloc", "realloc", "posix_memalign", "aligned_alloc"] {
        assert_eq!(user[other]["calls"], 0, "{other}");
    }
    let free = &user["free"];
    let freed_known = n(&free["calls"]) - n(&free["unknown"]) - n(&free["null"]);
    let live: i64 = user["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| n(&l["count"]))
        .sum();
    assert!(
        allocated - freed_known - live <= 1,
        "{} frees of traced blocks were missed: {allocated} mallocs, {freed_known} frees of known \
         blocks, {live} live at the end",
        allocated - freed_known - live
    );
}

/// A command line with escape sequences: the terminal summary shows them escaped, and every
/// SVG written still parses as XML.
#[test]
fn target_strings_reach_the_terminal_escaped() {
    let dir = scratch("strings");
    let svg = dir.join("svg");
    let alloc = workload("alloc");
    let out = tracer()
        .arg("--svg")
        .arg(&svg)
        .arg("--")
        .arg(&alloc)
        .arg("2\x1b[2J\x07\ntracer: forged")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!err.contains('\x1b') && !err.contains('\x07'), "{err:?}");
    assert!(err.contains("2\\x1b[2J\\x07\\ntracer: forged"), "{err}");
    assert!(
        !err.lines().any(|l| l.starts_with("tracer: forged")),
        "{err}"
    );
    let mut parsed = 0;
    for entry in std::fs::read_dir(&svg).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let opts = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        };
        roxmltree::Document::parse_with_options(&text, opts).unwrap();
        parsed += 1;
    }
    assert!(parsed >= 5, "{parsed} SVGs");
}
