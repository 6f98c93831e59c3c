//! Names from a hostile program: escape sequences, CR/LF, BEL, bidi overrides and markup in
//! symbols, files, arguments, thread and cache names. The terminal gets no control character,
//! no line can be forged, every SVG is well-formed XML, and the HTML shows them escaped.

use super::*;
use crate::summary::{
    Frame,
    tests::{self, sample_summary},
};

const EVIL: &str = "evil\x1b[2J\x07\r\ntracer: forged line\u{202e}<&>\u{85}";

fn hostile_summary() -> Summary {
    let mut s = sample_summary();
    s.target.command = vec!["./app".into(), EVIL.into()];
    s.target.threads.insert(7, EVIL.into());
    let frame = Frame {
        addr: 0x1000,
        function: Some(format!("fn;{EVIL}").into()),
        file: Some(format!("/src/{EVIL}.c").into()),
        line: Some(3),
        inlined: false,
        module: Some(format!("/lib/{EVIL}.so").into()),
        offset: Some(0x10),
        build_id: None,
        plumbing: false,
    };
    s.user = tests::one_site(frame, vec![format!("/lib/{EVIL}.so")]);
    s.kernel.slab.by_cache.insert(
        EVIL.into(),
        crate::aggregate::kernel::CacheStats {
            allocs: 3,
            ..Default::default()
        },
    );
    s
}

fn assert_no_controls(what: &str, text: &str) {
    for (i, c) in text.char_indices() {
        let allowed = c == '\n' || (what.ends_with("svg") && c == '\t');
        assert!(
            allowed || !(c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)),
            "{what}: raw {c:?} at byte {i}: {:?}",
            &text[i.saturating_sub(40)..(i + 10).min(text.len())]
        );
    }
}

#[test]
fn visible_escapes_what_a_terminal_would_act_on() {
    assert_eq!(visible("plain name"), "plain name");
    assert_eq!(
        visible("a\x1b[31mb\n\r\t\x07\u{7f}\u{9b}\u{202e}"),
        "a\\x1b[31mb\\n\\r\\t\\x07\\x7f\\x9b\\u{202e}"
    );
}

#[test]
fn terminal_summary_shows_escapes_and_cannot_be_forged() {
    let mut out = Vec::new();
    text::render(&hostile_summary(), &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_no_controls("text", &out);
    assert!(
        out.contains("evil\\x1b[2J\\x07\\r\\ntracer: forged line"),
        "{out}"
    );
    assert!(
        !out.lines().any(|l| l.starts_with("tracer: forged")),
        "a line was forged:\n{out}"
    );
}

#[test]
fn every_svg_is_well_formed_xml() {
    let s = hostile_summary();
    let mut svgs: Vec<(String, String)> = charts::all(&s)
        .unwrap()
        .into_iter()
        .map(|(stem, _, svg)| (stem.to_string(), svg))
        .collect();
    for weight in [folded::Weight::Allocated, folded::Weight::Live] {
        let mut svg = Vec::new();
        assert!(flame::render(&s, weight, &mut svg).unwrap());
        svgs.push((format!("flame {weight:?}"), String::from_utf8(svg).unwrap()));
    }
    let mut named = 0;
    for (what, svg) in &svgs {
        let opts = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        };
        if let Err(e) = roxmltree::Document::parse_with_options(svg, opts) {
            panic!("{what} is not well-formed XML: {e}");
        }
        assert_no_controls(&format!("{what} svg"), svg);
        named += usize::from(svg.contains("forged line"));
    }
    assert!(
        named >= 3,
        "the hostile names are drawn, escaped ({named} SVGs have them)"
    );
}

#[test]
fn folded_lines_stay_one_per_stack() {
    let lines = folded::lines(&hostile_summary(), folded::Weight::Allocated);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_no_controls("folded", &lines[0]);
    // The separator inside a name is not a frame boundary.
    assert_eq!(lines[0].matches(';').count(), 0, "{}", lines[0]);
}

#[test]
fn html_shows_names_escaped() {
    let mut page = Vec::new();
    html::render(&hostile_summary(), &mut page).unwrap();
    let page = String::from_utf8(page).unwrap();
    assert_no_controls("html", &page);
    assert!(page.contains("evil\\x1b[2J\\x07\\r\\ntracer: forged line\\u{202e}&lt;&amp;&gt;\\x85"));
}

/// pprof tools print names and comments to a terminal (`go tool pprof -top`, `-comments`):
/// every string of the profile is as visible as the other formats make it.
#[test]
fn pprof_strings_carry_no_control_characters() {
    let p = pprof::profile(&hostile_summary());
    for s in &p.string_table {
        assert_no_controls("pprof", s);
    }
    // The names are still there, escaped.
    assert!(
        p.string_table
            .iter()
            .any(|s| s.starts_with("fn;evil\\x1b[2J"))
    );
    assert!(
        p.string_table
            .iter()
            .any(|s| s.contains("/lib/evil\\x1b[2J"))
    );
    assert!(
        p.string_table
            .iter()
            .any(|s| s.contains("./app evil\\x1b[2J"))
    );
}
