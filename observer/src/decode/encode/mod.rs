//! Events -> records as the eBPF programs write them, for replaying events in tests and
//! benchmarks: the inverse of the decoder, for the same layouts (tracefs formats, struct offsets
//! from BTF, and the probe configurations built from them).
//!
//! A span record gets its whole tracepoint record written field by field from the format, of
//! which it keeps the span its program copies; a timer, socket-error or SYN-ACK record gets the
//! socket's
//! `struct sock_common` written from the BTF offsets, of which it keeps the bytes its program
//! copies. Nothing here reads the decoder's layouts, so a round trip checks them.

pub mod linux_6_18;
mod sock_common;
mod span;
#[cfg(test)]
mod tests;

use observer_common::{
    RAW_CAPACITY, RecordHeader, RecordKind, SocketErrorRecord, SpanProbeConfig, SpanRecord,
    SynackRecord, TimerEndRecord, TimerRecord,
};
use thiserror::Error;

pub use sock_common::{SocketErrorEncoder, SynackEncoder, TimerEncoder};
pub use span::{ResetEncoder, RetransmitEncoder, StateEncoder};

use crate::{
    event::{Event, Netns, ResetDirection, RetransmitKind, Task},
    kernel::tracefs::Field,
};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("no encoder for {0:?} records")]
    NotEnabled(RecordKind),
}

/// Writes events as the programs do on one kernel; `None` for a program not attached.
#[derive(Clone, Debug, Default)]
pub struct Encoder {
    pub state: Option<StateEncoder>,
    pub send_reset: Option<ResetEncoder>,
    pub receive_reset: Option<ResetEncoder>,
    pub timer: Option<TimerEncoder>,
    pub retransmit: Option<RetransmitEncoder>,
    pub retransmit_synack: Option<SynackEncoder>,
    pub sock_error: Option<SocketErrorEncoder>,
}

impl Encoder {
    /// Appends the record the programs write for `event`.
    pub fn encode(&self, event: &Event, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        fn enabled<T>(encoder: Option<&T>, kind: RecordKind) -> Result<&T, EncodeError> {
            encoder.ok_or(EncodeError::NotEnabled(kind))
        }
        match event {
            Event::Transition(t) => {
                enabled(self.state.as_ref(), RecordKind::StateChange)?.encode(t, out);
            }
            Event::Reset(r) => {
                let (encoder, kind) = match r.direction {
                    ResetDirection::Sent => (&self.send_reset, RecordKind::SendReset),
                    ResetDirection::Received => (&self.receive_reset, RecordKind::ReceiveReset),
                };
                enabled(encoder.as_ref(), kind)?.encode(r, out);
            }
            Event::Timewait(t) => {
                enabled(self.timer.as_ref(), RecordKind::TimewaitTimer)?.encode(t, out);
            }
            Event::Retransmit(r) => match r.kind {
                RetransmitKind::Segment => {
                    enabled(self.retransmit.as_ref(), RecordKind::Retransmit)?.encode(r, out);
                }
                RetransmitKind::Synack => {
                    enabled(
                        self.retransmit_synack.as_ref(),
                        RecordKind::RetransmitSynack,
                    )?
                    .encode(r, out);
                }
            },
            Event::SocketError(e) => {
                enabled(self.sock_error.as_ref(), RecordKind::SocketError)?.encode(e, out);
            }
        }
        Ok(())
    }
}

mod sealed {
    pub trait Sealed {}
}

/// The ring-buffer record types: `repr(C)` plain old data without padding.
pub trait Record: Copy + sealed::Sealed {}

impl sealed::Sealed for SpanRecord {}
impl Record for SpanRecord {}
impl sealed::Sealed for TimerRecord {}
impl Record for TimerRecord {}
impl sealed::Sealed for TimerEndRecord {}
impl Record for TimerEndRecord {}
impl sealed::Sealed for SocketErrorRecord {}
impl Record for SocketErrorRecord {}
impl sealed::Sealed for SynackRecord {}
impl Record for SynackRecord {}

/// The bytes of a record, as the ring buffer hands them out.
pub fn bytes_of<R: Record>(rec: &R) -> &[u8] {
    // SAFETY: `Record` is sealed to the record types: plain old data without padding, so every
    // byte is initialized.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(rec).cast::<u8>(), size_of::<R>()) }
}

/// A span record of `kind` with everything but its header zero: set its context, then
/// [`copy_span`] a tracepoint record into it.
#[must_use]
pub const fn empty_span(kind: RecordKind) -> SpanRecord {
    SpanRecord {
        header: RecordHeader::new(kind, size_of::<SpanRecord>()),
        ts_ns: 0,
        pid_tgid: 0,
        cgroup: 0,
        netns: 0,
        raw_len: 0,
        flags: 0,
        comm: [0; 16],
        raw: [0; RAW_CAPACITY],
    }
}

/// The bytes a span program writes for the kernel's tracepoint record `tracepoint`: `rec`
/// with the configured span copied into it.
#[must_use]
pub fn copy_span(mut rec: SpanRecord, tracepoint: &[u8], config: &SpanProbeConfig) -> Vec<u8> {
    Copied::span(&mut rec, config).put(0, tracepoint);
    bytes_of(&rec).to_vec()
}

/// A span record's context: when, on which task, in which network namespace.
fn span_context(
    kind: RecordKind,
    mono_ns: u64,
    task: Option<&Task>,
    netns: Option<Netns>,
) -> SpanRecord {
    let mut rec = empty_span(kind);
    rec.ts_ns = mono_ns;
    rec.netns = Netns::inode_or_zero(netns);
    if let Some(task) = task {
        rec.pid_tgid = (u64::from(task.pid) << 32) | u64::from(task.tid);
        // The name as the kernel keeps it: at most 15 bytes and a NUL.
        let name = task.comm();
        let n = name.len().min(15);
        rec.comm[..n].copy_from_slice(&name.as_bytes()[..n]);
    }
    rec
}

/// The bytes of a kernel object that a program copies: those from `start` on, as many as
/// `bytes` holds. A value written into the object lands in the copy where they overlap.
struct Copied<'a> {
    bytes: &'a mut [u8],
    start: usize,
}

impl<'a> Copied<'a> {
    /// The configured span of a tracepoint record, in `rec`.
    fn span(rec: &'a mut SpanRecord, config: &SpanProbeConfig) -> Self {
        let len = (config.span_len as usize).min(RAW_CAPACITY);
        rec.raw_len = u16::try_from(len).expect("at most RAW_CAPACITY");
        Self {
            bytes: &mut rec.raw[..len],
            start: config.span_start as usize,
        }
    }

    /// The first bytes of an object, into `copy`.
    fn prefix(copy: &'a mut [u8]) -> Self {
        Self {
            bytes: copy,
            start: 0,
        }
    }

    /// Writes `value` at `offset` of the object.
    fn put(&mut self, offset: usize, value: &[u8]) {
        for (at, byte) in (offset..).zip(value) {
            if let Some(slot) = at
                .checked_sub(self.start)
                .and_then(|i| self.bytes.get_mut(i))
            {
                *slot = *byte;
            }
        }
    }

    /// Writes a native-endian integer field of 1 to 8 bytes: the inverse of `read_int`.
    fn int(&mut self, f: Field, value: u64) {
        let n = f.size.min(8);
        let bytes = value.to_ne_bytes();
        if cfg!(target_endian = "little") {
            self.put(f.offset, &bytes[..n]);
        } else {
            self.put(f.offset, &bytes[8 - n..]);
        }
    }

    /// Writes a byte-array field, cut to its size.
    fn octets(&mut self, f: Field, value: &[u8]) {
        self.put(f.offset, &value[..value.len().min(f.size)]);
    }
}
