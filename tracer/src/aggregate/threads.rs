//! Per-thread state: one entry per thread id, found without a hash while the events keep
//! coming from the same thread (the common case: a thread's calls come in runs).

use foldhash::HashMap as FastMap;

#[derive(Debug, Clone)]
pub struct Threads<T> {
    index: FastMap<u32, u32>,
    states: Vec<T>,
    /// The thread last looked up, and its state's place.
    last: Option<(u32, u32)>,
}

impl<T> Default for Threads<T> {
    fn default() -> Self {
        Threads {
            index: FastMap::default(),
            states: Vec::new(),
            last: None,
        }
    }
}

impl<T: Default> Threads<T> {
    /// The state of thread `tid`, made when it is first seen.
    #[inline]
    pub fn get_mut(&mut self, tid: u32) -> &mut T {
        let i = match self.last {
            Some((t, i)) if t == tid => i,
            _ => {
                let next = self.states.len() as u32;
                let i = *self.index.entry(tid).or_insert(next);
                if i == next {
                    self.states.push(T::default());
                }
                self.last = Some((tid, i));
                i
            }
        };
        &mut self.states[i as usize]
    }

    /// The state of thread `tid` if it has one.
    #[inline]
    pub fn peek_mut(&mut self, tid: u32) -> Option<&mut T> {
        let i = match self.last {
            Some((t, i)) if t == tid => i,
            _ => *self.index.get(&tid)?,
        };
        Some(&mut self.states[i as usize])
    }

    /// How many threads have a state.
    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Every thread's state.
    pub fn states_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.states.iter_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_has_one_state_whatever_the_order() {
        let mut t: Threads<u64> = Threads::default();
        for (tid, add) in [(7, 1), (7, 2), (9, 10), (7, 4), (9, 20), (3, 100)] {
            *t.get_mut(tid) += add;
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.peek_mut(7).copied(), Some(7));
        assert_eq!(t.peek_mut(9).copied(), Some(30));
        assert_eq!(t.peek_mut(3).copied(), Some(100));
        assert_eq!(t.peek_mut(4), None, "looking does not make a state");
        assert_eq!(t.len(), 3);
        t.states_mut().for_each(|s| *s = 0);
        assert_eq!(t.peek_mut(9).copied(), Some(0));
    }
}
