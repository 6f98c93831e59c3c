//! A cgroup a run follows (`--cgroup`): which processes are in it (its child cgroups
//! included), and the memory numbers the kernel keeps for it, from either hierarchy: a v1
//! controller's (`/sys/fs/cgroup/memory/NAME`) or the unified one's (`/sys/fs/cgroup/unified/NAME`
//! here, `/sys/fs/cgroup/NAME` where it is the only one).

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::facts::{CgroupEvents, CgroupFacts, CgroupMemory, Pressure};

/// `statfs`'s `f_type` of a v1 cgroup mount and of the unified (v2) one.
const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// v1's "no limit": the largest page-aligned `i64`.
const V1_UNLIMITED: u64 = 0x7fff_ffff_ffff_f000;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("--cgroup {path}: {source}")]
    Missing {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "--cgroup {0}: not a cgroup (give a directory of a cgroup mount, such as \
         /sys/fs/cgroup/memory/NAME for a v1 memory cgroup or /sys/fs/cgroup/unified/NAME)"
    )]
    NotCgroup(PathBuf),
}

/// A cgroup's directory and the version of its hierarchy.
#[derive(Debug, Clone)]
pub struct Cgroup {
    pub path: PathBuf,
    pub version: u8,
}

impl Cgroup {
    /// The cgroup at `path`, checked to be one.
    pub fn open(path: &Path) -> Result<Self, CgroupError> {
        let missing = |source| CgroupError::Missing {
            path: path.to_path_buf(),
            source,
        };
        let path = fs::canonicalize(path).map_err(missing)?;
        let version = match fs_type(&path).map_err(missing)? {
            CGROUP_SUPER_MAGIC => 1,
            CGROUP2_SUPER_MAGIC => 2,
            _ => return Err(CgroupError::NotCgroup(path)),
        };
        if !path.join("cgroup.procs").is_file() {
            return Err(CgroupError::NotCgroup(path));
        }
        Ok(Cgroup { path, version })
    }

    /// Whether the cgroup is still there (it is removed when its container goes).
    pub fn exists(&self) -> bool {
        self.path.join("cgroup.procs").is_file()
    }

    /// The processes in it and in its child cgroups, in pid order.
    pub fn members(&self) -> Vec<u32> {
        let mut out = Vec::new();
        collect_members(&self.path, &mut out, 0);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Its memory numbers now.
    pub fn memory(&self) -> CgroupMemory {
        let read = |name: &str| fs::read_to_string(self.path.join(name)).ok();
        let mut memory = if self.version == 1 {
            memory_v1(&read)
        } else {
            memory_v2(&read)
        };
        let own = if self.version == 2 {
            read("memory.pressure").and_then(|p| parse_pressure(&p))
        } else {
            None
        };
        (memory.pressure, memory.pressure_scope) = match own {
            Some(p) => (Some(p), "cgroup".into()),
            None => (
                fs::read_to_string("/proc/pressure/memory")
                    .ok()
                    .and_then(|p| parse_pressure(&p)),
                "machine".into(),
            ),
        };
        memory
    }

    /// What a summary says of it now, with its use so far.
    pub fn facts(&self, usage: &[(f64, u64)]) -> CgroupFacts {
        CgroupFacts {
            path: self.path.display().to_string(),
            version: self.version,
            memory: self.memory(),
            processes: self.members(),
            usage: usage.to_vec(),
        }
    }
}

/// Child cgroups nest; a bound keeps a loop of bind mounts from going on for ever.
const MAX_DEPTH: usize = 32;

fn collect_members(dir: &Path, out: &mut Vec<u32>, depth: usize) {
    if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if depth >= MAX_DEPTH {
        return;
    }
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_members(&entry.path(), out, depth + 1);
        }
    }
}

fn fs_type(path: &Path) -> std::io::Result<i64> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: statfs is plain data, valid when zeroed.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statfs buffer of the right size.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

/// The numbers of a v1 memory cgroup (its `total_*` statistics count its children too).
fn memory_v1(read: &dyn Fn(&str) -> Option<String>) -> CgroupMemory {
    let number = |name: &str| read(name).and_then(|s| s.trim().parse::<u64>().ok());
    let stat = read("memory.stat").unwrap_or_default();
    let oom = read("memory.oom_control").unwrap_or_default();
    CgroupMemory {
        usage_bytes: number("memory.usage_in_bytes"),
        peak_bytes: number("memory.max_usage_in_bytes"),
        limit_bytes: number("memory.limit_in_bytes").filter(|&l| l < V1_UNLIMITED),
        high_bytes: None,
        anon_bytes: keyed(&stat, "total_rss").or_else(|| keyed(&stat, "rss")),
        file_bytes: keyed(&stat, "total_cache").or_else(|| keyed(&stat, "cache")),
        kernel_bytes: number("memory.kmem.usage_in_bytes"),
        slab_bytes: None,
        sock_bytes: number("memory.kmem.tcp.usage_in_bytes"),
        events: CgroupEvents {
            high: None,
            max: number("memory.failcnt"),
            oom: None,
            oom_kill: keyed(&oom, "oom_kill"),
        },
        pressure: None,
        pressure_scope: String::new(),
    }
}

/// The numbers of a v2 cgroup (none where the memory controller is not enabled for it).
fn memory_v2(read: &dyn Fn(&str) -> Option<String>) -> CgroupMemory {
    let limit = |name: &str| read(name).and_then(|s| s.trim().parse::<u64>().ok());
    let stat = read("memory.stat").unwrap_or_default();
    let events = read("memory.events").unwrap_or_default();
    let has_events = !events.is_empty();
    let event = |k: &str| keyed(&events, k).or(has_events.then_some(0));
    CgroupMemory {
        usage_bytes: limit("memory.current"),
        peak_bytes: limit("memory.peak"),
        // "max" does not parse: unlimited.
        limit_bytes: limit("memory.max"),
        high_bytes: limit("memory.high"),
        anon_bytes: keyed(&stat, "anon"),
        file_bytes: keyed(&stat, "file"),
        kernel_bytes: keyed(&stat, "kernel"),
        slab_bytes: keyed(&stat, "slab"),
        sock_bytes: keyed(&stat, "sock"),
        events: CgroupEvents {
            high: event("high"),
            max: event("max"),
            oom: event("oom"),
            oom_kill: event("oom_kill"),
        },
        pressure: None,
        pressure_scope: String::new(),
    }
}

/// The value of `key` in a `key value` per line file (`memory.stat`, `memory.events`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// A PSI file: `some avg10=.. avg60=.. avg300=.. total=..` and the same for `full`.
pub fn parse_pressure(text: &str) -> Option<Pressure> {
    let line = |kind: &str| -> Option<(f64, f64, u64)> {
        let rest = text.lines().find_map(|l| l.strip_prefix(kind))?;
        let field = |name: &str| {
            rest.split_whitespace()
                .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
        };
        Some((
            field("avg10")?.parse().ok()?,
            field("avg60")?.parse().ok()?,
            field("total")?.parse().ok()?,
        ))
    };
    let (some_avg10, some_avg60, some_total_us) = line("some ")?;
    // `full` is missing from the machine's CPU file only; memory has both.
    let (full_avg10, full_avg60, full_total_us) = line("full ").unwrap_or_default();
    Some(Pressure {
        some_avg10,
        some_avg60,
        some_total_us,
        full_avg10,
        full_avg60,
        full_total_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(files: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            files
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| t.to_string())
        }
    }

    #[test]
    fn v1_numbers_come_from_its_own_files() {
        let m = memory_v1(&reader(&[
            ("memory.usage_in_bytes", "67100672\n"),
            ("memory.max_usage_in_bytes", "67108864\n"),
            ("memory.limit_in_bytes", "67108864\n"),
            ("memory.failcnt", "412\n"),
            (
                "memory.stat",
                "cache 4096\nrss 100\ntotal_cache 8192\ntotal_rss 66060288\n",
            ),
            ("memory.kmem.usage_in_bytes", "1040384\n"),
            ("memory.kmem.tcp.usage_in_bytes", "0\n"),
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
            ),
        ]));
        assert_eq!(m.usage_bytes, Some(67_100_672));
        assert_eq!(m.peak_bytes, Some(64 << 20));
        assert_eq!(m.limit_bytes, Some(64 << 20));
        assert_eq!(m.anon_bytes, Some(66_060_288));
        assert_eq!(m.file_bytes, Some(8192));
        assert_eq!(m.kernel_bytes, Some(1_040_384));
        assert_eq!(m.sock_bytes, Some(0));
        assert_eq!(m.events.max, Some(412));
        assert_eq!(m.events.oom_kill, Some(1));
        assert_eq!(m.events.high, None);
        let unlimited = memory_v1(&reader(&[(
            "memory.limit_in_bytes",
            "9223372036854771712\n",
        )]));
        assert_eq!(unlimited.limit_bytes, None);
    }

    #[test]
    fn v2_numbers_and_a_controller_not_enabled() {
        let m = memory_v2(&reader(&[
            ("memory.current", "5242880\n"),
            ("memory.max", "max\n"),
            ("memory.high", "4194304\n"),
            (
                "memory.stat",
                "anon 4194304\nfile 1048576\nkernel 65536\nslab 32768\nsock 4096\n",
            ),
            (
                "memory.events",
                "low 0\nhigh 7\nmax 2\noom 1\noom_kill 1\noom_group_kill 0\n",
            ),
        ]));
        assert_eq!(m.usage_bytes, Some(5 << 20));
        assert_eq!(m.limit_bytes, None);
        assert_eq!(m.high_bytes, Some(4 << 20));
        assert_eq!(
            (
                m.anon_bytes,
                m.file_bytes,
                m.kernel_bytes,
                m.slab_bytes,
                m.sock_bytes
            ),
            (
                Some(4 << 20),
                Some(1 << 20),
                Some(65536),
                Some(32768),
                Some(4096)
            )
        );
        assert_eq!(
            m.events,
            CgroupEvents {
                high: Some(7),
                max: Some(2),
                oom: Some(1),
                oom_kill: Some(1)
            }
        );
        let none = memory_v2(&reader(&[]));
        assert_eq!(none, CgroupMemory::default());
    }

    #[test]
    fn pressure_lines() {
        let p = parse_pressure(
            "some avg10=21.50 avg60=3.25 avg300=0.00 total=123456\n\
             full avg10=1.00 avg60=0.50 avg300=0.00 total=789\n",
        )
        .unwrap();
        assert_eq!(
            (p.some_avg10, p.some_avg60, p.some_total_us),
            (21.5, 3.25, 123_456)
        );
        assert_eq!(
            (p.full_avg10, p.full_avg60, p.full_total_us),
            (1.0, 0.5, 789)
        );
        assert!(parse_pressure("nonsense").is_none());
    }

    #[test]
    fn a_directory_that_is_no_cgroup_is_refused() {
        let err = Cgroup::open(Path::new("/tmp")).unwrap_err();
        assert!(matches!(err, CgroupError::NotCgroup(_)), "{err}");
        let err = Cgroup::open(Path::new("/nonexistent/cg")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cg"), "{err}");
    }
}

/// `--on-pressure`: a snapshot when memory pressure crosses a threshold, such as
/// `some avg10>20` (percent of the last 10 s in which some task waited for memory).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PressureTrigger {
    /// `full`: all tasks waited at once; else `some`.
    pub full: bool,
    /// `avg60`; else `avg10`.
    pub avg60: bool,
    pub above: f64,
}

impl std::str::FromStr for PressureTrigger {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{s:?}: expected KIND WINDOW>PERCENT, KIND `some` or `full`, WINDOW `avg10` or \
                 `avg60`, such as 'some avg10>20'"
            )
        };
        let (kind, rest) = s.trim().split_once(char::is_whitespace).ok_or_else(bad)?;
        let (window, above) = rest.trim().split_once('>').ok_or_else(bad)?;
        let full = match kind {
            "some" => false,
            "full" => true,
            _ => return Err(bad()),
        };
        let avg60 = match window.trim() {
            "avg10" => false,
            "avg60" => true,
            _ => return Err(bad()),
        };
        let above: f64 = above.trim().parse().map_err(|_| bad())?;
        if !(0.0..100.0).contains(&above) {
            return Err(format!("{s:?}: the threshold is a percentage below 100"));
        }
        Ok(PressureTrigger { full, avg60, above })
    }
}

impl PressureTrigger {
    /// The value it watches in `p`.
    pub fn value(&self, p: &Pressure) -> f64 {
        match (self.full, self.avg60) {
            (false, false) => p.some_avg10,
            (false, true) => p.some_avg60,
            (true, false) => p.full_avg10,
            (true, true) => p.full_avg60,
        }
    }

    /// As the user wrote it.
    pub fn name(&self) -> String {
        format!(
            "{} {}>{}",
            if self.full { "full" } else { "some" },
            if self.avg60 { "avg60" } else { "avg10" },
            self.above
        )
    }
}

/// Memory pressure now: `file`'s when given, else the cgroup's own where it keeps one (v2),
/// else the machine's.
pub fn pressure_now(file: Option<&Path>, cgroup: Option<&Cgroup>) -> Option<Pressure> {
    if let Some(file) = file {
        return fs::read_to_string(file)
            .ok()
            .and_then(|p| parse_pressure(&p));
    }
    cgroup
        .filter(|c| c.version == 2)
        .and_then(|c| fs::read_to_string(c.path.join("memory.pressure")).ok())
        .and_then(|p| parse_pressure(&p))
        .or_else(|| {
            fs::read_to_string("/proc/pressure/memory")
                .ok()
                .and_then(|p| parse_pressure(&p))
        })
}

#[cfg(test)]
mod trigger_tests {
    use super::*;

    #[test]
    fn pressure_triggers_parse_and_pick_their_value() {
        let t: PressureTrigger = "some avg10>20".parse().unwrap();
        assert_eq!(
            t,
            PressureTrigger {
                full: false,
                avg60: false,
                above: 20.0
            }
        );
        let p = Pressure {
            some_avg10: 1.0,
            some_avg60: 2.0,
            full_avg10: 3.0,
            full_avg60: 4.0,
            ..Pressure::default()
        };
        assert_eq!(t.value(&p), 1.0);
        let t: PressureTrigger = "full  avg60 > 5.5".parse().unwrap();
        assert_eq!((t.value(&p), t.above), (4.0, 5.5));
        assert_eq!(t.name(), "full avg60>5.5");
        for bad in [
            "some",
            "some avg300>1",
            "most avg10>1",
            "some avg10>x",
            "some avg10>150",
        ] {
            assert!(bad.parse::<PressureTrigger>().is_err(), "{bad}");
        }
    }
}
