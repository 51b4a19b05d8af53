//! Types shared by the eBPF programs and the userspace daemon.
//!
//! Everything that crosses the ring buffer or is handed to the kernel as a global lives here:
//! `#[repr(C)]`, explicit padding, explicit discriminants, sizes checked at compile time.
#![no_std]

pub mod probe_config;
pub mod record;
pub mod tcp_state;

pub use probe_config::{
    SockErrorProbeConfig, SpanProbeConfig, SynackProbeConfig, TimerProbeConfig,
};
pub use record::{
    DIRECT_SPAN_START, RAW_CAPACITY, RecordHeader, RecordKind, SocketErrorRecord, SpanRecord,
    SynackRecord, TimerEndRecord, TimerRecord,
};
pub use tcp_state::TcpState;
