//! The benchmark's figures: one table for people, the same figures as JSON. Here the run as a
//! whole and the machine; the figures per level, the table, the JSON and the targets apart.

mod json;
mod level;
mod pairs;
mod table;
mod targets;

use std::path::Path;

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::{Phase, Tracer, calibrate::Calibration};

/// The machine the figures were measured on.
pub struct Machine {
    pub cpu: String,
    pub cpus: usize,
    pub kernel: String,
    pub memory_gib: f64,
}

impl Machine {
    pub fn here() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map_or_else(|| "unknown CPU".to_owned(), |(_, m)| m.trim().to_owned());
        let memory_kib: u64 = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        Self {
            cpu,
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            memory_gib: memory_kib as f64 / (1024.0 * 1024.0),
        }
    }
}

/// The tracker benchmark's figures (benches/tracker/, `--output`).
pub struct Userspace {
    /// Events decoded and tracked per second on one core (median run).
    pub events_per_s: f64,
    /// Which figure of that file it is.
    pub events_key: String,
    /// The same while a client reads every transition (older files lack it).
    pub client_events_per_s: Option<f64>,
    /// The same as the daemon runs, each batch of records written on another CPU, as the
    /// programs write a transition's record on its CPU (older files, and one CPU, lack it).
    pub other_cpu_events_per_s: Option<f64>,
    /// The same, each batch pushed out of the writing CPU's caches before it is read, as the
    /// daemon finds records up to tens of milliseconds after they were written (older files,
    /// and one CPU, lack it).
    pub other_cpu_evicted_events_per_s: Option<f64>,
    /// Decode + track of the dense stream (older files lack it).
    pub dense: Option<Dense>,
    /// Tracked sockets of the memory runs.
    pub sockets: u64,
    /// (family, heap bytes per socket, RSS growth bytes per socket).
    pub bytes_per_socket: Vec<(String, f64, f64)>,
}

/// The tracker benchmark's dense stream: connections four times as often, four times the
/// timewait sockets.
pub struct Dense {
    pub events_per_s: f64,
    /// The most timewait sockets tracked at once.
    pub peak_timewait: u64,
}

impl Userspace {
    /// Events per second: decode + track when the tracker benchmark measures it, else track
    /// only.
    const EVENTS_KEYS: [&str; 2] = [
        "/stream/decode_track/median_events_per_s",
        "/stream/median_events_per_s",
    ];

    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let Some((key, events_per_s)) = Self::EVENTS_KEYS
            .iter()
            .find_map(|k| Some((*k, v.pointer(k)?.as_f64()?)))
        else {
            bail!(
                "{}: no events/s figure (looked for {}); has benches/tracker/ changed its \
                 --output format?",
                path.display(),
                Self::EVENTS_KEYS.join(", ")
            );
        };
        let families = v
            .pointer("/memory/families")
            .and_then(Value::as_array)
            .with_context(|| {
                format!(
                    "{}: no /memory/families (bytes per tracked socket)",
                    path.display()
                )
            })?;
        let mut bytes_per_socket = Vec::new();
        for f in families {
            let (Some(family), Some(heap), Some(rss)) = (
                f.get("family").and_then(Value::as_str),
                f.get("heap_bytes_per_socket").and_then(Value::as_f64),
                f.get("rss_bytes_per_socket").and_then(Value::as_f64),
            ) else {
                bail!(
                    "{}: a /memory/families entry lacks family, heap_bytes_per_socket or \
                     rss_bytes_per_socket",
                    path.display()
                );
            };
            bytes_per_socket.push((family.to_owned(), heap, rss));
        }
        Ok(Self {
            events_per_s,
            events_key: key.to_owned(),
            client_events_per_s: v
                .pointer("/stream/decode_track_client/median_events_per_s")
                .and_then(Value::as_f64),
            other_cpu_events_per_s: v
                .pointer("/stream/decode_track_other_cpu/median_events_per_s")
                .and_then(Value::as_f64),
            other_cpu_evicted_events_per_s: v
                .pointer("/stream/decode_track_other_cpu_evicted/median_events_per_s")
                .and_then(Value::as_f64),
            dense: v.pointer("/stream/decode_track_dense").and_then(|d| {
                Some(Dense {
                    events_per_s: d.get("median_events_per_s")?.as_f64()?,
                    peak_timewait: d.get("peak_tracked_timewait")?.as_u64()?,
                })
            }),
            sockets: v
                .pointer("/memory/sockets")
                .and_then(Value::as_u64)
                .with_context(|| format!("{}: no /memory/sockets", path.display()))?,
            bytes_per_socket,
        })
    }

    /// The highest of the families' bytes per socket (heap estimate or RSS growth).
    fn worst_bytes_per_socket(&self) -> f64 {
        self.bytes_per_socket
            .iter()
            .map(|(_, heap, rss)| heap.max(*rss))
            .fold(0.0, f64::max)
    }
}

pub struct Bench {
    /// When the run ended, RFC 3339 UTC.
    pub finished: String,
    pub machine: Machine,
    /// Full names of the eBPF object's programs.
    pub programs: Vec<String>,
    pub quick: bool,
    pub rounds: u64,
    pub connections: u64,
    pub calibration: Vec<Calibration>,
    pub phases: Vec<Phase>,
    pub userspace: Option<Userspace>,
}

/// Every tracer, in the order of the tables.
const TRACERS: [Tracer; 10] = [
    Tracer::None,
    Tracer::Observer,
    Tracer::Programs,
    Tracer::Hooks,
    Tracer::StateReads,
    Tracer::Tcpstates,
    Tracer::Baseline,
    Tracer::BaselineRaw,
    Tracer::BaselineWakeEach,
    Tracer::BaselineNoWakeup,
];

/// `1234567` -> `1,234,567`.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut s = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            s.push(',');
        }
        s.push(d);
    }
    s
}

#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "positive display figures"
)]
fn whole(x: f64) -> String {
    if x.is_finite() {
        grouped(x.round() as u64)
    } else {
        "-".to_owned()
    }
}

fn opt<T>(x: Option<T>, f: impl Fn(T) -> String) -> String {
    x.map_or_else(|| "-".to_owned(), f)
}
