//! The order in which records leave the per-CPU rings: by timestamp across the rings, in ring
//! order within one.
//!
//! One socket's transitions come from several CPUs (a process on one, a softirq on another),
//! and each CPU writes to its own ring, so the rings are merged by the records' timestamps.
//! Programs read the time after reserving their record, under the socket's lock: a socket's
//! records are in time order whichever CPU wrote them. A record's timestamp is not more than
//! the time its ring was last looked at, so a record is taken only once every ring either
//! shows a later head or was found empty after the time the record's drain began: no record
//! that an empty ring receives afterwards can be older than the bound of that drain.

use std::{cmp::Reverse, collections::BinaryHeap};

/// The heads of a set of rings, and which one to take from next: the rings whose first
/// unread record is known, by its timestamp (ties to the lower CPU), in a min-heap, so that a
/// take costs a logarithm of the CPUs holding records rather than a look at every CPU.
#[derive(Debug)]
pub struct Heads {
    /// (timestamp, ring) of each ring's first unread record, where it was looked at.
    known: BinaryHeap<Reverse<(u64, usize)>>,
    /// Rings not looked at since their last record was taken, or since the drain began.
    unknown: Vec<usize>,
    /// Rings found empty (or their next record not yet submitted) in this drain.
    empty: Vec<usize>,
}

impl Heads {
    #[must_use]
    pub fn new(rings: usize) -> Self {
        Self {
            known: BinaryHeap::with_capacity(rings),
            unknown: (0..rings).collect(),
            empty: Vec::with_capacity(rings),
        }
    }

    /// A new drain: rings found empty are looked at again.
    fn restart(&mut self) {
        self.unknown.append(&mut self.empty);
    }

    /// The ring whose head record comes next, if that record's timestamp is at most `bound`.
    /// `peek(ring)` gives the timestamp of a ring's head record, without taking it (`None`:
    /// the ring is empty). The caller then takes that ring's head record.
    fn next(&mut self, bound: u64, mut peek: impl FnMut(usize) -> Option<u64>) -> Option<usize> {
        for ring in self.unknown.drain(..) {
            match peek(ring) {
                Some(ts) => self.known.push(Reverse((ts, ring))),
                None => self.empty.push(ring),
            }
        }
        let Reverse((ts, ring)) = *self.known.peek()?;
        if ts > bound {
            return None;
        }
        self.known.pop();
        self.unknown.push(ring);
        Some(ring)
    }

    /// Takes up to `limit` records stamped at most `bound` from `rings`, in time order, and
    /// returns how many it took. From the ring whose head comes next it takes a run, for as
    /// long as that ring's head comes first: each record read once, with no look at the other
    /// rings' heads (known already). `peek(ring)` gives the time of a ring's head record,
    /// leaving it unread (`None`: empty); `take(ring, turn)` reads the head record and takes
    /// it only if [`Turn::comes_first`] says so, else leaves it unread.
    pub fn drain<R>(
        &mut self,
        rings: &mut [R],
        bound: u64,
        limit: usize,
        mut peek: impl FnMut(&mut R) -> Option<u64>,
        mut take: impl FnMut(&mut R, &Turn<'_>) -> Look,
    ) -> usize {
        self.restart();
        let mut taken = 0;
        while taken < limit
            && let Some(ring) = self.next(bound, |r| peek(&mut rings[r]))
        {
            while taken < limit {
                let turn = Turn {
                    heads: self,
                    ring,
                    bound,
                };
                match take(&mut rings[ring], &turn) {
                    Look::Taken => taken += 1,
                    Look::Left(time) => {
                        self.found(ring, Some(time));
                        break;
                    }
                    Look::Empty => {
                        self.found(ring, None);
                        break;
                    }
                }
            }
        }
        taken
    }

    /// Whether `ring`'s head, at `time`, is the record to take next: within `bound`, and
    /// before every other ring's known head (ties to the lower CPU). For the ring [`Heads::next`]
    /// last gave, whose next head the caller read itself.
    fn comes_first(&self, ring: usize, time: u64, bound: u64) -> bool {
        debug_assert!(
            self.unknown.iter().all(|&r| r == ring),
            "other heads unread"
        );
        time <= bound
            && self
                .known
                .peek()
                .is_none_or(|&Reverse(head)| (time, ring) < head)
    }

    /// What the caller found at the head of `ring` and left there: the record's timestamp,
    /// or `None` when the ring was empty.
    fn found(&mut self, ring: usize, head: Option<u64>) {
        self.unknown.retain(|&r| r != ring);
        match head {
            Some(time) => self.known.push(Reverse((time, ring))),
            None => self.empty.push(ring),
        }
    }

    /// Whether a ring was found holding a record (one past the bound of the last drain).
    #[must_use]
    pub fn holds_records(&self) -> bool {
        !self.known.is_empty()
    }
}

/// The ring a drain is taking a run from, for the caller's look at its head.
pub struct Turn<'a> {
    heads: &'a Heads,
    ring: usize,
    bound: u64,
}

impl Turn<'_> {
    /// Whether the head record, stamped `time`, is the one to take now.
    #[must_use]
    pub fn comes_first(&self, time: u64) -> bool {
        self.heads.comes_first(self.ring, time, self.bound)
    }
}

/// What a look at a ring's head did.
pub enum Look {
    /// Took the head record.
    Taken,
    /// Left the head record, stamped at this time, unread.
    Left(u64),
    /// Found the ring empty (or its next record not yet submitted).
    Empty,
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// Rings of timestamps: takes every record up to `bound`, in the order the heads give.
    fn drain(heads: &mut Heads, rings: &mut [VecDeque<u64>], bound: u64) -> Vec<u64> {
        heads.restart();
        let mut out = Vec::new();
        while let Some(ring) = heads.next(bound, |r| rings[r].front().copied()) {
            out.push(rings[ring].pop_front().expect("the head that was peeked"));
        }
        out
    }

    /// The same, the way the stream takes records: [`Heads::drain`], in runs.
    fn drain_in_runs(
        heads: &mut Heads,
        rings: &mut [VecDeque<u64>],
        bound: u64,
        limit: usize,
    ) -> Vec<u64> {
        let mut out = Vec::new();
        let taken = heads.drain(
            rings,
            bound,
            limit,
            |r| r.front().copied(),
            |r, turn| match r.front() {
                None => Look::Empty,
                Some(&time) if !turn.comes_first(time) => Look::Left(time),
                Some(_) => {
                    out.extend(r.pop_front());
                    Look::Taken
                }
            },
        );
        assert_eq!(taken, out.len());
        out
    }

    #[test]
    fn runs_from_one_ring_keep_the_order_of_single_takes() {
        let cases: [(&[&[u64]], u64); 5] = [
            (&[&[1, 4, 5, 9], &[2, 3, 10], &[], &[6]], u64::MAX),
            (&[&[1, 2, 3, 8], &[4, 5, 6, 7]], u64::MAX),
            (&[&[1, 2, 3, 8], &[4, 5, 6, 7]], 5),
            (&[&[5, 4], &[3, 6]], u64::MAX),
            (&[&[1, 1, 2, 2], &[1, 2, 2, 3], &[2]], u64::MAX),
        ];
        for (rings, bound) in cases {
            let make = || -> Vec<VecDeque<u64>> {
                rings.iter().map(|r| r.iter().copied().collect()).collect()
            };
            let (mut one, mut runs) = (make(), make());
            let (mut a, mut b) = (Heads::new(one.len()), Heads::new(runs.len()));
            for bound in [bound, u64::MAX] {
                assert_eq!(
                    drain_in_runs(&mut b, &mut runs, bound, usize::MAX),
                    drain(&mut a, &mut one, bound),
                    "{rings:?} up to {bound}"
                );
                assert_eq!(a.holds_records(), b.holds_records());
            }
        }
    }

    #[test]
    fn a_drain_stopped_by_its_limit_goes_on_where_it_stopped() {
        let mut rings = [VecDeque::from([1, 4, 5, 9]), VecDeque::from([2, 3, 10])];
        let mut heads = Heads::new(rings.len());
        let mut out = Vec::new();
        for _ in 0..4 {
            out.extend(drain_in_runs(&mut heads, &mut rings, u64::MAX, 2));
        }
        assert_eq!(out, [1, 2, 3, 4, 5, 9, 10]);
    }

    #[test]
    fn records_leave_in_time_order_across_rings() {
        let mut rings = [
            VecDeque::from([1, 4, 5, 9]),
            VecDeque::from([2, 3, 10]),
            VecDeque::new(),
            VecDeque::from([6]),
        ];
        let mut heads = Heads::new(rings.len());
        assert_eq!(
            drain(&mut heads, &mut rings, u64::MAX),
            [1, 2, 3, 4, 5, 6, 9, 10]
        );
        assert!(!heads.holds_records());
    }

    #[test]
    fn records_past_the_bound_wait_for_the_next_drain() {
        let mut rings = [VecDeque::from([1, 7]), VecDeque::from([3])];
        let mut heads = Heads::new(rings.len());
        assert_eq!(drain(&mut heads, &mut rings, 5), [1, 3]);
        assert!(heads.holds_records());
        // The ring found empty gets a record meanwhile, later than the bound before.
        rings[1].push_back(6);
        assert_eq!(drain(&mut heads, &mut rings, 5), Vec::<u64>::new());
        assert_eq!(drain(&mut heads, &mut rings, 10), [6, 7]);
    }

    #[test]
    fn an_empty_ring_is_looked_at_again_in_the_next_drain_only() {
        let mut rings = [VecDeque::from([2]), VecDeque::new()];
        let mut heads = Heads::new(rings.len());
        heads.restart();
        assert_eq!(heads.next(10, |r| rings[r].front().copied()), Some(0));
        rings[0].pop_front();
        // Submitted during the drain: not looked for until the next one.
        rings[1].push_back(1);
        assert_eq!(heads.next(10, |r| rings[r].front().copied()), None);
        assert_eq!(drain(&mut heads, &mut rings, 10), [1]);
    }

    #[test]
    fn within_a_ring_records_keep_the_ring_order() {
        // A program interrupted between its reserve and its clock read by another one on the
        // same CPU: the later record in the ring holds the earlier time.
        let mut rings = [VecDeque::from([5, 4]), VecDeque::from([3, 6])];
        let mut heads = Heads::new(rings.len());
        assert_eq!(drain(&mut heads, &mut rings, u64::MAX), [3, 5, 4, 6]);
    }

    #[test]
    fn equal_times_go_to_the_lower_cpu_first() {
        let mut rings = [VecDeque::from([1, 2]), VecDeque::from([1, 2])];
        let mut heads = Heads::new(rings.len());
        let mut order = Vec::new();
        heads.restart();
        while let Some(ring) = heads.next(u64::MAX, |r| rings[r].front().copied()) {
            rings[ring].pop_front();
            order.push(ring);
        }
        assert_eq!(order, [0, 1, 0, 1]);
    }
}
