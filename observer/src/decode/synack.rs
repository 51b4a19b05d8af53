//! `tcp:tcp_retransmit_synack` records (a raw tracepoint: the request socket's
//! `struct sock_common`, copied) -> [`Retransmit`] events of [`RetransmitKind::Synack`].
//!
//! The request socket holds the connection's addresses as the tracepoint's own record does:
//! `skc_rcv_saddr`/`skc_num` are this host's end (`ir_loc_addr`, `ir_num`), `skc_daddr`/
//! `skc_dport` the client's, and `skc_family` is the listener's family (a dual-stack listener's
//! IPv4 clients come as IPv4-mapped IPv6 addresses, as in the tracepoint's record).

use observer_common::{RecordKind, SynackProbeConfig, SynackRecord};

use super::{DecodeError, as_u32, check_kind, read_record, timewait::CommonOffsets};
use crate::{
    event::{Netns, Retransmit, RetransmitKind},
    kernel::tracefs::TracefsError,
};

/// Decodes [`SynackRecord`]s: the copied `struct sock_common` with the offsets from BTF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SynackLayout {
    common: CommonOffsets,
    needed: usize,
}

impl SynackLayout {
    /// Builds the layout, and completes `config` (the offsets the loader read from BTF) with
    /// what the decoding needs copied.
    pub fn new(
        common: CommonOffsets,
        mut config: SynackProbeConfig,
    ) -> Result<(Self, SynackProbeConfig), TracefsError> {
        let needed = common.needed()?;
        config.common_len = as_u32(needed);
        config.configured = 1;
        Ok((Self { common, needed }, config))
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<Retransmit, DecodeError> {
        check_kind(bytes, RecordKind::RetransmitSynack)?;
        let rec: SynackRecord = read_record(bytes)?;
        let (family, local, remote) =
            self.common
                .addresses_in(&rec.common, rec.common_len, self.needed)?;
        Ok(Retransmit {
            mono_ns: rec.ts_ns,
            kind: RetransmitKind::Synack,
            sock: rec.listener,
            state: None,
            family,
            local,
            remote,
            netns: Netns::new(rec.netns),
            unrecovered: None,
            err: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use observer_common::{RecordHeader, record::COMMON_CAPACITY};

    use super::*;
    use crate::decode::{
        AF_INET, AF_INET6,
        encode::{bytes_of, linux_6_18::SOCK_COMMON},
    };
    use crate::event::Family;

    fn layout() -> (SynackLayout, SynackProbeConfig) {
        SynackLayout::new(SOCK_COMMON, SynackProbeConfig::UNSET).unwrap()
    }

    fn record(common_len: u16) -> SynackRecord {
        SynackRecord {
            header: RecordHeader::new(RecordKind::RetransmitSynack, size_of::<SynackRecord>()),
            ts_ns: 91,
            listener: 0xffff_8880_0000_3000,
            netns: 4_026_531_840,
            common_len,
            pad: 0,
            common: [0; COMMON_CAPACITY],
        }
    }

    #[test]
    fn config_copies_exactly_the_members_decoded() {
        let (_, cfg) = layout();
        assert_eq!((cfg.configured, cfg.common_len), (1, 88));
        assert_eq!(cfg.req_common_offset, 0, "set by the loader from BTF");
    }

    #[test]
    fn decodes_the_request_of_an_ipv4_listener() {
        let (layout, cfg) = layout();
        let mut rec = record(u16::try_from(cfg.common_len).unwrap());
        rec.common[0..4].copy_from_slice(&[127, 0, 0, 2]); // skc_daddr: the client
        rec.common[4..8].copy_from_slice(&[127, 0, 0, 1]); // skc_rcv_saddr: this host
        rec.common[12..14].copy_from_slice(&40000u16.to_be_bytes());
        rec.common[14..16].copy_from_slice(&8080u16.to_ne_bytes());
        rec.common[16..18].copy_from_slice(&AF_INET.to_ne_bytes());
        assert_eq!(
            layout.decode(bytes_of(&rec)).unwrap(),
            Retransmit {
                mono_ns: 91,
                kind: RetransmitKind::Synack,
                sock: 0xffff_8880_0000_3000,
                state: None,
                family: Family::Ipv4,
                local: "127.0.0.1:8080".parse().unwrap(),
                remote: "127.0.0.2:40000".parse().unwrap(),
                netns: Netns::new(4_026_531_840),
                unrecovered: None,
                err: 0,
            }
        );
    }

    #[test]
    fn decodes_the_request_of_an_ipv6_listener() {
        let (layout, cfg) = layout();
        let mut rec = record(u16::try_from(cfg.common_len).unwrap());
        rec.common[12..14].copy_from_slice(&40001u16.to_be_bytes());
        rec.common[14..16].copy_from_slice(&8443u16.to_ne_bytes());
        rec.common[16..18].copy_from_slice(&AF_INET6.to_ne_bytes());
        let client: std::net::Ipv6Addr = "fd00::2".parse().unwrap();
        rec.common[56..72].copy_from_slice(&client.octets());
        rec.common[72..88].copy_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        let event = layout.decode(bytes_of(&rec)).unwrap();
        assert_eq!(event.family, Family::Ipv6);
        assert_eq!(event.local, "[::1]:8443".parse().unwrap());
        assert_eq!(event.remote, "[fd00::2]:40001".parse().unwrap());
    }

    #[test]
    fn a_copy_shorter_than_the_members_is_refused() {
        let (layout, _) = layout();
        let rec = record(40);
        assert_eq!(
            layout.decode(bytes_of(&rec)),
            Err(DecodeError::Truncated(40))
        );
    }
}
