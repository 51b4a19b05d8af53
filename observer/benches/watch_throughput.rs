//! How many transitions per second `observer watch --json > /dev/null` sustains, and whether it
//! loses any, under connection churn inside a private network namespace.
//!
//! Each worker thread repeatedly connects to its own listener, accepts, closes the client first
//! and then the server side: 10 transitions per connection, plus 2 per listener, so the
//! expected count is exact. Every level is bounded in connections and in time.
//!
//! Run: `cargo xtask bench-watch` (root needed).

#![expect(clippy::cast_precision_loss, reason = "figures for display")]

#[path = "../tests/support/netns.rs"]
mod netns;

use std::{
    io::{BufRead as _, BufReader, Read as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use clap::Parser;
use netns::NetNs;

#[derive(Parser)]
#[command(about = "observer watch throughput and loss under connection churn")]
struct Options {
    /// Worker thread counts to run, one level each.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    threads: Vec<usize>,
    /// Most connections per level.
    #[arg(long, default_value_t = 300_000)]
    max_connections: u64,
    /// Most seconds of churn per level.
    #[arg(long, default_value_t = 6.0)]
    seconds: f64,
    /// `observer watch --ring-buffer-size`.
    #[arg(long, default_value = "4M")]
    ring_buffer_size: String,
    /// Write observer's JSON to this file instead of /dev/null (the last level's output).
    #[arg(long)]
    output: Option<std::path::PathBuf>,
    /// Ignored: cargo bench passes it.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Transitions of one connection (client: 5, server side: 5) and of one listener.
const PER_CONNECTION: u64 = 10;
const PER_LISTENER: u64 = 2;

struct Level {
    threads: usize,
    connections: u64,
    churn_secs: f64,
    expected: u64,
    summary: Vec<u64>,
    observer_cpu_secs: f64,
}

/// Connect, accept, client closes, server reads EOF and closes; until the budget runs out.
/// Destination addresses rotate over `127.0.0.0/8` so that `TIME_WAIT` never exhausts 4-tuples.
fn churn(threads: usize, max_connections: u64, deadline: Instant) -> u64 {
    let per_thread = max_connections / threads as u64;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(move || {
                    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
                    let port = listener.local_addr().unwrap().port();
                    let mut done = 0u64;
                    while done < per_thread
                        && (!done.is_multiple_of(256) || Instant::now() < deadline)
                    {
                        let dst = Ipv4Addr::new(127, 0, 0, 1 + (done % 250) as u8);
                        let client = TcpStream::connect(SocketAddr::from((dst, port))).unwrap();
                        let (mut server, _) = listener.accept().unwrap();
                        drop(client);
                        assert_eq!(server.read(&mut [0u8; 8]).unwrap(), 0);
                        drop(server);
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    })
}

fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

fn run_level(threads: usize, options: &Options) -> Level {
    let ns = NetNs::new("bench").expect("creating a network namespace (needs root)");
    let mut child = Command::new(env!("CARGO_BIN_EXE_observer"))
        .args(["watch", "--json", "--netns", &ns.inode().to_string()])
        .args(["--ring-buffer-size", &options.ring_buffer_size])
        .stdout(options.output.as_ref().map_or_else(Stdio::null, |p| {
            Stdio::from(std::fs::File::create(p).expect("creating --output file"))
        }))
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting observer");
    let (tx, rx) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("observer did not start");
    assert!(ready.contains("watching"), "observer: {ready}");

    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(options.seconds);
    let connections = ns.enter(|| churn(threads, options.max_connections, deadline));
    let churn_secs = start.elapsed().as_secs_f64();
    // Some last transitions (the final ACKs) may still be in softirq processing when the
    // workers return; let them land before stopping the observer.
    std::thread::sleep(Duration::from_millis(300));
    let observer_cpu_secs = cpu_secs(child.id());
    // SAFETY: signalling our own child.
    unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGINT) };
    assert!(child.wait().unwrap().success());
    let last = rx.iter().last().expect("observer printed a summary");
    // "N events received, N shown (N of them RSTs, TIME_WAIT ends and restarts); lost N (ring buffer
    // full N, recursion misses N, unreadable N), malformed N, gaps N, evicted sockets N,
    // seeded N, stale N"
    let summary: Vec<u64> = last
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(summary.len(), 12, "unexpected summary: {last}");
    Level {
        threads,
        connections,
        churn_secs,
        expected: connections * PER_CONNECTION + threads as u64 * PER_LISTENER,
        summary,
        observer_cpu_secs,
    }
}

fn main() {
    let options = Options::parse();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("observer watch --json > /dev/null under loopback connection churn");
    println!(
        "machine: {cpus} CPUs, Linux {}; ring buffer {}",
        kernel.trim(),
        options.ring_buffer_size
    );
    println!();
    println!(
        "{:>7} {:>11} {:>7} {:>9} {:>13} {:>10} {:>10} {:>6} {:>12} {:>6} {:>12}",
        "threads",
        "connections",
        "seconds",
        "conn/s",
        "transitions/s",
        "expected",
        "shown",
        "lost",
        "unaccounted",
        "gaps",
        "observer CPU"
    );
    let mut best = None;
    for &threads in &options.threads {
        let l = run_level(threads, &options);
        // RSTs and TIME_WAIT ends (the churn reuses ports, which kills timewait sockets, and
        // fills tcp_max_tw_buckets, after which the peer's FIN meets no socket) are not kernel
        // transitions: they are not part of the expected count.
        let (shown, lost, gaps) = (l.summary[1] - l.summary[2], l.summary[3], l.summary[8]);
        let rate = l.expected as f64 / l.churn_secs;
        println!(
            "{:>7} {:>11} {:>7.2} {:>9.0} {:>13.0} {:>10} {:>10} {:>6} {:>12} {:>6} {:>11.0}%",
            l.threads,
            l.connections,
            l.churn_secs,
            l.connections as f64 / l.churn_secs,
            rate,
            l.expected,
            shown,
            lost,
            i128::from(l.expected) - i128::from(shown) - i128::from(lost),
            gaps,
            100.0 * l.observer_cpu_secs / l.churn_secs,
        );
        if shown == l.expected && lost == 0 && best.is_none_or(|b| rate > b) {
            best = Some(rate);
        }
    }
    println!();
    match best {
        Some(rate) => println!(
            "highest rate with every transition delivered and none lost: {rate:.0} transitions/s"
        ),
        None => println!("every level lost or missed transitions: see the table"),
    }
}
