//! The row compiler against binutils: every row `readelf --debug-dump=frames-interp` prints
//! for a few real files is the rule our table finds at that address.

use std::process::Command;

use super::*;

/// What readelf says holds from `loc` on: the CFA (`rsp+16`, `rbp+16`, `exp`, ...), and the
/// rbp and ra columns (`u`, `c-16`, ...; rbp absent when the FDE never saves it).
struct Expected {
    loc: u64,
    cfa: String,
    rbp: Option<String>,
    ra: String,
}

/// Every row of every FDE of `path`'s `.eh_frame` (CIEs' own rows are not code addresses).
fn readelf_rows(path: &str) -> Vec<Expected> {
    let out = Command::new("readelf")
        .args(["--debug-dump=frames-interp", path])
        .output()
        .expect("readelf (binutils; cargo xtask setup installs it)");
    // readelf exits 1 for some libraries it dumps whole (libc.so.6: a debug link it cannot
    // follow), so its output is what counts.
    assert!(
        !out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut rows = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    let mut in_fde = false;
    for line in text.lines() {
        if line.contains(" FDE ") {
            in_fde = true;
            continue;
        }
        if line.contains(" CIE ") || line.starts_with("Contents of the .debug_frame") {
            in_fde = false;
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"LOC") {
            columns = words.iter().map(ToString::to_string).collect();
            continue;
        }
        if !in_fde || words.len() < 2 || words.len() != columns.len() {
            continue;
        }
        // A location is 16 hex digits (not the "ZERO terminator" line's offset).
        let Ok(loc) = u64::from_str_radix(words[0], 16) else {
            continue;
        };
        if words[0].len() != 16 {
            continue;
        }
        let col = |name: &str| {
            columns
                .iter()
                .position(|c| c == name)
                .map(|i| words[i].to_string())
        };
        rows.push(Expected {
            loc,
            cfa: words[1].to_string(),
            rbp: col("rbp"),
            ra: col("ra").unwrap_or_default(),
        });
    }
    rows
}

/// Our row at each of readelf's locations says what readelf says.
fn agrees_with_readelf(path: &str) -> usize {
    let table = compile_file(Path::new(path)).unwrap();
    let expected = readelf_rows(path);
    assert!(
        expected.len() > 10,
        "{path}: {} rows from readelf",
        expected.len()
    );
    let mut plt = 0;
    for e in &expected {
        let row = table
            .find(e.loc)
            .unwrap_or_else(|| panic!("{path}: no row at {:#x}", e.loc));
        let at = format!(
            "{path} at {:#x}: {row:?} vs cfa {} rbp {:?} ra {}",
            e.loc, e.cfa, e.rbp, e.ra
        );
        if e.ra != "c-8" {
            assert_eq!(row.cfa, unwind::CFA_UNKNOWN, "{at}");
            continue;
        }
        match e.cfa.split_once('+') {
            Some(("rsp", n)) => {
                assert_eq!(
                    (row.cfa, row.cfa_offset.to_string()),
                    (unwind::CFA_RSP, n.into()),
                    "{at}"
                );
            }
            Some(("rbp", n)) => {
                assert_eq!(
                    (row.cfa, row.cfa_offset.to_string()),
                    (unwind::CFA_RBP, n.into()),
                    "{at}"
                );
            }
            _ if e.cfa == "exp" => {
                assert!(
                    matches!(row.cfa, unwind::CFA_PLT | unwind::CFA_UNKNOWN),
                    "{at}"
                );
                plt += usize::from(row.cfa == unwind::CFA_PLT);
                continue;
            }
            _ => {
                assert_eq!(row.cfa, unwind::CFA_UNKNOWN, "{at}");
                continue;
            }
        }
        match e.rbp.as_deref() {
            None | Some("u" | "s") => assert_eq!(row.rbp, unwind::RBP_SAME, "{at}"),
            Some(c) => match c.strip_prefix('c') {
                Some(n) => {
                    assert_eq!(
                        (row.rbp, row.rbp_offset.to_string()),
                        (unwind::RBP_AT_CFA, n.into()),
                        "{at}"
                    );
                }
                None => assert_eq!(row.rbp, unwind::RBP_UNKNOWN, "{at}"),
            },
        }
    }
    plt
}

#[test]
fn compiled_rows_agree_with_readelf_on_real_files() {
    let mut plt = 0;
    for path in [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/bin/ls",
    ] {
        if path.ends_with("libz.so.1") && !Path::new(path).exists() {
            continue;
        }
        plt += agrees_with_readelf(path);
    }
    // The PLT expression is among what compilers emit, and is followed.
    assert!(plt > 0, "no PLT row");
}

#[test]
fn tables_are_sorted_merged_and_closed() {
    let table = compile_file(Path::new("/lib/x86_64-linux-gnu/libc.so.6")).unwrap();
    assert!(table.rows.windows(2).all(|w| w[0].pc < w[1].pc));
    // Past the last FDE: nothing known.
    let last = table.rows.last().unwrap();
    assert_eq!(last.cfa, unwind::CFA_UNKNOWN);
    assert!(
        table
            .find(0)
            .is_none_or(|r| r.cfa == unwind::CFA_UNKNOWN || r.pc == 0)
    );
    assert!(
        table
            .find(u64::MAX)
            .is_some_and(|r| r.cfa == unwind::CFA_UNKNOWN)
    );
}

#[test]
fn not_elf_and_other_architectures_are_errors() {
    let dir = std::env::temp_dir().join(format!("tracer-unwind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk");
    std::fs::write(&junk, b"not an ELF file at all").unwrap();
    assert!(matches!(compile_file(&junk), Err(UnwindError::Elf { .. })));
    assert!(matches!(
        compile_file(&dir.join("missing")),
        Err(UnwindError::Read { .. })
    ));
    assert_eq!(plt_threshold(&PLT_EXPRESSION), Some(11));
    let mut ten = PLT_EXPRESSION;
    ten[6] = 0x3a;
    assert_eq!(plt_threshold(&ten), Some(10));
    ten[0] = 0x76;
    assert_eq!(plt_threshold(&ten), None);
}

/// Compact: libc's table is tens of thousands of rows (16 bytes each), not hundreds.
#[test]
fn a_library_compiles_to_a_compact_table() {
    let table = compile_file(Path::new("/lib/x86_64-linux-gnu/libc.so.6")).unwrap();
    let fdes = readelf_rows("/lib/x86_64-linux-gnu/libc.so.6").len();
    assert!(table.rows.len() > 1000, "{}", table.rows.len());
    assert!(
        table.rows.len() <= fdes * 2,
        "{} rows for {fdes} readelf rows",
        table.rows.len()
    );
    eprintln!(
        "libc.so.6: {} rows ({} KiB)",
        table.rows.len(),
        table.rows.len() * 16 / 1024
    );
}
