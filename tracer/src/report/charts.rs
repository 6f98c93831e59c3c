//! SVG charts of a summary, drawn with plotters into strings.

use plotters::prelude::*;

use super::{RenderError, Result};
use crate::summary::{Summary, human_bytes, label, timeline::Sample};

const MIB: f64 = 1024.0 * 1024.0;
const BRK: RGBColor = RGBColor(76, 114, 176);
const MMAP: RGBColor = RGBColor(221, 132, 82);
const ARENA: RGBColor = RGBColor(85, 168, 104);
const BUDDY: RGBColor = RGBColor(196, 78, 82);
const SLAB: RGBColor = RGBColor(129, 114, 179);
const RESIDENT: RGBColor = RGBColor(140, 140, 140);
const CGROUP: RGBColor = RGBColor(40, 40, 40);

fn err<E: std::fmt::Debug>(e: E) -> RenderError {
    RenderError::Chart(format!("{e:?}"))
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
    // `--cgroup`: the kernel's count of the cgroup's use, as sampled.
    let cgroup: &[(f64, u64)] = s.cgroup.as_ref().map_or(&[], |c| &c.usage);
    let max_t = points.last().map_or(1.0, |p| p.t_ms).max(0.001);
    let cgroup_max = cgroup.iter().map(|&(_, b)| b).max().unwrap_or(0) as f64 / MIB;
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
    let max_y = (max_y.max(cgroup_max) * 1.1).max(0.01);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 470)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, plot) = root.split_vertically(80);
        let (_, band) = top.split_vertically(34);
        top.draw(&Text::new(
            "Memory over time",
            (390, 8),
            ("sans-serif", 20).into_font(),
        ))
        .map_err(err)?;
        let mut legend = vec![
            (
                "mapped (brk heap, anonymous mmap, thread arenas)",
                BRK,
                false,
            ),
            ("resident (first touched while traced)", RESIDENT, false),
            ("live heap (allocated, not freed)", MMAP, true),
            ("kernel: slab objects + buddy pages held", BUDDY, true),
            ("brk call", BRK, true),
            ("mmap call", ARENA, true),
            ("munmap call", SLAB, true),
        ];
        if !cgroup.is_empty() {
            legend.push(("the cgroup's use (the kernel's count)", CGROUP, true));
        }
        legend_band(&band, &legend)?;
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..max_t, 0f64..max_y)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("time since the first event (ms)")
            .y_desc("MiB")
            .x_label_formatter(&|v| axis_number(*v))
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
            .map_err(err)?;
        chart
            .draw_series(
                AreaSeries::new(series(|x| x.resident), 0.0, RESIDENT.mix(0.25))
                    .border_style(RESIDENT),
            )
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                series(|x| x.live_heap),
                MMAP.stroke_width(2),
            ))
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                series(|x| x.slab.saturating_add(x.buddy)),
                BUDDY.stroke_width(1),
            ))
            .map_err(err)?;
        if !cgroup.is_empty() {
            chart
                .draw_series(LineSeries::new(
                    cgroup
                        .iter()
                        .filter(|&&(t, _)| t <= max_t)
                        .map(|&(t, b)| (t, b as f64 / MIB)),
                    CGROUP.stroke_width(2),
                ))
                .map_err(err)?;
        }
        let tick = max_y * 0.04;
        // An OOM kill is a line the chart's height: the moment everything else leads to.
        for (kind, color, tick) in [
            ("brk", BRK, tick),
            ("mmap", ARENA, tick),
            ("munmap", SLAB, tick),
            ("oom_kill", RED, max_y),
        ] {
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
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
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

/// A count or an amount for an axis: `950`, `12.5k`, `3.2M`, never `100000.0`.
pub fn axis_number(v: f64) -> String {
    let a = v.abs();
    let (n, unit) = match a {
        a if a >= 1e9 => (v / 1e9, "G"),
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e4 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    if unit.is_empty() && (n - n.round()).abs() < 1e-9 {
        format!("{}", n.round() as i64)
    } else if unit.is_empty() {
        format!("{n:.2}")
    } else {
        format!("{}{unit}", format!("{n:.1}").trim_end_matches(".0"))
    }
}

/// Draws a legend of (name, colour, line or swatch) items in rows across `area`: outside the
/// plot, so that it covers none of it.
fn legend_band<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    items: &[(&str, RGBColor, bool)],
) -> Result<()> {
    let (width, _) = area.dim_in_pixel();
    let font = ("sans-serif", 13).into_font();
    let (mut x, mut y) = (70i32, 8i32);
    for (name, color, line) in items {
        let text_w = font
            .box_size(name)
            .map_or(8 * name.len() as u32, |(w, _)| w) as i32;
        if x + 22 + text_w > width as i32 - 10 {
            x = 70;
            y += 20;
        }
        if *line {
            area.draw(&PathElement::new(
                vec![(x, y + 7), (x + 14, y + 7)],
                color.stroke_width(2),
            ))
            .map_err(err)?;
        } else {
            area.draw(&Rectangle::new(
                [(x, y + 2), (x + 14, y + 12)],
                color.mix(0.6).filled(),
            ))
            .map_err(err)?;
        }
        area.draw(&Text::new(name.to_string(), (x + 20, y), font.clone()))
            .map_err(err)?;
        x += 20 + text_w + 24;
    }
    Ok(())
}

/// Draws stacked horizontal bars on `area`, the first entry at the top, one band per entry
/// and no empty band; the legend above the plot.
fn bars_on<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_desc: &str,
    labels: &[String],
    rows: &[Vec<(f64, RGBColor)>],
    legend: &[(&str, RGBColor)],
    label_width: u32,
) -> Result<()> {
    let n = labels.len().max(1);
    let max = rows
        .iter()
        .map(|r| r.iter().map(|(v, _)| v).sum::<f64>())
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.05;
    let area = if legend.is_empty() {
        area.clone()
    } else {
        let (top, rest) = area.split_vertically(60);
        let (_, band) = top.split_vertically(30);
        let items: Vec<(&str, RGBColor, bool)> =
            legend.iter().map(|(n, c)| (*n, *c, false)).collect();
        legend_band(&band, &items)?;
        rest
    };
    let mut chart = ChartBuilder::on(&area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(label_width)
        .build_cartesian_2d(0f64..max, 0f64..n as f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_labels(5)
        .x_label_formatter(&|v| axis_number(*v))
        .x_desc(x_desc)
        .draw()
        .map_err(err)?;
    // Row i spans [n-1-i, n-i): the first at the top.
    let top = |i: usize| (n - i) as f64;
    for (i, row) in rows.iter().enumerate() {
        let mut x0 = 0.0;
        let bars: Vec<Rectangle<(f64, f64)>> = row
            .iter()
            .filter(|(v, _)| *v > 0.0)
            .map(|(v, color)| {
                let r =
                    Rectangle::new([(x0, top(i) - 0.1), (x0 + v, top(i) - 0.9)], color.filled());
                x0 += v;
                r
            })
            .collect();
        chart.draw_series(bars).map_err(err)?;
    }
    // Each label beside its own bar, in the label area.
    let font = ("sans-serif", 12).into_font();
    for (i, label) in labels.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(0.0, top(i) - 0.5));
        let style =
            font.clone()
                .into_text_style(&area)
                .pos(plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Right,
                    plotters::style::text_anchor::VPos::Center,
                ));
        // Backend pixels, made relative to this area.
        let (bx, by) = area.get_base_pixel();
        area.draw(&Text::new(label.clone(), (px - bx - 6, py - by), style))
            .map_err(err)?;
    }
    Ok(())
}

/// Bytes per path (brk heap, mmap, thread arena) and the slab objects charged, for the top call
/// sites. Buddy pages are not stacked: they are the pages under those same bytes.
pub fn paths(s: &Summary) -> Result<String> {
    let sites: Vec<_> = s.user.sites.iter().take(12).collect();
    let stacks: Vec<&[label::Frame]> = sites.iter().map(|x| &x.stack[..]).collect();
    let labels = label::sites(&stacks, 40);
    let rows: Vec<Vec<(f64, RGBColor)>> = sites
        .iter()
        .map(|x| {
            let p = &x.paths;
            vec![
                (p.brk_bytes as f64 / MIB, BRK),
                (p.mmap_bytes as f64 / MIB, MMAP),
                (p.thread_arena_bytes as f64 / MIB, ARENA),
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
            ("slab objects (kernel)", SLAB),
        ],
        (960, 180 + 36 * labels.len().max(1) as u32),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::tests::sample_summary;

    /// (x, y) pairs of an SVG `points` attribute.
    fn points(el: &roxmltree::Node) -> Vec<(f64, f64)> {
        el.attribute("points")
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|p| {
                let (x, y) = p.split_once(',')?;
                Some((x.parse().ok()?, y.parse().ok()?))
            })
            .collect()
    }

    fn attr(el: &roxmltree::Node, name: &str) -> f64 {
        el.attribute(name).unwrap().parse().unwrap()
    }

    /// The legend lies above the plot: nothing drawn from the data reaches into it.
    #[test]
    fn the_timeline_legend_covers_no_data() {
        let mut s = sample_summary();
        s.timeline = crate::aggregate::timeline::Timeline::default();
        for i in 0..50u64 {
            s.timeline.observe(1_000_000 * i, || Sample {
                live_heap: i << 20,
                mapped: (i + 2) << 20,
                resident: (i + 1) << 20,
                slab: 1 << 18,
                buddy: 1 << 18,
            });
        }
        let svg = timeline(&s).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let legend_bottom = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter(|n| {
                n.text()
                    .is_some_and(|t| t.contains("live heap") || t.contains("munmap call"))
            })
            .map(|n| attr(&n, "y") + 14.0)
            .fold(0.0, f64::max);
        assert!(legend_bottom > 0.0);
        let data_top = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline") || n.has_tag_name("polygon"))
            .map(|n| points(&n))
            .filter(|p| p.len() > 2)
            .flatten()
            .map(|(_, y)| y)
            .fold(f64::MAX, f64::min);
        assert!(
            data_top >= legend_bottom,
            "data at y={data_top}, legend down to {legend_bottom}"
        );
    }

    #[test]
    fn a_cgroups_use_is_a_line_of_its_own_with_a_legend() {
        let mut s = sample_summary();
        s.timeline = crate::aggregate::timeline::Timeline::default();
        for i in 0..20u64 {
            s.timeline.observe(1_000_000 * i, || Sample {
                live_heap: i << 20,
                mapped: (i + 2) << 20,
                ..Sample::default()
            });
        }
        let without = timeline(&s).unwrap();
        assert!(!without.contains("the cgroup's use"));
        s.cgroup = Some(crate::summary::CgroupFacts {
            // Above everything the process had: the axis makes room for it.
            usage: vec![(0.0, 40 << 20), (10.0, 90 << 20), (19.0, 95 << 20)],
            ..Default::default()
        });
        let svg = timeline(&s).unwrap();
        assert!(
            svg.contains("the cgroup&apos;s use") || svg.contains("the cgroup's use"),
            "{svg}"
        );
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let lines = |svg: &roxmltree::Document| {
            svg.descendants()
                .filter(|n| n.has_tag_name("polyline"))
                .filter(|n| points(n).len() == 3)
                .count()
        };
        assert_eq!(lines(&doc), 1, "one three-point line: the cgroup's samples");
    }

    /// One band per bar, none empty, each label beside its bar; counts without decimals.
    #[test]
    fn bars_fill_their_bands_and_labels_sit_beside_them() {
        let mut s = sample_summary();
        for (name, n) in [
            ("a", 400u64),
            ("b", 300),
            ("c", 100_000),
            ("d", 20),
            ("e", 5),
        ] {
            s.kernel.slab.by_cache.insert(
                name.into(),
                crate::aggregate::kernel::CacheStats {
                    allocs: n,
                    ..Default::default()
                },
            );
        }
        let svg = kernel(&s).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let mut bars: Vec<(f64, f64)> = doc
            .descendants()
            .filter(|n| n.has_tag_name("rect") && n.attribute("fill") == Some("#8172B3"))
            .map(|n| (attr(&n, "y"), attr(&n, "y") + attr(&n, "height")))
            .collect();
        bars.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert_eq!(bars.len(), 5);
        // The plot's top and bottom: the vertical mesh lines of the slab panel.
        let (top, bottom) = doc
            .descendants()
            .filter(|n| n.has_tag_name("line") && attr(n, "x1") > 480.0)
            .map(|n| {
                let (a, b) = (attr(&n, "y1"), attr(&n, "y2"));
                (a.min(b), a.max(b))
            })
            .fold((f64::MAX, 0.0f64), |(t, b), (t2, b2)| {
                (t.min(t2), b.max(b2))
            });
        let band = (bottom - top) / 5.0;
        assert!(
            bars[0].0 - top <= 0.2 * band,
            "an empty band above: {top} .. {:?}",
            bars[0]
        );
        assert!(
            bottom - bars[4].1 <= 0.2 * band,
            "an empty band below: {:?} .. {bottom}",
            bars[4]
        );
        // "c" has the most objects: its bar is the top one, and its label beside it.
        let label_y = doc
            .descendants()
            .find(|n| n.has_tag_name("text") && n.text().map(str::trim) == Some("c"))
            .map(|n| attr(&n, "y"))
            .unwrap();
        assert!(
            (bars[0].0 - 2.0..=bars[0].1 + 2.0).contains(&label_y),
            "{label_y} {:?}",
            bars[0]
        );
        assert!(!svg.contains("100000.0") && !svg.contains(">\n100000\n<"));
        assert_eq!(axis_number(100_000.0), "100k");
        assert_eq!(axis_number(1500.0), "1500");
        assert_eq!(axis_number(2.5), "2.50");
        assert_eq!(axis_number(3_200_000.0), "3.2M");
    }
}
