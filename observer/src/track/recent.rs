//! Sockets closed within the last [`GRACE_NS`]: what explains an RST or an error that follows
//! a close, and whether a close that should have left a timewait socket did.
//!
//! Two closes per connection come and go at the rate of the host's connections, so they are
//! kept in close order in a ring (appended, and dropped from the front once their grace is
//! over), found through an index of ring positions that holds 4 bytes per close: a map from
//! socket to close would write each close, about 100 bytes, into a random place of a table of
//! up to 64 K of them, and read it there again to drop it.

use std::collections::VecDeque;

use hashbrown::HashTable;

use super::{GRACE_NS, packed::hash_key, resets::Preceding};
use crate::event::{CgroupId, Task};

/// At most this many closes are remembered; past it the oldest are dropped before their
/// grace is over.
pub(super) const RECENT_CAPACITY: usize = 1 << 16;

/// A socket that closed within the last [`GRACE_NS`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Closed {
    pub preceding: Preceding,
    pub at_ns: u64,
    pub owner: Option<Task>,
    pub cgroup: Option<CgroupId>,
    /// Closed from FIN_WAIT2/CLOSING: a timewait socket should exist.
    pub expects_timewait: bool,
    pub reset: bool,
    /// Its retransmission streak when it closed, for an error reported just after the close
    /// (since Linux 6.10 a timeout closes the socket first): (retransmissions, duration).
    pub streak: Option<(u32, u64)>,
}

/// The closes of the last [`GRACE_NS`], the latest of each socket found by its key.
#[derive(Default)]
pub(super) struct RecentCloses {
    /// (socket key, close), oldest first. A close of a socket that closed again since (its
    /// address reused) stays until its turn, found by nothing.
    ring: VecDeque<(u64, Closed)>,
    /// The position of the ring's front. Positions wrap around; the ring never holds 2^32.
    front: u32,
    /// The position of each socket's latest close.
    index: HashTable<u32>,
}

impl RecentCloses {
    /// Where position `at` sits in the ring.
    const fn offset(&self, at: u32) -> usize {
        at.wrapping_sub(self.front) as usize
    }

    /// Remembers `sock`'s close, in place of any earlier one of the same socket.
    pub fn remember(&mut self, sock: u64, closed: Closed) {
        #[expect(clippy::cast_possible_truncation, reason = "positions wrap around")]
        let at = self.front.wrapping_add(self.ring.len() as u32);
        self.ring.push_back((sock, closed));
        let Self { ring, front, index } = self;
        let key_at = |at: u32| ring[at.wrapping_sub(*front) as usize].0;
        match index.entry(
            hash_key(sock),
            |&i| key_at(i) == sock,
            |&i| hash_key(key_at(i)),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut e) => *e.get_mut() = at,
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert(at);
            }
        }
    }

    fn position(&self, sock: u64) -> Option<usize> {
        self.index
            .find(hash_key(sock), |&i| self.ring[self.offset(i)].0 == sock)
            .map(|&i| self.offset(i))
    }

    /// `sock`'s latest close, if it is remembered.
    pub fn get(&self, sock: u64) -> Option<&Closed> {
        self.position(sock).map(|i| &self.ring[i].1)
    }

    pub fn get_mut(&mut self, sock: u64) -> Option<&mut Closed> {
        self.position(sock).map(|i| &mut self.ring[i].1)
    }

    /// Forgets the closes whose grace is over at `now_ns` (and the oldest beyond
    /// [`RECENT_CAPACITY`]), handing `forgotten` each one that was still its socket's latest.
    pub fn expire(&mut self, now_ns: u64, mut forgotten: impl FnMut(&Closed)) {
        while let Some((sock, closed)) = self.ring.front() {
            if now_ns.saturating_sub(closed.at_ns) < GRACE_NS && self.ring.len() <= RECENT_CAPACITY
            {
                break;
            }
            let front = self.front;
            if let Ok(entry) = self.index.find_entry(hash_key(*sock), |&i| i == front) {
                entry.remove();
                forgotten(closed);
            }
            self.ring.pop_front();
            self.front = self.front.wrapping_add(1);
        }
    }

    /// Closes remembered, each socket's latest only.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
mod tests {
    use observer_common::TcpState;

    use super::*;

    fn closed(at_ns: u64) -> Closed {
        Closed {
            preceding: Preceding {
                old: TcpState::FinWait2,
                new: TcpState::Close,
            },
            at_ns,
            owner: None,
            cgroup: None,
            expects_timewait: true,
            reset: false,
            streak: None,
        }
    }

    #[test]
    fn a_close_is_found_until_its_grace_is_over() {
        let mut recent = RecentCloses::default();
        recent.remember(7, closed(100));
        recent.remember(8, closed(200));
        recent.get_mut(7).unwrap().reset = true;
        let mut forgotten = Vec::new();
        recent.expire(100 + GRACE_NS - 1, |c| forgotten.push(c.at_ns));
        assert!(forgotten.is_empty());
        assert!(recent.get(7).unwrap().reset);
        recent.expire(100 + GRACE_NS, |c| forgotten.push(c.at_ns));
        assert_eq!(forgotten, [100]);
        assert!(recent.get(7).is_none());
        assert_eq!(recent.get(8).map(|c| c.at_ns), Some(200));
        recent.expire(u64::MAX, |c| forgotten.push(c.at_ns));
        assert_eq!((forgotten, recent.len()), (vec![100, 200], 0));
    }

    #[test]
    fn a_socket_closed_again_is_known_by_its_latest_close_only() {
        let mut recent = RecentCloses::default();
        recent.remember(7, closed(100));
        recent.remember(7, closed(300));
        assert_eq!(
            (recent.get(7).map(|c| c.at_ns), recent.len()),
            (Some(300), 1)
        );
        let mut forgotten = Vec::new();
        // The first close's turn comes: it is no longer the socket's, so nothing is forgotten.
        recent.expire(100 + GRACE_NS, |c| forgotten.push(c.at_ns));
        assert!(forgotten.is_empty());
        assert_eq!(recent.get(7).map(|c| c.at_ns), Some(300));
        recent.expire(300 + GRACE_NS, |c| forgotten.push(c.at_ns));
        assert_eq!(forgotten, [300]);
    }

    #[test]
    fn past_the_capacity_the_oldest_are_forgotten_early_and_positions_wrap_around() {
        let mut recent = RecentCloses {
            front: u32::MAX - 5,
            ..RecentCloses::default()
        };
        let n = RECENT_CAPACITY as u64 + 10;
        for sock in 0..n {
            recent.remember(sock, closed(sock));
        }
        let mut forgotten = 0;
        recent.expire(0, |_| forgotten += 1);
        assert_eq!((forgotten, recent.len()), (10, RECENT_CAPACITY));
        assert!(recent.get(9).is_none());
        for sock in 10..n {
            assert_eq!(recent.get(sock).map(|c| c.at_ns), Some(sock), "{sock}");
        }
    }
}
