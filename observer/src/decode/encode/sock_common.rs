//! Records that carry a copy of a socket's `struct sock_common`: timewait timers, socket
//! errors and SYN-ACKs sent again (the request socket's).

use std::net::{IpAddr, SocketAddr};

use observer_common::{
    RecordHeader, RecordKind, SockErrorProbeConfig, SocketErrorRecord, SynackProbeConfig,
    SynackRecord, TimerEndRecord, TimerProbeConfig, TimerRecord,
    probe_config::UNKNOWN,
    record::{
        COMMON_CAPACITY, SOCK_ERR_PROBES_OUT_READ, SOCK_ERR_RETRANSMITS_READ, SOCK_ERR_SPORT_READ,
        SOCK_ERR_UNSENT_DATA, SOCK_ERR_WMEM_READ, TimerEvent,
    },
};

use super::{Copied, bytes_of};
use crate::{
    decode::{AF_INET, AF_INET6, timewait::CommonOffsets},
    event::{Family, Netns, Retransmit, SocketError, TimerAction, TimewaitTimer},
};

const NS_PER_S: u64 = 1_000_000_000;

/// Writes timewait timer records: starts with the socket, cancels and expiries without.
#[derive(Clone, Debug)]
pub struct TimerEncoder {
    common: CommonOffsets,
    config: TimerProbeConfig,
    /// The kernel's `CONFIG_HZ`: the programs write jiffies.
    hz: u32,
}

impl TimerEncoder {
    /// For `struct sock_common` at `common`, the programs' configuration, and the kernel's HZ.
    #[must_use]
    pub fn new(common: CommonOffsets, config: TimerProbeConfig, hz: u32) -> Self {
        Self {
            common,
            config,
            hz: hz.max(1),
        }
    }

    /// Appends the record of `t`. A start's jiffies count from `mono_ns`; its timeout is
    /// written in whole jiffies.
    pub fn encode(&self, t: &TimewaitTimer, out: &mut Vec<u8>) {
        // The cookie is read from the socket only when its offset is known.
        let cookie_offset = (self.config.common_cookie_offset != UNKNOWN)
            .then_some(self.config.common_cookie_offset as usize);
        let cookie = cookie_offset.map_or(0, |_| t.cookie);
        let (event, substate) = match t.action {
            TimerAction::Start { socket, timeout_ns } => {
                let hz = u64::from(self.hz);
                let now = t.mono_ns / (NS_PER_S / hz).max(1);
                let jiffies = timeout_ns.map_or(0, |ns| ns.saturating_mul(hz) / NS_PER_S);
                let mut rec = TimerRecord {
                    header: RecordHeader::new(RecordKind::TimewaitTimer, size_of::<TimerRecord>()),
                    ts_ns: t.mono_ns,
                    timer: t.timer,
                    expires: now.wrapping_add(jiffies),
                    now,
                    netns: Netns::inode_or_zero(socket.netns),
                    event: TimerEvent::Start as u8,
                    substate: socket.substate as u8,
                    common_len: common_len(self.config.common_len),
                    common: [0; COMMON_CAPACITY],
                };
                let len = usize::from(rec.common_len);
                let mut common = Copied::prefix(&mut rec.common[..len]);
                put_common(
                    &mut common,
                    &self.common,
                    socket.family,
                    socket.local,
                    socket.remote,
                );
                if let Some(o) = cookie_offset {
                    common.put(o, &cookie.to_ne_bytes());
                }
                out.extend_from_slice(bytes_of(&rec));
                return;
            }
            TimerAction::Cancel => (TimerEvent::Cancel, 0),
            TimerAction::Expire { substate } => {
                (TimerEvent::Expire, substate.map_or(0, |s| s as u8))
            }
        };
        let rec = TimerEndRecord {
            header: RecordHeader::new(RecordKind::TimewaitEnd, size_of::<TimerEndRecord>()),
            ts_ns: t.mono_ns,
            timer: t.timer,
            cookie,
            event: event as u8,
            substate,
            pad: [0; 6],
        };
        out.extend_from_slice(bytes_of(&rec));
    }
}

/// Writes `tcp_retransmit_synack` records.
#[derive(Clone, Debug)]
pub struct SynackEncoder {
    common: CommonOffsets,
    config: SynackProbeConfig,
}

impl SynackEncoder {
    /// For `struct sock_common` at `common` and the program's configuration.
    #[must_use]
    pub fn new(common: CommonOffsets, config: SynackProbeConfig) -> Self {
        Self { common, config }
    }

    /// Appends the record of `r` (a [`crate::event::RetransmitKind::Synack`]).
    pub fn encode(&self, r: &Retransmit, out: &mut Vec<u8>) {
        let mut rec = SynackRecord {
            header: RecordHeader::new(RecordKind::RetransmitSynack, size_of::<SynackRecord>()),
            ts_ns: r.mono_ns,
            listener: r.sock,
            netns: Netns::inode_or_zero(r.netns),
            common_len: common_len(self.config.common_len),
            pad: 0,
            common: [0; COMMON_CAPACITY],
        };
        let len = usize::from(rec.common_len);
        put_common(
            &mut Copied::prefix(&mut rec.common[..len]),
            &self.common,
            r.family,
            r.local,
            r.remote,
        );
        out.extend_from_slice(bytes_of(&rec));
    }
}

/// Writes `inet_sk_error_report` records.
#[derive(Clone, Debug)]
pub struct SocketErrorEncoder {
    common: CommonOffsets,
    config: SockErrorProbeConfig,
}

impl SocketErrorEncoder {
    /// For `struct sock_common` at `common` and the program's configuration.
    #[must_use]
    pub fn new(common: CommonOffsets, config: SockErrorProbeConfig) -> Self {
        Self { common, config }
    }

    /// Appends the record of `e`. What the event says was read is flagged as read; `inet_sport`
    /// is written when the program reads it.
    pub fn encode(&self, e: &SocketError, out: &mut Vec<u8>) {
        let mut flags = 0;
        let mut read = |value: Option<u8>, flag| {
            if value.is_some() {
                flags |= flag;
            }
            value.unwrap_or(0)
        };
        let retransmits = read(e.unrecovered, SOCK_ERR_RETRANSMITS_READ);
        let probes_out = read(e.probes_out, SOCK_ERR_PROBES_OUT_READ);
        match e.unsent_data {
            Some(true) => flags |= SOCK_ERR_WMEM_READ | SOCK_ERR_UNSENT_DATA,
            Some(false) => flags |= SOCK_ERR_WMEM_READ,
            None => {}
        }
        let sport = if self.config.sport_offset == UNKNOWN {
            0
        } else {
            flags |= SOCK_ERR_SPORT_READ;
            e.local.port().to_be()
        };
        let mut rec = SocketErrorRecord {
            header: RecordHeader::new(RecordKind::SocketError, size_of::<SocketErrorRecord>()),
            ts_ns: e.mono_ns,
            sock: e.sock,
            netns: Netns::inode_or_zero(e.netns),
            error: e.error,
            state: e.state.map_or(0, |s| s as u8),
            retransmits,
            probes_out,
            flags,
            common_len: common_len(self.config.common_len),
            sport,
            common: [0; COMMON_CAPACITY],
        };
        let len = usize::from(rec.common_len);
        put_common(
            &mut Copied::prefix(&mut rec.common[..len]),
            &self.common,
            e.family,
            e.local,
            e.remote,
        );
        out.extend_from_slice(bytes_of(&rec));
    }
}

/// The bytes of `struct sock_common` a program copies.
fn common_len(configured: u32) -> u16 {
    u16::try_from((configured as usize).min(COMMON_CAPACITY)).expect("at most COMMON_CAPACITY")
}

/// A socket's identity in its `struct sock_common`: the inverse of
/// [`CommonOffsets::addresses`].
fn put_common(
    c: &mut Copied,
    at: &CommonOffsets,
    family: Family,
    local: SocketAddr,
    remote: SocketAddr,
) {
    let af = match family {
        Family::Ipv4 => AF_INET,
        Family::Ipv6 => AF_INET6,
    };
    c.put(at.dport as usize, &remote.port().to_be_bytes());
    c.put(at.num as usize, &local.port().to_ne_bytes());
    c.put(at.family as usize, &af.to_ne_bytes());
    for (addr, v4, v6) in [
        (local, at.rcv_saddr, at.v6_rcv_saddr),
        (remote, at.daddr, at.v6_daddr),
    ] {
        match addr.ip() {
            IpAddr::V4(ip) => c.put(v4 as usize, &ip.octets()),
            IpAddr::V6(ip) => c.put(v6 as usize, &ip.octets()),
        }
    }
}
