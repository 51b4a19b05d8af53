//! Prometheus metrics: a [`Snapshot`] labelled and encoded as OpenMetrics text.
//!
//! A scrape copies a snapshot under the pipeline's lock; labelling and encoding happen here,
//! after the lock is released, so a slow client never holds up event processing. Every label
//! is bounded by construction: states, RST classes and causes are closed sets, ports are
//! [`PortLabels`], alert names come from the configuration.

mod encode;
mod ports;
pub mod text_format;
mod workloads;

use std::sync::{Arc, Mutex, PoisonError};

use rustc_hash::FxHashMap;

pub use self::ports::{PortLabel, PortLabels};
pub use self::workloads::{WorkloadLabel, WorkloadLabels};
use crate::{
    clock::seconds,
    event::{CgroupId, PerState},
    snapshot::Snapshot,
    track::NeverAccepted,
    workload::{
        Resolver,
        tally::{Counted, WorkloadCounts},
    },
};

/// Encodes snapshots, keeping each port's and each workload's label from one scrape to the
/// next.
pub struct Exporter {
    ports: Mutex<PortLabels>,
    workloads: Mutex<WorkloadLabels>,
    resolver: Arc<Resolver>,
}

impl Exporter {
    /// `configured` ports get labels; none configured: the first `max` ports seen. The first
    /// `max_workloads` workloads seen get labels.
    #[must_use]
    pub fn new(configured: &[u16], max: usize, max_workloads: usize) -> Self {
        Self::with_resolver(configured, max, max_workloads, Arc::new(Resolver::host()))
    }

    /// [`Exporter::new`], naming workloads through `resolver` (the pipeline's).
    #[must_use]
    pub fn with_resolver(
        configured: &[u16],
        max: usize,
        max_workloads: usize,
        resolver: Arc<Resolver>,
    ) -> Self {
        Self {
            ports: Mutex::new(PortLabels::new(configured, max)),
            workloads: Mutex::new(WorkloadLabels::new(max_workloads)),
            resolver,
        }
    }

    /// New workload labels (a configuration reload).
    pub fn set_workloads(&self, max: usize) {
        *self
            .workloads
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = WorkloadLabels::new(max);
    }

    /// New port labels (a configuration reload).
    pub fn set_ports(&self, configured: &[u16], max: usize) {
        *self.ports.lock().unwrap_or_else(PoisonError::into_inner) =
            PortLabels::new(configured, max);
    }

    /// The snapshot's metrics, as OpenMetrics text.
    #[must_use]
    pub fn openmetrics(&self, snapshot: Snapshot) -> String {
        let metrics = {
            let mut ports = self.ports.lock().unwrap_or_else(PoisonError::into_inner);
            let mut workloads = self
                .workloads
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut name = |c| self.resolver.resolve(c).and_then(|a| a.name());
            Metrics::label(snapshot, &mut ports, &mut workloads, &mut name)
        };
        encode::openmetrics(metrics)
    }
}

impl Default for Exporter {
    fn default() -> Self {
        Self::new(
            &[],
            crate::config::DEFAULT_MAX_PORT_LABELS,
            crate::config::DEFAULT_MAX_WORKLOAD_LABELS,
        )
    }
}

/// What one listening port's sockets hold in their queues, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct QueueSums {
    queued: u64,
    backlog: u64,
    syn_recv: u64,
}

/// Every exported value: the snapshot, with its per-listener counts summed under port labels
/// (over namespaces, and into `other` beyond the labelled ports).
#[derive(Debug)]
struct Metrics {
    kernel: String,
    s: Snapshot,
    closed_before_accept: Vec<(PortLabel, NeverAccepted)>,
    synack_retransmits: Vec<(PortLabel, u64)>,
    listen_queues: Vec<(PortLabel, QueueSums)>,
    close_wait_oldest_seconds: f64,
    half_open_oldest_seconds: f64,
    close_wait_by_workload: Vec<(WorkloadLabel, CloseWaitSums)>,
    sockets_by_workload: Vec<(WorkloadLabel, PerState<u64>)>,
    half_open_by_workload: Vec<(WorkloadLabel, u64)>,
    counts_by_workload: Vec<(WorkloadLabel, WorkloadCounts)>,
}

/// The CLOSE_WAIT sockets of one workload label: how many, and the oldest one's age.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct CloseWaitSums {
    sockets: u64,
    oldest_seconds: f64,
}

impl Metrics {
    fn label(
        s: Snapshot,
        ports: &mut PortLabels,
        workloads: &mut WorkloadLabels,
        name: &mut dyn FnMut(CgroupId) -> Option<String>,
    ) -> Self {
        let mut by_workload: FxHashMap<WorkloadLabel, CloseWaitSums> = FxHashMap::default();
        for g in &s.close_wait_by_cgroup {
            let label = workloads.label(g.cgroup.and_then(&mut *name));
            let sums = by_workload.entry(label).or_default();
            sums.sockets += g.count;
            sums.oldest_seconds = sums
                .oldest_seconds
                .max(seconds(s.mono_ns.saturating_sub(g.oldest_since_ns)));
        }
        let close_wait_by_workload = by_label(by_workload);
        let mut label = |c: Option<CgroupId>| workloads.label(c.and_then(&mut *name));
        let mut sockets: FxHashMap<WorkloadLabel, PerState<u64>> = FxHashMap::default();
        for g in &s.sockets_by_cgroup {
            let sums = sockets.entry(label(g.cgroup)).or_default();
            for (state, n) in g.sockets.iter() {
                sums[state] += n;
            }
        }
        let mut half_open: FxHashMap<WorkloadLabel, u64> = FxHashMap::default();
        for g in &s.half_open_by_cgroup {
            *half_open.entry(label(g.cgroup)).or_default() += g.count;
        }
        let mut counts: FxHashMap<WorkloadLabel, WorkloadCounts> = FxHashMap::default();
        for (who, c) in &s.workload_counts {
            let l = match who {
                Counted::Named(n) => workloads.label(Some(n.clone())),
                Counted::Unknown => WorkloadLabel::Unknown,
                Counted::Beyond => WorkloadLabel::Other,
            };
            *counts.entry(l).or_default() += *c;
        }
        let mut closed: FxHashMap<PortLabel, NeverAccepted> = FxHashMap::default();
        for c in &s.closed_before_accept {
            *closed.entry(ports.label(c.listener.port)).or_default() += c.counts;
        }
        let mut synacks: FxHashMap<PortLabel, u64> = FxHashMap::default();
        for r in &s.synack_retransmits {
            *synacks.entry(ports.label(r.listener.port)).or_default() += r.count;
        }
        let mut queues: FxHashMap<PortLabel, QueueSums> = FxHashMap::default();
        for l in &s.listeners {
            let slot = queues.entry(ports.label(l.local.port())).or_default();
            slot.queued += u64::from(l.queued);
            slot.backlog += u64::from(l.backlog);
            slot.syn_recv += u64::from(l.syn_recv);
        }
        Self {
            kernel: kernel_release(),
            closed_before_accept: sorted(closed),
            synack_retransmits: sorted(synacks),
            listen_queues: sorted(queues),
            close_wait_oldest_seconds: s.close_wait_oldest_ns().map_or(0.0, seconds),
            half_open_oldest_seconds: s.half_open_oldest_ns().map_or(0.0, seconds),
            close_wait_by_workload,
            sockets_by_workload: by_label(sockets),
            half_open_by_workload: by_label(half_open),
            counts_by_workload: by_label(counts),
            s,
        }
    }
}

/// By workload label, in label order.
fn by_label<T>(by: FxHashMap<WorkloadLabel, T>) -> Vec<(WorkloadLabel, T)> {
    let mut v: Vec<_> = by.into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// By port, in port order (`other` last).
fn sorted<T>(by_port: FxHashMap<PortLabel, T>) -> Vec<(PortLabel, T)> {
    let mut v: Vec<_> = by_port.into_iter().collect();
    v.sort_unstable_by_key(|(p, _)| *p);
    v
}

/// `uname -r`, for the build info metric (read once: it cannot change while running).
fn kernel_release() -> String {
    static RELEASE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RELEASE
        .get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::CgroupId,
        snapshot::{CloseWaitGroup, HalfOpenGroup},
        track::CgroupSockets,
    };
    use observer_common::TcpState::{CloseWait, Established};

    const S: u64 = 1_000_000_000;

    fn id(n: u64) -> Option<CgroupId> {
        CgroupId::new(n)
    }

    /// A snapshot of an empty tracker at `now_ns`, for tests to fill in.
    fn empty_snapshot(now_ns: u64) -> Snapshot {
        let tracker = crate::track::Tracker::new(16);
        Snapshot::take(
            &crate::snapshot::Sources {
                socket_client_drops: 0,
                workload_tally: &crate::workload::tally::WorkloadTally::default(),
                tracker: &tracker,
                transitions: &crate::track::TransitionCounts::default(),
                received: 0,
                losses: crate::stream::Losses::default(),
                limits: &FxHashMap::default(),
                listen: &crate::listen_queues::ListenQueues::default(),
                half_open_after_ns: 0,
                alerts: &[],
                notifications: crate::alerts::NotificationCounts::default(),
                last_reconciliation: None,
                reconciliation_cpu_ns: 0,
                now_ns,
            },
            1,
        )
    }

    /// Labelled with one workload label: 1 and 4 are one unit, 2 a pod, 3 is in a cgroup no
    /// convention names.
    fn labelled(snapshot: Snapshot) -> Metrics {
        let mut name = |c: CgroupId| match c.get() {
            1 | 4 => Some("nginx.service".to_owned()),
            2 => Some("shop/web".to_owned()),
            _ => None,
        };
        Metrics::label(
            snapshot,
            &mut PortLabels::new(&[], 4),
            &mut WorkloadLabels::new(1),
            &mut name,
        )
    }

    #[test]
    fn unreported_retransmission_timeouts_are_exported_with_their_count() {
        let mut snapshot = empty_snapshot(100 * S);
        snapshot.retransmits.timeouts_unreported = 3;
        let text = Exporter::default().openmetrics(snapshot);
        let value = text
            .lines()
            .find(|l| l.starts_with("observer_retransmit_timeouts_unreported_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok());
        assert_eq!(value, Some(3.0), "{text}");
    }

    #[test]
    fn runs_the_kernel_skipped_are_exported_by_program() {
        let mut snapshot = empty_snapshot(100 * S);
        snapshot.losses.kernel.skipped =
            crate::load::SkippedRuns::new([1, 0, 0, 40, 0, 0, 0, 3, 0]);
        let text = Exporter::default().openmetrics(snapshot);
        let value = |program: &str| {
            let series = format!("observer_program_runs_skipped_total{{program=\"{program}\"}}");
            text.lines()
                .find(|l| l.starts_with(&series))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse::<f64>().ok())
        };
        assert_eq!(
            [
                value("inet_sock_set_state"),
                value("timer_start"),
                value("tcp_retransmit_synack"),
                value("tcp_send_reset"),
            ],
            [Some(1.0), Some(40.0), Some(3.0), Some(0.0)],
            "{text}"
        );
    }

    #[test]
    fn close_wait_by_workload_sums_under_bounded_labels() {
        let group = |cgroup, count, oldest_since_ns| CloseWaitGroup {
            cgroup,
            count,
            oldest_since_ns,
        };
        let mut snapshot = empty_snapshot(100 * S);
        snapshot.close_wait_by_cgroup = vec![
            group(id(1), 3, 10 * S),
            group(None, 2, 20 * S),
            group(id(2), 1, 30 * S),
            group(id(3), 4, 40 * S),
            group(id(4), 1, 50 * S),
        ];
        let m = labelled(snapshot);
        let got: Vec<(&str, u64, f64)> = m
            .close_wait_by_workload
            .iter()
            .map(|(w, c)| (w.value(), c.sockets, c.oldest_seconds))
            .collect();
        assert_eq!(
            got,
            [
                ("nginx.service", 4, 90.0),
                ("other", 1, 70.0),
                ("unknown", 6, 80.0),
            ]
        );
    }

    #[test]
    fn sockets_and_suspects_by_workload_sum_under_bounded_labels() {
        let sockets = |cgroup, established, close_wait| {
            let mut sockets = PerState::<u64>::default();
            sockets[Established] = established;
            sockets[CloseWait] = close_wait;
            CgroupSockets { cgroup, sockets }
        };
        let mut snapshot = empty_snapshot(100 * S);
        snapshot.sockets_by_cgroup = vec![
            sockets(id(1), 5, 3),
            sockets(id(4), 2, 1),
            sockets(id(2), 7, 0),
            sockets(None, 1, 2),
        ];
        snapshot.half_open_by_cgroup = vec![
            HalfOpenGroup {
                cgroup: id(4),
                count: 2,
            },
            HalfOpenGroup {
                cgroup: id(3),
                count: 1,
            },
        ];
        let m = labelled(snapshot);
        let got: Vec<(&str, u64, u64)> = m
            .sockets_by_workload
            .iter()
            .map(|(w, p)| (w.value(), p[Established], p[CloseWait]))
            .collect();
        assert_eq!(
            got,
            [("nginx.service", 7, 4), ("other", 7, 0), ("unknown", 1, 2)]
        );
        let half_open: Vec<(&str, u64)> = m
            .half_open_by_workload
            .iter()
            .map(|(w, n)| (w.value(), *n))
            .collect();
        assert_eq!(half_open, [("nginx.service", 2), ("unknown", 1)]);
    }
}
