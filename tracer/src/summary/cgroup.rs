//! `--cgroup`: the cgroup's own numbers in words, for the reports for people.

use super::{CgroupFacts, CgroupMemory, human_bytes, visible};

/// The cgroup in a few lines: where, its use against its limit, what the use is made of, its
/// events and pressure. Numbers the kernel does not keep there are left out.
pub fn lines(c: &CgroupFacts) -> Vec<String> {
    let m = &c.memory;
    let count = c.processes.len();
    let plural = if count == 1 { "" } else { "es" };
    let mut head = format!(
        "cgroup {} (v{}, {count} process{plural} in it now)",
        visible(&c.path),
        c.version
    );
    if let Some(usage) = m.usage_bytes {
        head.push_str(&format!(": {} used", human_bytes(usage)));
        if let Some(limit) = m.limit_bytes.filter(|&l| l > 0) {
            let share = usage as f64 * 100.0 / limit as f64;
            head.push_str(&format!(" of a {} limit ({share:.0}%)", human_bytes(limit)));
        }
        // The kernel's own peak when it keeps one: samples miss the moment before a kill.
        let peak = m
            .peak_bytes
            .or_else(|| c.usage.iter().map(|&(_, b)| b).max());
        if let Some(peak) = peak {
            head.push_str(&format!(", peak {}", human_bytes(peak)));
        }
    } else {
        head.push_str(": its hierarchy does not count memory (no memory controller)");
    }
    let mut out = vec![head];
    let parts = made_of(m);
    if !parts.is_empty() {
        out.push(format!("  {}", parts.join(", ")));
    }
    let mut tail = Vec::new();
    let e = &m.events;
    let events: Vec<String> = [
        ("high", e.high),
        ("max", e.max),
        ("oom", e.oom),
        ("oom_kill", e.oom_kill),
    ]
    .into_iter()
    .filter_map(|(name, n)| Some(format!("{name} {}", n?)))
    .collect();
    if !events.is_empty() {
        tail.push(format!("events: {}", events.join(", ")));
    }
    if let Some(p) = &m.pressure {
        tail.push(format!(
            "pressure ({}): some {:.2}% of the last 10 s, {:.2}% of 60 s; full {:.2}%, {:.2}%",
            m.pressure_scope, p.some_avg10, p.some_avg60, p.full_avg10, p.full_avg60
        ));
    }
    if !tail.is_empty() {
        out.push(format!("  {}", tail.join("; ")));
    }
    out
}

/// The cgroup in one line for the live views: its use against its limit, its kills and the
/// pressure.
pub fn brief(c: &CgroupFacts) -> String {
    let m = &c.memory;
    let n = c.processes.len();
    let mut out = format!("cgroup: {n} process{}", if n == 1 { "" } else { "es" });
    if let Some(usage) = m.usage_bytes {
        out.push_str(&format!("  {} used", human_bytes(usage)));
        if let Some(limit) = m.limit_bytes.filter(|&l| l > 0) {
            out.push_str(&format!(
                " of {} ({:.0}%)",
                human_bytes(limit),
                usage as f64 * 100.0 / limit as f64
            ));
        }
    }
    for (name, n) in [
        ("high", m.events.high),
        ("max", m.events.max),
        ("oom_kill", m.events.oom_kill),
    ] {
        if let Some(n) = n.filter(|&n| n > 0) {
            out.push_str(&format!("  {name} {n}"));
        }
    }
    if let Some(p) = &m.pressure {
        out.push_str(&format!(
            "  pressure ({}) some {:.2}%",
            m.pressure_scope, p.some_avg10
        ));
    }
    out
}

/// What its use is made of, as `memory.stat` and the kmem files say.
fn made_of(m: &CgroupMemory) -> Vec<String> {
    [
        ("anon", m.anon_bytes),
        ("file", m.file_bytes),
        ("kernel", m.kernel_bytes),
        ("slab", m.slab_bytes),
        ("sock", m.sock_bytes),
    ]
    .into_iter()
    .filter_map(|(name, b)| Some(format!("{name} {}", human_bytes(b?))))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{CgroupEvents, Pressure};

    #[test]
    fn a_v1_cgroup_near_its_limit() {
        let c = CgroupFacts {
            path: "/sys/fs/cgroup/memory/app".into(),
            version: 1,
            memory: CgroupMemory {
                usage_bytes: Some(60 << 20),
                limit_bytes: Some(64 << 20),
                anon_bytes: Some(58 << 20),
                file_bytes: Some(1 << 20),
                kernel_bytes: Some(512 << 10),
                sock_bytes: Some(0),
                events: CgroupEvents {
                    max: Some(120),
                    oom_kill: Some(1),
                    ..Default::default()
                },
                pressure: Some(Pressure {
                    some_avg10: 21.5,
                    ..Default::default()
                }),
                pressure_scope: "machine".into(),
                ..Default::default()
            },
            processes: vec![10, 11, 12],
            usage: vec![(0.0, 1 << 20), (1000.0, 63 << 20), (2000.0, 60 << 20)],
        };
        assert_eq!(
            lines(&c),
            [
                "cgroup /sys/fs/cgroup/memory/app (v1, 3 processes in it now): 60.0 MiB used of a \
                 64.0 MiB limit (94%), peak 63.0 MiB",
                "  anon 58.0 MiB, file 1.0 MiB, kernel 512.0 KiB, sock 0 B",
                "  events: max 120, oom_kill 1; pressure (machine): some 21.50% of the last 10 s, \
                 0.00% of 60 s; full 0.00%, 0.00%",
            ]
        );
    }

    #[test]
    fn one_line_for_the_live_views() {
        let c = CgroupFacts {
            processes: vec![1, 2],
            memory: CgroupMemory {
                usage_bytes: Some(48 << 20),
                limit_bytes: Some(64 << 20),
                events: CgroupEvents {
                    max: Some(0),
                    oom_kill: Some(2),
                    ..Default::default()
                },
                pressure: Some(Pressure {
                    some_avg10: 1.5,
                    ..Default::default()
                }),
                pressure_scope: "cgroup".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            brief(&c),
            "cgroup: 2 processes  48.0 MiB used of 64.0 MiB (75%)  oom_kill 2  pressure (cgroup) \
             some 1.50%"
        );
    }

    #[test]
    fn a_hierarchy_without_the_memory_controller_says_so() {
        let c = CgroupFacts {
            path: "/sys/fs/cgroup/unified/app".into(),
            version: 2,
            processes: vec![10],
            ..Default::default()
        };
        assert_eq!(
            lines(&c),
            [
                "cgroup /sys/fs/cgroup/unified/app (v2, 1 process in it now): its hierarchy does \
              not count memory (no memory controller)"
            ]
        );
    }
}
