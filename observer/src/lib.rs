//! observer: TCP connection states observed with eBPF.
//!
//! The pipeline, in module order: [`load`] attaches the eBPF programs, [`events`] reads and
//! [`decode`]s their records, [`track`] keeps per-connection state (seeded and reconciled from
//! [`sockdiag`] through [`inventory`]), and [`watch`] shows it live.

pub mod decode;
pub mod events;
pub mod inventory;
pub mod load;
pub mod sockdiag;
pub mod track;
pub mod watch;
