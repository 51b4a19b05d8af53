//! The kernel's timer frequency (HZ): timewait timers count in jiffies, and a TIME_WAIT entry's
//! scheduled length is `jiffies / HZ`.
//!
//! From the kernel's configuration when it is readable; otherwise measured, by reading jiffies
//! and the monotonic clock from /proc/timer_list twice (virtual machines and containers often
//! have no /boot/config-* and no /proc/config.gz).

use std::{fmt, time::Duration};

use super::kernel_config;

/// Where [`TickRate::hz`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TickRateSource {
    /// `CONFIG_HZ` in /proc/config.gz or /boot/config-RELEASE.
    KernelConfig,
    /// jiffies counted against the monotonic clock over a short interval.
    Measured,
}

impl fmt::Display for TickRateSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::KernelConfig => "from the kernel's configuration",
            Self::Measured => "measured: jiffies against the monotonic clock in /proc/timer_list",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickRate {
    pub hz: u32,
    pub source: TickRateSource,
}

#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    #[error("/proc/timer_list is unreadable ({0})")]
    Unreadable(#[from] std::io::Error),
    #[error("/proc/timer_list has no `now at` and `jiffies:` lines")]
    Malformed,
    #[error("the monotonic clock did not advance between two readings of /proc/timer_list")]
    NoTimePassed,
    #[error("jiffies advanced at {0:.1} Hz, which is no CONFIG_HZ choice")]
    NotAChoice(f64),
}

#[derive(Debug, thiserror::Error)]
#[error("no kernel configuration is readable, and HZ could not be measured: {0}")]
pub struct TickRateError(#[from] pub MeasureError);

/// One reading of the kernel's clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSample {
    /// CLOCK_MONOTONIC, as /proc/timer_list's `now at`.
    pub mono_ns: u64,
    pub jiffies: u64,
}

/// The frequencies Linux can be built with (kernel/Kconfig.hz, used by x86, arm64, riscv,
/// powerpc and s390). Wide apart: a reading off by a tick still names one of them.
const HZ_CHOICES: [u32; 4] = [100, 250, 300, 1000];

/// How far a measured rate may be from the choice it names. Over [`MEASURE_FOR`] a reading
/// can be off by one tick at either end: 2 / 0.25 s = 8 Hz, 3.2% at HZ=250.
const TOLERANCE: f64 = 0.04;

/// Long enough that one tick of error is well inside [`TOLERANCE`] at HZ=100 or more.
pub const MEASURE_FOR: Duration = Duration::from_millis(250);

/// The kernel's configuration when readable, else a measurement (which sleeps
/// [`MEASURE_FOR`]).
pub fn tick_rate() -> Result<TickRate, TickRateError> {
    if let Some(hz) = kernel_config::hz() {
        return Ok(TickRate {
            hz,
            source: TickRateSource::KernelConfig,
        });
    }
    Ok(TickRate {
        hz: measure()?,
        source: TickRateSource::Measured,
    })
}

fn measure() -> Result<u32, MeasureError> {
    let read = || -> Result<ClockSample, MeasureError> {
        parse_timer_list(&std::fs::read_to_string("/proc/timer_list")?)
            .ok_or(MeasureError::Malformed)
    };
    let first = read()?;
    std::thread::sleep(MEASURE_FOR);
    hz_from_samples(first, read()?)
}

/// `now at N nsecs` and the first `jiffies: N` of /proc/timer_list.
#[must_use]
pub fn parse_timer_list(text: &str) -> Option<ClockSample> {
    let mono_ns = text.lines().find_map(|l| {
        l.strip_prefix("now at ")?
            .strip_suffix(" nsecs")?
            .trim()
            .parse()
            .ok()
    })?;
    let jiffies = text
        .lines()
        .find_map(|l| l.strip_prefix("jiffies:")?.trim().parse().ok())?;
    Some(ClockSample { mono_ns, jiffies })
}

/// The CONFIG_HZ choice that the rate of jiffies between two readings names.
pub fn hz_from_samples(first: ClockSample, second: ClockSample) -> Result<u32, MeasureError> {
    let elapsed_ns = second.mono_ns.saturating_sub(first.mono_ns);
    if elapsed_ns == 0 {
        return Err(MeasureError::NoTimePassed);
    }
    #[expect(
        clippy::cast_precision_loss,
        reason = "a rate over a fraction of a second"
    )]
    let rate = second.jiffies.wrapping_sub(first.jiffies) as f64 * 1e9 / elapsed_ns as f64;
    HZ_CHOICES
        .into_iter()
        .find(|&hz| (rate - f64::from(hz)).abs() <= f64::from(hz) * TOLERANCE)
        .ok_or(MeasureError::NotAChoice(rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn at(mono_ns: u64, jiffies: u64) -> ClockSample {
        ClockSample { mono_ns, jiffies }
    }

    #[test]
    fn the_rate_of_jiffies_names_the_frequency() {
        let start = at(13_378_594_040_355, 4_298_236_908);
        let after = |ms: u64, ticks: u64| at(start.mono_ns + ms * 1_000_000, start.jiffies + ticks);
        assert_eq!(hz_from_samples(start, after(250, 62)).unwrap(), 250);
        // One tick off at either end still names the same frequency.
        assert_eq!(hz_from_samples(start, after(250, 64)).unwrap(), 250);
        assert_eq!(hz_from_samples(start, after(250, 61)).unwrap(), 250);
        assert_eq!(hz_from_samples(start, after(250, 25)).unwrap(), 100);
        assert_eq!(hz_from_samples(start, after(250, 76)).unwrap(), 300);
        assert_eq!(hz_from_samples(start, after(251, 250)).unwrap(), 1000);
    }

    #[test]
    fn a_rate_that_is_no_choice_is_refused() {
        let start = at(1_000_000_000, 100);
        assert!(matches!(
            hz_from_samples(start, at(1_250_000_000, 100 + 44)),
            Err(MeasureError::NotAChoice(r)) if (r - 176.0).abs() < 0.1
        ));
        // jiffies that did not move (a stopped tick): 0 Hz.
        assert!(matches!(
            hz_from_samples(start, at(1_250_000_000, 100)),
            Err(MeasureError::NotAChoice(_))
        ));
        assert!(matches!(
            hz_from_samples(start, start),
            Err(MeasureError::NoTimePassed)
        ));
    }

    #[test]
    fn jiffies_wrap_around() {
        let start = at(0, u64::MAX - 9);
        assert_eq!(hz_from_samples(start, at(250_000_000, 52)).unwrap(), 250);
    }

    #[test]
    fn timer_list_gives_now_and_jiffies() {
        let text = "Timer List Version: v0.10\nHRTIMER_MAX_CLOCK_BASES: 8\n\
                    now at 13378581516581 nsecs\n\ncpu: 0\n  .idle_jiffies   : 4298236672\n\
                    jiffies: 4298236908\n  .last_jiffies   : 1\njiffies: 4298236999\n";
        assert_eq!(
            parse_timer_list(text),
            Some(at(13_378_581_516_581, 4_298_236_908))
        );
        assert_eq!(parse_timer_list("now at 5 nsecs\n"), None);
        assert_eq!(parse_timer_list(""), None);
    }
}
