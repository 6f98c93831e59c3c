//! `--fail-if`: conditions on a run's numbers (or on their change between two runs) that make
//! the exit status fail, for CI.
//!
//! Grammar: `METRIC OP VALUE`, spaces allowed, where
//! - `METRIC` is one of [`METRICS`];
//! - `OP` is `>`, `>=`, `<`, `<=` or `==`;
//! - `VALUE` is a number with an optional `K`, `M` or `G` (powers of 1024) — the metric's
//!   value in the run (or, in `tracer diff`, in AFTER); or a change from BEFORE (`tracer diff`
//!   only): `+N`/`-N` (AFTER minus BEFORE) or `+N%`/`-N%` (relative to BEFORE).
//!
//! Examples: `lost_bytes>0`, `leaked_bytes>0`, `live_bytes>+10%`, `allocs>+5%`, `peak_live_bytes>=64M`,
//! `mmap_bytes>+1M`.

use std::{collections::BTreeMap, fmt};

/// The metrics a condition can name, with what they measure.
pub const METRICS: [(&str, &str); 21] = [
    (
        "allocs",
        "allocating calls of the malloc family and operator new",
    ),
    ("bytes", "bytes those calls requested"),
    ("frees", "calls of free and operator delete"),
    ("live_bytes", "bytes in live user allocations at the end"),
    ("peak_live_bytes", "the most bytes live at once"),
    (
        "leaked_bytes",
        "bytes allocated and not freed by the end (with --min-age, old enough)",
    ),
    ("leaked_blocks", "blocks allocated and not freed by the end"),
    ("leak_suspects", "sites whose live bytes kept growing"),
    (
        "lost_bytes",
        "bytes the leak check found no pointer to (definitely lost)",
    ),
    ("lost_blocks", "blocks the leak check found no pointer to"),
    (
        "indirect_bytes",
        "bytes reached only from lost blocks (indirectly lost)",
    ),
    (
        "possible_bytes",
        "bytes reached only by pointers into their middle (possibly lost)",
    ),
    (
        "reachable_bytes",
        "bytes live at the check and still pointed to (still reachable)",
    ),
    ("brk_bytes", "allocated bytes served from the brk heap"),
    ("mmap_bytes", "allocated bytes served by dedicated mmaps"),
    (
        "thread_arena_bytes",
        "allocated bytes served from thread arenas",
    ),
    ("buddy_pages", "buddy pages the kernel gave the process"),
    (
        "slab_objects",
        "slab objects the kernel made for the process",
    ),
    ("page_faults", "user page faults"),
    (
        "memory_syscalls",
        "brk, mmap, munmap, mremap, mprotect and madvise calls",
    ),
    ("dropped_events", "events lost on the way from the kernel"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
}

impl Op {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Lt => a < b,
            Op::Le => a <= b,
            Op::Eq => a == b,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
        }
    }
}

/// What the value is compared with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// The metric itself.
    Absolute(f64),
    /// AFTER minus BEFORE.
    Change(f64),
    /// (AFTER - BEFORE) / BEFORE, in percent.
    Percent(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    pub metric: &'static str,
    pub op: Op,
    pub value: Value,
    /// As written, for messages.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    #[error("--fail-if '{text}': {problem}")]
    Syntax { text: String, problem: String },
    #[error(
        "--fail-if '{0}' compares with a baseline (+N, -N or N%): only `tracer diff BEFORE AFTER` \
         has one; a run compares its own value, as in 'leaked_bytes>0'"
    )]
    NeedsBaseline(String),
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn number(s: &str) -> Option<f64> {
    let t = s.trim();
    let (digits, mult) = match t.chars().last()? {
        'K' | 'k' => (&t[..t.len() - 1], 1024.0),
        'M' | 'm' => (&t[..t.len() - 1], 1024.0 * 1024.0),
        'G' | 'g' => (&t[..t.len() - 1], 1024.0 * 1024.0 * 1024.0),
        _ => (t, 1.0),
    };
    let n: f64 = digits.trim().parse().ok()?;
    n.is_finite().then_some(n * mult)
}

impl Gate {
    pub fn parse(text: &str) -> Result<Gate, GateError> {
        let err = |problem: String| GateError::Syntax {
            text: text.to_string(),
            problem,
        };
        let t = text.trim();
        let at = t.find(['>', '<', '=']).ok_or_else(|| {
            err("no comparison: write METRIC OP VALUE, such as leaked_bytes>0".into())
        })?;
        let (name, rest) = (t[..at].trim(), &t[at..]);
        let (op, value) = if let Some(v) = rest.strip_prefix(">=") {
            (Op::Ge, v)
        } else if let Some(v) = rest.strip_prefix("<=") {
            (Op::Le, v)
        } else if let Some(v) = rest.strip_prefix("==") {
            (Op::Eq, v)
        } else if let Some(v) = rest.strip_prefix('>') {
            (Op::Gt, v)
        } else if let Some(v) = rest.strip_prefix('<') {
            (Op::Lt, v)
        } else {
            return Err(err("the comparison is one of > >= < <= ==".into()));
        };
        let metric = METRICS
            .iter()
            .map(|(m, _)| *m)
            .find(|m| *m == name)
            .ok_or_else(|| {
                let names: Vec<&str> = METRICS.iter().map(|(m, _)| *m).collect();
                err(format!(
                    "unknown metric `{name}`; one of: {}",
                    names.join(", ")
                ))
            })?;
        let v = value.trim();
        let bad = || err(format!("`{v}` is not a number, +N, -N or N%"));
        let value = if let Some(p) = v.strip_suffix('%') {
            Value::Percent(
                p.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(bad)?,
            )
        } else if v.starts_with('+') || v.starts_with('-') {
            Value::Change(number(v).ok_or_else(bad)?)
        } else {
            Value::Absolute(number(v).ok_or_else(bad)?)
        };
        Ok(Gate {
            metric,
            op,
            value,
            text: text.trim().to_string(),
        })
    }

    /// Whether it compares with a baseline.
    pub fn relative(&self) -> bool {
        !matches!(self.value, Value::Absolute(_))
    }

    /// Whether the condition holds (the run fails): `after` are the run's metrics, `before`
    /// the baseline's (`tracer diff`). A relative condition without a baseline is an error.
    pub fn holds(
        &self,
        before: Option<&BTreeMap<&'static str, f64>>,
        after: &BTreeMap<&'static str, f64>,
    ) -> Result<Verdict, GateError> {
        let a = after.get(self.metric).copied().unwrap_or(0.0);
        let (observed, limit, shown) = match (self.value, before) {
            (Value::Absolute(n), _) => (a, n, format!("{} = {a}", self.metric)),
            (_, None) => return Err(GateError::NeedsBaseline(self.text.clone())),
            (Value::Change(n), Some(b)) => {
                let b = b.get(self.metric).copied().unwrap_or(0.0);
                (
                    a - b,
                    n,
                    format!("{} went from {b} to {a} ({:+})", self.metric, a - b),
                )
            }
            (Value::Percent(p), Some(b)) => {
                let b = b.get(self.metric).copied().unwrap_or(0.0);
                let pct = if b == 0.0 {
                    if a == 0.0 { 0.0 } else { f64::INFINITY }
                } else {
                    (a - b) / b * 100.0
                };
                (
                    pct,
                    p,
                    format!("{} went from {b} to {a} ({pct:+.1}%)", self.metric),
                )
            }
        };
        Ok(Verdict {
            failed: self.op.holds(observed, limit),
            message: format!(
                "{} ({shown}; fails when {} {limit})",
                self.text,
                self.op.text()
            ),
        })
    }
}

/// The outcome of one condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub failed: bool,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&'static str, f64)]) -> BTreeMap<&'static str, f64> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn parses_the_documented_forms() {
        let g = Gate::parse("live_bytes>+10%").unwrap();
        assert_eq!(
            (g.metric, g.op, g.value),
            ("live_bytes", Op::Gt, Value::Percent(10.0))
        );
        let g = Gate::parse(" leaked_bytes > 0 ").unwrap();
        assert_eq!((g.op, g.value), (Op::Gt, Value::Absolute(0.0)));
        assert!(!g.relative());
        assert_eq!(
            Gate::parse("peak_live_bytes>=64M").unwrap().value,
            Value::Absolute(64.0 * 1048576.0)
        );
        assert_eq!(
            Gate::parse("mmap_bytes<=-1K").unwrap().value,
            Value::Change(-1024.0)
        );
        assert_eq!(Gate::parse("allocs==5").unwrap().op, Op::Eq);
        assert_eq!(Gate::parse("allocs<5").unwrap().op, Op::Lt);
    }

    #[test]
    fn bad_conditions_say_what_is_wrong() {
        let e = |t: &str| Gate::parse(t).unwrap_err().to_string();
        assert!(e("leaked_bytes").contains("no comparison"));
        assert!(e("leaks>0").contains("unknown metric `leaks`; one of: allocs"));
        assert!(e("allocs>lots").contains("`lots` is not a number"));
        assert!(e("allocs=>5").contains("one of > >= < <= =="));
        assert!(e("allocs>5%%").contains("not a number"));
    }

    #[test]
    fn evaluates_against_the_run_and_the_baseline() {
        let before = m(&[
            ("live_bytes", 1000.0),
            ("allocs", 100.0),
            ("leaked_bytes", 0.0),
        ]);
        let after = m(&[
            ("live_bytes", 1200.0),
            ("allocs", 104.0),
            ("leaked_bytes", 64.0),
        ]);
        let check = |t: &str| {
            Gate::parse(t)
                .unwrap()
                .holds(Some(&before), &after)
                .unwrap()
                .failed
        };
        assert!(check("live_bytes>+10%"));
        assert!(!check("live_bytes>+20%"));
        assert!(!check("allocs>+5%"));
        assert!(check("allocs>+3"));
        assert!(check("leaked_bytes>0"));
        assert!(!check("live_bytes<-1%"));
        // From zero, any growth is infinitely many percent.
        assert!(check("leaked_bytes>+1000%"));
        let v = Gate::parse("live_bytes>+10%")
            .unwrap()
            .holds(Some(&before), &after)
            .unwrap();
        assert!(
            v.message.contains("from 1000 to 1200 (+20.0%)"),
            "{}",
            v.message
        );
        // A live run has no baseline.
        let g = Gate::parse("live_bytes>+10%").unwrap();
        assert!(matches!(
            g.holds(None, &after),
            Err(GateError::NeedsBaseline(_))
        ));
        assert!(
            Gate::parse("leaked_bytes>0")
                .unwrap()
                .holds(None, &after)
                .unwrap()
                .failed
        );
    }
}
