//! How much code a process runs: what the stack map is sized from when `--max-stacks` is not
//! given. Distinct allocation stacks grow with the code that allocates: a compiler's 30 MiB of
//! code keeps ten times the stacks of a 3 MiB tool.

use std::path::{Path, PathBuf};

use object::{Object, ObjectSegment, SegmentFlags};

/// Stacks kept for every this many bytes of code.
const CODE_BYTES_PER_STACK: u64 = 256;
/// The least the map holds (about 32 MiB when unwound): what a small C++ compile needs, and a
/// `--follow` run's later programs may be larger than its first.
pub const MIN_STACKS: u32 = 65_536;
/// The most it is sized to without being asked (about 128 MiB when unwound).
pub const MAX_AUTO_STACKS: u32 = 262_144;

/// The stack map's entries for `code_bytes` of code: a power of two from [`MIN_STACKS`] to
/// [`MAX_AUTO_STACKS`].
pub fn stacks_for_code(code_bytes: u64) -> u32 {
    let want = (code_bytes / CODE_BYTES_PER_STACK).next_power_of_two();
    want.clamp(u64::from(MIN_STACKS), u64::from(MAX_AUTO_STACKS)) as u32
}

/// The bytes of executable segments in `files` (each read through `root`, the process's view
/// of the file system); files that do not parse count nothing.
pub fn code_bytes(root: &Path, files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|f| {
            let path = root.join(f.strip_prefix("/").unwrap_or(f));
            file_code_bytes(&path).unwrap_or(0)
        })
        .sum()
}

fn file_code_bytes(path: &Path) -> Option<u64> {
    // Read as the parser asks: the headers only, not a compiler's whole 30 MiB.
    let cache = object::ReadCache::new(std::fs::File::open(path).ok()?);
    let elf = object::File::parse(&cache).ok()?;
    const PF_X: u32 = 1;
    Some(
        elf.segments()
            .filter(|s| matches!(s.flags(), SegmentFlags::Elf { p_flags } if p_flags & PF_X != 0))
            .map(|s| s.size())
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_grows_with_the_code_within_bounds() {
        assert_eq!(stacks_for_code(0), MIN_STACKS);
        // sqlite3 and its libraries: about 2 MiB of code.
        assert_eq!(stacks_for_code(2 << 20), MIN_STACKS);
        // cc1plus: about 30 MiB.
        assert_eq!(stacks_for_code(30 << 20), 131_072);
        assert_eq!(stacks_for_code(1 << 40), MAX_AUTO_STACKS);
    }

    #[test]
    fn code_is_the_executable_segments() {
        let exe = std::env::current_exe().unwrap();
        let bytes = code_bytes(Path::new("/"), std::slice::from_ref(&exe));
        let len = std::fs::metadata(&exe).unwrap().len();
        assert!(bytes > 0 && bytes < len, "{bytes} of {len}");
        assert_eq!(code_bytes(Path::new("/"), &["/nonexistent".into()]), 0);
    }
}
