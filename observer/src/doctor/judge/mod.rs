//! Verdicts on the facts: pure functions from what was found to a [`Check`] per piece, each
//! saying what a missing piece costs and what to do about it.

mod kernel;
mod privileges;
mod sock_diag;
mod tracing;
mod trial;
mod workloads;

use super::{
    check::{Check, Status},
    facts::Facts,
    kernel_names::TRACEPOINTS,
};

// What several checks say word for word, since they point at the same loss.
const COST_NETNS: &str =
    "events carry no network namespace (`netns` is null, and `--netns` matches nothing)";
const COST_CLOSED_BEFORE_ACCEPT: &str = "a connection the client gave up on in the accept \
     queue looks like any CLOSE_WAIT: no `[closed by the peer before accept()]`, and \
     `observer_tcp_closed_before_accept_total` stays 0";
const COST_TIMEWAIT: &str = "TIME_WAIT is not observed: a closing connection ends at its \
     FIN_WAIT2 -> CLOSE, with no TIME_WAIT lines, durations, counts or usage ratios, and the \
     TIME_WAIT alert rules never fire";
const COST_EXISTING_SOCKETS: &str = "sockets already open when observer starts are not \
     learnt (one already stuck in CLOSE_WAIT stays invisible until it closes), ends that were \
     missed are not reconciled, and TIME_WAIT usage ratios lack the namespace's limits";
const FIX_NEW_KERNEL: &str = "none on this kernel; the rest of observer works";

fn setcap_fix(cap: &str) -> String {
    format!(
        "run as root (`sudo observer ...`), or give the binary {cap} with the others it uses: \
         `sudo setcap cap_bpf,cap_perfmon,cap_sys_admin,cap_syslog,cap_sys_ptrace,cap_dac_read_search+ep \
         $(command -v observer)`"
    )
}

/// Every check, in the report's order.
pub(super) fn assess(f: &Facts) -> Vec<Check> {
    let mut checks = vec![kernel::kernel_check(&f.release)];
    checks.extend(privileges::capability_checks(
        f.caps,
        f.euid,
        f.kallsyms.is_ok(),
    ));
    checks.push(tracing::tracefs_check(&f.tracefs));
    checks.push(tracing::btf_check(
        &f.btf,
        f.reset_reason_field == Some(true),
    ));
    if let Some(found) = &f.tracepoints {
        for (tp, presence) in TRACEPOINTS.iter().zip(found) {
            checks.push(tracing::tracepoint_check(tp, presence));
        }
    }
    if let Some(has_reason) = f.reset_reason_field {
        checks.push(tracing::reset_reason_check(has_reason));
    }
    checks.push(kernel::kallsyms_check(
        &f.kallsyms,
        f.kptr_restrict,
        f.perf_event_paranoid,
    ));
    checks.push(kernel::hz_check(f.hz.as_ref()));
    checks.push(sock_diag::sock_diag_check(&f.sock_diag));
    checks.push(kernel::bpf_stats_check(f.bpf_stats_enabled));
    checks.push(kernel::unprivileged_bpf_check(f.unprivileged_bpf_disabled));
    checks.push(workloads::cgroup2_check(
        f.cgroup2.as_deref(),
        f.cgroups_read,
    ));
    checks.push(workloads::kubelet_check(&f.kubelet_logs));
    checks.push(trial::trial_check(&f.trial));
    checks
}

/// Whether no check failed.
#[must_use]
pub fn can_run(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        doctor::{
            facts::{Presence, TracefsFact},
            kernel_names::TW_TIMER_HANDLER,
            summary,
            testing::{costs, find, fix, healthy},
        },
        kernel::{
            kallsyms::KallsymsError,
            privileges::{CAP_BPF, CAP_SYS_ADMIN},
        },
    };

    #[test]
    fn a_healthy_host_is_all_ok_but_the_informational_checks() {
        let checks = assess(&healthy());
        for c in &checks {
            let expected = if c.name.starts_with("kernel.") || c.name == "CAP_NET_ADMIN" {
                Status::Info
            } else {
                Status::Ok
            };
            assert_eq!(c.status, expected, "{c:?}");
            assert!(c.costs.is_none() && c.fix.is_none(), "{c:?}");
        }
        assert!(can_run(&checks));
        assert_eq!(
            summary(&checks),
            "observer can run here; nothing is degraded."
        );
        // kernel, 7 capabilities, tracefs, BTF, 9 tracepoints, RST reasons, tw_timer_handler,
        // CONFIG_HZ, sock_diag, 2 sysctls, cgroup v2, kubelet logs, trial load.
        assert_eq!(checks.len(), 28);
    }

    #[test]
    fn dropped_capabilities_fail_and_say_how_to_grant_them() {
        let mut facts = healthy();
        facts.caps = Some(0);
        facts.kallsyms = Err(KallsymsError::Hidden(TW_TIMER_HANDLER.to_owned()));
        facts.trial = Err("missing privileges: loading eBPF programs needs CAP_BPF".to_owned());
        let checks = assess(&facts);
        assert!(!can_run(&checks));
        assert_eq!(
            summary(&checks),
            "observer cannot run here: 3 checks failed (CAP_BPF, CAP_PERFMON, trial load); \
             besides, 3 features degraded: TIME_WAIT, sockets open before start-up, socket \
             owners."
        );
    }

    #[test]
    fn the_report_keeps_its_order() {
        let names: Vec<String> = assess(&healthy()).into_iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "kernel",
                "CAP_BPF",
                "CAP_PERFMON",
                "CAP_SYSLOG",
                "CAP_SYS_ADMIN",
                "CAP_SYS_PTRACE",
                "CAP_DAC_READ_SEARCH",
                "CAP_NET_ADMIN",
                "tracefs",
                "BTF",
                "sock:inet_sock_set_state",
                "tcp:tcp_send_reset",
                "tcp:tcp_receive_reset",
                "timer:timer_start",
                "timer:timer_cancel",
                "timer:timer_expire_entry",
                "tcp:tcp_retransmit_skb",
                "tcp:tcp_retransmit_synack",
                "sock:inet_sk_error_report",
                "RST reasons",
                TW_TIMER_HANDLER,
                "CONFIG_HZ",
                "sock_diag",
                "kernel.bpf_stats_enabled",
                "kernel.unprivileged_bpf_disabled",
                "cgroup2",
                "kubelet.logs",
                "trial load",
            ]
        );
    }

    #[test]
    fn a_missing_optional_tracepoint_warns_and_observer_still_runs() {
        for (i, tp) in TRACEPOINTS.iter().enumerate().skip(1) {
            let mut facts = healthy();
            facts.tracepoints.as_mut().unwrap()[i] = Presence::Missing;
            let checks = assess(&facts);
            let name = format!("{}:{}", tp.category, tp.name);
            let check = find(&checks, &name);
            assert_eq!(check.status, Status::Warn, "{name}");
            assert_eq!(check.finding, "missing");
            assert_eq!(fix(check), FIX_NEW_KERNEL, "{name}");
            assert!(!check.degrades.is_empty(), "{name}");
            assert!(can_run(&checks), "{name}");
            assert!(
                summary(&checks).starts_with("observer can run here; 1 feature degraded: "),
                "{name}: {}",
                summary(&checks)
            );
        }
    }

    #[test]
    fn a_missing_transition_tracepoint_fails() {
        let mut facts = healthy();
        facts.tracepoints.as_mut().unwrap()[0] = Presence::Missing;
        let checks = assess(&facts);
        let state = find(&checks, "sock:inet_sock_set_state");
        assert_eq!(state.status, Status::Fail);
        assert!(costs(state).starts_with("observer cannot run"));
        assert!(!can_run(&checks));
        assert_eq!(
            summary(&checks),
            "observer cannot run here: 1 check failed (sock:inet_sock_set_state); besides, \
             nothing is degraded."
        );
    }

    #[test]
    fn unreadable_tracefs_fails_and_leaves_the_tracepoints_unjudged() {
        let mut facts = healthy();
        facts.tracefs = TracefsFact::NotMounted("Operation not permitted (os error 1)".to_owned());
        facts.tracepoints = None;
        facts.reset_reason_field = None;
        let checks = assess(&facts);
        assert_eq!(find(&checks, "tracefs").status, Status::Fail);
        assert!(!checks.iter().any(|c| c.name.contains(':')), "{checks:#?}");
        assert!(!checks.iter().any(|c| c.name == "RST reasons"));
        // Without a tracepoint to read `reason` from, BTF does not promise RST reason names.
        assert!(!find(&checks, "BTF").finding.contains("RST reason"));
        assert_eq!(checks.len(), 28 - TRACEPOINTS.len() - 1);
        assert!(!can_run(&checks));
    }

    #[test]
    fn without_cap_bpf_or_cap_sys_admin_observer_cannot_run_and_is_told_to_setcap() {
        let mut facts = healthy();
        facts.caps = facts
            .caps
            .map(|caps| caps & !(1 << CAP_BPF) & !(1 << CAP_SYS_ADMIN));
        let checks = assess(&facts);
        let bpf = find(&checks, "CAP_BPF");
        assert_eq!(bpf.status, Status::Fail);
        assert_eq!(
            bpf.finding,
            "absent, and no CAP_SYS_ADMIN to stand in for it"
        );
        assert_eq!(
            costs(bpf),
            "observer cannot run: the kernel refuses to create its ring buffer and maps and to \
             load its programs"
        );
        assert!(
            fix(bpf).starts_with("run as root (`sudo observer ...`), or give the binary cap_bpf ")
        );
        assert!(fix(bpf).contains(
            "`sudo setcap cap_bpf,cap_perfmon,cap_sys_admin,cap_syslog,cap_sys_ptrace,\
             cap_dac_read_search+ep $(command -v observer)`"
        ));
        assert_eq!(find(&checks, "CAP_PERFMON").status, Status::Ok);
        assert_eq!(
            summary(&checks),
            "observer cannot run here: 1 check failed (CAP_BPF); besides, 1 feature degraded: \
             sockets open before start-up."
        );
    }

    #[test]
    fn unreadable_capabilities_leave_the_verdict_to_the_trial() {
        let mut facts = healthy();
        facts.caps = None;
        let checks = assess(&facts);
        assert!(!checks.iter().any(|c| c.name.starts_with("CAP_")));
        let caps = find(&checks, "capabilities");
        assert_eq!(caps.status, Status::Warn);
        assert!(caps.degrades.is_empty());
        assert!(can_run(&checks));
        assert_eq!(
            summary(&checks),
            "observer can run here; 1 warning (no feature known to be degraded)."
        );
    }

    #[test]
    fn features_lost_to_several_checks_are_counted_once() {
        let mut facts = healthy();
        // Hidden addresses warn twice (CAP_SYSLOG, tw_timer_handler), both about TIME_WAIT.
        facts.caps = facts.caps.map(|caps| caps & !(1 << privileges::CAP_SYSLOG));
        facts.kallsyms = Err(KallsymsError::Hidden(TW_TIMER_HANDLER.to_owned()));
        facts.release = "garbage".to_owned();
        let checks = assess(&facts);
        let warned: Vec<&str> = checks
            .iter()
            .filter(|c| c.status == Status::Warn)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(warned, ["kernel", "CAP_SYSLOG", TW_TIMER_HANDLER]);
        assert_eq!(
            summary(&checks),
            "observer can run here; 1 feature degraded: TIME_WAIT."
        );
    }
}
