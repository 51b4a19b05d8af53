//! The benchmark's targets, and whether the run met them.

use observer::load::contract;

use super::{
    Bench, Userspace, grouped,
    level::{Delivery, Level},
    opt,
    pairs::Spread,
    whole,
};
use crate::{Tracer, reads};

/// Targets of the benchmark.
const THROUGHPUT_RATIO: f64 = 0.97;
/// Observer's loss of throughput at most this many times the classic baseline's.
const THROUGHPUT_LOSS_TO_BASELINE: f64 = 2.0;
const KERNEL_COST_RATIO: f64 = 1.5;
/// The daemon's CPU per event, end to end (ring read, decode, track, export).
const DAEMON_NS_PER_EVENT: f64 = 150.0;
/// Least daemon CPU the figure is judged on when only /proc/PID/stat's is known: it counts in
/// clock ticks (10 ms), so below a second a tick is more than 1% of it (a `--quick` run's
/// daemon often shows none at all). The exact CPU time (its CPU-time clock) is judged on any
/// amount.
const DAEMON_CPU_JUDGED_SECS: f64 = 1.0;
const EVENTS_PER_CORE: f64 = 10_000_000.0;
const BYTES_PER_SOCKET: f64 = 200.0;

impl Bench {
    /// The level with the most churn threads, where runs are most often skipped.
    fn peak<'a>(levels: &'a [Level<'a>]) -> &'a Level<'a> {
        // The paced level never reaches the highest churn; only statistics count runs.
        levels
            .iter()
            .filter(|l| l.paced.is_none() && l.kernel_stats)
            .max_by_key(|l| l.threads)
            .expect("at least one level")
    }

    /// Throughput with observer over without, as users run it (without BPF statistics) when
    /// the run measured that, with the main level's figure beside it.
    fn throughput_target(levels: &[Level<'_>]) -> Target {
        let main = &levels[0];
        let users = levels
            .iter()
            .find(|l| !l.kernel_stats && l.paced.is_none() && l.threads == main.threads)
            .unwrap_or(main);
        let ratio = users.ratio(Tracer::Observer);
        Target {
            name: "throughput with observer run / without",
            goal: format!(">= {THROUGHPUT_RATIO}"),
            measured: opt(ratio, |r| {
                let with_stats = main
                    .ratio(Tracer::Observer)
                    .filter(|_| users.kernel_stats != main.kernel_stats)
                    .map(|m| format!("; {m:.3} with them"))
                    .unwrap_or_default();
                format!("{r:.3} ({}{with_stats})", users.name())
            }),
            met: ratio.map(|r| r >= THROUGHPUT_RATIO),
        }
    }

    pub(super) fn targets(&self) -> Vec<Target> {
        let levels = self.levels();
        let main = &levels[0];
        let peak = Self::peak(&levels);
        let mut t = vec![Self::throughput_target(&levels)];
        t.extend(levels.iter().filter_map(Level::throughput_loss_target));
        t.extend(levels.iter().filter_map(Level::machine_cpu_target));
        let ours: Vec<Delivery> = levels
            .iter()
            .filter_map(|l| l.delivery(Tracer::Observer))
            .collect();
        let after: u64 = ours.iter().map(Delivery::lost_uncounted).sum();
        let not_run: u64 = ours.iter().filter_map(Delivery::not_run).sum();
        let gaps: u64 = ours.iter().filter_map(|d| d.gaps).sum();
        let others = [
            Tracer::Baseline,
            Tracer::BaselineRaw,
            Tracer::BaselineWakeEach,
            Tracer::BaselineNoWakeup,
            Tracer::Tcpstates,
        ]
        .iter()
        .filter_map(|t| Some(format!("{} {}", t.key(), main.delivery(*t)?.not_run()?)))
        .collect::<Vec<_>>()
        .join(", ");
        t.push(Target {
            name: "transitions lost without a counter (every level)",
            goal: "0".to_owned(),
            measured: format!(
                "{after} after the program (without BPF statistics, which count runs: anywhere); \
                 {not_run} never reached it (same run, {} threads: {others}); the daemon's \
                 gaps {gaps} (sockets it proved a transition missing from)",
                main.threads
            ),
            met: Some(after == 0 && not_run == 0),
        });
        let peak_loss = peak.delivery(Tracer::Observer);
        t.push(Target {
            name: "transitions lost with the most churn threads",
            goal: "0".to_owned(),
            measured: opt(peak_loss, |d| {
                format!(
                    "{} ({} skipped, {} never reached the program, {} after it; {} threads, \
                     {} transitions/s unobserved)",
                    grouped(d.lost()),
                    grouped(d.skipped),
                    opt(d.not_run(), grouped),
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
        t.extend(main.cost_targets());
        let u = self.userspace.as_ref();
        t.push(Target {
            name: "decode + track events/s per core",
            goal: format!(">= {}", whole(EVENTS_PER_CORE)),
            measured: opt(u, Userspace::decode_track_text),
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
}

impl Level<'_> {
    /// What observing costs per event: in the kernel against the baseline, and in the daemon.
    fn cost_targets(&self) -> Vec<Target> {
        let mut t = Vec::new();
        let ours = self.cost_of("observer", "inet_sock_set_state");
        let ratio_to = |baseline: &str| {
            let floor = self.cost_of(baseline, baseline)?;
            Some(ours.as_ref()?.ns_per_invocation()? / floor.ns_per_invocation()?)
        };
        let kernel = ratio_to("baseline");
        let wake_each = ratio_to("baseline_wake_each")
            .map(|w| {
                format!(" (to baseline_wake_each, which wakes the reader per record: {w:.2}x)")
            })
            .unwrap_or_default();
        // Phases apart move by a third from run to run; copies in one phase do not.
        let side_by_side = Spread::of(self.copy_ratio(reads::WHOLE, contract::BASELINE))
            .map(|s| {
                format!(
                    "; side by side on the same transitions, warm cache: {:.2}x ({:.2} to {:.2})",
                    s.median, s.min, s.max
                )
            })
            .unwrap_or_default();
        let per_cpu = Spread::of(self.copy_ratio(reads::WHOLE, contract::BASELINE_PER_CPU))
            .map(|s| {
                format!(
                    "; to baseline_per_cpu beside it (a ring per CPU, as observer writes): \
                     {:.2}x ({:.2} to {:.2})",
                    s.median, s.min, s.max
                )
            })
            .unwrap_or_default();
        let side_by_side = format!("{side_by_side}{per_cpu}");
        t.push(Target {
            name: "kernel ns/event, inet_sock_set_state / baseline",
            goal: format!("<= {KERNEL_COST_RATIO}x"),
            measured: opt(kernel, |k| format!("{k:.2}x{side_by_side}{wake_each}")),
            met: kernel.map(|k| k <= KERNEL_COST_RATIO),
        });
        let all = self
            .all_programs_ns_per_transition(Tracer::Observer)
            .zip(self.all_programs_ns_per_transition(Tracer::Baseline));
        // What no program on these hooks can go below: the target's reach on this design.
        let hooks_floor = Spread::of(self.hooks_floor_ratio())
            .map(|s| {
                format!(
                    "; the floor of its hooks (baseline's reserve and submit on each, timers \
                     filtered), side by side with baseline: {:.2}x ({:.2}x to {:.2}x)",
                    s.median, s.min, s.max
                )
            })
            .unwrap_or_default();
        t.push(Target {
            name: "kernel ns/transition, all observer's programs / baseline",
            goal: format!("<= {KERNEL_COST_RATIO}x"),
            measured: opt(all, |(ours, floor)| {
                format!(
                    "{:.2}x ({ours:.0} / {floor:.0} ns){hooks_floor}",
                    ours / floor
                )
            }),
            met: all.map(|(ours, floor)| ours <= KERNEL_COST_RATIO * floor),
        });
        t.push(self.daemon_target());
        t
    }

    /// The daemon's CPU per event: its exact CPU time when known, else /proc/PID/stat's ticks
    /// when there are enough of them.
    fn daemon_target(&self) -> Target {
        let daemon = self.daemon();
        let ticks_ns = daemon.map(|d| d.cpu_secs_per_million_events() * 1e3);
        let exact_ns = daemon.and_then(|d| d.run_ns_per_event());
        Target {
            name: "daemon CPU ns per event",
            goal: format!("<= {DAEMON_NS_PER_EVENT:.0}"),
            measured: opt(daemon.zip(ticks_ns), |(d, ticks)| {
                let by_ticks = format!(
                    "by /proc/PID/stat {ticks:.0} (user {:.0}, system {:.0})",
                    d.per_million_events(d.cpu.user) * 1e3,
                    d.per_million_events(d.cpu.system) * 1e3,
                );
                match exact_ns {
                    Some(ns) => format!(
                        "{ns:.0}, exact (its CPU-time clock; event loop {}); {by_ticks}; {} threads",
                        d.main_thread_ns_per_event()
                            .map_or_else(|| "unknown".to_owned(), |n| format!("{n:.0}")),
                        self.threads
                    ),
                    None if d.cpu.total() < DAEMON_CPU_JUDGED_SECS => format!(
                        "{by_ticks}; {} threads; not judged: the exact CPU time is unknown and \
                         {:.2} CPU s are counted in 10 ms ticks",
                        self.threads,
                        d.cpu.total()
                    ),
                    None => format!(
                        "{by_ticks}; {} threads (the exact CPU time is unknown)",
                        self.threads
                    ),
                }
            }),
            met: match (daemon, exact_ns, ticks_ns) {
                (Some(_), Some(ns), _) => Some(ns <= DAEMON_NS_PER_EVENT),
                (Some(d), None, Some(ns)) if d.cpu.total() >= DAEMON_CPU_JUDGED_SECS => {
                    Some(ns <= DAEMON_NS_PER_EVENT)
                }
                _ => None,
            },
        }
    }

    /// Observer's loss of throughput against the classic baseline's, when both ran.
    fn throughput_loss_target(&self) -> Option<Target> {
        // A paced load keeps its rate: its throughput says nothing of the cost.
        if self.paced.is_some() {
            return None;
        }
        let (ours, floor) = (self.ratio(Tracer::Observer)?, self.ratio(Tracer::Baseline)?);
        let (lost, floor_lost) = (1.0 - ours, 1.0 - floor);
        let times = if floor_lost > 0.0 {
            format!("{:.2}x", lost / floor_lost)
        } else {
            "the baseline lost nothing".to_owned()
        };
        let spread = |t: Tracer| {
            opt(self.pair_ratios(t), |s| {
                format!("{:.3} to {:.3}", s.min, s.max)
            })
        };
        // What the hooks alone and the programs without the daemon lost, when measured: how
        // much of the loss any program on those hooks, or only the daemon, could cut.
        let between: Vec<String> = self
            .steps()
            .iter()
            .filter(|s| matches!(s.tracer, Tracer::Hooks | Tracer::Programs))
            .map(|s| format!("{} {:.1}%", s.tracer.name(), s.lost * 100.0))
            .collect();
        let between = if between.is_empty() {
            String::new()
        } else {
            format!("; lost by {}", between.join(", "))
        };
        Some(Target {
            name: "throughput lost with observer run / with baseline",
            goal: format!("<= {THROUGHPUT_LOSS_TO_BASELINE}x"),
            measured: format!(
                "{:.1}% / {:.1}% = {times} ({}; ratios {ours:.3} ({}) and {floor:.3} ({})){between}",
                lost * 100.0,
                floor_lost * 100.0,
                self.name(),
                spread(Tracer::Observer),
                spread(Tracer::Baseline),
            ),
            met: Some(lost <= THROUGHPUT_LOSS_TO_BASELINE * floor_lost),
        })
    }

    /// The same cost as the machine's CPU: what observer adds per connection against what the
    /// classic baseline adds.
    fn machine_cpu_target(&self) -> Option<Target> {
        let (ours, floor) = (
            self.added_cpu_ns(Tracer::Observer, self.measure())?,
            self.added_cpu_ns(Tracer::Baseline, self.measure())?,
        );
        let times = if floor.median > 0.0 {
            format!("{:.2}x", ours.median / floor.median)
        } else {
            "the baseline added nothing".to_owned()
        };
        Some(Target {
            name: if self.paced.is_some() {
                "CPU added per connection, paced, observer run / baseline"
            } else {
                "machine CPU added per connection, observer run / baseline"
            },
            goal: format!("<= {THROUGHPUT_LOSS_TO_BASELINE}x"),
            measured: format!(
                "{:.0} / {:.0} ns = {times} ({}; pairs {:.0} to {:.0} and {:.0} to {:.0})",
                ours.median,
                floor.median,
                self.name(),
                ours.min,
                ours.max,
                floor.min,
                floor.max
            ),
            met: Some(ours.median <= THROUGHPUT_LOSS_TO_BASELINE * floor.median),
        })
    }
}

pub(super) struct Target {
    pub(super) name: &'static str,
    pub(super) goal: String,
    pub(super) measured: String,
    pub(super) met: Option<bool>,
}

impl Userspace {
    /// The decode + track target's figures: as the daemon runs, then each other series.
    fn decode_track_text(&self) -> String {
        let mut text = whole(self.events_per_s);
        if let Some(client) = self.client_events_per_s {
            text = format!(
                "{text} as the daemon runs (notable transitions reported); {} with a \
                 client reading every transition",
                whole(client)
            );
        }
        if let Some(other) = self.other_cpu_events_per_s {
            text = format!(
                "{text}; {} with each batch of records written on another CPU",
                whole(other)
            );
        }
        if let Some(evicted) = self.other_cpu_evicted_events_per_s {
            text = format!("{text}, {} out of that CPU's caches", whole(evicted));
        }
        if let Some(d) = &self.dense {
            text = format!(
                "{text}; {} with connections four times as often ({} timewait sockets)",
                whole(d.events_per_s),
                grouped(d.peak_timewait)
            );
        }
        text
    }
}
