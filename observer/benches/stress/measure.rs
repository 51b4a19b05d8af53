//! What a stress run reads besides the daemon's counters: the daemon's scrape latency and
//! resident memory while it runs, the kernel's own counters and socket lists, the alerts the
//! daemon fired.

use std::{
    collections::BTreeMap,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use observer_common::TcpState;
use observer_testkit::{
    daemon::{Daemon, status_kib},
    netns::NetNs,
    scrape::Scraper,
    ss,
};

/// Scrapes the daemon every half second on a thread of its own, timing each scrape, and
/// follows its resident memory.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    latencies: Arc<Mutex<Vec<Duration>>>,
    failures: Arc<Mutex<u64>>,
}

impl Sampler {
    pub fn start(daemon: &Daemon) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let latencies = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(0));
        let addr = daemon.addr;
        let thread = {
            let (stop, latencies, failures) = (
                Arc::clone(&stop),
                Arc::clone(&latencies),
                Arc::clone(&failures),
            );
            std::thread::spawn(move || {
                let mut scraper = Scraper::connect(addr).ok();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let ok = scraper.as_mut().is_some_and(|s| s.scrape().is_ok());
                    if ok {
                        latencies.lock().unwrap().push(started.elapsed());
                    } else {
                        *failures.lock().unwrap() += 1;
                        scraper = Scraper::connect(addr).ok();
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            })
        };
        Self {
            stop,
            thread: Some(thread),
            latencies,
            failures,
        }
    }

    /// Stops, and returns (p50, p99) of the scrape latency in milliseconds, and the failed
    /// scrapes.
    pub fn finish(mut self) -> (f64, f64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut l = self.latencies.lock().unwrap().clone();
        l.sort();
        let at = |q: f64| {
            if l.is_empty() {
                return 0.0;
            }
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "an index into a short list"
            )]
            let i = ((l.len() - 1) as f64 * q).round() as usize;
            l[i].as_secs_f64() * 1e3
        };
        let failed = *self.failures.lock().unwrap();
        (at(0.5), at(0.99), failed)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Resident memory of the daemon now and at its peak (VmRSS, VmHWM), bytes.
pub fn rss(daemon: &Daemon) -> (u64, u64) {
    (
        status_kib(daemon.pid(), "VmRSS:") * 1024,
        status_kib(daemon.pid(), "VmHWM:") * 1024,
    )
}

/// The kernel's SNMP and netstat counters of a namespace (`Tcp: OutRsts`, `TcpExt:
/// TCPSynRetrans`...), read inside it; `None` for the host's own namespace.
pub fn kernel_counters(ns: Option<&NetNs>) -> BTreeMap<String, u64> {
    let mut counters = BTreeMap::new();
    for file in ["/proc/net/snmp", "/proc/net/netstat"] {
        let out = match ns {
            Some(ns) => Command::new("ip")
                .args(["netns", "exec", ns.name(), "cat", file])
                .output(),
            None => Command::new("cat").arg(file).output(),
        }
        .expect("reading the kernel's counters");
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            let [names, values] = pair else { continue };
            let (prefix, names) = names.split_once(':').unwrap_or_default();
            let values = values.split_once(':').map_or("", |v| v.1);
            for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
                if let Ok(v) = v.parse() {
                    counters.insert(format!("{prefix}:{n}"), v);
                }
            }
        }
    }
    counters
}

/// What a counter grew by.
pub fn grew(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, name: &str) -> u64 {
    after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0)
}

/// TCP sockets by state as `ss` lists them in the host's namespace and in every named one
/// (the namespaces a stress run makes are named): the kernel's view of what the daemon tracks.
pub fn kernel_sockets_by_state() -> BTreeMap<TcpState, u64> {
    let mut by_state = BTreeMap::new();
    let mut count = |out: &[u8]| {
        for line in String::from_utf8_lossy(out).lines() {
            if let Some(state) = ss_state(line) {
                *by_state.entry(state).or_default() += 1;
            }
        }
    };
    count(
        &Command::new("ss")
            .args(["-Htan"])
            .output()
            .expect("running ss")
            .stdout,
    );
    let names = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    for name in String::from_utf8_lossy(&names.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
    {
        count(
            &Command::new("ip")
                .args(["netns", "exec", name, "ss", "-Htan"])
                .output()
                .expect("running ss")
                .stdout,
        );
    }
    by_state
}

/// The state of one `ss -Htan` line; request sockets (`SYN-RECV`) are not counted: the
/// tracker holds full sockets.
fn ss_state(line: &str) -> Option<TcpState> {
    Some(match line.split_whitespace().next()? {
        "ESTAB" => TcpState::Established,
        "SYN-SENT" => TcpState::SynSent,
        "FIN-WAIT-1" => TcpState::FinWait1,
        "FIN-WAIT-2" => TcpState::FinWait2,
        "TIME-WAIT" => TcpState::TimeWait,
        "CLOSE-WAIT" => TcpState::CloseWait,
        "LAST-ACK" => TcpState::LastAck,
        "LISTEN" => TcpState::Listen,
        "CLOSING" => TcpState::Closing,
        _ => return None,
    })
}

/// Sockets in a namespace, by `ss`.
pub fn sockets_in(ns: &NetNs, state: TcpState) -> u64 {
    ss::tcp_sockets(ns)
        .iter()
        .filter(|s| s.state == state)
        .count() as u64
}

/// Alert state changes the daemon wrote to its alerts file: (status, alertname) of each.
pub fn alert_changes(daemon: &Daemon) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(daemon.dir().join("alerts.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            (
                v["status"].as_str().unwrap_or_default().to_owned(),
                v["alertname"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}
