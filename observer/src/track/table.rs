//! The bounded table of live sockets. A million of them must fit in 200 bytes each, so they
//! are stored packed in a slab (addresses as bytes, no enum padding), found through two indexes
//! of slot numbers (by key, and by 4-tuple for sock_diag's view), chained oldest to newest for
//! eviction, and counted by state as they change, so that no query walks them all. [`Conn`] is
//! the unpacked view the tracker works with. One job, the packed storage and its indexes,
//! kept in one file with its tests.

use std::ops::{Deref, DerefMut};

use hashbrown::HashTable;
use observer_common::TcpState;

use super::by_cgroup::{ByCgroup, Group};
use super::close_wait::{CloseWaitOrder, Entry, Serial};
use super::{
    Tuple,
    packed::{Ipv6Ends, PackedTuple, hash_key, hash_packed, hash_tuple},
};
use crate::event::{CgroupId, Netns, PerState, Task};

bitflags::bitflags! {
    /// What is known of a [`Conn`] beside its state.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ConnFlags: u8 {
        /// Accepted by a listener (it went through SYN_RECV).
        const PASSIVE = 1;
        /// Known from sock_diag, not from its first transition: ages are lower bounds.
        const SEEDED = 2;
        /// Counted as closed before accept().
        const NEVER_ACCEPTED = 8;
        /// `owner` was resolved from the process holding the socket's file descriptor.
        const OWNER_FROM_FD = 16;
        /// Keyed by a number of the tracker's own (learnt from sock_diag), until its first
        /// transition names its kernel address.
        const SYNTHETIC_KEY = 32;
    }
}

/// One live socket.
#[derive(Clone, Copy, Debug)]
pub struct Conn {
    pub state: TcpState,
    /// The state before `state`, for explaining RSTs.
    pub prev: TcpState,
    pub flags: ConnFlags,
    /// When `state` was entered (with `SEEDED`: when the daemon first saw it).
    pub since_ns: u64,
    /// When the connection began (with `SEEDED`: first seen).
    pub first_ns: u64,
    pub owner: Option<Task>,
    pub tuple: Tuple,
    /// The socket's cgroup, once a transition carried it.
    pub cgroup: Option<CgroupId>,
}

impl Conn {
    pub const fn has(&self, flag: ConnFlags) -> bool {
        self.flags.contains(flag)
    }
}

/// What a transition reads of the socket it changes: a [`Conn`] without its tuple, which the
/// transition carries itself (unpacking the addresses is most of the cost of reading a slot).
#[derive(Clone, Copy, Debug)]
pub struct Known {
    pub state: TcpState,
    pub flags: ConnFlags,
    pub since_ns: u64,
    pub first_ns: u64,
    pub owner: Option<Task>,
    pub cgroup: Option<CgroupId>,
    /// The socket's network namespace, once known (from its birth, or sock_diag).
    pub netns: Option<Netns>,
}

impl Known {
    pub const fn has(&self, flag: ConnFlags) -> bool {
        self.flags.contains(flag)
    }
}

/// No slot: the end of the eviction chain.
const NONE: u32 = u32::MAX;

/// [`Slot::bits`]: the local address is IPv6.
const LOCAL_V6: u8 = 1;
/// [`Slot::bits`]: the remote address is IPv6.
const REMOTE_V6: u8 = 2;
/// [`Slot::bits`]: `owner` holds a task (else it is a placeholder).
const HAS_OWNER: u8 = 4;
/// [`Slot::bits`]: no connection here; `older` links the next vacant slot.
const VACANT: u8 = 8;

/// A [`Conn`] as stored, with its key and eviction links: 112 bytes.
#[derive(Clone, Copy)]
struct Slot {
    key: u64,
    since_ns: u64,
    first_ns: u64,
    /// The socket's cgroup, as its entry in the table's counts by cgroup.
    group: Group,
    owner: Task,
    tuple: PackedTuple,
    /// Neighbours in insertion order (oldest first), as slot indices.
    older: u32,
    newer: u32,
    /// The last reconciliation whose sock_diag dump listed this socket.
    mark: u16,
    /// While in CLOSE_WAIT: its entry's serial in the table's [`CloseWaitOrder`].
    close_wait: Option<Serial>,
    state: TcpState,
    prev: TcpState,
    flags: ConnFlags,
    bits: u8,
}

const _: () = assert!(size_of::<Slot>() == 112);

impl Slot {
    /// `c` packed under `key`, between `older` and `newer` in insertion order, counted in
    /// `group` (its cgroup's).
    fn new(key: u64, older: u32, newer: u32, mark: u16, c: &Conn, group: Group) -> Self {
        let (tuple, v6) = PackedTuple::pack(&c.tuple);
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        Self {
            key,
            since_ns: c.since_ns,
            first_ns: c.first_ns,
            group,
            owner: c.owner.unwrap_or(Task::new(0, 0, [0; 16])),
            tuple,
            older,
            newer,
            mark,
            close_wait: None,
            state: c.state,
            prev: c.prev,
            flags: c.flags,
            bits: flag(v6.local, LOCAL_V6)
                | flag(v6.remote, REMOTE_V6)
                | flag(c.owner.is_some(), HAS_OWNER),
        }
    }

    /// Whether `e` is this slot's entry in the CLOSE_WAIT order (else it is stale).
    fn holds(&self, e: &Entry) -> bool {
        self.close_wait == Some(e.serial)
    }

    const fn vacant(&self) -> bool {
        self.bits & VACANT != 0
    }

    const fn v6(&self) -> Ipv6Ends {
        Ipv6Ends {
            local: self.bits & LOCAL_V6 != 0,
            remote: self.bits & REMOTE_V6 != 0,
        }
    }

    fn tuple(&self) -> Tuple {
        self.tuple.unpack(self.v6())
    }

    /// [`hash_tuple`] of its tuple, without unpacking it.
    fn tuple_hash(&self) -> u64 {
        hash_packed(&self.tuple, self.v6())
    }

    /// The connection, of `cgroup` (its group's).
    #[inline]
    fn conn(&self, cgroup: Option<CgroupId>) -> Conn {
        Conn {
            state: self.state,
            prev: self.prev,
            flags: self.flags,
            since_ns: self.since_ns,
            first_ns: self.first_ns,
            owner: (self.bits & HAS_OWNER != 0).then_some(self.owner),
            tuple: self.tuple(),
            cgroup,
        }
    }
}

/// A socket as a reconciliation's sweep first looks at it: whether its namespace was dumped,
/// whether it changed since the dump began, and whether the dump listed it.
#[derive(Clone, Copy, Debug)]
pub struct SweepEntry {
    pub netns: Option<Netns>,
    /// Since when it is in its state (for a timewait socket: when an event last touched it).
    pub since_ns: u64,
    /// The last reconciliation that listed it.
    pub mark: u16,
}

/// Where a socket sits in a [`Table`]. Valid only until the table next changes (an insert or a
/// removal may reuse the slot).
#[derive(Clone, Copy, Debug)]
pub struct SlotId(u32);

pub struct Table {
    /// Slot numbers by key (the socket's kernel address).
    index: HashTable<u32>,
    /// Slot numbers by 4-tuple. Several sockets may share one (listeners with SO_REUSEPORT,
    /// sockets still connecting, whose local port is not bound yet).
    by_tuple: HashTable<u32>,
    /// Slots never move; a removed one is reused by the next insert.
    slots: Vec<Slot>,
    /// First vacant slot; vacant slots chain through `older`.
    vacant: u32,
    /// Oldest and newest slot in insertion order.
    oldest: u32,
    newest: u32,
    capacity: usize,
    /// Sockets in each state (index: kernel value - 1).
    states: PerState<u64>,
    /// The sockets in CLOSE_WAIT, oldest first: the ones alerts and owners are about.
    close_wait: CloseWaitOrder,
    /// Sockets by cgroup and state.
    by_cgroup: ByCgroup,
}

impl Table {
    pub fn new(capacity: usize) -> Self {
        Self {
            index: HashTable::new(),
            by_tuple: HashTable::new(),
            slots: Vec::new(),
            vacant: NONE,
            oldest: NONE,
            newest: NONE,
            // Slot indices are u32, NONE excluded.
            capacity: capacity.clamp(1, NONE as usize),
            states: PerState::default(),
            close_wait: CloseWaitOrder::default(),
            by_cgroup: ByCgroup::default(),
        }
    }

    fn slot_of(&self, key: u64) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(hash_key(key), |&i| slots[i as usize].key == key)
            .copied()
    }

    /// Where `key` sits, for [`Table::known_at`] and [`Table::store_at`]: one lookup for a
    /// read and a write of the same socket.
    pub fn find(&self, key: u64) -> Option<SlotId> {
        self.slot_of(key).map(SlotId)
    }

    /// The connection at `at`, found since the table last changed, without its tuple.
    #[inline]
    pub fn known_at(&self, at: SlotId) -> Known {
        let s = &self.slots[at.0 as usize];
        Known {
            state: s.state,
            flags: s.flags,
            since_ns: s.since_ns,
            first_ns: s.first_ns,
            owner: (s.bits & HAS_OWNER != 0).then_some(s.owner),
            cgroup: self.by_cgroup.cgroup(s.group),
            netns: s.tuple.netns(),
        }
    }

    /// The connection in occupied slot `i`.
    #[inline]
    fn conn_at(&self, i: u32) -> Conn {
        self.conn_of(&self.slots[i as usize])
    }

    /// The connection an occupied slot holds, with its group's cgroup.
    #[inline]
    fn conn_of(&self, s: &Slot) -> Conn {
        s.conn(self.by_cgroup.cgroup(s.group))
    }

    /// Overwrites the connection at `at`, found since the table last changed, keeping its
    /// place in the eviction order.
    pub fn store_at(&mut self, at: SlotId, conn: &Conn) {
        self.store(at.0, conn);
    }

    // Inlined, as are `remove` and the unpacking: callers often read a field or two, and the
    // rest of the unpacking then drops out.
    #[inline]
    pub fn get(&self, key: u64) -> Option<Conn> {
        let i = self.slot_of(key)?;
        Some(self.conn_at(i))
    }

    /// The connection, written back when the returned guard drops. Its tuple may change.
    pub fn get_mut(&mut self, key: u64) -> Option<ConnMut<'_>> {
        let i = self.slot_of(key)?;
        let conn = self.conn_at(i);
        Some(ConnMut {
            table: self,
            slot: i,
            conn,
        })
    }

    /// Writes `conn` into occupied slot `i`, keeping counts and indexes right.
    fn store(&mut self, i: u32, conn: &Conn) {
        let slot = &self.slots[i as usize];
        let (state, since_ns, group) = (slot.state, slot.since_ns, slot.group);
        // Nearly every change keeps the tuple: its fields are then written in place, with no
        // packing, no copy of the slot and no index to update.
        if !slot.tuple.holds(slot.v6(), &conn.tuple) {
            self.store_moved(i, conn);
            return;
        }
        let group = self.recount(i, (state, since_ns, group), conn);
        let slot = &mut self.slots[i as usize];
        slot.since_ns = conn.since_ns;
        slot.first_ns = conn.first_ns;
        slot.group = group;
        slot.state = conn.state;
        slot.prev = conn.prev;
        slot.flags = conn.flags;
        match conn.owner {
            Some(owner) => {
                slot.owner = owner;
                slot.bits |= HAS_OWNER;
            }
            None => slot.bits &= !HAS_OWNER,
        }
    }

    /// [`Table::store`] of a connection whose tuple changed (a connecting socket's port bound).
    fn store_moved(&mut self, i: u32, conn: &Conn) {
        let old = self.slots[i as usize];
        self.unindex_tuple(i, &old.tuple, old.v6());
        let group = self.recount(i, (old.state, old.since_ns, old.group), conn);
        let close_wait = self.slots[i as usize].close_wait;
        self.slots[i as usize] = Slot {
            close_wait,
            ..Slot::new(old.key, old.older, old.newer, old.mark, conn, group)
        };
        self.index_tuple(i);
    }

    /// Moves slot `i`'s counts from what it held, (state, since, group), to `conn`; returns
    /// its group now. Always inlined: on every transition, and smaller than a call's spills.
    #[expect(clippy::inline_always, reason = "measured with callgrind")]
    #[inline(always)]
    fn recount(
        &mut self,
        i: u32,
        (state, since_ns, group): (TcpState, u64, Group),
        conn: &Conn,
    ) -> Group {
        if (state, since_ns) != (conn.state, conn.since_ns) {
            self.count(i, state, since_ns, -1);
            self.count(i, conn.state, conn.since_ns, 1);
        }
        self.by_cgroup
            .moved((group, state), (conn.cgroup, conn.state))
    }

    // Inlined, with the rare CLOSE_WAIT bookkeeping kept out of line: two per transition.
    #[inline]
    fn count(&mut self, i: u32, state: TcpState, since_ns: u64, delta: i64) {
        let n = &mut self.states[state];
        *n = n.saturating_add_signed(delta);
        if state == TcpState::CloseWait {
            self.count_close_wait(i, since_ns, delta);
        }
    }

    #[inline(never)]
    fn count_close_wait(&mut self, i: u32, since_ns: u64, delta: i64) {
        let slot = &mut self.slots[i as usize];
        if delta > 0 {
            slot.close_wait = Some(self.close_wait.enter(since_ns, i));
        } else if let Some(serial) = slot.close_wait.take() {
            let slots = &self.slots;
            self.close_wait.leave(
                Entry {
                    since_ns,
                    slot: i,
                    serial,
                },
                |e| slots[e.slot as usize].holds(e),
            );
        }
    }

    /// Indexes slot `i` by its tuple, unless its local port is not bound yet: a connecting
    /// socket reports SYN_SENT before connect() picks its port, and no lookup by tuple can
    /// mean that socket (sock_diag lists it with its port). Its next transition carries the
    /// port and indexes it ([`Table::store_moved`]): one index update per connection less.
    fn index_tuple(&mut self, i: u32) {
        let slots = &self.slots;
        if !slots[i as usize].tuple.has_local_port() {
            return;
        }
        let hash = slots[i as usize].tuple_hash();
        self.by_tuple
            .insert_unique(hash, i, |&j| slots[j as usize].tuple_hash());
    }

    /// Takes slot `i`, with its tuple as the tuple index holds it, out of that index.
    fn unindex_tuple(&mut self, i: u32, tuple: &PackedTuple, v6: Ipv6Ends) {
        if !tuple.has_local_port() {
            return;
        }
        if let Ok(entry) = self
            .by_tuple
            .find_entry(hash_packed(tuple, v6), |&j| j == i)
        {
            entry.remove();
        }
    }

    #[inline]
    pub fn remove(&mut self, key: u64) -> Option<Conn> {
        let i = self.take(key)?;
        let conn = self.conn_at(i);
        self.vacate(i);
        Some(conn)
    }

    /// Removes `key`, if it is there, without reading it back; true when it was there.
    pub fn forget(&mut self, key: u64) -> bool {
        let Some(i) = self.take(key) else {
            return false;
        };
        self.vacate(i);
        true
    }

    /// Takes `key` out of the indexes, the eviction chain and the counts; its slot, returned,
    /// still holds it until [`Table::vacate`].
    fn take(&mut self, key: u64) -> Option<u32> {
        let slots = &self.slots;
        let i = self
            .index
            .find_entry(hash_key(key), |&i| slots[i as usize].key == key)
            .ok()?
            .remove()
            .0;
        self.unlink(i);
        let slot = &self.slots[i as usize];
        let (tuple, v6, state, since_ns, group) =
            (slot.tuple, slot.v6(), slot.state, slot.since_ns, slot.group);
        self.unindex_tuple(i, &tuple, v6);
        self.count(i, state, since_ns, -1);
        self.by_cgroup.leave(group, state);
        Some(i)
    }

    /// Makes slot `i`, taken, the first vacant one.
    fn vacate(&mut self, i: u32) {
        let slot = &mut self.slots[i as usize];
        slot.bits = VACANT;
        slot.older = self.vacant;
        self.vacant = i;
    }

    /// Takes slot `i` out of the insertion-order chain.
    fn unlink(&mut self, i: u32) {
        let Slot { older, newer, .. } = self.slots[i as usize];
        match older {
            NONE => self.oldest = newer,
            o => self.slots[o as usize].newer = newer,
        }
        match newer {
            NONE => self.newest = older,
            n => self.slots[n as usize].older = older,
        }
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// The sockets in CLOSE_WAIT, oldest first.
    pub fn close_wait(&self) -> impl Iterator<Item = (u64, Conn)> + '_ {
        self.close_wait
            .iter()
            .filter(|e| self.slots[e.slot as usize].holds(e))
            .map(|e| (self.slots[e.slot as usize].key, self.conn_at(e.slot)))
    }

    /// Sockets in each state (index: kernel value - 1).
    pub const fn states(&self) -> PerState<u64> {
        self.states
    }

    /// Sockets by cgroup and state.
    pub const fn by_cgroup(&self) -> &ByCgroup {
        &self.by_cgroup
    }

    pub fn prune_cgroups(&mut self) {
        self.by_cgroup.prune();
    }

    /// The keys of the sockets with this 4-tuple.
    pub fn keys_of<'a>(&'a self, tuple: &'a Tuple) -> impl Iterator<Item = u64> + 'a {
        self.with_addresses(tuple)
            .filter(|s| s.tuple.netns() == tuple.netns)
            .map(|s| s.key)
    }

    /// The keys of the sockets with this 4-tuple's addresses, in whatever namespace.
    pub fn keys_anywhere<'a>(&'a self, tuple: &'a Tuple) -> impl Iterator<Item = u64> + 'a {
        self.with_addresses(tuple).map(|s| s.key)
    }

    /// The sockets with this 4-tuple's addresses: its hash leaves the namespace out.
    fn with_addresses<'a>(&'a self, tuple: &'a Tuple) -> impl Iterator<Item = &'a Slot> + 'a {
        let slots = &self.slots;
        self.by_tuple
            .iter_hash(hash_tuple(tuple))
            .map(move |&i| &slots[i as usize])
            .filter(move |s| !s.vacant() && s.tuple.holds_addresses(s.v6(), tuple))
    }

    /// Slots in use or vacant: a bound for [`Table::at`].
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The socket in slot `i`, with its reconciliation mark, when one is there.
    pub fn at(&self, i: usize) -> Option<(u64, Conn, u16)> {
        let s = self.slots.get(i).filter(|s| !s.vacant())?;
        Some((s.key, self.conn_of(s), s.mark))
    }

    /// What a reconciliation's sweep reads of slot `i` first, without unpacking the socket
    /// (which cost most of a sweep: callgrind).
    pub fn sweep_entry(&self, i: usize) -> Option<SweepEntry> {
        let s = self.slots.get(i).filter(|s| !s.vacant())?;
        Some(SweepEntry {
            netns: s.tuple.netns(),
            since_ns: s.since_ns,
            mark: s.mark,
        })
    }

    /// [`Table::sweep_entry`] of the socket `key`.
    pub fn sweep_entry_of(&self, key: u64) -> Option<SweepEntry> {
        self.sweep_entry(self.slot_of(key)? as usize)
    }

    /// The reconciliation mark of `key`.
    pub fn mark_of(&self, key: u64) -> Option<u16> {
        self.slot_of(key).map(|i| self.slots[i as usize].mark)
    }

    /// Records that the reconciliation `mark` found `key` in its dump.
    pub fn set_mark(&mut self, key: u64, mark: u16) {
        if let Some(i) = self.slot_of(key) {
            self.slots[i as usize].mark = mark;
        }
    }

    /// [`Table::insert_marked`] of a key known to be absent (just looked up, not found): one lookup
    /// less, on every new socket.
    pub fn insert_absent(&mut self, key: u64, conn: Conn) -> Option<Conn> {
        debug_assert!(self.slot_of(key).is_none());
        self.insert_vacated(key, conn, 0)
    }

    /// Inserts a socket as the newest, with a reconciliation mark (replacing one with the same
    /// key); when full, first evicts the oldest one and returns it.
    pub fn insert_marked(&mut self, key: u64, conn: Conn, mark: u16) -> Option<Conn> {
        self.forget(key);
        self.insert_vacated(key, conn, mark)
    }

    /// Inserts `key`, which is not in the table, evicting the oldest socket when it is full.
    fn insert_vacated(&mut self, key: u64, conn: Conn, mark: u16) -> Option<Conn> {
        let mut evicted = None;
        if self.index.len() >= self.capacity {
            evicted = self.remove(self.slots[self.oldest as usize].key);
        }
        let group = self.by_cgroup.enter(conn.cgroup, conn.state);
        let slot = Slot::new(key, self.newest, NONE, mark, &conn, group);
        let i = match self.vacant {
            NONE => {
                self.slots.push(slot);
                u32::try_from(self.slots.len() - 1).expect("capacity is below u32::MAX")
            }
            i => {
                self.vacant = self.slots[i as usize].older;
                self.slots[i as usize] = slot;
                i
            }
        };
        match self.newest {
            NONE => self.oldest = i,
            n => self.slots[n as usize].newer = i,
        }
        self.newest = i;
        let slots = &self.slots;
        self.index
            .insert_unique(hash_key(key), i, |&j| hash_key(slots[j as usize].key));
        self.index_tuple(i);
        self.count(i, conn.state, conn.since_ns, 1);
        evicted
    }

    /// Bytes of heap this table holds, estimated from their capacities.
    pub fn heap_bytes(&self) -> usize {
        // hashbrown: a power-of-two bucket count holding up to 7/8 of it, one control byte per
        // bucket besides the slot number.
        let index = |t: &HashTable<u32>| buckets(t.capacity()) * (size_of::<u32>() + 1);
        index(&self.index)
            + index(&self.by_tuple)
            + self.close_wait.heap_bytes()
            + self.slots.capacity() * size_of::<Slot>()
    }
}

/// A connection being changed in place: derefs to [`Conn`], packed back on drop.
pub struct ConnMut<'a> {
    table: &'a mut Table,
    slot: u32,
    conn: Conn,
}

impl Deref for ConnMut<'_> {
    type Target = Conn;

    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl DerefMut for ConnMut<'_> {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

impl Drop for ConnMut<'_> {
    fn drop(&mut self) {
        let conn = self.conn;
        self.table.store(self.slot, &conn);
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

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    use super::*;
    use crate::event::Netns;

    fn conn(n: u16, v6: bool) -> Conn {
        let ip = |last: u8| -> IpAddr {
            if v6 {
                Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last.into()).into()
            } else {
                Ipv4Addr::new(10, 0, 0, last).into()
            }
        };
        Conn {
            cgroup: None,
            state: TcpState::Established,
            prev: TcpState::SynSent,
            flags: ConnFlags::PASSIVE,
            since_ns: u64::from(n) * 10,
            first_ns: u64::from(n),
            owner: n
                .is_multiple_of(2)
                .then(|| Task::new(7, 8, *b"app\0\0\0\0\0\0\0\0\0\0\0\0\0")),
            tuple: Tuple {
                netns: Netns::new(42),
                local: SocketAddr::new(ip(1), n),
                remote: SocketAddr::new(ip(2), 80),
            },
        }
    }

    fn same(a: &Conn, b: &Conn) -> bool {
        (
            a.state, a.prev, a.flags, a.since_ns, a.first_ns, a.owner, a.tuple,
        ) == (
            b.state, b.prev, b.flags, b.since_ns, b.first_ns, b.owner, b.tuple,
        )
    }

    #[test]
    fn connections_come_back_as_stored() {
        let mut t = Table::new(8);
        for (n, v6) in [(1, false), (2, true), (3, true), (4, false)] {
            assert!(t.insert_marked(n.into(), conn(n, v6), 0).is_none());
        }
        for (n, v6) in [(1, false), (2, true), (3, true), (4, false)] {
            assert!(same(&t.get(n.into()).unwrap(), &conn(n, v6)));
        }
        t.get_mut(2).unwrap().state = TcpState::CloseWait;
        assert_eq!(t.get(2).unwrap().state, TcpState::CloseWait);
        assert_eq!(t.get(2).unwrap().tuple, conn(2, true).tuple);
    }

    #[test]
    fn removal_keeps_the_eviction_order() {
        let mut t = Table::new(3);
        for n in 1..=3 {
            t.insert_marked(n.into(), conn(n, false), 0);
        }
        // Removing the oldest leaves a vacant slot for the next insert; order must stay 2, 3.
        assert!(same(&t.remove(1).unwrap(), &conn(1, false)));
        t.insert_marked(4, conn(4, false), 0);
        assert!(
            t.insert_marked(5, conn(5, false), 0)
                .is_some_and(|c| c.first_ns == 2)
        );
        assert!(
            t.insert_marked(6, conn(6, false), 0)
                .is_some_and(|c| c.first_ns == 3)
        );
        // Re-inserting a key makes it the newest.
        t.insert_marked(4, conn(4, true), 0);
        assert!(
            t.insert_marked(7, conn(7, false), 0)
                .is_some_and(|c| c.first_ns == 5)
        );
        let mut keys: Vec<u64> = (0..t.slot_count())
            .filter_map(|i| t.at(i))
            .map(|(k, ..)| k)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, [4, 6, 7]);
        assert!(t.remove(6).is_some() && t.remove(7).is_some());
        assert_eq!(t.len(), 1);
        assert!(same(&t.get(4).unwrap(), &conn(4, true)));
        assert!(t.insert_marked(8, conn(8, false), 0).is_none());
        // A key known to be absent goes in the same way: into a vacant slot, evicting the
        // oldest when full.
        assert!(t.insert_absent(10, conn(10, true)).is_none());
        assert!(
            t.insert_absent(11, conn(11, false))
                .is_some_and(|c| c.first_ns == 4)
        );
        assert_eq!(t.len(), 3);
        assert!(same(&t.get(10).unwrap(), &conn(10, true)));
        assert_eq!(t.keys_of(&conn(11, false).tuple).collect::<Vec<_>>(), [11]);
        assert_eq!(t.states()[TcpState::Established], 3);
    }

    #[test]
    fn states_close_wait_and_tuples_follow_every_change() {
        let mut t = Table::new(8);
        for n in 1..=3 {
            t.insert_marked(n.into(), conn(n, false), 0);
        }
        // Two sockets may share a tuple (SO_REUSEPORT listeners, unbound connecting sockets).
        let mut twin = conn(1, false);
        twin.first_ns = 99;
        t.insert_marked(9, twin, 0);
        let mut keys: Vec<u64> = t.keys_of(&conn(1, false).tuple).collect();
        keys.sort_unstable();
        assert_eq!(keys, [1, 9]);
        assert_eq!(t.states()[TcpState::Established], 4);

        t.get_mut(2).unwrap().state = TcpState::CloseWait;
        let mut moved = conn(3, false);
        moved.state = TcpState::CloseWait;
        moved.tuple.local.set_port(5000);
        let at = t.find(3).expect("socket 3 is tracked");
        t.store_at(at, &moved);
        assert_eq!(t.states()[TcpState::Established], 2);
        assert_eq!(t.states()[TcpState::CloseWait], 2);
        // Oldest first: socket 2 since 20 ns, 3 since 30.
        let cw: Vec<u64> = t.close_wait().map(|(k, _)| k).collect();
        assert_eq!(cw, [2, 3]);
        assert_eq!(
            t.keys_of(&conn(3, false).tuple).count(),
            0,
            "the old tuple is gone"
        );
        assert_eq!(t.keys_of(&moved.tuple).collect::<Vec<_>>(), [3]);

        t.remove(2);
        t.set_mark(3, 7);
        assert_eq!(t.mark_of(3), Some(7));
        assert_eq!(t.close_wait().map(|(k, _)| k).collect::<Vec<_>>(), [3]);
        assert_eq!(t.states().values().sum::<u64>(), 3);
        let seen: Vec<u64> = (0..t.slot_count())
            .filter_map(|i| t.at(i))
            .map(|(k, ..)| k)
            .collect();
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn a_connecting_socket_is_found_by_its_tuple_once_its_port_is_bound() {
        let mut t = Table::new(4);
        let mut connecting = conn(0, false);
        connecting.state = TcpState::SynSent;
        t.insert_absent(1, connecting);
        t.insert_absent(2, connecting);
        assert_eq!(t.keys_of(&connecting.tuple).count(), 0, "no port yet");
        assert_eq!(t.states()[TcpState::SynSent], 2);
        // The handshake's end carries the port picked by connect().
        let bound = Conn {
            state: TcpState::Established,
            tuple: conn(40000, false).tuple,
            ..connecting
        };
        t.store_at(t.find(1).expect("socket 1 is tracked"), &bound);
        assert_eq!(t.keys_of(&bound.tuple).collect::<Vec<_>>(), [1]);
        assert!(same(&t.get(1).unwrap(), &bound));
        // One that never got its port leaves as it came.
        assert!(same(&t.remove(2).unwrap(), &connecting));
        assert_eq!(t.states().values().sum::<u64>(), 1);
        t.remove(1);
        assert_eq!((t.len(), t.keys_of(&bound.tuple).count()), (0, 0));
    }
}
