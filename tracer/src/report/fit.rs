//! Text fitted to a width (`$COLUMNS`, or 100): a line too wide is wrapped at its spaces, each
//! continuation indented under the line's own indent; a single word wider than what is left
//! (a C++ template's name, a long path) loses its middle to `…`. Nothing else is cut.

use crate::summary::label::elide_middle;

/// The width the terminal summary is fitted to: `$COLUMNS` when it is a number of at least
/// [`MIN_WIDTH`], else [`DEFAULT_WIDTH`].
pub fn width() -> usize {
    width_of(std::env::var("COLUMNS").ok().as_deref())
}

/// The width for a `$COLUMNS` of `columns`.
pub fn width_of(columns: Option<&str>) -> usize {
    columns
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&w| w >= MIN_WIDTH)
        .unwrap_or(DEFAULT_WIDTH)
}

pub const DEFAULT_WIDTH: usize = 100;
pub const MIN_WIDTH: usize = 40;
/// How much deeper than its line a continuation is indented.
const HANG: usize = 4;

/// `text` with every line at most `width` characters wide.
pub fn fit(text: &str, width: usize) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        fit_line(body, width, &mut out);
        out.push_str(end);
    }
    out
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

fn fit_line(line: &str, width: usize, out: &mut String) {
    let body = line.trim_start_matches(' ');
    let indent = line.len() - body.len();
    // A continuation is indented under the line, as far as the width leaves room for.
    let hang = (indent + HANG).min(width / 2);
    out.push_str(&line[..indent]);
    let (mut rest, mut lead) = (body, indent);
    loop {
        let room = width.saturating_sub(lead);
        if chars(rest) <= room {
            out.push_str(rest);
            return;
        }
        match break_at(rest, room) {
            Some(i) => {
                out.push_str(rest[..i].trim_end_matches(' '));
                rest = &rest[i..];
            }
            None => {
                // Its first word alone is too wide.
                let end = rest.find(' ').unwrap_or(rest.len());
                out.push_str(&elide_middle(&rest[..end], room));
                rest = &rest[end..];
            }
        }
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            return;
        }
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', hang));
        lead = hang;
    }
}

/// Where to end the part of `s` that fits in `room` characters: at its last space that does
/// not split a frame from its `(file:line)` (see [`is_location`]) nor a number from its unit, moved back before a ` <- ` or ` -> ` it would
/// leave at the end (a stack's or a chain's step starts the next line); at any space when
/// there is no other; None when not even its first word fits.
fn break_at(s: &str, room: usize) -> Option<usize> {
    let spaces: Vec<usize> = s
        .char_indices()
        .take(room + 1)
        .filter(|&(i, c)| c == ' ' && i > 0)
        .map(|(i, _)| i)
        .collect();
    let whole = spaces
        .iter()
        .rev()
        .find(|&&i| !is_location(&s[i + 1..]) && !splits_quantity(&s[..i], &s[i + 1..]));
    let i = *whole.or(spaces.last())?;
    let step = s[..i].ends_with(" <-") || s[..i].ends_with(" ->");
    Some(if step && i > 3 { i - 3 } else { i })
}

/// Whether `s` starts with a frame's `(file:line)`.
fn is_location(s: &str) -> bool {
    let word = s.split(' ').next().unwrap_or("");
    word.starts_with('(') && word.contains(':') && word.trim_end_matches([',', ';']).ends_with(')')
}

/// Units a number is never parted from.
const UNITS: &[&str] = &[
    "B", "KiB", "MiB", "GiB", "TiB", "ns", "µs", "ms", "s", "min",
];

/// Whether a break between `before` and `after` would part a number from its unit (`64 B`).
fn splits_quantity(before: &str, after: &str) -> bool {
    let number = before.rsplit(' ').next().unwrap_or("");
    let unit = after.split(' ').next().unwrap_or("");
    let unit = unit.trim_end_matches([',', ';', ')', ':', '.', '/']);
    let unit = unit.split('/').next().unwrap_or(unit);
    !number.is_empty()
        && number
            .trim_start_matches(['(', '+', '-'])
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.')
        && UNITS.contains(&unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_lines_are_untouched() {
        let text = "a b\n  c\n\nd";
        assert_eq!(fit(text, 10), text);
    }

    #[test]
    fn long_lines_wrap_under_their_indent() {
        let line = "  1.0 MiB in 12 allocs  make (demo.c:35) <- main (demo.c:75) <- start";
        let fitted = fit(line, 30);
        for l in fitted.lines() {
            assert!(chars(l) <= 30, "{l:?} in {fitted}");
        }
        // Never between a frame and its line; a stack's step begins a line.
        assert_eq!(
            fitted,
            "  1.0 MiB in 12 allocs\n      make (demo.c:35)\n      <- main (demo.c:75)\n      <- start"
        );
        assert_eq!(
            fit(
                "  grow (a.c:1) <- main (a.c:9) <- start_main (start.c:58)",
                44
            ),
            "  grow (a.c:1) <- main (a.c:9)\n      <- start_main (start.c:58)"
        );
        // Nothing is lost: the words are all there, in order.
        let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(words(&fitted), words(line));
    }

    #[test]
    fn a_number_keeps_its_unit() {
        assert_eq!(
            fit("heap (live: 64 B): freed", 16),
            "heap (live:\n    64 B): freed"
        );
        assert_eq!(
            fit("grew 5.6 MiB/min, now", 16),
            "grew\n    5.6 MiB/min,\n    now"
        );
    }

    #[test]
    fn a_word_too_wide_loses_its_middle() {
        let name = format!("std::vector<{}>::_M_realloc_insert", "x".repeat(200));
        let fitted = fit(&format!("  at {name} (stl_vector.h:1)"), 60);
        let lines: Vec<&str> = fitted.lines().collect();
        assert!(lines.iter().all(|l| chars(l) <= 60), "{fitted}");
        assert_eq!(lines[0], "  at");
        assert!(lines[1].starts_with("      std::vector<xx"), "{fitted}");
        assert!(lines[1].contains('…') && lines[1].ends_with("x>::_M_realloc_insert"));
        assert_eq!(lines[2], "      (stl_vector.h:1)");
    }

    #[test]
    fn the_width_comes_from_columns() {
        assert_eq!(width_of(Some("132")), 132);
        assert_eq!(width_of(Some("7")), DEFAULT_WIDTH);
        assert_eq!(width_of(Some("wide")), DEFAULT_WIDTH);
        assert_eq!(width_of(None), DEFAULT_WIDTH);
    }
}
