//! CPU time over a phase's load, two ways: the whole machine's, from `/proc/stat`, and that of
//! the processes doing the work (this benchmark's load and readers, and the tracer's own
//! process), from their `/proc/PID/stat`. A second measure of what a tracer costs, beside
//! throughput: the CPU time a connection takes does not depend on how well the load's threads
//! kept every CPU busy.
//!
//! `/proc/stat` samples each CPU at every tick: right when the load keeps the CPUs busy, but a
//! paced load, busy in bursts shorter than a tick, is mostly counted as idle (here a loopback
//! connection a millisecond showed 30 ms of 450 the process itself used). The processes' time is
//! exact (the scheduler's, scaled to ticks), but leaves out kernel threads: what the kernel does
//! for the load in softirq context off its threads, and the cleanup of earlier phases.

use std::time::Instant;

use observer_testkit::daemon::cpu_secs;

/// Clock ticks per second of `/proc/stat` (`USER_HZ`, 100 on every Linux architecture).
const TICKS_PER_S: f64 = 100.0;

/// CPU time since a start.
pub struct BusySince {
    ticks: Ticks,
    processes: f64,
    tracer_pid: Option<u32>,
    start: Instant,
}

impl BusySince {
    /// From now, counting `tracer_pid`'s CPU beside this process's.
    pub fn now(tracer_pid: Option<u32>) -> Self {
        Self {
            ticks: Ticks::now(),
            processes: processes_cpu(tracer_pid),
            tracer_pid,
            start: Instant::now(),
        }
    }

    #[expect(clippy::cast_precision_loss, reason = "ticks of a phase")]
    pub fn elapsed(&self) -> MachineCpu {
        let now = Ticks::now();
        let secs = |a: u64, b: u64| a.saturating_sub(b) as f64 / TICKS_PER_S;
        MachineCpu {
            busy: secs(now.busy, self.ticks.busy),
            stolen: secs(now.stolen, self.ticks.stolen),
            processes: processes_cpu(self.tracer_pid) - self.processes,
            wall: self.start.elapsed().as_secs_f64(),
        }
    }
}

/// Seconds of CPU time, summed over CPUs, and of wall time, over a phase's load.
#[derive(Clone, Copy, Debug, Default)]
pub struct MachineCpu {
    /// Every CPU's busy time, by `/proc/stat`.
    pub busy: f64,
    /// Time the hypervisor ran something else on our CPUs: a phase with much of it was slowed
    /// by the host, not by its tracer.
    pub stolen: f64,
    /// This process's CPU (the load, the baselines' readers) and the tracer process's.
    pub processes: f64,
    pub wall: f64,
}

fn processes_cpu(tracer_pid: Option<u32>) -> f64 {
    cpu_secs(std::process::id()) + tracer_pid.map_or(0.0, cpu_secs)
}

/// Ticks of all CPUs from the first line of `/proc/stat`.
struct Ticks {
    /// Neither idle nor waiting for I/O, nor stolen: user (guest included), nice, system, irq
    /// and softirq.
    busy: u64,
    stolen: u64,
}

impl Ticks {
    fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<u64> = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect();
        let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal ...
        Self {
            busy: at(0) + at(1) + at(2) + at(5) + at(6),
            stolen: at(7),
        }
    }
}
