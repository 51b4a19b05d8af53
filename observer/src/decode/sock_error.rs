//! `sock:inet_sk_error_report` (a raw tracepoint: its record carries no socket address) ->
//! [`SocketError`] events. The kernel reports an error on a TCP socket when a connection ends
//! by a timeout, a refusal, a reset or an ICMP error.
//!
//! What Linux 6.18 reports: a refusal and a reset (seen on loopback), like a timeout (the same
//! kernel path), close the socket before the report, so `state` is already CLOSE; the state
//! before is the old state of the socket's last transition. A socket that aborts itself
//! (`close()` with `SO_LINGER` {on, 0}, through `tcp_disconnect()`) reports ECONNRESET too, with
//! its remote port already 0. Reports with `sk_err` 0 (`tcp_disconnect()` with nothing wrong)
//! are not emitted.

use observer_common::{
    RecordKind, SockErrorProbeConfig, SocketErrorRecord, TcpState,
    record::{
        SOCK_ERR_PROBES_OUT_READ, SOCK_ERR_RETRANSMITS_READ, SOCK_ERR_SPORT_READ,
        SOCK_ERR_UNSENT_DATA, SOCK_ERR_WMEM_READ,
    },
};

use super::{DecodeError, as_u32, check_kind, read_record, timewait::CommonOffsets};
use crate::{
    event::{Netns, SocketError},
    kernel::tracefs::TracefsError,
};

/// Decodes [`SocketErrorRecord`]s: the copied `struct sock_common` with the offsets from BTF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketErrorLayout {
    common: CommonOffsets,
    needed: usize,
}

impl SocketErrorLayout {
    /// Builds the layout, and completes `config` (the socket offsets the loader read from
    /// BTF) with what the decoding needs copied.
    pub fn new(
        common: CommonOffsets,
        mut config: SockErrorProbeConfig,
    ) -> Result<(Self, SockErrorProbeConfig), TracefsError> {
        let needed = common.needed()?;
        config.common_len = as_u32(needed);
        config.configured = 1;
        Ok((Self { common, needed }, config))
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<SocketError, DecodeError> {
        check_kind(bytes, RecordKind::SocketError)?;
        let rec: SocketErrorRecord = read_record(bytes)?;
        let (family, mut local, remote) =
            self.common
                .addresses_in(&rec.common, rec.common_len, self.needed)?;
        // skc_num is 0 once a failed socket has given its port back; inet_sport keeps it.
        let sport = u16::from_be(rec.sport);
        if rec.flags & SOCK_ERR_SPORT_READ != 0 && sport != 0 {
            local.set_port(sport);
        }
        let state = TcpState::from_kernel(i32::from(rec.state))
            .ok_or(DecodeError::UnknownState(i64::from(rec.state)))?;
        let read = |flag: u8| rec.flags & flag != 0;
        Ok(SocketError {
            mono_ns: rec.ts_ns,
            sock: rec.sock,
            error: rec.error.checked_abs().unwrap_or(i32::MAX),
            state: Some(state),
            family,
            local,
            remote,
            netns: Netns::new(rec.netns),
            unrecovered: read(SOCK_ERR_RETRANSMITS_READ).then_some(rec.retransmits),
            probes_out: read(SOCK_ERR_PROBES_OUT_READ).then_some(rec.probes_out),
            unsent_data: read(SOCK_ERR_WMEM_READ).then_some(read(SOCK_ERR_UNSENT_DATA)),
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

    fn layout() -> (SocketErrorLayout, SockErrorProbeConfig) {
        SocketErrorLayout::new(SOCK_COMMON, SockErrorProbeConfig::UNSET).unwrap()
    }

    fn record() -> SocketErrorRecord {
        SocketErrorRecord {
            header: RecordHeader::new(RecordKind::SocketError, size_of::<SocketErrorRecord>()),
            ts_ns: 77,
            sock: 0xffff_8880_0000_2000,
            netns: 4_026_531_840,
            error: 111,
            state: TcpState::Close as u8,
            retransmits: 0,
            probes_out: 0,
            flags: 0,
            common_len: 88,
            sport: 0,
            common: [0; COMMON_CAPACITY],
        }
    }

    #[test]
    fn config_copies_exactly_the_members_decoded() {
        let (_, cfg) = layout();
        assert_eq!((cfg.configured, cfg.common_len), (1, 88));
    }

    #[test]
    fn a_refused_connect_keeps_its_port_through_inet_sport() {
        let (layout, _) = layout();
        let mut rec = record();
        // skc_num is already 0: the failed socket gave its port back.
        rec.common[0..4].copy_from_slice(&[127, 0, 0, 2]);
        rec.common[4..8].copy_from_slice(&[127, 0, 0, 1]);
        rec.common[12..14].copy_from_slice(&8080u16.to_be_bytes());
        rec.common[16..18].copy_from_slice(&AF_INET.to_ne_bytes());
        rec.sport = 40000u16.to_be();
        rec.retransmits = 0;
        rec.probes_out = 0;
        rec.flags = SOCK_ERR_SPORT_READ
            | SOCK_ERR_RETRANSMITS_READ
            | SOCK_ERR_PROBES_OUT_READ
            | SOCK_ERR_WMEM_READ;
        assert_eq!(
            layout.decode(bytes_of(&rec)).unwrap(),
            SocketError {
                mono_ns: 77,
                sock: 0xffff_8880_0000_2000,
                error: 111,
                state: Some(TcpState::Close),
                family: Family::Ipv4,
                local: "127.0.0.1:40000".parse().unwrap(),
                remote: "127.0.0.2:8080".parse().unwrap(),
                netns: Netns::new(4_026_531_840),
                unrecovered: Some(0),
                probes_out: Some(0),
                unsent_data: Some(false),
            }
        );
        // Without inet_sport the local port is skc_num, whatever it holds.
        rec.flags = 0;
        let e = layout.decode(bytes_of(&rec)).unwrap();
        assert_eq!(e.local, "127.0.0.1:0".parse().unwrap());
        assert_eq!(
            (e.unrecovered, e.probes_out, e.unsent_data),
            (None, None, None)
        );
    }

    #[test]
    fn a_timeout_with_unsent_data_on_ipv6() {
        let (layout, _) = layout();
        let mut rec = record();
        rec.error = 110;
        rec.state = TcpState::Established as u8;
        rec.common[12..14].copy_from_slice(&443u16.to_be_bytes());
        rec.common[14..16].copy_from_slice(&50000u16.to_ne_bytes());
        rec.common[16..18].copy_from_slice(&AF_INET6.to_ne_bytes());
        rec.common[56..72]
            .copy_from_slice(&"fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        rec.common[72..88]
            .copy_from_slice(&"fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
        rec.retransmits = 15;
        rec.probes_out = 2;
        rec.flags = SOCK_ERR_RETRANSMITS_READ
            | SOCK_ERR_PROBES_OUT_READ
            | SOCK_ERR_WMEM_READ
            | SOCK_ERR_UNSENT_DATA;
        let e = layout.decode(bytes_of(&rec)).unwrap();
        assert_eq!(
            (e.error, e.state, e.family),
            (110, Some(TcpState::Established), Family::Ipv6)
        );
        assert_eq!(e.local, "[fd00::1]:50000".parse().unwrap());
        assert_eq!(e.remote, "[fd00::2]:443".parse().unwrap());
        assert_eq!(
            (e.unrecovered, e.probes_out, e.unsent_data),
            (Some(15), Some(2), Some(true))
        );
    }

    #[test]
    fn rejects_malformed_records_with_a_reason() {
        let (layout, _) = layout();
        let mut rec = record();
        rec.common[16..18].copy_from_slice(&AF_INET.to_ne_bytes());
        let good = bytes_of(&rec);
        assert!(layout.decode(good).is_ok());
        assert!(matches!(
            layout.decode(&good[..100]),
            Err(DecodeError::Size { found: 100, .. })
        ));
        let mut bad = rec;
        bad.common_len = 20;
        assert_eq!(
            layout.decode(bytes_of(&bad)),
            Err(DecodeError::Truncated(20))
        );
        let mut bad = rec;
        bad.state = 0;
        assert_eq!(
            layout.decode(bytes_of(&bad)),
            Err(DecodeError::UnknownState(0))
        );
        let mut bad = rec;
        bad.common[16..18].copy_from_slice(&1u16.to_ne_bytes());
        assert_eq!(
            layout.decode(bytes_of(&bad)),
            Err(DecodeError::UnknownFamily(1))
        );
        let mut bad = bytes_of(&rec).to_vec();
        bad[0..2].copy_from_slice(&(RecordKind::Retransmit as u16).to_ne_bytes());
        assert_eq!(layout.decode(&bad), Err(DecodeError::UnknownKind(5)));
    }
}
