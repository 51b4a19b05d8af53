//! Each traced phase against the untraced phases beside it: the throughput ratio and the CPU
//! added per connection, pair by pair, their medians and ranges, and what of the CPU added was
//! measured where.

use serde_json::{Value, json};

use super::level::Level;
use crate::{Phase, Tracer, machine_cpu::MachineCpu};

impl Level<'_> {
    /// Each phase of `tracer` with the phases with no tracer right before and after it.
    pub(super) fn pairs(&self, tracer: Tracer) -> Vec<Pair<'_>> {
        if tracer == Tracer::None {
            return Vec::new();
        }
        let none = |i: Option<usize>| {
            let p = self.phases.get(i?)?;
            (p.tracer == Tracer::None).then_some(*p)
        };
        self.phases
            .iter()
            .enumerate()
            .filter(|(_, p)| p.tracer == tracer)
            .filter_map(|(i, p)| {
                let beside: Vec<&Phase> = [none(i.checked_sub(1)), none(Some(i + 1))]
                    .into_iter()
                    .flatten()
                    .collect();
                (!beside.is_empty()).then(|| Pair::of(p, beside))
            })
            .collect()
    }

    /// The pairs' throughput ratios.
    pub(super) fn pair_ratios(&self, tracer: Tracer) -> Option<Spread> {
        Spread::of(self.pairs(tracer).iter().map(|p| p.ratio).collect())
    }

    /// The CPU the tracer added per connection by `measure`, pair by pair, in ns.
    pub(super) fn added_cpu_ns(&self, tracer: Tracer, measure: Measure) -> Option<Spread> {
        Spread::of(
            self.pairs(tracer)
                .iter()
                .map(|p| {
                    let (with, without) = p.cpu_ns_per_connection(measure);
                    with - without
                })
                .collect(),
        )
    }

    /// The CPU measure that decides this level's targets: the machine's when the load keeps
    /// every CPU busy, the processes' when it is paced (see `machine_cpu`).
    pub(super) const fn measure(&self) -> Measure {
        if self.paced.is_some() {
            Measure::Processes
        } else {
            Measure::Machine
        }
    }

    /// How busy the machine's CPUs were during the load (1.0: every CPU all the time), over the
    /// phases of `tracer`.
    pub(super) fn busy_share(&self, tracer: Tracer, cpus: usize) -> Option<Spread> {
        self.cpu_share(tracer, cpus, |c| c.busy)
    }

    /// How much of the machine's CPU time the hypervisor took during the load.
    pub(super) fn stolen_share(&self, tracer: Tracer, cpus: usize) -> Option<Spread> {
        self.cpu_share(tracer, cpus, |c| c.stolen)
    }

    fn cpu_share(
        &self,
        tracer: Tracer,
        cpus: usize,
        secs: fn(&MachineCpu) -> f64,
    ) -> Option<Spread> {
        Spread::of(
            self.of(tracer)
                .map(|p| secs(&p.machine_cpu) / (p.machine_cpu.wall * cpus as f64))
                .collect(),
        )
    }

    /// The CPU `tracer` added per connection (by the level's measure), and what of it was
    /// measured where: its programs' kernel time and, for `observer run`, the daemon's CPU over
    /// its whole phases (the drain after the load and the benchmark's scrapes included), per
    /// connection of its phases.
    pub(super) fn attribution(&self, tracer: Tracer) -> Option<Attribution> {
        // Without statistics the programs' time is not known.
        if !self.kernel_stats {
            return None;
        }
        let added = self.added_cpu_ns(tracer, self.measure())?;
        let connections: u64 = self.of(tracer).map(|p| p.made.connections()).sum();
        let per_connection = |ns: f64| ns / connections as f64;
        let programs: u64 = self
            .of(tracer)
            .flat_map(|p| p.costs.iter().map(|c| c.run_time_ns))
            .sum();
        Some(Attribution {
            added,
            programs_ns: per_connection(programs as f64),
            reader_ns: (tracer == Tracer::Observer)
                .then(|| self.daemon())
                .flatten()
                .map(|d| per_connection(d.cpu.total() * 1e9)),
        })
    }

    /// CPU ns per connection by `measure` over the phases of `tracer`.
    pub(super) fn cpu_ns_per_connection(&self, tracer: Tracer, measure: Measure) -> Option<Spread> {
        Spread::of(
            self.of(tracer)
                .map(|p| measure.ns_per_connection(p))
                .collect(),
        )
    }
}

/// Which CPU time a figure counts (see `machine_cpu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Measure {
    /// Every CPU's busy time, from `/proc/stat`.
    Machine,
    /// The load's and the tracer's processes.
    Processes,
}

impl Measure {
    pub(super) const ALL: [Self; 2] = [Self::Machine, Self::Processes];

    pub(super) const fn key(self) -> &'static str {
        match self {
            Self::Machine => "machine",
            Self::Processes => "processes",
        }
    }

    /// CPU ns per connection of a phase.
    fn ns_per_connection(self, p: &Phase) -> f64 {
        let secs = match self {
            Self::Machine => p.machine_cpu.busy,
            Self::Processes => p.machine_cpu.processes,
        };
        secs * 1e9 / p.made.connections() as f64
    }
}

/// The CPU a tracer added per connection, and the parts of it measured on their own.
pub(super) struct Attribution {
    pub(super) added: Spread,
    /// The tracer's programs' kernel time (BPF statistics).
    pub(super) programs_ns: f64,
    /// Its reader's CPU time, where measured (the daemon's).
    pub(super) reader_ns: Option<f64>,
}

impl Attribution {
    /// What no measurement of the tracer's own shows: the median added less the parts.
    pub(super) fn unattributed_ns(&self) -> f64 {
        self.added.median - self.programs_ns - self.reader_ns.unwrap_or(0.0)
    }
}

/// One observed phase against the unobserved phases beside it (their mean), so that the drift
/// of a shared machine over minutes stays out of the comparison.
#[derive(Clone, Debug)]
pub(super) struct Pair<'a> {
    /// Connections/s with the tracer over connections/s without.
    pub(super) ratio: f64,
    observed: &'a Phase,
    beside: Vec<&'a Phase>,
}

impl<'a> Pair<'a> {
    fn of(observed: &'a Phase, beside: Vec<&'a Phase>) -> Self {
        let ratio = observed.made.connections_per_s()
            / mean(beside.iter().map(|p| p.made.connections_per_s()));
        Self {
            ratio,
            observed,
            beside,
        }
    }

    /// CPU ns per connection by `measure`, with the tracer and without (the mean beside).
    pub(super) fn cpu_ns_per_connection(&self, measure: Measure) -> (f64, f64) {
        (
            measure.ns_per_connection(self.observed),
            mean(self.beside.iter().map(|p| measure.ns_per_connection(p))),
        )
    }
}

fn mean(v: impl ExactSizeIterator<Item = f64>) -> f64 {
    let n = v.len() as f64;
    v.sum::<f64>() / n
}

/// A figure's median over several measurements, and their range.
#[derive(Clone, Copy, Debug)]
pub(super) struct Spread {
    pub(super) median: f64,
    pub(super) min: f64,
    pub(super) max: f64,
    pub(super) n: usize,
}

impl Spread {
    pub(super) fn of(v: Vec<f64>) -> Option<Self> {
        let finite: Vec<f64> = v.into_iter().filter(|x| x.is_finite()).collect();
        let n = finite.len();
        if n == 0 {
            return None;
        }
        let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
        let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Self {
            median: median(finite),
            min,
            max,
            n,
        })
    }

    /// `median (min to max)`, each with `decimals`.
    pub(super) fn show(&self, decimals: usize) -> String {
        format!(
            "{:.decimals$} ({:.decimals$} to {:.decimals$})",
            self.median, self.min, self.max
        )
    }

    pub(super) fn json(&self) -> Value {
        json!({"median": self.median, "min": self.min, "max": self.max, "n": self.n})
    }
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
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
