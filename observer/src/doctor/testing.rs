//! Facts and look-ups shared by the judging and rendering tests.

use std::path::PathBuf;

use super::{
    check::Check,
    facts::{BtfFact, Facts, KubeletLogs, Presence, SockDiagFact, TracefsFact},
    kernel_names::TRACEPOINTS,
};
use crate::{
    kernel::tick_rate::{TickRate, TickRateSource},
    load::Features,
};

/// This project's test machine as doctor sees it: everything present.
pub(super) fn healthy() -> Facts {
    Facts {
        release: "6.18.44-fc-v657".to_owned(),
        euid: 0,
        caps: Some(0x1ff_feff_ffff),
        tracefs: TracefsFact::Readable(PathBuf::from("/sys/kernel/tracing")),
        tracepoints: Some(vec![Presence::Usable; TRACEPOINTS.len()]),
        reset_reason_field: Some(true),
        btf: BtfFact::Present {
            netns: Ok(()),
            sk_socket: Ok(()),
            skb_netns: Ok(()),
            reason_names: Ok(()),
        },
        kallsyms: Ok(0xffff_ffff_8200_6870),
        kptr_restrict: Some(0),
        perf_event_paranoid: Some(2),
        hz: Ok(TickRate {
            hz: 250,
            source: TickRateSource::KernelConfig,
        }),
        sock_diag: SockDiagFact {
            dumped: 1,
            sockets: 3,
            failed: Vec::new(),
        },
        bpf_stats_enabled: Some(0),
        unprivileged_bpf_disabled: Some(2),
        cgroup2: Some(PathBuf::from("/sys/fs/cgroup")),
        kubelet_logs: KubeletLogs::Readable(PathBuf::from("/var/log/containers")),
        cgroups_read: true,
        trial: Ok(Features {
            reset_reasons: true,
            ..Features::default()
        }),
    }
}

pub(super) fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name} in {checks:#?}"))
}

pub(super) fn costs(check: &Check) -> &str {
    check.costs.as_deref().unwrap_or_default()
}

pub(super) fn fix(check: &Check) -> &str {
    check.fix.as_deref().unwrap_or_default()
}
