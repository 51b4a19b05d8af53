//! The capabilities observer uses, from the effective set: which it cannot run without, and
//! what each of the others buys.

use super::{COST_EXISTING_SOCKETS, COST_TIMEWAIT, setcap_fix};
use crate::{
    doctor::{
        check::{Check, Feature},
        kernel_names::TW_TIMER_HANDLER,
    },
    kernel::privileges::{CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN},
};

pub(super) const CAP_DAC_OVERRIDE: u32 = 1;
pub(super) const CAP_DAC_READ_SEARCH: u32 = 2;
pub(super) const CAP_NET_ADMIN: u32 = 12;
pub(super) const CAP_SYS_PTRACE: u32 = 19;
pub(super) const CAP_SYSLOG: u32 = 34;

const fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// One check per capability observer uses, from the effective set.
pub(super) fn capability_checks(
    caps: Option<u64>,
    euid: u32,
    kallsyms_visible: bool,
) -> Vec<Check> {
    let Some(caps) = caps else {
        return vec![Check::warn(
            "capabilities",
            "cannot read CapEff from /proc/self/status",
            "what this process may do cannot be told in advance; the trial load below has the \
             last word",
            "mount procfs at /proc",
            &[],
        )];
    };
    let admin = has(caps, CAP_SYS_ADMIN);
    let loader = |cap: u32, name: &str, lower: &str, use_: &str, refused: &str| {
        if has(caps, cap) {
            Check::ok(name, format!("present: {use_}"))
        } else if admin {
            Check::ok(name, "absent; CAP_SYS_ADMIN stands in for it")
        } else {
            Check::fail(
                name,
                "absent, and no CAP_SYS_ADMIN to stand in for it",
                format!("observer cannot run: the kernel refuses {refused}"),
                setcap_fix(lower),
            )
        }
    };
    let mut checks = vec![
        loader(
            CAP_BPF,
            "CAP_BPF",
            "cap_bpf",
            "creating the ring buffer and maps, loading the programs",
            "to create its ring buffer and maps and to load its programs",
        ),
        loader(
            CAP_PERFMON,
            "CAP_PERFMON",
            "cap_perfmon",
            "attaching tracing programs to tracepoints, reading kernel memory from them",
            "tracing programs (attached to tracepoints, reading kernel memory)",
        ),
        syslog_check(has(caps, CAP_SYSLOG), kallsyms_visible),
    ];
    checks.extend(sock_diag_capability_checks(caps, euid));
    checks
}

/// `CAP_SYSLOG` matters only if kernel addresses are otherwise hidden.
fn syslog_check(present: bool, kallsyms_visible: bool) -> Check {
    if present {
        Check::ok(
            "CAP_SYSLOG",
            format!("present: reading the address of {TW_TIMER_HANDLER} in /proc/kallsyms"),
        )
    } else if kallsyms_visible {
        Check::ok(
            "CAP_SYSLOG",
            "absent; not needed here: /proc/kallsyms shows this process kernel addresses",
        )
    } else {
        Check::warn(
            "CAP_SYSLOG",
            "absent: /proc/kallsyms shows this process every kernel address as 0",
            format!(
                "{COST_TIMEWAIT} (the timer programs pick out timewait timers by the address \
                 of {TW_TIMER_HANDLER})"
            ),
            setcap_fix("cap_syslog"),
            &[Feature::Timewait],
        )
    }
}

/// The capabilities behind sock_diag dumps and socket owners.
fn sock_diag_capability_checks(caps: u64, euid: u32) -> Vec<Check> {
    let admin = has(caps, CAP_SYS_ADMIN);
    let mut checks = vec![if admin {
        Check::ok(
            "CAP_SYS_ADMIN",
            "present: entering each network namespace for sock_diag dumps, mounting tracefs",
        )
    } else {
        Check::warn(
            "CAP_SYS_ADMIN",
            "absent",
            format!(
                "sock_diag dumps run inside each network namespace (setns), which needs it: \
                 {COST_EXISTING_SOCKETS}; and tracefs cannot be mounted when it is not"
            ),
            setcap_fix("cap_sys_admin"),
            &[Feature::ExistingSockets],
        )
    }];
    checks.push(if has(caps, CAP_SYS_PTRACE) {
        Check::ok(
            "CAP_SYS_PTRACE",
            "present: reading other processes' /proc/PID/fd and /proc/PID/ns/net",
        )
    } else {
        Check::warn(
            "CAP_SYS_PTRACE",
            "absent",
            "socket holders are found through /proc/PID/fd only among processes this one may \
             inspect (same user, no more capabilities): for the others the owner stays \
             unknown (`?`, CLOSE_WAIT alerts without pid and comm), and network namespaces \
             reachable only through them are not dumped",
            setcap_fix("cap_sys_ptrace"),
            &[Feature::Owners, Feature::ExistingSockets],
        )
    });
    checks.push(if has(caps, CAP_DAC_READ_SEARCH) {
        Check::ok(
            "CAP_DAC_READ_SEARCH",
            "present: listing /proc/PID/fd of other users' processes",
        )
    } else if has(caps, CAP_DAC_OVERRIDE) {
        Check::ok(
            "CAP_DAC_READ_SEARCH",
            "absent; CAP_DAC_OVERRIDE stands in for it",
        )
    } else {
        let tracefs = if euid == 0 {
            ""
        } else {
            "; and tracefs (readable by root only) cannot be read"
        };
        Check::warn(
            "CAP_DAC_READ_SEARCH",
            "absent",
            format!(
                "sockets held by other users' processes have no known owner: their \
                 /proc/PID/fd cannot be listed{tracefs}"
            ),
            setcap_fix("cap_dac_read_search"),
            &[Feature::Owners],
        )
    });
    let net_admin = if has(caps, CAP_NET_ADMIN) {
        "present"
    } else {
        "absent"
    };
    checks.push(Check::info(
        "CAP_NET_ADMIN",
        format!(
            "{net_admin}; not needed: sock_diag dumps need no capability, tracing programs \
             only CAP_BPF and CAP_PERFMON"
        ),
    ));
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::check::Status;
    use crate::doctor::testing::{costs, find, fix};

    #[test]
    fn capability_masks_decode_into_one_check_each() {
        let statuses = |caps: u64| {
            capability_checks(Some(caps), 0, false)
                .into_iter()
                .map(|c| (c.name, c.status))
                .collect::<Vec<_>>()
        };
        let all = statuses(u64::MAX);
        assert!(
            all.iter()
                .all(|(n, s)| *s == Status::Ok || n == "CAP_NET_ADMIN"),
            "{all:?}"
        );

        let none = capability_checks(Some(0), 0, false);
        assert_eq!(find(&none, "CAP_BPF").status, Status::Fail);
        assert_eq!(find(&none, "CAP_PERFMON").status, Status::Fail);
        for name in [
            "CAP_SYS_ADMIN",
            "CAP_SYSLOG",
            "CAP_SYS_PTRACE",
            "CAP_DAC_READ_SEARCH",
        ] {
            assert_eq!(find(&none, name).status, Status::Warn, "{name}");
        }
        assert!(fix(find(&none, "CAP_BPF")).contains("setcap"));
        assert!(costs(find(&none, "CAP_PERFMON")).starts_with("observer cannot run"));
        assert!(
            find(&none, "CAP_NET_ADMIN")
                .finding
                .starts_with("absent; not needed")
        );

        // CAP_SYS_ADMIN alone stands in for the two loader capabilities.
        let admin = capability_checks(Some(1 << CAP_SYS_ADMIN), 0, false);
        assert_eq!(find(&admin, "CAP_BPF").status, Status::Ok);
        assert!(find(&admin, "CAP_BPF").finding.contains("stands in"));

        // CAP_BPF without CAP_PERFMON is not enough.
        let bpf_only = capability_checks(Some(1 << CAP_BPF), 0, false);
        assert_eq!(find(&bpf_only, "CAP_BPF").status, Status::Ok);
        assert_eq!(find(&bpf_only, "CAP_PERFMON").status, Status::Fail);

        // Visible kernel addresses make CAP_SYSLOG unnecessary.
        let visible = capability_checks(Some(0), 0, true);
        assert_eq!(find(&visible, "CAP_SYSLOG").status, Status::Ok);

        // Bit positions: this host's mask lacks only bit 24 (CAP_SYS_RESOURCE).
        let host = capability_checks(Some(0x1ff_feff_ffff), 0, false);
        assert!(host.iter().all(|c| c.status != Status::Warn));
        assert!(has(0x1ff_feff_ffff, CAP_BPF) && !has(0x1ff_feff_ffff, 24));
    }

    #[test]
    fn without_cap_dac_read_search_a_non_root_user_also_loses_tracefs() {
        let root = capability_checks(Some(0), 0, false);
        let user = capability_checks(Some(0), 1000, false);
        assert!(!costs(find(&root, "CAP_DAC_READ_SEARCH")).contains("tracefs"));
        assert!(costs(find(&user, "CAP_DAC_READ_SEARCH")).contains("tracefs"));
        let override_ = capability_checks(Some(1 << CAP_DAC_OVERRIDE), 1000, false);
        assert_eq!(find(&override_, "CAP_DAC_READ_SEARCH").status, Status::Ok);
    }
}
