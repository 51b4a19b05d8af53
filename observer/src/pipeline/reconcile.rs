//! A reconciliation on a blocking thread: every namespace's sockets streamed from sock_diag
//! into the tracker a part at a time, each part only once the event loop has applied every
//! event from before it was dumped, then a sweep for what no dump listed. The lock is held for
//! one part at a time, so events keep flowing; nothing is gathered, so a million sockets cost
//! no more memory than a thousand.

use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};

use super::{Shared, applied::Applied};
use crate::event::Netns;
use crate::{
    clock::{mono_now_ns, nanos, thread_cpu_ns},
    inventory::seed_of,
    kernel::NetLimits,
    sockdiag::{self, NetnsRef, Probe, ProbeKind},
    track::{LastReconciliation, ReconcileOutcome, Reconciliation, SeedSocket},
};

/// Sockets applied per lock.
const PART: usize = 4096;

/// Tracked sockets swept per lock.
const SWEEP_PART: usize = 16_384;

/// The longest a part waits for the event loop to catch up; past it, it is applied anyway (a
/// socket whose events were still in the ring may then look new: a false lower-bound entry,
/// never a lost one).
const MAX_WAIT: Duration = Duration::from_secs(2);

/// What a reconciliation did.
#[derive(Debug, Default)]
pub struct Done {
    pub outcome: ReconcileOutcome,
    /// Namespaces dumped completely.
    pub dumped: FxHashSet<Netns>,
    /// Namespaces that could not be dumped, with the reason.
    pub failed: Vec<String>,
    pub limits: FxHashMap<Netns, NetLimits>,
    /// Sockets the dumps listed.
    pub listed: u64,
    pub took: Duration,
}

/// Runs a whole reconciliation. `applied` is the event loop's promise: every record reserved
/// before that `CLOCK_MONOTONIC` time has been applied to the tracker.
pub fn run(shared: &Shared, applied: &Applied) -> Done {
    let began = Instant::now();
    let cpu_began = thread_cpu_ns();
    let mut dumps_cpu_ns = 0;
    let mut r = shared.lock().tracker.begin_reconcile(mono_now_ns());
    let mut done = Done::default();
    let mut part: Vec<SeedSocket> = Vec::with_capacity(PART);
    let namespaces = sockdiag::list_netns();
    for ns in &namespaces {
        let mut listed = 0;
        let dump = sockdiag::each_in_netns(ns, sockdiag::ALL_STATES, &mut |s| {
            part.push(seed_of(&s));
            listed += 1;
            if part.len() == PART {
                apply_part(shared, applied, &mut r, &mut part);
            }
        });
        apply_part(shared, applied, &mut r, &mut part);
        done.listed += listed;
        dumps_cpu_ns += dump.cpu_ns;
        match dump.result {
            Ok(limits) => {
                done.dumped.insert(ns.inode);
                done.limits.insert(ns.inode, limits);
            }
            Err(e) => done.failed.push(format!("{}: {e}", ns.path.display())),
        }
    }
    loop {
        let swept = shared
            .lock()
            .tracker
            .reconcile_sweep(&mut r, &done.dumped, SWEEP_PART);
        if swept || r.unlisted_len() >= SWEEP_PART {
            dumps_cpu_ns += drop_gone(shared, applied, &mut r, &namespaces);
        }
        if swept {
            break;
        }
    }
    let mut s = shared.lock();
    s.tracker.set_limits(&done.limits);
    s.limits.clone_from(&done.limits);
    let now = mono_now_ns();
    done.outcome = s.tracker.end_reconcile(r, now);
    done.took = began.elapsed();
    let cpu_ns = thread_cpu_ns().saturating_sub(cpu_began) + dumps_cpu_ns;
    s.reconciliation_cpu_ns += cpu_ns;
    s.last_reconciliation = Some(LastReconciliation {
        outcome: done.outcome,
        listed: done.listed,
        namespaces: done.dumped.len(),
        took_ns: nanos(done.took),
        ended_ns: now,
        cpu_ns,
    });
    done
}

/// Applies a part of a dump once the events from before it have been applied.
fn apply_part(
    shared: &Shared,
    applied: &Applied,
    r: &mut Reconciliation,
    part: &mut Vec<SeedSocket>,
) {
    if part.is_empty() {
        return;
    }
    applied.wait_for(mono_now_ns(), MAX_WAIT);
    let mut s = shared.lock();
    for socket in part.drain(..) {
        s.tracker.reconcile_listed(r, &socket);
    }
}

/// Asks the kernel about each socket the sweep found unlisted, namespace by namespace, and
/// drops those it no longer holds, once the events from before it was asked have been applied
/// (a close still in the rings ends a socket as seen, not as stale). In a namespace that cannot
/// be asked, nothing is dropped. Returns the CPU time of the threads that asked.
fn drop_gone(
    shared: &Shared,
    applied: &Applied,
    r: &mut Reconciliation,
    namespaces: &[NetnsRef],
) -> u64 {
    let mut unlisted = r.take_unlisted();
    if unlisted.is_empty() {
        return 0;
    }
    unlisted.sort_unstable_by_key(|u| u.tuple.netns);
    let (mut asked, mut gone, mut cpu_ns) = (Vec::with_capacity(unlisted.len()), Vec::new(), 0);
    for group in unlisted.chunk_by(|a, b| a.tuple.netns == b.tuple.netns) {
        let Some(ns) = namespaces
            .iter()
            .find(|ns| Some(ns.inode) == group[0].tuple.netns)
        else {
            continue;
        };
        let probes: Vec<Probe> = group
            .iter()
            .map(|u| Probe {
                local: u.tuple.local,
                remote: u.tuple.remote,
                kind: if u.timewait {
                    ProbeKind::Timewait
                } else if u.listening {
                    ProbeKind::Listener
                } else {
                    ProbeKind::Connection
                },
            })
            .collect();
        let answer = sockdiag::gone_in_netns(ns, &probes);
        cpu_ns += answer.cpu_ns;
        match answer.result {
            Ok(answer) => {
                asked.extend_from_slice(group);
                gone.extend(answer);
            }
            Err(e) => log::debug!(
                "sock_diag: cannot ask {} about {} sockets its dump did not list: {e}",
                ns.path.display(),
                group.len()
            ),
        }
    }
    applied.wait_for(mono_now_ns(), MAX_WAIT);
    shared.lock().tracker.drop_gone(r, &asked, &gone);
    cpu_ns
}
