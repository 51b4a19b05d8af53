//! The whole machine's CPU time, from `/proc/stat`: a second measure of what a tracer costs,
//! steadier than throughput when the load leaves CPUs idle for part of a phase (the CPU time a
//! connection takes does not depend on how well the load's threads kept every CPU busy).

use std::time::Instant;

/// Clock ticks per second of `/proc/stat` (`USER_HZ`, 100 on every Linux architecture).
const TICKS_PER_S: f64 = 100.0;

/// Busy CPU time of all CPUs since a start.
pub struct BusySince {
    busy_ticks: u64,
    start: Instant,
}

impl BusySince {
    pub fn now() -> Self {
        Self {
            busy_ticks: busy_ticks(),
            start: Instant::now(),
        }
    }

    /// CPU seconds spent busy since `now()`, summed over CPUs, and the wall seconds elapsed.
    pub fn elapsed(&self) -> MachineCpu {
        #[expect(clippy::cast_precision_loss, reason = "ticks of a phase")]
        MachineCpu {
            busy_secs: busy_ticks().saturating_sub(self.busy_ticks) as f64 / TICKS_PER_S,
            wall_secs: self.start.elapsed().as_secs_f64(),
        }
    }
}

/// The machine's CPU over a phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct MachineCpu {
    pub busy_secs: f64,
    pub wall_secs: f64,
}

/// Ticks every CPU spent neither idle nor waiting for I/O, nor stolen by a hypervisor: user
/// (guest included), nice, system, irq and softirq, from the first line of `/proc/stat`.
fn busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    [0, 1, 2, 5, 6].iter().filter_map(|i| ticks.get(*i)).sum()
}
