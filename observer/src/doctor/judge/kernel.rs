//! The kernel itself: its version, its configuration, its settings, and the symbol the timer
//! programs filter on.

use super::{COST_TIMEWAIT, FIX_NEW_KERNEL};
use crate::{
    doctor::{
        check::{Check, Feature},
        kernel_names::TW_TIMER_HANDLER,
    },
    kernel::{kallsyms::KallsymsError, tick_rate::TickRate},
};

/// `(major, minor)` of a release such as `6.18.44-fc-v657` or `5.15.0-91-generic`.
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut numbers = release.split(|c: char| !c.is_ascii_digit());
    let major = numbers.next()?.parse().ok()?;
    let minor = numbers.next()?.parse().ok()?;
    Some((major, minor))
}

pub(super) fn kernel_check(release: &str) -> Check {
    const NAME: &str = "kernel";
    let Some(version) = parse_release(release) else {
        return Check::warn(
            NAME,
            format!("release {release:?} is not a version this check can read"),
            "what this kernel lacks cannot be told from its version; the trial load below \
             has the last word",
            "none needed if the trial load succeeds",
            &[],
        );
    };
    if version < (5, 8) {
        Check::fail(
            NAME,
            format!("{release}: older than 5.8"),
            "observer cannot run: the kernel has no BPF ring buffer (Linux 5.8), through which \
             every event reaches the daemon, nor CAP_BPF and CAP_PERFMON",
            "upgrade to Linux 5.8 or newer (5.12+ also counts skipped program runs; 6.10+ says \
             why each RST was sent)",
        )
    } else if version < (5, 12) {
        Check::warn(
            NAME,
            format!("{release}: has the BPF ring buffer (5.8+), older than 5.12"),
            "the kernel does not count the runs of a program it skips while another tracing \
             program runs on the same CPU (`recursion_misses`, Linux 5.12): events lost that \
             way are missing from the loss counters",
            "upgrade to Linux 5.12 or newer",
            &[Feature::SkippedRuns],
        )
    } else {
        Check::ok(
            NAME,
            format!("{release}: BPF ring buffer (5.8+), skipped program runs counted (5.12+)"),
        )
    }
}

pub(super) fn kallsyms_check(
    found: &Result<u64, KallsymsError>,
    kptr_restrict: Option<i64>,
    perf_event_paranoid: Option<i64>,
) -> Check {
    const NAME: &str = TW_TIMER_HANDLER;
    let costs = format!(
        "{COST_TIMEWAIT} (the timer programs pick out timewait timers by this callback's \
         address)"
    );
    match found {
        Ok(addr) => Check::ok(NAME, format!("at {addr:#x} in /proc/kallsyms")),
        Err(KallsymsError::Hidden(_)) => {
            let shown = |v: Option<i64>| v.map_or_else(|| "unknown".to_owned(), |v| v.to_string());
            let fix = if kptr_restrict.is_some_and(|v| v >= 2) {
                "set kernel.kptr_restrict to 1 (`sudo sysctl -w kernel.kptr_restrict=1`; at 2 no \
                 process sees kernel addresses), and run with CAP_SYSLOG (root has it)"
                    .to_owned()
            } else if kptr_restrict == Some(0) && perf_event_paranoid.is_some_and(|v| v > 1) {
                "run with CAP_SYSLOG (root has it), or set kernel.perf_event_paranoid to 1 \
                 (`sudo sysctl -w kernel.perf_event_paranoid=1`), which shows kernel addresses \
                 to every process"
                    .to_owned()
            } else {
                "run with CAP_SYSLOG (root has it)".to_owned()
            };
            Check::warn(
                NAME,
                format!(
                    "/proc/kallsyms shows it at address 0 to this process \
                     (kernel.kptr_restrict={}, kernel.perf_event_paranoid={})",
                    shown(kptr_restrict),
                    shown(perf_event_paranoid)
                ),
                costs,
                fix,
                &[Feature::Timewait],
            )
        }
        Err(KallsymsError::Missing(_)) => Check::warn(
            NAME,
            "not in /proc/kallsyms: this kernel's timewait timer has another callback",
            costs,
            FIX_NEW_KERNEL,
            &[Feature::Timewait],
        ),
        Err(e @ KallsymsError::Read(_)) => Check::warn(
            NAME,
            e.to_string(),
            costs,
            "mount procfs at /proc",
            &[Feature::Timewait],
        ),
    }
}

pub(super) fn hz_check(hz: Result<&TickRate, &String>) -> Check {
    const NAME: &str = "CONFIG_HZ";
    match hz {
        Ok(rate) => Check::ok(
            NAME,
            format!(
                "{} ({}): TIME_WAIT lines say when the timewait socket ends",
                rate.hz, rate.source
            ),
        ),
        Err(why) => Check::warn(
            NAME,
            format!("unknown: {why}"),
            "TIME_WAIT entries are shown without their scheduled length (no `ends in 1m00s`, \
             `timewait_timeout_ns` is null): the timer counts in jiffies",
            "`sudo modprobe configs` (gives /proc/config.gz on kernels built with \
             CONFIG_IKCONFIG), install this kernel's config as /boot/config-$(uname -r), or \
             let observer read /proc/timer_list (root, or CAP_DAC_READ_SEARCH; containers may \
             mask it)",
            &[Feature::TimewaitTimeouts],
        ),
    }
}

pub(super) fn bpf_stats_check(value: Option<i64>) -> Check {
    const NAME: &str = "kernel.bpf_stats_enabled";
    Check::info(
        NAME,
        match value {
            Some(0) => {
                "0: BPF programs' run time and count are not measured (`bpftool prog` shows \
                 none for observer's); its loss counters do not depend on it"
            }
            Some(_) => {
                "on: the kernel times every BPF program run, a small cost per run; observer \
                 does not need it"
            }
            None => "not present; observer does not need it",
        },
    )
}

pub(super) fn unprivileged_bpf_check(value: Option<i64>) -> Check {
    const NAME: &str = "kernel.unprivileged_bpf_disabled";
    let state = match value {
        Some(0) => "0: unprivileged users may use bpf()",
        Some(1) => "1: unprivileged bpf() is off until reboot",
        Some(2) => "2: unprivileged bpf() is off",
        Some(_) => "unprivileged bpf() is off",
        None => "not present",
    };
    Check::info(
        NAME,
        format!(
            "{state}; changes nothing for observer, whose tracing programs need CAP_BPF and \
             CAP_PERFMON either way"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::check::Status;
    use crate::doctor::testing::{costs, fix};
    use crate::kernel::tick_rate::TickRateSource;

    #[test]
    fn release_strings_compare_by_major_and_minor() {
        assert_eq!(parse_release("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(parse_release("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_release("6.1"), Some((6, 1)));
        assert_eq!(parse_release("6.10.0-rc1"), Some((6, 10)));
        assert_eq!(parse_release("unknown"), None);
        assert!(parse_release("5.7.19").unwrap() < (5, 8));
        assert!(parse_release("5.10.0").unwrap() < (5, 12));
        assert!(parse_release("5.10.0").unwrap() >= (5, 8));
        // 5.10 is older than 5.8 as a string, not as a version.
        assert!(parse_release("5.10.0").unwrap() > parse_release("5.8.0").unwrap());

        assert_eq!(kernel_check("4.19.0-25-amd64").status, Status::Fail);
        assert!(costs(&kernel_check("5.4.0")).contains("no BPF ring buffer"));
        let mid = kernel_check("5.10.0-28-amd64");
        assert_eq!(mid.status, Status::Warn);
        assert!(costs(&mid).contains("recursion_misses"));
        assert_eq!(mid.degrades, [Feature::SkippedRuns]);
        assert_eq!(kernel_check("5.12.0").status, Status::Ok);
        assert_eq!(kernel_check("garbage").status, Status::Warn);
    }

    #[test]
    fn hidden_kernel_addresses_say_which_setting_to_change() {
        let hidden = || Err(KallsymsError::Hidden(TW_TIMER_HANDLER.to_owned()));
        let paranoid = kallsyms_check(&hidden(), Some(0), Some(2));
        assert_eq!(paranoid.status, Status::Warn);
        assert!(paranoid.finding.contains("kptr_restrict=0"));
        assert!(costs(&paranoid).contains("TIME_WAIT is not observed"));
        assert!(fix(&paranoid).contains("perf_event_paranoid to 1"));
        let strict = kallsyms_check(&hidden(), Some(2), Some(2));
        assert!(fix(&strict).contains("kptr_restrict to 1"));
        let restricted = kallsyms_check(&hidden(), Some(1), Some(2));
        assert_eq!(fix(&restricted), "run with CAP_SYSLOG (root has it)");
        let missing = kallsyms_check(
            &Err(KallsymsError::Missing(TW_TIMER_HANDLER.to_owned())),
            Some(0),
            None,
        );
        assert_eq!(fix(&missing), FIX_NEW_KERNEL);
    }

    #[test]
    fn unknown_hz_costs_the_timeout_lengths_only() {
        let why = "no kernel configuration is readable, and HZ could not be measured".to_owned();
        let check = hz_check(Err(&why));
        assert_eq!(check.status, Status::Warn);
        assert!(check.finding.contains("could not be measured"));
        assert!(costs(&check).contains("without their scheduled length"));
        assert!(fix(&check).contains("modprobe configs"));
        assert_eq!(check.degrades, [Feature::TimewaitTimeouts]);
        let config = TickRate {
            hz: 1000,
            source: TickRateSource::KernelConfig,
        };
        assert!(
            hz_check(Ok(&config))
                .finding
                .starts_with("1000 (from the kernel's configuration)")
        );
        let measured = TickRate {
            hz: 250,
            source: TickRateSource::Measured,
        };
        let check = hz_check(Ok(&measured));
        assert_eq!(check.status, Status::Ok);
        assert!(
            check
                .finding
                .starts_with("250 (measured: jiffies against the monotonic clock")
        );
    }

    #[test]
    fn the_ring_buffer_and_skipped_runs_draw_the_version_lines() {
        assert_eq!(kernel_check("5.7.19").status, Status::Fail);
        assert_eq!(kernel_check("5.8.0").status, Status::Warn);
        assert_eq!(kernel_check("5.11.22").status, Status::Warn);
        assert_eq!(kernel_check("5.12.0").status, Status::Ok);
        assert_eq!(kernel_check("6.1").status, Status::Ok);
        // An unreadable release degrades nothing by itself: the trial load decides.
        let garbage = kernel_check("garbage");
        assert!(garbage.degrades.is_empty());
        assert_eq!(fix(&garbage), "none needed if the trial load succeeds");
    }

    #[test]
    fn an_unreadable_kallsyms_says_to_mount_procfs() {
        let unreadable = kallsyms_check(
            &Err(KallsymsError::Read(std::io::Error::from(
                std::io::ErrorKind::PermissionDenied,
            ))),
            None,
            None,
        );
        assert_eq!(unreadable.status, Status::Warn);
        assert!(unreadable.finding.starts_with("reading /proc/kallsyms"));
        assert_eq!(fix(&unreadable), "mount procfs at /proc");
        assert_eq!(unreadable.degrades, [Feature::Timewait]);
        // Unknown sysctls are shown as such, and the advice falls back to CAP_SYSLOG.
        let unknown = kallsyms_check(
            &Err(KallsymsError::Hidden(TW_TIMER_HANDLER.to_owned())),
            None,
            None,
        );
        assert!(
            unknown
                .finding
                .contains("(kernel.kptr_restrict=unknown, kernel.perf_event_paranoid=unknown)")
        );
        assert_eq!(fix(&unknown), "run with CAP_SYSLOG (root has it)");
    }

    #[test]
    fn bpf_sysctls_are_informational_whatever_their_value() {
        for value in [None, Some(0), Some(1), Some(2), Some(7)] {
            for check in [bpf_stats_check(value), unprivileged_bpf_check(value)] {
                assert_eq!(check.status, Status::Info, "{check:?}");
                assert!(check.costs.is_none() && check.fix.is_none(), "{check:?}");
            }
        }
        assert!(bpf_stats_check(Some(1)).finding.starts_with("on: "));
        assert!(bpf_stats_check(None).finding.starts_with("not present"));
        assert!(
            unprivileged_bpf_check(Some(7))
                .finding
                .starts_with("unprivileged bpf() is off; changes nothing")
        );
        assert!(
            unprivileged_bpf_check(Some(0))
                .finding
                .starts_with("0: unprivileged users may use bpf()")
        );
    }
}
