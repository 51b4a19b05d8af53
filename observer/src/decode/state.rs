//! `sock:inet_sock_set_state` records -> [`Transition`]s.

use observer_common::{
    RecordKind, SpanProbeConfig, TcpState,
    record::{FLAG_NO_SK_SOCKET, FLAG_SK_SOCKET_READ},
};

use super::{
    DecodeError, Span, SplitAddresses, Task, as_u32, check_kind, fixed, read_span, span_bounds,
    span_config,
};
use crate::{
    event::{CgroupId, Event, Netns, Transition},
    kernel::tracefs::{Field, Format, TracefsError},
};

/// Where each `inet_sock_set_state` field sits in the copied span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateLayout {
    skaddr: Field,
    oldstate: Field,
    newstate: Field,
    addresses: SplitAddresses,
    /// Bytes of the span the fields above need.
    needed: usize,
}

impl StateLayout {
    /// Builds the decoding layout and the eBPF configuration from the tracepoint's format.
    /// Kernel struct offsets (for the netns) are filled in by the loader.
    pub fn from_format(format: &Format) -> Result<(Self, SpanProbeConfig), TracefsError> {
        // `const void *` and `int` on every 64-bit kernel since 4.16: read at those widths.
        let skaddr = format.sized_field("skaddr", 8)?;
        let oldstate = format.sized_field("oldstate", 4)?;
        let newstate = format.sized_field("newstate", 4)?;
        let addresses = SplitAddresses::from_format(format)?;
        let protocol = format.field("protocol")?;
        let mut all = vec![skaddr, oldstate, newstate, protocol];
        all.extend(addresses.fields());
        let (start, end) = span_bounds("inet_sock_set_state", &all)?;
        let layout = Self {
            skaddr: skaddr.relative_to(start),
            oldstate: oldstate.relative_to(start),
            newstate: newstate.relative_to(start),
            addresses: addresses.relative_to(start),
            needed: end - start,
        };
        let config = SpanProbeConfig {
            protocol_offset: as_u32(protocol.offset),
            protocol_size: as_u32(protocol.size),
            oldstate_offset: as_u32(oldstate.offset),
            newstate_offset: as_u32(newstate.offset),
            ..span_config(start, end, skaddr)
        };
        Ok((layout, config))
    }

    /// Decodes one ring-buffer record.
    pub fn decode(&self, bytes: &[u8]) -> Result<Transition, DecodeError> {
        self.decode_as(bytes, std::convert::identity)
    }

    /// Decodes one ring-buffer record into an [`Event`], for [`super::Decoder::decode`], the
    /// hot path: the transition is built where the event holds it. Through `Result::map` it
    /// was built apart and then moved (callgrind: 178 instructions a record, now 170).
    #[expect(clippy::inline_always, reason = "measured: one copy less per record")]
    #[inline(always)]
    pub fn decode_event(&self, bytes: &[u8]) -> Result<Event, DecodeError> {
        self.decode_as(bytes, Event::Transition)
    }

    #[expect(clippy::inline_always, reason = "inlined into both of the above")]
    #[inline(always)]
    fn decode_as<T>(
        &self,
        bytes: &[u8],
        wrap: impl FnOnce(Transition) -> T,
    ) -> Result<T, DecodeError> {
        check_kind(bytes, RecordKind::StateChange)?;
        let rec = read_span(bytes, self.needed)?;
        let raw = rec.raw();
        let old = state_at(raw, self.oldstate.offset)?;
        let new = state_at(raw, self.newstate.offset)?;
        let (family, local, remote) = self.addresses.decode(raw)?;
        let task = Task::from_pid_tgid(rec.pid_tgid(), rec.comm());
        Ok(wrap(Transition {
            mono_ns: rec.ts_ns(),
            sock: u64::from_ne_bytes(fixed(raw, self.skaddr.offset)),
            old,
            new,
            family,
            local,
            remote,
            netns: Netns::new(rec.netns()),
            cgroup: CgroupId::new(rec.cgroup()),
            task,
            owner_context: TcpState::in_owner_context(old, new),
            has_socket: (rec.flags() & FLAG_SK_SOCKET_READ != 0)
                .then_some(rec.flags() & FLAG_NO_SK_SOCKET == 0),
        }))
    }
}

/// The `int` state at `offset`, a width checked against the format: no dispatch on the
/// field's size for the two states of every record.
#[expect(
    clippy::inline_always,
    reason = "two per record; a call costs more than the read"
)]
#[inline(always)]
fn state_at(raw: &Span, offset: usize) -> Result<TcpState, DecodeError> {
    let v = i32::from_ne_bytes(fixed(raw, offset));
    TcpState::from_kernel(v).ok_or(DecodeError::UnknownState(i64::from(v.cast_unsigned())))
}

#[cfg(test)]
pub(crate) mod tests {
    use observer_common::SpanRecord;

    use super::*;
    use crate::decode::{
        AF_INET, AF_INET6,
        encode::{copy_span, empty_span},
    };
    use crate::event::Family;
    use crate::kernel::tracefs::known_formats::INET_SOCK_SET_STATE_6_18;

    pub fn layout() -> (StateLayout, SpanProbeConfig) {
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
        let rec = SpanRecord {
            ts_ns,
            pid_tgid: (1234u64 << 32) + 1235,
            netns: 4_026_531_840,
            flags: FLAG_SK_SOCKET_READ,
            comm: *b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
            ..empty_span(RecordKind::StateChange)
        };
        copy_span(rec, &tp, &cfg)
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
        assert_eq!(
            layout.addresses.fields()[0],
            Field {
                offset: 16,
                size: 2
            }
        );
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
            (99, 0xffff_8880_1234_5678, Netns::new(4_026_531_840))
        );
        assert_eq!(
            (t.task.pid, t.task.tid, t.task.comm().as_ref()),
            (1234, 1235, "curl")
        );
        assert!(!t.owner_context);
        assert_eq!(t.has_socket, Some(true));

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
        let raw_len = std::mem::offset_of!(SpanRecord, raw_len);
        bad[raw_len..raw_len + 2].copy_from_slice(&10u16.to_ne_bytes());
        assert_eq!(layout.decode(&bad), Err(DecodeError::Truncated(10)));
    }
}
