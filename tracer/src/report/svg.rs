//! `--svg DIR`: every chart and flamegraph, a file each, with the summary's notes in a footer.

use super::{NamedFiles, Result, Summary, charts, flame, html::esc};
use crate::summary::notes::Note;

/// The files of the directory, by name, of the summary as listed ([`Summary::listed`]).
pub fn render(summary: &Summary) -> Result<NamedFiles> {
    let summary = &*summary.listed();
    let mut files: NamedFiles = charts::all(summary)?
        .into_iter()
        .map(|(stem, _, svg)| (format!("{stem}.svg"), svg.into_bytes()))
        .collect();
    for f in flame::FLAMEGRAPHS {
        let mut svg = Vec::new();
        if flame::render(summary, f.weight, &mut svg)? {
            files.push((format!("flame-{}.svg", f.stem), svg));
        }
    }
    if !summary.notes.is_empty() {
        for (_, svg) in &mut files {
            *svg = with_footer(svg, &summary.notes);
        }
    }
    Ok(files)
}

/// Height of a footer line.
const LINE: u32 = 16;

/// `svg` made taller by a line per note, each note written there: a chart read on its own
/// says what its numbers lack. An SVG whose root does not declare its height is left as it is.
pub fn with_footer(svg: &[u8], notes: &[Note]) -> Vec<u8> {
    let text = String::from_utf8_lossy(svg);
    let Some((root_start, root_end)) = text
        .find("<svg")
        .and_then(|s| text[s..].find('>').map(|e| (s, s + e)))
    else {
        return svg.to_vec();
    };
    let root = &text[root_start..root_end];
    let Some(height) = attribute(root, "height").and_then(|h| h.parse::<u32>().ok()) else {
        return svg.to_vec();
    };
    let extra = LINE * notes.len() as u32 + 4;
    let mut root = root.replacen(
        &format!(" height=\"{height}\""),
        &format!(" height=\"{}\"", height + extra),
        1,
    );
    if let Some(view) = attribute(&root, "viewBox") {
        let parts: Vec<&str> = view.split_whitespace().collect();
        if let [x, y, w, h] = parts[..]
            && let Ok(h) = h.parse::<u32>()
        {
            root = root.replacen(
                &format!(" viewBox=\"{view}\""),
                &format!(" viewBox=\"{x} {y} {w} {}\"", h + extra),
                1,
            );
        }
    }
    let footer: String = notes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "<text x=\"4\" y=\"{}\" font-family=\"sans-serif\" font-size=\"11\" \
                 fill=\"{}\">{}: {}</text>",
                height + LINE * (i as u32 + 1),
                if n.level == crate::summary::notes::Level::Warning {
                    "#a00"
                } else {
                    "#444"
                },
                n.level.name(),
                esc(&n.text)
            )
        })
        .collect();
    let Some(close) = text.rfind("</svg>") else {
        return svg.to_vec();
    };
    format!(
        "{}{root}{}{footer}{}",
        &text[..root_start],
        &text[root_end..close],
        &text[close..]
    )
    .into_bytes()
}

/// The value of `name="…"` in an element's start tag.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = tag[at..].find('"')?;
    Some(&tag[at..at + len])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::notes::Level;

    #[test]
    fn a_footer_makes_the_chart_taller_and_says_the_notes() {
        let svg = br#"<svg width="960" height="460" viewBox="0 0 960 460" xmlns="http://www.w3.org/2000/svg"><rect/></svg>"#;
        let notes = [
            Note {
                level: Level::Warning,
                text: "7 events were lost".into(),
            },
            Note {
                level: Level::Note,
                text: "a <b> & c".into(),
            },
        ];
        let out = String::from_utf8(with_footer(svg, &notes)).unwrap();
        assert!(
            out.starts_with(r#"<svg width="960" height="496" viewBox="0 0 960 496""#),
            "{out}"
        );
        assert!(out.contains(r##"y="476" font-family="sans-serif" font-size="11" fill="#a00">warning: 7 events were lost</text>"##), "{out}");
        assert!(
            out.contains(">note: a &lt;b&gt; &amp; c</text></svg>"),
            "{out}"
        );
        roxmltree::Document::parse(&out).unwrap();
    }
}
