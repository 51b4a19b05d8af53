//! `clients`: the daemon as the one consumer of the kernel that terminal views connect to.
//! What `observer top` costs beside 100,000 tracked sockets, and the daemon's throughput with
//! three `observer watch --json` clients streaming every event, against the same load with
//! none, one right after the other.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use observer_testkit::{
    churn::{self, Load},
    daemon::{cpu_secs, die_with_parent, thread_cpu_secs},
    netns::NetNs,
};

use super::{TABLES, Watched, rate};
use crate::{Check, OBSERVER, Row, load};

const CLIENTS: usize = 3;
/// One churn thread: the load leaves the clients a core (with two, on a 2-core host, the
/// load takes both and the clients fall a queue behind).
const CHURN_THREADS: usize = 1;

pub(super) fn clients(quick: bool) -> anyhow::Result<Row> {
    let (tw_secs, top_secs, churned) = if quick {
        (2, 5, 20_000)
    } else {
        (10, 10, 100_000)
    };
    let tw = NetNs::new("stress-top")?;
    tw.sysctl("net.ipv4.tcp_tw_reuse", "0")?;
    tw.sysctl("net.ipv4.ip_local_port_range", "10000 60999")?;
    tw.sysctl("net.ipv4.tcp_max_tw_buckets", "400000")?;
    let mut w = Watched::start(TABLES, &[])?;
    let socket = w.daemon.socket();

    // 10,000 TIME_WAIT a second for 10 s: 100,000 sockets tracked for the next 60 s.
    let made = tw.enter(|| load::time_wait(10_000, Duration::from_secs(tw_secs)))?;
    std::thread::sleep(Duration::from_secs(1));
    let tracked = w
        .metrics()?
        .sum("observer_tracker_sockets", &[("table", "timewait")]);
    let mut row = Row {
        scenario: "clients",
        load: format!(
            "observer top beside {made} TIME_WAIT for {top_secs} s; then {churned} connections \
             churned with {CLIENTS} watch clients streaming, after the same with none"
        ),
        ..Row::default()
    };
    row.checks.push(Check::new(
        "sockets tracked while top runs",
        tracked >= made,
        format!("{tracked} timewait sockets tracked, {made} made"),
    ));

    // The daemon alone, then the daemon serving top, over windows of the same length.
    let window = Duration::from_secs(top_secs);
    let idle = cpu_over(w.daemon.pid(), window);
    let top = Top::start(&socket)?;
    // Its first screens: connecting, the first snapshot.
    std::thread::sleep(Duration::from_secs(2));
    let (top_cpu, daemon_cpu) = {
        let (top0, daemon0, at) = (cpu_secs(top.pid), w.daemon.cpu_secs(), Instant::now());
        std::thread::sleep(window);
        let wall = at.elapsed().as_secs_f64();
        (
            (cpu_secs(top.pid) - top0) / wall,
            (w.daemon.cpu_secs() - daemon0) / wall,
        )
    };
    let screen = top.screen()?;
    drop(top);
    let shown = shown_timewait(&screen);
    row.checks.push(Check::new(
        "top shows the sockets",
        shown.is_some_and(|n| n >= made),
        format!("its states line shows TIME_WAIT {shown:?}, {made} made"),
    ));
    row.checks.push(Check::new(
        "CPU of observer top, refreshing every second",
        true,
        format!(
            "top {:.1}% of a core; the daemon {:.1}% serving it against {:.1}% alone, beside \
             {tracked} tracked sockets",
            top_cpu * 100.0,
            daemon_cpu * 100.0,
            idle * 100.0
        ),
    ));

    streaming(&mut w, &mut row, &socket, churned)?;
    w.finish(&mut row)?;
    Ok(row)
}

/// The same churn twice, in a namespace of its own: without clients, then with three
/// `observer watch --json` streaming it as fast as it goes; then three new clients on a steady
/// churn of [`PACED_PER_S`] connections a second.
fn streaming(
    w: &mut Watched,
    row: &mut Row,
    socket: &std::path::Path,
    churned: u64,
) -> anyhow::Result<()> {
    let churn_ns = NetNs::new("stress-clients")?;
    let lost_before = w.lost()?;
    let alone = churn_once(w, &churn_ns, churned, None)?;
    let rss_before = w.daemon.rss_bytes();
    let threads_before = thread_cpu(w.daemon.pid());
    let (with, received, drops) = with_clients(w, socket, &churn_ns, churned, None)?;
    let threads: Vec<String> = thread_cpu(w.daemon.pid())
        .into_iter()
        .map(|(name, cpu)| {
            let before = threads_before.get(&name).copied().unwrap_or(0.0);
            format!("{name} {:.2} s", cpu - before)
        })
        .collect();
    let rss_after = w.daemon.rss_bytes();
    // A client that falls a queue behind is cut off and counted, never waited for: each one
    // got every transition, or was cut off, and the cut-offs are the drops counted.
    let identity = |received: &[u64], made: u64, drops: u64| {
        let complete = received.iter().filter(|n| **n == made).count();
        let short = received.iter().filter(|n| **n < made).count();
        complete + short == CLIENTS && short as u64 == drops
    };
    row.checks.push(Check::new(
        "each client got every transition, or was cut off and counted",
        identity(&received, with.transitions, drops),
        format!(
            "transition lines per client {received:?}, {} transitions made; {drops} clients \
             cut off for falling behind",
            with.transitions
        ),
    ));
    row.checks.push(Check::new(
        "daemon throughput with 3 streaming clients",
        true,
        format!(
            "{:.0} transitions/s made; daemon {:.2} CPU s per million events with {CLIENTS} \
             clients against {:.2} without (x{:.2}; by thread: {}); RSS {} -> {} MiB",
            with.per_s,
            with.cpu_per_million,
            alone.cpu_per_million,
            with.cpu_per_million / alone.cpu_per_million,
            threads.join(", "),
            rss_before >> 20,
            rss_after >> 20
        ),
    ));
    let paced_connections = churned / 5;
    let (paced, received, drops) =
        with_clients(w, socket, &churn_ns, paced_connections, Some(PACED_PER_S))?;
    row.checks.push(Check::new(
        "at a steady load, 3 clients get every transition",
        identity(&received, paced.transitions, drops) && drops == 0,
        format!(
            "{:.0} transitions/s ({PACED_PER_S} connections/s): transition lines per client \
             {received:?}, {} transitions made, {drops} cut off; daemon {:.2} CPU s per \
             million events, RSS {} MiB",
            paced.per_s,
            paced.transitions,
            paced.cpu_per_million,
            w.daemon.rss_bytes() >> 20
        ),
    ));
    let lost = w.lost()? - lost_before;
    row.checks.push(Check::new(
        "nothing lost with clients streaming",
        lost == 0,
        format!("{lost} events lost"),
    ));
    Ok(())
}

/// Connections a second of the steady churn that three clients stream.
const PACED_PER_S: u64 = 2_500;

/// A churn with three `observer watch --json` streaming it: its figures, the transition lines
/// each client counted, and the clients cut off meanwhile.
fn with_clients(
    w: &mut Watched,
    socket: &std::path::Path,
    ns: &NetNs,
    connections: u64,
    per_second: Option<u64>,
) -> anyhow::Result<(Churned, Vec<u64>, u64)> {
    let drops_before = w.grew("observer_socket_client_drops_total", &[])?;
    let watchers: Vec<Watcher> = (0..CLIENTS)
        .map(|_| Watcher::start(socket, ns.inode()))
        .collect::<anyhow::Result<_>>()?;
    let churned = churn_once(w, ns, connections, per_second)?;
    std::thread::sleep(Duration::from_millis(500));
    let received: Vec<u64> = watchers
        .into_iter()
        .map(Watcher::finish)
        .collect::<anyhow::Result<_>>()?;
    let drops = w.grew("observer_socket_client_drops_total", &[])? - drops_before;
    Ok((churned, received, drops))
}

/// CPU seconds per wall second of `pid` over `window`.
fn cpu_over(pid: u32, window: Duration) -> f64 {
    let (before, at) = (cpu_secs(pid), Instant::now());
    std::thread::sleep(window);
    (cpu_secs(pid) - before) / at.elapsed().as_secs_f64()
}

/// CPU seconds of `pid`'s threads so far, summed by thread name.
fn thread_cpu(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let name = stat
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map_or("?", |(name, _)| name)
            .to_owned();
        let tid = task.file_name().to_string_lossy().parse().unwrap_or(0);
        *by_name.entry(name).or_insert(0.0) += thread_cpu_secs(pid, tid);
    }
    by_name
}

/// One churn's figures.
struct Churned {
    transitions: u64,
    per_s: f64,
    cpu_per_million: f64,
}

fn churn_once(
    w: &mut Watched,
    ns: &NetNs,
    connections: u64,
    per_second: Option<u64>,
) -> anyhow::Result<Churned> {
    let received_before = w.grew("observer_events_received_total", &[])?;
    let cpu_before = w.daemon.cpu_secs();
    let load = Load {
        threads: CHURN_THREADS,
        connections,
        max_time: Duration::from_mins(1),
    };
    let made = ns.enter(|| churn::run_paced(&load, None, per_second))?;
    // The last reads of the ring buffer (every 10 ms) and the clients' last lines.
    std::thread::sleep(Duration::from_secs(1));
    let events = w.grew("observer_events_received_total", &[])? - received_before;
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    let cpu_per_million = (w.daemon.cpu_secs() - cpu_before) * 1e6 / events.max(1) as f64;
    Ok(Churned {
        transitions: made.transitions(),
        per_s: rate(made.transitions(), made.elapsed),
        cpu_per_million,
    })
}

/// `observer top` in a detached tmux session, reading the daemon's socket.
struct Top {
    session: String,
    pid: u32,
}

impl Top {
    fn start(socket: &std::path::Path) -> anyhow::Result<Self> {
        let session = format!("observer-stress-top-{}", std::process::id());
        let command = format!(
            "exec env NO_COLOR=1 {OBSERVER} top --socket {} --interval 1",
            socket.display()
        );
        observer_testkit::tmux::start(&session, &command)
            .context("starting observer top in tmux (cargo xtask setup installs tmux)")?;
        let pid = tmux(&["display-message", "-p", "-t", &session, "#{pane_pid}"])?
            .trim()
            .parse()
            .context("tmux's pane pid")?;
        let top = Self { session, pid };
        std::thread::sleep(Duration::from_millis(300));
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "observer" {
            bail!(
                "tmux's pane runs {comm:?}, not observer top:\n{}",
                top.screen()?
            );
        }
        Ok(top)
    }

    fn screen(&self) -> anyhow::Result<String> {
        tmux(&["capture-pane", "-p", "-t", &self.session])
    }
}

impl Drop for Top {
    fn drop(&mut self) {
        let _ = tmux(&["kill-session", "-t", &self.session]);
    }
}

fn tmux(args: &[&str]) -> anyhow::Result<String> {
    observer_testkit::tmux::run(args).context("running tmux (cargo xtask setup installs it)")
}

/// The TIME_WAIT count of top's states line (`sockets: ... TIME_WAIT 100003 ...`).
fn shown_timewait(screen: &str) -> Option<u64> {
    let line = screen.lines().find(|l| l.starts_with("sockets:"))?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "TIME_WAIT")?;
    words.next()?.parse().ok()
}

/// Whether a line is one of the kernel's transitions: not a timewait socket's restart or end,
/// which the tracker reports from timer events (an earlier churn's TIME_WAIT killed when this
/// one reuses its 4-tuple, for one).
fn is_kernel_transition(line: &str) -> bool {
    line.starts_with("{\"type\":\"transition\"")
        && ![
            "timewait_restarted",
            "timewait_expired",
            "timewait_killed",
            "timewait_unseen",
        ]
        .iter()
        .any(|note| line.contains(&format!("\"note\":\"{note}\"")))
}

/// `observer watch --json` through the daemon's socket, its kernel transitions counted.
struct Watcher {
    child: Child,
    counter: JoinHandle<u64>,
}

impl Watcher {
    fn start(socket: &std::path::Path, netns: u32) -> anyhow::Result<Self> {
        let mut child = die_with_parent(
            Command::new(OBSERVER)
                .args(["watch", "--json", "--netns", &netns.to_string(), "--socket"])
                .arg(socket)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        )
        .spawn()
        .context("starting observer watch")?;
        let out = BufReader::new(child.stdout.take().context("piped")?);
        let counter = std::thread::spawn(move || {
            out.lines()
                .map_while(Result::ok)
                .filter(|l| is_kernel_transition(l))
                .count() as u64
        });
        // Subscribed once its banner would be out; the churn starts after.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self { child, counter })
    }

    /// Stops it (SIGINT: it ends its stream cleanly) and returns the lines it counted.
    fn finish(mut self) -> anyhow::Result<u64> {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(i32::try_from(self.child.id())?, libc::SIGINT) };
        let _ = self.child.wait();
        self.counter
            .join()
            .map_err(|_| anyhow::anyhow!("the line counter panicked"))
    }
}
