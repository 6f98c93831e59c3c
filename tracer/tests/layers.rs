//! The layers of `tracer/src` (docs/architecture.md): each top-level module imports only the
//! modules listed before it, and the renderers only the summary. Read from the source, test code
//! and comments left out; no root needed.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Every top-level module of the library, lowest first: each may import only those before it.
const LAYERS: [&str; 21] = [
    // The vocabulary: what the kernel sent, decoded, and what a run ends with.
    "facts",
    "gfp",
    "events",
    // The model: statistics, and which part of the address space served what.
    "aggregate",
    "attribution",
    // The kernel side: symbols, unwind tables, the eBPF programs.
    "symbolize",
    "unwind",
    "probes",
    "reach",
    // The summary: every fact a report shows, made once.
    "summary",
    // The traced processes: each one's model and summary, starting and reading them.
    "process",
    // Renderers: the summary in every format.
    "report",
    // Files: outputs, recordings, and replaying them.
    "output",
    "record",
    "replay",
    // While a run goes on: interval lines, the HTTP server, tracer top.
    "periodic",
    "serve",
    "top",
    // Commands: tracer diff, a run, the command line.
    "diff",
    "runtime",
    "cli",
];

/// Modules that may import only these (besides themselves).
const NARROW: [(&str, &[&str]); 1] = [("report", &["summary"])];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The source files under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without its comments and test modules (`#[cfg(test)] mod x { .. }`, and
/// `#[cfg(test)] mod x;` whose file is `*_tests.rs` or a `tests` module).
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        if t == "#[cfg(test)]" {
            // Skip the item that follows: a one-line `mod x;`, or a block to its closing brace.
            let mut depth = 0i32;
            for item in lines.by_ref() {
                let item = item.trim_start();
                if item.starts_with("#[") {
                    continue;
                }
                depth += item.matches('{').count() as i32 - item.matches('}').count() as i32;
                if depth <= 0 && (item.ends_with(';') || item.ends_with('}')) {
                    break;
                }
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The top-level modules a piece of code names: `crate::x` anywhere, and each item of a
/// `use crate::{x::.., y, ..}` group.
fn named(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 || (depth == 1 && c == ',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        found.insert(name);
                    }
                    item.clear();
                    if depth == 0 {
                        break;
                    }
                } else if depth == 1 || !item.contains("::") {
                    item.push(c);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found
}

/// Each top-level module and the top-level modules its code names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut all = Vec::new();
    files(&src(), &mut all);
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in all {
        let rel = path.strip_prefix(src()).unwrap();
        let name = rel.to_string_lossy();
        if name == "lib.rs" || name == "main.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        let mut names = named(&code(&fs::read_to_string(&path).unwrap()));
        names.remove(&top);
        out.entry(top).or_default().extend(names);
    }
    out
}

#[test]
fn every_module_has_its_layer() {
    let lib = fs::read_to_string(src().join("lib.rs")).unwrap();
    let declared: BTreeSet<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';'))
        .collect();
    let listed: BTreeSet<&str> = LAYERS.into_iter().collect();
    assert_eq!(declared, listed, "lib.rs's modules and LAYERS differ");
}

#[test]
fn no_module_imports_a_layer_above_its_own() {
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut wrong = Vec::new();
    for (module, names) in imports() {
        let Some(own) = rank(&module) else { continue };
        for name in names {
            match rank(&name) {
                Some(r) if r > own => wrong.push(format!("{module} imports {name}")),
                _ => {}
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers: {wrong:?}");
}

#[test]
fn renderers_read_only_the_summary() {
    let imports = imports();
    for (module, allowed) in NARROW {
        let extra: Vec<&String> = imports[module]
            .iter()
            .filter(|n| LAYERS.contains(&n.as_str()) && !allowed.contains(&n.as_str()))
            .collect();
        assert!(extra.is_empty(), "{module} imports {extra:?}");
    }
}

#[test]
fn the_reader_finds_what_it_should() {
    let code = code(
        "use crate::{a::b, c::{d, e::f}, g};\n// crate::h\nfn x() { crate::i::j(); }\n\
         #[cfg(test)]\nmod tests {\n    use crate::k;\n}\n",
    );
    let names: Vec<String> = named(&code).into_iter().collect();
    assert_eq!(names, ["a", "c", "g", "i"]);
}
