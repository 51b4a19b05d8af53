//! The bounded table of live sockets: a hash map plus the insertion order used for eviction.

use std::collections::VecDeque;

use observer_common::TcpState;
use rustc_hash::FxHashMap;

use super::Tuple;
use crate::decode::Task;

/// Flags of a [`Conn`].
pub const PASSIVE: u8 = 1;
/// Known from sock_diag, not from its first transition: ages are lower bounds.
pub const SEEDED: u8 = 2;
/// The last transition ran in the owner's context.
pub const LAST_IN_OWNER: u8 = 4;
/// Counted as closed before accept().
pub const NEVER_ACCEPTED: u8 = 8;
/// `owner` was resolved from the process holding the socket's file descriptor.
pub const OWNER_FROM_FD: u8 = 16;

/// One live socket.
#[derive(Clone, Copy, Debug)]
pub struct Conn {
    pub state: TcpState,
    /// The state before `state`, for explaining RSTs.
    pub prev: TcpState,
    pub flags: u8,
    /// Insertion generation, to recognise stale eviction-queue slots.
    pub generation: u32,
    /// When `state` was entered (with `SEEDED`: when the daemon first saw it).
    pub since_ns: u64,
    /// When the connection began (with `SEEDED`: first seen).
    pub first_ns: u64,
    pub owner: Option<Task>,
    pub tuple: Tuple,
}

impl Conn {
    pub const fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

pub struct Table {
    map: FxHashMap<u64, Conn>,
    order: VecDeque<(u64, u32)>,
    next_generation: u32,
    capacity: usize,
}

impl Table {
    pub fn new(capacity: usize) -> Self {
        Self {
            map: FxHashMap::default(),
            order: VecDeque::new(),
            next_generation: 0,
            capacity: capacity.max(1),
        }
    }

    pub fn get(&self, key: u64) -> Option<&Conn> {
        self.map.get(&key)
    }

    pub fn get_mut(&mut self, key: u64) -> Option<&mut Conn> {
        self.map.get_mut(&key)
    }

    pub fn remove(&mut self, key: u64) -> Option<Conn> {
        self.map.remove(&key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &Conn)> {
        self.map.iter().map(|(k, v)| (*k, v))
    }

    /// Keeps only the entries `keep` accepts; returns the removed ones.
    pub fn drain_where(&mut self, mut remove: impl FnMut(&Conn) -> bool) -> Vec<Conn> {
        let mut removed = Vec::new();
        self.map.retain(|_, c| {
            let r = remove(c);
            if r {
                removed.push(*c);
            }
            !r
        });
        removed
    }

    /// Inserts a new socket; when full, first evicts the oldest one and returns it.
    pub fn insert(&mut self, key: u64, mut conn: Conn) -> Option<Conn> {
        let mut evicted = None;
        if !self.map.contains_key(&key) && self.map.len() >= self.capacity {
            while let Some((old, generation)) = self.order.pop_front() {
                if self
                    .map
                    .get(&old)
                    .is_some_and(|c| c.generation == generation)
                {
                    evicted = self.map.remove(&old);
                    break;
                }
            }
        }
        self.next_generation = self.next_generation.wrapping_add(1);
        conn.generation = self.next_generation;
        self.map.insert(key, conn);
        self.order.push_back((key, conn.generation));
        // Removed sockets leave stale slots behind; compact before they outnumber live ones.
        if self.order.len() > 2 * self.capacity + 1024 {
            let map = &self.map;
            self.order
                .retain(|(k, g)| map.get(k).is_some_and(|c| c.generation == *g));
        }
        evicted
    }

    /// Bytes of heap this table holds, estimated from its capacities.
    pub fn heap_bytes(&self) -> usize {
        // hashbrown: a power-of-two bucket count holding up to 7/8 of it, one control byte per
        // bucket besides the (key, value) slot.
        buckets(self.map.capacity()) * (size_of::<(u64, Conn)>() + 1)
            + self.order.capacity() * size_of::<(u64, u32)>()
    }
}

/// Buckets hashbrown allocates for a map that can hold `capacity` entries.
pub fn buckets(capacity: usize) -> usize {
    if capacity == 0 {
        0
    } else {
        (capacity * 8 / 7).next_power_of_two()
    }
}
