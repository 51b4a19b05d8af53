//! What the programs attach to and read through: tracefs, kernel BTF, each tracepoint and its
//! format, and whether RSTs sent say why.

use super::{COST_CLOSED_BEFORE_ACCEPT, COST_NETNS, COST_TIMEWAIT, FIX_NEW_KERNEL};
use crate::{
    doctor::{
        check::{Check, Feature},
        facts::{BtfFact, Presence, TracefsFact},
        kernel_names::{Role, Tracepoint},
    },
    event::{ResetDirection, RetransmitKind},
    kernel::{btf::VMLINUX_BTF, tracefs},
};

const COST_NO_REASON: &str = "RSTs sent are classified from the socket's history only: an \
     abortive close is still named `abortive_close`, but so is a close with unread data (both \
     close an open socket, then reset); FIN_WAIT2 timeouts, orphan pressure, timeouts and \
     invalid segments all count as `other`, and `reason` is null. These kernels (before 6.10) \
     also trace no RST sent without a socket: a connection refused, or a segment for a \
     connection already gone, shows only on the side that receives the RST (`refused`), with \
     no `no_socket` line or count";
const FIX_BTF: &str = "a kernel built with CONFIG_DEBUG_INFO_BTF=y";

pub(super) fn tracefs_check(fact: &TracefsFact) -> Check {
    const NAME: &str = "tracefs";
    const COSTS: &str = "observer cannot run: it reads each tracepoint's layout from tracefs \
         and attaches its programs through it";
    match fact {
        TracefsFact::Readable(path) => {
            Check::ok(NAME, format!("mounted at {}, readable", path.display()))
        }
        TracefsFact::MountedNow(path) => Check::ok(
            NAME,
            format!(
                "was not mounted; mounted it at {}, as observer does at start",
                path.display()
            ),
        ),
        TracefsFact::Unreadable { path, error } => Check::fail(
            NAME,
            format!("mounted at {}, but unreadable: {error}", path.display()),
            COSTS,
            "run as root: tracefs is readable by root only (or with CAP_DAC_READ_SEARCH)",
        ),
        TracefsFact::NotMounted(error) => Check::fail(
            NAME,
            format!(
                "not mounted at {} or {}, and mounting it failed: {error}",
                tracefs::TRACEFS,
                tracefs::DEBUGFS_TRACING
            ),
            COSTS,
            format!(
                "`sudo mount -t tracefs nodev {}`, or run observer as root (with \
                 CAP_SYS_ADMIN it mounts tracefs itself)",
                tracefs::TRACEFS
            ),
        ),
    }
}

/// What depends on BTF, from `load::configure`: namespace offsets (transitions and RSTs),
/// `sk_socket` (closed before accept), the packet's device (namespace of an RST sent without a
/// socket), the names of `enum sk_rst_reason`, and every timewait member.
pub(super) fn btf_check(fact: &BtfFact, reset_reasons: bool) -> Check {
    const NAME: &str = "BTF";
    match fact {
        BtfFact::Missing(error) => {
            let mut costs = format!(
                "{COST_NETNS}; {COST_CLOSED_BEFORE_ACCEPT}; {COST_TIMEWAIT} (timewait sockets \
                 are read through BTF offsets)"
            );
            let mut degrades = vec![
                Feature::Netns,
                Feature::ClosedBeforeAccept,
                Feature::Timewait,
            ];
            if reset_reasons {
                costs.push_str(
                    "; the kernel's RST reasons cannot be named, so RSTs sent are classified \
                     from the socket's history only",
                );
                degrades.push(Feature::ResetReasons);
            }
            Check::warn(NAME, error.clone(), costs, FIX_BTF, &degrades)
        }
        BtfFact::Present {
            netns,
            sk_socket,
            skb_netns,
            reason_names,
        } => {
            let mut problems = Vec::new();
            let mut costs = Vec::new();
            let mut degrades = Vec::new();
            if let Err(e) = netns {
                problems.push(e.clone());
                costs.push(COST_NETNS.to_owned());
                degrades.push(Feature::Netns);
            } else if let Err(e) = skb_netns {
                problems.push(e.clone());
                costs.push("RSTs sent without a socket carry no network namespace".to_owned());
                degrades.push(Feature::Netns);
            }
            if let Err(e) = sk_socket {
                problems.push(e.clone());
                costs.push(COST_CLOSED_BEFORE_ACCEPT.to_owned());
                degrades.push(Feature::ClosedBeforeAccept);
            }
            if reset_reasons && let Err(e) = reason_names {
                problems.push(e.clone());
                costs.push(
                    "the kernel's RST reasons cannot be named, so RSTs sent are classified \
                     from the socket's history only"
                        .to_owned(),
                );
                degrades.push(Feature::ResetReasons);
            }
            if problems.is_empty() {
                Check::ok(
                    NAME,
                    format!(
                        "{VMLINUX_BTF}: offsets for network namespaces, sk_socket and \
                         timewait sockets{}",
                        if reset_reasons {
                            ", RST reason names"
                        } else {
                            ""
                        }
                    ),
                )
            } else {
                Check::warn(
                    NAME,
                    format!("{VMLINUX_BTF} is incomplete: {}", problems.join("; ")),
                    costs.join("; "),
                    "none on this kernel: its structures differ from what observer reads",
                    &degrades,
                )
            }
        }
    }
}

pub(super) fn tracepoint_check(tp: &Tracepoint, presence: &Presence) -> Check {
    let name = format!("{}:{}", tp.category, tp.name);
    let finding = match presence {
        Presence::Usable => {
            return Check::ok(
                name,
                "present; its format has every field the decoder reads",
            );
        }
        Presence::PresentRaw => {
            return Check::ok(
                name,
                "present (attached as a raw tracepoint: its record's fields are not read)",
            );
        }
        Presence::Missing => "missing".to_owned(),
        Presence::Unusable(error) => error.clone(),
    };
    let unusable = matches!(presence, Presence::Unusable(_));
    match tp.role {
        Role::State => Check::fail(
            name,
            finding,
            "observer cannot run: every TCP transition comes from this tracepoint",
            if unusable {
                "none on this kernel: its layout of this tracepoint is not one observer decodes"
            } else {
                "Linux 4.16 or newer, built with CONFIG_TRACEPOINTS"
            },
        ),
        Role::Reset(direction) => {
            let which = match direction {
                ResetDirection::Sent => "sent",
                ResetDirection::Received => "received",
            };
            Check::warn(
                name,
                finding,
                format!(
                    "RSTs {which} are not observed: no RST lines or `observer_tcp_resets_total` \
                     for them, and `TcpResetRateHigh` cannot fire for them; transitions still \
                     work"
                ),
                FIX_NEW_KERNEL,
                &[Feature::Resets],
            )
        }
        Role::Timer => Check::warn(
            name,
            finding,
            format!(
                "{COST_TIMEWAIT} (the timewait socket is followed through timer_start, \
                 timer_cancel and timer_expire_entry together)"
            ),
            FIX_NEW_KERNEL,
            &[Feature::Timewait],
        ),
        Role::Retransmit(kind) => Check::warn(
            name,
            finding,
            match kind {
                RetransmitKind::Segment => {
                    "retransmissions are not observed: no half-open suspects, \
                     `observer_tcp_retransmits_total` stays 0 and `TcpHalfOpenSuspected` cannot \
                     fire; timeouts are still counted"
                }
                RetransmitKind::Synack => {
                    "SYN-ACK retransmissions are not observed: \
                     `observer_tcp_synack_retransmits_total` stays empty"
                }
            },
            FIX_NEW_KERNEL,
            &[Feature::Retransmits],
        ),
        Role::SocketError => Check::warn(
            name,
            finding,
            "connections ended by errors are not observed: no timeout, refusal or reset \
             causes, `observer_tcp_connection_errors_total` stays empty and \
             `TcpTimeoutRateHigh` cannot fire",
            FIX_NEW_KERNEL,
            &[Feature::SocketErrors],
        ),
    }
}

pub(super) fn reset_reason_check(has_reason: bool) -> Check {
    const NAME: &str = "RST reasons";
    if has_reason {
        Check::ok(
            NAME,
            "tcp:tcp_send_reset has `reason` (Linux 6.10+): each RST sent says why",
        )
    } else {
        Check::warn(
            NAME,
            "tcp:tcp_send_reset has no `reason` field (it came in Linux 6.10)",
            COST_NO_REASON,
            "Linux 6.10 or newer",
            &[Feature::ResetReasons],
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::doctor::check::Status;
    use std::path::PathBuf;

    use super::*;
    use crate::doctor::{
        can_run,
        judge::assess,
        kernel_names::TRACEPOINTS,
        summary,
        testing::{costs, find, fix, healthy},
    };
    use crate::load::Features;

    #[test]
    fn missing_btf_costs_namespaces_accept_detection_and_time_wait() {
        let mut facts = healthy();
        facts.btf = BtfFact::Missing("cannot read kernel BTF".to_owned());
        let checks = assess(&facts);
        let btf = find(&checks, "BTF");
        assert_eq!(btf.status, Status::Warn);
        for needle in [
            "no network namespace",
            "before accept()",
            "TIME_WAIT is not observed",
            "RST reasons cannot be named",
        ] {
            assert!(costs(btf).contains(needle), "{needle}: {btf:?}");
        }
        assert_eq!(fix(btf), FIX_BTF);
        assert!(can_run(&checks));

        // Before 6.10 there are no reasons to name, so BTF costs none.
        let older = btf_check(&facts.btf, false);
        assert!(!costs(&older).contains("RST reasons"));
        assert!(!older.degrades.contains(&Feature::ResetReasons));
    }

    #[test]
    fn incomplete_btf_names_only_what_is_lost() {
        let fact = BtfFact::Present {
            netns: Ok(()),
            sk_socket: Err("kernel BTF has no member `sk_socket` in struct sock".to_owned()),
            skb_netns: Ok(()),
            reason_names: Ok(()),
        };
        let check = btf_check(&fact, true);
        assert_eq!(check.status, Status::Warn);
        assert!(check.finding.contains("sk_socket"));
        assert_eq!(costs(&check), COST_CLOSED_BEFORE_ACCEPT);
        assert_eq!(check.degrades, [Feature::ClosedBeforeAccept]);
    }

    #[test]
    fn tracepoints_fail_only_when_the_transition_one_is_missing() {
        let state = tracepoint_check(&TRACEPOINTS[0], &Presence::Missing);
        assert_eq!(state.status, Status::Fail);
        assert!(fix(&state).contains("4.16"));

        let send = tracepoint_check(&TRACEPOINTS[1], &Presence::Missing);
        assert_eq!(send.status, Status::Warn);
        assert!(costs(&send).starts_with("RSTs sent are not observed"));
        let receive = tracepoint_check(
            &TRACEPOINTS[2],
            &Presence::Unusable("field `saddr` is missing".to_owned()),
        );
        assert_eq!(receive.finding, "field `saddr` is missing");
        assert!(costs(&receive).starts_with("RSTs received are not observed"));

        let timer = tracepoint_check(&TRACEPOINTS[4], &Presence::Missing);
        assert_eq!(timer.status, Status::Warn);
        assert!(costs(&timer).contains("TIME_WAIT is not observed"));
        assert_eq!(timer.degrades, [Feature::Timewait]);
    }

    #[test]
    fn kernels_before_6_10_classify_rsts_from_history() {
        let mut facts = healthy();
        facts.reset_reason_field = Some(false);
        facts.trial = Ok(Features::default());
        let checks = assess(&facts);
        let reasons = find(&checks, "RST reasons");
        assert_eq!(reasons.status, Status::Warn);
        assert!(costs(reasons).contains("history only"));
        assert_eq!(fix(reasons), "Linux 6.10 or newer");
        assert_eq!(
            summary(&checks),
            "observer can run here; 1 feature degraded: RST reasons."
        );
        // Without tcp_send_reset there is nothing to ask about its fields.
        facts.reset_reason_field = None;
        assert!(!assess(&facts).iter().any(|c| c.name == "RST reasons"));
    }

    #[test]
    fn unmounted_tracefs_fails_with_the_mount_command() {
        let check = tracefs_check(&TracefsFact::NotMounted(
            "Operation not permitted (os error 1)".to_owned(),
        ));
        assert_eq!(check.status, Status::Fail);
        assert!(check.finding.contains("Operation not permitted"));
        assert!(fix(&check).contains("mount -t tracefs nodev /sys/kernel/tracing"));
        let unreadable = tracefs_check(&TracefsFact::Unreadable {
            path: PathBuf::from("/sys/kernel/tracing"),
            error: "Permission denied (os error 13)".to_owned(),
        });
        assert_eq!(unreadable.status, Status::Fail);
        assert!(fix(&unreadable).contains("root"));
    }

    #[test]
    fn a_namespace_that_cannot_be_read_hides_the_packet_one() {
        let present = |netns: Result<(), String>, skb_netns: Result<(), String>| BtfFact::Present {
            netns,
            sk_socket: Ok(()),
            skb_netns,
            reason_names: Ok(()),
        };
        let both = btf_check(
            &present(Err("no net".to_owned()), Err("no nd_net".to_owned())),
            false,
        );
        assert_eq!(both.status, Status::Warn);
        assert_eq!(costs(&both), COST_NETNS);
        assert_eq!(both.degrades, [Feature::Netns]);
        assert!(!both.finding.contains("no nd_net"));

        let skb = btf_check(&present(Ok(()), Err("no nd_net".to_owned())), false);
        assert_eq!(
            costs(&skb),
            "RSTs sent without a socket carry no network namespace"
        );
        assert_eq!(skb.degrades, [Feature::Netns]);
        assert_eq!(
            skb.finding,
            format!("{VMLINUX_BTF} is incomplete: no nd_net")
        );
    }

    #[test]
    fn rst_reason_names_matter_only_where_the_kernel_gives_reasons() {
        let fact = BtfFact::Present {
            netns: Ok(()),
            sk_socket: Ok(()),
            skb_netns: Ok(()),
            reason_names: Err("kernel BTF has no enum sk_rst_reason".to_owned()),
        };
        let before = btf_check(&fact, false);
        assert_eq!(before.status, Status::Ok);
        assert!(!before.finding.contains("RST reason names"));
        let after = btf_check(&fact, true);
        assert_eq!(after.status, Status::Warn);
        assert_eq!(after.degrades, [Feature::ResetReasons]);
    }

    #[test]
    fn each_optional_tracepoint_names_what_its_absence_costs() {
        let degrades = |i: usize| tracepoint_check(&TRACEPOINTS[i], &Presence::Missing).degrades;
        assert_eq!(degrades(1), [Feature::Resets]);
        assert_eq!(degrades(2), [Feature::Resets]);
        for timer in 3..=5 {
            assert_eq!(degrades(timer), [Feature::Timewait]);
        }
        assert_eq!(degrades(6), [Feature::Retransmits]);
        assert_eq!(degrades(7), [Feature::Retransmits]);
        assert_eq!(degrades(8), [Feature::SocketErrors]);
        let synack = tracepoint_check(&TRACEPOINTS[7], &Presence::Missing);
        assert!(costs(&synack).starts_with("SYN-ACK retransmissions are not observed"));
        let errors = tracepoint_check(&TRACEPOINTS[8], &Presence::Missing);
        assert!(costs(&errors).starts_with("connections ended by errors are not observed"));
    }

    #[test]
    fn a_present_tracepoint_is_ok_raw_or_decoded() {
        let raw = tracepoint_check(&TRACEPOINTS[3], &Presence::PresentRaw);
        assert_eq!(raw.status, Status::Ok);
        assert_eq!(raw.name, "timer:timer_start");
        assert!(raw.finding.contains("raw tracepoint"));
        let decoded = tracepoint_check(&TRACEPOINTS[0], &Presence::Usable);
        assert_eq!(decoded.status, Status::Ok);
        assert!(decoded.finding.contains("every field the decoder reads"));
    }

    #[test]
    fn an_undecodable_transition_tracepoint_fails_with_no_upgrade_to_suggest() {
        let check = tracepoint_check(
            &TRACEPOINTS[0],
            &Presence::Unusable("field `newstate` is missing".to_owned()),
        );
        assert_eq!(check.status, Status::Fail);
        assert_eq!(check.finding, "field `newstate` is missing");
        assert!(fix(&check).starts_with("none on this kernel"));
    }

    #[test]
    fn tracefs_mounted_by_doctor_is_ok() {
        let check = tracefs_check(&TracefsFact::MountedNow(PathBuf::from(
            "/sys/kernel/tracing",
        )));
        assert_eq!(check.status, Status::Ok);
        assert_eq!(
            check.finding,
            "was not mounted; mounted it at /sys/kernel/tracing, as observer does at start"
        );
    }
}
