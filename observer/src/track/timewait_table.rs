//! The bounded table of timewait sockets. A busy host holds hundreds of thousands of them
//! (`tcp_max_tw_buckets`), so they are packed in a slab like live sockets are ([`super::table`]),
//! found through two indexes of slot numbers (by timer address and by 4-tuple) that hold 4
//! bytes per entry, and counted as they come and go: by substate, per namespace and per
//! destination, so that neither a scrape nor an alert evaluation walks them.

use super::by_cgroup::{ByCgroup, Group};
use super::table::SweepEntry;
use std::ops::{Deref, DerefMut};

use hashbrown::HashTable;
use observer_common::TcpState;
use rustc_hash::{FxHashMap, FxHashSet};

use super::{
    Tuple,
    packed::{Ipv6Ends, PackedTuple, hash_key, hash_tuple},
    usage::{Destination, TimewaitUsage},
};
use crate::event::{CgroupId, Netns};
use crate::{event::Task, kernel::NetLimits};

/// One timewait socket, unpacked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tw {
    pub substate: TcpState,
    pub tuple: Tuple,
    /// When the current substate began, from the connection's point of view.
    pub substate_since_ns: u64,
    /// Known from sock_diag: its start was not seen, durations are lower bounds.
    pub lower_bound: bool,
    pub owner: Option<Task>,
    /// The socket's cgroup, from its full socket's transitions.
    pub cgroup: Option<CgroupId>,
    /// Time until its timer fires, as last armed (kept to the millisecond).
    pub timeout_ns: Option<u64>,
    /// The socket's cookie (what sock_diag reports for it); 0 when unknown.
    pub cookie: u64,
    /// When an event last concerned it (its start, a restart, its full socket's close, its
    /// peer's FIN): a reconciliation leaves alone what changed since its dump began.
    pub touched_ns: u64,
}

/// [`Slot::bits`]: the local address is IPv6.
const LOCAL_V6: u8 = 1;
/// [`Slot::bits`]: `owner` holds a task.
const HAS_OWNER: u8 = 2;
/// [`Slot::bits`]: a lower-bound start.
const LOWER_BOUND: u8 = 4;
/// [`Slot::bits`]: `timeout_ns` is known.
const HAS_TIMEOUT: u8 = 8;
/// [`Slot::bits`]: no socket here; `key` links the next vacant slot.
const VACANT: u8 = 16;
/// [`Slot::bits`]: the remote address is IPv6.
const REMOTE_V6: u8 = 32;
/// [`Slot::bits`]: started, its full socket's close not yet seen (see
/// [`TimewaitTable::insert_unlinked`]). A bit of the slot rather than a map by tuple: the
/// start, the close and the end would each hash the tuple again.
const UNLINKED: u8 = 64;

/// A [`Tw`] as stored: 112 bytes.
#[derive(Clone, Copy)]
struct Slot {
    key: u64,
    cookie: u64,
    since_ns: u64,
    touched_ns: u64,
    /// The socket's cgroup, as its entry in the table's counts by cgroup.
    group: Group,
    /// Its tuple's [`hash_tuple`], folded to 32 bits ([`fold`]): growing or cleaning the
    /// tuple index rehashes every socket, and reading this is cheaper than hashing its tuple.
    tuple_hash: u32,
    owner: Task,
    tuple: PackedTuple,
    timeout_ms: u32,
    /// The last reconciliation whose sock_diag dump listed this socket.
    mark: u16,
    substate: TcpState,
    bits: u8,
}

const _: () = assert!(size_of::<Slot>() == 112);

impl Slot {
    /// `tw` under `key`, counted in `group` (its cgroup's); `hash`: its tuple's.
    fn new(key: u64, mark: u16, tw: &Tw, group: Group, hash: TupleHash) -> Self {
        let (tuple, v6) = PackedTuple::pack(&tw.tuple);
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        let mut slot = Self {
            key,
            cookie: 0,
            since_ns: 0,
            touched_ns: 0,
            group,
            tuple_hash: fold(hash.0),
            timeout_ms: 0,
            owner: Task::new(0, 0, [0; 16]),
            tuple,
            mark,
            substate: tw.substate,
            bits: flag(v6.local, LOCAL_V6) | flag(v6.remote, REMOTE_V6),
        };
        slot.update(tw);
        slot
    }

    /// Writes everything of `tw` but its tuple, which a timewait socket keeps (no packing), and
    /// its cgroup, which its group holds.
    fn update(&mut self, tw: &Tw) {
        let flag = |on: bool, bit: u8| if on { bit } else { 0 };
        self.cookie = tw.cookie;
        self.since_ns = tw.substate_since_ns;
        self.touched_ns = tw.touched_ns;
        self.timeout_ms = tw
            .timeout_ns
            .map_or(0, |ns| u32::try_from(ns / 1_000_000).unwrap_or(u32::MAX));
        self.owner = tw.owner.unwrap_or(Task::new(0, 0, [0; 16]));
        self.substate = tw.substate;
        self.bits = (self.bits & (LOCAL_V6 | REMOTE_V6 | UNLINKED))
            | flag(tw.owner.is_some(), HAS_OWNER)
            | flag(tw.lower_bound, LOWER_BOUND)
            | flag(tw.timeout_ns.is_some(), HAS_TIMEOUT);
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

    /// The hash its tuple is indexed by.
    fn tuple_hash(&self) -> u64 {
        widen(self.tuple_hash)
    }

    /// The socket, of `cgroup` (its group's).
    fn tw(&self, cgroup: Option<CgroupId>) -> Tw {
        Tw {
            substate: self.substate,
            tuple: self.tuple(),
            substate_since_ns: self.since_ns,
            lower_bound: self.bits & LOWER_BOUND != 0,
            owner: (self.bits & HAS_OWNER != 0).then_some(self.owner),
            cgroup,
            timeout_ns: (self.bits & HAS_TIMEOUT != 0)
                .then_some(u64::from(self.timeout_ms) * 1_000_000),
            cookie: self.cookie,
            touched_ns: self.touched_ns,
        }
    }

    /// Whether this slot holds `tuple`, without unpacking it.
    fn holds(&self, tuple: &Tuple) -> bool {
        !self.vacant() && self.tuple.holds(self.v6(), tuple)
    }
}

/// The 32 bits of a tuple's hash a slot keeps: the high half, FxHash's best mixed.
const fn fold(hash: u64) -> u32 {
    (hash >> 32) as u32
}

/// The index's hash of a folded one: the 32 bits in both halves, so that hashbrown's probe
/// position (low bits) and tag (top 7 bits) both come from them.
fn widen(folded: u32) -> u64 {
    let h = u64::from(folded);
    (h << 32) | h
}

/// The index's hash of `tuple`.
fn tuple_index_hash(tuple: &Tuple) -> u64 {
    widen(fold(hash_tuple(tuple)))
}

/// Adds `delta` to a count, dropping it at zero so that the map holds only what exists.
fn add<K: Copy + Eq + std::hash::Hash>(map: &mut FxHashMap<K, u64>, key: K, delta: i64) {
    // Nearly always there already: found in place, with no entry made.
    if let Some(n) = map.get_mut(&key) {
        *n = n.saturating_add_signed(delta);
        if *n == 0 {
            map.remove(&key);
        }
    } else if let Ok(n @ 1..) = u64::try_from(delta) {
        map.insert(key, n);
    }
}

pub struct TimewaitTable {
    slots: Vec<Slot>,
    /// Slot numbers by the slot's key (timer address, or a synthetic key for seeded ones).
    by_key: HashTable<u32>,
    /// Slot numbers by the slot's 4-tuple. The kernel holds at most one timewait socket per
    /// 4-tuple and namespace.
    by_tuple: HashTable<u32>,
    /// First vacant slot; vacant slots chain through their `key`.
    vacant: u32,
    len: usize,
    capacity: usize,
    /// Slots with [`UNLINKED`] set: when none is, the checks for a close that never came
    /// need no lookup.
    unlinked: usize,
    /// Sockets now in TIME_WAIT, and orphaned FIN_WAIT2 ones.
    time_wait: u64,
    fin_wait2: u64,
    /// Timewait sockets by cgroup and substate.
    by_cgroup: ByCgroup,
    usage: TimewaitUsage,
    /// `ip_local_port_range` per namespace, for [`TimewaitUsage::per_destination`].
    port_ranges: FxHashMap<Netns, (u16, u16)>,
    /// The last namespace's range looked up: timewait sockets come in runs from one
    /// namespace, and this spares a hash of each (callgrind). Cleared when the ranges change.
    last_range: Option<(Netns, Option<(u16, u16)>)>,
}

/// No slot.
const NONE: u32 = u32::MAX;

/// Where a timewait socket sits, found by [`TimewaitTable::find`]: valid until the table
/// changes. A timer's expiry reads and removes its socket with one lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TwSlot(u32);

/// A tuple's hash as the tuple index holds it ([`TimewaitTable::hash_of`]): a timewait
/// socket's start looks its tuple up and then inserts it, hashing it once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TupleHash(u64);

impl TimewaitTable {
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: Vec::new(),
            by_key: HashTable::new(),
            by_tuple: HashTable::new(),
            vacant: NONE,
            len: 0,
            capacity: capacity.clamp(1, NONE as usize),
            unlinked: 0,
            time_wait: 0,
            fin_wait2: 0,
            by_cgroup: ByCgroup::default(),
            usage: TimewaitUsage::default(),
            port_ranges: FxHashMap::default(),
            last_range: None,
        }
    }

    pub const fn len(&self) -> usize {
        self.len
    }

    fn slot_of(&self, key: u64) -> Option<u32> {
        let slots = &self.slots;
        self.by_key
            .find(hash_key(key), |&i| slots[i as usize].key == key)
            .copied()
    }

    pub fn contains(&self, key: u64) -> bool {
        self.slot_of(key).is_some()
    }

    /// Where `key` sits, for [`TimewaitTable::substate_at`] and [`TimewaitTable::remove_at`].
    pub fn find(&self, key: u64) -> Option<TwSlot> {
        self.slot_of(key).map(TwSlot)
    }

    /// The substate of the socket at `at`, found since the table last changed.
    pub fn substate_at(&self, at: TwSlot) -> TcpState {
        self.slots[at.0 as usize].substate
    }

    /// Sockets inserted unlinked and not linked since.
    pub const fn unlinked(&self) -> usize {
        self.unlinked
    }

    pub fn get(&self, key: u64) -> Option<Tw> {
        self.slot_of(key).map(|i| self.tw_at(i))
    }

    /// The socket in occupied slot `i`.
    fn tw_at(&self, i: u32) -> Tw {
        self.tw_of(&self.slots[i as usize])
    }

    /// The socket an occupied slot holds, with its group's cgroup.
    fn tw_of(&self, s: &Slot) -> Tw {
        s.tw(self.by_cgroup.cgroup(s.group))
    }

    /// The key of the timewait socket of `tuple`.
    pub fn key_of(&self, tuple: &Tuple) -> Option<u64> {
        self.key_of_hashed(tuple, Self::hash_of(tuple))
    }

    /// [`TimewaitTable::key_of`] with the tuple's hash already made.
    pub fn key_of_hashed(&self, tuple: &Tuple, hash: TupleHash) -> Option<u64> {
        self.slot_of_hashed(tuple, hash)
            .map(|i| self.slots[i as usize].key)
    }

    /// The hash `tuple` is indexed by.
    pub fn hash_of(tuple: &Tuple) -> TupleHash {
        TupleHash(tuple_index_hash(tuple))
    }

    fn slot_of_tuple(&self, tuple: &Tuple) -> Option<u32> {
        self.slot_of_hashed(tuple, Self::hash_of(tuple))
    }

    fn slot_of_hashed(&self, tuple: &Tuple, hash: TupleHash) -> Option<u32> {
        let slots = &self.slots;
        self.by_tuple
            .find(hash.0, |&i| slots[i as usize].holds(tuple))
            .copied()
    }

    /// The socket, written back (counts included) when the guard drops. Its tuple must not
    /// change.
    pub fn get_mut(&mut self, key: u64) -> Option<TwMut<'_>> {
        let i = self.slot_of(key)?;
        Some(self.mut_at(i))
    }

    fn mut_at(&mut self, i: u32) -> TwMut<'_> {
        let tw = self.tw_at(i);
        TwMut {
            table: self,
            slot: i,
            substate_before: tw.substate,
            tw,
        }
    }

    /// Whether `key` was inserted unlinked and not linked since.
    pub fn is_unlinked(&self, key: u64) -> bool {
        self.slot_of(key)
            .is_some_and(|i| self.slots[i as usize].bits & UNLINKED != 0)
    }

    /// Marks `key` linked (its full socket's close was seen, or will not be).
    pub fn link(&mut self, key: u64) {
        if let Some(i) = self.slot_of(key) {
            self.link_at(i);
        }
    }

    fn link_at(&mut self, i: u32) {
        let slot = &mut self.slots[i as usize];
        if slot.bits & UNLINKED != 0 {
            slot.bits &= !UNLINKED;
            self.unlinked -= 1;
        }
    }

    /// Links the unlinked socket of `tuple`, if there is one: its key, and the socket to
    /// change. One lookup, by tuple.
    pub fn link_tuple(&mut self, tuple: &Tuple) -> Option<(u64, TwMut<'_>)> {
        let i = self.slot_of_tuple(tuple)?;
        if self.slots[i as usize].bits & UNLINKED == 0 {
            return None;
        }
        self.link_at(i);
        let key = self.slots[i as usize].key;
        Some((key, self.mut_at(i)))
    }

    /// Inserts a timewait socket with a reconciliation mark, replacing one with the same key or
    /// tuple; an error when the table is full. Returns what it replaced, with their keys.
    pub fn insert(&mut self, key: u64, tw: Tw, mark: u16) -> Result<Vec<(u64, Tw)>, Full> {
        let mut replaced = Vec::new();
        if let Some(old) = self.remove(key) {
            replaced.push((key, old));
        }
        if let Some(other) = self.key_of(&tw.tuple)
            && let Some(old) = self.remove(other)
        {
            replaced.push((other, old));
        }
        self.insert_new(key, tw, mark)?;
        Ok(replaced)
    }

    /// Inserts a timewait socket whose key and tuple are not in the table; an error when the
    /// table is full.
    pub fn insert_new(&mut self, key: u64, tw: Tw, mark: u16) -> Result<(), Full> {
        let hash = Self::hash_of(&tw.tuple);
        self.insert_slot(key, tw, mark, hash, false)
    }

    /// [`TimewaitTable::insert_new`] of a socket whose timer just started, until
    /// [`TimewaitTable::link`] or [`TimewaitTable::link_tuple`]: the close of its full socket
    /// is still to come.
    /// `hash`: the tuple's, from [`TimewaitTable::hash_of`].
    pub fn insert_unlinked(&mut self, key: u64, tw: Tw, hash: TupleHash) -> Result<(), Full> {
        self.insert_slot(key, tw, 0, hash, true)
    }

    /// Inserts `tw`, whose tuple hashes to `hash`; `unlinked`: as a socket whose full socket's
    /// close is still to come.
    fn insert_slot(
        &mut self,
        key: u64,
        tw: Tw,
        mark: u16,
        hash: TupleHash,
        unlinked: bool,
    ) -> Result<(), Full> {
        debug_assert!(!self.contains(key) && self.key_of(&tw.tuple).is_none());
        if self.len >= self.capacity {
            return Err(Full);
        }
        let group = self.by_cgroup.enter(tw.cgroup, tw.substate);
        let mut slot = Slot::new(key, mark, &tw, group, hash);
        if unlinked {
            slot.bits |= UNLINKED;
            self.unlinked += 1;
        }
        let i = match self.vacant {
            NONE => {
                self.slots.push(slot);
                u32::try_from(self.slots.len() - 1).expect("capacity is below u32::MAX")
            }
            i => {
                // A vacant slot's key holds the next vacant slot's number.
                #[expect(clippy::cast_possible_truncation, reason = "slot numbers are u32")]
                {
                    self.vacant = self.slots[i as usize].key as u32;
                }
                self.slots[i as usize] = slot;
                i
            }
        };
        let slots = &self.slots;
        self.by_key
            .insert_unique(hash_key(key), i, |&j| hash_key(slots[j as usize].key));
        self.by_tuple
            .insert_unique(slots[i as usize].tuple_hash(), i, |&j| {
                slots[j as usize].tuple_hash()
            });
        self.len += 1;
        self.count(&tw, 1);
        Ok(())
    }

    pub fn remove(&mut self, key: u64) -> Option<Tw> {
        let slots = &self.slots;
        let i = self
            .by_key
            .find_entry(hash_key(key), |&i| slots[i as usize].key == key)
            .ok()?
            .remove()
            .0;
        Some(self.vacate(i))
    }

    /// Removes the socket at `at`, found since the table last changed.
    pub fn remove_at(&mut self, at: TwSlot) -> Tw {
        let i = at.0;
        let hash = hash_key(self.slots[i as usize].key);
        if let Ok(entry) = self.by_key.find_entry(hash, |&j| j == i) {
            entry.remove();
        }
        self.vacate(i)
    }

    /// Empties slot `i`, already out of the key index; returns the socket it held.
    fn vacate(&mut self, i: u32) -> Tw {
        let tw = self.tw_at(i);
        let hash = self.slots[i as usize].tuple_hash();
        self.by_cgroup
            .leave(self.slots[i as usize].group, tw.substate);
        if let Ok(entry) = self.by_tuple.find_entry(hash, |&j| j == i) {
            entry.remove();
        }
        let slot = &mut self.slots[i as usize];
        if slot.bits & UNLINKED != 0 {
            self.unlinked -= 1;
        }
        slot.bits = VACANT;
        slot.key = u64::from(self.vacant);
        self.vacant = i;
        self.len -= 1;
        self.count(&tw, -1);
        tw
    }

    /// Moves a socket to a new key (a seeded socket whose timer became known).
    pub fn rekey(&mut self, from: u64, to: u64) -> bool {
        if from == to || self.contains(to) {
            return from == to && self.contains(from);
        }
        let Some(i) = self.slot_of(from) else {
            return false;
        };
        let mark = self.slots[i as usize].mark;
        let Some(tw) = self.remove(from) else {
            return false;
        };
        self.insert(to, tw, mark).is_ok()
    }

    /// Slots in use or vacant: a bound for [`TimewaitTable::sweep_entry`].
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Slot `i` as a reconciliation's sweep first looks at it (key, and when an event last
    /// touched it), without unpacking the socket.
    pub fn sweep_entry(&self, i: usize) -> Option<(u64, SweepEntry)> {
        let s = self.slots.get(i).filter(|s| !s.vacant())?;
        Some((
            s.key,
            SweepEntry {
                netns: s.tuple.netns(),
                since_ns: s.touched_ns,
                mark: s.mark,
            },
        ))
    }

    /// [`TimewaitTable::sweep_entry`] of the socket `key`.
    pub fn sweep_entry_of(&self, key: u64) -> Option<SweepEntry> {
        self.sweep_entry(self.slot_of(key)? as usize)
            .map(|(_, e)| e)
    }

    /// Records that the reconciliation `mark` found `key` in its dump.
    pub fn set_mark(&mut self, key: u64, mark: u16) {
        if let Some(i) = self.slot_of(key) {
            self.slots[i as usize].mark = mark;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, Tw)> + '_ {
        self.slots
            .iter()
            .filter(|s| !s.vacant())
            .map(|s| (s.key, self.tw_of(s)))
    }

    /// Timewait sockets by cgroup and substate.
    pub const fn by_cgroup(&self) -> &ByCgroup {
        &self.by_cgroup
    }

    pub fn prune_cgroups(&mut self) {
        self.by_cgroup.prune();
    }

    /// (TIME_WAIT, FIN_WAIT2) sockets now.
    pub const fn substates(&self) -> (u64, u64) {
        (self.time_wait, self.fin_wait2)
    }

    pub const fn usage(&self) -> &TimewaitUsage {
        &self.usage
    }

    /// Takes the namespaces' port ranges; destinations are counted again in the namespaces
    /// whose range changed (appeared, or went), and only there: on a node where pods come and
    /// go, nearly every reconciliation brings a new namespace, and counting every timewait
    /// socket again cost a reconciliation 240 instructions per socket (callgrind).
    pub fn set_limits(&mut self, limits: &FxHashMap<Netns, NetLimits>) {
        let ranges: FxHashMap<Netns, (u16, u16)> = limits
            .iter()
            .filter_map(|(ns, l)| Some((*ns, l.local_port_range?)))
            .collect();
        let changed: FxHashSet<Netns> = ranges
            .iter()
            .filter(|(ns, r)| self.port_ranges.get(ns) != Some(r))
            .map(|(ns, _)| *ns)
            .chain(
                self.port_ranges
                    .keys()
                    .filter(|ns| !ranges.contains_key(ns))
                    .copied(),
            )
            .collect();
        if changed.is_empty() {
            return;
        }
        self.port_ranges = ranges;
        self.last_range = None;
        let in_changed = |ns: Option<Netns>| ns.is_some_and(|ns| changed.contains(&ns));
        self.usage
            .per_destination
            .retain(|d, _| !in_changed(d.netns));
        // Neighbouring slots mostly share a namespace: one set lookup per run of them.
        let mut last: Option<(Option<Netns>, bool)> = None;
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            if slot.vacant() {
                continue;
            }
            let ns = slot.tuple.netns();
            let recount = match last {
                Some((seen, recount)) if seen == ns => recount,
                _ => {
                    let recount = in_changed(ns);
                    last = Some((ns, recount));
                    recount
                }
            };
            if !recount {
                continue;
            }
            let tuple = slot.tuple();
            if let Some(d) = self.destination(&tuple) {
                *self.usage.per_destination.entry(d).or_default() += 1;
            }
        }
    }

    /// The destination `t` is counted under: none unless its local port is ephemeral.
    fn destination(&mut self, t: &Tuple) -> Option<Destination> {
        let netns = t.netns?;
        let range = match self.last_range {
            Some((last, range)) if last == netns => range,
            _ => {
                let range = self.port_ranges.get(&netns).copied();
                self.last_range = Some((netns, range));
                range
            }
        };
        let (low, high) = range?;
        (low..=high)
            .contains(&t.local.port())
            .then_some(Destination {
                netns: t.netns,
                local: t.local.ip(),
                remote: t.remote,
            })
    }

    fn count(&mut self, tw: &Tw, delta: i64) {
        self.count_state(tw.substate, delta);
        add(&mut self.usage.per_netns, tw.tuple.netns, delta);
        if let Some(d) = self.destination(&tw.tuple) {
            add(&mut self.usage.per_destination, d, delta);
        }
    }

    /// The count that follows a socket's substate (its tuple never changes; its cgroup's count
    /// follows its group).
    fn count_state(&mut self, substate: TcpState, delta: i64) {
        let slot = if substate == TcpState::FinWait2 {
            &mut self.fin_wait2
        } else {
            &mut self.time_wait
        };
        *slot = slot.saturating_add_signed(delta);
    }

    /// Bytes of heap this table holds, estimated from its capacities.
    pub fn heap_bytes(&self) -> usize {
        let index = |t: &HashTable<u32>| super::table::buckets(t.capacity()) * (4 + 1);
        self.slots.capacity() * size_of::<Slot>() + index(&self.by_key) + index(&self.by_tuple)
    }
}

/// The table is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// A timewait socket being changed in place.
pub struct TwMut<'a> {
    table: &'a mut TimewaitTable,
    slot: u32,
    /// All the write-back needs of the socket as it was: copying all of it cost more.
    substate_before: TcpState,
    tw: Tw,
}

impl TwMut<'_> {
    /// Writes the socket back now (rather than when the guard goes), and gives it as written.
    pub fn write_back(self) -> Tw {
        self.tw
    }
}

impl Deref for TwMut<'_> {
    type Target = Tw;

    fn deref(&self) -> &Tw {
        &self.tw
    }
}

impl DerefMut for TwMut<'_> {
    fn deref_mut(&mut self) -> &mut Tw {
        &mut self.tw
    }
}

impl Drop for TwMut<'_> {
    fn drop(&mut self) {
        let (before, tw) = (self.substate_before, &self.tw);
        debug_assert!(
            self.table.slots[self.slot as usize].holds(&tw.tuple),
            "a timewait socket keeps its tuple"
        );
        // Counts by namespace and destination follow the tuple, which stays.
        if before != tw.substate {
            self.table.count_state(before, -1);
            self.table.count_state(tw.substate, 1);
        }
        let slot = &mut self.table.slots[self.slot as usize];
        slot.group = self
            .table
            .by_cgroup
            .moved((slot.group, before), (tw.cgroup, tw.substate));
        slot.update(tw);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};

    use super::*;

    fn tw(port: u16, v6: bool) -> Tw {
        let ip = |last: u8| -> IpAddr {
            if v6 {
                std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last.into()).into()
            } else {
                std::net::Ipv4Addr::new(10, 0, 0, last).into()
            }
        };
        Tw {
            cgroup: None,
            substate: TcpState::TimeWait,
            tuple: Tuple {
                netns: Netns::new(7),
                local: SocketAddr::new(ip(1), port),
                remote: SocketAddr::new(ip(2), 80),
            },
            substate_since_ns: u64::from(port),
            lower_bound: port.is_multiple_of(2),
            owner: port.is_multiple_of(3).then(|| Task::named(42, "curl")),
            timeout_ns: (!port.is_multiple_of(5)).then_some(60_000_000_000),
            cookie: u64::from(port) << 8,
            touched_ns: u64::from(port) * 3,
        }
    }

    fn limits(range: (u16, u16)) -> FxHashMap<Netns, NetLimits> {
        FxHashMap::from_iter([(
            Netns::new(7).unwrap(),
            NetLimits {
                max_tw_buckets: Some(100),
                local_port_range: Some(range),
            },
        )])
    }

    #[test]
    fn sockets_come_back_as_stored_by_key_and_by_tuple() {
        let mut t = TimewaitTable::new(16);
        for (port, v6) in [(40000, false), (40001, true), (40003, false), (40005, true)] {
            assert!(
                t.insert(u64::from(port), tw(port, v6), 0)
                    .unwrap()
                    .is_empty()
            );
        }
        for (port, v6) in [(40000, false), (40001, true), (40003, false), (40005, true)] {
            assert_eq!(t.get(u64::from(port)), Some(tw(port, v6)));
            assert_eq!(t.key_of(&tw(port, v6).tuple), Some(u64::from(port)));
        }
        assert_eq!(t.key_of(&tw(40000, true).tuple), None, "another family");
        assert_eq!(t.substates(), (4, 0));
        t.get_mut(40001).unwrap().substate = TcpState::FinWait2;
        assert_eq!(t.substates(), (3, 1));
        assert_eq!(
            t.remove(40001),
            Some(Tw {
                substate: TcpState::FinWait2,
                ..tw(40001, true)
            })
        );
        assert_eq!(t.remove(40001), None);
        assert_eq!((t.len(), t.substates()), (3, (3, 0)));
        // The vacant slot is reused.
        t.insert(9, tw(41000, false), 0).unwrap();
        assert_eq!(t.slots.len(), 4);
        assert!(t.rekey(9, 10));
        assert_eq!(t.get(10), Some(tw(41000, false)));
        assert_eq!(t.get(9), None);
        let mut keys: Vec<u64> = t.iter().map(|(k, _)| k).collect();
        keys.sort_unstable();
        assert_eq!(keys, [10, 40000, 40003, 40005]);
    }

    /// Inserts `tw` unlinked under `key`.
    fn start(t: &mut TimewaitTable, key: u64, tw: Tw) {
        let hash = TimewaitTable::hash_of(&tw.tuple);
        t.insert_unlinked(key, tw, hash).unwrap();
    }

    #[test]
    fn a_started_socket_stays_unlinked_until_linked_once() {
        let mut t = TimewaitTable::new(4);
        start(&mut t, 1, tw(40000, false));
        t.insert_new(2, tw(40001, true), 0).unwrap();
        assert!(t.is_unlinked(1) && !t.is_unlinked(2) && !t.is_unlinked(3));
        assert_eq!(t.unlinked(), 1);
        // A change in place keeps the mark.
        t.get_mut(1).unwrap().substate = TcpState::FinWait2;
        assert!(t.is_unlinked(1));
        assert!(
            t.link_tuple(&tw(40001, true).tuple).is_none(),
            "never unlinked"
        );
        {
            let (key, mut linked) = t.link_tuple(&tw(40000, false).tuple).unwrap();
            assert_eq!((key, linked.substate), (1, TcpState::FinWait2));
            linked.owner = Some(Task::named(7, "nginx"));
        }
        assert!(!t.is_unlinked(1));
        assert_eq!(t.unlinked(), 0);
        assert_eq!(t.get(1).unwrap().owner, Some(Task::named(7, "nginx")));
        assert!(
            t.link_tuple(&tw(40000, false).tuple).is_none(),
            "linked once"
        );
        // A slot reused by another socket starts without the mark.
        t.remove(1).unwrap();
        start(&mut t, 3, tw(40002, false));
        assert_eq!(t.unlinked(), 1);
        t.link(3);
        t.insert_new(4, tw(40003, false), 0).unwrap();
        assert!(!t.is_unlinked(3) && !t.is_unlinked(4));
        assert_eq!(t.unlinked(), 0);
        // Removed unlinked, by key or where it sits: no longer counted.
        start(&mut t, 5, tw(40004, false));
        assert_eq!((t.unlinked(), t.remove(5).is_some()), (1, true));
        start(&mut t, 6, tw(40005, false));
        let at = t.find(6).unwrap();
        assert_eq!(t.substate_at(at), TcpState::TimeWait);
        assert_eq!(t.remove_at(at), tw(40005, false));
        assert_eq!((t.unlinked(), t.len(), t.find(6)), (0, 3, None));
        assert_eq!(t.key_of(&tw(40005, false).tuple), None);
    }

    #[test]
    fn one_socket_per_tuple_and_a_bound() {
        let mut t = TimewaitTable::new(2);
        t.insert(1, tw(40000, false), 0).unwrap();
        // The same 4-tuple under another timer replaces it.
        assert_eq!(
            t.insert(2, tw(40000, false), 0).unwrap(),
            [(1, tw(40000, false))]
        );
        assert_eq!((t.len(), t.key_of(&tw(40000, false).tuple)), (1, Some(2)));
        t.insert(3, tw(40001, false), 0).unwrap();
        assert_eq!(t.insert(4, tw(40002, false), 0), Err(Full));
        assert_eq!(t.len(), 2);
        assert_eq!(t.remove(3), Some(tw(40001, false)));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn usage_follows_inserts_removals_and_port_ranges() {
        let mut t = TimewaitTable::new(16);
        t.set_limits(&limits((40000, 40001)));
        for port in [40000, 40001, 40002, 8080] {
            t.insert(u64::from(port), tw(port, false), 0).unwrap();
        }
        let dest = Destination {
            netns: Netns::new(7),
            local: "10.0.0.1".parse().unwrap(),
            remote: "10.0.0.2:80".parse().unwrap(),
        };
        assert_eq!(t.usage().per_netns[&Netns::new(7)], 4);
        assert_eq!(t.usage().per_destination[&dest], 2);
        t.set_limits(&limits((40000, 40010)));
        assert_eq!(t.usage().per_destination[&dest], 3);
        t.remove(40000);
        t.remove(40001);
        t.remove(40002);
        assert!(t.usage().per_destination.is_empty());
        t.remove(8080);
        assert_eq!(t.usage(), &TimewaitUsage::default());
    }

    /// Counts by destination as a recount of every socket makes them, under `ranges`.
    fn recounted(t: &TimewaitTable, ranges: &[(u32, (u16, u16))]) -> FxHashMap<Destination, u64> {
        let mut counts = FxHashMap::default();
        for (_, tw) in t.iter() {
            let range = ranges
                .iter()
                .find(|(ns, _)| Netns::new(*ns) == tw.tuple.netns)
                .map(|(_, r)| *r);
            if let Some((low, high)) = range
                && (low..=high).contains(&tw.tuple.local.port())
            {
                let d = Destination {
                    netns: tw.tuple.netns,
                    local: tw.tuple.local.ip(),
                    remote: tw.tuple.remote,
                };
                *counts.entry(d).or_default() += 1;
            }
        }
        counts
    }

    #[test]
    fn only_the_namespaces_whose_range_changed_are_counted_again() {
        let with = |ranges: &[(u32, (u16, u16))]| -> FxHashMap<Netns, NetLimits> {
            ranges
                .iter()
                .map(|&(ns, range)| {
                    let limits = NetLimits {
                        max_tw_buckets: Some(100),
                        local_port_range: Some(range),
                    };
                    (Netns::new(ns).unwrap(), limits)
                })
                .collect()
        };
        let mut t = TimewaitTable::new(64);
        let mut key = 0;
        for ns in [7, 8, 9] {
            for port in [40000, 40001, 40002, 40003, 8080] {
                let mut s = tw(port, ns == 8);
                s.tuple.netns = Netns::new(ns);
                key += 1;
                t.insert(key, s, 0).unwrap();
            }
        }
        let steps: [&[(u32, (u16, u16))]; 5] = [
            &[(7, (40000, 40001)), (8, (40000, 40003))],
            // 8 narrows, 7 unchanged
            &[(7, (40000, 40001)), (8, (40002, 40003))],
            // 9 appears
            &[(7, (40000, 40001)), (8, (40002, 40003)), (9, (8080, 8080))],
            // 7 goes
            &[(8, (40002, 40003)), (9, (8080, 8080))],
            &[],
        ];
        for ranges in steps {
            t.set_limits(&with(ranges));
            assert_eq!(
                t.usage().per_destination,
                recounted(&t, ranges),
                "{ranges:?}"
            );
        }
        assert!(t.usage().per_destination.is_empty());
        // Counts still follow removals after partial recounts.
        t.set_limits(&with(&[(8, (40000, 40003))]));
        t.remove(6);
        let ranges = [(8, (40000, 40003))];
        assert_eq!(t.usage().per_destination, recounted(&t, &ranges));
    }
}
