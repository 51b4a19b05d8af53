//! observer: TCP connection states observed with eBPF.
//!
//! Floors, bottom first; a module imports only from floors below it (checked by a test):
//! 1. [`kernel`] (facts about this host), [`event`] (the decoded events every stage speaks),
//!    [`clock`], [`human`] (durations, counts and errno names as people read them).
//! 2. [`decode`]: record layouts -> events.
//! 3. [`track`] (the pure connection tracker), [`load`] (programs, maps, the kernel contract).
//! 4. [`stream`] (ring buffer -> events), [`sockdiag`] (netlink dumps), [`config`],
//!    [`workload`] (cgroup ids -> units, containers, pods).
//! 5. [`alerts`], [`doctor`], [`listen_queues`].
//! 6. [`snapshot`] (the one read model front-ends read), [`inventory`] (sock_diag -> tracker).
//! 7. [`export`] (Prometheus metrics), the [`pipeline`] core (stream -> tracker, seeding
//!    and reconciliation, listener samples, alert evaluation, losses), and [`wire`] (the JSON
//!    lines of watch and of the daemon's socket: events, filters, requests, the read model).
//! 8. Front-ends on the one pipeline: [`run`] (the daemon, its socket among its outputs),
//!    [`watch`] (the live stream) and [`top`] (the full-screen view), each a client of the
//!    daemon's socket or standalone.

pub mod alerts;
pub mod clock;
pub mod config;
pub mod decode;
pub mod doctor;
pub mod event;
pub mod export;
#[cfg(test)]
mod floors;
pub mod human;
pub mod inventory;
pub mod kernel;
pub mod listen_queues;
pub mod load;
pub mod pipeline;
pub mod run;
pub mod snapshot;
pub mod sockdiag;
pub mod stream;
pub mod top;
pub mod track;
pub mod watch;
pub mod wire;
pub mod workload;
