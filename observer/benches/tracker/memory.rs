//! Memory per tracked socket: a fresh tracker holding many live or timewait sockets, each run
//! in a fresh process.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use observer::{
    event::{Event, Family, TimerAction, TimewaitSocket, Transition},
    track::{Report, Tracker},
};
use observer_common::TcpState::{Close, Established, FinWait2, SynSent, TimeWait};

use super::{
    BATCH,
    stream::{
        NETNS, SOCK_BASE, T0, TIMER_BASE, TIMEWAIT_NS, US, client_task, ends, server_task, timer,
        transition,
    },
};

/// Events generated at a time while filling the memory runs' trackers.
const CHUNK: usize = 4096;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct MemoryRun {
    pub heap_bytes_per_socket: f64,
    pub rss_bytes_per_socket: f64,
    pub insert_events_per_s: f64,
}

/// Connection `i`'s connect() and its completion: a socket that stays ESTABLISHED.
fn open_socket(family: Family, i: u64, out: &mut Vec<Event>) {
    let (client, server) = ends(family, i);
    let c = SOCK_BASE + i * 0x1000;
    let (ct, st) = (client_task(), server_task());
    let ns = T0 + i * US;
    let unbound = SocketAddr::new(client.ip(), 0);
    out.push(transition(
        ns, c, Close, SynSent, unbound, server, ct, st, true,
    ));
    out.push(transition(
        ns + 40 * US,
        c,
        SynSent,
        Established,
        client,
        server,
        ct,
        st,
        true,
    ));
}

/// What a memory run tracks: live sockets, or timewait sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    Sockets(Family),
    Timewait(Family),
}

impl Held {
    pub const ALL: [Self; 4] = [
        Self::Sockets(Family::Ipv4),
        Self::Sockets(Family::Ipv6),
        Self::Timewait(Family::Ipv4),
        Self::Timewait(Family::Ipv6),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Sockets(Family::Ipv4) => "ipv4",
            Self::Sockets(Family::Ipv6) => "ipv6",
            Self::Timewait(Family::Ipv4) => "timewait-ipv4",
            Self::Timewait(Family::Ipv6) => "timewait-ipv6",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.name() == name)
    }

    /// The events that leave socket `i` held.
    fn open(self, i: u64, out: &mut Vec<Event>) {
        match self {
            Self::Sockets(family) => open_socket(family, i, out),
            Self::Timewait(family) => open_timewait(family, i, out),
        }
    }
}

/// Connection `i`'s timewait socket: its timer starts, and its full socket closes from
/// FIN_WAIT2 right after, as the kernel does it.
fn open_timewait(family: Family, i: u64, out: &mut Vec<Event>) {
    let (client, server) = ends(family, i);
    let at = T0 + i * US;
    out.push(timer(
        at,
        TIMER_BASE + i * 0x1000,
        TimerAction::Start {
            socket: TimewaitSocket {
                substate: TimeWait,
                family,
                local: client,
                remote: server,
                netns: Some(NETNS),
            },
            timeout_ns: Some(TIMEWAIT_NS),
        },
    ));
    let close = transition(
        at,
        SOCK_BASE + i * 0x1000,
        FinWait2,
        Close,
        client,
        server,
        client_task(),
        server_task(),
        false,
    );
    // In the namespace the tracker would know from the full socket's birth, which this run
    // does not replay (the socket would be gone again by now): the close finds its timewait
    // socket by its 4-tuple in that namespace.
    out.push(match close {
        Event::Transition(t) => Event::Transition(Transition {
            netns: Some(NETNS),
            ..t
        }),
        other => other,
    });
}

/// Holds `sockets` sockets in a fresh tracker, generating their events a chunk at a time so
/// that no event vector inflates the resident set.
pub fn memory_run(held: Held, sockets: u64) -> MemoryRun {
    let per_chunk = u64::try_from(CHUNK / 2).expect("fits");
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut out: Vec<Report> = Vec::with_capacity(CHUNK + BATCH);
    // Touch the buffers before the baseline: they are not the tracker's.
    for i in 0..per_chunk.min(sockets) {
        held.open(i, &mut chunk);
    }
    chunk.clear();
    let before = rss_bytes();
    let mut tracker = Tracker::new(usize::try_from(sockets).expect("fits"));
    let mut busy = Duration::ZERO;
    for first in (0..sockets).step_by(CHUNK / 2) {
        chunk.clear();
        for i in first..(first + per_chunk).min(sockets) {
            held.open(i, &mut chunk);
        }
        let start = Instant::now();
        for e in &chunk {
            tracker.apply(e, &mut out);
        }
        tracker.advance(chunk.last().map_or(0, Event::mono_ns), &mut out);
        busy += start.elapsed();
        out.clear();
    }
    let after = rss_bytes();
    let stats = tracker.stats();
    let (held_state, held_now) = match held {
        Held::Sockets(_) => (Established, stats.tracked_sockets),
        Held::Timewait(_) => (TimeWait, stats.tracked_timewait),
    };
    assert_eq!(
        (
            held_now as u64,
            stats.evicted,
            stats.gaps,
            stats.timewait_unlinked,
            stats.timewait_missing
        ),
        (sockets, 0, 0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(tracker.counts_by_state()[held_state], sockets);
    let n = sockets as f64;
    MemoryRun {
        heap_bytes_per_socket: tracker.heap_bytes() as f64 / n,
        rss_bytes_per_socket: (after as f64 - before as f64) / n,
        insert_events_per_s: 2.0 * n / busy.as_secs_f64(),
    }
}

/// Resident bytes of this process, from `/proc/self/statm`.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("reading /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("resident pages in /proc/self/statm");
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).expect("a positive page size")
}

/// One memory run in a child process. Each starts with a fresh allocator: in one process, a
/// second run's RSS would also hold table sizes the first one freed and malloc kept.
pub fn memory_run_apart(held: Held, sockets: u64) -> anyhow::Result<MemoryRun> {
    let exe = std::env::current_exe().context("finding this benchmark's executable")?;
    let child = std::process::Command::new(exe)
        .args([
            "--memory-run",
            held.name(),
            "--sockets",
            &sockets.to_string(),
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running a memory run")?;
    anyhow::ensure!(
        child.status.success(),
        "the {} memory run failed",
        held.name()
    );
    serde_json::from_slice(&child.stdout).context("reading a memory run's figures")
}

/// Figures of several runs of one kind.
pub struct MemoryFigures {
    pub held: Held,
    pub runs: Vec<MemoryRun>,
}

impl MemoryFigures {
    pub fn median(&self, f: impl Fn(&MemoryRun) -> f64) -> f64 {
        let mut v: Vec<f64> = self.runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    pub fn best_insert(&self) -> f64 {
        self.runs
            .iter()
            .map(|r| r.insert_events_per_s)
            .fold(0.0, f64::max)
    }
}
