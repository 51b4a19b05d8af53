//! The figures as JSON: the run, each level, each phase.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{
    Bench, TRACERS,
    level::{Level, ProgramCost},
    pairs::Measure,
};
use observer::load::contract;

use crate::{
    KINDS, Phase, listener_transitions,
    reads::{NO_SPAN, Omitted},
};

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
                    "pair_ratios": self.pair_ratios(*t).map(|s| s.json()),
                    "cpu_ns_per_connection": Measure::ALL.iter().map(|m| (
                        m.key(),
                        self.cpu_ns_per_connection(*t, *m).map(|s| s.json()),
                    )).collect::<BTreeMap<_, _>>(),
                    "cpu_added_ns_per_connection": Measure::ALL.iter().map(|m| (
                        m.key(),
                        self.added_cpu_ns(*t, *m).map(|s| s.json()),
                    )).collect::<BTreeMap<_, _>>(),
                    "targets_cpu_measure": self.measure().key(),
                    "machine_cpu_attribution_ns_per_connection": self.attribution(*t).map(|a| json!({
                        "added_median": a.added.median,
                        "programs": a.programs_ns,
                        "reader": a.reader_ns,
                        "not_attributed": a.unattributed_ns(),
                    })),
                    "pairs": self.pairs(*t).iter().map(|p| json!({
                        "ratio": p.ratio,
                        "cpu_ns_per_connection_with_and_without": Measure::ALL.iter().map(|m| (
                            m.key(),
                            p.cpu_ns_per_connection(*m),
                        )).collect::<BTreeMap<_, _>>(),
                    })).collect::<Vec<_>>(),
                    "runs_connections_per_s": self.of(*t)
                        .map(|p| p.made.connections_per_s())
                        .collect::<Vec<_>>(),
                    "stopped_by_time": self.of(*t).filter(|p| p.made.stopped_by_time).count(),
                })
            })
            .collect();
        json!({
            "threads": self.threads,
            "paced_connections_per_s": self.paced,
            "bpf_statistics": self.kernel_stats,
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
            "state_program_read_ns_per_run_by_round": Omitted::ALL
                .iter()
                .map(|o| (o.key(), self.read_cost_ns(*o)))
                .chain([
                    ("span_copy", self.copy_difference(Omitted::All.key(), NO_SPAN)),
                    (
                        "filter_timestamp_task",
                        self.copy_difference(NO_SPAN, contract::BASELINE_PER_CPU),
                    ),
                    (
                        "record_stores",
                        self.copy_difference(
                            contract::BASELINE_PER_CPU_WRITTEN,
                            contract::BASELINE_PER_CPU,
                        ),
                    ),
                    (
                        "ring_per_cpu_less_shared",
                        self.copy_difference(contract::BASELINE_PER_CPU, contract::BASELINE),
                    ),
                ])
                .collect::<BTreeMap<_, _>>(),
            "daemon": self.daemon().map(|d| d.json()),
        })
    }
}

impl Bench {
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
                "client_events_per_s_per_core": u.client_events_per_s,
                "dense_events_per_s_per_core": u.dense.as_ref().map(|d| d.events_per_s),
                "dense_peak_timewait": u.dense.as_ref().map(|d| d.peak_timewait),
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
        "paced_connections_per_s": p.paced,
        "connections": KINDS
            .iter()
            .zip(p.made.by_kind)
            .map(|(k, n)| (k.name(), n))
            .collect::<BTreeMap<_, _>>(),
        "seconds": p.made.elapsed.as_secs_f64(),
        "stopped_by_time": p.made.stopped_by_time,
        "machine_busy_cpu_seconds": p.machine_cpu.busy,
        "machine_stolen_cpu_seconds": p.machine_cpu.stolen,
        "processes_cpu_seconds": p.machine_cpu.processes,
        "machine_cpu_wall_seconds": p.machine_cpu.wall,
        "transitions_expected": p.made.transitions(),
        "timewait_sockets_expected": p.made.timewait_sockets(),
        "timewait_sockets_kernel_made": p.kernel_timewait,
        "bpf_statistics": p.kernel_stats,
        "programs": p.costs,
        "daemon": p.daemon.map(|d| json!({
            "counters": d.counters,
            "cpu_seconds": d.cpu.total(),
            "user_cpu_seconds": d.cpu.user,
            "system_cpu_seconds": d.cpu.system,
            "run_seconds_exact": d.run_ns.map(|ns| ns as f64 / 1e9),
            "main_thread_run_seconds_exact": d.main_thread_ns.map(|ns| ns as f64 / 1e9),
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
