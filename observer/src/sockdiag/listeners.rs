//! Accept-queue pressure of every listening TCP socket, and the listen counters, per network
//! namespace.
//!
//! For a LISTEN socket, `tcp_diag_get_info` (net/ipv4/tcp_diag.c) puts `sk_ack_backlog` (the
//! accept queue's current length) in `idiag_rqueue` and `sk_max_ack_backlog` (the backlog
//! given to `listen()`, capped at `net.core.somaxconn`) in `idiag_wqueue`. The queue is full
//! only when the length exceeds the limit (`sk_acceptq_is_full`), so it holds backlog + 1.
//!
//! Request sockets (handshakes the listener answered and that have not become a full socket:
//! the kernel's `NEW_SYN_RECV`) are dumped from the established hash and reported with state
//! `SYN_RECV` (`tcp_req_diag_fill`). They do not name their listener, so they are attributed
//! by address and port, as the kernel looks a listener up.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use observer_common::TcpState;

use super::{
    NetnsRef, SockDiagError,
    dump::{self, Entry},
    list_netns, netns,
    netstat::ListenCounters,
};
use crate::clock::thread_cpu_ns;
use crate::event::{Family, Netns};

/// A LISTEN-only dump reads the listening hash and nothing else.
const LISTENING: u32 = 1 << TcpState::Listen as u32;

/// Request sockets live in the established hash, which the kernel shares between namespaces
/// unless `net.ipv4.tcp_child_ehash_entries` gave one its own: dumping them walks every socket
/// of the host (measured: 22 ms of CPU per namespace, both families in one walk, with 125,000
/// TIME_WAIT sockets on the host). So they are dumped only in namespaces that have a listener
/// for them to belong to.
const REQUESTS: u32 = 1 << TcpState::NewSynRecv as u32;

/// One listening socket and the pressure on its queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Listener {
    /// The network namespace it listens in.
    pub netns: Netns,
    /// The address it listens on, as the kernel reports it (`0.0.0.0`, `[::]`, or an
    /// IPv4-mapped IPv6 address for an IPv6 socket bound to one).
    pub local: SocketAddr,
    /// Socket inode (`/proc/<pid>/fd/* -> socket:[N]`), to find the owning process.
    pub inode: u64,
    /// Connections in the accept queue, waiting for `accept()`. Can reach `backlog + 1`.
    pub queued: u32,
    /// The accept queue's limit: `listen()`'s backlog capped at `net.core.somaxconn`.
    pub backlog: u32,
    /// Half-open connections (request sockets) this listener answered. Members of an
    /// `SO_REUSEPORT` group on one address each count all of the group's requests: the
    /// kernel does not say which member a request belongs to. 0 when not counted ([`Requests`]).
    pub syn_recv: u32,
}

/// Listeners and counters of every network namespace.
#[derive(Debug)]
pub struct ListenSnapshot {
    /// Listeners of every namespace that could be read, in the kernel's order per namespace.
    /// Their `syn_recv` is 0 when request sockets were not counted.
    pub listeners: Vec<Listener>,
    /// Listen counters, per namespace inode, of the same namespaces.
    pub counters: Vec<(Netns, ListenCounters)>,
    /// Namespaces that could not be read (`<path> (netns <inode>)`), and why. A namespace is
    /// either here or in both lists above, never partly.
    pub failed: Vec<(String, SockDiagError)>,
    /// How long the whole snapshot took.
    pub took: Duration,
    /// The CPU time that counting request sockets took, over every namespace; `None` when
    /// they were not counted.
    pub requests_cpu: Option<Duration>,
}

/// Whether a sample counts request sockets (each listener's `syn_recv`), which costs a walk of
/// every socket of the host per namespace with a listener; listing listeners does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requests {
    Count,
    Skip,
}

/// Listeners and counters of every network namespace [`list_netns`] finds, each read from a
/// short-lived thread inside it. A namespace that fails goes to [`ListenSnapshot::failed`].
#[must_use]
pub fn listeners_all(requests: Requests) -> ListenSnapshot {
    let started = Instant::now();
    let mut snapshot = ListenSnapshot {
        listeners: Vec::new(),
        counters: Vec::new(),
        failed: Vec::new(),
        took: Duration::ZERO,
        requests_cpu: (requests == Requests::Count).then_some(Duration::ZERO),
    };
    for ns in list_netns() {
        match netns::run_in(&ns, || of_namespace(ns.inode, requests)) {
            Ok(found) => {
                snapshot.listeners.extend(found.listeners);
                snapshot.counters.push((ns.inode, found.counters));
                if let Some(total) = &mut snapshot.requests_cpu {
                    *total += found.requests_cpu;
                }
            }
            Err(e) => snapshot.failed.push((describe(&ns), e)),
        }
    }
    snapshot.took = started.elapsed();
    snapshot
}

/// Listeners (request sockets counted) and counters of the calling thread's network namespace.
pub fn listeners_current() -> Result<(Vec<Listener>, ListenCounters), SockDiagError> {
    let found = of_namespace(netns::current_inode()?, Requests::Count)?;
    Ok((found.listeners, found.counters))
}

/// What one namespace's sample found.
struct Found {
    listeners: Vec<Listener>,
    counters: ListenCounters,
    /// This thread's CPU time in the dump of request sockets.
    requests_cpu: Duration,
}

fn describe(ns: &NetnsRef) -> String {
    format!("{} (netns {})", ns.path.display(), ns.inode)
}

/// Runs on a thread inside the namespace `netns`.
fn of_namespace(netns: Netns, requests: Requests) -> Result<Found, SockDiagError> {
    let mut listeners = Vec::new();
    dump::tcp_dump(netns, LISTENING, &mut |entry| {
        // A listener closing while the dump runs may be listed with its port already released
        // (the kernel fills replies after letting go of the hash): it is no longer listening.
        if entry.socket.local.port() != 0 {
            listeners.push(Candidate::from(entry));
        }
    })?;
    let mut found_requests = Vec::new();
    let mut requests_cpu = Duration::ZERO;
    if requests == Requests::Count && !listeners.is_empty() {
        let before = thread_cpu_ns();
        dump::tcp_dump(netns, REQUESTS, &mut |entry| {
            found_requests.push(Request {
                family: entry.socket.family,
                local: entry.socket.local,
                interface: entry.interface,
            });
        })?;
        requests_cpu = Duration::from_nanos(thread_cpu_ns().saturating_sub(before));
    }
    let counters = ListenCounters::of_current()?;
    let unmatched = attribute(&mut listeners, &found_requests);
    if unmatched > 0 {
        // Normal for a moment after a listener closes: its requests wait for their timer.
        log::debug!("netns {netns}: {unmatched} request sockets without a listener");
    }
    Ok(Found {
        listeners: listeners.into_iter().map(|c| c.listener).collect(),
        counters,
        requests_cpu,
    })
}

/// A listener with what attributing requests to it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Candidate {
    listener: Listener,
    family: Family,
    /// `IPV6_V6ONLY`; an IPv6 listener without it also takes IPv4 connections.
    v6only: bool,
    /// The device it is bound to; 0 for none.
    interface: u32,
}

impl From<Entry> for Candidate {
    fn from(entry: Entry) -> Self {
        let s = entry.socket;
        Self {
            listener: Listener {
                netns: s.netns,
                local: s.local,
                inode: s.inode,
                queued: s.rqueue,
                backlog: s.wqueue,
                syn_recv: 0,
            },
            family: s.family,
            // Without the attribute (kernels before 4.x), Linux's default: dual-stack.
            v6only: entry.v6only.unwrap_or(false),
            interface: entry.interface,
        }
    }
}

/// A request socket, as far as finding its listener goes.
#[derive(Clone, Copy, Debug)]
struct Request {
    /// The listener's family (`inet_reqsk_alloc` copies it): an IPv4 connection to a
    /// dual-stack IPv6 listener is an IPv6 request with IPv4-mapped addresses.
    family: Family,
    /// The address and port the SYN was sent to.
    local: SocketAddr,
    /// The device the SYN came in on, if the kernel recorded it; 0 otherwise.
    interface: u32,
}

/// Adds each request to the `syn_recv` of the listeners that fit it best (several only for an
/// `SO_REUSEPORT` group). Returns how many requests no listener fits.
fn attribute(listeners: &mut [Candidate], requests: &[Request]) -> usize {
    let mut by_port: HashMap<(Family, u16), Vec<usize>> = HashMap::new();
    for (i, l) in listeners.iter().enumerate() {
        by_port
            .entry((l.family, l.listener.local.port()))
            .or_default()
            .push(i);
    }
    let mut unmatched = 0;
    let mut best = Vec::new();
    for request in requests {
        best.clear();
        let mut best_fit = None;
        let same_port = by_port.get(&(request.family, request.local.port()));
        for &i in same_port.into_iter().flatten() {
            let Some(fit) = fit(&listeners[i], request) else {
                continue;
            };
            if best_fit.is_none_or(|b| fit > b) {
                best_fit = Some(fit);
                best.clear();
            }
            if best_fit == Some(fit) {
                best.push(i);
            }
        }
        if best.is_empty() {
            unmatched += 1;
        }
        for &i in &best {
            let l = &mut listeners[i].listener;
            l.syn_recv = l.syn_recv.saturating_add(1);
        }
    }
    unmatched
}

/// How well `l` fits `request`, if it can have taken it; the larger the better. In the order of
/// the kernel's listener lookup (`__inet_lookup_listener`, `compute_score`): a listener bound
/// to the very address before a wildcard one, then one bound to the incoming device.
/// The caller has matched family and port.
fn fit(l: &Candidate, request: &Request) -> Option<(bool, bool)> {
    if l.interface != 0 && request.interface != 0 && l.interface != request.interface {
        return None;
    }
    let want = unmapped(request.local.ip());
    let have = unmapped(l.listener.local.ip());
    let exact = if have == want {
        true
    } else if have.is_unspecified() && takes_any(have, l.v6only, want) {
        false
    } else {
        return None;
    };
    Some((exact, l.interface != 0))
}

/// Whether a listener on the wildcard `any` takes a connection to `to`.
fn takes_any(any: IpAddr, v6only: bool, to: IpAddr) -> bool {
    match (any, to) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => true,
        (IpAddr::V6(_), IpAddr::V4(_)) => !v6only,
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`: how dual-stack sockets carry IPv4 addresses.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn listener(local: &str, v6only: bool, interface: u32) -> Candidate {
        let local: SocketAddr = local.parse().unwrap();
        Candidate {
            listener: Listener {
                netns: Netns::new(1).unwrap(),
                local,
                inode: 0,
                queued: 0,
                backlog: 4,
                syn_recv: 0,
            },
            family: if local.is_ipv4() {
                Family::Ipv4
            } else {
                Family::Ipv6
            },
            v6only,
            interface,
        }
    }

    fn request(family: Family, local: &str, interface: u32) -> Request {
        Request {
            family,
            local: local.parse().unwrap(),
            interface,
        }
    }

    fn counts(listeners: &[Candidate]) -> Vec<u32> {
        listeners.iter().map(|l| l.listener.syn_recv).collect()
    }

    #[test]
    fn the_state_masks_are_listen_then_new_syn_recv() {
        assert_eq!((LISTENING, REQUESTS), (1 << 10, 1 << 12));
    }

    #[test]
    fn a_wildcard_listener_takes_any_address_of_its_family_and_port() {
        let mut ls = [
            listener("0.0.0.0:80", false, 0),
            listener("[::]:80", true, 0),
            listener("0.0.0.0:81", false, 0),
        ];
        let reqs = [
            request(Family::Ipv4, "127.0.0.1:80", 0),
            request(Family::Ipv4, "10.1.2.3:80", 0),
            request(Family::Ipv6, "[::1]:80", 0),
            request(Family::Ipv6, "[fe80::1]:80", 2),
            request(Family::Ipv4, "127.0.0.1:82", 0),
        ];
        assert_eq!(attribute(&mut ls, &reqs), 1, "nobody listens on port 82");
        assert_eq!(counts(&ls), [2, 2, 0]);
    }

    #[test]
    fn a_dual_stack_listener_takes_ipv4_mapped_requests() {
        // An IPv4 connection to [::]:80 is an IPv6 request to ::ffff:127.0.0.1.
        let mut ls = [listener("[::]:80", false, 0)];
        let reqs = [
            request(Family::Ipv6, "[::ffff:127.0.0.1]:80", 0),
            request(Family::Ipv6, "[::1]:80", 0),
            // An IPv4 request was taken by an IPv4 listener, which is gone.
            request(Family::Ipv4, "127.0.0.1:80", 0),
        ];
        assert_eq!(attribute(&mut ls, &reqs), 1);
        assert_eq!(counts(&ls), [2]);

        // A v6only one does not.
        let mut ls = [listener("[::]:80", true, 0)];
        assert_eq!(attribute(&mut ls, &reqs), 2);
        assert_eq!(counts(&ls), [1]);
    }

    #[test]
    fn a_listener_on_a_mapped_address_takes_that_ipv4_address_only() {
        let mut ls = [listener("[::ffff:127.0.0.1]:80", false, 0)];
        let reqs = [
            request(Family::Ipv6, "[::ffff:127.0.0.1]:80", 0),
            request(Family::Ipv6, "[::ffff:127.0.0.2]:80", 0),
            request(Family::Ipv6, "[::1]:80", 0),
        ];
        assert_eq!(attribute(&mut ls, &reqs), 2);
        assert_eq!(counts(&ls), [1]);
    }

    #[test]
    fn the_bound_address_wins_over_the_wildcard() {
        let mut ls = [
            listener("0.0.0.0:80", false, 0),
            listener("127.0.0.1:80", false, 0),
            listener("[::]:80", false, 0),
            listener("[::1]:80", false, 0),
        ];
        let reqs = [
            request(Family::Ipv4, "127.0.0.1:80", 0),
            request(Family::Ipv4, "127.0.0.2:80", 0),
            request(Family::Ipv6, "[::1]:80", 0),
            request(Family::Ipv6, "[::2]:80", 0),
            request(Family::Ipv6, "[::ffff:127.0.0.1]:80", 0),
        ];
        assert_eq!(attribute(&mut ls, &reqs), 0);
        assert_eq!(counts(&ls), [1, 1, 2, 1]);
    }

    #[test]
    fn a_device_bound_listener_takes_its_devices_requests_first() {
        let mut ls = [
            listener("0.0.0.0:80", false, 0),
            listener("0.0.0.0:80", false, 3),
        ];
        let reqs = [
            request(Family::Ipv4, "10.0.0.1:80", 3),
            request(Family::Ipv4, "10.0.0.1:80", 2),
            // Not recorded: the bound one still fits better.
            request(Family::Ipv4, "10.0.0.1:80", 0),
        ];
        assert_eq!(attribute(&mut ls, &reqs), 0);
        assert_eq!(counts(&ls), [1, 2]);

        let mut ls = [listener("0.0.0.0:80", false, 3)];
        assert_eq!(attribute(&mut ls, &reqs[1..2]), 1, "another device");
    }

    #[test]
    fn every_member_of_a_reuseport_group_counts_its_requests() {
        let mut ls = [
            listener("0.0.0.0:80", false, 0),
            listener("0.0.0.0:80", false, 0),
        ];
        let reqs = [request(Family::Ipv4, "127.0.0.1:80", 0); 3];
        assert_eq!(attribute(&mut ls, &reqs), 0);
        assert_eq!(counts(&ls), [3, 3]);
    }

    #[test]
    fn entries_become_listeners() {
        use super::super::{DiagSocket, DiagTimer};
        let entry = Entry {
            socket: DiagSocket {
                cgroup: None,
                netns: Netns::new(7).unwrap(),
                family: Family::Ipv6,
                state: TcpState::Listen,
                local: SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 443),
                remote: SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 0),
                inode: 1234,
                uid: 0,
                cookie: 1,
                timer: DiagTimer::None,
                expires_ms: 0,
                retransmits: 0,
                rqueue: 5,
                wqueue: 4,
            },
            v6only: Some(true),
            interface: 0,
        };
        let c = Candidate::from(entry);
        assert_eq!(
            c.listener,
            Listener {
                netns: Netns::new(7).unwrap(),
                local: SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 443),
                inode: 1234,
                queued: 5,
                backlog: 4,
                syn_recv: 0,
            }
        );
        assert!(c.v6only);
        assert_eq!(
            unmapped(Ipv4Addr::LOCALHOST.into()),
            IpAddr::from(Ipv4Addr::LOCALHOST)
        );
    }

    #[test]
    fn this_namespace_can_be_read() {
        // Needs no privilege: sock_diag and netstat of one's own namespace are open to all.
        let (listeners, _) = listeners_current().unwrap();
        let here = netns::current_inode().unwrap();
        assert!(listeners.iter().all(|l| l.netns == here), "{listeners:?}");
    }
}
