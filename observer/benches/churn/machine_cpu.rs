//! The whole machine's CPU time, from `/proc/stat`: a second measure of what a tracer costs,
//! steadier than throughput when the load leaves CPUs idle for part of a phase (the CPU time a
//! connection takes does not depend on how well the load's threads kept every CPU busy).

use std::time::Instant;

/// Clock ticks per second of `/proc/stat` (`USER_HZ`, 100 on every Linux architecture).
const TICKS_PER_S: f64 = 100.0;

/// Busy CPU time of all CPUs since a start.
pub struct BusySince {
    ticks: Ticks,
    start: Instant,
}

impl BusySince {
    pub fn now() -> Self {
        Self {
            ticks: Ticks::now(),
            start: Instant::now(),
        }
    }

    /// CPU seconds spent busy and stolen since `now()`, summed over CPUs, and the wall seconds
    /// elapsed.
    #[expect(clippy::cast_precision_loss, reason = "ticks of a phase")]
    pub fn elapsed(&self) -> MachineCpu {
        let now = Ticks::now();
        let secs = |a: u64, b: u64| a.saturating_sub(b) as f64 / TICKS_PER_S;
        MachineCpu {
            busy: secs(now.busy, self.ticks.busy),
            stolen: secs(now.stolen, self.ticks.stolen),
            wall: self.start.elapsed().as_secs_f64(),
        }
    }
}

/// The machine's CPU over a phase.
#[derive(Clone, Copy, Debug, Default)]
/// Seconds of CPU time, summed over CPUs, and of wall time.
pub struct MachineCpu {
    pub busy: f64,
    /// Time the hypervisor ran something else on our CPUs: a phase with much of it was slowed
    /// by the host, not by its tracer.
    pub stolen: f64,
    pub wall: f64,
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
