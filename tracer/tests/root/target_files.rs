//! The target's files are read as the target sees them: its working directory, its mount
//! namespace, the inode it mapped; never by a name that may now be a FIFO.

use std::{
    io::{Read, Write},
    os::unix::fs::FileTypeExt,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::support::*;
use serde_json::Value;

/// A fresh directory holding a copy of the library.
fn lib_dir(tag: &str) -> PathBuf {
    let dir = json_path(tag).with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(dl_lib(), dir.join("libswap.so")).unwrap();
    dir
}

/// Runs tracer over `dl_swap`, killing it if it hangs.
fn trace_swap(dir: &std::path::Path, mode: &str) -> Value {
    let swap = build(
        "dl_swap",
        "dl_swap.c",
        &["cc", "-O1", "-g", "-fno-omit-frame-pointer"],
    );
    let json = json_path("swap");
    let mut child = tracer()
        .args(["-q", "--json"])
        .arg(&json)
        .arg("--")
        .arg(&swap)
        .arg(dir)
        .args(["libswap.so", "7", mode])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("tracer hung on the target's files");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{err}");
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

fn lib_site(v: &Value) -> Value {
    v["user"]["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["bytes"] == 7 * 333)
        .cloned()
        .unwrap_or_else(|| panic!("no site of the library: {}", v["user"]["sites"]))
}

/// `dlopen("./lib.so")` in the target's own working directory: symbolized from the file it
/// loaded, not from tracer's directory.
#[test]
fn relative_dlopen_resolves_in_the_targets_directory() {
    let dir = lib_dir("relative");
    let v = trace_swap(&dir, "plain");
    let site = lib_site(&v);
    assert_eq!(site["stack"][0]["function"], "lib_alloc", "{site}");
    assert_eq!(
        site["stack"][0]["file"]
            .as_str()
            .map(|f| f.ends_with("dl_lib.c")),
        Some(true)
    );
}

/// A FIFO renamed over a mapped library: tracer neither hangs nor reads it, and the library
/// is still symbolized from the inode that was mapped.
#[test]
fn a_fifo_renamed_over_a_library_cannot_hang_tracer() {
    let dir = lib_dir("fifo");
    let v = trace_swap(&dir, "fifo");
    let swapped = std::fs::symlink_metadata(dir.join("libswap.so")).unwrap();
    assert!(
        swapped.file_type().is_fifo(),
        "the workload swapped the library for a FIFO"
    );
    let site = lib_site(&v);
    assert_eq!(site["stack"][0]["function"], "lib_alloc", "{site}");
}

/// A process in its own mount and pid namespaces (a container): its program exists only
/// there; tracer resolves it through /proc and reports both pids.
#[test]
fn process_in_other_namespaces() {
    let alloc = workload("alloc");
    let dir = json_path("container").with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    // Inside: a tmpfs over `dir` that only the namespace sees, holding the program.
    let script = format!(
        "mount -t tmpfs none {d} && cp {a} {d}/inside && exec {d}/inside gate 5 3",
        d = dir.display(),
        a = alloc.display()
    );
    let mut container = Command::new("unshare")
        .args([
            "--mount",
            "--pid",
            "--fork",
            "--mount-proc",
            "sh",
            "-c",
            &script,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux)");
    let mut ready = [0u8; 6];
    container
        .stdout
        .take()
        .unwrap()
        .read_exact(&mut ready)
        .unwrap();
    assert_eq!(&ready, b"ready\n");
    assert!(
        !dir.join("inside").exists(),
        "the program must exist only inside the namespace"
    );
    // The host pid of the program: unshare's child.
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", container.id())).unwrap();
    let pid: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let json = json_path("container");
    let (mut tracer, lines) = attach_tracer(pid, &json, &[]);
    container.stdin.take().unwrap().write_all(b"g").unwrap();
    assert!(container.wait().unwrap().success());
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(tracer.wait().unwrap().success(), "{rest:?}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["target"]["pid"], pid);
    assert_eq!(
        v["target"]["namespace_pid"], 1,
        "pid 1 inside its namespace"
    );
    assert_eq!(v["user"]["malloc"]["calls"], 3);
    let site = &v["user"]["sites"][0];
    assert_eq!(site["stack"][0]["function"], "after_gate", "{site}");
    assert!(
        rest.iter().any(|l| l.contains("pid 1 in its namespace")),
        "{rest:?}"
    );
}
