//! Flamegraphs of allocation stacks, drawn by inferno.

use std::io::Write;

use inferno::flamegraph::{self, Options};

use super::{
    RenderError, Result, Summary,
    folded::{self, Weight},
};

/// A flamegraph drawn for every report that has them.
pub struct Flamegraph {
    pub weight: Weight,
    /// Its name: `flame-STEM.svg` with `--svg`, `flame-STEM` in the HTML page.
    pub stem: &'static str,
    /// Its heading in the HTML page.
    pub heading: &'static str,
}

/// The flamegraphs, in the order they are shown.
pub const FLAMEGRAPHS: [Flamegraph; 3] = [
    Flamegraph {
        weight: Weight::Allocated,
        stem: "allocated",
        heading: "Allocated bytes",
    },
    Flamegraph {
        weight: Weight::Live,
        stem: "live",
        heading: "Bytes still allocated at the end",
    },
    Flamegraph {
        weight: Weight::Resident,
        stem: "resident",
        heading: "Resident bytes",
    },
];

/// An SVG flamegraph of `weight` by allocation stack; false when nothing weighs anything.
pub fn render(summary: &Summary, weight: Weight, out: impl Write) -> Result<bool> {
    let lines = folded::lines(summary, weight);
    if lines.is_empty() {
        return Ok(false);
    }
    let mut opts = Options::default();
    opts.title = match weight {
        Weight::Allocated => "Allocated bytes by call stack",
        Weight::Live => "Bytes still allocated at the end (leaks) by call stack",
        Weight::Resident => "Resident bytes by call stack",
    }
    .to_string();
    opts.count_name = "bytes".into();
    // Colours by function name, the same in every report and on every run.
    opts.hash = true;
    opts.deterministic = true;
    opts.name_type = "Function:".into();
    flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out)
        .map_err(|e| RenderError::Flame(e.to_string()))?;
    Ok(true)
}

/// The height an inferno SVG declares on its root element.
pub fn height(svg: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(svg).ok()?;
    let root = &text[text.find("<svg")?..];
    let root = &root[..root.find('>')?];
    let at = root.find(" height=\"")? + " height=\"".len();
    let value = &root[at..];
    value[..value.find('"')?].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{summary::tests::one_site, symbolize::Frame};

    /// The same stacks draw the same colours every time (so --svg, a live --html and
    /// `tracer report --html` agree), and the page frames each flamegraph to its height.
    #[test]
    fn colours_are_stable_and_frames_fit() {
        let mut s = crate::summary::tests::sample_summary();
        s.user = one_site(
            Frame {
                function: Some("build_index".into()),
                ..Frame::unknown(0x401000)
            },
            vec![],
        );
        let draw = || {
            let mut svg = Vec::new();
            assert!(render(&s, Weight::Allocated, &mut svg).unwrap());
            svg
        };
        let (a, b) = (draw(), draw());
        assert_eq!(a, b);
        let h = height(&a).unwrap();
        assert!((100..2000).contains(&h), "{h}");
        let mut page = Vec::new();
        crate::report::html::render(&s, &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(
            page.contains(&format!("style=\"height:{}px\"", h + 4)),
            "no frame of {h}px"
        );
    }
}
