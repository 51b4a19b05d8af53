//! Ring-buffer records -> typed transitions.
//!
//! The eBPF program copies the tracepoint record verbatim; this module knows where each field
//! is (from the tracefs format file) and checks every record's kind, version and size. A record
//! that fails a check is an error the caller counts and skips, never a panic.

use std::{
    borrow::Cow,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use observer_common::{
    RAW_CAPACITY, RecordKind, StateProbeConfig, StateRecord, TcpState, record::RECORD_VERSION,
};
use thiserror::Error;

use crate::load::tracefs::{Field, Format, TracefsError};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("record kind {0} is unknown")]
    UnknownKind(u16),
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
}

/// IPv4 or IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        }
    }
}

/// The task that was running on the CPU when the transition happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task {
    /// Process id (the kernel's tgid).
    pub pid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    comm: [u8; 16],
}

impl Task {
    #[must_use]
    pub fn new(pid: u32, tid: u32, comm: [u8; 16]) -> Self {
        Self { pid, tid, comm }
    }

    /// The task's command name (up to 15 bytes, as the kernel keeps it).
    #[must_use]
    pub fn comm(&self) -> Cow<'_, str> {
        let len = self
            .comm
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(self.comm.len());
        String::from_utf8_lossy(&self.comm[..len])
    }
}

/// One TCP state transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub mono_ns: u64,
    /// Kernel address of the socket: its identity while it lives (reused after it is freed).
    pub sock: u64,
    pub old: TcpState,
    pub new: TcpState,
    pub family: Family,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Network namespace inode, when the kernel offsets for it were known.
    pub netns: Option<u32>,
    pub task: Task,
    /// Whether `task` is the socket's owner (see [`TcpState::in_owner_context`]).
    pub owner_context: bool,
}

/// Where each `inet_sock_set_state` field sits in the copied span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateLayout {
    skaddr: Field,
    oldstate: Field,
    newstate: Field,
    sport: Field,
    dport: Field,
    family: Field,
    saddr: Field,
    daddr: Field,
    saddr_v6: Field,
    daddr_v6: Field,
    /// Bytes of the span the fields above need.
    needed: usize,
}

impl StateLayout {
    /// Builds the decoding layout and the eBPF configuration from the tracepoint's format.
    /// Kernel struct offsets (for the netns) are filled in by the loader.
    #[expect(clippy::similar_names, reason = "the kernel's field names")]
    pub fn from_format(format: &Format) -> Result<(Self, StateProbeConfig), TracefsError> {
        let names = [
            "skaddr", "oldstate", "newstate", "sport", "dport", "family", "saddr", "daddr",
            "saddr_v6", "daddr_v6",
        ];
        let mut fields = [Field { offset: 0, size: 0 }; 10];
        for (slot, name) in fields.iter_mut().zip(names) {
            *slot = format.field(name)?;
        }
        let protocol = format.field("protocol")?;
        let start = fields
            .iter()
            .chain([&protocol])
            .map(|f| f.offset)
            .min()
            .unwrap_or(0);
        let end = fields
            .iter()
            .chain([&protocol])
            .map(|f| f.offset + f.size)
            .max()
            .unwrap_or(0);
        if end - start > RAW_CAPACITY {
            return Err(TracefsError::MissingField {
                path: "inet_sock_set_state/format".into(),
                field: format!(
                    "(fields span {} bytes, more than the {RAW_CAPACITY} supported)",
                    end - start
                ),
            });
        }
        let rel = |f: Field| Field {
            offset: f.offset - start,
            size: f.size,
        };
        let [
            skaddr,
            oldstate,
            newstate,
            sport,
            dport,
            family,
            saddr,
            daddr,
            saddr_v6,
            daddr_v6,
        ] = fields.map(rel);
        let layout = Self {
            skaddr,
            oldstate,
            newstate,
            sport,
            dport,
            family,
            saddr,
            daddr,
            saddr_v6,
            daddr_v6,
            needed: end - start,
        };
        let as_u32 = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        let config = StateProbeConfig {
            configured: 1,
            span_start: as_u32(start),
            span_len: as_u32(end - start),
            protocol_offset: as_u32(protocol.offset),
            protocol_size: as_u32(protocol.size),
            skaddr_offset: as_u32(skaddr.offset + start),
            ..StateProbeConfig::UNSET
        };
        Ok((layout, config))
    }

    /// Decodes one ring-buffer record.
    pub fn decode(&self, bytes: &[u8]) -> Result<Transition, DecodeError> {
        let expected = size_of::<StateRecord>();
        if bytes.len() < 8 {
            return Err(DecodeError::Short(bytes.len()));
        }
        let u16_at = |o: usize| u16::from_ne_bytes([bytes[o], bytes[o + 1]]);
        let (kind, version) = (u16_at(0), u16_at(2));
        let header_size = u32::from_ne_bytes(bytes[4..8].try_into().expect("4 bytes"));
        if kind != RecordKind::StateChange as u16 {
            return Err(DecodeError::UnknownKind(kind));
        }
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
        // SAFETY: the length matches and StateRecord is plain old data; read_unaligned because
        // the ring buffer guarantees only 8-byte alignment, which is all StateRecord needs anyway.
        let rec: StateRecord = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        if (rec.raw_len as usize) < self.needed || rec.raw_len as usize > RAW_CAPACITY {
            return Err(DecodeError::Truncated(rec.raw_len));
        }
        let raw = &rec.raw[..rec.raw_len as usize];
        let state = |f: Field| {
            let v = read_int(raw, f);
            i32::try_from(v)
                .ok()
                .and_then(TcpState::from_kernel)
                .ok_or(DecodeError::UnknownState(v.cast_signed()))
        };
        let old = state(self.oldstate)?;
        let new = state(self.newstate)?;
        #[expect(clippy::cast_possible_truncation, reason = "ports are 16-bit fields")]
        let (sport, dport) = (
            read_int(raw, self.sport) as u16,
            read_int(raw, self.dport) as u16,
        );
        let (family, src, dst) = match read_int(raw, self.family) {
            v if v == u64::from(AF_INET) => (
                Family::Ipv4,
                IpAddr::V4(Ipv4Addr::from(octets::<4>(raw, self.saddr))),
                IpAddr::V4(Ipv4Addr::from(octets::<4>(raw, self.daddr))),
            ),
            v if v == u64::from(AF_INET6) => (
                Family::Ipv6,
                IpAddr::V6(Ipv6Addr::from(octets::<16>(raw, self.saddr_v6))),
                IpAddr::V6(Ipv6Addr::from(octets::<16>(raw, self.daddr_v6))),
            ),
            v => return Err(DecodeError::UnknownFamily(v)),
        };
        #[expect(clippy::cast_possible_truncation, reason = "splitting pid_tgid")]
        let task = Task::new((rec.pid_tgid >> 32) as u32, rec.pid_tgid as u32, rec.comm);
        Ok(Transition {
            mono_ns: rec.ts_ns,
            sock: read_int(raw, self.skaddr),
            old,
            new,
            family,
            local: SocketAddr::new(src, sport),
            remote: SocketAddr::new(dst, dport),
            netns: (rec.netns != 0).then_some(rec.netns),
            task,
            owner_context: TcpState::in_owner_context(old, new),
        })
    }
}

/// Reads an unsigned native-endian integer field of size 1, 2, 4 or 8.
fn read_int(raw: &[u8], f: Field) -> u64 {
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

fn octets<const N: usize>(raw: &[u8], f: Field) -> [u8; N] {
    let mut out = [0u8; N];
    let n = f.size.min(N);
    out[..n].copy_from_slice(&raw[f.offset..f.offset + n]);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use observer_common::RecordHeader;

    use super::*;
    use crate::load::tracefs::tests::INET_SOCK_SET_STATE_6_18;

    pub fn layout() -> (StateLayout, StateProbeConfig) {
        let format = Format::parse("format".into(), INET_SOCK_SET_STATE_6_18);
        StateLayout::from_format(&format).unwrap()
    }

    /// Builds a record the way the eBPF program does on a 6.18 kernel.
    pub fn record(old: i32, new: i32, family: u16, ts_ns: u64) -> Vec<u8> {
        let (_, cfg) = layout();
        let mut tp = [0u8; 72];
        tp[8..16].copy_from_slice(&0xffff_8880_1234_5678u64.to_ne_bytes());
        tp[16..20].copy_from_slice(&old.to_ne_bytes());
        tp[20..24].copy_from_slice(&new.to_ne_bytes());
        tp[24..26].copy_from_slice(&43210u16.to_ne_bytes());
        tp[26..28].copy_from_slice(&8080u16.to_ne_bytes());
        tp[28..30].copy_from_slice(&family.to_ne_bytes());
        tp[30..32].copy_from_slice(&6u16.to_ne_bytes());
        tp[32..36].copy_from_slice(&[127, 0, 0, 1]);
        tp[36..40].copy_from_slice(&[127, 0, 0, 2]);
        tp[55] = 1; // ::1
        tp[71] = 2; // ::2
        let mut rec = StateRecord {
            header: RecordHeader::new(RecordKind::StateChange, size_of::<StateRecord>()),
            ts_ns,
            pid_tgid: (1234u64 << 32) + 1235,
            netns: 4_026_531_840,
            raw_len: cfg.span_len,
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
            raw: [0; RAW_CAPACITY],
        };
        let span = &tp[cfg.span_start as usize..(cfg.span_start + cfg.span_len) as usize];
        rec.raw[..span.len()].copy_from_slice(span);
        // SAFETY: StateRecord is plain old data without padding.
        unsafe {
            std::slice::from_raw_parts(
                std::ptr::from_ref(&rec).cast::<u8>(),
                size_of::<StateRecord>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn config_covers_exactly_the_fields_decoded() {
        let (layout, cfg) = layout();
        assert_eq!((cfg.span_start, cfg.span_len), (8, 64));
        assert_eq!(
            (cfg.protocol_offset, cfg.protocol_size, cfg.skaddr_offset),
            (30, 2, 8)
        );
        assert_eq!(layout.oldstate, Field { offset: 8, size: 4 });
    }

    #[test]
    fn decodes_ipv4_and_ipv6_transitions() {
        let (layout, _) = layout();
        let t = layout.decode(&record(2, 1, AF_INET, 99)).unwrap();
        assert_eq!(
            (t.old, t.new, t.family),
            (TcpState::SynSent, TcpState::Established, Family::Ipv4)
        );
        assert_eq!(t.local, "127.0.0.1:43210".parse().unwrap());
        assert_eq!(t.remote, "127.0.0.2:8080".parse().unwrap());
        assert_eq!(
            (t.mono_ns, t.sock, t.netns),
            (99, 0xffff_8880_1234_5678, Some(4_026_531_840))
        );
        assert_eq!(
            (t.task.pid, t.task.tid, t.task.comm().as_ref()),
            (1234, 1235, "curl")
        );
        assert!(!t.owner_context);

        let t = layout.decode(&record(7, 2, AF_INET6, 5)).unwrap();
        assert_eq!(t.local, "[::1]:43210".parse().unwrap());
        assert_eq!(t.remote, "[::2]:8080".parse().unwrap());
        assert!(t.owner_context, "CLOSE -> SYN_SENT is connect()");
    }

    #[test]
    fn rejects_malformed_records_with_a_reason() {
        let (layout, _) = layout();
        let good = record(2, 1, AF_INET, 1);
        assert_eq!(layout.decode(&good[..4]), Err(DecodeError::Short(4)));
        assert!(matches!(
            layout.decode(&good[..100]),
            Err(DecodeError::Size { found: 100, .. })
        ));
        let mut bad = good.clone();
        bad[0] = 9;
        assert_eq!(layout.decode(&bad), Err(DecodeError::UnknownKind(9)));
        let mut bad = good.clone();
        bad[2] = 77;
        assert_eq!(layout.decode(&bad), Err(DecodeError::Version { found: 77 }));
        assert_eq!(
            layout.decode(&record(13, 1, AF_INET, 1)),
            Err(DecodeError::UnknownState(13))
        );
        assert_eq!(
            layout.decode(&record(-1, 1, AF_INET, 1)),
            Err(DecodeError::UnknownState(4_294_967_295))
        );
        assert_eq!(
            layout.decode(&record(2, 1, 1, 1)),
            Err(DecodeError::UnknownFamily(1))
        );
        let mut bad = good;
        bad[28..32].copy_from_slice(&10u32.to_ne_bytes()); // raw_len
        assert_eq!(layout.decode(&bad), Err(DecodeError::Truncated(10)));
    }
}
