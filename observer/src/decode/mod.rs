//! Ring-buffer records -> typed events.
//!
//! The eBPF programs copy tracepoint records verbatim; this module knows where each field is
//! (from tracefs format files and kernel BTF) and checks every record's kind, version and size.
//! A record that fails a check is an error the caller counts and skips, never a panic.

pub mod encode;
pub mod reset;
pub mod retransmit;
pub mod sock_error;
pub mod state;
pub mod synack;
pub mod timewait;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use observer_common::{
    DIRECT_SPAN_START, RAW_CAPACITY, RecordKind, SpanProbeConfig, SpanRecord, TcpState,
    record::RECORD_VERSION,
};
use thiserror::Error;

pub use reset::ResetLayout;
pub use retransmit::RetransmitLayout;
pub use sock_error::SocketErrorLayout;
pub use state::StateLayout;
pub use synack::SynackLayout;
pub use timewait::TimerLayout;

use crate::{
    event::{Event, Family, Task},
    kernel::tracefs::{Field, Format, TracefsError},
};

pub(crate) const AF_INET: u16 = 2;
pub(crate) const AF_INET6: u16 = 10;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("record kind {0} is unknown")]
    UnknownKind(u16),
    #[error("record kind {0} arrived, but this daemon did not enable it")]
    NotEnabled(u16),
    #[error(
        "record version {found}, expected {RECORD_VERSION}: the eBPF object and the daemon do not match"
    )]
    Version { found: u16 },
    #[error("record of {found} bytes (header says {header}), expected {expected}")]
    Size {
        found: usize,
        header: u32,
        expected: usize,
    },
    #[error("record carries {0} bytes of tracepoint data, fewer than the layout needs")]
    Truncated(u32),
    #[error("unknown TCP state {0}")]
    UnknownState(i64),
    #[error("unknown address family {0}")]
    UnknownFamily(u64),
    #[error("unknown timer event {0}")]
    UnknownTimerEvent(u8),
}

/// The span of a tracepoint record that a [`SpanRecord`] carries, at its full capacity.
pub(crate) type Span = [u8; RAW_CAPACITY];

/// Decodes every record kind the loaded programs produce on this kernel.
#[derive(Clone, Debug)]
pub struct Decoder {
    pub state: StateLayout,
    /// `None` when the kernel lacks the tracepoint (the program was not attached).
    pub send_reset: Option<ResetLayout>,
    pub receive_reset: Option<ResetLayout>,
    pub timer: Option<TimerLayout>,
    pub retransmit: Option<RetransmitLayout>,
    pub retransmit_synack: Option<SynackLayout>,
    pub sock_error: Option<SocketErrorLayout>,
}

impl Decoder {
    pub fn decode(&self, bytes: &[u8]) -> Result<Event, DecodeError> {
        if bytes.len() < 8 {
            return Err(DecodeError::Short(bytes.len()));
        }
        let raw_kind = u16::from_ne_bytes([bytes[0], bytes[1]]);
        let kind = RecordKind::from_u16(raw_kind).ok_or(DecodeError::UnknownKind(raw_kind))?;
        let off = || DecodeError::NotEnabled(raw_kind);
        match kind {
            RecordKind::StateChange => self.state.decode_event(bytes),
            RecordKind::SendReset => self
                .send_reset
                .as_ref()
                .ok_or_else(off)?
                .decode(bytes)
                .map(Event::Reset),
            RecordKind::ReceiveReset => self
                .receive_reset
                .as_ref()
                .ok_or_else(off)?
                .decode(bytes)
                .map(Event::Reset),
            RecordKind::TimewaitTimer | RecordKind::TimewaitEnd => self
                .timer
                .as_ref()
                .ok_or_else(off)?
                .decode(bytes)
                .map(Event::Timewait),
            RecordKind::Retransmit => self
                .retransmit
                .as_ref()
                .ok_or_else(off)?
                .decode(bytes)
                .map(Event::Retransmit),
            RecordKind::RetransmitSynack => self
                .retransmit_synack
                .as_ref()
                .ok_or_else(off)?
                .decode(bytes)
                .map(Event::Retransmit),
            RecordKind::SocketError => self
                .sock_error
                .as_ref()
                .ok_or_else(off)?
                .decode(bytes)
                .map(Event::SocketError),
        }
    }
}

/// Refuses a record of another kind than the layout decodes.
pub(crate) fn check_kind(bytes: &[u8], expected: RecordKind) -> Result<(), DecodeError> {
    match bytes {
        [a, b, ..] if u16::from_ne_bytes([*a, *b]) != expected as u16 => {
            Err(DecodeError::UnknownKind(u16::from_ne_bytes([*a, *b])))
        }
        _ => Ok(()),
    }
}

/// Addresses stored as separate ports, family, and IPv4 and IPv6 addresses (the layout of
/// `inet_sock_set_state`, `tcp_receive_reset`, and `tcp_send_reset` before Linux 6.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SplitAddresses {
    sport: Field,
    dport: Field,
    family: Field,
    saddr: Field,
    daddr: Field,
    saddr_v6: Field,
    daddr_v6: Field,
}

impl SplitAddresses {
    /// The fields, of the widths every kernel since 4.16 gives them (`__u16` ports and family,
    /// `__u8[4]` and `__u8[16]` addresses): they are read at those widths.
    pub fn from_format(format: &Format) -> Result<Self, TracefsError> {
        Ok(Self {
            sport: format.sized_field("sport", 2)?,
            dport: format.sized_field("dport", 2)?,
            family: format.sized_field("family", 2)?,
            saddr: format.sized_field("saddr", 4)?,
            daddr: format.sized_field("daddr", 4)?,
            saddr_v6: format.sized_field("saddr_v6", 16)?,
            daddr_v6: format.sized_field("daddr_v6", 16)?,
        })
    }

    pub const fn fields(&self) -> [Field; 7] {
        [
            self.sport,
            self.dport,
            self.family,
            self.saddr,
            self.daddr,
            self.saddr_v6,
            self.daddr_v6,
        ]
    }

    pub const fn relative_to(self, start: usize) -> Self {
        Self {
            sport: self.sport.relative_to(start),
            dport: self.dport.relative_to(start),
            family: self.family.relative_to(start),
            saddr: self.saddr.relative_to(start),
            daddr: self.daddr.relative_to(start),
            saddr_v6: self.saddr_v6.relative_to(start),
            daddr_v6: self.daddr_v6.relative_to(start),
        }
    }

    /// (family, source, destination) from the copied span.
    #[expect(
        clippy::inline_always,
        reason = "measured: its result is then not copied"
    )]
    #[inline(always)]
    pub fn decode(&self, raw: &Span) -> Result<(Family, SocketAddr, SocketAddr), DecodeError> {
        // Each field's width was checked against the format (`from_format`).
        let (sport, dport) = (
            u16::from_ne_bytes(fixed(raw, self.sport.offset)),
            u16::from_ne_bytes(fixed(raw, self.dport.offset)),
        );
        let (family, src, dst) = match u16::from_ne_bytes(fixed(raw, self.family.offset)) {
            AF_INET => (
                Family::Ipv4,
                IpAddr::V4(Ipv4Addr::from(fixed::<4, _>(raw, self.saddr.offset))),
                IpAddr::V4(Ipv4Addr::from(fixed::<4, _>(raw, self.daddr.offset))),
            ),
            AF_INET6 => (
                Family::Ipv6,
                IpAddr::V6(Ipv6Addr::from(fixed::<16, _>(raw, self.saddr_v6.offset))),
                IpAddr::V6(Ipv6Addr::from(fixed::<16, _>(raw, self.daddr_v6.offset))),
            ),
            v => return Err(DecodeError::UnknownFamily(u64::from(v))),
        };
        Ok((
            family,
            SocketAddr::new(src, sport),
            SocketAddr::new(dst, dport),
        ))
    }
}

/// Checks a record's header and size, and copies it out of the ring buffer.
pub(crate) fn read_record<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    check_header::<T>(bytes)?;
    // SAFETY: the length matches, and callers only instantiate this with the plain-old-data
    // record types below; read_unaligned because the ring buffer guarantees only 8 bytes.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

/// A record's timestamp (`CLOCK_MONOTONIC` ns), which every record kind has right after its
/// header; `None` unless the header is of this daemon's version and gives the record's length.
#[must_use]
pub fn record_time(bytes: &[u8]) -> Option<u64> {
    const AT: usize = size_of::<observer_common::RecordHeader>();
    let (version, size) = version_and_size(bytes)?;
    if version != RECORD_VERSION || usize::try_from(size).ok()? != bytes.len() {
        return None;
    }
    Some(u64::from_ne_bytes(bytes.get(AT..AT + 8)?.try_into().ok()?))
}

/// The version and the size a record's header gives; `None` when it is too short for them.
fn version_and_size(bytes: &[u8]) -> Option<(u16, u32)> {
    Some((
        u16::from_ne_bytes(bytes.get(2..4)?.try_into().ok()?),
        u32::from_ne_bytes(bytes.get(4..8)?.try_into().ok()?),
    ))
}

/// Checks that `bytes` are a whole record of type `T`, of this daemon's version.
fn check_header<T>(bytes: &[u8]) -> Result<(), DecodeError> {
    let expected = size_of::<T>();
    let Some((version, header_size)) = version_and_size(bytes) else {
        return Err(DecodeError::Short(bytes.len()));
    };
    if version != RECORD_VERSION {
        return Err(DecodeError::Version { found: version });
    }
    if bytes.len() != expected || header_size as usize != expected {
        return Err(DecodeError::Size {
            found: bytes.len(),
            header: header_size,
            expected,
        });
    }
    Ok(())
}

/// A [`SpanRecord`] read in place in the ring buffer: copying all of it out (152 bytes) cost
/// more than reading the few fields a record's decoding needs (callgrind).
pub(crate) struct SpanView<'a>(&'a [u8; size_of::<SpanRecord>()]);

/// `N` bytes at a constant offset of a whole record: no bounds check survives compilation.
macro_rules! span_field {
    ($view:expr, $field:ident, $ty:ty) => {
        <$ty>::from_ne_bytes(fixed($view.0, std::mem::offset_of!(SpanRecord, $field)))
    };
}

impl<'a> SpanView<'a> {
    pub fn ts_ns(&self) -> u64 {
        span_field!(self, ts_ns, u64)
    }

    pub fn pid_tgid(&self) -> u64 {
        span_field!(self, pid_tgid, u64)
    }

    pub fn cgroup(&self) -> u64 {
        span_field!(self, cgroup, u64)
    }

    pub fn netns(&self) -> u32 {
        span_field!(self, netns, u32)
    }

    pub fn flags(&self) -> u16 {
        span_field!(self, flags, u16)
    }

    fn raw_len(&self) -> usize {
        span_field!(self, raw_len, u16) as usize
    }

    pub fn comm(&self) -> [u8; 16] {
        fixed(self.0, std::mem::offset_of!(SpanRecord, comm))
    }

    /// The span of the tracepoint record, whole: the bytes the program copied (at least the
    /// layout's `needed`, checked by [`read_span`]), then whatever the ring held. A fixed size,
    /// so that reading a field checks no length.
    #[inline]
    pub fn raw(&self) -> &'a Span {
        const START: usize = std::mem::offset_of!(SpanRecord, raw);
        self.0[START..START + RAW_CAPACITY]
            .try_into()
            .expect("a record holds its span")
    }
}

/// Checks a [`SpanRecord`]'s header and size, and that its span holds at least `needed`
/// bytes.
pub(crate) fn read_span(bytes: &[u8], needed: usize) -> Result<SpanView<'_>, DecodeError> {
    check_header::<SpanRecord>(bytes)?;
    let view = SpanView(bytes.try_into().expect("the size was checked"));
    if view.raw_len() < needed || view.raw_len() > RAW_CAPACITY {
        return Err(DecodeError::Truncated(u32::from(span_field!(
            view, raw_len, u16
        ))));
    }
    Ok(view)
}

/// The span of a tracepoint record that holds `fields`: (start, end). It starts at
/// [`DIRECT_SPAN_START`] when it fits from there, so that the program copies it without a helper
/// call; else at the first field.
pub(crate) fn span_bounds(event: &str, fields: &[Field]) -> Result<(usize, usize), TracefsError> {
    let first = fields.iter().map(|f| f.offset).min().unwrap_or(0);
    let end = fields.iter().map(|f| f.offset + f.size).max().unwrap_or(0);
    let start = if first >= DIRECT_SPAN_START && end - DIRECT_SPAN_START <= RAW_CAPACITY {
        DIRECT_SPAN_START
    } else {
        first
    };
    if end - start > RAW_CAPACITY {
        return Err(TracefsError::MissingField {
            path: format!("{event}/format").into(),
            field: format!(
                "(fields span {} bytes, more than the {RAW_CAPACITY} supported)",
                end - start
            ),
        });
    }
    Ok((start, end))
}

/// The eBPF configuration of a span-copying program: the span `start..end` of its record,
/// and where `skaddr` is. Callers add what else their program reads.
pub(crate) fn span_config(start: usize, end: usize, skaddr: Field) -> SpanProbeConfig {
    SpanProbeConfig {
        configured: 1,
        span_start: as_u32(start),
        span_len: as_u32(end - start),
        skaddr_offset: as_u32(skaddr.offset),
        ..SpanProbeConfig::UNSET
    }
}

/// A TCP state field of a tracepoint record.
#[expect(
    clippy::inline_always,
    reason = "several per record; a call costs more than the read (callgrind)"
)]
#[inline(always)]
pub(crate) fn read_state(raw: &Span, f: Field) -> Result<TcpState, DecodeError> {
    let v = read_int(raw, f);
    i32::try_from(v)
        .ok()
        .and_then(TcpState::from_kernel)
        .ok_or(DecodeError::UnknownState(v.cast_signed()))
}

pub(crate) fn as_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Reads an unsigned native-endian integer field of size 1, 2, 4 or 8. Always inlined: a
/// record has several, and a call each cost more than the read.
#[expect(
    clippy::inline_always,
    reason = "several per record; a call costs more than the read (callgrind)"
)]
#[inline(always)]
pub(crate) fn read_int(raw: &Span, f: Field) -> u64 {
    // The sizes fields have, read at a fixed width: a copy of a run-time length is a call to
    // memcpy, several per record.
    let at = f.offset;
    match f.size {
        1 => return u64::from(raw[at]),
        2 => return u64::from(u16::from_ne_bytes(fixed(raw, at))),
        4 => return u64::from(u32::from_ne_bytes(fixed(raw, at))),
        8 => return u64::from_ne_bytes(fixed(raw, at)),
        _ => {}
    }
    let mut buf = [0u8; 8];
    let n = f.size.min(8);
    let bytes = &raw[f.offset..f.offset + n];
    if cfg!(target_endian = "little") {
        buf[..n].copy_from_slice(bytes);
        u64::from_le_bytes(buf)
    } else {
        buf[8 - n..].copy_from_slice(bytes);
        u64::from_be_bytes(buf)
    }
}

/// `N` bytes at `at` of a buffer of `L`. Every field offset was checked against the span
/// when its layout was built (`span_bounds`), so the clamp moves no read: it only proves the
/// read in bounds, which drops a length check per field (callgrind: 5 instructions each).
#[expect(
    clippy::inline_always,
    reason = "several per record; a call costs more than the read (callgrind)"
)]
#[inline(always)]
fn fixed<const N: usize, const L: usize>(raw: &[u8; L], at: usize) -> [u8; N] {
    debug_assert!(at + N <= L, "field at {at} past the end of the span");
    let at = at.min(L - N);
    raw[at..at + N].try_into().expect("a slice of N bytes")
}

/// Decodes a `struct sockaddr_in`/`sockaddr_in6` as the reset tracepoints store them.
pub(crate) fn sockaddr(raw: &[u8], f: Field) -> Result<(Family, SocketAddr), DecodeError> {
    let b = &raw[f.offset..f.offset + f.size];
    if b.len() < 8 {
        return Err(DecodeError::Truncated(as_u32(b.len())));
    }
    let family = u16::from_ne_bytes([b[0], b[1]]);
    let port = u16::from_be_bytes([b[2], b[3]]);
    match family {
        AF_INET => {
            let ip = Ipv4Addr::from(<[u8; 4]>::try_from(&b[4..8]).expect("4 bytes"));
            Ok((Family::Ipv4, SocketAddr::new(IpAddr::V4(ip), port)))
        }
        AF_INET6 if b.len() >= 24 => {
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&b[8..24]).expect("16 bytes"));
            Ok((Family::Ipv6, SocketAddr::new(IpAddr::V6(ip), port)))
        }
        other => Err(DecodeError::UnknownFamily(u64::from(other))),
    }
}

#[cfg(test)]
mod tests {
    use observer_common::RecordKind;

    use super::{
        DecodeError, Decoder,
        encode::{bytes_of, empty_span},
    };

    #[test]
    fn records_of_programs_not_attached_are_refused_by_kind() {
        let decoder = Decoder {
            state: crate::decode::state::tests::layout().0,
            send_reset: None,
            receive_reset: None,
            timer: None,
            retransmit: None,
            retransmit_synack: None,
            sock_error: None,
        };
        for kind in [
            RecordKind::Retransmit,
            RecordKind::RetransmitSynack,
            RecordKind::SocketError,
        ] {
            assert_eq!(
                decoder.decode(bytes_of(&empty_span(kind))),
                Err(DecodeError::NotEnabled(kind as u16))
            );
        }
        assert_eq!(
            decoder.decode(&99u64.to_ne_bytes()),
            Err(DecodeError::UnknownKind(99))
        );
    }

    #[test]
    fn a_span_starts_after_the_common_fields_when_it_fits_from_there() {
        use crate::kernel::tracefs::Field;
        let field = |offset, size| Field { offset, size };
        // Copied with plain loads: from byte 8, even when the first field is further on.
        assert_eq!(
            super::span_bounds("e", &[field(16, 8), field(40, 16)]).ok(),
            Some((8, 56))
        );
        assert_eq!(
            super::span_bounds("e", &[field(8, 8), field(100, 4)]).ok(),
            Some((8, 104))
        );
        // Too long from byte 8: from the first field, by a helper call.
        assert_eq!(
            super::span_bounds("e", &[field(16, 8), field(106, 4)]).ok(),
            Some((16, 110))
        );
        assert!(super::span_bounds("e", &[field(8, 8), field(106, 4)]).is_err());
    }

    #[test]
    fn a_record_gives_its_time_only_when_its_header_is_of_this_layout() {
        let mut rec = empty_span(RecordKind::StateChange);
        rec.ts_ns = 123_456_789;
        assert_eq!(super::record_time(bytes_of(&rec)), Some(123_456_789));
        // Cut short, or longer than its header says.
        let bytes = bytes_of(&rec);
        assert_eq!(super::record_time(&bytes[..bytes.len() - 8]), None);
        assert_eq!(super::record_time(&bytes[..4]), None);
        let mut longer = bytes.to_vec();
        longer.extend([0; 8]);
        assert_eq!(super::record_time(&longer), None);
        rec.header.version += 1;
        assert_eq!(super::record_time(bytes_of(&rec)), None);
    }
}
