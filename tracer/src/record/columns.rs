//! The column layout of an events batch: what makes a recording small.
//!
//! A batch is kept in memory as events in order, each a little-endian `u16` length and its
//! bytes (the plain layout). Stored, it is laid out by columns: the count, every length, then
//! for each distinct length (in order of first appearance) the matrix of its events, each
//! 8-byte word replaced by its difference from the same word of the previous event of that
//! length, stored byte column by byte column. Timestamps, pids, call sites and neighbouring
//! addresses become runs of zero bytes, which deflate takes to almost nothing.

/// The events of a plain-layout batch, as byte ranges; `None` if it is malformed.
fn events(plain: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < plain.len() {
        let len = usize::from(u16::from_le_bytes(
            plain.get(pos..pos + 2)?.try_into().ok()?,
        ));
        out.push(plain.get(pos + 2..pos + 2 + len)?);
        pos += 2 + len;
    }
    Some(out)
}

/// The lengths in order of first appearance, with how many events have each, and the group
/// of each event.
fn groups(lengths: impl Iterator<Item = usize>) -> (Vec<(usize, usize)>, Vec<u32>) {
    let mut index = GroupIndex::default();
    let mut of_event = Vec::new();
    for len in lengths {
        let i = index.find_or_add(len);
        index.groups[i].1 += 1;
        of_event.push(i as u32);
    }
    (index.groups, of_event)
}

/// Groups by length. A batch has a handful of lengths (one per event kind), in runs: the last
/// one found is tried first, then the others in turn; past a few (a hostile batch can have
/// thousands) a hash index takes over, so finding one never costs more than a hash.
#[derive(Default)]
struct GroupIndex {
    groups: Vec<(usize, usize)>,
    last: usize,
    hashed: Option<foldhash::HashMap<usize, usize>>,
}

impl GroupIndex {
    const SCANNED: usize = 16;

    fn find_or_add(&mut self, len: usize) -> usize {
        if self.groups.get(self.last).is_some_and(|g| g.0 == len) {
            return self.last;
        }
        let found = match &self.hashed {
            Some(index) => index.get(&len).copied(),
            None => self.groups.iter().position(|g| g.0 == len),
        };
        self.last = found.unwrap_or_else(|| {
            self.groups.push((len, 0));
            let i = self.groups.len() - 1;
            if let Some(index) = &mut self.hashed {
                index.insert(len, i);
            } else if self.groups.len() > Self::SCANNED {
                let index = self.groups.iter().enumerate().map(|(i, g)| (g.0, i));
                self.hashed = Some(index.collect());
            }
            i
        });
        self.last
    }
}

/// An 8x8 matrix of bytes, one row per word (byte j of word i is element (i, j)),
/// transposed: byte j of word i becomes byte i of word j. Blocks of 1, 2, then 4 bytes are
/// swapped across the diagonal, in registers.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn transpose8(mut a: [u64; 8]) -> [u64; 8] {
    const MASKS: [u64; 3] = [
        0x00ff_00ff_00ff_00ff,
        0x0000_ffff_0000_ffff,
        0x0000_0000_ffff_ffff,
    ];
    for (stage, mask) in MASKS.into_iter().enumerate() {
        let d = 1 << stage;
        let shift = 8 * d as u32;
        for i in (0..8).filter(|i| i & d == 0) {
            let t = ((a[i] >> shift) ^ a[i + d]) & mask;
            a[i + d] ^= t;
            a[i] ^= t << shift;
        }
    }
    a
}

/// [`transpose8`] with SSE2's byte, word and double-word interleaves (every x86-64 has SSE2):
/// a dozen instructions for the eight words, against six dozen.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn transpose8_fast(a: [u64; 8]) -> [u64; 8] {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of the x86-64 baseline; the intrinsics only move register values.
    unsafe {
        let r = |i: usize| _mm_cvtsi64_si128(a[i] as i64);
        // Bytes of rows 0 and 1 interleaved, and so on: 16-bit pairs of each column's bytes.
        let x0 = _mm_unpacklo_epi8(r(0), r(1));
        let x1 = _mm_unpacklo_epi8(r(2), r(3));
        let x2 = _mm_unpacklo_epi8(r(4), r(5));
        let x3 = _mm_unpacklo_epi8(r(6), r(7));
        // Then 32-bit quads (rows 0-3, rows 4-7) for columns 0-3 and 4-7.
        let y0 = _mm_unpacklo_epi16(x0, x1);
        let y1 = _mm_unpackhi_epi16(x0, x1);
        let y2 = _mm_unpacklo_epi16(x2, x3);
        let y3 = _mm_unpackhi_epi16(x2, x3);
        // And whole 64-bit words: two columns' worth of transposed rows in each register.
        let z = [
            _mm_unpacklo_epi32(y0, y2),
            _mm_unpackhi_epi32(y0, y2),
            _mm_unpacklo_epi32(y1, y3),
            _mm_unpackhi_epi32(y1, y3),
        ];
        let mut out = [0u64; 8];
        for (i, z) in z.into_iter().enumerate() {
            out[2 * i] = _mm_cvtsi128_si64(z) as u64;
            out[2 * i + 1] = _mm_cvtsi128_si64(_mm_unpackhi_epi64(z, z)) as u64;
        }
        out
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn transpose8_fast(a: [u64; 8]) -> [u64; 8] {
    transpose8(a)
}

fn word(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Lays a plain-layout batch out by columns. A malformed batch, which the recorder never makes,
/// is laid out as an empty one.
pub fn to_columns(plain: &[u8]) -> Vec<u8> {
    let events = events(plain).unwrap_or_default();
    let mut out = Vec::with_capacity(plain.len() + 4);
    out.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for e in &events {
        out.extend_from_slice(&(e.len() as u16).to_le_bytes());
    }
    for (len, count) in groups(events.iter().map(|e| e.len())).0 {
        let rows: Vec<&[u8]> = events.iter().copied().filter(|e| e.len() == len).collect();
        // Delta rows: each full word minus the same word of the previous row.
        let mut delta = vec![0u8; len * count];
        for (r, row) in rows.iter().enumerate() {
            let d = &mut delta[r * len..(r + 1) * len];
            d.copy_from_slice(row);
            if r > 0 {
                for at in (0..len / 8 * 8).step_by(8) {
                    let v = word(row, at).wrapping_sub(word(rows[r - 1], at));
                    d[at..at + 8].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
        for j in 0..len {
            out.extend((0..count).map(|r| delta[r * len + j]));
        }
    }
    out
}

/// Events a batch can hold at most (see `from_columns`).
pub const MAX_BATCH_EVENTS: usize = 1 << 20;

/// Rebuilds the plain layout from the column layout into `plain`, and where each event's
/// bytes lie in it (start, length) into `events`.
pub fn from_columns(
    packed: &[u8],
    plain: &mut Vec<u8>,
    events: &mut Vec<(u32, u32)>,
) -> Result<(), &'static str> {
    const SHORT: &str = "an events batch is shorter than its columns";
    plain.clear();
    events.clear();
    let count = u32::from_le_bytes(packed.get(..4).ok_or(SHORT)?.try_into().expect("4")) as usize;
    // The recorder ends a batch past 256 KiB, so it never holds this many events (each has a
    // header): a hostile batch cannot make the decode's per-event vectors large.
    if count > MAX_BATCH_EVENTS {
        return Err("an events batch claims more events than a batch holds");
    }
    // Two bytes of length per event must be there before anything is sized by the count.
    let lengths = packed
        .get(4..4 + count.checked_mul(2).ok_or(SHORT)?)
        .ok_or(SHORT)?;
    let lengths: Vec<usize> = lengths
        .chunks_exact(2)
        .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
        .collect();
    let mut pos = 4 + 2 * count;
    // The columns hold exactly the events' bytes: checked before anything is sized by them.
    let columns = lengths.iter().sum::<usize>();
    match columns.cmp(&(packed.len() - pos)) {
        std::cmp::Ordering::Greater => return Err(SHORT),
        std::cmp::Ordering::Less => return Err("an events batch has bytes past its columns"),
        std::cmp::Ordering::Equal => {}
    }
    // Each event's place in the plain layout, by length group; the length prefixes written.
    let (groups, group_of) = groups(lengths.iter().copied());
    let mut starts: Vec<Vec<usize>> = groups
        .iter()
        .map(|&(_, rows)| Vec::with_capacity(rows))
        .collect();
    let total = columns + 2 * count;
    // Written in place, without zeroing it first: every byte is written below (each event's
    // length, then each of its words and tail bytes), and nothing can fail from here on (the
    // sizes were checked above), so the length is set once all are.
    plain.reserve(total);
    let mut out = Unfilled {
        ptr: plain.as_mut_ptr(),
        len: total,
    };
    let mut at = 0;
    events.reserve(count);
    for (&len, &group) in lengths.iter().zip(&group_of) {
        out.put(at, &(len as u16).to_le_bytes());
        starts[group as usize].push(at + 2);
        events.push(((at + 2) as u32, len as u32));
        at += 2 + len;
    }
    // By blocks of rows, so that the block's events stay in the cache while each of their
    // words is written: a word's eight byte columns gathered (each read in order), the deltas
    // summed back (carried from block to block), and each row's word written to its event.
    const BLOCK: usize = 64;
    let mut carry: Vec<u64> = Vec::new();
    // Every word of a block is written before it is read.
    let mut words = [0u64; BLOCK];
    for (&(len, rows), starts) in groups.iter().zip(&starts) {
        let cols = &packed[pos..pos + len * rows];
        pos += len * rows;
        let whole = len / 8;
        carry.clear();
        carry.resize(whole, 0);
        for first in (0..rows).step_by(BLOCK) {
            let n = BLOCK.min(rows - first);
            let block_starts = &starts[first..first + n];
            for (w, last) in carry.iter_mut().enumerate() {
                let col = |k: usize| &cols[(w * 8 + k) * rows + first..][..n];
                let c: [&[u8]; 8] = std::array::from_fn(col);
                let words = &mut words[..n];
                // As the slices above are cut; said again so that the compiler can drop the
                // bounds checks in the loops below.
                assert!(c.iter().all(|c| c.len() == words.len()));
                // Eight rows at a time: eight bytes of each column, transposed.
                let mut r = 0;
                while r + 8 <= n {
                    let chunk: [u64; 8] = std::array::from_fn(|k| {
                        u64::from_le_bytes(c[k][r..r + 8].try_into().expect("8 bytes"))
                    });
                    words[r..r + 8].copy_from_slice(&transpose8_fast(chunk));
                    r += 8;
                }
                for (r, v) in words.iter_mut().enumerate().skip(r) {
                    *v = u64::from_le_bytes([
                        c[0][r], c[1][r], c[2][r], c[3][r], c[4][r], c[5][r], c[6][r], c[7][r],
                    ]);
                }
                // In a local: summed through memory, each add would wait for the last store.
                let mut sum = *last;
                for (v, &start) in words.iter().zip(block_starts) {
                    sum = sum.wrapping_add(*v);
                    out.put(start + w * 8, &sum.to_le_bytes());
                }
                *last = sum;
            }
            for j in whole * 8..len {
                let col = &cols[j * rows + first..][..n];
                for (&b, &start) in col.iter().zip(block_starts) {
                    out.put(start + j, &[b]);
                }
            }
        }
    }
    // SAFETY: `total` bytes were reserved, and every one of them is written above: the events
    // tile them (a length prefix, then `len` bytes, each one's start in `starts`), and each
    // event's whole words and tail bytes are written by its group's loops.
    unsafe { plain.set_len(total) };
    Ok(())
}

/// The spare capacity of the plain layout, written before its length is set.
struct Unfilled {
    ptr: *mut u8,
    len: usize,
}

impl Unfilled {
    #[inline(always)]
    fn put(&mut self, at: usize, bytes: &[u8]) {
        // Checked: an out-of-place write would be memory corruption, not a wrong report. The
        // check is a compare the branch predictor always gets right.
        assert!(at + bytes.len() <= self.len, "a write past the batch");
        // SAFETY: within the `len` bytes reserved behind `ptr` (checked above); `bytes` is
        // another buffer.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(at), bytes.len()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(events: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in events {
            out.extend_from_slice(&(e.len() as u16).to_le_bytes());
            out.extend_from_slice(e);
        }
        out
    }

    #[test]
    fn round_trips_mixed_lengths_in_order() {
        let mut events = Vec::new();
        for i in 0..500u64 {
            let len = [80, 104, 64, 5, 0][(i % 5) as usize];
            let e: Vec<u8> = (0..len).map(|j| (i * 7 + j as u64 * 13) as u8).collect();
            events.push(e);
        }
        let batch = plain(&events);
        let packed = to_columns(&batch);
        let mut back = Vec::new();
        let mut ranges = Vec::new();
        from_columns(&packed, &mut back, &mut ranges).unwrap();
        assert_eq!(back, batch);
        let found: Vec<&[u8]> = ranges
            .iter()
            .map(|&(at, len)| &back[at as usize..(at + len) as usize])
            .collect();
        assert_eq!(found, events.iter().map(Vec::as_slice).collect::<Vec<_>>());
        let mut empty = Vec::new();
        from_columns(&to_columns(&[]), &mut empty, &mut Vec::new()).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn transposes_a_byte_matrix() {
        let m: [u64; 8] =
            std::array::from_fn(|i| u64::from_le_bytes(std::array::from_fn(|j| (i * 8 + j) as u8)));
        let t = transpose8(m);
        for (i, row) in t.iter().enumerate() {
            let bytes = row.to_le_bytes();
            for (j, &b) in bytes.iter().enumerate() {
                assert_eq!(b as usize, j * 8 + i, "({i}, {j})");
            }
        }
        assert_eq!(transpose8(t), m);
        // The vector version agrees, on this matrix and on others.
        assert_eq!(transpose8_fast(m), t);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..1000 {
            let m: [u64; 8] = std::array::from_fn(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            });
            assert_eq!(transpose8_fast(m), transpose8(m));
        }
    }

    /// Past a few lengths the groups are found by hash: 300 lengths, in an order that comes
    /// back to old ones, still round-trip.
    #[test]
    fn many_lengths_round_trip() {
        let events: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| {
                let len = (i * 37 % 300) as usize;
                (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
            })
            .collect();
        let batch = plain(&events);
        let (groups, of_event) = groups(events.iter().map(Vec::len));
        assert_eq!(groups.len(), 300);
        assert!(
            of_event
                .iter()
                .zip(&events)
                .all(|(&g, e)| groups[g as usize].0 == e.len())
        );
        let mut back = Vec::new();
        from_columns(&to_columns(&batch), &mut back, &mut Vec::new()).unwrap();
        assert_eq!(back, batch);
    }

    #[test]
    fn malformed_columns_are_errors_not_panics() {
        let batch = plain(&[vec![1; 80], vec![2; 80], vec![3; 64]]);
        let packed = to_columns(&batch);
        let mut out = Vec::new();
        for cut in 0..packed.len() {
            assert!(
                from_columns(&packed[..cut], &mut out, &mut Vec::new()).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = packed.clone();
        longer.push(0);
        assert!(from_columns(&longer, &mut out, &mut Vec::new()).is_err());
        // More events than a batch holds, each of no bytes: refused before anything is sized.
        let many = plain(&vec![Vec::new(); MAX_BATCH_EVENTS + 1]);
        assert!(from_columns(&to_columns(&many), &mut out, &mut Vec::new()).is_err());
        let most = plain(&vec![Vec::new(); MAX_BATCH_EVENTS]);
        assert!(from_columns(&to_columns(&most), &mut out, &mut Vec::new()).is_ok());
        // A count that claims more events than there are bytes for.
        let mut huge = packed.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(from_columns(&huge, &mut out, &mut Vec::new()).is_err());
    }
}
