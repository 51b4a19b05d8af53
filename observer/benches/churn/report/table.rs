//! The figures as a table for people.

use std::fmt::Write as _;

use observer::load::contract;
use observer_common::{SpanRecord, record::BASELINE_WRITTEN_SPAN};

use super::{
    Bench, TRACERS, grouped,
    level::{Level, Step},
    opt,
    pairs::{Attribution, Measure, Spread},
    whole,
};
use crate::{
    KINDS, Tracer, listener_transitions,
    reads::{NO_SPAN, Omitted, WHOLE},
    transitions_per_connection,
};

// The bytes the stores' row names: what `baseline_per_cpu_written` stores of its record.
const _: () = assert!(std::mem::offset_of!(SpanRecord, raw) + BASELINE_WRITTEN_SPAN == 120);

impl Bench {
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
                "\nthroughput, {} ({} rounds; each observed phase against the unobserved \
                 phases beside it: ratios and CPU added are medians of those pairs, (lowest to \
                 highest)){}",
                level.name(),
                self.rounds,
                if level.paced.is_some() {
                    "; a paced load keeps its rate whatever the tracer: its cost shows as CPU"
                } else {
                    ""
                }
            );
            let _ = writeln!(
                w,
                "  {:<20} {:>14} {:>26} {:>10} {:>24} {:>10} {:>24} {:>6} {:>7}",
                "tracer",
                "connections/s",
                "ratio to none",
                "machine",
                "machine, added",
                "processes",
                "processes, added",
                "busy",
                "stolen"
            );
            for tracer in TRACERS {
                let Some(rate) = level.median_rate(tracer) else {
                    continue;
                };
                let per_connection = |m| {
                    opt(level.cpu_ns_per_connection(tracer, m), |s| {
                        format!("{:.2}", s.median / 1e3)
                    })
                };
                let added = |m| opt(level.added_cpu_ns(tracer, m), |s| micros(&s));
                let _ = writeln!(
                    w,
                    "  {:<20} {:>14} {:>26} {:>10} {:>24} {:>10} {:>24} {:>6} {:>7}",
                    tracer.name(),
                    whole(rate),
                    match level.pair_ratios(tracer) {
                        Some(s) => format!("{} x{}", s.show(3), s.n),
                        None => opt(level.ratio(tracer), |r| format!("{r:.3}")),
                    },
                    per_connection(Measure::Machine),
                    added(Measure::Machine),
                    per_connection(Measure::Processes),
                    added(Measure::Processes),
                    opt(level.busy_share(tracer, self.machine.cpus), |s| format!(
                        "{:.0}%",
                        s.median * 100.0
                    )),
                    opt(level.stolen_share(tracer, self.machine.cpus), |s| format!(
                        "{:.1}%",
                        s.median * 100.0
                    )),
                );
            }
            Self::write_attribution(w, level);
            Self::write_steps(w, level);
            let _ = writeln!(
                w,
                "  CPU per connection over the load, us: machine: every CPU's busy time \
                 (/proc/stat: user, nice, system, irq, softirq), right when the load keeps the \
                 CPUs busy, far too low when it is paced (ticks sample bursts as idle); \
                 processes: the load's and the tracer's own CPU, exact, without kernel threads; \
                 added: less the phases beside it, median (range) of the pairs; the targets \
                 use {}; busy: the machine's busy time over the load's wall time on every CPU; \
                 stolen: CPU time the hypervisor gave to others (medians)",
                level.measure().key()
            );
        }
    }

    /// Where the CPU each tracer added went, as far as its own figures show.
    fn write_attribution(w: &mut String, level: &Level<'_>) {
        let rows: Vec<(Tracer, Attribution)> = TRACERS
            .into_iter()
            .filter_map(|t| Some((t, level.attribution(t)?)))
            .collect();
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(
            w,
            "  where the CPU added ({}) went, us per connection: {:<20} {:>10} {:>14} {:>14} {:>16}",
            level.measure().key(),
            "",
            "added",
            "its programs",
            "its reader",
            "not attributed"
        );
        for (tracer, a) in rows {
            let _ = writeln!(
                w,
                "  {:<44} {:<20} {:>10.2} {:>14.2} {:>14} {:>16.2}",
                "",
                tracer.name(),
                a.added.median / 1e3,
                a.programs_ns / 1e3,
                opt(a.reader_ns, |r| format!("{:.2}", r / 1e3)),
                a.unattributed_ns() / 1e3
            );
        }
        let _ = writeln!(
            w,
            "  (its programs: their kernel time, BPF statistics; its reader: the daemon's CPU over \
             its whole phases (the drain after the load and the benchmark's scrapes included), \
             not measured for the others; not attributed: the rest, which no figure here \
             explains)"
        );
    }

    /// Observer's cost built up from `baseline` in steps, when the level ran the phases between.
    fn write_steps(w: &mut String, level: &Level<'_>) {
        let steps = level.steps();
        let between = |s: &Step| matches!(s.tracer, Tracer::Hooks | Tracer::Programs);
        if steps.len() < 2 || !steps.iter().any(between) {
            return;
        }
        let _ = writeln!(
            w,
            "  observer run's cost in steps from baseline: throughput lost and CPU added ({}) \
             per connection, medians of each tracer's pairs; (step: less the row above, a \
             difference between medians of different phases)",
            level.measure().key()
        );
        let mut before: Option<&Step> = None;
        for step in &steps {
            let lost = format!("{:.1}%", step.lost * 100.0);
            let added = opt(step.added_ns, |a| format!("{:.2} us", a / 1e3));
            let (lost_step, added_step) = before.map_or_else(
                || (String::new(), String::new()),
                |b| {
                    (
                        format!("({:+.1})", (step.lost - b.lost) * 100.0),
                        opt(step.added_ns.zip(b.added_ns), |(a, b)| {
                            format!("({:+.2})", (a - b) / 1e3)
                        }),
                    )
                },
            );
            let _ = writeln!(
                w,
                "    {:<86} lost {lost:>6} {lost_step:>8}   added {added:>9} {added_step:>8}",
                step.what
            );
            before = Some(step);
        }
    }

    fn write_loss(w: &mut String, levels: &[Level<'_>]) {
        let _ = writeln!(
            w,
            "\nloss: the load's transitions through each tracer (all rounds of a level summed)"
        );
        let _ = writeln!(
            w,
            "  {:<42} {:<20} {:>10} {:>12} {:>8} {:>8} {:>6} {:>12} {:>14} {:>16} {:>5}",
            "level",
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
                    "  {:<42} {:<20} {:>10} {:>12} {:>8} {:>8} {:>6} {:>12} {:>14} {:>16} {:>5}",
                    level.name(),
                    d.tracer.name(),
                    grouped(d.expected),
                    opt(d.runs, grouped),
                    grouped(d.skipped),
                    opt(d.not_run(), grouped),
                    grouped(d.extra()),
                    grouped(d.delivered),
                    grouped(d.lost_counted),
                    grouped(d.lost_uncounted()),
                    opt(d.gaps, grouped)
                );
            }
        }
        for level in levels {
            let Some(d) = level.delivery(Tracer::Observer) else {
                continue;
            };
            let t = d.timewait;
            let _ = writeln!(
                w,
                "  timewait sockets, {}: the load left {}, the kernel made {} (TcpExt TW + \
                 TWKilled), observer run saw {} start",
                level.name(),
                grouped(t.expected),
                grouped(t.kernel),
                opt(t.seen, grouped)
            );
        }
        for level in levels {
            for p in level.of(Tracer::Observer) {
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
                    "  observer run, {}, one phase: {}",
                    level.name(),
                    pairs.join("; ")
                );
            }
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
        for tracer in TRACERS[1..].iter().filter(|t| **t != Tracer::StateReads) {
            if let Some(ns) = main.all_programs_ns_per_transition(*tracer) {
                let _ = writeln!(
                    w,
                    "  {}: all its programs, per transition of the load: {ns:.1} ns",
                    tracer.name()
                );
            }
        }
        Self::write_reads(w, main);
        Self::write_hooks_floor(w, main);
        Self::write_hook_pieces(w, main);
    }

    /// What each read of the state program costs: copies of it side by side in one phase.
    fn write_reads(w: &mut String, main: &Level<'_>) {
        let lines: Vec<(&str, Vec<f64>)> = Omitted::ALL
            .iter()
            .map(|o| (o.read(), main.read_cost_ns(*o)))
            .chain([
                (
                    "left without them, over baseline_per_cpu (copy, filter, time, task)",
                    main.copy_difference(Omitted::All.key(), contract::BASELINE_PER_CPU),
                ),
                (
                    "of which its record's stores, 120 bytes (baseline_per_cpu_written, less baseline_per_cpu)",
                    main.copy_difference(
                        contract::BASELINE_PER_CPU_WRITTEN,
                        contract::BASELINE_PER_CPU,
                    ),
                ),
                (
                    "and the rest, over baseline_per_cpu_written (filter, time, task, loads)",
                    main.copy_difference(Omitted::All.key(), contract::BASELINE_PER_CPU_WRITTEN),
                ),
                (
                    "the span copy, less reading its 2 fields one by one",
                    main.copy_difference(Omitted::All.key(), NO_SPAN),
                ),
                (
                    "no span copy, over baseline_per_cpu (2 reads, filter, time, task)",
                    main.copy_difference(NO_SPAN, contract::BASELINE_PER_CPU),
                ),
                (
                    "a ring per CPU (baseline_per_cpu), less one shared (baseline)",
                    main.copy_difference(contract::BASELINE_PER_CPU, contract::BASELINE),
                ),
            ])
            .filter(|(_, d)| !d.is_empty())
            .collect();
        if lines.is_empty() {
            return;
        }
        let _ = writeln!(
            w,
            "\nthe state program's reads: copies of it without each, beside the whole program \
             ({WHOLE}), baseline and baseline_per_cpu on the same transitions; ns per run, the \
             whole less the copy (median, then each round; attach order rotating)"
        );
        write_rounds(w, lines);
    }

    /// What the hooks cost before any program's work, from the programs beside the copies.
    fn write_hook_pieces(w: &mut String, main: &Level<'_>) {
        use contract::{
            EMPTY_STATE, EMPTY_TIMER_CANCEL, EMPTY_TIMER_START, FILTER_TIMER_CANCEL,
            FILTER_TIMER_START,
        };
        let lines: Vec<(&str, Vec<f64>)> = [
            (
                "a program doing nothing, on inet_sock_set_state",
                main.side_by_side_ns(EMPTY_STATE),
            ),
            (
                "baseline (reserve and submit), over doing nothing",
                main.copy_difference(contract::BASELINE, EMPTY_STATE),
            ),
            (
                "a program doing nothing, on timer_start",
                main.side_by_side_ns(EMPTY_TIMER_START),
            ),
            (
                "the timer filter (1 read) on timer_start, over doing nothing",
                main.copy_difference(FILTER_TIMER_START, EMPTY_TIMER_START),
            ),
            (
                "a program doing nothing, on timer_cancel",
                main.side_by_side_ns(EMPTY_TIMER_CANCEL),
            ),
            (
                "the timer filter (1 read) on timer_cancel, over doing nothing",
                main.copy_difference(FILTER_TIMER_CANCEL, EMPTY_TIMER_CANCEL),
            ),
        ]
        .into_iter()
        .filter(|(_, d)| !d.is_empty())
        .collect();
        if lines.is_empty() {
            return;
        }
        let _ = writeln!(
            w,
            "\nthe hooks before any program's work, beside the floors (after them, so that the \
             filter finds the timer in cache): programs doing nothing (what BPF statistics \
             count for any program, the call and their own clock reads around it; in every \
             figure here), and the timer programs' filter alone; ns per run (median, then each round)"
        );
        write_rounds(w, lines);
    }

    /// The least that watching all of observer's hooks costs, side by side with `baseline`.
    fn write_hooks_floor(w: &mut String, main: &Level<'_>) {
        let ratios = main.hooks_floor_ratio();
        let Some(spread) = Spread::of(ratios.clone()) else {
            return;
        };
        let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        let _ = writeln!(
            w,
            "\nthe floor of observer's hooks: baseline's reserve and submit on each of them (the \
             timers' for timewait timers, found by observer's filter), side by side with \
             baseline on the same transitions; their kernel time over baseline's: {:.2}x \
             ({:.2}x to {:.2}x; each round: {})",
            spread.median,
            spread.min,
            spread.max,
            each.join(", ")
        );
    }

    fn write_resources(&self, w: &mut String, main: &Level<'_>) {
        if let Some(d) = main.daemon() {
            let _ = writeln!(
                w,
                "\ndaemon ({} threads): {}; by /proc/PID/stat: {:.3} CPU s per million \
                 events: user {:.3}, system {:.3} (ticks that caught it in the kernel: interrupts \
                 and softirqs included) ({} events, {:.2} CPU s); peak RSS {:.1} MiB",
                main.threads,
                d.run_ns.map_or_else(
                    || "exact CPU time unknown".to_owned(),
                    |ns| format!(
                        "{:.1} ns of CPU per event, exact (its CPU-time clock: every thread's \
                         time on a CPU; {:.3} s), {} of them in its event loop (the main \
                         thread's schedstat; the others run sock_diag dumps and walks of /proc)",
                        d.run_ns_per_event().unwrap_or_default(),
                        ns as f64 / 1e9,
                        d.main_thread_ns_per_event()
                            .map_or_else(|| "unknown".to_owned(), |n| format!("{n:.1}"))
                    )
                ),
                d.cpu_secs_per_million_events(),
                d.per_million_events(d.cpu.user),
                d.per_million_events(d.cpu.system),
                grouped(d.counters.events_received),
                d.cpu.total(),
                d.peak_rss_bytes as f64 / (1024.0 * 1024.0)
            );
        }
        match &self.userspace {
            Some(u) => {
                let _ = writeln!(
                    w,
                    "\nuserspace (benches/tracker/, one core): {} events/s ({}){}{}; per \
                     tracked socket at {} sockets: {}",
                    whole(u.events_per_s),
                    u.events_key,
                    u.client_events_per_s.map_or(String::new(), |c| format!(
                        ", {} with a client reading every transition",
                        whole(c)
                    )),
                    u.dense.as_ref().map_or(String::new(), |d| format!(
                        ", {} with connections four times as often ({} timewait sockets)",
                        whole(d.events_per_s),
                        grouped(d.peak_timewait)
                    )),
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
            "  {:<58} {:>12}  {:<12} measured",
            "target", "goal", "result"
        );
        for t in self.targets() {
            let _ = writeln!(
                w,
                "  {:<58} {:>12}  {:<12} {}",
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
}

/// A spread of nanoseconds, in microseconds.
fn micros(s: &Spread) -> String {
    format!(
        "{:.2} ({:.2} to {:.2})",
        s.median / 1e3,
        s.min / 1e3,
        s.max / 1e3
    )
}

/// One line per figure: its median over the rounds, then each round's, in ns.
fn write_rounds(w: &mut String, lines: Vec<(&str, Vec<f64>)>) {
    for (what, mut rounds) in lines {
        let each: Vec<String> = rounds.iter().map(|d| format!("{d:+.1}")).collect();
        rounds.sort_by(f64::total_cmp);
        let _ = writeln!(
            w,
            "  {what:<66} {:>+8.1}  ({})",
            rounds[rounds.len() / 2],
            each.join(", ")
        );
    }
}
