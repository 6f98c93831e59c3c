//! Leak suspects: sites whose live bytes keep growing over the run while their old blocks stay
//! alive.
//!
//! One step up is not a trend, and a cache that fills and then holds steady is not a leak. A
//! site is a suspect when, over the points of its life (from its first live byte, see
//! [`SiteTrend`](crate::aggregate::trend::SiteTrend)):
//! - its live bytes rise with time as a rank order (Spearman's ρ at least [`MIN_RHO`]), which
//!   no single jump or outlier makes;
//! - the robust slope (Theil–Sen: the median of the slopes between every two points) is
//!   positive, and over the second half of its life still at least [`LATE_SLOPE`] of the whole:
//!   a plateau's late slope is zero;
//! - at least [`MIN_OLD`] of its live bytes were allocated in the first half of its life: a
//!   queue that grows but recycles its blocks is not leaking them;
//! - it grew by at least [`MIN_GROWTH`] bytes.

use serde::Serialize;

use crate::symbolize::Stack;

pub const MIN_POINTS: usize = 6;
pub const MIN_RHO: f64 = 0.8;
pub const LATE_SLOPE: f64 = 0.3;
pub const MIN_OLD: f64 = 0.2;
pub const MIN_GROWTH: u64 = 1024;
/// Points of a suspect's growth chart.
const CHART_POINTS: usize = 32;

/// Quantiles of the ages of a suspect's live blocks, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Ages {
    pub min: f64,
    pub p25: f64,
    pub median: f64,
    pub p75: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeakSuspect {
    pub stack: Stack,
    /// Live bytes at the end.
    pub live_bytes: u64,
    /// Live blocks at the end (seen ones: with sampling, the sampled blocks).
    pub live_blocks: u64,
    /// The robust growth rate of live bytes over the site's life.
    pub growth_bytes_per_min: f64,
    /// Spearman's rank correlation of live bytes with time.
    pub rank_correlation: f64,
    /// Of the live bytes, those allocated in the first half of the site's life.
    pub old_live_bytes: u64,
    /// How old the live blocks are.
    pub age_ms: Ages,
    /// (milliseconds since the first point, live bytes): the growth chart.
    pub points: Vec<(f64, u64)>,
}

/// The verdict on one site: its series of live bytes at `times`, and its live blocks as
/// (allocation time, bytes), all CLOCK_MONOTONIC ns. `None`: not a suspect.
pub fn judge(times: &[u64], series: &[u64], blocks: &[(u64, u64)], now_ns: u64) -> Option<Verdict> {
    let start = series.iter().position(|&b| b > 0)?;
    let (t, v) = (
        &times[start..],
        &series[start..series.len().min(times.len())],
    );
    let n = v.len();
    if n < MIN_POINTS || blocks.is_empty() {
        return None;
    }
    let growth = v[n - 1].saturating_sub(v[0]);
    if growth < MIN_GROWTH {
        return None;
    }
    let rho = spearman(v);
    if rho < MIN_RHO {
        return None;
    }
    let slope = theil_sen(t, v);
    let late = theil_sen(&t[n / 2..], &v[n / 2..]);
    if slope <= 0.0 || late < LATE_SLOPE * slope {
        return None;
    }
    let middle = t[n / 2];
    let all = blocks.iter().fold(0u64, |a, &(_, b)| a.saturating_add(b));
    let old = blocks
        .iter()
        .filter(|&&(ts, _)| ts < middle)
        .fold(0u64, |a, &(_, b)| a.saturating_add(b));
    let old_fraction = old as f64 / all.max(1) as f64;
    if old_fraction < MIN_OLD {
        return None;
    }
    let mut ages: Vec<f64> = blocks
        .iter()
        .map(|&(ts, _)| now_ns.saturating_sub(ts) as f64 / 1e6)
        .collect();
    ages.sort_by(f64::total_cmp);
    let q = |p: f64| ages[((ages.len() - 1) as f64 * p).round() as usize];
    let step = n.div_ceil(CHART_POINTS).max(1);
    let mut points: Vec<(f64, u64)> = (0..n)
        .step_by(step)
        .map(|i| ((t[i] - t[0]) as f64 / 1e6, v[i]))
        .collect();
    if (n - 1) % step != 0 {
        points.push(((t[n - 1] - t[0]) as f64 / 1e6, v[n - 1]));
    }
    Some(Verdict {
        growth_bytes_per_min: slope * 60e9,
        rank_correlation: rho,
        old_fraction,
        live_blocks: blocks.len() as u64,
        age_ms: Ages {
            min: q(0.0),
            p25: q(0.25),
            median: q(0.5),
            p75: q(0.75),
            max: q(1.0),
        },
        points,
    })
}

/// What [`judge`] found of a suspect.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub growth_bytes_per_min: f64,
    pub rank_correlation: f64,
    pub old_fraction: f64,
    pub live_blocks: u64,
    pub age_ms: Ages,
    pub points: Vec<(f64, u64)>,
}

/// Ranks, ties sharing their mean rank.
fn ranks(v: &[u64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by_key(|&i| v[i]);
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0;
        for &k in &order[i..=j] {
            r[k] = mean;
        }
        i = j + 1;
    }
    r
}

/// Spearman's ρ of `v` against its position (time is strictly increasing).
fn spearman(v: &[u64]) -> f64 {
    let rv = ranks(v);
    let n = v.len() as f64;
    let mean = (n - 1.0) / 2.0;
    let (mut cov, mut var_t, mut var_v) = (0.0, 0.0, 0.0);
    for (i, &r) in rv.iter().enumerate() {
        let (a, b) = (i as f64 - mean, r - mean);
        cov += a * b;
        var_t += a * a;
        var_v += b * b;
    }
    if var_v == 0.0 {
        return 0.0;
    }
    cov / (var_t * var_v).sqrt()
}

/// The Theil–Sen slope: the median of the slopes between every two points (bytes per ns).
fn theil_sen(t: &[u64], v: &[u64]) -> f64 {
    let mut slopes = Vec::with_capacity(t.len() * t.len() / 2);
    for i in 0..t.len() {
        for j in i + 1..t.len() {
            if t[j] > t[i] {
                slopes.push((v[j] as f64 - v[i] as f64) / (t[j] - t[i]) as f64);
            }
        }
    }
    if slopes.is_empty() {
        return 0.0;
    }
    slopes.sort_by(f64::total_cmp);
    let m = slopes.len() / 2;
    if slopes.len() % 2 == 1 {
        slopes[m]
    } else {
        (slopes[m - 1] + slopes[m]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    /// 60 points a second apart; blocks of 100 bytes allocated at the given seconds.
    fn times() -> Vec<u64> {
        (0..60).map(|i| 10 * S + i * S).collect()
    }

    fn blocks(at: impl Iterator<Item = u64>) -> Vec<(u64, u64)> {
        at.map(|s| (10 * S + s * S, 100)).collect()
    }

    #[test]
    fn a_steady_leak_is_a_suspect_with_its_rate() {
        // 100 bytes a second, never freed: 6,000 bytes a minute.
        let series: Vec<u64> = (0..60).map(|i| 100 * (i + 1)).collect();
        let v = judge(&times(), &series, &blocks(0..60), 70 * S).unwrap();
        assert!((v.growth_bytes_per_min - 6000.0).abs() < 1e-6, "{v:?}");
        assert!(v.rank_correlation > 0.999);
        assert_eq!(v.live_blocks, 60);
        assert!((v.old_fraction - 0.5).abs() < 0.02, "{}", v.old_fraction);
        // Ages from 1 s (the newest) to 60 s (the first).
        assert_eq!(v.age_ms.min, 1_000.0);
        assert_eq!(v.age_ms.max, 60_000.0);
        assert_eq!(v.age_ms.median, 31_000.0);
        assert!(v.points.len() <= CHART_POINTS + 1);
        assert_eq!(v.points[0], (0.0, 100));
        assert_eq!(*v.points.last().unwrap(), (59_000.0, 6000));
    }

    #[test]
    fn a_cache_that_plateaus_is_not() {
        // Grows for 20 s, then holds 2,000 bytes.
        let series: Vec<u64> = (0..60).map(|i| 100 * (i + 1).min(20)).collect();
        assert_eq!(judge(&times(), &series, &blocks(0..20), 70 * S), None);
    }

    #[test]
    fn one_step_is_not_a_trend() {
        let series: Vec<u64> = (0..60).map(|i| if i < 30 { 100 } else { 5000 }).collect();
        assert_eq!(judge(&times(), &series, &blocks(0..50), 70 * S), None);
    }

    #[test]
    fn a_growing_queue_that_recycles_its_blocks_is_not() {
        let series: Vec<u64> = (0..60).map(|i| 100 * (i + 1)).collect();
        // Every live block is recent.
        assert_eq!(judge(&times(), &series, &blocks(50..60), 70 * S), None);
    }

    #[test]
    fn noise_around_a_rise_still_counts_and_tiny_growth_does_not() {
        let series: Vec<u64> = (0..60)
            .map(|i| 10_000 + 200 * i + if i % 3 == 0 { 300 } else { 0 })
            .collect();
        let v = judge(&times(), &series, &blocks(0..60), 70 * S).unwrap();
        assert!((v.growth_bytes_per_min - 12_000.0).abs() < 1_000.0, "{v:?}");
        let flat: Vec<u64> = (0..60).map(|i| 10_000 + i * 10).collect();
        assert_eq!(judge(&times(), &flat, &blocks(0..60), 70 * S), None);
        // Too few points to tell.
        assert_eq!(
            judge(&times()[..5], &series[..5], &blocks(0..5), 70 * S),
            None
        );
    }

    #[test]
    fn ranks_share_ties() {
        assert_eq!(ranks(&[5, 1, 5, 3]), [2.5, 0.0, 2.5, 1.0]);
        assert!((spearman(&[1, 2, 3, 4]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[4, 3, 2, 1]) + 1.0).abs() < 1e-12);
        assert_eq!(spearman(&[7, 7, 7]), 0.0);
    }
}
