//! Builds the eBPF programs (crate `tracer-ebpf`) with aya-build and embeds them in the binary.

use std::{path::Path, process::Command};

use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=PATH");
    if let Err(missing) = check_toolchain() {
        // One line that says what to do, instead of pages of linker errors further down.
        println!(
            "cargo::error=the eBPF toolchain is not set up ({missing}): run `cargo xtask setup`"
        );
        return Ok(());
    }
    let ebpf_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tracer-ebpf");
    let ebpf_dir = ebpf_dir.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "tracer-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .map_err(|e| anyhow!("building the eBPF programs failed (see the warning lines above): {e}"))
}

/// The pieces `cargo xtask setup` installs: bpf-linker and nightly's rust-src.
fn check_toolchain() -> Result<(), &'static str> {
    if std::env::var_os("AYA_BUILD_SKIP").is_some() {
        return Ok(());
    }
    which::which("bpf-linker").map_err(|_| "bpf-linker not found")?;
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .map_err(|_| "rustup not found")?;
    if !sysroot.status.success() {
        return Err("no nightly toolchain");
    }
    let sysroot = String::from_utf8_lossy(&sysroot.stdout);
    let core = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/core");
    if !core.is_dir() {
        return Err("nightly rust-src missing");
    }
    Ok(())
}
