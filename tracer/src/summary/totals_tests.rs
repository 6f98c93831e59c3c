//! The totals of processes: a timeline summed over processes that come and go, findings named
//! by their process.

use super::*;
use crate::{
    aggregate::timeline::Marker,
    summary::{
        findings::{Finding, FindingKind},
        tests::sample_summary,
    },
};

fn point(t_ms: f64, live_heap: u64) -> Point {
    Point {
        t_ms,
        sample: Sample {
            live_heap,
            ..Sample::default()
        },
    }
}

fn process(pid: u32, started_ms: f64, ended_ms: Option<f64>, points: Vec<Point>) -> ProcessReport {
    let mut summary = sample_summary();
    summary.timeline = Timeline::from_parts(
        points,
        vec![Marker {
            t_ms: 1.0,
            kind: "mmap",
            bytes: 4096,
        }],
        0,
    );
    ProcessReport {
        pid,
        ppid: None,
        command: vec![],
        exit_code: None,
        signal: None,
        started_ms,
        ended_ms,
        summary,
    }
}

#[test]
fn the_timeline_sums_the_processes_running_at_each_moment() {
    let a = process(1, 0.0, None, vec![point(0.0, 10), point(10.0, 10)]);
    // Starts 5 ms in, its own times count from then; gone at 8 ms.
    let b = process(2, 5.0, Some(8.0), vec![point(0.0, 20), point(2.0, 30)]);
    let (timeline, peak) = merge_timelines(&[a, b]);
    let got: Vec<(f64, u64)> = timeline
        .points
        .iter()
        .map(|p| (p.t_ms, p.sample.live_heap))
        .collect();
    assert_eq!(
        got,
        [(0.0, 10), (5.0, 30), (7.0, 40), (8.0, 10), (10.0, 10)]
    );
    assert_eq!(peak, 40);
    // Each process's marker, in the first process's time.
    let markers: Vec<f64> = timeline.markers.iter().map(|m| m.t_ms).collect();
    assert_eq!(markers, [1.0, 6.0]);
}

#[test]
fn findings_are_named_by_their_process_most_bytes_first() {
    let finding = |kind: FindingKind, bytes: u64| Finding {
        kind,
        severity: "high",
        bytes,
        site: Default::default(),
        evidence: serde_json::Value::Null,
        message: String::new(),
        suggestion: String::new(),
        also: Vec::new(),
        more: 0,
        pid: None,
        peak: 0,
    };
    let mut a = process(1, 0.0, None, vec![point(0.0, 1)]);
    a.summary.findings = vec![finding(FindingKind::Leak, 100)];
    let mut b = process(2, 1.0, None, vec![point(0.0, 1)]);
    b.summary.findings = vec![
        finding(FindingKind::MmapChurn, 5000),
        finding(FindingKind::Leak, 10),
    ];
    let t = total(&[a, b], 10);
    let got: Vec<(&str, u64, Option<u32>)> = t
        .findings
        .iter()
        .map(|f| (f.kind.name(), f.bytes, f.pid))
        .collect();
    assert_eq!(
        got,
        [
            ("mmap_churn", 5000, Some(2)),
            ("leak", 100, Some(1)),
            ("leak", 10, Some(2))
        ]
    );
    // Counts add: the sample summary's syscalls twice.
    assert_eq!(t.syscalls.mmap.calls, 4);
    assert_eq!(t.events.received, 12);
}
