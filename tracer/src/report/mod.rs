//! Renderers: the [`Summary`] for people (text, HTML, SVG) and for tools (JSON, folded stacks,
//! pprof). Each reads the summary and nothing below it, and does no I/O of its own.
//!
//! [`Format`] is the one list of them: its option, file extension, whether it is binary, and
//! its renderer. The command line, the checks and writes of outputs and the fuzzer all go
//! through it, so a new format is a renderer file and an entry here.

pub mod charts;
pub mod fit;
pub mod flame;
pub mod folded;
pub mod html;
mod html_stacks;
pub mod json;
pub mod pprof;
pub mod svg;
pub mod text;

use std::io::{self, Write};

pub use crate::summary::{Summary, human_bytes, visible};

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("drawing a chart: {0}")]
    Chart(String),
    #[error("drawing a flamegraph: {0}")]
    Flame(String),
}

pub type Result<T> = std::result::Result<T, RenderError>;

/// Files by name, as a directory's renderer makes them.
pub type NamedFiles = Vec<(String, Vec<u8>)>;

/// What a renderer makes.
#[derive(Clone, Copy)]
pub enum Renderer {
    /// One document, written to a file, a device or stdout.
    Stream(fn(&Summary, &mut dyn Write) -> Result<()>),
    /// Named files, written into a directory.
    Files(fn(&Summary) -> Result<NamedFiles>),
}

/// A report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    /// The terminal summary, on stderr unless `--quiet`.
    Text,
    Json,
    Html,
    Svg,
    Folded,
    Pprof,
}

/// A format's entry in the registry.
pub struct Spec {
    /// Its command-line option (`--json`); none for the text, which goes to stderr.
    pub option: Option<&'static str>,
    /// The option's value in `--help`.
    pub value_name: &'static str,
    /// The option's `--help`.
    pub help: &'static str,
    /// The file name's usual ending (a snapshot keeps it last).
    pub extension: &'static str,
    /// Bytes that are not text: never written to a terminal.
    pub binary: bool,
    pub renderer: Renderer,
}

impl Format {
    /// Every format, in the order `--help` lists their options and reports are written.
    pub const ALL: [Format; 6] = [
        Format::Text,
        Format::Json,
        Format::Html,
        Format::Svg,
        Format::Folded,
        Format::Pprof,
    ];

    pub fn spec(self) -> &'static Spec {
        match self {
            Format::Text => &TEXT,
            Format::Json => &JSON,
            Format::Html => &HTML,
            Format::Svg => &SVG,
            Format::Folded => &FOLDED,
            Format::Pprof => &PPROF,
        }
    }

    /// The format whose option is `--option`.
    pub fn by_option(option: &str) -> Option<Format> {
        Format::ALL
            .into_iter()
            .find(|f| f.spec().option == Some(option))
    }

    /// The formats written to files, devices or stdout (all but the text).
    pub fn files() -> impl Iterator<Item = Format> {
        Format::ALL
            .into_iter()
            .filter(|f| f.spec().option.is_some())
    }
}

const TEXT: Spec = Spec {
    option: None,
    value_name: "",
    help: "",
    extension: "txt",
    binary: false,
    renderer: Renderer::Stream(text::render),
};

const JSON: Spec = Spec {
    option: Some("json"),
    value_name: "PATH",
    help: "Also write the summary as JSON (schema tracer.summary/1) to PATH; `-` is stdout. \
           Example: --json out.json",
    extension: "json",
    binary: false,
    renderer: Renderer::Stream(json::render),
};

const HTML: Spec = Spec {
    option: Some("html"),
    value_name: "FILE",
    help: "Write one self-contained HTML page (charts, flamegraphs, sortable tables of sites, \
           leaks and slab caches, each site's chain) that works offline; `-` is stdout. \
           Example: --html report.html",
    extension: "html",
    binary: false,
    renderer: Renderer::Stream(html::render),
};

const SVG: Spec = Spec {
    option: Some("svg"),
    value_name: "DIR",
    help: "Write SVG charts (timeline, bytes per path, sizes, kernel) and flamegraphs \
           (allocated, live, resident bytes) into DIR, created if missing (an existing path \
           must be a directory). Example: --svg charts/",
    extension: "",
    binary: false,
    renderer: Renderer::Files(svg::render),
};

const FOLDED: Spec = Spec {
    option: Some("folded"),
    value_name: "FILE",
    help: "Write folded stacks of allocated bytes (flamegraph.pl, inferno, speedscope); `-` is \
           stdout. Example: --folded alloc.folded",
    extension: "folded",
    binary: false,
    renderer: Renderer::Stream(folded::render_allocated),
};

const PPROF: Spec = Spec {
    option: Some("pprof"),
    value_name: "FILE",
    help: "Write a gzipped pprof profile (alloc_objects, alloc_space, inuse_objects, \
           inuse_space, resident_space) for go tool pprof, Pyroscope or Parca; `-` is stdout \
           when it is not a terminal. Example: --pprof heap.pb.gz",
    extension: "pb.gz",
    binary: true,
    renderer: Renderer::Stream(pprof::render),
};

#[cfg(test)]
mod hostile_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_unique_and_found() {
        for f in Format::files() {
            let option = f.spec().option.unwrap();
            assert_eq!(Format::by_option(option), Some(f));
        }
        assert_eq!(Format::files().count(), Format::ALL.len() - 1);
    }

    /// 300 sites and `--max-sites 200`: the JSON and the page list 200, folded stacks and
    /// pprof (for tools, which aggregate) hold all 300.
    #[test]
    fn tools_get_every_site_people_the_listed_ones() {
        let mut s = crate::summary::tests::sample_summary();
        s.max_sites = 200;
        for i in 0..300u32 {
            let stats = crate::aggregate::heap::SiteStats {
                allocs: 1,
                bytes: 1000 - u64::from(i),
                ..Default::default()
            };
            s.user
                .sites
                .push(crate::summary::tests::site_at(&format!("f{i}"), i, stats));
        }
        s.user.site_count = 300;
        let mut json = Vec::new();
        json::render(&s, &mut json).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["user"]["sites"].as_array().unwrap().len(), 200);
        assert_eq!(v["user"]["site_count"], 300);
        let mut page = Vec::new();
        html::render(&s, &mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(
            page.contains(">f199<") || page.contains("f199 ("),
            "f199 listed"
        );
        assert!(!page.contains("f250"), "f250 is not listed");
        let mut folded = Vec::new();
        folded::render_allocated(&s, &mut folded).unwrap();
        let folded = String::from_utf8(folded).unwrap();
        for i in [0, 199, 299] {
            assert!(folded.contains(&format!("f{i} ")), "f{i} in {folded}");
        }
        assert_eq!(pprof::profile(&s).sample.len(), 300);
    }
}
