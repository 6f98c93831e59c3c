//! Whether a frame-pointer walk's return address is one: the instruction before it must be a
//! call. A walk through code built without frame pointers reads whatever the register holds
//! for the next frame; the words it then takes for return addresses rarely follow a call (one
//! seen on cmake came after a `mov`). The stack ends at the first that does not.

use std::{
    collections::HashMap,
    fs::File,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
};

/// The longest call instruction x86-64 code has (`FF /2` with a SIB byte and a 32-bit
/// displacement is 7 bytes; a prefix before it does not change where it ends).
pub const LONGEST_CALL: usize = 7;

/// Whether `before`, the bytes that end just before a return address, ends with a call:
/// `E8 rel32`, or `FF /2` in any of its forms (register, memory, RIP-relative).
pub fn ends_with_call(before: &[u8]) -> bool {
    let n = before.len();
    if n >= 5 && before[n - 5] == 0xE8 {
        return true;
    }
    (2..=LONGEST_CALL.min(n)).any(|k| {
        let at = n - k;
        before[at] == 0xFF && before.get(at + 1).is_some_and(|&m| (m >> 3) & 7 == 2) && {
            let modrm = before[at + 1];
            let (mode, rm) = (modrm >> 6, modrm & 7);
            let sib = mode != 3 && rm == 4;
            let base5 = sib && before.get(at + 2).is_some_and(|&s| s & 7 == 5);
            let disp = match mode {
                1 => 1,
                2 => 4,
                0 if rm == 5 || base5 => 4,
                _ => 0,
            };
            2 + usize::from(sib) + disp == k
        }
    })
}

/// Reads code bytes from files, one open file each, and remembers each address's verdict.
#[derive(Default)]
pub struct CallCheck {
    files: HashMap<PathBuf, Option<File>>,
}

impl CallCheck {
    /// Whether the code before file offset `offset` of `path` ends with a call; true when the
    /// file cannot be read (nothing is cut on no evidence).
    pub fn follows_call(&mut self, path: &Path, offset: u64) -> bool {
        let file = self
            .files
            .entry(path.to_path_buf())
            .or_insert_with(|| File::open(path).ok());
        let Some(file) = file else {
            return true;
        };
        let from = offset.saturating_sub(LONGEST_CALL as u64);
        let mut before = vec![0u8; (offset - from) as usize];
        if file.read_exact_at(&mut before, from).is_err() {
            return true;
        }
        ends_with_call(&before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_recognised_in_their_forms() {
        // call rel32, after other code.
        assert!(ends_with_call(&[0x90, 0x90, 0xE8, 1, 2, 3, 4]));
        // call *%rax (FF D0), call *%r8 (41 FF D0), notrack call *%rdx (3E FF D2).
        assert!(ends_with_call(&[0x90, 0x90, 0x90, 0x90, 0x90, 0xFF, 0xD0]));
        assert!(ends_with_call(&[0x90, 0x90, 0x90, 0x90, 0x41, 0xFF, 0xD0]));
        assert!(ends_with_call(&[0x90, 0x90, 0x90, 0x90, 0x3E, 0xFF, 0xD2]));
        // call *0x10(%rax) (FF 50 10), call *0x100(%rbx) (FF 93 00 01 00 00).
        assert!(ends_with_call(&[0x90, 0x90, 0x90, 0x90, 0xFF, 0x50, 0x10]));
        assert!(ends_with_call(&[0x90, 0xFF, 0x93, 0, 1, 0, 0]));
        // call *0x1234(%rip) (FF 15 disp32), call *(%rax,%rbx,8) (FF 14 D8).
        assert!(ends_with_call(&[0x90, 0xFF, 0x15, 0x34, 0x12, 0, 0]));
        assert!(ends_with_call(&[0x90, 0x90, 0x90, 0x90, 0xFF, 0x14, 0xD8]));
        // A mov (48 89 c7), a jmp *%rax (FF E0: /4), a ret: no call before.
        assert!(!ends_with_call(&[0x90, 0x90, 0x90, 0x90, 0x48, 0x89, 0xC7]));
        assert!(!ends_with_call(&[0x90, 0x90, 0x90, 0x90, 0x90, 0xFF, 0xE0]));
        assert!(!ends_with_call(&[0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0xC3]));
        assert!(!ends_with_call(&[]));
    }

    /// Read from a file: the offset after a call follows one, the offset after a mov does
    /// not; a file that cannot be read cuts nothing.
    #[test]
    fn reads_the_code_from_the_file() {
        let path = std::env::temp_dir().join(format!("calls-{}.bin", std::process::id()));
        // 0..5: call rel32; 5..8: mov %rax,%rdi; 8..10: call *%rax.
        std::fs::write(&path, [0xE8, 0, 0, 0, 0, 0x48, 0x89, 0xC7, 0xFF, 0xD0]).unwrap();
        let mut c = CallCheck::default();
        assert!(c.follows_call(&path, 5));
        assert!(!c.follows_call(&path, 8));
        assert!(c.follows_call(&path, 10));
        assert!(!c.follows_call(&path, 1));
        assert!(c.follows_call(Path::new("/nonexistent/file"), 100));
        let _ = std::fs::remove_file(&path);
    }
}
