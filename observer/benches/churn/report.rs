//! The benchmark's figures: one table for people, the same figures as JSON.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use observer::load::contract::{self, Part};
use observer_common::RecordKind;
use observer_testkit::scrape::Counters;

use super::{
    DaemonPhase, KINDS, Phase, Tracer, calibrate::Calibration, kstats::Cost, listener_transitions,
    transitions_per_connection,
};

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
    /// Tracked sockets of the memory runs.
    pub sockets: u64,
    /// (family, heap bytes per socket, RSS growth bytes per socket).
    pub bytes_per_socket: Vec<(String, f64, f64)>,
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
const TRACERS: [Tracer; 6] = [
    Tracer::None,
    Tracer::Observer,
    Tracer::Tcpstates,
    Tracer::Baseline,
    Tracer::BaselineWakeEach,
    Tracer::BaselineNoWakeup,
];

/// Targets of the benchmark.
const THROUGHPUT_RATIO: f64 = 0.97;
const KERNEL_COST_RATIO: f64 = 1.5;
const EVENTS_PER_CORE: f64 = 2_000_000.0;
const BYTES_PER_SOCKET: f64 = 200.0;

/// The full name of a program of the object, from the 15 bytes of it the kernel keeps; names
/// that share those bytes are joined with " + " (their figures are summed).
fn full_name(programs: &[String], kernel_name: &str) -> String {
    // Shorter names are whole.
    if kernel_name.len() < 15 {
        return kernel_name.to_owned();
    }
    let mut matching: Vec<&str> = programs
        .iter()
        .map(String::as_str)
        .filter(|n| n.starts_with(kernel_name))
        .collect();
    matching.sort_unstable();
    if matching.is_empty() {
        kernel_name.to_owned()
    } else {
        matching.join(" + ")
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

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

/// One program's cost summed over the phases of a level.
#[derive(Clone, Debug, Default)]
struct ProgramCost {
    tracer: &'static str,
    program: String,
    invocations: u64,
    run_time_ns: u64,
    recursion_misses: u64,
    /// Records it delivered, when known.
    records: Option<u64>,
}

impl ProgramCost {
    fn ns_per_invocation(&self) -> Option<f64> {
        (self.invocations > 0).then(|| self.run_time_ns as f64 / self.invocations as f64)
    }

    fn ns_per_record(&self) -> Option<f64> {
        self.records
            .filter(|r| *r > 0)
            .map(|r| self.run_time_ns as f64 / r as f64)
    }

    fn json(&self) -> Value {
        json!({
            "tracer": self.tracer,
            "program": self.program,
            "invocations": self.invocations,
            "run_time_ns": self.run_time_ns,
            "recursion_misses": self.recursion_misses,
            "records": self.records,
            "ns_per_invocation": self.ns_per_invocation(),
            "ns_per_record": self.ns_per_record(),
        })
    }
}

/// What one tracer did over the phases of a level.
struct Level<'a> {
    threads: usize,
    phases: Vec<&'a Phase>,
    programs: &'a [String],
}

impl Level<'_> {
    fn of(&self, tracer: Tracer) -> impl Iterator<Item = &Phase> {
        self.phases
            .iter()
            .copied()
            .filter(move |p| p.tracer == tracer)
    }

    fn median_rate(&self, tracer: Tracer) -> Option<f64> {
        let rates: Vec<f64> = self
            .of(tracer)
            .map(|p| p.made.connections_per_s())
            .collect();
        (!rates.is_empty()).then(|| median(rates))
    }

    fn median_transition_rate(&self, tracer: Tracer) -> Option<f64> {
        let rates: Vec<f64> = self
            .of(tracer)
            .map(|p| p.made.transitions() as f64 / p.made.elapsed.as_secs_f64())
            .collect();
        (!rates.is_empty()).then(|| median(rates))
    }

    fn ratio(&self, tracer: Tracer) -> Option<f64> {
        Some(self.median_rate(tracer)? / self.median_rate(Tracer::None)?)
    }

    fn expected(&self, tracer: Tracer) -> u64 {
        self.of(tracer).map(|p| p.made.transitions()).sum()
    }

    /// How the load's transitions fared with `tracer`.
    fn delivery(&self, tracer: Tracer) -> Option<Delivery> {
        let phases: Vec<&Phase> = self.of(tracer).collect();
        if phases.is_empty() || tracer == Tracer::None {
            return None;
        }
        let mut d = Delivery {
            tracer,
            expected: self.expected(tracer),
            ..Delivery::default()
        };
        for p in &phases {
            // The daemon's transitions program; the only program of the others.
            for c in p.costs.iter().filter(|c| {
                tracer != Tracer::Observer
                    || full_name(self.programs, &c.program) == "inet_sock_set_state"
            }) {
                d.runs += c.invocations;
                d.skipped += c.recursion_misses;
            }
            if let Some(daemon) = p.daemon {
                let c = daemon.counters;
                d.delivered += c.kernel_transitions();
                d.lost_counted += c.lost_ring_buffer_full + c.lost_unreadable + c.lost_malformed;
                *d.gaps.get_or_insert(0) += c.gaps;
            }
            if let Some(t) = p.tcpstates {
                d.delivered += t.all_lines;
                d.lost_counted += t.lost;
            }
            d.delivered += p.baseline_records.unwrap_or(0);
        }
        Some(d)
    }

    /// The daemon over the level's observer phases.
    fn daemon(&self) -> Option<DaemonFigures> {
        let phases: Vec<DaemonPhase> = self.of(Tracer::Observer).filter_map(|p| p.daemon).collect();
        if phases.is_empty() {
            return None;
        }
        let mut d = DaemonFigures::default();
        for p in phases {
            d.counters = d.counters.plus(&p.counters);
            d.cpu_secs += p.cpu_secs;
            d.peak_rss_bytes = d.peak_rss_bytes.max(p.peak_rss_bytes);
        }
        Some(d)
    }

    /// Every program's cost over the level, with the records it delivered where known.
    fn costs(&self) -> Vec<ProgramCost> {
        let mut out: BTreeMap<(usize, String), ProgramCost> = BTreeMap::new();
        for p in &self.phases {
            for c in &p.costs {
                let program = if p.tracer == Tracer::Tcpstates {
                    c.program.clone()
                } else {
                    full_name(self.programs, &c.program)
                };
                let order = match p.tracer {
                    // The daemon's programs in the contract's order.
                    Tracer::Observer => contract::PROGRAMS
                        .iter()
                        .position(|p| p.name == program)
                        .unwrap_or(contract::PROGRAMS.len()),
                    Tracer::Baseline => 10,
                    Tracer::BaselineWakeEach => 11,
                    Tracer::BaselineNoWakeup => 12,
                    Tracer::Tcpstates | Tracer::None => 20,
                };
                let e = out
                    .entry((order, program.clone()))
                    .or_insert_with(|| ProgramCost {
                        tracer: p.tracer.key(),
                        program,
                        ..ProgramCost::default()
                    });
                add(e, c);
            }
        }
        let mut costs: Vec<ProgramCost> = out.into_values().collect();
        let daemon: Vec<_> = self.of(Tracer::Observer).filter_map(|p| p.daemon).collect();
        let sum = |f: fn(&Counters) -> u64| -> u64 { daemon.iter().map(|d| f(&d.counters)).sum() };
        let transitions = sum(Counters::kernel_transitions);
        // Each program's records as the daemon counts what they report, where it does.
        let known = |program: &str| -> Option<u64> {
            Some(match contract::program(program)?.records {
                [RecordKind::StateChange] => transitions,
                [RecordKind::SendReset] => sum(|c| c.resets_sent),
                [RecordKind::ReceiveReset] => sum(|c| c.resets_received),
                [RecordKind::SocketError] => sum(|c| c.connection_errors),
                [RecordKind::Retransmit] => sum(|c| c.retransmits),
                [RecordKind::RetransmitSynack] => sum(|c| c.synack_retransmits),
                _ => return None,
            })
        };
        let mut non_timer = 0;
        for c in &mut costs {
            c.records = match (c.tracer, c.program.as_str()) {
                ("observer", program) => {
                    let parts: Option<Vec<u64>> = program.split(" + ").map(known).collect();
                    let records = parts.map(|p| p.iter().sum());
                    non_timer += records.unwrap_or(0);
                    records
                }
                ("tcpstates", _) => Some(
                    self.of(Tracer::Tcpstates)
                        .filter_map(|p| p.tcpstates)
                        .map(|t| t.all_lines)
                        .sum(),
                ),
                (key, _) if key.starts_with("baseline") => Some(
                    self.phases
                        .iter()
                        .filter(|p| p.tracer.key() == key)
                        .filter_map(|p| p.baseline_records)
                        .sum(),
                ),
                _ => None,
            };
        }
        // The timer programs together: their records are what the daemon received beyond the
        // other programs' (programs whose records it does not count would be included).
        let timers: Vec<&ProgramCost> = costs
            .iter()
            .filter(|c| {
                c.tracer == "observer"
                    && contract::program(&c.program).is_some_and(|p| p.part == Part::Timewait)
            })
            .collect();
        if !timers.is_empty() {
            let mut t = ProgramCost {
                tracer: "observer",
                program: "timer programs together".to_owned(),
                records: Some(sum(|c| c.events_received).saturating_sub(non_timer)),
                ..ProgramCost::default()
            };
            for c in timers {
                t.invocations += c.invocations;
                t.run_time_ns += c.run_time_ns;
                t.recursion_misses += c.recursion_misses;
            }
            let at = costs
                .iter()
                .rposition(|c| c.tracer == "observer")
                .map_or(costs.len(), |i| i + 1);
            costs.insert(at, t);
        }
        costs
    }

    fn cost_of(&self, tracer: &str, program: &str) -> Option<ProgramCost> {
        self.costs()
            .into_iter()
            .find(|c| c.tracer == tracer && c.program == program)
    }

    /// Kernel time of all of a tracer's programs per transition of the load.
    fn all_programs_ns_per_transition(&self, tracer: Tracer) -> Option<f64> {
        let time: u64 = self
            .of(tracer)
            .flat_map(|p| p.costs.iter().map(|c| c.run_time_ns))
            .sum();
        let expected = self.expected(tracer);
        (expected > 0).then(|| time as f64 / expected as f64)
    }
}

impl Level<'_> {
    fn json(&self) -> Value {
        let throughput: Vec<Value> = TRACERS
            .iter()
            .filter(|t| self.median_rate(**t).is_some())
            .map(|t| {
                json!({
                    "tracer": t.key(),
                    "median_connections_per_s": self.median_rate(*t),
                    "median_transitions_per_s": self.median_transition_rate(*t),
                    "ratio_to_none": self.ratio(*t),
                    "runs_connections_per_s": self.of(*t)
                        .map(|p| p.made.connections_per_s())
                        .collect::<Vec<_>>(),
                    "stopped_by_time": self.of(*t).filter(|p| p.made.stopped_by_time).count(),
                })
            })
            .collect();
        json!({
            "threads": self.threads,
            "throughput": throughput,
            "loss": TRACERS
                .iter()
                .filter_map(|t| self.delivery(*t))
                .map(|d| d.json())
                .collect::<Vec<_>>(),
            "kernel_cost": self.costs().iter().map(ProgramCost::json).collect::<Vec<_>>(),
            "all_programs_ns_per_transition": TRACERS[1..]
                .iter()
                .map(|t| (t.key(), self.all_programs_ns_per_transition(*t)))
                .collect::<BTreeMap<_, _>>(),
            "daemon": self.daemon().map(|d| d.json()),
        })
    }
}

fn add(e: &mut ProgramCost, c: &Cost) {
    e.invocations += c.invocations;
    e.run_time_ns += c.run_time_ns;
    e.recursion_misses += c.recursion_misses;
}

/// How the load's transitions fared with one tracer, over a level's phases. Every figure is
/// the whole host's, like the programs: other traffic during a phase shows as `extra`.
#[derive(Clone, Copy, Debug)]
struct Delivery {
    tracer: Tracer,
    expected: u64,
    /// Runs of the tracer's program on `inet_sock_set_state`.
    runs: u64,
    /// Runs the kernel skipped, counted (recursion misses: another BPF program was running
    /// on that CPU).
    skipped: u64,
    /// What reached the tracer's reader: the transitions the daemon counted, tcpstates' lines,
    /// the baseline's records.
    delivered: u64,
    /// Lost between the program and the reader, by the tracer's own counters.
    lost_counted: u64,
    gaps: Option<u64>,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            tracer: Tracer::None,
            expected: 0,
            runs: 0,
            skipped: 0,
            delivered: 0,
            lost_counted: 0,
            gaps: None,
        }
    }
}

impl Delivery {
    /// Expected transitions for which the program neither ran nor was counted as skipped.
    const fn not_run(&self) -> u64 {
        self.expected.saturating_sub(self.runs + self.skipped)
    }

    /// Runs beyond the load's transitions: the host's other TCP traffic.
    const fn extra(&self) -> u64 {
        (self.runs + self.skipped).saturating_sub(self.expected)
    }

    /// Records lost between the program and the reader that no counter shows.
    const fn lost_uncounted(&self) -> u64 {
        self.runs.saturating_sub(self.delivered + self.lost_counted)
    }

    /// Transitions lost in all, counted or not.
    const fn lost(&self) -> u64 {
        self.not_run() + self.skipped + self.lost_counted + self.lost_uncounted()
    }

    fn json(&self) -> Value {
        json!({
            "tracer": self.tracer.key(),
            "transitions_expected": self.expected,
            "program_runs": self.runs,
            "skipped_counted": self.skipped,
            "not_run_uncounted": self.not_run(),
            "extra_from_other_host_traffic": self.extra(),
            "delivered": self.delivered,
            "lost_after_program_counted": self.lost_counted,
            "lost_after_program_uncounted": self.lost_uncounted(),
            "tracker_gaps": self.gaps,
        })
    }
}

/// The daemon over a level's observer phases.
#[derive(Clone, Copy, Debug, Default)]
struct DaemonFigures {
    counters: Counters,
    cpu_secs: f64,
    peak_rss_bytes: u64,
}

impl DaemonFigures {
    fn cpu_secs_per_million_events(&self) -> f64 {
        self.cpu_secs / (self.counters.events_received as f64 / 1e6)
    }

    fn json(&self) -> Value {
        json!({
            "cpu_seconds": self.cpu_secs,
            "events": self.counters.events_received,
            "cpu_seconds_per_million_events": self.cpu_secs_per_million_events(),
            "peak_rss_bytes": self.peak_rss_bytes,
            "counters": self.counters,
        })
    }
}

impl Bench {
    fn levels(&self) -> Vec<Level<'_>> {
        let mut threads: Vec<usize> = self.phases.iter().map(|p| p.threads).collect();
        threads.dedup();
        threads
            .into_iter()
            .map(|t| Level {
                threads: t,
                phases: self.phases.iter().filter(|p| p.threads == t).collect(),
                programs: &self.programs,
            })
            .collect()
    }

    /// The level whose unobserved load ran fastest: the highest churn this machine reached.
    fn peak<'a>(levels: &'a [Level<'a>]) -> &'a Level<'a> {
        levels
            .iter()
            .max_by(|a, b| {
                let rate = |l: &Level| l.median_transition_rate(Tracer::None).unwrap_or(0.0);
                rate(a).total_cmp(&rate(b))
            })
            .expect("at least one level")
    }

    fn targets(&self) -> Vec<Target> {
        let levels = self.levels();
        let main = &levels[0];
        let peak = Self::peak(&levels);
        let mut t = Vec::new();
        let ratio = main.ratio(Tracer::Observer);
        t.push(Target {
            name: "throughput with observer run / without",
            goal: format!(">= {THROUGHPUT_RATIO}"),
            measured: opt(ratio, |r| format!("{r:.3} ({} threads)", main.threads)),
            met: ratio.map(|r| r >= THROUGHPUT_RATIO),
        });
        let ours: Vec<Delivery> = levels
            .iter()
            .filter_map(|l| l.delivery(Tracer::Observer))
            .collect();
        let after: u64 = ours.iter().map(Delivery::lost_uncounted).sum();
        let not_run: u64 = ours.iter().map(Delivery::not_run).sum();
        let others = [
            Tracer::Baseline,
            Tracer::BaselineWakeEach,
            Tracer::BaselineNoWakeup,
            Tracer::Tcpstates,
        ]
        .iter()
        .filter_map(|t| Some(format!("{} {}", t.key(), main.delivery(*t)?.not_run())))
        .collect::<Vec<_>>()
        .join(", ");
        t.push(Target {
            name: "transitions lost without a counter (every level)",
            goal: "0".to_owned(),
            measured: format!(
                "{after} after the program; {not_run} never reached it (same run, {} threads: \
                 {others})",
                main.threads
            ),
            met: Some(after == 0 && not_run == 0),
        });
        let peak_loss = peak.delivery(Tracer::Observer);
        t.push(Target {
            name: "transitions lost at the highest churn",
            goal: "0".to_owned(),
            measured: opt(peak_loss, |d| {
                format!(
                    "{} ({} skipped, {} never reached the program, {} after it; {} threads, \
                     {} transitions/s unobserved)",
                    grouped(d.lost()),
                    grouped(d.skipped),
                    grouped(d.not_run()),
                    grouped(d.lost_counted + d.lost_uncounted()),
                    peak.threads,
                    whole(
                        peak.median_transition_rate(Tracer::None)
                            .unwrap_or(f64::NAN)
                    )
                )
            }),
            met: peak_loss.map(|d| d.lost() == 0 && d.gaps.unwrap_or(0) == 0),
        });
        let ours = main.cost_of("observer", "inet_sock_set_state");
        let ratio_to = |baseline: &str| {
            let floor = main.cost_of(baseline, baseline)?;
            Some(ours.as_ref()?.ns_per_invocation()? / floor.ns_per_invocation()?)
        };
        let kernel = ratio_to("baseline");
        let wake_each = ratio_to("baseline_wake_each")
            .map(|w| {
                format!(" (to baseline_wake_each, which wakes the reader per record: {w:.2}x)")
            })
            .unwrap_or_default();
        t.push(Target {
            name: "kernel ns/event, inet_sock_set_state / baseline",
            goal: format!("<= {KERNEL_COST_RATIO}x"),
            measured: opt(kernel, |k| format!("{k:.2}x{wake_each}")),
            met: kernel.map(|k| k <= KERNEL_COST_RATIO),
        });
        let u = self.userspace.as_ref();
        t.push(Target {
            name: "userspace events/s per core",
            goal: format!(">= {}", whole(EVENTS_PER_CORE)),
            measured: opt(u, |u| whole(u.events_per_s)),
            met: u.map(|u| u.events_per_s >= EVENTS_PER_CORE),
        });
        t.push(Target {
            name: "bytes per tracked socket",
            goal: format!("<= {BYTES_PER_SOCKET}"),
            measured: opt(u, |u| {
                format!(
                    "{:.0} (at {} sockets)",
                    u.worst_bytes_per_socket(),
                    grouped(u.sockets)
                )
            }),
            met: u.map(|u| u.worst_bytes_per_socket() <= BYTES_PER_SOCKET),
        });
        t
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let levels = self.levels();
        self.write_header(&mut s);
        self.write_calibration(&mut s);
        self.write_throughput(&mut s, &levels);
        Self::write_loss(&mut s, &levels);
        Self::write_costs(&mut s, &levels[0]);
        self.write_resources(&mut s, &levels[0]);
        self.write_targets(&mut s);
        s
    }

    fn write_header(&self, w: &mut String) {
        let m = &self.machine;
        let _ = writeln!(
            w,
            "\nobserver benchmark{}, {}",
            if self.quick { " (--quick)" } else { "" },
            self.finished
        );
        let _ = writeln!(
            w,
            "machine: {}, {} CPUs, {:.1} GiB, Linux {}",
            m.cpu, m.cpus, m.memory_gib, m.kernel
        );
        let kinds: Vec<String> = KINDS
            .iter()
            .map(|k| format!("{} ({})", k.name(), k.transitions().len()))
            .collect();
        let _ = writeln!(
            w,
            "load: {} connections per phase, each phase in a fresh network namespace on \
             loopback; kinds in turn (transitions each): {}; {:.1} transitions per connection \
             plus {} per worker's listener; {} rounds, phase order rotating",
            grouped(self.connections),
            kinds.join(", "),
            transitions_per_connection(),
            listener_transitions(),
            self.rounds
        );
    }

    fn write_calibration(&self, w: &mut String) {
        let _ = writeln!(
            w,
            "\ncalibration: each kind alone, one thread, `observer watch --netns` (exact, per pair)"
        );
        let _ = writeln!(
            w,
            "  {:<22} {:>11} {:>22} {:>20} {:>6}",
            "kind", "connections", "transitions exp/seen", "RST events exp/seen", "match"
        );
        for c in &self.calibration {
            let _ = writeln!(
                w,
                "  {:<22} {:>11} {:>22} {:>20} {:>6}",
                c.kind.name(),
                grouped(c.connections),
                format!("{}/{}", grouped(c.expected), grouped(c.seen)),
                format!("{}/{}", grouped(c.resets_expected), grouped(c.resets_seen)),
                if c.matches() { "yes" } else { "NO" }
            );
            for (old, new, e, s) in &c.differences {
                let _ = writeln!(w, "    {old} -> {new}: expected {e}, seen {s}");
            }
        }
    }

    fn write_throughput(&self, w: &mut String, levels: &[Level<'_>]) {
        for level in levels {
            let _ = writeln!(
                w,
                "\nthroughput, {} churn threads (median of {} rounds)",
                level.threads, self.rounds
            );
            let _ = writeln!(
                w,
                "  {:<18} {:>14} {:>15} {:>16}",
                "tracer", "connections/s", "transitions/s", "ratio to none"
            );
            for tracer in TRACERS {
                let Some(rate) = level.median_rate(tracer) else {
                    continue;
                };
                let _ = writeln!(
                    w,
                    "  {:<18} {:>14} {:>15} {:>16}",
                    tracer.name(),
                    whole(rate),
                    whole(level.median_transition_rate(tracer).unwrap_or(f64::NAN)),
                    opt(level.ratio(tracer), |r| format!("{r:.3}"))
                );
            }
        }
    }

    fn write_loss(w: &mut String, levels: &[Level<'_>]) {
        let _ = writeln!(
            w,
            "\nloss: the load's transitions through each tracer (all rounds of a level summed)"
        );
        let _ = writeln!(
            w,
            "  {:>7} {:<20} {:>10} {:>12} {:>8} {:>8} {:>6} {:>12} {:>14} {:>16} {:>5}",
            "threads",
            "tracer",
            "expected",
            "program runs",
            "skipped",
            "not run",
            "extra",
            "delivered",
            "lost after (c)",
            "lost after (unc)",
            "gaps"
        );
        for level in levels {
            for d in TRACERS.iter().filter_map(|t| level.delivery(*t)) {
                let _ = writeln!(
                    w,
                    "  {:>7} {:<20} {:>10} {:>12} {:>8} {:>8} {:>6} {:>12} {:>14} {:>16} {:>5}",
                    level.threads,
                    d.tracer.name(),
                    grouped(d.expected),
                    grouped(d.runs),
                    grouped(d.skipped),
                    grouped(d.not_run()),
                    grouped(d.extra()),
                    grouped(d.delivered),
                    grouped(d.lost_counted),
                    grouped(d.lost_uncounted()),
                    opt(d.gaps, grouped)
                );
            }
        }
        for p in levels.iter().flat_map(|l| l.of(Tracer::Observer)) {
            if p.pair_differences.is_empty() {
                continue;
            }
            let pairs: Vec<String> = p
                .pair_differences
                .iter()
                .map(|(old, new, e, got)| format!("{old} -> {new} expected {e}, counted {got}"))
                .collect();
            let _ = writeln!(
                w,
                "  observer run, {} threads, one phase: {}",
                p.threads,
                pairs.join("; ")
            );
        }
        let _ = writeln!(
            w,
            "  skipped: runs the kernel skipped and counted (recursion misses: another BPF \
             program was running on that CPU);\n  not run: transitions the program neither ran \
             for nor was counted as skipping; extra: the host's other TCP traffic (it can hide \
             \"not run\");\n  delivered: transitions the daemon counted, tcpstates' lines, \
             baseline records; lost after: between the program and the reader, (c)ounted by \
             the tracer or (unc)ounted"
        );
    }

    fn write_costs(w: &mut String, main: &Level<'_>) {
        let _ = writeln!(
            w,
            "\nkernel cost, {} threads, all rounds (BPF statistics on)",
            main.threads
        );
        let _ = writeln!(
            w,
            "  {:<18} {:<42} {:>13} {:>12} {:>14} {:>10} {:>10}",
            "tracer",
            "program",
            "invocations",
            "records",
            "ns/invocation",
            "ns/record",
            "rec. miss"
        );
        for c in main.costs() {
            let _ = writeln!(
                w,
                "  {:<18} {:<42} {:>13} {:>12} {:>14} {:>10} {:>10}",
                c.tracer,
                c.program,
                grouped(c.invocations),
                opt(c.records, grouped),
                opt(c.ns_per_invocation(), |x| format!("{x:.1}")),
                opt(c.ns_per_record(), |x| format!("{x:.1}")),
                grouped(c.recursion_misses)
            );
        }
        for tracer in &TRACERS[1..] {
            if let Some(ns) = main.all_programs_ns_per_transition(*tracer) {
                let _ = writeln!(
                    w,
                    "  {}: all its programs, per transition of the load: {ns:.1} ns",
                    tracer.name()
                );
            }
        }
    }

    fn write_resources(&self, w: &mut String, main: &Level<'_>) {
        if let Some(d) = main.daemon() {
            let _ = writeln!(
                w,
                "\ndaemon ({} threads): {:.3} CPU s per million events \
                 ({} events, {:.2} CPU s); peak RSS {:.1} MiB",
                main.threads,
                d.cpu_secs_per_million_events(),
                grouped(d.counters.events_received),
                d.cpu_secs,
                d.peak_rss_bytes as f64 / (1024.0 * 1024.0)
            );
        }
        match &self.userspace {
            Some(u) => {
                let _ = writeln!(
                    w,
                    "\nuserspace (benches/tracker/, one core): {} events/s ({}); per tracked \
                     socket at {} sockets: {}",
                    whole(u.events_per_s),
                    u.events_key,
                    grouped(u.sockets),
                    u.bytes_per_socket
                        .iter()
                        .map(|(f, heap, rss)| format!("{f} {heap:.0} B heap, {rss:.0} B RSS"))
                        .collect::<Vec<_>>()
                        .join("; ")
                );
            }
            None => {
                let _ = writeln!(w, "\nuserspace: not measured (no --userspace file)");
            }
        }
    }

    fn write_targets(&self, w: &mut String) {
        let _ = writeln!(w, "\ntargets");
        let _ = writeln!(
            w,
            "  {:<49} {:>12}  {:<12} measured",
            "target", "goal", "result"
        );
        for t in self.targets() {
            let _ = writeln!(
                w,
                "  {:<49} {:>12}  {:<12} {}",
                t.name,
                t.goal,
                match t.met {
                    Some(true) => "met",
                    Some(false) => "NOT MET",
                    None => "not measured",
                },
                t.measured
            );
        }
    }

    /// The same figures as JSON.
    pub fn json(&self) -> Value {
        let m = &self.machine;
        let levels = self.levels();
        json!({
            "finished": self.finished,
            "machine": {
                "cpu": m.cpu,
                "cpus": m.cpus,
                "memory_gib": m.memory_gib,
                "kernel": m.kernel,
            },
            "quick": self.quick,
            "load": {
                "connections_per_phase": self.connections,
                "rounds": self.rounds,
                "kinds": KINDS.iter().map(|k| json!({
                    "kind": k.name(),
                    "transitions": k.transitions().len(),
                    "rst_events": k.resets(),
                })).collect::<Vec<_>>(),
                "listener_transitions": listener_transitions(),
            },
            "calibration": self.calibration.iter().map(|c| json!({
                "kind": c.kind.name(),
                "connections": c.connections,
                "transitions_expected": c.expected,
                "transitions_seen": c.seen,
                "rst_events_expected": c.resets_expected,
                "rst_events_seen": c.resets_seen,
                "matches": c.matches(),
                "differences": c.differences.iter().map(|(old, new, e, s)| json!({
                    "from": old, "to": new, "expected": e, "seen": s,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "levels": levels.iter().map(Level::json).collect::<Vec<_>>(),
            "phases": self.phases.iter().map(phase_json).collect::<Vec<_>>(),
            "userspace": self.userspace.as_ref().map(|u| json!({
                "events_per_s_per_core": u.events_per_s,
                "figure": u.events_key,
                "sockets": u.sockets,
                "bytes_per_socket": u.bytes_per_socket.iter().map(|(f, heap, rss)| json!({
                    "family": f,
                    "heap": heap,
                    "rss": rss,
                })).collect::<Vec<_>>(),
            })),
            "targets": self.targets().iter().map(|t| json!({
                "name": t.name,
                "target": t.goal,
                "measured": t.measured,
                "met": t.met,
            })).collect::<Vec<_>>(),
        })
    }
}

/// One phase's raw figures.
fn phase_json(p: &Phase) -> Value {
    json!({
        "tracer": p.tracer.key(),
        "threads": p.threads,
        "connections": KINDS
            .iter()
            .zip(p.made.by_kind)
            .map(|(k, n)| (k.name(), n))
            .collect::<BTreeMap<_, _>>(),
        "seconds": p.made.elapsed.as_secs_f64(),
        "stopped_by_time": p.made.stopped_by_time,
        "transitions_expected": p.made.transitions(),
        "programs": p.costs,
        "daemon": p.daemon.map(|d| json!({
            "counters": d.counters,
            "cpu_seconds": d.cpu_secs,
            "peak_rss_bytes": d.peak_rss_bytes,
        })),
        "tcpstates": p.tcpstates.map(|t| json!({
            "lines": t.all_lines,
            "load_lines": t.load_lines,
            "lost": t.lost,
        })),
        "baseline_records": p.baseline_records,
        "pair_differences": p.pair_differences.iter().map(|(old, new, e, got)| json!({
            "from": old, "to": new, "expected": e, "counted": got,
        })).collect::<Vec<_>>(),
    })
}

struct Target {
    name: &'static str,
    goal: String,
    measured: String,
    met: Option<bool>,
}
