//! GFP flags in the kernel's own names, read from the kernel's own table.
//!
//! Bit positions of `__GFP_*` differ between kernel versions and configurations, but every kernel
//! prints them by name in `kmem:mm_page_alloc`'s format: its print fmt holds a `__print_flags`
//! table of `{(unsigned long)(EXPR), "NAME"}` entries, EXPR made of `1UL << n`, `|`, `&`, `~`
//! and casts. Evaluating those gives the table this kernel uses.

/// Masks and names, in the kernel's order (composite names such as GFP_KERNEL first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GfpTable {
    entries: Vec<(u64, String)>,
}

impl GfpTable {
    /// Extracts the table from a tracepoint's `print fmt` text.
    pub fn from_print_fmt(fmt: &str) -> Self {
        let Some(start) = fmt.find("__print_flags(") else {
            return GfpTable::default();
        };
        let mut entries = Vec::new();
        let mut rest = &fmt[start..];
        // Each entry: `{` EXPR `, "` NAME `"}`.
        while let Some(open) = rest.find('{') {
            rest = &rest[open + 1..];
            let Some(close) = rest.find("\"}") else {
                break;
            };
            let entry = &rest[..close];
            rest = &rest[close + 2..];
            let Some(quote) = entry.rfind(", \"") else {
                continue;
            };
            let (expr, name) = (&entry[..quote], &entry[quote + 3..]);
            if let Some(mask) = eval(expr) {
                entries.push((mask, name.to_string()));
            }
        }
        GfpTable { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The names of `flags` joined with `|`, as the kernel prints them (with any unnamed rest in
    /// hex), and the first name: the flags' class, such as `GFP_HIGHUSER_MOVABLE`.
    pub fn decode(&self, flags: u64) -> (String, String) {
        if flags == 0 {
            return ("none".into(), "none".into());
        }
        let mut rest = flags;
        let mut names: Vec<&str> = Vec::new();
        for (mask, name) in &self.entries {
            if *mask != 0 && rest & mask == *mask {
                names.push(name);
                rest &= !mask;
            }
        }
        let mut full = names.join("|");
        if rest != 0 {
            if !full.is_empty() {
                full.push('|');
            }
            full.push_str(&format!("{rest:#x}"));
        }
        let class = names
            .first()
            .map_or_else(|| format!("{flags:#x}"), ToString::to_string);
        (class, full)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Num(u64),
    Shl,
    Or,
    And,
    Not,
    Open,
    Close,
}

fn tokenize(expr: &str) -> Option<Vec<Tok>> {
    let b = expr.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' => i += 1,
            b'(' => {
                // A cast, `( gfp_t)` or `( unsigned long)`, is dropped.
                let close = expr[i..].find(')')? + i;
                let inner = expr[i + 1..close].trim();
                if !inner.is_empty()
                    && inner
                        .chars()
                        .all(|c| c.is_ascii_alphabetic() || c == '_' || c == ' ')
                {
                    i = close + 1;
                } else {
                    toks.push(Tok::Open);
                    i += 1;
                }
            }
            b')' => {
                toks.push(Tok::Close);
                i += 1;
            }
            b'|' => {
                toks.push(Tok::Or);
                i += 1;
            }
            b'&' => {
                toks.push(Tok::And);
                i += 1;
            }
            b'~' => {
                toks.push(Tok::Not);
                i += 1;
            }
            b'<' if b.get(i + 1) == Some(&b'<') => {
                toks.push(Tok::Shl);
                i += 2;
            }
            b'0'..=b'9' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric()) {
                    i += 1;
                }
                let lit = expr[start..i].trim_end_matches(['U', 'L', 'u', 'l']);
                let n = if let Some(hex) = lit.strip_prefix("0x") {
                    u64::from_str_radix(hex, 16).ok()?
                } else {
                    lit.parse().ok()?
                };
                toks.push(Tok::Num(n));
            }
            _ => return None,
        }
    }
    Some(toks)
}

/// The longest flag expression evaluated: the kernel's are a few hundred bytes; a format
/// from a recording may be anything.
const MAX_EXPR_BYTES: usize = 4096;
/// The deepest nesting of parentheses and `~` evaluated (the kernel's go about 8 deep).
const MAX_DEPTH: u32 = 64;

/// Evaluates a constant C expression of `|`, `&`, `<<`, `~`, parentheses and casts. `None`
/// for anything else, and for expressions too long or too deeply nested.
pub fn eval(expr: &str) -> Option<u64> {
    if expr.len() > MAX_EXPR_BYTES {
        return None;
    }
    let toks = tokenize(expr)?;
    let mut pos = 0;
    let v = parse_or(&toks, &mut pos, 0)?;
    (pos == toks.len()).then_some(v)
}

fn parse_or(t: &[Tok], p: &mut usize, depth: u32) -> Option<u64> {
    let mut v = parse_and(t, p, depth)?;
    while t.get(*p) == Some(&Tok::Or) {
        *p += 1;
        v |= parse_and(t, p, depth)?;
    }
    Some(v)
}

fn parse_and(t: &[Tok], p: &mut usize, depth: u32) -> Option<u64> {
    let mut v = parse_shift(t, p, depth)?;
    while t.get(*p) == Some(&Tok::And) {
        *p += 1;
        v &= parse_shift(t, p, depth)?;
    }
    Some(v)
}

fn parse_shift(t: &[Tok], p: &mut usize, depth: u32) -> Option<u64> {
    let mut v = parse_unary(t, p, depth)?;
    while t.get(*p) == Some(&Tok::Shl) {
        *p += 1;
        v = v.checked_shl(u32::try_from(parse_unary(t, p, depth)?).ok()?)?;
    }
    Some(v)
}

fn parse_unary(t: &[Tok], p: &mut usize, depth: u32) -> Option<u64> {
    if depth > MAX_DEPTH {
        return None;
    }
    match t.get(*p)? {
        Tok::Not => {
            *p += 1;
            Some(!parse_unary(t, p, depth + 1)?)
        }
        Tok::Num(n) => {
            *p += 1;
            Some(*n)
        }
        Tok::Open => {
            *p += 1;
            let v = parse_or(t, p, depth + 1)?;
            (t.get(*p) == Some(&Tok::Close)).then_some(())?;
            *p += 1;
            Some(v)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of this kernel's table (Linux 6.18), abridged.
    const FMT: &str = r#"print fmt: "page=%p pfn=0x%lx order=%d migratetype=%d gfp_flags=%s", REC->pfn != -1UL ? (((struct page *)vmemmap_base) + (REC->pfn)) : ((void *)0), REC->pfn != -1UL ? REC->pfn : 0, REC->order, REC->migratetype, (REC->gfp_flags) ? __print_flags(REC->gfp_flags, "|", {( unsigned long)((((( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11)))) | (( gfp_t)((((1UL))) << (6))) | (( gfp_t)((((1UL))) << (7))) | (( gfp_t)((((1UL))) << (20)))) | (( gfp_t)((((1UL))) << (1)))) | (( gfp_t)((((1UL))) << (3))) | (( gfp_t)0)), "GFP_HIGHUSER_MOVABLE"}, {( unsigned long)(((( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11)))) | (( gfp_t)((((1UL))) << (6))) | (( gfp_t)((((1UL))) << (7)))) | (( gfp_t)((((1UL))) << (22)))), "GFP_KERNEL_ACCOUNT"}, {( unsigned long)((( gfp_t)(((((1UL))) << (10))|((((1UL))) << (11)))) | (( gfp_t)((((1UL))) << (6))) | (( gfp_t)((((1UL))) << (7)))), "GFP_KERNEL"}, {( unsigned long)(( gfp_t)((((1UL))) << (8))), "__GFP_ZERO"}, {( unsigned long)(( gfp_t)((((1UL))) << (3))), "__GFP_MOVABLE"}) : "none""#;

    #[test]
    fn evaluates_kernel_expressions() {
        assert_eq!(eval("(( gfp_t)((((1UL))) << (8)))"), Some(0x100));
        assert_eq!(
            eval("((1UL << 10)|(1UL << 11)) & ~((1UL << 10))"),
            Some(0x800)
        );
        assert_eq!(eval("0x20 | 3"), Some(0x23));
        assert_eq!(eval("(1 << 2"), None);
        assert_eq!(eval("foo"), None);
    }

    /// A recording's format text is not trusted: no stack overflow, no quadratic time.
    #[test]
    fn hostile_expressions_are_refused_quickly() {
        let deep = format!("{}1{}", "(".repeat(65), ")".repeat(65));
        assert_eq!(eval(&deep), None);
        assert_eq!(
            eval(&format!("{}1{}", "(".repeat(60), ")".repeat(60))),
            Some(1)
        );
        assert_eq!(eval(&format!("{}1", "~".repeat(100))), None);
        for junk in [
            "~".repeat(1 << 20),
            "(".repeat(1 << 20),
            "((1".repeat(1 << 18),
        ] {
            let started = std::time::Instant::now();
            assert_eq!(eval(&junk), None);
            let table =
                GfpTable::from_print_fmt(&format!("__print_flags(x, \"|\", {{{junk}, \"N\"}})"));
            assert!(table.is_empty());
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
        }
    }

    #[test]
    fn decodes_with_the_kernels_table() {
        let t = GfpTable::from_print_fmt(FMT);
        assert_eq!(t.len(), 5);
        let kernel = (1 << 10) | (1 << 11) | (1 << 6) | (1 << 7);
        let highuser_movable = kernel | (1 << 20) | (1 << 1) | (1 << 3);
        assert_eq!(
            t.decode(highuser_movable | (1 << 8)),
            (
                "GFP_HIGHUSER_MOVABLE".into(),
                "GFP_HIGHUSER_MOVABLE|__GFP_ZERO".into()
            )
        );
        assert_eq!(t.decode(kernel | (1 << 22)).0, "GFP_KERNEL_ACCOUNT");
        assert_eq!(t.decode(kernel), ("GFP_KERNEL".into(), "GFP_KERNEL".into()));
        assert_eq!(t.decode(kernel | (1 << 30)).1, "GFP_KERNEL|0x40000000");
        assert_eq!(t.decode(0).0, "none");
        assert_eq!(GfpTable::default().decode(0x10).0, "0x10");
    }

    #[test]
    fn reads_this_kernels_format_when_present() {
        let path = "/sys/kernel/tracing/events/kmem/mm_page_alloc/format";
        if let Ok(text) = std::fs::read_to_string(path) {
            let t = GfpTable::from_print_fmt(&text);
            assert!(t.len() > 10, "{t:?}");
            let names: Vec<&str> = t.entries.iter().map(|(_, n)| n.as_str()).collect();
            assert!(
                names.contains(&"GFP_KERNEL") && names.contains(&"__GFP_ZERO"),
                "{names:?}"
            );
        }
    }
}
