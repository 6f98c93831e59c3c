//! A stopped process's memory as a leak check reads it: the roots (its writable mappings
//! outside the allocator's heaps, each thread's stack from its stack pointer up) and the live
//! blocks' bytes, read with `process_vm_readv` in large pieces.

use std::mem::MaybeUninit;

/// One line of `/proc/PID/maps` that a check may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub writable: bool,
    pub readable: bool,
    pub name: String,
}

/// The mappings of `/proc/PID/maps` text.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            let perms = fields.next()?.as_bytes();
            let name = fields.nth(3).unwrap_or("").to_string();
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                readable: perms.first() == Some(&b'r'),
                writable: perms.get(1) == Some(&b'w'),
                name,
            })
        })
        .collect()
}

/// glibc's thread heaps are aligned to their largest size (64 MiB on 64-bit systems).
const THREAD_HEAP_ALIGN: u64 = 64 << 20;

/// Whether a mapping is the allocator's own heap: the main arena (`[heap]`) or a thread heap
/// (anonymous, aligned, beginning with its arena's header and holding live blocks after it).
/// Its free chunks keep stale pointers: never a root. Live blocks elsewhere (glibc's mmapped
/// chunks, whose block begins 16 bytes into the mapping) are cut out of their mapping's roots.
fn is_heap(m: &Mapping, first_block: Option<u64>) -> bool {
    m.name == "[heap]"
        || (m.name.is_empty()
            && m.start.is_multiple_of(THREAD_HEAP_ALIGN)
            && first_block.is_some_and(|b| b != m.start + 16))
}

/// A device's mapping may have side effects when read: never a root.
fn is_device(m: &Mapping) -> bool {
    m.name.starts_with("/dev/")
        && !m.name.starts_with("/dev/zero")
        && !m.name.starts_with("/dev/shm/")
}

/// The stretches of memory whose words are roots: every readable and writable mapping that is
/// not a heap or a device, a thread's stack only from its stack pointer up, and never the
/// bytes of a live block (`blocks`: starts ascending, with sizes).
pub fn roots(
    maps: &[Mapping],
    stack_pointers: &[u64],
    starts: &[u64],
    sizes: &[u64],
) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for m in maps {
        if !(m.readable && m.writable) || is_device(m) {
            continue;
        }
        let first = starts.partition_point(|&s| s < m.start);
        let last = starts.partition_point(|&s| s < m.end);
        if is_heap(m, (first < last).then(|| starts[first])) {
            continue;
        }
        // A stack: what lies below its thread's stack pointer is dead.
        let from = stack_pointers
            .iter()
            .filter(|&&sp| sp >= m.start && sp < m.end)
            .min()
            .map_or(m.start, |&sp| sp & !7);
        let mut at = from;
        for i in first..last {
            let (s, e) = (starts[i], starts[i].saturating_add(sizes[i]));
            if s > at {
                out.push((at, s.min(m.end)));
            }
            at = at.max(e);
        }
        if at < m.end {
            out.push((at, m.end));
        }
    }
    out.retain(|(s, e)| e > s);
    out
}

/// Reads `len` bytes of `pid`'s memory at `addr` into `buf` (replacing what it held); bytes
/// that cannot be read are zeros.
pub fn read(pid: i32, addr: u64, len: usize, buf: &mut Vec<u8>) {
    buf.clear();
    buf.reserve(len);
    fill(pid, addr, &mut buf.spare_capacity_mut()[..len]);
    // SAFETY: `fill` wrote every one of the first `len` bytes.
    unsafe { buf.set_len(len) };
}

/// Fills `dest` with `pid`'s memory at `addr`, in as few reads as it allows; pages that cannot
/// be read are zeros. Written straight into `dest`: a buffer zeroed first would be touched
/// twice.
fn fill(pid: i32, addr: u64, dest: &mut [MaybeUninit<u8>]) {
    let len = dest.len();
    let mut got = 0;
    while got < len {
        let rest = &mut dest[got..];
        match read_at(pid, addr + got as u64, rest.as_mut_ptr().cast(), rest.len()) {
            Some(n) if n > 0 => got += n,
            _ => {
                // Unreadable from here to the next page.
                let page_end = (addr + got as u64 + 1).next_multiple_of(4096) - addr;
                let next = (page_end as usize).min(len);
                dest[got..next].fill(MaybeUninit::new(0));
                got = next;
            }
        }
    }
}

/// One `process_vm_readv` of up to `len` bytes into `out`: how many were read.
fn read_at(pid: i32, addr: u64, out: *mut u8, len: usize) -> Option<usize> {
    let local = libc::iovec {
        iov_base: out.cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: `local` describes memory of ours writable for `len` bytes (callers pass a slice's
    // pointer and length); the remote range is only read, by the kernel, from the other
    // process.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    usize::try_from(n).ok()
}

/// Ranges closer than this are read as one: a heap's blocks lie a chunk header apart, and one
/// large read costs far less than many small ones (each is pinned page by page).
const SPAN_GAP: u64 = 4096;

/// Largest single read.
const READ_CHUNK: u64 = 4 << 20;

/// Reads many ranges of `pid`'s memory (ascending by start) into one buffer: nearby ranges are
/// read as one span, in large reads. Returns where each range's bytes begin in `image`.
/// Ranges that cannot be read are left zero.
pub fn read_many(pid: i32, ranges: &[(u64, u64)], image: &mut Vec<u8>) -> Vec<usize> {
    // The spans, and each range's place in them.
    let mut spans: Vec<(u64, u64, usize)> = Vec::new();
    let mut offsets = Vec::with_capacity(ranges.len());
    let mut total = 0usize;
    for &(addr, len) in ranges {
        let end = addr.saturating_add(len);
        match spans.last_mut() {
            Some((start, span_end, at))
                if addr >= *start && addr <= span_end.saturating_add(SPAN_GAP) =>
            {
                if end > *span_end {
                    total += (end - *span_end) as usize;
                    *span_end = end;
                }
                offsets.push(*at + (addr - *start) as usize);
            }
            _ => {
                spans.push((addr, end, total));
                offsets.push(total);
                total += len as usize;
            }
        }
    }
    image.clear();
    image.reserve(total);
    let spare = &mut image.spare_capacity_mut()[..total];
    for &(start, end, at) in &spans {
        let mut pos = start;
        while pos < end {
            let len = (end - pos).min(READ_CHUNK);
            let o = at + (pos - start) as usize;
            fill(pid, pos, &mut spare[o..o + len as usize]);
            pos += len;
        }
    }
    // SAFETY: the spans lie end to end over the first `total` bytes, and `fill` wrote each.
    unsafe { image.set_len(total) };
    offsets
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0a0000000-55d0a0001000 r--p 00000000 08:01 123 /usr/bin/prog
55d0a0003000-55d0a0004000 rw-p 00002000 08:01 123 /usr/bin/prog
55d0a1000000-55d0a1100000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
7f0004000000-7f0004021000 rw-p 00000000 00:00 0
7f0004021000-7f0008000000 ---p 00000000 00:00 0
7f1000000000-7f1000010000 rw-p 00000000 00:00 0
7f2000000000-7f2000001000 rw-s 00000000 00:05 9 /dev/dri/card0
7ffc00000000-7ffc00100000 rw-p 00000000 00:00 0 [stack]
";

    /// The roots leave out code, the main heap, a thread heap, a device and what lies below
    /// the stack pointer; a live block in an ordinary mapping is cut out of it.
    #[test]
    fn roots_are_writable_memory_outside_heaps_and_blocks() {
        let maps = parse_maps(MAPS);
        assert_eq!(maps.len(), 9);
        assert_eq!(maps[2].name, "[heap]");
        assert!(maps[1].writable && !maps[0].writable && !maps[5].readable);
        // Blocks: one in [heap], one mmapped chunk at 0x7f0000000010, one in the thread heap
        // (past its header).
        let starts = [0x55d0_a100_0010, 0x7f00_0000_0010, 0x7f00_0400_1000];
        let sizes = [32, 0x1000, 64];
        let roots = roots(
            &maps,
            &[0x7ffc_000f_f008, 0x7f10_0000_8003],
            &starts,
            &sizes,
        );
        assert_eq!(
            roots,
            vec![
                (0x55d0_a000_3000, 0x55d0_a000_4000),
                (0x7f00_0000_0000, 0x7f00_0000_0010),
                (0x7f00_0000_1010, 0x7f00_0010_0000),
                (0x7f10_0000_8000, 0x7f10_0001_0000),
                (0x7ffc_000f_f008, 0x7ffc_0010_0000),
            ]
        );
    }

    /// Our own memory, read back through process_vm_readv, with an unreadable range zeroed.
    #[test]
    fn reads_own_memory_in_batches() {
        let data: Vec<u64> = (0..4096).collect();
        let pid = std::process::id() as i32;
        let base = data.as_ptr() as u64;
        let mut image = Vec::new();
        // An unreadable range, then two of ours close enough to be read as one span.
        let ranges = [(8, 4096), (base + 8, 16), (base + 800, 8)];
        let offsets = read_many(pid, &ranges, &mut image);
        assert_eq!(offsets, vec![0, 4096, 4096 + 792]);
        assert_eq!(image.len(), 4096 + 800);
        let word = |o: usize| u64::from_le_bytes(image[o..o + 8].try_into().unwrap());
        assert_eq!((word(4096), word(4104), word(4096 + 792)), (1, 2, 100));
        assert!(image[..4096].iter().all(|&b| b == 0));
    }
}
