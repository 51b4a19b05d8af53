//! Prometheus metrics: a [`Snapshot`] labelled and encoded as OpenMetrics text.
//!
//! A scrape copies a snapshot under the pipeline's lock; labelling and encoding happen here,
//! after the lock is released, so a slow client never holds up event processing. Every label
//! is bounded by construction: states, RST classes and causes are closed sets, ports are
//! [`PortLabels`], alert names come from the configuration.

mod encode;
mod ports;
pub mod text_format;

use std::sync::{Mutex, PoisonError};

use rustc_hash::FxHashMap;

pub use self::ports::{PortLabel, PortLabels};
use crate::{clock::seconds, snapshot::Snapshot, track::NeverAccepted};

/// Encodes snapshots, keeping each port's label from one scrape to the next.
#[derive(Debug)]
pub struct Exporter {
    ports: Mutex<PortLabels>,
}

impl Exporter {
    /// `configured` ports get labels; none configured: the first `max` ports seen.
    #[must_use]
    pub fn new(configured: &[u16], max: usize) -> Self {
        Self {
            ports: Mutex::new(PortLabels::new(configured, max)),
        }
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
            Metrics::label(snapshot, &mut ports)
        };
        encode::openmetrics(metrics)
    }
}

impl Default for Exporter {
    fn default() -> Self {
        Self::new(&[], crate::config::DEFAULT_MAX_PORT_LABELS)
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
}

impl Metrics {
    fn label(s: Snapshot, ports: &mut PortLabels) -> Self {
        let mut closed: FxHashMap<PortLabel, NeverAccepted> = FxHashMap::default();
        for c in &s.closed_before_accept {
            let slot = closed.entry(ports.label(c.listener.port)).or_default();
            slot.peer_closed += c.counts.peer_closed;
            slot.peer_reset += c.counts.peer_reset;
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
            s,
        }
    }
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
