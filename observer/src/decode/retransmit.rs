//! `tcp:tcp_retransmit_skb` records -> [`Retransmit`] events of [`RetransmitKind::Segment`].
//! (SYN-ACKs sent again come from a raw tracepoint: `super::synack`.)
//!
//! Seen on Linux 6.18 when nothing is acknowledged: a tail loss probe first (`unrecovered` 0,
//! no timeout yet), then one retransmission per timeout with 1, 2, 3, ... (the kernel counts
//! the timeout before it retransmits).

use observer_common::{
    RecordKind, SpanProbeConfig,
    record::{FLAG_RETRANSMITS_READ, RETRANSMITS_SHIFT},
};

use super::{
    DecodeError, SplitAddresses, check_kind, read_int, read_span, read_state, span_bounds,
    span_config,
};
use crate::{
    event::Netns,
    event::{Retransmit, RetransmitKind},
    kernel::tracefs::{Field, Format, TracefsError},
};

/// Where each field of `tcp_retransmit_skb` sits in the copied span. The tracepoint stores
/// this host's end (the socket's own address) as `saddr`/`sport`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetransmitLayout {
    skaddr: Field,
    state: Field,
    err: Option<Field>,
    addresses: SplitAddresses,
    needed: usize,
}

impl RetransmitLayout {
    /// Builds the decoding layout and the eBPF configuration from the tracepoint's format.
    /// Kernel struct offsets (netns, `icsk_retransmits`) are filled in by the loader.
    pub fn from_format(format: &Format) -> Result<(Self, SpanProbeConfig), TracefsError> {
        let skaddr = format.field("skaddr")?;
        let addresses = SplitAddresses::from_format(format)?;
        let state = format.field("state")?;
        // Added in Linux 6.13.
        let err = format.get("err");
        let mut all = vec![skaddr, state];
        all.extend(err);
        all.extend(addresses.fields());
        let (start, end) = span_bounds("tcp_retransmit_skb", &all)?;
        let layout = Self {
            skaddr: skaddr.relative_to(start),
            state: state.relative_to(start),
            err: err.map(|f| f.relative_to(start)),
            addresses: addresses.relative_to(start),
            needed: end - start,
        };
        Ok((layout, span_config(start, end, skaddr)))
    }

    /// Whether this kernel reports a failed retransmission's error (Linux 6.13+).
    #[must_use]
    pub const fn has_err(&self) -> bool {
        self.err.is_some()
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<Retransmit, DecodeError> {
        check_kind(bytes, RecordKind::Retransmit)?;
        let rec = read_span(bytes, self.needed)?;
        let raw = rec.raw();
        let state = read_state(raw, self.state)?;
        #[expect(clippy::cast_possible_truncation, reason = "`err` is an int")]
        let err = self
            .err
            .map_or(0, |f| (read_int(raw, f) as u32).cast_signed());
        let (family, local, remote) = self.addresses.decode(raw)?;
        let unrecovered = (rec.flags() & FLAG_RETRANSMITS_READ != 0)
            .then_some((rec.flags() >> RETRANSMITS_SHIFT) as u8);
        Ok(Retransmit {
            mono_ns: rec.ts_ns(),
            kind: RetransmitKind::Segment,
            sock: read_int(raw, self.skaddr),
            state: Some(state),
            family,
            local,
            remote,
            netns: Netns::new(rec.netns()),
            unrecovered,
            err,
        })
    }
}

#[cfg(test)]
mod tests {
    use observer_common::{SpanRecord, TcpState, probe_config::UNKNOWN};

    use super::*;
    use crate::decode::{
        AF_INET, AF_INET6,
        encode::{copy_span, empty_span},
    };
    use crate::event::Family;
    use crate::kernel::tracefs::known_formats::TCP_RETRANSMIT_SKB_6_18;

    fn span_record(kind: RecordKind, flags: u16, tp: &[u8], cfg: &SpanProbeConfig) -> Vec<u8> {
        let rec = SpanRecord {
            ts_ns: 31,
            netns: 4_026_531_840,
            flags,
            ..empty_span(kind)
        };
        copy_span(rec, tp, cfg)
    }

    #[test]
    fn decodes_a_segment_retransmission_with_its_timeout_count() {
        let format = Format::parse("f".into(), TCP_RETRANSMIT_SKB_6_18);
        let (layout, cfg) = RetransmitLayout::from_format(&format).unwrap();
        assert!(layout.has_err());
        assert_eq!(
            (cfg.span_start, cfg.span_len, cfg.skaddr_offset),
            (8, 72, 16)
        );
        assert_eq!(
            (cfg.protocol_offset, cfg.icsk_retransmits_offset),
            (UNKNOWN, UNKNOWN),
            "TCP-only tracepoint; the loader adds the BTF offset"
        );
        let mut tp = [0u8; 80];
        tp[8..16].copy_from_slice(&0x5555u64.to_ne_bytes()); // skb, not copied
        tp[16..24].copy_from_slice(&0xffff_8880_0000_1000u64.to_ne_bytes());
        tp[24..28].copy_from_slice(&1i32.to_ne_bytes()); // ESTABLISHED
        tp[28..30].copy_from_slice(&40000u16.to_ne_bytes());
        tp[30..32].copy_from_slice(&8080u16.to_ne_bytes());
        tp[32..34].copy_from_slice(&AF_INET.to_ne_bytes());
        tp[34..38].copy_from_slice(&[127, 0, 0, 1]);
        tp[38..42].copy_from_slice(&[127, 0, 0, 2]);
        tp[76..80].copy_from_slice(&(-11i32).to_ne_bytes());
        let flags = FLAG_RETRANSMITS_READ | (3 << RETRANSMITS_SHIFT);
        let r = layout
            .decode(&span_record(RecordKind::Retransmit, flags, &tp, &cfg))
            .unwrap();
        assert_eq!(
            r,
            Retransmit {
                mono_ns: 31,
                kind: RetransmitKind::Segment,
                sock: 0xffff_8880_0000_1000,
                state: Some(TcpState::Established),
                family: Family::Ipv4,
                local: "127.0.0.1:40000".parse().unwrap(),
                remote: "127.0.0.2:8080".parse().unwrap(),
                netns: Netns::new(4_026_531_840),
                unrecovered: Some(3),
                err: -11,
            }
        );
        let r = layout
            .decode(&span_record(RecordKind::Retransmit, 0, &tp, &cfg))
            .unwrap();
        assert_eq!(r.unrecovered, None, "not read");
        let r = layout
            .decode(&span_record(
                RecordKind::Retransmit,
                FLAG_RETRANSMITS_READ,
                &tp,
                &cfg,
            ))
            .unwrap();
        assert_eq!(r.unrecovered, Some(0), "read, and zero");
        // A synack record handed to the segment layout is refused, not misread.
        assert_eq!(
            layout.decode(&span_record(RecordKind::RetransmitSynack, 0, &tp, &cfg)),
            Err(DecodeError::UnknownKind(6))
        );
        tp[24..28].copy_from_slice(&0i32.to_ne_bytes());
        assert_eq!(
            layout.decode(&span_record(RecordKind::Retransmit, 0, &tp, &cfg)),
            Err(DecodeError::UnknownState(0))
        );
    }

    #[test]
    fn a_kernel_without_err_reports_zero() {
        let without = TCP_RETRANSMIT_SKB_6_18
            .lines()
            .filter(|l| !l.contains("int err;"))
            .collect::<Vec<_>>()
            .join("\n");
        let format = Format::parse("f".into(), &without);
        let (layout, cfg) = RetransmitLayout::from_format(&format).unwrap();
        assert!(!layout.has_err());
        assert_eq!((cfg.span_start, cfg.span_len), (8, 66));
        let mut tp = [0u8; 80];
        tp[24..28].copy_from_slice(&2i32.to_ne_bytes()); // SYN_SENT
        tp[32..34].copy_from_slice(&AF_INET6.to_ne_bytes());
        tp[57] = 1;
        tp[73] = 1;
        tp[76..80].copy_from_slice(&(-11i32).to_ne_bytes()); // beyond the span: ignored
        let r = layout
            .decode(&span_record(RecordKind::Retransmit, 0, &tp, &cfg))
            .unwrap();
        assert_eq!((r.err, r.state), (0, Some(TcpState::SynSent)));
        assert_eq!(r.local, "[::1]:0".parse().unwrap());
    }
}
