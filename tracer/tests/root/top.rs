//! Root test of `tracer top`, driven through tmux as a person would: it shows the known top
//! site of workloads/growing.c, sorts on a keypress, shows a stack on Enter, and quits cleanly
//! (the command ended, the terminal given back, the reports written).

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use crate::support::*;

struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux is installed by `cargo xtask setup`");
        assert!(out.status.success(), "tmux {args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    /// Waits until the screen passes `check` (30 s at most); returns it.
    fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", "top", keys]);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// The first row of the table: the line after the one holding the column titles.
fn first_row(screen: &str) -> &str {
    let mut lines = screen.lines();
    lines.find(|l| l.starts_with("live(l)"));
    lines.next().unwrap_or("")
}

#[test]
fn top_shows_sorts_and_quits_cleanly() {
    let w = workload("growing");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("top-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (json, exit) = (dir.join("top.json"), dir.join("exit"));
    let script = format!(
        "{} top --json {} -- {} 3000 2>{}; echo $? > {}",
        env!("CARGO_BIN_EXE_tracer"),
        json.display(),
        w.display(),
        dir.join("stderr").display(),
        exit.display()
    );
    require_root();
    let tmux = Tmux {
        socket: format!("tracer-top-{}", std::process::id()),
    };
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "160",
        "-y",
        "40",
        "sh",
        "-c",
        &script,
    ]);
    tmux.run(&["set-option", "-t", "top", "remain-on-exit", "on"]);

    // The leak passes the cache's 100,000 bytes after about 100 steps: then it leads by live
    // bytes, the default order.
    let screen = tmux.wait_for("the leak on top", |s| {
        first_row(s).contains("leak_step (growing.c:")
    });
    assert!(screen.contains("tracer top  pid "), "{screen}");
    assert!(screen.contains("live(l)▼"), "{screen}");
    assert!(screen.contains("cache_fill (growing.c:"), "{screen}");

    // b: by bytes allocated, where the 8000-byte scratch buffers lead.
    tmux.keys("b");
    let screen = tmux.wait_for("sorted by bytes", |s| {
        s.contains("bytes(b)▼") && first_row(s).contains("scratch (growing.c:")
    });
    assert!(!screen.contains("live(l)▼"));

    // Enter: the selected (first) site's whole stack and its chain.
    tmux.keys("Enter");
    let screen = tmux.wait_for("the stack", |s| s.contains("chain: "));
    assert!(screen.contains("  1  main (growing.c:"), "{screen}");

    // c: a leak check now: said on the screen; growing.c drops each leak_step block but the
    // last (kept in `sink`).
    tmux.keys("Escape");
    tmux.keys("c");
    let screen = tmux.wait_for("the leak check", |s| s.contains("leak check of pid"));
    assert!(screen.contains("definitely lost"), "{screen}");

    // q: the command is ended (SIGTERM: 143), the terminal given back, the summary printed.
    tmux.keys("q");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !exit.exists() {
        assert!(
            Instant::now() < deadline,
            "tracer top did not quit:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(std::fs::read_to_string(&exit).unwrap().trim(), "143");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(summary["target"]["signal"], 15);
    // Killed by SIGTERM, it never reached _exit: the check on request is the one it has.
    assert_eq!(summary["user"]["leak_check"]["at"], "on_request");
    assert!(summary["user"]["malloc"]["calls"].as_u64().unwrap() > 100);
    let err = std::fs::read_to_string(dir.join("stderr")).unwrap();
    assert!(err.contains("memory path"), "{err}");
    // Back on the normal screen: the alternate screen is gone with its table.
    let screen = tmux.screen();
    assert!(!screen.contains("live(l)"), "{screen}");
}
