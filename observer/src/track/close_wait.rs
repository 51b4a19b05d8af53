//! The order of the sockets in CLOSE_WAIT, oldest first: what alerts and owner listings read,
//! oldest first and rarely all. Every connection whose peer closes first enters and leaves
//! CLOSE_WAIT, so both must be cheap: an entry is appended in time order, and a socket that
//! leaves only makes its entry stale (the serial its slot keeps no longer matches it), dropped
//! from the front when it is there, or by a pass once stale entries are half of them. An entry
//! older than the newest one (a restart moving a socket's start back) goes to a small ordered
//! set instead, removed from it at once.

use std::{
    collections::{BTreeSet, VecDeque},
    iter::Peekable,
    num::NonZeroU32,
};

/// Which entry of the order is a socket's, kept in its slot while it is in CLOSE_WAIT. Serials
/// wrap after 2^32 entries; a stale entry never lives that long, since a pass drops every stale
/// entry once they outnumber the live ones (and the table holds far fewer than 2^32 sockets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Serial(NonZeroU32);

/// One socket's entry: since when it is in CLOSE_WAIT, and its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub since_ns: u64,
    pub slot: u32,
    pub serial: Serial,
}

/// Stale entries tolerated before a pass, whatever the count of live ones.
const STALE_SLACK: usize = 1024;

#[derive(Debug, Default)]
pub struct CloseWaitOrder {
    /// Entries in time order (ties in arrival order), stale ones included.
    in_order: VecDeque<Entry>,
    /// Entries that arrived older than the newest of `in_order`, in time order; none stale.
    late: BTreeSet<Entry>,
    /// Stale entries in `in_order`.
    stale: usize,
    last_serial: u32,
}

impl CloseWaitOrder {
    /// A socket in slot `slot` entered CLOSE_WAIT at `since_ns`: its serial, for its slot.
    pub fn enter(&mut self, since_ns: u64, slot: u32) -> Serial {
        self.last_serial = self.last_serial.wrapping_add(1);
        let serial = Serial(NonZeroU32::new(self.last_serial).unwrap_or_else(|| {
            self.last_serial = 1;
            NonZeroU32::MIN
        }));
        let entry = Entry {
            since_ns,
            slot,
            serial,
        };
        if self.in_order.back().is_none_or(|b| b.since_ns <= since_ns) {
            self.in_order.push_back(entry);
        } else {
            self.late.insert(entry);
        }
        serial
    }

    /// `entry` left CLOSE_WAIT. `live` says whether an entry is still its slot's, for the pass
    /// that drops stale ones; the slot of `entry` must no longer hold its serial.
    pub fn leave(&mut self, entry: Entry, live: impl Fn(&Entry) -> bool) {
        if !self.late.is_empty() && self.late.remove(&entry) {
            return;
        }
        if self.in_order.front() == Some(&entry) {
            // Sockets mostly leave in the order they came: nothing is left behind. Stale
            // entries that reach the front go with it, so that they do not keep every later
            // leave off this path until a pass (each is looked at once).
            self.in_order.pop_front();
            while self.stale > 0 && self.in_order.front().is_some_and(|f| !live(f)) {
                self.in_order.pop_front();
                self.stale -= 1;
            }
            self.give_back();
            return;
        }
        self.stale += 1;
        if self.stale > STALE_SLACK && self.stale * 2 > self.in_order.len() {
            self.in_order.retain(&live);
            self.stale = 0;
            self.give_back();
        }
    }

    /// Once a leak's sockets are gone, gives back most of what their entries took (halving at
    /// most as often as the entries halve: no copy per leave).
    fn give_back(&mut self) {
        if self.in_order.capacity() > 4 * self.in_order.len() + STALE_SLACK {
            self.in_order
                .shrink_to(2 * self.in_order.len() + STALE_SLACK);
        }
    }

    /// Entries, oldest first (stale ones of `in_order` included: filter them with the slots).
    pub fn iter(&self) -> Merged<'_> {
        Merged {
            in_order: self.in_order.iter().peekable(),
            late: self.late.iter().peekable(),
        }
    }

    /// Bytes of heap held, estimated from the capacities.
    pub fn heap_bytes(&self) -> usize {
        // A B-tree node holds up to 11 entries; count them two-thirds full.
        self.in_order.capacity() * size_of::<Entry>() + self.late.len() * size_of::<Entry>() * 3 / 2
    }
}

/// The two orders merged, oldest first.
pub struct Merged<'a> {
    in_order: Peekable<std::collections::vec_deque::Iter<'a, Entry>>,
    late: Peekable<std::collections::btree_set::Iter<'a, Entry>>,
}

impl Iterator for Merged<'_> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        let late_first = match (self.in_order.peek(), self.late.peek()) {
            (Some(a), Some(b)) => b.since_ns < a.since_ns,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if late_first {
            self.late.next().copied()
        } else {
            self.in_order.next().copied()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use super::*;

    /// The order as the table keeps it: each slot's serial, and the live entries by (since,
    /// slot) as a reference to compare with.
    #[derive(Default)]
    struct Model {
        order: CloseWaitOrder,
        serials: HashMap<u32, (u64, Serial)>,
    }

    impl Model {
        fn enter(&mut self, since_ns: u64, slot: u32) {
            assert!(!self.serials.contains_key(&slot));
            let serial = self.order.enter(since_ns, slot);
            self.serials.insert(slot, (since_ns, serial));
        }

        fn leave(&mut self, slot: u32) {
            let (since_ns, serial) = self.serials.remove(&slot).unwrap();
            let serials = &self.serials;
            self.order.leave(
                Entry {
                    since_ns,
                    slot,
                    serial,
                },
                |e| serials.get(&e.slot) == Some(&(e.since_ns, e.serial)),
            );
        }

        fn live(&self) -> Vec<(u64, u32)> {
            self.order
                .iter()
                .filter(|e| self.serials.get(&e.slot) == Some(&(e.since_ns, e.serial)))
                .map(|e| (e.since_ns, e.slot))
                .collect()
        }

        /// Every live socket once, in time order.
        fn check(&self) {
            let live = self.live();
            let times: Vec<u64> = live.iter().map(|&(t, _)| t).collect();
            assert!(times.is_sorted(), "{live:?}");
            let mut got = live.clone();
            got.sort_unstable();
            let mut want: Vec<(u64, u32)> =
                self.serials.iter().map(|(&s, &(t, _))| (t, s)).collect();
            want.sort_unstable();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn leaving_in_arrival_order_leaves_nothing_behind() {
        let mut m = Model::default();
        for slot in 0..5000 {
            m.enter(u64::from(slot) * 10, slot);
        }
        for slot in 0..5000 {
            m.leave(slot);
        }
        assert_eq!((m.order.in_order.len(), m.order.stale), (0, 0));
        assert!(
            m.order.in_order.capacity() <= 4 * STALE_SLACK,
            "memory given back"
        );
    }

    #[test]
    fn stale_entries_reaching_the_front_go_with_it() {
        let mut m = Model::default();
        for slot in 0..4 {
            m.enter(u64::from(slot), slot);
        }
        m.leave(1); // out of order: stale
        assert_eq!(m.order.stale, 1);
        m.leave(0); // the front: the stale entry behind it goes too
        assert_eq!((m.order.in_order.len(), m.order.stale), (2, 0));
        m.leave(2);
        m.leave(3);
        assert_eq!((m.order.in_order.len(), m.order.stale), (0, 0));
    }

    #[test]
    fn a_slot_reused_at_the_same_time_is_listed_once() {
        // The same slot, the same start (sockets seeded by one dump): only the serial tells
        // the stale entry from the live one.
        let mut m = Model::default();
        m.enter(7, 1);
        m.enter(7, 2);
        m.leave(2);
        m.enter(7, 2);
        m.leave(1);
        m.check();
        assert_eq!(m.live(), [(7, 2)]);
    }

    #[test]
    fn late_entries_are_merged_in_time_order() {
        let mut m = Model::default();
        m.enter(100, 1);
        m.enter(200, 2);
        m.enter(50, 3); // a restart moves a start back
        m.enter(150, 4);
        assert_eq!(m.live(), [(50, 3), (100, 1), (150, 4), (200, 2)]);
        m.leave(4);
        assert!(m.order.late.contains(&Entry {
            since_ns: 50,
            slot: 3,
            serial: m.serials[&3].1
        }));
        assert_eq!(m.order.late.len(), 1);
        m.check();
    }

    /// Against a reference ordered map, under a pseudo-random mix of arrivals (some late),
    /// departures in any order and slots reused: the pass keeps it bounded.
    #[test]
    fn matches_an_ordered_set_under_churn() {
        let mut m = Model::default();
        let mut reference: BTreeSet<(u64, u32)> = BTreeSet::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut now = 1_000_000;
        let mut peak = 0;
        for step in 0..200_000u32 {
            now += next() % 100;
            let slot = u32::try_from(next() % 4096).unwrap();
            if let Some(&(since, _)) = m.serials.get(&slot) {
                reference.remove(&(since, slot));
                m.leave(slot);
            } else {
                let since = if next() % 50 == 0 {
                    now - next() % 1_000_000
                } else {
                    now
                };
                reference.insert((since, slot));
                m.enter(since, slot);
            }
            peak = peak.max(m.order.in_order.len());
            if step % 10_000 == 0 {
                m.check();
            }
        }
        m.check();
        let live = m.live();
        let mut got = live.clone();
        got.sort_unstable();
        assert_eq!(got, reference.iter().copied().collect::<Vec<_>>());
        assert!(peak <= 2 * 4096 + STALE_SLACK + 1, "{peak}");
    }
}
