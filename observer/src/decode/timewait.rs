//! Timewait-timer records -> [`TimewaitTimer`] events.
//!
//! The start record carries the timewait socket's `struct sock_common` verbatim; the offsets
//! of its members come from kernel BTF, so nothing here is tied to one kernel. Cancels and
//! expiries carry only the timer, the socket's cookie and (at expiry) its substate.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use observer_common::{
    RecordKind, TcpState, TimerEndRecord, TimerProbeConfig, TimerRecord,
    probe_config::UNKNOWN,
    record::{COMMON_CAPACITY, TimerEvent},
};

use super::{AF_INET, AF_INET6, DecodeError, Family, as_u32, check_kind, read_record};
use crate::{
    event::Netns,
    event::{TimerAction, TimewaitSocket, TimewaitTimer},
    kernel::tracefs::TracefsError,
};

/// Offsets of the `struct sock_common` members a timewait socket's identity is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommonOffsets {
    pub daddr: u32,
    pub rcv_saddr: u32,
    pub dport: u32,
    pub num: u32,
    pub family: u32,
    pub v6_daddr: u32,
    pub v6_rcv_saddr: u32,
    pub net: u32,
}

/// Offsets inside `struct inet_timewait_sock`, `struct timer_list` and `struct net`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimewaitOffsets {
    /// `tw_timer` in the timewait socket.
    pub timer: u32,
    pub substate: u32,
    /// `function` and `expires` in `struct timer_list`.
    pub timer_function: u32,
    pub timer_expires: u32,
    pub net_inum: u32,
    /// `skc_cookie` in `struct sock_common`, when the kernel has it.
    pub cookie: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerLayout {
    common: CommonOffsets,
    needed: usize,
    /// `skc_cookie` inside the copied `struct sock_common`.
    cookie: Option<usize>,
    /// The kernel's timer frequency (`CONFIG_HZ`), when known.
    hz: Option<u32>,
}

impl TimerLayout {
    /// Builds the layout and the eBPF configuration. `handler` is the address of
    /// `tw_timer_handler`; the caller has already refused 0.
    pub fn new(
        common: CommonOffsets,
        tw: TimewaitOffsets,
        handler: u64,
        hz: Option<u32>,
    ) -> Result<(Self, TimerProbeConfig), TracefsError> {
        let needed = common.needed()?;
        // The start record copies the cookie with the addresses when it fits.
        let cookie = tw
            .cookie
            .map(|o| o as usize)
            .filter(|o| o + 8 <= COMMON_CAPACITY);
        let copied = cookie.map_or(needed, |o| needed.max(o + 8));
        let config = TimerProbeConfig {
            tw_timer_handler: handler,
            timer_function_offset: tw.timer_function,
            timer_expires_offset: tw.timer_expires,
            tw_timer_offset: tw.timer,
            tw_substate_offset: tw.substate,
            common_len: as_u32(copied),
            common_net_offset: common.net,
            net_inum_offset: tw.net_inum,
            common_cookie_offset: tw.cookie.unwrap_or(UNKNOWN),
        };
        Ok((
            Self {
                common,
                needed,
                cookie,
                hz,
            },
            config,
        ))
    }

    /// Decodes a start ([`RecordKind::TimewaitTimer`]) or an end
    /// ([`RecordKind::TimewaitEnd`]) record.
    pub fn decode(&self, bytes: &[u8]) -> Result<TimewaitTimer, DecodeError> {
        if check_kind(bytes, RecordKind::TimewaitEnd).is_ok() {
            return Self::decode_end(bytes);
        }
        check_kind(bytes, RecordKind::TimewaitTimer)?;
        let rec: TimerRecord = read_record(bytes)?;
        if rec.event != TimerEvent::Start as u8 {
            return Err(DecodeError::UnknownTimerEvent(rec.event));
        }
        let jiffies = rec.expires.wrapping_sub(rec.now);
        let len = rec.common_len as usize;
        let cookie = self
            .cookie
            .filter(|o| o + 8 <= len.min(COMMON_CAPACITY))
            .map_or(0, |o| {
                u64::from_ne_bytes(rec.common[o..o + 8].try_into().expect("8 bytes"))
            });
        Ok(TimewaitTimer {
            mono_ns: rec.ts_ns,
            timer: rec.timer,
            cookie,
            action: TimerAction::Start {
                socket: self.socket(&rec)?,
                timeout_ns: self
                    .hz
                    .map(|hz| jiffies.saturating_mul(1_000_000_000) / u64::from(hz.max(1))),
            },
        })
    }

    fn decode_end(bytes: &[u8]) -> Result<TimewaitTimer, DecodeError> {
        let rec: TimerEndRecord = read_record(bytes)?;
        let action = match rec.event {
            e if e == TimerEvent::Cancel as u8 => TimerAction::Cancel,
            e if e == TimerEvent::Expire as u8 => TimerAction::Expire {
                substate: TcpState::from_kernel(i32::from(rec.substate)),
            },
            other => return Err(DecodeError::UnknownTimerEvent(other)),
        };
        Ok(TimewaitTimer {
            mono_ns: rec.ts_ns,
            timer: rec.timer,
            cookie: rec.cookie,
            action,
        })
    }

    /// Decodes the copied `struct sock_common`.
    fn socket(&self, rec: &TimerRecord) -> Result<TimewaitSocket, DecodeError> {
        let (family, local, remote) =
            self.common
                .addresses_in(&rec.common, rec.common_len, self.needed)?;
        let substate = TcpState::from_kernel(i32::from(rec.substate))
            .ok_or(DecodeError::UnknownState(i64::from(rec.substate)))?;
        Ok(TimewaitSocket {
            substate,
            family,
            local,
            remote,
            netns: Netns::new(rec.netns),
        })
    }
}

impl CommonOffsets {
    /// Bytes of `struct sock_common` that hold the members decoded.
    pub fn needed(&self) -> Result<usize, TracefsError> {
        let ends = [
            self.daddr.saturating_add(4),
            self.rcv_saddr.saturating_add(4),
            self.dport.saturating_add(2),
            self.num.saturating_add(2),
            self.family.saturating_add(2),
            self.v6_daddr.saturating_add(16),
            self.v6_rcv_saddr.saturating_add(16),
        ];
        let needed = ends.iter().copied().max().unwrap_or(0) as usize;
        if needed > COMMON_CAPACITY {
            return Err(TracefsError::MissingField {
                path: "struct sock_common".into(),
                field: format!("(members span {needed} bytes, more than {COMMON_CAPACITY})"),
            });
        }
        Ok(needed)
    }

    /// (family, local, remote) from a record's copy of `struct sock_common`, of which `len`
    /// bytes were filled; refused as truncated unless they hold the `needed` bytes decoded.
    pub fn addresses_in(
        &self,
        copy: &[u8; COMMON_CAPACITY],
        len: u16,
        needed: usize,
    ) -> Result<(Family, SocketAddr, SocketAddr), DecodeError> {
        let filled = usize::from(len);
        if filled < needed || filled > COMMON_CAPACITY {
            return Err(DecodeError::Truncated(u32::from(len)));
        }
        self.addresses(&copy[..filled])
    }

    /// (family, local, remote) from a copy of `struct sock_common` of at least
    /// [`Self::needed`] bytes (callers check). The local port is `skc_num`: 0 once the socket
    /// has given its port back.
    pub fn addresses(&self, c: &[u8]) -> Result<(Family, SocketAddr, SocketAddr), DecodeError> {
        let at = |o: u32, n: usize| &c[o as usize..o as usize + n];
        let u16_ne = |o: u32| u16::from_ne_bytes(at(o, 2).try_into().expect("2 bytes"));
        let local_port = u16_ne(self.num);
        let remote_port = u16::from_be_bytes(at(self.dport, 2).try_into().expect("2 bytes"));
        let v4 = |o| {
            IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(at(o, 4)).expect("4 bytes"),
            ))
        };
        let v6 = |o| {
            IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(at(o, 16)).expect("16 bytes"),
            ))
        };
        let (family, local, remote) = match u16_ne(self.family) {
            AF_INET => (Family::Ipv4, v4(self.rcv_saddr), v4(self.daddr)),
            AF_INET6 => (Family::Ipv6, v6(self.v6_rcv_saddr), v6(self.v6_daddr)),
            other => return Err(DecodeError::UnknownFamily(u64::from(other))),
        };
        Ok((
            family,
            SocketAddr::new(local, local_port),
            SocketAddr::new(remote, remote_port),
        ))
    }

    /// For tests and for kernels where BTF is missing: nothing is known.
    pub const UNKNOWN: Self = Self {
        daddr: UNKNOWN,
        rcv_saddr: UNKNOWN,
        dport: UNKNOWN,
        num: UNKNOWN,
        family: UNKNOWN,
        v6_daddr: UNKNOWN,
        v6_rcv_saddr: UNKNOWN,
        net: UNKNOWN,
    };
}

#[cfg(test)]
mod tests {
    use observer_common::RecordHeader;

    use super::*;
    use crate::decode::encode::{
        bytes_of,
        linux_6_18::{SOCK_COMMON, TIMEWAIT},
    };

    fn layout() -> (TimerLayout, TimerProbeConfig) {
        TimerLayout::new(SOCK_COMMON, TIMEWAIT, 0xffff_1234, Some(250)).unwrap()
    }

    #[test]
    fn decodes_a_timewait_start_from_sock_common() {
        let (layout, cfg) = layout();
        assert_eq!(
            (cfg.timer_function_offset, cfg.timer_expires_offset),
            (24, 16)
        );
        assert_eq!(cfg.common_len, 96, "addresses and the cookie");
        assert_eq!(cfg.common_cookie_offset, 88);
        let mut rec = TimerRecord {
            header: RecordHeader::new(RecordKind::TimewaitTimer, size_of::<TimerRecord>()),
            ts_ns: 5,
            timer: 0xdead,
            expires: 16_000,
            now: 1_000,
            netns: 42,
            event: TimerEvent::Start as u8,
            substate: TcpState::TimeWait as u8,
            common_len: 96,
            common: [0; COMMON_CAPACITY],
        };
        rec.common[0..4].copy_from_slice(&[127, 0, 0, 2]);
        rec.common[4..8].copy_from_slice(&[127, 0, 0, 1]);
        rec.common[12..14].copy_from_slice(&8080u16.to_be_bytes());
        rec.common[14..16].copy_from_slice(&40000u16.to_ne_bytes());
        rec.common[16..18].copy_from_slice(&AF_INET.to_ne_bytes());
        rec.common[88..96].copy_from_slice(&0x1234u64.to_ne_bytes());
        let t = layout.decode(bytes_of(&rec)).unwrap();
        assert_eq!((t.timer, t.cookie), (0xdead, 0x1234));
        assert_eq!(
            t.action,
            TimerAction::Start {
                socket: TimewaitSocket {
                    substate: TcpState::TimeWait,
                    family: Family::Ipv4,
                    local: "127.0.0.1:40000".parse().unwrap(),
                    remote: "127.0.0.2:8080".parse().unwrap(),
                    netns: Netns::new(42),
                },
                timeout_ns: Some(60_000_000_000),
            }
        );
        rec.event = TimerEvent::Expire as u8;
        assert_eq!(
            layout.decode(bytes_of(&rec)),
            Err(DecodeError::UnknownTimerEvent(3)),
            "an expiry comes as an end record"
        );
    }

    #[test]
    fn decodes_cancels_and_expiries_from_end_records() {
        let (layout, _) = layout();
        let mut rec = TimerEndRecord {
            header: RecordHeader::new(RecordKind::TimewaitEnd, size_of::<TimerEndRecord>()),
            ts_ns: 7,
            timer: 0xbeef,
            cookie: 99,
            event: TimerEvent::Cancel as u8,
            substate: 0,
            pad: [0; 6],
        };
        let t = layout.decode(bytes_of(&rec)).unwrap();
        assert_eq!(
            (t.mono_ns, t.timer, t.cookie, t.action),
            (7, 0xbeef, 99, TimerAction::Cancel)
        );
        rec.event = TimerEvent::Expire as u8;
        rec.substate = TcpState::FinWait2 as u8;
        assert_eq!(
            layout.decode(bytes_of(&rec)).unwrap().action,
            TimerAction::Expire {
                substate: Some(TcpState::FinWait2)
            }
        );
        rec.event = 9;
        assert_eq!(
            layout.decode(bytes_of(&rec)),
            Err(DecodeError::UnknownTimerEvent(9))
        );
        let short = &bytes_of(&rec)[..32];
        assert!(matches!(
            layout.decode(short),
            Err(DecodeError::Size { .. })
        ));
    }
}
