//! The column layout of an events batch: what makes a recording small.
//!
//! A batch is kept in memory as events in order, each a little-endian `u16` length and its
//! bytes (the plain layout). Stored, it is laid out by columns: the count, every length, then
//! for each distinct length (in order of first appearance) the matrix of its events, each
//! 8-byte word replaced by its difference from the same word of the previous event of that
//! length, stored byte column by byte column. Timestamps, pids, call sites and neighbouring
//! addresses become runs of zero bytes, which deflate takes to almost nothing.

use foldhash::HashMap;

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

/// The lengths in order of first appearance, with how many events have each.
fn groups(lengths: impl Iterator<Item = usize>) -> Vec<(usize, usize)> {
    let mut index: HashMap<usize, usize> = HashMap::default();
    let mut groups: Vec<(usize, usize)> = Vec::new();
    for len in lengths {
        let i = *index.entry(len).or_insert_with(|| {
            groups.push((len, 0));
            groups.len() - 1
        });
        groups[i].1 += 1;
    }
    groups
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
    for (len, count) in groups(events.iter().map(|e| e.len())) {
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

/// Rebuilds the plain layout from the column layout into `plain`.
pub fn from_columns(packed: &[u8], plain: &mut Vec<u8>) -> Result<(), &'static str> {
    const SHORT: &str = "an events batch is shorter than its columns";
    plain.clear();
    let count = u32::from_le_bytes(packed.get(..4).ok_or(SHORT)?.try_into().expect("4")) as usize;
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
    let groups = groups(lengths.iter().copied());
    let group_of: HashMap<usize, usize> = groups
        .iter()
        .enumerate()
        .map(|(i, &(len, _))| (len, i))
        .collect();
    let mut starts: Vec<Vec<usize>> = groups
        .iter()
        .map(|&(_, rows)| Vec::with_capacity(rows))
        .collect();
    plain.resize(columns + 2 * count, 0);
    let mut at = 0;
    for &len in &lengths {
        plain[at..at + 2].copy_from_slice(&(len as u16).to_le_bytes());
        starts[group_of[&len]].push(at + 2);
        at += 2 + len;
    }
    // Word by word: its eight byte columns gathered (each read in order), the deltas summed
    // back, and each row's word written to its event.
    let mut words: Vec<u64> = Vec::new();
    for (&(len, rows), starts) in groups.iter().zip(&starts) {
        let cols = &packed[pos..pos + len * rows];
        pos += len * rows;
        for w in 0..len / 8 {
            words.clear();
            words.resize(rows, 0);
            for k in 0..8 {
                let col = &cols[(w * 8 + k) * rows..(w * 8 + k + 1) * rows];
                for (v, &b) in words.iter_mut().zip(col) {
                    *v |= u64::from(b) << (8 * k);
                }
            }
            let mut last = 0u64;
            for (v, &start) in words.iter().zip(starts) {
                last = last.wrapping_add(*v);
                let at = start + w * 8;
                plain[at..at + 8].copy_from_slice(&last.to_le_bytes());
            }
        }
        for j in len / 8 * 8..len {
            for (&b, &start) in cols[j * rows..(j + 1) * rows].iter().zip(starts) {
                plain[start + j] = b;
            }
        }
    }
    Ok(())
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
        from_columns(&packed, &mut back).unwrap();
        assert_eq!(back, batch);
        let mut empty = Vec::new();
        from_columns(&to_columns(&[]), &mut empty).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn malformed_columns_are_errors_not_panics() {
        let batch = plain(&[vec![1; 80], vec![2; 80], vec![3; 64]]);
        let packed = to_columns(&batch);
        let mut out = Vec::new();
        for cut in 0..packed.len() {
            assert!(
                from_columns(&packed[..cut], &mut out).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = packed.clone();
        longer.push(0);
        assert!(from_columns(&longer, &mut out).is_err());
        // A count that claims more events than there are bytes for.
        let mut huge = packed.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(from_columns(&huge, &mut out).is_err());
    }
}
