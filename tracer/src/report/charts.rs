//! SVG charts of a summary, drawn with plotters into strings.

use anyhow::{Result, anyhow};
use plotters::{coord::ranged1d::SegmentValue, prelude::*};

use super::{Summary, human_bytes};
use crate::aggregate::timeline::Sample;

const MIB: f64 = 1024.0 * 1024.0;
const BRK: RGBColor = RGBColor(76, 114, 176);
const MMAP: RGBColor = RGBColor(221, 132, 82);
const ARENA: RGBColor = RGBColor(85, 168, 104);
const BUDDY: RGBColor = RGBColor(196, 78, 82);
const SLAB: RGBColor = RGBColor(129, 114, 179);
const RESIDENT: RGBColor = RGBColor(140, 140, 140);

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e:?}")
}

/// All four charts, as (file stem, title, SVG).
pub fn all(s: &Summary) -> Result<Vec<(&'static str, &'static str, String)>> {
    Ok(vec![
        ("timeline", "Memory over time", timeline(s)?),
        ("paths", "Bytes per path for the top call sites", paths(s)?),
        ("sizes", "Allocation sizes", sizes(s)?),
        (
            "kernel",
            "Buddy pages by order and the top slab caches",
            kernel(s)?,
        ),
    ])
}

/// Live heap inside mapped memory inside resident memory, with the kernel's slab and buddy
/// memory charged to the process, over time; ticks at the bottom mark brk, mmap and munmap.
pub fn timeline(s: &Summary) -> Result<String> {
    let points = &s.timeline.points;
    let max_t = points.last().map_or(1.0, |p| p.t_ms).max(0.001);
    let max_y = points
        .iter()
        .map(|p| {
            let x = &p.sample;
            x.mapped
                .max(x.resident)
                .max(x.live_heap)
                .max(x.slab.saturating_add(x.buddy))
        })
        .max()
        .unwrap_or(0) as f64
        / MIB;
    let max_y = (max_y * 1.1).max(0.01);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Memory over time", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..max_t, 0f64..max_y)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("time since the first event (ms)")
            .y_desc("MiB")
            .draw()
            .map_err(err)?;
        let series = |f: fn(&Sample) -> u64| {
            points
                .iter()
                .map(move |p| (p.t_ms, f(&p.sample) as f64 / MIB))
        };
        chart
            .draw_series(
                AreaSeries::new(series(|x| x.mapped), 0.0, BRK.mix(0.15)).border_style(BRK),
            )
            .map_err(err)?
            .label("mapped (brk heap, anonymous mmap, thread arenas)")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], BRK.mix(0.4).filled()));
        chart
            .draw_series(
                AreaSeries::new(series(|x| x.resident), 0.0, RESIDENT.mix(0.25))
                    .border_style(RESIDENT),
            )
            .map_err(err)?
            .label("resident (first touched while tracing)")
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 5), (x + 12, y + 5)], RESIDENT.mix(0.5).filled())
            });
        chart
            .draw_series(LineSeries::new(
                series(|x| x.live_heap),
                MMAP.stroke_width(2),
            ))
            .map_err(err)?
            .label("live heap (allocated, not freed)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], MMAP.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(
                series(|x| x.slab.saturating_add(x.buddy)),
                BUDDY.stroke_width(1),
            ))
            .map_err(err)?
            .label("kernel: slab objects + buddy pages held")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], BUDDY));
        let tick = max_y * 0.04;
        for (kind, color) in [("brk", BRK), ("mmap", ARENA), ("munmap", SLAB)] {
            chart
                .draw_series(
                    s.timeline
                        .markers
                        .iter()
                        .filter(|m| m.kind == kind)
                        .map(|m| {
                            PathElement::new(
                                vec![(m.t_ms, 0.0), (m.t_ms, tick)],
                                color.stroke_width(2),
                            )
                        }),
                )
                .map_err(err)?
                .label(format!("{kind} call"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x + 6, y - 5), (x + 6, y + 5)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// A short label for a site: its first frame's function.
fn site_label(stack: &[crate::symbolize::Frame]) -> String {
    let name = stack
        .first()
        .map(crate::symbolize::Frame::name)
        .unwrap_or_else(|| "(no stack)".into());
    let name = super::visible(&name).into_owned();
    if name.chars().count() > 40 {
        format!("{}...", name.chars().take(37).collect::<String>())
    } else {
        name
    }
}

/// Horizontal bars, one per entry, stacked from layers of (value, color), in their own SVG.
fn stacked_bars(
    title: &str,
    x_desc: &str,
    labels: &[String],
    rows: &[Vec<(f64, RGBColor)>],
    legend: &[(&str, RGBColor)],
    size: (u32, u32),
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        bars_on(&root, title, x_desc, labels, rows, legend, 260)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Draws stacked horizontal bars on `area`; the first entry at the top.
fn bars_on<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_desc: &str,
    labels: &[String],
    rows: &[Vec<(f64, RGBColor)>],
    legend: &[(&str, RGBColor)],
    label_width: u32,
) -> Result<()> {
    let n = labels.len().max(1) as u32;
    // Rows are drawn bottom up.
    let row_of = |i: usize| n - 1 - i as u32;
    let max = rows
        .iter()
        .map(|r| r.iter().map(|(v, _)| v).sum::<f64>())
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.05;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(label_width)
        .build_cartesian_2d(0f64..max, (0u32..n).into_segmented())
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_labels(5)
        .x_desc(x_desc)
        .y_labels(n as usize)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) if *i < n => labels
                .get((n - 1 - i) as usize)
                .cloned()
                .unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(err)?;
    for (i, row) in rows.iter().enumerate() {
        let mut x0 = 0.0;
        let bars: Vec<Rectangle<(f64, SegmentValue<u32>)>> = row
            .iter()
            .filter(|(v, _)| *v > 0.0)
            .map(|(v, color)| {
                let r = Rectangle::new(
                    [
                        (x0, SegmentValue::Exact(row_of(i))),
                        (x0 + v, SegmentValue::Exact(row_of(i) + 1)),
                    ],
                    color.filled(),
                );
                x0 += v;
                r
            })
            .collect();
        chart.draw_series(bars).map_err(err)?;
    }
    for (name, color) in legend {
        let color = *color;
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, SegmentValue<u32>)>>())
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    if !legend.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// Bytes per path (brk heap, mmap, thread arena) and the kernel memory charged (buddy pages,
/// slab objects), for the top call sites.
pub fn paths(s: &Summary) -> Result<String> {
    let sites: Vec<_> = s.user.sites.iter().take(12).collect();
    let labels: Vec<String> = sites.iter().map(|x| site_label(&x.stack)).collect();
    let rows: Vec<Vec<(f64, RGBColor)>> = sites
        .iter()
        .map(|x| {
            let p = &x.paths;
            vec![
                (p.brk_bytes as f64 / MIB, BRK),
                (p.mmap_bytes as f64 / MIB, MMAP),
                (p.thread_arena_bytes as f64 / MIB, ARENA),
                ((p.buddy_pages * 4096) as f64 / MIB, BUDDY),
                (p.slab_bytes as f64 / MIB, SLAB),
            ]
        })
        .collect();
    stacked_bars(
        "Bytes per path for the top call sites",
        "MiB",
        &labels,
        &rows,
        &[
            ("brk heap", BRK),
            ("mmap", MMAP),
            ("thread arena", ARENA),
            ("buddy pages", BUDDY),
            ("slab objects", SLAB),
        ],
        (960, 120 + 36 * labels.len().max(1) as u32),
    )
}

/// The allocation size histogram, power-of-two buckets.
pub fn sizes(s: &Summary) -> Result<String> {
    let buckets = &s.user.size_histogram;
    let labels: Vec<String> = buckets
        .iter()
        .map(|b| format!("<= {}", human_bytes(b.le)))
        .collect();
    let rows: Vec<Vec<(f64, RGBColor)>> = buckets
        .iter()
        .map(|b| vec![(b.count as f64, BRK)])
        .collect();
    stacked_bars(
        "Allocation sizes (requests per power-of-two bucket)",
        "allocations",
        &labels,
        &rows,
        &[],
        (960, 120 + 24 * labels.len().max(1) as u32),
    )
}

/// Buddy blocks by order, and the slab caches with the most objects, side by side.
pub fn kernel(s: &Summary) -> Result<String> {
    let b = &s.kernel.buddy;
    let orders: Vec<String> = b.by_order.keys().map(|o| format!("order {o}")).collect();
    let order_rows: Vec<Vec<(f64, RGBColor)>> = b
        .by_order
        .values()
        .map(|&n| vec![(n as f64, BUDDY)])
        .collect();
    let mut caches: Vec<_> = s.kernel.slab.by_cache.iter().collect();
    caches.sort_by_key(|(name, c)| (std::cmp::Reverse(c.allocs), (*name).clone()));
    caches.truncate(12);
    let cache_names: Vec<String> = caches
        .iter()
        .map(|(name, _)| super::visible(name).into_owned())
        .collect();
    let cache_rows: Vec<Vec<(f64, RGBColor)>> = caches
        .iter()
        .map(|(_, c)| vec![(c.allocs as f64, SLAB)])
        .collect();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 460)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (left, right) = root.split_horizontally(400);
        bars_on(
            &left,
            "Buddy blocks by order",
            "blocks",
            &orders,
            &order_rows,
            &[],
            80,
        )?;
        bars_on(
            &right,
            "Slab objects by cache",
            "objects",
            &cache_names,
            &cache_rows,
            &[],
            180,
        )?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}
