//! `cargo xtask bench`: what observing costs and whether anything is lost, under connection
//! churn on loopback, each phase in a fresh network namespace (root needed).
//!
//! Phases with the same load alternate, round after round: each tracer's phase (`observer run`, its
//! programs without the daemon, the floors on its hooks, copies of its state program, bcc's
//! tcpstates when installed, minimal programs that only reserve and submit a ring-buffer record)
//! between two phases with no tracer, which it is compared with. Measured per phase: connections/s
//! and CPU time per connection; transitions expected (from the generator's counts) against those
//! each tracer received, and the daemon's loss counters; the timewait sockets the kernel made in
//! the namespace (`TcpExt: TW` + `TWKilled`) against the load's and the starts the daemon saw; the
//! kernel's run time and run count of every attached program (BPF statistics on); the daemon's CPU
//! time and peak RSS. A second level with more threads looks for the highest churn, a third paces
//! the load below saturation so that costs show as CPU time. The tracker's userspace figures come
//! from `benches/tracker/` (`--userspace`).
//!
//! Run: `cargo xtask bench [--quick]`; `cargo bench -p observer --bench churn -- --help`.

#![expect(clippy::cast_precision_loss, reason = "figures for display")]

mod baseline;
mod calibrate;
mod kstats;
mod machine_cpu;
mod programs;
mod reads;
mod report;
mod tcpstates;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use baseline::Counted;
use clap::Parser;
use kstats::Cost;
use machine_cpu::{BusySince, MachineCpu};
use observer::load::{contract, prog_stats};
use observer_testkit::{
    churn::{self as generator, KINDS, LISTENER_TRANSITIONS, Load, Made},
    daemon::{self, CpuTime},
    netns::NetNs,
    scrape::{Counters, Scraper},
};

#[derive(Parser, Clone)]
#[command(
    about = "observer's cost and losses under connection churn, against no tracer, \
                   tcpstates and a minimal ring-buffer program"
)]
struct Options {
    /// Seconds instead of minutes: one round of small phases, a smaller calibration, no
    /// second level.
    #[arg(long)]
    quick: bool,
    /// Churn threads of the main level (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Churn threads of the highest-churn level (default: two per CPU; 0: none).
    #[arg(long)]
    peak_threads: Option<usize>,
    /// Connections per second of the steady level: the load paced well below what the machine
    /// can make, so that a tracer's cost shows as CPU time rather than lost throughput
    /// (default 10,000, 0: no steady level; none with --quick unless given).
    #[arg(long)]
    steady_rate: Option<u64>,
    /// Connections per phase (default 120,000; 4,000 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(100..=250_000))]
    connections: Option<u64>,
    /// Rounds of alternating phases (default 5; 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=50))]
    rounds: Option<u64>,
    /// Tracers of the main level, in turn (default: all; tcpstates when installed).
    #[arg(long, value_delimiter = ',', value_parser = ["none", "observer", "programs", "hooks", "state_reads", "tcpstates", "baseline", "baseline_raw", "baseline_wake_each", "baseline_no_wakeup"])]
    tracers: Vec<String>,
    /// Longest a phase's load may run, seconds.
    #[arg(long, default_value_t = 20)]
    max_phase_secs: u64,
    /// The tracker benchmark's JSON (`cargo bench -p observer --bench tracker -- --output`).
    #[arg(long)]
    userspace: Option<PathBuf>,
    /// Where the figures are written as JSON (default: target/bench/bench.json in the
    /// workspace).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Ignored: cargo bench passes it.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The daemon, built by cargo for this benchmark.
const OBSERVER: &str = env!("CARGO_BIN_EXE_observer");

/// What is attached during a phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracer {
    None,
    Observer,
    /// The daemon's own programs, loaded and configured as it loads them, their records read
    /// and counted by the benchmark and nothing more: against `observer run`, what decoding and
    /// tracking add; against [`Tracer::Hooks`], what the programs' own work adds.
    Programs,
    /// `baseline` on the state tracepoint and a floor (reserve and submit, the timers filtered)
    /// on each of the daemon's other hooks: against `baseline`, what watching those hooks costs
    /// before any program's work.
    Hooks,
    /// Copies of the daemon's state program side by side, each leaving one of its reads out,
    /// beside the whole program: each read's cost on the same transitions.
    StateReads,
    Tcpstates,
    Baseline,
    BaselineRaw,
    BaselineWakeEach,
    BaselineNoWakeup,
}

impl Tracer {
    const fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Observer => "observer run",
            Self::Programs => "observer's programs",
            Self::Hooks => "observer's hooks",
            Self::StateReads => "state program reads",
            Self::Tcpstates => "tcpstates",
            Self::Baseline => "baseline",
            Self::BaselineRaw => "baseline, raw tp",
            Self::BaselineWakeEach => "baseline, wake each",
            Self::BaselineNoWakeup => "baseline, no wakeup",
        }
    }

    const fn key(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Observer => "observer",
            Self::Programs => "programs",
            Self::Hooks => "hooks",
            Self::StateReads => "state_reads",
            Self::Tcpstates => "tcpstates",
            Self::Baseline => "baseline",
            Self::BaselineRaw => "baseline_raw",
            Self::BaselineWakeEach => "baseline_wake_each",
            Self::BaselineNoWakeup => "baseline_no_wakeup",
        }
    }

    /// The observer-ebpf program attached in a baseline phase.
    const fn baseline_program(self) -> Option<&'static str> {
        match self {
            Self::Baseline => Some(contract::BASELINE),
            Self::BaselineRaw => Some(contract::BASELINE_RAW),
            Self::BaselineWakeEach => Some(contract::BASELINE_WAKE_EACH),
            Self::BaselineNoWakeup => Some(contract::BASELINE_NO_WAKEUP),
            Self::None
            | Self::Observer
            | Self::Programs
            | Self::Hooks
            | Self::StateReads
            | Self::Tcpstates => None,
        }
    }
}

/// The daemon's side of a phase.
#[derive(Clone, Copy, Debug)]
pub struct DaemonPhase {
    pub counters: Counters,
    /// By /proc/PID/stat, in clock ticks.
    pub cpu: CpuTime,
    /// Exact, by its CPU-time clock; `None` when it could not be read.
    pub run_ns: Option<u64>,
    /// Its main thread's (the event loop's), exact, by schedstat.
    pub main_thread_ns: Option<u64>,
    pub peak_rss_bytes: u64,
}

/// One phase's measurements.
#[derive(Clone, Debug)]
pub struct Phase {
    pub tracer: Tracer,
    pub threads: usize,
    /// The load's pace, connections/s of all threads, when it was paced.
    pub paced: Option<u64>,
    pub made: Made,
    pub daemon: Option<DaemonPhase>,
    pub tcpstates: Option<tcpstates::Received>,
    /// Records the benchmark's own reader counted: a baseline's, the floors', observer's
    /// programs' without the daemon.
    pub baseline_records: Option<u64>,
    /// Every program the tracer attached, over the phase.
    pub costs: Vec<Cost>,
    /// Observer phases: (old, new, expected, counted by the daemon) where they differ. Says
    /// which transitions went missing, or came from other traffic.
    pub pair_differences: Vec<(String, String, u64, u64)>,
    /// CPU time over the load: the machine's, and the load's and tracer's processes'.
    pub machine_cpu: MachineCpu,
    /// Timewait sockets the kernel made in the phase's namespace (`TcpExt: TW` + `TWKilled`),
    /// against which the daemon's count of their starts is checked.
    pub kernel_timewait: u64,
    /// Whether the kernel kept BPF run statistics (run counts and times) during the phase. They
    /// cost every program run two clock reads, which users do not pay: throughput is also
    /// measured without them.
    pub kernel_stats: bool,
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    if !observer::kernel::privileges::can_load_probes() {
        bail!("the benchmark loads eBPF programs and creates network namespaces: run it as root");
    }
    let connections = options
        .connections
        .unwrap_or(if options.quick { 4_000 } else { 120_000 });
    let rounds = options.rounds.unwrap_or(if options.quick { 1 } else { 5 });
    let max_time = Duration::from_secs(options.max_phase_secs);
    let have_tcpstates = std::path::Path::new(tcpstates::PATH).exists();
    if !have_tcpstates {
        eprintln!(
            "\n*** {} is not installed: the tcpstates phases are skipped \
             (`cargo xtask bench` installs Debian's libbpf-tools) ***\n",
            tcpstates::PATH
        );
    }
    // Read first: a missing or foreign file should fail before minutes of measuring.
    let userspace = options
        .userspace
        .as_deref()
        .map(report::Userspace::read)
        .transpose()?;

    remove_stale_namespaces();
    let stats = prog_stats::enable()?;
    let quiet = Quiet::now();
    eprintln!("bench: calibrating (each kind alone, at a low rate, with observer watch)");
    quiet.wait();
    let calibration = calibrate::run(OBSERVER, if options.quick { 50 } else { 500 })?;
    for c in calibration.iter().filter(|c| !c.matches()) {
        eprintln!(
            "\n*** calibration: {} connections do not make the transitions the generator \
             expects on this kernel: {:?}; RST events expected {}, seen {} ***\n",
            c.kind.name(),
            c.differences,
            c.resets_expected,
            c.resets_seen
        );
    }

    let levels = plan_levels(&options, have_tcpstates, connections);
    let phases = run_levels(&levels, rounds, max_time, &quiet, stats)?;

    let bench = report::Bench {
        finished: format!("{:.0}", jiff::Timestamp::now()),
        machine: report::Machine::here(),
        programs: program_names()?,
        quick: options.quick,
        rounds,
        connections,
        calibration,
        phases,
        userspace,
    };
    print!("{}", bench.table());
    let json = serde_json::to_string_pretty(&bench.json())?;
    // cargo runs benchmarks in the package's directory: default to the workspace's target.
    let output = options.output.unwrap_or_else(|| {
        let observer = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        observer
            .parent()
            .unwrap_or(observer)
            .join("target/bench/bench.json")
    });
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&output, json + "\n")
        .with_context(|| format!("writing {}", output.display()))?;
    println!("\nfigures as JSON: {}", output.display());
    Ok(())
}

/// The levels to run: the main one, the highest churn, the steady load.
fn plan_levels(options: &Options, have_tcpstates: bool, connections: u64) -> Vec<LevelPlan> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = options.threads.unwrap_or(cpus).clamp(1, 255);
    let peak_threads = if options.quick {
        0
    } else {
        options.peak_threads.unwrap_or(2 * cpus).min(255)
    };
    let mut tracers = vec![
        Tracer::None,
        Tracer::Observer,
        Tracer::Programs,
        Tracer::Hooks,
        Tracer::StateReads,
    ];
    if have_tcpstates {
        tracers.push(Tracer::Tcpstates);
    }
    tracers.extend([
        Tracer::Baseline,
        Tracer::BaselineRaw,
        Tracer::BaselineWakeEach,
        Tracer::BaselineNoWakeup,
    ]);
    if !options.tracers.is_empty() {
        tracers.retain(|t| options.tracers.iter().any(|k| k == t.key()));
    }
    // The baselines too, when they run: observer's loss of throughput is judged against the
    // classic one's, and the raw one shows what a raw tracepoint skips at this churn.
    let mut peak = vec![Tracer::None, Tracer::Observer];
    peak.extend(
        [Tracer::Baseline, Tracer::BaselineRaw]
            .into_iter()
            .filter(|t| tracers.contains(t)),
    );
    let mut levels = vec![LevelPlan {
        threads,
        paced: None,
        connections,
        tracers: tracers.clone(),
        kernel_stats: true,
    }];
    // Throughput as users run it: without the statistics, which cost observer's several
    // programs per transition more than the baseline's one (and every program on the timer
    // hooks, which run for every timer of the host): the steps between them too.
    let unmeasured: Vec<Tracer> = [
        Tracer::None,
        Tracer::Observer,
        Tracer::Programs,
        Tracer::Hooks,
        Tracer::Baseline,
    ]
    .into_iter()
    .filter(|t| tracers.contains(t))
    .collect();
    if [Tracer::None, Tracer::Observer, Tracer::Baseline]
        .iter()
        .all(|t| unmeasured.contains(t))
    {
        if stats_kept_on() {
            eprintln!(
                "\n*** kernel.bpf_stats_enabled is 1 on this host: the phases without BPF \
                 statistics are skipped ***\n"
            );
        } else {
            levels.push(LevelPlan {
                threads,
                paced: None,
                connections,
                tracers: unmeasured,
                kernel_stats: false,
            });
        }
    }
    if peak_threads > 0 && peak_threads != threads {
        levels.push(LevelPlan {
            threads: peak_threads,
            paced: None,
            connections,
            tracers: peak,
            kernel_stats: true,
        });
    }
    let steady_rate = options
        .steady_rate
        .unwrap_or(if options.quick { 0 } else { 10_000 });
    if steady_rate > 0 {
        // The tracers whose costs it compares; four seconds of load a phase.
        let steady: Vec<Tracer> = [Tracer::None, Tracer::Observer, Tracer::Baseline]
            .into_iter()
            .filter(|t| tracers.contains(t))
            .collect();
        levels.push(LevelPlan {
            threads,
            paced: Some(steady_rate),
            connections: (4 * steady_rate).min(connections.max(100)),
            tracers: steady,
            kernel_stats: true,
        });
    }
    levels
}

/// Whether the host keeps BPF statistics on whatever the benchmark does.
fn stats_kept_on() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() != "0")
}

/// One level to run: its load and its tracers.
struct LevelPlan {
    threads: usize,
    /// Connections/s of the whole load, when paced.
    paced: Option<u64>,
    connections: u64,
    tracers: Vec<Tracer>,
    /// BPF run statistics on during its phases (off: throughput only).
    kernel_stats: bool,
}

/// Every level's rounds of phases, in turn. `stats` keeps BPF statistics on; they are turned
/// off for a level without them, and on again after it.
fn run_levels(
    levels: &[LevelPlan],
    rounds: u64,
    max_time: Duration,
    quiet: &Quiet,
    stats: prog_stats::StatsEnabled,
) -> anyhow::Result<Vec<Phase>> {
    let mut phases = Vec::new();
    let mut stats = Some(stats);
    for level in levels {
        if !level.kernel_stats {
            stats = None;
        } else if stats.is_none() {
            stats = Some(prog_stats::enable()?);
        }
        let (threads, tracers) = (level.threads, &level.tracers);
        let load = Load {
            threads,
            connections: level.connections,
            max_time,
        };
        let order = phase_order(tracers, rounds);
        for (i, (round, tracer)) in order.iter().enumerate() {
            eprintln!(
                "bench: {threads} threads{}, round {}/{rounds}, phase {}/{}: {}",
                if level.kernel_stats {
                    ""
                } else {
                    ", no BPF statistics"
                },
                round + 1,
                i + 1,
                order.len(),
                tracer.name()
            );
            let phase = run_phase(
                *tracer,
                &load,
                level.paced,
                level.kernel_stats,
                *round,
                quiet,
            )?;
            eprintln!(
                "bench:   {} connections in {:.2} s ({:.0}/s){}",
                phase.made.connections(),
                phase.made.elapsed.as_secs_f64(),
                phase.made.connections_per_s(),
                if phase.made.stopped_by_time {
                    ", stopped by the time bound"
                } else {
                    ""
                }
            );
            phases.push(phase);
        }
    }
    Ok(phases)
}

/// The phases of a level, each with its round: every tracer's phase between two phases with
/// no tracer (when `none` is among the tracers), so that each is compared with the unobserved
/// phases right beside it and the machine's drift over minutes stays out of the ratio. The
/// tracers' order rotates by round.
fn phase_order(tracers: &[Tracer], rounds: u64) -> Vec<(u64, Tracer)> {
    let paired = tracers.contains(&Tracer::None);
    let observed: Vec<Tracer> = tracers
        .iter()
        .copied()
        .filter(|t| *t != Tracer::None)
        .collect();
    let mut order = Vec::new();
    for round in 0..rounds {
        if observed.is_empty() {
            order.push((round, Tracer::None));
            continue;
        }
        let start = usize::try_from(round).expect("few rounds") % observed.len();
        for i in 0..observed.len() {
            if paired {
                order.push((round, Tracer::None));
            }
            order.push((round, observed[(start + i) % observed.len()]));
        }
    }
    if paired && !observed.is_empty() {
        order.push((rounds - 1, Tracer::None));
    }
    order
}

/// One phase: a fresh namespace, the tracer attached, the load, the tracer's figures. `round`
/// rotates what depends on order within a phase.
fn run_phase(
    tracer: Tracer,
    load: &Load,
    paced: Option<u64>,
    kernel_stats: bool,
    round: u64,
    quiet: &Quiet,
) -> anyhow::Result<Phase> {
    quiet.wait();
    let ns = NetNs::new("bench").context("creating a network namespace")?;
    // The machine's CPU over the load's window, like its throughput: what a tracer does after
    // the load (a reader draining its last records, the bench polling the daemon) is not
    // counted, and is at most one read interval of the load.
    let run = |tracer_pid: Option<u32>| -> anyhow::Result<(Made, MachineCpu)> {
        let cpu = BusySince::now(tracer_pid);
        let per_thread = paced.map(|rate| rate.div_ceil(load.threads as u64));
        let made = ns.enter(|| generator::run_paced(load, None, per_thread))?;
        Ok((made, cpu.elapsed()))
    };
    let mut phase = Phase {
        tracer,
        threads: load.threads,
        paced,
        made: Made::default(),
        daemon: None,
        tcpstates: None,
        baseline_records: None,
        costs: Vec::new(),
        pair_differences: Vec::new(),
        machine_cpu: MachineCpu::default(),
        kernel_timewait: 0,
        kernel_stats,
    };
    match tracer {
        Tracer::None => (phase.made, phase.machine_cpu) = run(None)?,
        Tracer::Observer => {
            let daemon = daemon::Daemon::start(OBSERVER)?;
            let mut scraper = Scraper::connect(daemon.addr)?;
            // The scrape connection's own transitions land before the first scrape.
            std::thread::sleep(Duration::from_millis(300));
            let before = scraper.scrape()?;
            let programs = prog_stats::attached_by(daemon.pid())?;
            let cpu = daemon.cpu();
            let (run_ns, main_thread_ns) = (daemon.run_ns(), daemon.main_thread_run_ns());
            (phase.made, phase.machine_cpu) = run(Some(daemon.pid()))?;
            scraper.settle()?;
            // The programs' window ends inside the daemon's: a transition between the two
            // reads can only add to what the daemon counted, never pass for a loss.
            phase.costs = Cost::all_between(&programs, &prog_stats::attached_by(daemon.pid())?);
            std::thread::sleep(Duration::from_millis(300));
            let after = scraper.scrape()?;
            phase.daemon = Some(DaemonPhase {
                counters: after.counters().since(&before.counters()),
                cpu: daemon.cpu().since(&cpu),
                run_ns: run_ns
                    .zip(daemon.run_ns())
                    .map(|(before, after)| after - before),
                main_thread_ns: main_thread_ns
                    .zip(daemon.main_thread_run_ns())
                    .map(|(before, after)| after - before),
                peak_rss_bytes: daemon.peak_rss_bytes(),
            });
            phase.pair_differences = generator::pair_differences(
                &phase.made.pairs(),
                &before.kernel_pairs(),
                &after.kernel_pairs(),
            );
            scraper.close();
            daemon.stop()?;
        }
        Tracer::Tcpstates => {
            let t = tcpstates::Tcpstates::start()?;
            let programs = prog_stats::attached_by(t.pid())?;
            (phase.made, phase.machine_cpu) = run(Some(t.pid()))?;
            // Its output goes through a perf buffer and a pipe: let the last lines arrive.
            std::thread::sleep(Duration::from_secs(1));
            phase.costs = Cost::all_between(&programs, &prog_stats::attached_by(t.pid())?);
            phase.tcpstates = Some(t.finish(&phase.made.listener_ports)?);
        }
        Tracer::StateReads => {
            let copies = reads::Copies::attach(round)?;
            let before = copies.stats()?;
            (phase.made, phase.machine_cpu) = run(None)?;
            std::thread::sleep(Duration::from_millis(500));
            phase.costs = copies.costs_since(&before)?;
        }
        Tracer::Programs
        | Tracer::Hooks
        | Tracer::Baseline
        | Tracer::BaselineRaw
        | Tracer::BaselineWakeEach
        | Tracer::BaselineNoWakeup => {
            let b: Box<dyn Counted> = match tracer {
                Tracer::Programs => Box::new(programs::Programs::attach()?),
                Tracer::Hooks => Box::new(baseline::Baseline::attach_all_hooks()?),
                _ => Box::new(baseline::Baseline::attach(
                    tracer.baseline_program().expect("a baseline"),
                )?),
            };
            let (stats, records) = (b.stats()?, b.records());
            (phase.made, phase.machine_cpu) = run(None)?;
            std::thread::sleep(Duration::from_millis(500));
            phase.costs = b.costs_since(&stats)?;
            // Records of the last runs may still be on their way to the reader (it wakes at
            // least every 10 ms).
            std::thread::sleep(Duration::from_millis(200));
            phase.baseline_records = Some(b.records() - records);
        }
    }
    // The namespace is new: its counters began at zero with the phase.
    phase.kernel_timewait = ns
        .timewait_sockets_made()
        .context("reading TcpExt TW and TWKilled in the load's namespace")?;
    Ok(phase)
}

/// Deletes the namespaces an interrupted run of this benchmark left behind (a signal skips
/// their cleanup): `obs-PID-N-bench` and `obs-PID-N-calibrate` of processes that are gone.
fn remove_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for name in entries.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
        let parts: Vec<&str> = name.split('-').collect();
        if let ["obs", pid, _, "bench" | "calibrate"] = parts.as_slice()
            && pid.parse::<u32>().is_ok()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            eprintln!("bench: deleting network namespace {name}, left by an interrupted run");
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &name])
                .status();
        }
    }
}

/// Deleting a phase's namespace frees its timewait sockets asynchronously, and each one's
/// timer is cancelled then: a phase starts only once the host is back to its own count.
struct Quiet {
    timewait_before: u64,
}

impl Quiet {
    fn now() -> Self {
        Self {
            timewait_before: timewait_sockets(),
        }
    }

    fn wait(&self) {
        let start = Instant::now();
        while timewait_sockets() > self.timewait_before + 1_000 {
            if start.elapsed() > Duration::from_secs(30) {
                eprintln!(
                    "bench: warning: {} timewait sockets remain from earlier phases after 30 s",
                    timewait_sockets()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Timewait sockets of the whole host (all namespaces), from the slab allocator.
fn timewait_sockets() -> u64 {
    std::fs::read_to_string("/proc/slabinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("tw_sock_TCP"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// The full names of the eBPF object's programs (the kernel keeps 15 bytes of a name).
fn program_names() -> anyhow::Result<Vec<String>> {
    let object = aya_obj::Object::parse(observer::load::object())
        .map_err(|e| anyhow::anyhow!("parsing the eBPF object: {e}"))?;
    Ok(object.programs.into_keys().collect())
}

/// Transitions of the load made by one connection of each kind in turn, on average.
fn transitions_per_connection() -> f64 {
    let sum: usize = KINDS.iter().map(|k| k.transitions().len()).sum();
    sum as f64 / KINDS.len() as f64
}

/// Listener transitions per worker thread.
const fn listener_transitions() -> usize {
    LISTENER_TRANSITIONS.len()
}
