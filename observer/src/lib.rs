//! observer: TCP connection states observed with eBPF.
//!
//! The pipeline: [`load`] attaches the eBPF programs, [`events`] reads and [`decode`]s their
//! records, the [`pipeline`] applies them to the [`track`]er (seeded and reconciled from
//! [`sockdiag`] through [`inventory`]), and the tracker's knowledge goes out as Prometheus
//! metrics ([`export`]) and [`alerts`]. [`run`] is the daemon, [`watch`] the live terminal
//! view, both on the one [`pipeline`]; [`config`] is the daemon's configuration file.

pub mod alerts;
pub mod clock;
pub mod config;
pub mod decode;
pub mod doctor;
pub mod event;
pub mod events;
pub mod export;
pub mod inventory;
pub mod kernel;
pub mod listen_queues;
pub mod load;
pub mod pipeline;
pub mod run;
pub mod sockdiag;
pub mod track;
pub mod watch;
