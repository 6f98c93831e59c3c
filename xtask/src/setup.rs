//! `cargo xtask setup`: the eBPF toolchain and kernel interfaces tracer needs.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::status;

/// The bpf-linker release this project builds with.
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> Result<()> {
    let nightly = Nightly::probe()?;
    ensure_rust_src(&nightly)?;
    ensure_bpf_linker(&nightly)?;
    ensure_tracefs();
    Ok(())
}

/// The installed nightly toolchain: never updated or downloaded here, since bpf-linker must
/// match its LLVM.
struct Nightly {
    sysroot: PathBuf,
    llvm_major: String,
    commit: String,
}

impl Nightly {
    fn probe() -> Result<Self> {
        let out = Command::new("rustc")
            .args(["+nightly", "-vV"])
            .output()
            .context("running `rustc +nightly -vV` (is rustup installed?)")?;
        if !out.status.success() {
            bail!(
                "no nightly toolchain: `rustc +nightly -vV` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .with_context(|| format!("`rustc +nightly -vV` printed no `{name}`"))
        };
        let llvm = field("LLVM version:")?;
        let llvm_major = llvm.split('.').next().unwrap_or_default().to_string();
        let commit = field("commit-hash:")?;
        let sysroot = Command::new("rustc")
            .args(["+nightly", "--print", "sysroot"])
            .output()
            .context("asking nightly for its sysroot")?;
        let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
        Ok(Nightly {
            sysroot,
            llvm_major,
            commit,
        })
    }
}

fn ensure_rust_src(nightly: &Nightly) -> Result<()> {
    if nightly
        .sysroot
        .join("lib/rustlib/src/rust/library/core")
        .is_dir()
    {
        return Ok(());
    }
    eprintln!("xtask setup: adding rust-src to the nightly toolchain");
    status(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// A lasting directory (bpf-linker keeps `<dir>/lib` as its runtime library path) holding
/// links to nightly's own libLLVM.
fn llvm_dir(nightly: &Nightly) -> Result<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
        .context("neither XDG_DATA_HOME nor HOME is set")?;
    Ok(base
        .join("tracer")
        .join(format!("llvm-{}", nightly.llvm_major)))
}

fn ensure_bpf_linker(nightly: &Nightly) -> Result<()> {
    let dir = llvm_dir(nightly)?;
    let stamp = dir.join("bpf-linker.stamp");
    let want = format!(
        "bpf-linker {BPF_LINKER_VERSION} for nightly {}\n",
        nightly.commit
    );
    let linker_runs = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if linker_runs && fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(());
    }

    let lib = dir.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let nightly_lib = nightly.sysroot.join("lib");
    let mut linked = false;
    for entry in
        fs::read_dir(&nightly_lib).with_context(|| format!("reading {}", nightly_lib.display()))?
    {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with("libLLVM") || !name.contains(".so") {
            continue;
        }
        // Both the plain name (found at build time) and the soname (found at run time).
        for link_name in [name.as_ref(), "libLLVM.so"] {
            let link = lib.join(link_name);
            let _ = fs::remove_file(&link);
            symlink(entry.path(), &link).with_context(|| format!("linking {}", link.display()))?;
        }
        linked = true;
    }
    if !linked {
        bail!(
            "nightly has no libLLVM shared library in {}",
            nightly_lib.display()
        );
    }

    let feature = format!("llvm-{}", nightly.llvm_major);
    eprintln!(
        "xtask setup: building bpf-linker {BPF_LINKER_VERSION} against nightly's LLVM {} \
         (about a minute, once)",
        nightly.llvm_major
    );
    status(
        Command::new("cargo")
            .args([
                "+stable",
                "install",
                "--force",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--no-default-features", "--features", &feature])
            .env("LLVM_PREFIX", &dir)
            .env_remove("RUSTC")
            .env_remove("RUSTC_WRAPPER")
            .env_remove("CARGO_TARGET_DIR"),
    )?;
    let check = Command::new("bpf-linker").arg("--version").output();
    if !check.is_ok_and(|o| o.status.success()) {
        bail!("bpf-linker was installed but does not run; is ~/.cargo/bin on PATH?");
    }
    fs::write(&stamp, want)?;
    Ok(())
}

/// tracer mounts tracefs itself when it can; mounting here too makes `bpftrace` and friends
/// work for cross-checks. Not fatal: without root, only the build is set up.
fn ensure_tracefs() {
    if Path::new("/sys/kernel/tracing/events").is_dir() {
        return;
    }
    match Command::new("mount")
        .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
        .status()
    {
        Ok(s) if s.success() => {}
        _ => eprintln!(
            "xtask setup: warning: could not mount tracefs at /sys/kernel/tracing (not root?)"
        ),
    }
}

/// jemalloc, preloaded by a root test to check that another allocator is found.
pub const JEMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";

/// Tools the root tests use besides tracer: compilers for the workloads, strace as an
/// independent count of syscalls, setpriv to run as an unprivileged user, jemalloc as a second
/// allocator, Prometheus and Go's pprof as real scrapers of `--listen`, tmux to drive
/// `tracer top`. Installed from Debian's packages when missing.
pub fn ensure_test_tools() -> Result<()> {
    let present = |tool: &str| {
        if tool.starts_with('/') {
            Path::new(tool).exists()
        } else {
            which(tool).is_some()
        }
    };
    let missing: Vec<&str> = [
        ("cc", "gcc"),
        ("g++", "g++"),
        ("readelf", "binutils"),
        ("strace", "strace"),
        ("setpriv", "util-linux"),
        (JEMALLOC, "libjemalloc2"),
        ("prometheus", "prometheus"),
        ("go", "golang-go"),
        ("tmux", "tmux"),
        ("curl", "curl"),
        // A distribution binary without frame pointers, for the stack-walk tests.
        ("sqlite3", "sqlite3"),
        // memcheck: the reference for the leak check's categories.
        ("valgrind", "valgrind"),
        // Independent counts at return addresses, for the call-site tests.
        ("bpftrace", "bpftrace"),
    ]
    .into_iter()
    .filter(|(tool, _)| !present(tool))
    .map(|(_, package)| package)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing test tools: {}", missing.join(" "));
    status(Command::new("apt-get").arg("update").arg("-qq"))?;
    status(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// glibc, where the bench's bpftrace probes go.
pub const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

/// Which of the bench's peers are there.
pub struct BenchTools {
    pub bpftrace: bool,
    pub heaptrack: bool,
    pub redis: bool,
}

/// The bench's peers and its real service, from Debian's packages: bpftrace, heaptrack,
/// redis-server and redis-tools. What cannot be installed is left out of the table, and the
/// table says so.
pub fn ensure_bench_tools() -> BenchTools {
    let missing: Vec<&str> = [
        ("bpftrace", "bpftrace"),
        ("heaptrack", "heaptrack"),
        ("redis-server", "redis-server"),
        ("redis-benchmark", "redis-tools"),
        ("sqlite3", "sqlite3"),
        ("g++", "g++"),
    ]
    .into_iter()
    .filter(|(tool, _)| which(tool).is_none())
    .map(|(_, package)| package)
    .collect();
    if !missing.is_empty() {
        eprintln!("xtask: installing the bench's peers: {}", missing.join(" "));
        let installed = status(Command::new("apt-get").arg("update").arg("-qq")).and_then(|()| {
            status(
                Command::new("apt-get")
                    .args(["install", "-y", "-qq", "--no-install-recommends"])
                    .args(&missing)
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )
        });
        if let Err(e) = installed {
            eprintln!("xtask: could not install them ({e:#}); their rows are left out");
        }
    }
    BenchTools {
        bpftrace: which("bpftrace").is_some(),
        heaptrack: which("heaptrack").is_some(),
        redis: which("redis-server").is_some() && which("redis-benchmark").is_some(),
    }
}

/// Debian's Chromium, for checking the HTML report in a real browser.
pub fn ensure_chromium() -> Result<()> {
    if which("chromium").is_some() {
        return Ok(());
    }
    eprintln!("xtask: installing chromium");
    status(Command::new("apt-get").arg("update").arg("-qq"))?;
    status(
        Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                "chromium",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}
