//! The figures of one level (the phases with one load: its threads, and its pace when paced):
//! throughput, what reached each tracer, the programs' kernel cost, the daemon's CPU and memory.
//! The pairs of phases and the CPU figures are in `pairs`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use observer::load::contract::{self, Part};
use observer_common::RecordKind;
use observer_testkit::{daemon::CpuTime, scrape::Counters};

use super::{Bench, pairs::median};
use crate::{
    DaemonPhase, Phase, Tracer,
    kstats::Cost,
    reads::{self, Omitted},
};

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

/// One program's cost summed over the phases of a level.
#[derive(Clone, Debug, Default)]
pub(super) struct ProgramCost {
    pub(super) tracer: &'static str,
    pub(super) program: String,
    pub(super) invocations: u64,
    run_time_ns: u64,
    pub(super) recursion_misses: u64,
    /// Records it delivered, when known.
    pub(super) records: Option<u64>,
}

impl ProgramCost {
    pub(super) fn ns_per_invocation(&self) -> Option<f64> {
        (self.invocations > 0).then(|| self.run_time_ns as f64 / self.invocations as f64)
    }

    pub(super) fn ns_per_record(&self) -> Option<f64> {
        self.records
            .filter(|r| *r > 0)
            .map(|r| self.run_time_ns as f64 / r as f64)
    }

    pub(super) fn json(&self) -> Value {
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
pub(super) struct Level<'a> {
    pub(super) threads: usize,
    /// Connections/s of the whole load, when it was paced (the steady level).
    pub(super) paced: Option<u64>,
    pub(super) phases: Vec<&'a Phase>,
    programs: &'a [String],
    /// BPF run statistics were on: program costs and runs are known.
    pub(super) kernel_stats: bool,
}

impl Level<'_> {
    /// The level in words: its threads, and its pace when paced.
    pub(super) fn name(&self) -> String {
        let load = match self.paced {
            Some(rate) => format!(
                "{} threads paced at {} connections/s",
                self.threads,
                super::grouped(rate)
            ),
            None => format!("{} threads", self.threads),
        };
        if self.kernel_stats {
            load
        } else {
            format!("{load}, no BPF stats")
        }
    }

    pub(super) fn of(&self, tracer: Tracer) -> impl Iterator<Item = &Phase> {
        self.phases
            .iter()
            .copied()
            .filter(move |p| p.tracer == tracer)
    }

    pub(super) fn median_rate(&self, tracer: Tracer) -> Option<f64> {
        let rates: Vec<f64> = self
            .of(tracer)
            .map(|p| p.made.connections_per_s())
            .collect();
        (!rates.is_empty()).then(|| median(rates))
    }

    pub(super) fn median_transition_rate(&self, tracer: Tracer) -> Option<f64> {
        let rates: Vec<f64> = self
            .of(tracer)
            .map(|p| p.made.transitions() as f64 / p.made.elapsed.as_secs_f64())
            .collect();
        (!rates.is_empty()).then(|| median(rates))
    }

    /// Throughput with `tracer` over throughput without: the median of its pairs (each phase
    /// against the unobserved phases beside it), or the ratio of the medians when the run had
    /// no pairs.
    pub(super) fn ratio(&self, tracer: Tracer) -> Option<f64> {
        if let Some(s) = self.pair_ratios(tracer) {
            return Some(s.median);
        }
        Some(self.median_rate(tracer)? / self.median_rate(Tracer::None)?)
    }

    fn expected(&self, tracer: Tracer) -> u64 {
        self.of(tracer).map(|p| p.made.transitions()).sum()
    }

    /// How the load's transitions fared with `tracer`.
    pub(super) fn delivery(&self, tracer: Tracer) -> Option<Delivery> {
        let phases: Vec<&Phase> = self.of(tracer).collect();
        // The copies of the state program, the programs without the daemon and the floors on
        // its hooks measure cost, not delivery (the last two count records of every hook).
        if phases.is_empty()
            || matches!(
                tracer,
                Tracer::None | Tracer::StateReads | Tracer::Programs | Tracer::Hooks
            )
        {
            return None;
        }
        let mut d = Delivery {
            tracer,
            expected: self.expected(tracer),
            ..Delivery::default()
        };
        let mut runs = 0;
        for p in &phases {
            // The daemon's transitions program; the only program of the others. The kernel
            // counts skipped runs with or without statistics.
            for c in p.costs.iter().filter(|c| {
                tracer != Tracer::Observer
                    || full_name(self.programs, &c.program) == "inet_sock_set_state"
            }) {
                runs += c.invocations;
                d.skipped += c.recursion_misses;
            }
            d.timewait.expected += p.made.timewait_sockets();
            d.timewait.kernel += p.kernel_timewait;
            if let Some(daemon) = p.daemon {
                let c = daemon.counters;
                d.delivered += c.kernel_transitions();
                d.lost_counted += c.lost_ring_buffer_full + c.lost_unreadable + c.lost_malformed;
                *d.gaps.get_or_insert(0) += c.gaps;
                *d.timewait.seen.get_or_insert(0) += c.timewait_started;
            }
            if let Some(t) = p.tcpstates {
                d.delivered += t.all_lines;
                d.lost_counted += t.lost;
            }
            d.delivered += p.baseline_records.unwrap_or(0);
        }
        d.runs = self.kernel_stats.then_some(runs);
        Some(d)
    }

    /// The daemon over the level's observer phases.
    pub(super) fn daemon(&self) -> Option<DaemonFigures> {
        let phases: Vec<DaemonPhase> = self.of(Tracer::Observer).filter_map(|p| p.daemon).collect();
        if phases.is_empty() {
            return None;
        }
        let mut d = DaemonFigures {
            run_ns: Some(0),
            main_thread_ns: Some(0),
            ..DaemonFigures::default()
        };
        for p in phases {
            d.counters = d.counters.plus(&p.counters);
            d.cpu = d.cpu.plus(&p.cpu);
            d.run_ns = d.run_ns.zip(p.run_ns).map(|(a, b)| a + b);
            d.main_thread_ns = d.main_thread_ns.zip(p.main_thread_ns).map(|(a, b)| a + b);
            d.peak_rss_bytes = d.peak_rss_bytes.max(p.peak_rss_bytes);
        }
        Some(d)
    }

    /// Every program's cost over the level, with the records it delivered where known.
    pub(super) fn costs(&self) -> Vec<ProgramCost> {
        if !self.kernel_stats {
            return Vec::new();
        }
        let mut out: BTreeMap<(usize, String), ProgramCost> = BTreeMap::new();
        for p in &self.phases {
            for c in &p.costs {
                // Named in full by the benchmark (the kernel keeps 15 bytes of a name).
                let program = if matches!(
                    p.tracer,
                    Tracer::Tcpstates | Tracer::StateReads | Tracer::Programs | Tracer::Hooks
                ) {
                    c.program.clone()
                } else {
                    full_name(self.programs, &c.program)
                };
                let order = table_order(p.tracer, &program);
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

    pub(super) fn cost_of(&self, tracer: &str, program: &str) -> Option<ProgramCost> {
        self.costs()
            .into_iter()
            .find(|c| c.tracer == tracer && c.program == program)
    }

    /// Each state-reads phase's ns per run of its copy `label`.
    fn copy_ns(&self, label: &str) -> Vec<Option<f64>> {
        self.of(Tracer::StateReads)
            .map(|p| {
                let c = p.costs.iter().find(|c| c.program == label)?;
                (c.invocations > 0).then(|| c.run_time_ns as f64 / c.invocations as f64)
            })
            .collect()
    }

    /// Each state-reads phase's ns per run of its program `label` (a copy, a floor, a piece).
    pub(super) fn side_by_side_ns(&self, label: &str) -> Vec<f64> {
        self.copy_ns(label).into_iter().flatten().collect()
    }

    /// `a` less `b`, phase by phase, in ns per run of the state program's copies.
    pub(super) fn copy_difference(&self, a: &str, b: &str) -> Vec<f64> {
        self.copy_ns(a)
            .into_iter()
            .zip(self.copy_ns(b))
            .filter_map(|(a, b)| Some(a? - b?))
            .collect()
    }

    /// `a`'s ns per run over `b`'s, phase by phase, the copies run side by side on the same
    /// transitions.
    pub(super) fn copy_ratio(&self, a: &str, b: &str) -> Vec<f64> {
        self.copy_ns(a)
            .into_iter()
            .zip(self.copy_ns(b))
            .filter_map(|(a, b)| Some(a? / b?))
            .collect()
    }

    /// What a read adds to a run of the state program: the whole program's ns per run less
    /// that of its copy without the read, phase by phase (the same transitions).
    pub(super) fn read_cost_ns(&self, omitted: Omitted) -> Vec<f64> {
        self.copy_difference(reads::WHOLE, omitted.key())
    }

    /// The floor of the daemon's hooks, phase by phase: `baseline`'s run time and the floors'
    /// on its other hooks ([`contract::FLOORS`]), side by side on the same load, over
    /// `baseline`'s alone. No program on those hooks can cost less than reserving and
    /// submitting its records, so no set of them costs less than this ratio of `baseline`.
    pub(super) fn hooks_floor_ratio(&self) -> Vec<f64> {
        self.of(Tracer::StateReads)
            .filter_map(|p| {
                let time = |name: &str| {
                    p.costs
                        .iter()
                        .find(|c| c.program == name)
                        .map(|c| c.run_time_ns)
                };
                let base = time(contract::BASELINE).filter(|t| *t > 0)?;
                let floors: u64 = contract::FLOORS.iter().filter_map(|f| time(f.name)).sum();
                Some((base + floors) as f64 / base as f64)
            })
            .collect()
    }

    /// The tracers from `baseline` to `observer run`, each adding to the one before (the
    /// hooks observer watches, its programs' work, the daemon), those the level ran.
    pub(super) fn steps(&self) -> Vec<Step> {
        [
            (
                Tracer::Baseline,
                "baseline: a record reserved and submitted on inet_sock_set_state",
            ),
            (
                Tracer::Hooks,
                "observer's hooks: the same on every hook observer watches (timewait timers only)",
            ),
            (
                Tracer::Programs,
                "observer's programs: its own, configured as it runs them, records only counted",
            ),
            (
                Tracer::Observer,
                "observer run: the daemon decoding, tracking and exporting the records",
            ),
        ]
        .into_iter()
        .filter_map(|(tracer, what)| {
            Some(Step {
                tracer,
                what,
                lost: 1.0 - self.ratio(tracer)?,
                added_ns: self.added_cpu_ns(tracer, self.measure()).map(|s| s.median),
            })
        })
        .collect()
    }

    /// Kernel time of all of a tracer's programs per transition of the load.
    pub(super) fn all_programs_ns_per_transition(&self, tracer: Tracer) -> Option<f64> {
        if !self.kernel_stats {
            return None;
        }
        let time: u64 = self
            .of(tracer)
            .flat_map(|p| p.costs.iter().map(|c| c.run_time_ns))
            .sum();
        let expected = self.expected(tracer);
        (expected > 0).then(|| time as f64 / expected as f64)
    }
}

/// One step of observer's cost (see [`Level::steps`]).
pub(super) struct Step {
    pub(super) tracer: Tracer,
    pub(super) what: &'static str,
    /// Throughput lost: 1 less the median ratio of its pairs.
    pub(super) lost: f64,
    /// CPU added per connection by the level's measure, the median of its pairs.
    pub(super) added_ns: Option<f64>,
}

/// Where a tracer's program comes in the cost table.
fn table_order(tracer: Tracer, program: &str) -> usize {
    match tracer {
        // The daemon's programs in the contract's order.
        Tracer::Observer => contract::PROGRAMS
            .iter()
            .position(|p| p.name == program)
            .unwrap_or(contract::PROGRAMS.len()),
        // One row each: the key of the table is (order, program).
        Tracer::StateReads => match program {
            reads::WHOLE => 20,
            contract::BASELINE => 27,
            _ => {
                if let Some(i) = contract::FLOORS.iter().position(|f| f.name == program) {
                    28 + i
                } else if let Some(i) = contract::HOOK_PIECES.iter().position(|f| f.name == program)
                {
                    28 + contract::FLOORS.len() + i
                } else {
                    21 + Omitted::ALL
                        .iter()
                        .position(|o| o.key() == program)
                        .unwrap_or(Omitted::ALL.len())
                }
            }
        },
        Tracer::Programs => {
            42 + contract::PROGRAMS
                .iter()
                .position(|p| p.name == program)
                .unwrap_or(contract::PROGRAMS.len())
        }
        Tracer::Hooks => {
            if program == contract::BASELINE {
                55
            } else {
                56 + contract::FLOORS
                    .iter()
                    .position(|f| f.name == program)
                    .unwrap_or(contract::FLOORS.len())
            }
        }
        Tracer::Baseline => 70,
        Tracer::BaselineRaw => 71,
        Tracer::BaselineWakeEach => 72,
        Tracer::BaselineNoWakeup => 73,
        Tracer::Tcpstates | Tracer::None => 80,
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
pub(super) struct Delivery {
    pub(super) tracer: Tracer,
    pub(super) expected: u64,
    /// Runs of the tracer's program on `inet_sock_set_state`; `None` without BPF statistics,
    /// which count them.
    pub(super) runs: Option<u64>,
    /// Runs the kernel skipped, counted (recursion misses: another BPF program was running
    /// on that CPU).
    pub(super) skipped: u64,
    /// What reached the tracer's reader: the transitions the daemon counted, tcpstates' lines,
    /// the baseline's records.
    pub(super) delivered: u64,
    /// Lost between the program and the reader, by the tracer's own counters.
    pub(super) lost_counted: u64,
    pub(super) gaps: Option<u64>,
    pub(super) timewait: TimewaitCheck,
}

/// Timewait sockets over a tracer's phases: what the load left, what the kernel counted making,
/// and (the daemon) how many starts it saw.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct TimewaitCheck {
    pub(super) expected: u64,
    pub(super) kernel: u64,
    pub(super) seen: Option<u64>,
}

impl TimewaitCheck {
    fn json(self) -> Value {
        json!({
            "expected": self.expected,
            "kernel_made": self.kernel,
            "starts_seen": self.seen,
        })
    }
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            tracer: Tracer::None,
            expected: 0,
            runs: None,
            skipped: 0,
            delivered: 0,
            lost_counted: 0,
            gaps: None,
            timewait: TimewaitCheck::default(),
        }
    }
}

impl Delivery {
    /// Expected transitions for which the program neither ran nor was counted as skipped;
    /// `None` when its runs were not counted.
    pub(super) fn not_run(&self) -> Option<u64> {
        Some(self.expected.saturating_sub(self.runs? + self.skipped))
    }

    /// Runs beyond the load's transitions: the host's other TCP traffic (without statistics,
    /// what the reader received beyond them).
    pub(super) fn extra(&self) -> u64 {
        let reached = self.runs.unwrap_or(self.delivered + self.lost_counted);
        (reached + self.skipped).saturating_sub(self.expected)
    }

    /// Records lost between the program and the reader that no counter shows; without
    /// statistics, every expected transition neither delivered nor counted lost, wherever it
    /// was lost.
    pub(super) fn lost_uncounted(&self) -> u64 {
        let counted = self.delivered + self.lost_counted;
        match self.runs {
            Some(runs) => runs.saturating_sub(counted),
            None => self.expected.saturating_sub(counted + self.skipped),
        }
    }

    /// Transitions lost in all, counted or not.
    pub(super) fn lost(&self) -> u64 {
        self.not_run().unwrap_or(0) + self.skipped + self.lost_counted + self.lost_uncounted()
    }

    pub(super) fn json(&self) -> Value {
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
            "timewait_sockets": self.timewait.json(),
        })
    }
}

/// The daemon over a level's observer phases.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct DaemonFigures {
    pub(super) counters: Counters,
    pub(super) cpu: CpuTime,
    /// Exact CPU time over all the phases; `None` unless known in each.
    pub(super) run_ns: Option<u64>,
    /// The same, of the main thread (the event loop) alone.
    pub(super) main_thread_ns: Option<u64>,
    pub(super) peak_rss_bytes: u64,
}

impl DaemonFigures {
    /// Exact CPU time per event, ns, when it is known.
    pub(super) fn run_ns_per_event(&self) -> Option<f64> {
        self.per_event(self.run_ns)
    }

    /// The main thread's exact CPU time per event, ns, when it is known.
    pub(super) fn main_thread_ns_per_event(&self) -> Option<f64> {
        self.per_event(self.main_thread_ns)
    }

    fn per_event(&self, ns: Option<u64>) -> Option<f64> {
        ns.map(|ns| ns as f64 / self.counters.events_received as f64)
    }

    pub(super) fn cpu_secs_per_million_events(&self) -> f64 {
        self.per_million_events(self.cpu.total())
    }

    /// `seconds` of CPU per million events received.
    pub(super) fn per_million_events(&self, seconds: f64) -> f64 {
        seconds / (self.counters.events_received as f64 / 1e6)
    }

    pub(super) fn json(&self) -> Value {
        json!({
            "cpu_seconds": self.cpu.total(),
            "user_cpu_seconds": self.cpu.user,
            "system_cpu_seconds": self.cpu.system,
            "run_seconds_exact": self.run_ns.map(|ns| ns as f64 / 1e9),
            "run_ns_per_event_exact": self.run_ns_per_event(),
            "main_thread_run_ns_per_event_exact": self.main_thread_ns_per_event(),
            "events": self.counters.events_received,
            "cpu_seconds_per_million_events": self.cpu_secs_per_million_events(),
            "peak_rss_bytes": self.peak_rss_bytes,
            "counters": self.counters,
        })
    }
}

impl Bench {
    pub(super) fn levels(&self) -> Vec<Level<'_>> {
        let mut keys: Vec<(usize, Option<u64>, bool)> = self
            .phases
            .iter()
            .map(|p| (p.threads, p.paced, p.kernel_stats))
            .collect();
        keys.dedup();
        keys.into_iter()
            .map(|(threads, paced, kernel_stats)| Level {
                threads,
                paced,
                phases: self
                    .phases
                    .iter()
                    .filter(|p| {
                        (p.threads, p.paced, p.kernel_stats) == (threads, paced, kernel_stats)
                    })
                    .collect(),
                programs: &self.programs,
                kernel_stats,
            })
            .collect()
    }
}
