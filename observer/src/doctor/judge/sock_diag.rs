//! The sock_diag dumps that learn the sockets open before start-up.

use super::{COST_EXISTING_SOCKETS, setcap_fix};
use crate::doctor::{
    check::{Check, Feature, plural},
    facts::{DumpFailure, FailedDump, SockDiagFact},
};

pub(super) fn sock_diag_check(fact: &SockDiagFact) -> Check {
    const NAME: &str = "sock_diag";
    let Some(FailedDump { kind, error: first }) = fact.failed.first() else {
        if fact.dumped == 0 {
            return Check::warn(
                NAME,
                "no network namespace found to dump",
                COST_EXISTING_SOCKETS,
                "mount procfs at /proc",
                &[Feature::ExistingSockets],
            );
        }
        return Check::ok(
            NAME,
            format!(
                "dumped {} ({}): open sockets are learnt at start and reconciled",
                plural(fact.dumped, "network namespace"),
                plural(fact.sockets, "TCP socket")
            ),
        );
    };
    let fix = match kind {
        DumpFailure::Enter => setcap_fix("cap_sys_admin"),
        DumpFailure::Open => setcap_fix("cap_sys_ptrace"),
        DumpFailure::Module => "`sudo modprobe tcp_diag` (and inet_diag)".to_owned(),
        DumpFailure::Other => "see the error".to_owned(),
    };
    Check::warn(
        NAME,
        format!(
            "{} of {} could not be dumped; first: {first}",
            fact.failed.len(),
            plural(fact.dumped + fact.failed.len(), "network namespace")
        ),
        format!("in those namespaces, {COST_EXISTING_SOCKETS}"),
        fix,
        &[Feature::ExistingSockets],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::check::Status;
    use crate::doctor::testing::{costs, fix};

    #[test]
    fn sock_diag_failures_point_at_the_missing_capability() {
        let fact = SockDiagFact {
            dumped: 0,
            sockets: 0,
            failed: vec![FailedDump {
                kind: DumpFailure::Enter,
                error: "/proc/1/ns/net: cannot enter network namespace".to_owned(),
            }],
        };
        let check = sock_diag_check(&fact);
        assert_eq!(check.status, Status::Warn);
        assert!(
            check
                .finding
                .starts_with("1 of 1 network namespace could not")
        );
        assert!(costs(&check).contains("stays invisible until it closes"));
        assert!(fix(&check).contains("cap_sys_admin"));
    }

    #[test]
    fn a_clean_dump_counts_namespaces_and_sockets() {
        let check = sock_diag_check(&SockDiagFact {
            dumped: 2,
            sockets: 1,
            failed: Vec::new(),
        });
        assert_eq!(check.status, Status::Ok);
        assert_eq!(
            check.finding,
            "dumped 2 network namespaces (1 TCP socket): open sockets are learnt at start and \
             reconciled"
        );
    }

    #[test]
    fn no_namespace_at_all_points_at_procfs() {
        let check = sock_diag_check(&SockDiagFact::default());
        assert_eq!(check.status, Status::Warn);
        assert_eq!(fix(&check), "mount procfs at /proc");
        assert_eq!(check.degrades, [Feature::ExistingSockets]);
    }

    #[test]
    fn the_first_failure_chooses_the_advice() {
        let failed = |kind| SockDiagFact {
            dumped: 3,
            sockets: 10,
            failed: vec![
                FailedDump {
                    kind,
                    error: "first".to_owned(),
                },
                FailedDump {
                    kind: DumpFailure::Enter,
                    error: "second".to_owned(),
                },
            ],
        };
        let module = sock_diag_check(&failed(DumpFailure::Module));
        assert_eq!(
            module.finding,
            "2 of 5 network namespaces could not be dumped; first: first"
        );
        assert_eq!(fix(&module), "`sudo modprobe tcp_diag` (and inet_diag)");
        assert!(fix(&sock_diag_check(&failed(DumpFailure::Open))).contains("cap_sys_ptrace"));
        assert_eq!(
            fix(&sock_diag_check(&failed(DumpFailure::Other))),
            "see the error"
        );
    }
}
