//! What a Prometheus scrape costs with many tracked sockets: time with the daemon's lock held
//! (the snapshot), encoding, the whole HTTP request, and the response size. Pure userspace: the
//! tracker is filled with synthetic events, no eBPF, no root.
//!
//! Run: `cargo bench -p observer --bench scrape [-- --sockets N --scrapes N]`.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use observer::{
    clock::mono_now_ns,
    event::{Event, Family, Netns, Task, TimerAction, TimewaitSocket, TimewaitTimer, Transition},
    export::{Exporter, text_format},
    kernel::NetLimits,
    run::{Shared, State, http},
    track::Tracker,
};
use observer_common::TcpState::{self, Close, CloseWait, Established, SynSent, TimeWait};
use rustc_hash::FxHashMap;

#[derive(Parser)]
#[command(about = "scrape latency and response size with many tracked sockets")]
struct Options {
    /// Tracked sockets: 60% ESTABLISHED, 10% CLOSE_WAIT, 30% TIME_WAIT.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=2_000_000))]
    sockets: u64,
    /// Scrapes measured per figure.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    scrapes: u64,
    /// Ignored: cargo bench passes it.
    #[arg(long, hide = true)]
    bench: bool,
}

const NETNS: Netns = Netns::new(4_026_531_840).unwrap();
const SOCK_BASE: u64 = 0xffff_8880_0000_0000;
const TIMER_BASE: u64 = 0xffff_88c0_0000_0060;

fn ends(i: u64) -> (SocketAddr, SocketAddr) {
    let ip = IpAddr::V4(Ipv4Addr::from(
        0x0a00_0000 + u32::try_from(i / 20_000).unwrap(),
    ));
    let port = u16::try_from(32_768 + i % 20_000).unwrap();
    (
        SocketAddr::new(ip, port),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 255, 0, 1)), 443),
    )
}

fn transition(at: u64, sock: u64, old: TcpState, new: TcpState, i: u64) -> Event {
    let (local, remote) = ends(i);
    Event::Transition(Transition {
        cgroup: None,
        mono_ns: at,
        sock,
        old,
        new,
        family: Family::Ipv4,
        local,
        remote,
        netns: Some(NETNS),
        task: Task::named(4200, "client"),
        owner_context: TcpState::in_owner_context(old, new),
        has_socket: Some(true),
    })
}

/// A tracker holding `n` sockets in the mix above, all entered about a minute ago.
fn filled(n: u64) -> Tracker {
    let mut tracker = Tracker::new(2 * usize::try_from(n).unwrap());
    let mut reports = Vec::new();
    let t0 = mono_now_ns().saturating_sub(60_000_000_000);
    for i in 0..n {
        let sock = SOCK_BASE + i * 0x1000;
        let at = t0 + i;
        match i % 10 {
            0..=5 => {
                tracker.apply(&transition(at, sock, Close, SynSent, i), &mut reports);
                tracker.apply(&transition(at, sock, SynSent, Established, i), &mut reports);
            }
            6 => {
                tracker.apply(&transition(at, sock, Close, SynSent, i), &mut reports);
                tracker.apply(&transition(at, sock, SynSent, Established, i), &mut reports);
                tracker.apply(
                    &transition(at, sock, Established, CloseWait, i),
                    &mut reports,
                );
            }
            _ => {
                let (local, remote) = ends(i);
                let socket = TimewaitSocket {
                    substate: TimeWait,
                    family: Family::Ipv4,
                    local,
                    remote,
                    netns: Some(NETNS),
                };
                let start = TimerAction::Start {
                    socket,
                    timeout_ns: Some(60_000_000_000),
                };
                tracker.apply(
                    &Event::Timewait(TimewaitTimer {
                        mono_ns: at,
                        timer: TIMER_BASE + i * 0x1000,
                        cookie: 0,
                        action: start,
                    }),
                    &mut reports,
                );
            }
        }
        reports.clear();
    }
    tracker
}

/// The `per_mille`th of `sorted`, nearest rank.
fn percentile(sorted: &[Duration], per_mille: usize) -> Duration {
    sorted[(sorted.len() - 1) * per_mille / 1000]
}

fn measure(n: u64, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    (percentile(&times, 500), percentile(&times, 990))
}

fn get(addr: SocketAddr, accept: &str) -> usize {
    let mut stream = TcpStream::connect(addr).unwrap();
    // One write: a request in pieces would wait on Nagle for the server's delayed ACK.
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nAccept: {accept}\r\n\r\n").as_bytes())
        .unwrap();
    let mut body = Vec::new();
    stream.read_to_end(&mut body).unwrap();
    assert!(body.starts_with(b"HTTP/1.0 200") || body.starts_with(b"HTTP/1.1 200"));
    body.len()
}

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1e3)
}

/// One size's figures.
struct Row {
    sockets: u64,
    snapshot: (Duration, Duration),
    encode: (Duration, Duration),
    get_openmetrics: (Duration, Duration),
    get_text: (Duration, Duration),
    bytes: usize,
    samples: usize,
}

fn measure_size(sockets: u64, scrapes: u64) -> anyhow::Result<Row> {
    let tracker = filled(sockets);
    let counts = tracker.counts_by_state();
    assert_eq!(
        counts[Established] + counts[CloseWait] + counts[TimeWait],
        sockets,
        "every socket tracked"
    );
    let limits = FxHashMap::from_iter([(
        NETNS,
        NetLimits {
            max_tw_buckets: Some(262_144),
            local_port_range: Some((32_768, 60_999)),
        },
    )]);
    let mut tracker = tracker;
    tracker.set_limits(&limits);
    let shared = Shared::new(State {
        limits,
        ..State::new(tracker, observer::track::DEFAULT_HALF_OPEN_AFTER_NS)
    });
    let exporter = Arc::new(Exporter::default());
    let snapshot_once = shared.snapshot(http::METRICS_LISTED);
    let om = exporter.openmetrics(snapshot_once.clone());
    assert!(om.contains("observer_tcp_close_wait_oldest_seconds"));
    let snapshot = measure(scrapes, || {
        std::hint::black_box(shared.snapshot(http::METRICS_LISTED));
    });
    let encode = measure(scrapes, || {
        std::hint::black_box(exporter.openmetrics(snapshot_once.clone()));
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let addr = runtime.block_on(async {
        let listener = http::bind("127.0.0.1:0".parse().unwrap()).await?;
        let addr = listener.local_addr()?;
        http::serve(listener, shared.clone(), exporter);
        anyhow::Ok(addr)
    })?;
    std::thread::spawn(move || runtime.block_on(std::future::pending::<()>()));
    let mut bytes = 0;
    let get_openmetrics = measure(scrapes, || {
        bytes = get(addr, "application/openmetrics-text; version=1.0.0");
    });
    let get_text = measure(scrapes, || {
        std::hint::black_box(get(addr, "text/plain"));
    });
    Ok(Row {
        sockets,
        snapshot,
        encode,
        get_openmetrics,
        get_text,
        bytes,
        samples: text_format::from_openmetrics(&om)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .count(),
    })
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let mut sizes = vec![1_000, 10_000, options.sockets];
    sizes.sort_unstable();
    sizes.dedup();
    let rows = sizes
        .into_iter()
        .map(|n| measure_size(n, options.scrapes))
        .collect::<anyhow::Result<Vec<_>>>()?;
    println!(
        "\nscrape cost by tracked sockets (60% ESTABLISHED, 10% CLOSE_WAIT, 30% TIME_WAIT); \
         p50 / p99 of {} scrapes\n",
        options.scrapes
    );
    println!(
        "{:>9}  {:>21}  {:>17}  {:>21}  {:>21}  {:>9}  {:>7}",
        "sockets",
        "lock held (snapshot)",
        "encode",
        "GET, OpenMetrics",
        "GET, Prometheus text",
        "bytes",
        "samples"
    );
    let pair = |(p50, p99): (Duration, Duration)| format!("{} / {}", ms(p50), ms(p99));
    for r in &rows {
        println!(
            "{:>9}  {:>21}  {:>17}  {:>21}  {:>21}  {:>9}  {:>7}",
            r.sockets,
            pair(r.snapshot),
            pair(r.encode),
            pair(r.get_openmetrics),
            pair(r.get_text),
            r.bytes,
            r.samples
        );
    }
    let (small, large) = (&rows[0], &rows[rows.len() - 1]);
    println!(
        "\n{}x the sockets: {:.1}x the scrape time (p50, OpenMetrics); the response size does not \
         grow with sockets (labels are bounded)",
        large.sockets / small.sockets,
        large.get_openmetrics.0.as_secs_f64() / small.get_openmetrics.0.as_secs_f64()
    );
    Ok(())
}
