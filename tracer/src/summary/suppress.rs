//! `--suppress FILE`: leaks a program's owners know about, in LeakSanitizer's format.
//!
//! One rule a line, `leak:PATTERN`; `#` starts a comment. A rule matches a leak when it
//! matches any frame of its stack: the function, the source file or the module. A pattern
//! matches anywhere in the name (`*` stands for any run of characters) unless anchored with
//! `^` (at the start) or `$` (at the end). A suppressed leak keeps its place in the JSON, marked
//! with its rule, and is no finding; the summary says how many bytes each rule suppressed.

use serde::Serialize;
use thiserror::Error;

use crate::{events::LeakKind, summary::user::UserSummary, symbolize::Frame};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SuppressError {
    #[error("line {line}: `{text}` is not a rule: write leak:PATTERN (or # for a comment)")]
    NotARule { line: usize, text: String },
    #[error("line {line}: `leak:` needs a pattern")]
    Empty { line: usize },
}

/// One `leak:` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    /// As written, `leak:` included: what reports name it by.
    text: String,
    /// The pattern's pieces between `*`s.
    pieces: Vec<String>,
    at_start: bool,
    at_end: bool,
}

/// The rules of a suppressions file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Suppressions {
    rules: Vec<Rule>,
}

/// Bytes and blocks one rule suppressed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Suppressed {
    pub rule: String,
    pub bytes: u64,
    pub blocks: u64,
}

impl Suppressions {
    /// The rules of `text`, every line checked.
    pub fn parse(text: &str) -> Result<Self, SuppressError> {
        let mut rules = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some(pattern) = line.strip_prefix("leak:") else {
                return Err(SuppressError::NotARule {
                    line: i + 1,
                    text: line.to_string(),
                });
            };
            let pattern = pattern.trim();
            let (at_start, pattern) = match pattern.strip_prefix('^') {
                Some(p) => (true, p),
                None => (false, pattern),
            };
            let (at_end, pattern) = match pattern.strip_suffix('$') {
                Some(p) => (true, p),
                None => (false, pattern),
            };
            if pattern.is_empty() {
                return Err(SuppressError::Empty { line: i + 1 });
            }
            rules.push(Rule {
                text: line.to_string(),
                pieces: pattern.split('*').map(str::to_string).collect(),
                at_start,
                at_end,
            });
        }
        Ok(Suppressions { rules })
    }

    /// The rules as written, one a line (what a run keeps with its summary's inputs).
    pub fn from_lines(lines: &[String]) -> Self {
        Self::parse(&lines.join("\n")).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first rule that matches a frame of `stack`, as written.
    pub fn matching(&self, stack: &[Frame]) -> Option<&str> {
        self.rules
            .iter()
            .find(|r| {
                stack.iter().any(|f| {
                    [&f.function, &f.file, &f.module]
                        .into_iter()
                        .flatten()
                        .any(|name| r.matches(name))
                })
            })
            .map(|r| r.text.as_str())
    }
}

/// Marks every lost, indirectly or possibly lost leak of `user` that a rule matches, moves its
/// bytes from its kind to the check's `suppressed_*`, and sums them per rule.
pub fn apply(user: &mut UserSummary, rules: &Suppressions) {
    if rules.is_empty() {
        return;
    }
    let mut by_rule: Vec<Suppressed> = Vec::new();
    for leak in &mut user.leaks {
        if !matches!(
            leak.kind,
            Some(LeakKind::Lost | LeakKind::Indirect | LeakKind::Possible)
        ) {
            continue;
        }
        let Some(rule) = rules.matching(&leak.stack) else {
            continue;
        };
        leak.suppressed_by = Some(rule.to_string());
        match by_rule.iter_mut().find(|s| s.rule == rule) {
            Some(s) => {
                s.bytes = s.bytes.saturating_add(leak.bytes);
                s.blocks = s.blocks.saturating_add(leak.count);
            }
            None => by_rule.push(Suppressed {
                rule: rule.to_string(),
                bytes: leak.bytes,
                blocks: leak.count,
            }),
        }
        if let (Some(check), Some(kind)) = (user.leak_check.as_mut(), leak.kind) {
            check.suppress(kind, leak.bytes, leak.count);
        }
    }
    user.suppressed = by_rule;
}

impl Rule {
    fn matches(&self, name: &str) -> bool {
        let n = self.pieces.len();
        let mut rest = name;
        for (i, piece) in self.pieces.iter().enumerate() {
            let first = i == 0;
            let last = i + 1 == n;
            if first && self.at_start {
                let Some(after) = rest.strip_prefix(piece.as_str()) else {
                    return false;
                };
                rest = after;
                if last && self.at_end {
                    return rest.is_empty();
                }
                continue;
            }
            if last && self.at_end {
                return rest.ends_with(piece.as_str());
            }
            match rest.find(piece.as_str()) {
                Some(at) => rest = &rest[at + piece.len()..],
                None => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn frame(function: &str, file: &str, module: &str) -> Frame {
        Frame {
            function: Some(Arc::from(function)),
            file: Some(Arc::from(file)),
            module: Some(Arc::from(module)),
            ..Frame::unknown(0x1000)
        }
    }

    #[test]
    fn rules_match_function_file_or_module() {
        let s = Suppressions::parse(
            "# glibc keeps these\n\nleak:^_dl_\nleak:libfoo.so\nleak:parse*json$\n  leak:xml  \n",
        )
        .unwrap();
        let stack = |f: &str| {
            vec![
                frame("main", "main.c", "/bin/app"),
                frame(f, "x.c", "/lib/libc.so.6"),
            ]
        };
        assert_eq!(s.matching(&stack("_dl_allocate_tls")), Some("leak:^_dl_"));
        assert_eq!(s.matching(&stack("my_dl_thing")), None);
        assert_eq!(
            s.matching(&stack("parse_fast_json")),
            Some("leak:parse*json$")
        );
        assert_eq!(s.matching(&stack("parse_json_more")), None);
        assert_eq!(s.matching(&stack("read_xml_node")), Some("leak:xml"));
        let lib = vec![frame("f", "f.c", "/usr/lib/libfoo.so.1")];
        assert_eq!(s.matching(&lib), Some("leak:libfoo.so"));
        assert!(Suppressions::default().matching(&lib).is_none());
    }

    #[test]
    fn other_lines_are_errors() {
        assert_eq!(
            Suppressions::parse("leak:a\nrace:b\n"),
            Err(SuppressError::NotARule {
                line: 2,
                text: "race:b".into()
            })
        );
        assert_eq!(
            Suppressions::parse("leak:^$"),
            Err(SuppressError::Empty { line: 1 })
        );
    }
}
