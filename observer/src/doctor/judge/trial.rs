//! The trial load: the programs loaded and attached as `observer watch` would, which has the
//! last word on what this kernel and this process allow.

use crate::{
    doctor::check::{Check, Feature},
    load::{Availability, Features},
};

pub(super) fn trial_check(trial: &Result<Features, String>) -> Check {
    const NAME: &str = "trial load";
    let features = match trial {
        Ok(features) => features,
        Err(error) => {
            return Check::fail(
                NAME,
                error.clone(),
                "observer cannot run here as this process: loading or attaching the programs \
                 failed",
                "follow the error's advice; the failed checks above name what is missing",
            );
        }
    };
    let mut attached = vec!["transitions"];
    let mut off = Vec::new();
    let mut degrades = Vec::new();
    let mut consider = |availability: &Availability, what: &'static str, feature| match availability
    {
        Availability::Active => attached.push(what),
        Availability::Unavailable(why) => {
            off.push(format!("{what} ({why})"));
            degrades.push(feature);
        }
    };
    consider(&features.resets, "RSTs", Feature::Resets);
    consider(&features.timewait, "TIME_WAIT", Feature::Timewait);
    consider(
        &features.closed_before_accept,
        "closed-before-accept detection",
        Feature::ClosedBeforeAccept,
    );
    consider(
        &features.retransmits,
        "retransmissions",
        Feature::Retransmits,
    );
    consider(
        &features.socket_errors,
        "connection errors",
        Feature::SocketErrors,
    );
    consider(&features.cgroups, "socket cgroups", Feature::Cgroups);
    if features.resets.is_active() && features.reset_reasons {
        attached.push("RST reasons");
    }
    let done = format!(
        "loaded and attached, then detached: {}",
        attached.join(", ")
    );
    if off.is_empty() {
        Check::ok(NAME, done)
    } else {
        Check::warn(
            NAME,
            done,
            format!("off on this kernel: {}", off.join("; ")),
            "see the checks above for each",
            &degrades,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::check::Status;
    use crate::doctor::testing::costs;

    #[test]
    fn the_trial_reports_features_the_kernel_switched_off() {
        let features = Features {
            timewait: Availability::Unavailable("no tw_timer_handler".to_owned()),
            ..Features::default()
        };
        let check = trial_check(&Ok(features));
        assert_eq!(check.status, Status::Warn);
        assert!(
            check
                .finding
                .contains("transitions, RSTs, closed-before-accept")
        );
        assert_eq!(
            costs(&check),
            "off on this kernel: TIME_WAIT (no tw_timer_handler)"
        );
        assert_eq!(check.degrades, [Feature::Timewait]);
        let failed = trial_check(&Err("loading the eBPF programs failed".to_owned()));
        assert_eq!(failed.status, Status::Fail);
        assert_eq!(failed.finding, "loading the eBPF programs failed");
    }

    #[test]
    fn rst_reasons_are_attached_only_with_the_rsts() {
        let with = trial_check(&Ok(Features {
            reset_reasons: true,
            ..Features::default()
        }));
        assert_eq!(with.status, Status::Ok);
        assert_eq!(
            with.finding,
            "loaded and attached, then detached: transitions, RSTs, TIME_WAIT, \
             closed-before-accept detection, retransmissions, connection errors, socket cgroups, \
             RST reasons"
        );
        let without = trial_check(&Ok(Features {
            reset_reasons: true,
            resets: Availability::Unavailable("no tcp:tcp_send_reset".to_owned()),
            ..Features::default()
        }));
        assert!(!without.finding.contains("RST"), "{without:?}");
        assert_eq!(
            costs(&without),
            "off on this kernel: RSTs (no tcp:tcp_send_reset)"
        );
        assert_eq!(without.degrades, [Feature::Resets]);
    }

    #[test]
    fn every_feature_switched_off_is_listed_and_degraded() {
        let off = |why: &str| Availability::Unavailable(why.to_owned());
        let check = trial_check(&Ok(Features {
            cgroups: off("e"),
            resets: Availability::Active,
            reset_reasons: false,
            timewait: off("a"),
            closed_before_accept: off("b"),
            retransmits: off("c"),
            socket_errors: off("d"),
        }));
        assert_eq!(check.status, Status::Warn);
        assert_eq!(
            check.finding,
            "loaded and attached, then detached: transitions, RSTs"
        );
        assert_eq!(
            costs(&check),
            "off on this kernel: TIME_WAIT (a); closed-before-accept detection (b); \
             retransmissions (c); connection errors (d); socket cgroups (e)"
        );
        assert_eq!(
            check.degrades,
            [
                Feature::Timewait,
                Feature::ClosedBeforeAccept,
                Feature::Retransmits,
                Feature::SocketErrors,
                Feature::Cgroups
            ]
        );
    }
}
