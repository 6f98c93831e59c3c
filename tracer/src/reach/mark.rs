//! Which live blocks a process can still reach, as memcheck decides it: conservatively, over
//! words.
//!
//! Every aligned 8-byte word of the roots (the process's writable memory outside its heap, and
//! its threads' registers) that holds an address inside a live block reaches that block: a
//! start pointer reaches it for certain, one into its middle only possibly. Blocks reached are
//! scanned in turn: a block reached for certain passes certainty on through start pointers;
//! one reached only possibly passes on "possibly". What no root reaches is then taken in
//! address order: each block still unreached heads a group of its own (lost), and every
//! unreached block it leads to is indirectly lost, including an earlier head, whose group
//! joins this one. A cycle with no pointer from outside is one lost block and the rest
//! indirect, as memcheck reports it.

use crate::events::LeakKind;

/// The live blocks, lowest address first, and where each one's bytes are.
pub struct Blocks<'a> {
    /// Block starts, ascending.
    pub starts: &'a [u64],
    /// Block sizes, by the same index.
    pub sizes: &'a [u64],
    /// A block's contents (as read from the process; zeros where it could not be read).
    pub contents: &'a dyn Fn(usize) -> &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Unreached,
    Possible,
    Reachable,
    Indirect,
}

/// The marking in progress.
pub struct Marker<'a> {
    blocks: Blocks<'a>,
    state: Vec<State>,
    /// Blocks whose state went up and whose words are still to be read.
    pending: Vec<usize>,
    lowest: u64,
    highest: u64,
    /// Bytes of blocks read.
    pub scanned: u64,
}

/// A word that points into block `i`: whether at its start.
fn hit(blocks: &Blocks<'_>, word: u64) -> Option<(usize, bool)> {
    let after = blocks.starts.partition_point(|&s| s <= word);
    let i = after.checked_sub(1)?;
    let start = blocks.starts[i];
    let size = blocks.sizes[i];
    if word == start {
        return Some((i, true));
    }
    (word - start < size).then_some((i, false))
}

impl<'a> Marker<'a> {
    pub fn new(blocks: Blocks<'a>) -> Self {
        let n = blocks.starts.len();
        let lowest = blocks.starts.first().copied().unwrap_or(u64::MAX);
        let highest = blocks
            .starts
            .iter()
            .zip(blocks.sizes)
            .map(|(&s, &z)| s.saturating_add(z.max(1)))
            .max()
            .unwrap_or(0);
        Marker {
            blocks,
            state: vec![State::Unreached; n],
            pending: Vec::new(),
            lowest,
            highest,
            scanned: 0,
        }
    }

    /// A word of the roots.
    pub fn root(&mut self, word: u64) {
        self.reach(word, true);
    }

    /// The words of a stretch of root memory.
    pub fn root_bytes(&mut self, bytes: &[u8]) {
        for w in bytes.chunks_exact(8) {
            let word = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            if word >= self.lowest && word < self.highest {
                self.reach(word, true);
            }
        }
    }

    /// `word` seen in memory reached for certain (`definite`) or only possibly.
    fn reach(&mut self, word: u64, definite: bool) {
        let Some((i, at_start)) = hit(&self.blocks, word) else {
            return;
        };
        match self.state[i] {
            State::Reachable => {}
            _ if at_start && definite => {
                self.state[i] = State::Reachable;
                self.pending.push(i);
            }
            State::Unreached => {
                self.state[i] = State::Possible;
                self.pending.push(i);
            }
            _ => {}
        }
    }

    /// Reads every block reached until none is left; `stop` is asked between blocks and ends
    /// the marking early when it says so (false is returned then).
    pub fn propagate(&mut self, stop: &dyn Fn() -> bool) -> bool {
        let mut since_asked = 0u64;
        while let Some(i) = self.pending.pop() {
            let definite = self.state[i] == State::Reachable;
            let bytes = (self.blocks.contents)(i);
            self.scanned = self.scanned.saturating_add(bytes.len() as u64);
            since_asked += bytes.len() as u64;
            for w in bytes.chunks_exact(8) {
                let word = u64::from_le_bytes(w.try_into().expect("8 bytes"));
                if word >= self.lowest && word < self.highest {
                    self.reach(word, definite);
                }
            }
            if since_asked >= 1 << 20 {
                since_asked = 0;
                if stop() {
                    return false;
                }
            }
        }
        true
    }

    /// The groups of blocks no root reaches: each block still unreached, in address order,
    /// leads to the unreached blocks its words point into (start or middle), which are
    /// indirectly lost. Then every block's kind.
    pub fn finish(mut self) -> (Vec<LeakKind>, u64) {
        let mut stack = Vec::new();
        for head in 0..self.state.len() {
            if self.state[head] != State::Unreached {
                continue;
            }
            stack.push(head);
            while let Some(i) = stack.pop() {
                let bytes = (self.blocks.contents)(i);
                self.scanned = self.scanned.saturating_add(bytes.len() as u64);
                for w in bytes.chunks_exact(8) {
                    let word = u64::from_le_bytes(w.try_into().expect("8 bytes"));
                    if word < self.lowest || word >= self.highest {
                        continue;
                    }
                    if let Some((j, _)) = hit(&self.blocks, word)
                        && j != head
                        && self.state[j] == State::Unreached
                    {
                        self.state[j] = State::Indirect;
                        stack.push(j);
                    }
                }
            }
        }
        let kinds = self
            .state
            .iter()
            .map(|s| match s {
                State::Unreached => LeakKind::Lost,
                State::Indirect => LeakKind::Indirect,
                State::Possible => LeakKind::Possible,
                State::Reachable => LeakKind::Reachable,
            })
            .collect();
        (kinds, self.scanned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake heap: blocks at `starts` of `sizes` bytes, each holding the given words.
    struct Heap {
        starts: Vec<u64>,
        sizes: Vec<u64>,
        bytes: Vec<Vec<u8>>,
    }

    impl Heap {
        fn new(blocks: &[(u64, u64, &[u64])]) -> Self {
            let mut h = Heap {
                starts: Vec::new(),
                sizes: Vec::new(),
                bytes: Vec::new(),
            };
            for &(start, size, words) in blocks {
                let mut b = vec![0u8; size as usize];
                for (i, w) in words.iter().enumerate() {
                    b[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
                }
                h.starts.push(start);
                h.sizes.push(size);
                h.bytes.push(b);
            }
            h
        }

        fn classify(&self, roots: &[u64]) -> Vec<LeakKind> {
            let contents = |i: usize| self.bytes[i].as_slice();
            let mut m = Marker::new(Blocks {
                starts: &self.starts,
                sizes: &self.sizes,
                contents: &contents,
            });
            for &r in roots {
                m.root(r);
            }
            let mut bytes = Vec::new();
            for r in roots {
                bytes.extend_from_slice(&r.to_le_bytes());
            }
            m.root_bytes(&bytes);
            assert!(m.propagate(&|| false));
            m.finish().0
        }
    }

    use LeakKind::{Indirect, Lost, Possible, Reachable};

    /// The categories of workloads/reach.c, on a fake heap: a list whose head is dropped, a
    /// block dropped outright, one held by an interior pointer, one by a root, a cycle.
    #[test]
    fn classifies_as_memcheck_does() {
        let heap = Heap::new(&[
            // A list 0x1000 -> 0x2000 -> 0x3000, its head dropped.
            (0x1000, 64, &[0x2000]),
            (0x2000, 64, &[0x3000]),
            (0x3000, 64, &[]),
            // Dropped outright.
            (0x4000, 64, &[]),
            // Held only through 0x5010.
            (0x5000, 64, &[0x6000]),
            // Reached from a possibly-reached block: possibly too.
            (0x6000, 64, &[]),
            // Held by a root; holds 0x8000 by its start.
            (0x7000, 64, &[0x8000]),
            (0x8000, 64, &[]),
            // A cycle with no pointer from outside.
            (0x9000, 64, &[0xa000]),
            (0xa000, 64, &[0xb000]),
            (0xb000, 64, &[0x9000]),
        ]);
        let kinds = heap.classify(&[0x5010, 0x7000, 0x1234]);
        assert_eq!(
            kinds,
            vec![
                Lost, Indirect, Indirect, Lost, Possible, Possible, Reachable, Reachable, Lost,
                Indirect, Indirect
            ]
        );
    }

    /// A later group's head reaching an earlier head takes that group in: memcheck folds it.
    #[test]
    fn an_earlier_head_joins_the_group_that_reaches_it() {
        let heap = Heap::new(&[(0x1000, 32, &[]), (0x2000, 32, &[0x1008])]);
        assert_eq!(heap.classify(&[]), vec![Indirect, Lost]);
    }

    /// A start pointer from a possibly-reached block does not make certain; a root's later
    /// start pointer does, and is passed on.
    #[test]
    fn certainty_only_from_certain_blocks() {
        let heap = Heap::new(&[
            (0x1000, 32, &[0x2000]),
            (0x2000, 32, &[0x3000]),
            (0x3000, 32, &[]),
        ]);
        assert_eq!(heap.classify(&[0x1010]), vec![Possible, Possible, Possible]);
        assert_eq!(heap.classify(&[0x1010, 0x1000]), vec![Reachable; 3]);
        // An address just past a block's end reaches nothing; a zero-size block by its start.
        let heap = Heap::new(&[(0x1000, 16, &[]), (0x1010, 0, &[])]);
        assert_eq!(heap.classify(&[0x1010]), vec![Lost, Reachable]);
        let heap = Heap::new(&[(0x1000, 16, &[])]);
        assert_eq!(heap.classify(&[0x1010, 0xfff]), vec![Lost]);
    }
}
