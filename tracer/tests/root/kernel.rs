//! Root tests of the kernel paths and the join, against workloads with known outcomes, and an
//! independent count of the same tracepoints through an ftrace instance.

use std::{fs, path::PathBuf};

use crate::support::*;
use serde_json::Value;

fn site<'a>(v: &'a Value, function: &str) -> &'a Value {
    site_in(v, function)
}

fn n(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Small mallocs come from the brk heap, large ones from their own mmap, a second thread's
/// from a thread arena; each path shows the syscalls that served it.
#[test]
fn each_allocation_lands_on_its_path() {
    let w = workload("kernel");
    let (v, out) = trace_command(&[w.to_str().unwrap(), "paths", "20"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let small = site(&v, "small_allocs");
    assert_eq!(small["path"], "brk");
    assert_eq!(small["paths"]["brk_bytes"], 20 * 100);
    let big = site(&v, "big_allocs");
    assert_eq!(big["path"], "mmap");
    assert_eq!(big["paths"]["mmap_bytes"], 20 << 20);
    assert_eq!(
        big["caused"]["mmap_calls"], 20,
        "one mmap per malloc(1 MiB)"
    );
    assert_eq!(n(&big["caused"]["mmap_bytes"]), 20 * ((1 << 20) + 4096));
    let thread = site(&v, "thread_allocs");
    assert_eq!(thread["path"], "thread_arena");
    assert_eq!(thread["paths"]["thread_arena_bytes"], 20 * 200);
    // The arena itself: a reservation, trimmed, committed with mprotect, by the first malloc.
    assert_eq!(thread["caused"]["mmap_calls"], 1);
    assert!(n(&thread["caused"]["mprotect_calls"]) >= 1, "{thread}");
    assert!(n(&v["syscalls"]["mprotect"]["commit_bytes"]) > 0);
    let p = &v["paths"];
    assert!(
        n(&p["brk"]["bytes"]) >= 2000 && n(&p["brk"]["sites"]) >= 1,
        "{p}"
    );
    assert!(n(&p["mmap"]["bytes"]) >= 20 << 20, "{p}");
    // The twenty 1 MiB blocks are the mmap path's only allocations.
    assert_eq!(p["mmap"]["allocs"], 20, "{p}");
    assert!(n(&p["thread_arena"]["allocs"]) >= 20, "{p}");
    assert!(n(&p["thread_arena"]["bytes"]) >= 4000, "{p}");
}

/// Touching K pages: K faults in anonymous memory, and at least K order-0 pages charged to the
/// site whose block was touched, all resident.
#[test]
fn touching_pages_faults_them_in() {
    const K: i64 = 100;
    let w = workload("kernel");
    let w = w.to_str().unwrap();
    let (base, _) = trace_command(&[w, "touch", "0"]);
    let (run, _) = trace_command(&[w, "touch", &K.to_string()]);
    let faults = |v: &Value| n(&v["kernel"]["faults"]["by_region"]["anon_mmap"]);
    // K pages of the direct mapping and K of the malloc'd block.
    assert!(
        faults(&run) - faults(&base) >= 2 * K,
        "{} vs {}",
        faults(&run),
        faults(&base)
    );
    let order0 = |v: &Value| n(&v["kernel"]["buddy"]["by_order"]["0"]);
    assert!(order0(&run) - order0(&base) >= 2 * K);
    let movable = |v: &Value| n(&v["kernel"]["buddy"]["by_gfp"]["GFP_HIGHUSER_MOVABLE"]);
    assert!(movable(&run) - movable(&base) >= 2 * K);
    let block = site(&run, "touch_block");
    assert_eq!(block["path"], "mmap");
    assert!(n(&block["paths"]["buddy_pages"]) >= K, "{block}");
    assert!(n(&block["paths"]["resident_bytes"]) >= K * 4096, "{block}");
    assert!(n(&block["caused"]["page_faults"]) >= K, "{block}");
}

/// Every mmap brings its VMA: a vm_area_struct per unmergeable mapping, charged to mmap.
#[test]
fn each_mmap_brings_its_vma() {
    const N: i64 = 50;
    let w = workload("kernel");
    let w = w.to_str().unwrap();
    let (base, _) = trace_command(&[w, "vmas", "0"]);
    let (run, _) = trace_command(&[w, "vmas", &N.to_string()]);
    let vmas = |v: &Value| n(&v["kernel"]["slab"]["by_cache"]["vm_area_struct"]["allocs"]);
    assert_eq!(vmas(&run) - vmas(&base), N);
    let in_mmap = |v: &Value| n(&v["kernel"]["by_syscall"]["mmap"]["slab_objects"]);
    assert!(in_mmap(&run) - in_mmap(&base) >= N);
    assert_eq!(
        n(&run["syscalls"]["mmap"]["shared_calls"]) - n(&base["syscalls"]["mmap"]["shared_calls"]),
        N
    );
    let slab = &run["kernel"]["slab"];
    assert!(n(&slab["bytes"]) >= n(&slab["bytes_req"]));
}

/// A leak never touched is address space only; one written throughout is resident.
#[test]
fn leaks_split_into_resident_and_virtual() {
    let w = workload("kernel");
    let (v, _) = trace_command(&[w.to_str().unwrap(), "leaks"]);
    let leak = |function: &str| {
        v["user"]["leaks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["stack"][0]["function"] == function)
            .cloned()
            .unwrap_or_else(|| panic!("no leak in {function}"))
    };
    let untouched = leak("leak_untouched");
    assert_eq!(
        untouched["stack"][0]["line"],
        line_of("kernel.c", "/* UNTOUCHED */")
    );
    assert_eq!(untouched["bytes"], 4 << 20);
    // Only the page with malloc's chunk header was written.
    assert!(
        n(&untouched["virtual_bytes"]) >= (4 << 20) - 4096,
        "{untouched}"
    );
    assert!(n(&untouched["resident_bytes"]) <= 4096);
    let touched = leak("leak_touched");
    assert_eq!(touched["resident_bytes"], 4 << 20);
    assert_eq!(touched["virtual_bytes"], 0);
    assert_eq!(touched["path"], "mmap");
}

/// An ftrace instance counting the same tracepoints for one pid: an independent count.
struct Ftrace {
    dir: PathBuf,
}

const FTRACE_EVENTS: [&str; 4] = [
    "kmem/mm_page_alloc",
    "kmem/kmem_cache_alloc",
    "kmem/kmalloc",
    "exceptions/page_fault_user",
];

impl Ftrace {
    fn for_pid(pid: u32) -> Self {
        let dir = PathBuf::from(format!("/sys/kernel/tracing/instances/tracer-test-{pid}"));
        fs::create_dir(&dir).expect("creating an ftrace instance");
        let f = Ftrace { dir };
        f.write("buffer_size_kb", "16384");
        for event in FTRACE_EVENTS {
            f.write(
                &format!("events/{event}/filter"),
                &format!("common_pid == {pid}"),
            );
            f.write(&format!("events/{event}/enable"), "1");
        }
        f.write("tracing_on", "1");
        f
    }

    fn write(&self, file: &str, value: &str) {
        fs::write(self.dir.join(file), value).unwrap_or_else(|e| panic!("{file}: {e}"));
    }

    /// Events per tracepoint name, and whether the buffer overran.
    fn counts(&self) -> (std::collections::HashMap<String, i64>, bool) {
        self.write("tracing_on", "0");
        let text = fs::read_to_string(self.dir.join("trace")).unwrap();
        let mut counts = std::collections::HashMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            for event in FTRACE_EVENTS {
                let name = event.rsplit('/').next().unwrap();
                if line.contains(&format!(" {name}:")) {
                    *counts.entry(name.to_string()).or_default() += 1;
                }
            }
        }
        let overrun = fs::read_dir(self.dir.join("per_cpu")).unwrap().any(|cpu| {
            let stats = fs::read_to_string(cpu.unwrap().path().join("stats")).unwrap_or_default();
            stats
                .lines()
                .any(|l| l.starts_with("overrun:") && !l.ends_with(" 0"))
        });
        (counts, overrun)
    }
}

impl Drop for Ftrace {
    fn drop(&mut self) {
        for event in FTRACE_EVENTS {
            let _ = fs::write(self.dir.join(format!("events/{event}/enable")), "0");
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

#[test]
fn agrees_with_an_independent_count() {
    let w = workload("kernel");
    let mut ftrace = None;
    let v = trace_gated(&w, &["gate", "200"], &["-q"], |pid| {
        ftrace = Some(Ftrace::for_pid(pid));
    });
    let ftrace = ftrace.unwrap();
    let (counts, overrun) = ftrace.counts();
    assert!(!overrun, "the ftrace buffer overran");
    assert_eq!(v["events"]["dropped"], 0);
    let k = &v["kernel"];
    let c = |name: &str| counts.get(name).copied().unwrap_or(0);
    assert!(c("page_fault_user") >= 400, "{counts:?}");
    assert_eq!(n(&k["faults"]["user"]), c("page_fault_user"), "{counts:?}");
    assert_eq!(n(&k["buddy"]["allocs"]), c("mm_page_alloc"), "{counts:?}");
    assert_eq!(
        n(&k["slab"]["allocs"]),
        c("kmem_cache_alloc") + c("kmalloc"),
        "{counts:?}"
    );
}

/// The kernel holds each fault back until its CPU's next event (to send it with the page it
/// takes): when tracing ends while the process waits, its last fault is still held, and is
/// read out of the kernel then. File pages already cached take no page, so every fault of
/// this workload is held until the next one; the count still agrees with ftrace's.
#[test]
fn faults_still_held_when_tracing_ends_are_counted() {
    use std::{
        io::{Read, Write},
        process::Stdio,
    };
    const K: i64 = 64;
    let w = workload("kernel");
    let mut child = std::process::Command::new(&w)
        .args(["held", &K.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut ready = [0u8; 6];
    stdout.read_exact(&mut ready).unwrap();
    assert_eq!(&ready, b"ready\n");
    let ftrace = Ftrace::for_pid(child.id());
    let json = json_path("held");
    let (mut tracer, lines) = attach_tracer(child.id(), &json, &["--mode", "kernel"]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"g").unwrap();
    let mut done = [0u8; 5];
    stdout.read_exact(&mut done).unwrap();
    assert_eq!(&done, b"done\n");
    // Tracing ends with the workload blocked after its last fault.
    // SAFETY: kill(2) on the tracer's pid.
    unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(tracer.wait().unwrap().success(), "{rest:?}");
    let (counts, overrun) = ftrace.counts();
    stdin.write_all(b"g").unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!overrun, "the ftrace buffer overran");
    let v: Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
    let faults = counts.get("page_fault_user").copied().unwrap_or(0);
    assert!(faults >= K, "{counts:?}");
    assert_eq!(n(&v["kernel"]["faults"]["user"]), faults, "{counts:?}");
    assert!(
        n(&v["kernel"]["faults"]["by_region"]["file"]) >= K,
        "{}",
        v["kernel"]
    );
}

/// `--kernel-stacks`: the kernel paths that made the objects, symbolized from kallsyms.
#[test]
fn kernel_stacks_name_the_kernel_paths() {
    let w = workload("kernel");
    let (v, out) = trace_with(
        &["--kernel-stacks", "-q"],
        &[w.to_str().unwrap(), "vmas", "20"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let stacks = v["kernel"]["stacks"].as_array().unwrap();
    let vma = stacks
        .iter()
        .find(|s| {
            s["stack"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "vm_area_alloc")
        })
        .unwrap_or_else(|| panic!("no vm_area_alloc path in {stacks:?}"));
    assert!(n(&vma["slab_objects"]) >= 20, "{vma}");
    assert!(
        vma["stack"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().contains("mmap"))
    );
    assert_eq!(v["kernel"]["traced"], true);
    // Without the flag, no stacks are taken.
    let (plain, _) = trace_command(&[w.to_str().unwrap(), "vmas", "2"]);
    assert_eq!(plain["kernel"]["stacks"], serde_json::json!([]));
}

/// `--no-kernel` leaves the kernel's allocators alone and says so; syscalls are still traced.
#[test]
fn no_kernel_skips_the_kmem_probes() {
    let w = workload("kernel");
    let (v, out) = trace_with(
        &["--no-kernel", "-q"],
        &[w.to_str().unwrap(), "vmas", "5"],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(v["kernel"]["traced"], false);
    assert_eq!(v["kernel"]["buddy"]["allocs"], 0);
    assert_eq!(v["kernel"]["faults"]["user"], 0);
    assert!(n(&v["syscalls"]["mmap"]["shared_calls"]) >= 5);
}

/// The raw tracepoint programs see what the perf tracepoints see: the same syscalls, faults,
/// pages, VMAs and frees on workloads whose kernel work is known, run under each.
#[test]
fn raw_and_perf_kernel_probes_agree() {
    const K: i64 = 200;
    let w = workload("kernel");
    let w = w.to_str().unwrap();
    let run = |kind: &str, args: &[&str]| {
        let (v, out) = trace_with(&["--kernel-probes", kind], args, &[]);
        assert!(
            out.status.success(),
            "--kernel-probes {kind}: {}",
            stderr(&out)
        );
        v
    };
    let syscalls = workload("syscalls");
    let threads = ["3", "--threads", "2"];
    let syscalls_of = |kind: &str| {
        let argv: Vec<&str> = [syscalls.to_str().unwrap()]
            .into_iter()
            .chain(threads)
            .collect();
        run(kind, &argv)["syscalls"].clone()
    };
    let raw = syscalls_of("raw");
    assert_eq!(raw, syscalls_of("perf"));
    // 2 threads of 3 iterations, 4 mmap calls each (and the threads' stacks and arenas).
    assert!(n(&raw["mmap"]["calls"]) >= 2 * 3 * 4, "{raw}");
    for kind in ["raw", "perf"] {
        let touch = run(kind, &[w, "touch", &K.to_string()]);
        let block = site(&touch, "touch_block");
        // The block's K pages, each faulted in and given an order-0 page.
        assert!(n(&block["caused"]["page_faults"]) >= K, "{kind}: {block}");
        assert!(n(&block["paths"]["buddy_pages"]) >= K, "{kind}: {block}");
        // The block's pages and the page of malloc's chunk header before them.
        let resident = n(&block["paths"]["resident_bytes"]);
        assert!(
            (K * 4096..=(K + 1) * 4096).contains(&resident),
            "{kind}: {block}"
        );
        let buddy = &touch["kernel"]["buddy"];
        // The block's pages are freed at exit, before tracing stops: each free matched to its
        // allocation (by the live-page bitmap here, whatever names the page).
        assert!(
            n(&buddy["frees"]) >= K && n(&buddy["frees"]) <= n(&buddy["allocs"]),
            "{kind}: {buddy}"
        );

        let vmas = run(kind, &[w, "vmas", &K.to_string()]);
        let base = run(kind, &[w, "vmas", "0"]);
        let cache = |v: &Value, f: &str| n(&v["kernel"]["slab"]["by_cache"]["vm_area_struct"][f]);
        assert_eq!(cache(&vmas, "allocs") - cache(&base, "allocs"), K, "{kind}");
        // Freed at exit, in the process's own context, before tracing stops.
        assert_eq!(cache(&vmas, "frees") - cache(&base, "frees"), K, "{kind}");
        let slab = &vmas["kernel"]["slab"];
        assert!(n(&slab["bytes"]) >= n(&slab["bytes_req"]), "{kind}: {slab}");
        // One shmem inode per shared mapping; kmalloc objects named by their size class
        // (each pipe's buffer array at least). A cache the base run never used is absent
        // from its summary.
        let shmem = |v: &Value| {
            v["kernel"]["slab"]["by_cache"]["shmem_inode_cache"]["allocs"]
                .as_i64()
                .unwrap_or(0)
        };
        assert_eq!(shmem(&vmas) - shmem(&base), K, "{kind}");
        let kmalloc = |v: &Value| -> i64 {
            v["kernel"]["slab"]["by_cache"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(name, _)| name.starts_with("kmalloc-"))
                .map(|(_, c)| n(&c["allocs"]))
                .sum()
        };
        assert!(kmalloc(&vmas) - kmalloc(&base) >= K, "{kind}: {slab}");
        // memfd_create is not a traced syscall: its shmem inodes are counted in the kernel,
        // not sent, where the raw tracepoint names the cache by address; the perf record does
        // not, so there only kmalloc's objects are counted. The totals above agree either way.
        let counted = n(&slab["counted_in_kernel"]);
        if kind == "raw" {
            assert!(
                counted >= K && counted <= n(&slab["allocs"]),
                "{kind}: {slab}"
            );
        } else {
            assert!(counted <= kmalloc(&vmas), "{kind}: {slab}");
        }
    }
}
