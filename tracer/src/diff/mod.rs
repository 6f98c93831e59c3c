//! `tracer diff BEFORE AFTER`: two runs compared, each a recording or a JSON summary.
//!
//! Both sides are read as `tracer.summary/1` documents (a recording is replayed first), so a
//! summary from another machine or an older build compares the same way. Sites are matched by
//! their resolved frames (function, file name, line; `lib.so+0xoff` where unresolved), never by
//! address, so two builds of a program compare site by site.

pub mod gate;
pub mod render;

use std::{
    collections::{BTreeMap, HashMap},
    io::{Cursor, Read},
    path::Path,
};

use serde::Serialize;
use serde_json::Value;

use crate::{periodic::interval::delta, record::MAGIC};
use gate::{Gate, GateError, METRICS, Verdict};

pub const SCHEMA: &str = "tracer.diff/1";

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Replay {
        path: String,
        #[source]
        source: crate::record::RecordError,
    },
    #[error("{path} is neither a tracer recording nor a tracer.summary/1 JSON document ({why})")]
    NotASummary { path: String, why: String },
    #[error(transparent)]
    Gate(#[from] GateError),
}

/// The most of a JSON summary read: larger input is not one.
const MAX_JSON_BYTES: u64 = 1 << 30;

/// Reads a recording (replayed) or a JSON summary as a summary document, streaming: the
/// input is opened once and read once, so a pipe (`<(...)`) works, and no more of it is held
/// than its parse needs (a JSON summary of at most 1 GiB).
pub fn load(path: &Path) -> Result<Value, DiffError> {
    let shown = path.display().to_string();
    let io = |source| DiffError::Io {
        path: shown.clone(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut head = [0u8; 8];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    let input =
        std::io::BufReader::with_capacity(1 << 20, Cursor::new(head[..n].to_vec()).chain(file));
    if n == head.len() && &head == MAGIC {
        let reader =
            crate::record::Reader::new(input, path).map_err(|source| DiffError::Replay {
                path: shown.clone(),
                source,
            })?;
        let summary =
            crate::replay::replay_from(reader, |_, _| {}).map_err(|source| DiffError::Replay {
                path: shown.clone(),
                source,
            })?;
        return Ok(serde_json::to_value(&summary).expect("summaries serialize"));
    }
    let mut limited = input.take(MAX_JSON_BYTES);
    let v: Value = serde_json::from_reader(&mut limited).map_err(|e| DiffError::NotASummary {
        path: shown.clone(),
        why: if limited.limit() == 0 {
            format!("larger than {} MiB", MAX_JSON_BYTES >> 20)
        } else {
            e.to_string()
        },
    })?;
    if v["schema"] != crate::summary::SCHEMA {
        return Err(DiffError::NotASummary {
            path: shown,
            why: format!("its schema is {}", v["schema"]),
        });
    }
    Ok(v)
}

fn n(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

const ALLOCATING: [&str; 10] = [
    "malloc",
    "calloc",
    "realloc",
    "reallocarray",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "operator_new",
];

/// The numbers `--fail-if` and the totals table name (see [`METRICS`]).
pub fn metrics(s: &Value) -> BTreeMap<&'static str, f64> {
    let u = &s["user"];
    let k = &s["kernel"];
    let sum = |field: &str| ALLOCATING.iter().map(|f| n(&u[f][field])).sum::<f64>();
    let syscalls = ["brk", "mmap", "munmap", "mremap", "mprotect", "madvise"]
        .iter()
        .map(|c| n(&s["syscalls"][c]["calls"]))
        .sum::<f64>();
    let values = [
        sum("calls"),
        sum("bytes"),
        n(&u["free"]["calls"]) + n(&u["operator_delete"]["calls"]),
        n(&u["live_bytes_at_end"]),
        n(&u["peak_live_bytes"]),
        n(&u["leaked_bytes"]),
        n(&u["leaked_blocks"]),
        u["leak_suspects"].as_array().map_or(0, Vec::len) as f64,
        n(&u["leak_check"]["lost_bytes"]),
        n(&u["leak_check"]["lost_blocks"]),
        n(&u["leak_check"]["indirect_bytes"]),
        n(&u["leak_check"]["possible_bytes"]),
        n(&u["leak_check"]["reachable_bytes"]),
        n(&s["paths"]["brk"]["bytes"]),
        n(&s["paths"]["mmap"]["bytes"]),
        n(&s["paths"]["thread_arena"]["bytes"]),
        n(&k["buddy"]["pages"]),
        n(&k["slab"]["allocs"]),
        n(&k["faults"]["user"]),
        syscalls,
        n(&s["events"]["dropped"]),
    ];
    METRICS.iter().map(|(m, _)| *m).zip(values).collect()
}

/// A site's identity across builds: its frames by function, file name and line.
fn site_key(stack: &Value) -> String {
    let mut key = String::new();
    for f in stack.as_array().into_iter().flatten() {
        let file = f["file"]
            .as_str()
            .map(|p| p.rsplit('/').next().unwrap_or(p));
        match (
            f["function"].as_str(),
            f["module"].as_str(),
            f["offset"].as_u64(),
        ) {
            (Some(func), _, _) => {
                key.push_str(func);
                if let (Some(file), Some(line)) = (file, f["line"].as_u64()) {
                    key.push_str(&format!("@{file}:{line}"));
                }
            }
            (None, Some(m), Some(off)) => {
                key.push_str(&format!("{}+{off:#x}", m.rsplit('/').next().unwrap_or(m)));
            }
            _ => key.push_str(f["addr"].as_str().unwrap_or("?")),
        }
        key.push(';');
    }
    key
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SiteNumbers {
    pub allocs: u64,
    pub bytes: u64,
    pub live_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteDelta {
    pub stack: Value,
    /// "changed", "same", "new" or "vanished".
    pub status: &'static str,
    pub before: SiteNumbers,
    pub after: SiteNumbers,
    pub bytes_change: i64,
    pub live_bytes_change: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TotalDelta {
    pub metric: &'static str,
    pub before: f64,
    pub after: f64,
    pub change: f64,
    /// Relative to before; null when before is zero.
    pub percent: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Side {
    pub command: Value,
    pub duration_ms: f64,
    pub mode: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diff {
    pub schema: &'static str,
    pub before: Side,
    pub after: Side,
    pub totals: Vec<TotalDelta>,
    /// Every site of either side, largest change in bytes first.
    pub sites: Vec<SiteDelta>,
    pub new_sites: usize,
    pub vanished_sites: usize,
    /// Leak suspects of AFTER that BEFORE did not have, and the reverse (by first frames).
    pub suspects_appeared: Vec<String>,
    pub suspects_vanished: Vec<String>,
    /// Findings of AFTER that BEFORE did not have, and the reverse, as `kind: site`.
    pub findings_appeared: Vec<String>,
    pub findings_vanished: Vec<String>,
    /// The `--fail-if` conditions and whether each held.
    pub gates: Vec<GateResult>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateResult {
    pub condition: String,
    pub failed: bool,
    pub message: String,
}

impl SiteNumbers {
    fn add(&mut self, o: SiteNumbers) {
        self.allocs = self.allocs.saturating_add(o.allocs);
        self.bytes = self.bytes.saturating_add(o.bytes);
        self.live_bytes = self.live_bytes.saturating_add(o.live_bytes);
    }
}

fn numbers(site: &Value) -> SiteNumbers {
    SiteNumbers {
        allocs: site["allocs"].as_u64().unwrap_or(0),
        bytes: site["bytes"].as_u64().unwrap_or(0),
        live_bytes: site["live_bytes"].as_u64().unwrap_or(0),
    }
}

fn findings(s: &Value) -> Vec<String> {
    s["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let kind = f["kind"].as_str().unwrap_or("?");
            match f["site"].as_array() {
                Some(site) if !site.is_empty() => {
                    format!("{kind}: {}", render::describe(&f["site"], 2))
                }
                _ => kind.to_string(),
            }
        })
        .collect()
}

fn suspects(s: &Value) -> Vec<String> {
    s["user"]["leak_suspects"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| render::describe(&x["stack"], 2))
        .collect()
}

/// Compares two summary documents and evaluates `gates` (AFTER against BEFORE).
pub fn compare(before: &Value, after: &Value, gates: &[Gate]) -> Result<Diff, DiffError> {
    let (mb, ma) = (metrics(before), metrics(after));
    let totals = METRICS
        .iter()
        .map(|(m, _)| {
            let (b, a) = (mb[m], ma[m]);
            TotalDelta {
                metric: m,
                before: b,
                after: a,
                change: a - b,
                percent: (b != 0.0).then(|| (a - b) / b * 100.0),
            }
        })
        .collect();
    let list = |s: &Value| s["user"]["sites"].as_array().cloned().unwrap_or_default();
    let mut old: HashMap<String, (Value, SiteNumbers)> = HashMap::new();
    for site in list(before) {
        let e = old
            .entry(site_key(&site["stack"]))
            .or_insert((site["stack"].clone(), SiteNumbers::default()));
        e.1.add(numbers(&site));
    }
    let mut sites = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for site in list(after) {
        let key = site_key(&site["stack"]);
        let x = numbers(&site);
        if let Some(&i) = seen.get(&key) {
            let d: &mut SiteDelta = &mut sites[i];
            d.after.add(x);
            continue;
        }
        let before = old.remove(&key).map(|(_, n)| n);
        seen.insert(key, sites.len());
        sites.push(SiteDelta {
            stack: site["stack"].clone(),
            status: if before.is_some() { "changed" } else { "new" },
            before: before.unwrap_or_default(),
            after: x,
            bytes_change: 0,
            live_bytes_change: 0,
        });
    }
    for (_, (stack, n)) in old {
        sites.push(SiteDelta {
            stack,
            status: "vanished",
            before: n,
            after: SiteNumbers::default(),
            bytes_change: 0,
            live_bytes_change: 0,
        });
    }
    for d in &mut sites {
        d.bytes_change = delta(d.after.bytes, d.before.bytes);
        d.live_bytes_change = delta(d.after.live_bytes, d.before.live_bytes);
        if d.status == "changed" && d.before == d.after {
            d.status = "same";
        }
    }
    sites.sort_by(|a, b| {
        b.bytes_change
            .unsigned_abs()
            .cmp(&a.bytes_change.unsigned_abs())
            .then(b.after.bytes.cmp(&a.after.bytes))
    });
    let (sb, sa) = (suspects(before), suspects(after));
    let (fb, fa) = (findings(before), findings(after));
    let mut results = Vec::new();
    for g in gates {
        let Verdict { failed, message } = g.holds(Some(&mb), &ma)?;
        results.push(GateResult {
            condition: g.text.clone(),
            failed,
            message,
        });
    }
    let side = |s: &Value| Side {
        command: s["target"]["command"].clone(),
        duration_ms: n(&s["duration_ms"]),
        mode: s["mode"].clone(),
    };
    Ok(Diff {
        schema: SCHEMA,
        before: side(before),
        after: side(after),
        totals,
        new_sites: sites.iter().filter(|s| s.status == "new").count(),
        vanished_sites: sites.iter().filter(|s| s.status == "vanished").count(),
        sites,
        suspects_appeared: sa.iter().filter(|x| !sb.contains(x)).cloned().collect(),
        suspects_vanished: sb.iter().filter(|x| !sa.contains(x)).cloned().collect(),
        findings_appeared: fa.iter().filter(|x| !fb.contains(x)).cloned().collect(),
        findings_vanished: fb.iter().filter(|x| !fa.contains(x)).cloned().collect(),
        gates: results,
    })
}

/// The `--fail-if` conditions of a live run, on its own summary.
pub fn check_run(summary: &Value, gates: &[Gate]) -> Result<Vec<GateResult>, GateError> {
    let m = metrics(summary);
    let checked = summary["user"]["leak_check"]["outcome"] == "done";
    gates
        .iter()
        .map(|g| {
            // A condition on the leak check's numbers fails when no check gave them: a gate
            // that passes on nothing would pass any program.
            if LEAK_CHECK_METRICS.contains(&g.metric) && !checked {
                return Ok(GateResult {
                    condition: g.text.clone(),
                    failed: true,
                    message: format!(
                        "{}: no leak check classified the blocks (it runs at a launched or \
                         followed process's exit, or with --leak-check, in the full mode \
                         without --sample)",
                        g.metric
                    ),
                });
            }
            let v = g.holds(None, &m)?;
            Ok(GateResult {
                condition: g.text.clone(),
                failed: v.failed,
                message: v.message,
            })
        })
        .collect()
}

/// The metrics only a leak check gives.
const LEAK_CHECK_METRICS: [&str; 5] = [
    "lost_bytes",
    "lost_blocks",
    "indirect_bytes",
    "possible_bytes",
    "reachable_bytes",
];

/// Exit status when a `--fail-if` condition held.
pub const GATE_FAILED: i32 = 3;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The leak check's numbers gate a run only when a check gave them.
    #[test]
    fn leak_check_gates_need_a_check() {
        let gate = |t: &str| Gate::parse(t).unwrap();
        let mut s = json!({"user": {"leak_check": {"outcome": "done", "lost_bytes": 64,
            "lost_blocks": 1, "reachable_bytes": 4096}}});
        let r = check_run(&s, &[gate("lost_bytes>0"), gate("reachable_bytes>8K")]).unwrap();
        assert!(
            r[0].failed && r[0].message.contains("lost_bytes = 64"),
            "{r:?}"
        );
        assert!(!r[1].failed);
        s["user"]["leak_check"]["outcome"] = json!("gave_up");
        let r = check_run(&s, &[gate("lost_bytes>0"), gate("leaked_bytes>0")]).unwrap();
        assert!(
            r[0].failed && r[0].message.contains("no leak check"),
            "{r:?}"
        );
        assert!(!r[1].failed);
    }

    fn frame(f: &str, file: &str, line: u32, addr: &str) -> Value {
        json!({"addr": addr, "function": f, "file": file, "line": line})
    }

    fn summary(sites: Value, malloc_calls: u64, live: u64) -> Value {
        json!({
            "schema": "tracer.summary/1",
            "mode": "full",
            "target": {"command": ["./app"]},
            "duration_ms": 10.0,
            "events": {"dropped": 0},
            "syscalls": {"brk": {"calls": 2}, "mmap": {"calls": 3}},
            "paths": {"brk": {"bytes": 100}, "mmap": {"bytes": 0}, "thread_arena": {"bytes": 0}},
            "kernel": {"buddy": {"pages": 4}, "slab": {"allocs": 1}, "faults": {"user": 9}},
            "user": {
                "malloc": {"calls": malloc_calls, "bytes": 640},
                "free": {"calls": 1},
                "live_bytes_at_end": live,
                "leaked_bytes": live,
                "leaked_blocks": 1,
                "sites": sites,
                "leak_suspects": [],
            },
        })
    }

    #[test]
    fn sites_match_by_frames_not_addresses() {
        let before = summary(
            json!([
                {"stack": [frame("parse", "/a/src/p.c", 10, "0x401000")], "allocs": 5, "bytes": 500, "live_bytes": 0},
                {"stack": [frame("gone", "/a/src/g.c", 3, "0x402000")], "allocs": 1, "bytes": 64, "live_bytes": 64},
            ]),
            6,
            64,
        );
        // Another build: other addresses and another checkout directory, same lines.
        let after = summary(
            json!([
                {"stack": [frame("parse", "/b/src/p.c", 10, "0x501000")], "allocs": 8, "bytes": 800, "live_bytes": 0},
                {"stack": [frame("fresh", "/b/src/f.c", 7, "0x503000")], "allocs": 2, "bytes": 128, "live_bytes": 128},
            ]),
            10,
            128,
        );
        let gates = [
            Gate::parse("allocs>+50%").unwrap(),
            Gate::parse("live_bytes>+10%").unwrap(),
            Gate::parse("leaked_bytes>1K").unwrap(),
        ];
        let d = compare(&before, &after, &gates).unwrap();
        assert_eq!(d.schema, "tracer.diff/1");
        let parse = d
            .sites
            .iter()
            .find(|s| s.stack[0]["function"] == "parse")
            .unwrap();
        assert_eq!((parse.status, parse.bytes_change), ("changed", 300));
        assert_eq!((d.new_sites, d.vanished_sites), (1, 1));
        let gone = d.sites.iter().find(|s| s.status == "vanished").unwrap();
        assert_eq!((gone.before.bytes, gone.bytes_change), (64, -64));
        // Largest change first.
        assert_eq!(d.sites[0].stack[0]["function"], "parse");
        let allocs = d.totals.iter().find(|t| t.metric == "allocs").unwrap();
        assert_eq!(
            (allocs.before, allocs.after, allocs.percent),
            (6.0, 10.0, Some((10.0 - 6.0) / 6.0 * 100.0))
        );
        let syscalls = d
            .totals
            .iter()
            .find(|t| t.metric == "memory_syscalls")
            .unwrap();
        assert_eq!(syscalls.after, 5.0);
        assert!(d.findings_appeared.is_empty() && d.findings_vanished.is_empty());
        let failed: Vec<bool> = d.gates.iter().map(|g| g.failed).collect();
        assert_eq!(failed, [true, true, false]);
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["gates"][0]["condition"], "allocs>+50%");
        assert_eq!(json["sites"][0]["status"], "changed");
    }

    #[test]
    fn findings_that_appear_and_go_are_named() {
        let mut before = summary(json!([]), 1, 0);
        let mut after = before.clone();
        before["findings"] =
            json!([{"kind": "mmap_churn", "site": [frame("big", "/a/b.c", 9, "0x1")]}]);
        after["findings"] = json!([
            {"kind": "leak", "site": [frame("keep", "/x/k.c", 4, "0x2")]},
            {"kind": "kernel_overhead", "site": []},
        ]);
        let d = compare(&before, &after, &[]).unwrap();
        assert_eq!(
            d.findings_appeared,
            ["leak: keep (k.c:4)", "kernel_overhead"]
        );
        assert_eq!(d.findings_vanished, ["mmap_churn: big (b.c:9)"]);
    }

    #[test]
    fn a_run_checks_its_own_numbers_and_refuses_baselines() {
        let s = summary(json!([]), 3, 64);
        let r = check_run(&s, &[Gate::parse("leaked_bytes>0").unwrap()]).unwrap();
        assert!(r[0].failed);
        assert!(
            r[0].message.contains("leaked_bytes = 64"),
            "{}",
            r[0].message
        );
        assert!(check_run(&s, &[Gate::parse("allocs>+5%").unwrap()]).is_err());
    }

    #[test]
    fn inputs_that_are_not_summaries_are_named() {
        let dir = std::env::temp_dir().join(format!("tracer-diff-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let other = dir.join("other.json");
        std::fs::write(&other, r#"{"schema":"something/1"}"#).unwrap();
        let e = load(&other).unwrap_err().to_string();
        assert!(
            e.contains("neither a tracer recording nor") && e.contains("something/1"),
            "{e}"
        );
        std::fs::write(&other, "not json").unwrap();
        assert!(load(&other).unwrap_err().to_string().contains("neither"));
        let e = load(&dir.join("missing.json")).unwrap_err().to_string();
        assert!(e.contains("missing.json"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
