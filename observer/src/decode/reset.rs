//! `tcp:tcp_send_reset` and `tcp:tcp_receive_reset` records -> [`Reset`]s.

use observer_common::{RecordKind, SpanProbeConfig};

use super::{
    DecodeError, SplitAddresses, as_u32, check_kind, read_int, read_span, read_state, sockaddr,
    span_bounds, span_config,
};
use crate::{
    event::Netns,
    event::{Reset, ResetDirection, ResetReason},
    kernel::tracefs::{Field, Format, TracefsError},
};

/// Where the addresses are: as `struct sockaddr_in6`-sized blobs (Linux 6.10+ send side), or
/// as separate ports, family and v4/v6 addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Addresses {
    Sockaddr { saddr: Field, daddr: Field },
    Split(SplitAddresses),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetLayout {
    direction: ResetDirection,
    skaddr: Field,
    state: Option<Field>,
    reason: Option<Field>,
    addresses: Addresses,
    needed: usize,
}

impl ResetLayout {
    /// Builds the decoding layout and the eBPF configuration from the tracepoint's format.
    #[expect(clippy::similar_names, reason = "the kernel's field names")]
    pub fn from_format(
        format: &Format,
        direction: ResetDirection,
    ) -> Result<(Self, SpanProbeConfig), TracefsError> {
        let skaddr = format.field("skaddr")?;
        let skbaddr = format.field("skbaddr").ok();
        let state = format.field("state").ok();
        let reason = format.field("reason").ok();
        let saddr = format.field("saddr")?;
        let daddr = format.field("daddr")?;
        let addresses = if saddr.size >= 16 {
            Addresses::Sockaddr { saddr, daddr }
        } else {
            Addresses::Split(SplitAddresses::from_format(format)?)
        };
        let mut all = vec![skaddr, saddr, daddr];
        all.extend(skbaddr.iter().chain(&state).chain(&reason).copied());
        if let Addresses::Split(split) = addresses {
            all.extend(split.fields());
        }
        let event = match direction {
            ResetDirection::Sent => "tcp_send_reset",
            ResetDirection::Received => "tcp_receive_reset",
        };
        let (start, end) = span_bounds(event, &all)?;
        let addresses = match addresses {
            Addresses::Sockaddr { saddr, daddr } => Addresses::Sockaddr {
                saddr: saddr.relative_to(start),
                daddr: daddr.relative_to(start),
            },
            Addresses::Split(split) => Addresses::Split(split.relative_to(start)),
        };
        let layout = Self {
            direction,
            skaddr: skaddr.relative_to(start),
            state: state.map(|f| f.relative_to(start)),
            reason: reason.map(|f| f.relative_to(start)),
            addresses,
            needed: end - start,
        };
        let config = SpanProbeConfig {
            skbaddr_offset: skbaddr
                .map_or(observer_common::probe_config::UNKNOWN, |f| as_u32(f.offset)),
            ..span_config(start, end, skaddr)
        };
        Ok((layout, config))
    }

    /// Whether this kernel says why it sent a reset.
    #[must_use]
    pub const fn has_reason(&self) -> bool {
        self.reason.is_some()
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<Reset, DecodeError> {
        let expected_kind = match self.direction {
            ResetDirection::Sent => RecordKind::SendReset,
            ResetDirection::Received => RecordKind::ReceiveReset,
        };
        check_kind(bytes, expected_kind)?;
        let rec = read_span(bytes, self.needed)?;
        let raw = rec.raw();
        let sock = read_int(raw, self.skaddr);
        // State 0 means "no socket / unknown" on kernels that report it.
        let state = self.state.and_then(|f| read_state(raw, f).ok());
        #[expect(
            clippy::cast_possible_truncation,
            reason = "enum sk_rst_reason is 32-bit"
        )]
        let reason = self.reason.map(|f| ResetReason(read_int(raw, f) as u32));
        let (family, local, remote) = match self.addresses {
            Addresses::Sockaddr { saddr, daddr } => {
                let (family, local) = sockaddr(raw, saddr)?;
                let (_, remote) = sockaddr(raw, daddr)?;
                (family, local, remote)
            }
            Addresses::Split(split) => split.decode(raw)?,
        };
        Ok(Reset {
            mono_ns: rec.ts_ns(),
            direction: self.direction,
            sock: (sock != 0).then_some(sock),
            state,
            reason,
            family,
            local,
            remote,
            netns: Netns::new(rec.netns()),
        })
    }
}

#[cfg(test)]
mod tests {
    use observer_common::SpanRecord;

    use super::*;
    use crate::decode::{
        AF_INET, AF_INET6,
        encode::{copy_span, empty_span},
    };
    use crate::event::Family;
    use crate::kernel::tracefs::known_formats::{TCP_RECEIVE_RESET_6_18, TCP_SEND_RESET_6_18};

    fn span_record(kind: RecordKind, tp: &[u8], cfg: &SpanProbeConfig) -> Vec<u8> {
        let rec = SpanRecord {
            ts_ns: 7,
            pid_tgid: (10u64 << 32) + 11,
            netns: 99,
            ..empty_span(kind)
        };
        copy_span(rec, tp, cfg)
    }

    #[test]
    fn decodes_a_socketless_sent_reset_with_its_reason() {
        let format = Format::parse("f".into(), TCP_SEND_RESET_6_18);
        let (layout, cfg) = ResetLayout::from_format(&format, ResetDirection::Sent).unwrap();
        assert!(layout.has_reason());
        assert_eq!(
            (cfg.span_start, cfg.span_len, cfg.skbaddr_offset),
            (8, 80, 8)
        );
        let mut tp = [0u8; 88];
        tp[8..16].copy_from_slice(&0xffffu64.to_ne_bytes()); // skb
        tp[28..32].copy_from_slice(&1u32.to_ne_bytes()); // NO_SOCKET
        tp[32..34].copy_from_slice(&AF_INET6.to_ne_bytes());
        tp[34..36].copy_from_slice(&9000u16.to_be_bytes());
        tp[55] = 1;
        tp[60..62].copy_from_slice(&AF_INET6.to_ne_bytes());
        tp[62..64].copy_from_slice(&40000u16.to_be_bytes());
        tp[83] = 1;
        let r = layout
            .decode(&span_record(RecordKind::SendReset, &tp, &cfg))
            .unwrap();
        assert_eq!(
            (r.sock, r.state, r.reason),
            (None, None, Some(ResetReason(1)))
        );
        assert_eq!(r.local, "[::1]:9000".parse().unwrap());
        assert_eq!(r.remote, "[::1]:40000".parse().unwrap());
        assert_eq!((r.family, r.netns), (Family::Ipv6, Netns::new(99)));
    }

    #[test]
    fn decodes_a_received_reset_and_falls_back_without_a_reason_field() {
        let format = Format::parse("f".into(), TCP_RECEIVE_RESET_6_18);
        let (layout, cfg) = ResetLayout::from_format(&format, ResetDirection::Received).unwrap();
        assert!(!layout.has_reason());
        assert_eq!(cfg.skbaddr_offset, observer_common::probe_config::UNKNOWN);
        let mut tp = [0u8; 72];
        tp[8..16].copy_from_slice(&0xabcdu64.to_ne_bytes());
        tp[16..18].copy_from_slice(&5000u16.to_ne_bytes());
        tp[18..20].copy_from_slice(&6000u16.to_ne_bytes());
        tp[20..22].copy_from_slice(&AF_INET.to_ne_bytes());
        tp[22..26].copy_from_slice(&[127, 0, 0, 1]);
        tp[26..30].copy_from_slice(&[127, 0, 0, 2]);
        let r = layout
            .decode(&span_record(RecordKind::ReceiveReset, &tp, &cfg))
            .unwrap();
        assert_eq!(
            (r.sock, r.reason, r.direction),
            (Some(0xabcd), None, ResetDirection::Received)
        );
        assert_eq!(r.local, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(r.remote, "127.0.0.2:6000".parse().unwrap());
        // A send-reset record handed to the receive layout is refused, not misread.
        assert!(matches!(
            layout.decode(&span_record(RecordKind::SendReset, &tp, &cfg)),
            Err(DecodeError::UnknownKind(2))
        ));
    }
}
