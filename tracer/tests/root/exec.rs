//! Root tests of programs that run other programs (`execve`): a shell script ending in
//! `exec`, and `env LD_PRELOAD=libjemalloc.so.2`. The new image is re-read and re-probed
//! before its first instruction, its frames resolve, the old image's blocks are released (not
//! leaked), the header names the new command, and a recording replays the same. And threads
//! that rename themselves.

use std::{fs, os::unix::fs::PermissionsExt, process::Command};

use crate::support::*;
use serde_json::Value;

const JEMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";

fn leak100(v: &Value) -> Value {
    leak_at(v, "leak100")
}

#[test]
fn a_script_that_execs_is_followed_into_the_new_program() {
    let w = workload("findings");
    let dir = json_path("exec").with_extension("d");
    fs::create_dir_all(&dir).unwrap();
    let script = dir.join("wrap.sh");
    // The shell allocates (a command substitution) before it execs.
    fs::write(
        &script,
        format!("#!/bin/sh\nx=$(echo hi)\nexec {} leak\n", w.display()),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let live = dir.join("live.json");
    let recording = dir.join("run.trace");
    let out = tracer()
        .arg("--json")
        .arg(&live)
        .arg("--record")
        .arg(&recording)
        .arg("--")
        .arg(&script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = fs::read_to_string(&live).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    // The header names the program that ran last.
    assert_eq!(
        v["target"]["command"],
        serde_json::json!([w.to_str().unwrap(), "leak"])
    );
    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "{images:#?}");
    assert_eq!(images[0]["command"][0], script.to_str().unwrap());
    assert!(
        images[0]["live_blocks_at_exec"].as_u64().unwrap() > 0,
        "{images:#?}"
    );
    assert_eq!(images[1]["exe"], w.to_str().unwrap());
    // The new image's leak, resolved to its line, and nothing of the shell's as a leak.
    let leak = leak100(&v);
    assert_eq!(
        (leak["count"].clone(), leak["bytes"].clone()),
        (2000.into(), 200_000.into())
    );
    assert_eq!(
        leak["stack"][0]["file"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next(),
        Some("findings.c")
    );
    let leaked = v["user"]["leaked_bytes"].as_u64().unwrap();
    assert!((200_000..200_000 + 16_384).contains(&leaked), "{leaked}");
    assert!(stderr(&out).contains("programs: "), "{}", stderr(&out));

    // The recording replays to the same summary.
    replays_to(&recording, &text);
}

/// `env LD_PRELOAD=libjemalloc.so.2 ./app`: jemalloc arrives with the new image, and every one
/// of the program's calls is seen.
#[test]
fn an_allocator_preloaded_through_env_is_probed_from_the_first_call() {
    assert!(
        std::path::Path::new(JEMALLOC).exists(),
        "cargo xtask test installs libjemalloc2"
    );
    let w = workload("findings");
    let (v, out) = trace_with(
        &["--no-kernel"],
        &[
            "env",
            &format!("LD_PRELOAD={JEMALLOC}"),
            w.to_str().unwrap(),
            "leak",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let files = v["user"]["allocator_files"].to_string();
    assert!(files.contains("libjemalloc.so.2"), "{files}");
    let leak = leak100(&v);
    assert_eq!(
        (leak["count"].clone(), leak["bytes"].clone()),
        (2000.into(), 200_000.into())
    );
    assert_eq!(v["images"][0]["command"][0], "env");
}

/// A thread that renames itself after it was first seen is named as it is now.
#[test]
fn renamed_threads_are_named_as_they_are_now() {
    let w = workload("renamed");
    let (v, out) = trace_with(&["--no-kernel"], &[w.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<&str> = v["target"]["threads"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_str)
        .collect();
    assert!(names.contains(&"worker-2"), "{names:?}");
    assert!(names.contains(&"renamed"), "{names:?}");
}

/// `--record-max`: a long run's recording keeps its newest events within the size, and the
/// report on it says how many were cut.
#[test]
fn a_rotating_recording_keeps_the_newest_events() {
    // 700,000 events of random sizes: some 8 MB recorded, however many a loaded machine drops.
    let w = workload("random_live");
    let dir = json_path("rotate").with_extension("d");
    fs::create_dir_all(&dir).unwrap();
    let recording = dir.join("run.trace");
    let (live, out) = trace_with(
        &[
            "--no-kernel",
            "--buffer-size",
            "64M",
            "--record",
            recording.to_str().unwrap(),
            "--record-max",
            "1M",
        ],
        &[w.to_str().unwrap(), "300000"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let size = fs::metadata(&recording).unwrap().len();
    // About the limit: the kept segments, at most one batch over.
    assert!((400_000..1_400_000).contains(&size), "{size}");
    // Nothing else was left in the directory.
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    let replayed = dir.join("replayed.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["report", "--json"])
        .arg(&replayed)
        .arg(&recording)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("the first "), "{}", stderr(&out));
    let v: Value = serde_json::from_str(&fs::read_to_string(&replayed).unwrap()).unwrap();
    let cut = v["events"]["cut_from_recording"].as_u64().unwrap();
    let kept = v["events"]["received"].as_u64().unwrap();
    let all = live["events"]["received"].as_u64().unwrap();
    assert!(cut > 0 && kept > 0, "{cut} {kept}");
    assert_eq!(cut + kept, all);
    assert!(live["events"].get("cut_from_recording").is_none());
    // The report covers the newest events only.
    assert!(
        v["user"]["malloc"]["calls"].as_u64().unwrap()
            < live["user"]["malloc"]["calls"].as_u64().unwrap()
    );
}

/// A command left to run untraced (a second Ctrl-C) is not stopped when it execs afterwards,
/// while the probes are still being torn down.
#[test]
fn a_command_left_running_is_not_held_at_a_later_exec() {
    let dir = json_path("left").with_extension("d");
    fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("ran");
    let script = dir.join("late-exec.sh");
    // "ready" once the interrupts are ignored (an interrupt that comes while tracer attaches
    // reaches the command before its first line and ends it); then it lets go of our pipes.
    fs::write(
        &script,
        format!(
            "#!/bin/sh\ntrap '' INT TERM\necho ready\nexec >/dev/null 2>&1\nsleep 1.5\n\
             exec /bin/sh -c 'touch {}'\n",
            marker.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let mut tracer = tracer()
        .args(["-q", "--"])
        .arg(&script)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(tracer.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "ready\n");
    for _ in 0..2 {
        // SAFETY: signals to our own child.
        unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = tracer.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("goes on untraced"),
        "{}",
        stderr(&out)
    );
    // A held command would stay stopped; one that only waits behind the probes' teardown (its
    // exec's mappings wait for the kernel to remove breakpoints) goes on within seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !marker.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the command never ran its exec: {}",
            processes_mentioning(&dir)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Each process whose command line names `dir`, with its state and where it sleeps in the
/// kernel.
fn processes_mentioning(dir: &std::path::Path) -> String {
    let dir = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let proc_dir = entry.path();
        let cmdline = fs::read(proc_dir.join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmdline.contains(&dir) {
            continue;
        }
        let stat = fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
        let state = stat.rsplit(") ").next().and_then(|s| s.split(' ').next());
        let wchan = fs::read_to_string(proc_dir.join("wchan")).unwrap_or_default();
        out.push(format!(
            "{} [{cmdline}] state {} in {wchan}",
            entry.file_name().to_string_lossy(),
            state.unwrap_or("?")
        ));
    }
    if out.is_empty() {
        "no process of it runs".into()
    } else {
        out.join("; ")
    }
}
