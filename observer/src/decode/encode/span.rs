//! Records of the programs that copy a span of their tracepoint record: state changes, resets
//! and retransmissions.

use std::net::{IpAddr, SocketAddr};

use observer_common::{
    RecordKind, SpanProbeConfig,
    record::{FLAG_NO_SK_SOCKET, FLAG_RETRANSMITS_READ, FLAG_SK_SOCKET_READ, RETRANSMITS_SHIFT},
};

use super::{Copied, bytes_of, span_context};
use crate::{
    decode::{AF_INET, AF_INET6, SplitAddresses},
    event::{CgroupId, Family, Reset, ResetDirection, Retransmit, Transition},
    kernel::tracefs::{Field, Format, TracefsError},
};

const IPPROTO_TCP: u64 = 6;

/// Writes `sock:inet_sock_set_state` records.
#[derive(Clone, Debug)]
pub struct StateEncoder {
    config: SpanProbeConfig,
    skaddr: Field,
    oldstate: Field,
    newstate: Field,
    protocol: Field,
    addresses: SplitAddresses,
}

impl StateEncoder {
    /// For the tracepoint's `format` and the configuration its program was given.
    pub fn new(format: &Format, config: SpanProbeConfig) -> Result<Self, TracefsError> {
        Ok(Self {
            config,
            skaddr: format.field("skaddr")?,
            oldstate: format.field("oldstate")?,
            newstate: format.field("newstate")?,
            protocol: format.field("protocol")?,
            addresses: SplitAddresses::from_format(format)?,
        })
    }

    /// Appends the record of `t`. (`owner_context` is not written: the decoder derives it.)
    pub fn encode(&self, t: &Transition, out: &mut Vec<u8>) {
        let mut rec = span_context(RecordKind::StateChange, t.mono_ns, Some(&t.task), t.netns);
        rec.cgroup = CgroupId::id_or_zero(t.cgroup);
        rec.flags = match t.has_socket {
            None => 0,
            Some(true) => FLAG_SK_SOCKET_READ,
            Some(false) => FLAG_SK_SOCKET_READ | FLAG_NO_SK_SOCKET,
        };
        let mut tp = Copied::span(&mut rec, &self.config);
        tp.int(self.skaddr, t.sock);
        tp.int(self.oldstate, u64::from(t.old as u8));
        tp.int(self.newstate, u64::from(t.new as u8));
        tp.int(self.protocol, IPPROTO_TCP);
        put_split(&mut tp, &self.addresses, t.family, t.local, t.remote);
        out.extend_from_slice(bytes_of(&rec));
    }
}

/// Where a reset tracepoint keeps its addresses (see the decoder's reset layout).
#[derive(Clone, Copy, Debug)]
enum ResetAddresses {
    Sockaddr { saddr: Field, daddr: Field },
    Split(SplitAddresses),
}

/// Writes `tcp:tcp_send_reset` or `tcp:tcp_receive_reset` records.
#[derive(Clone, Debug)]
pub struct ResetEncoder {
    kind: RecordKind,
    config: SpanProbeConfig,
    skaddr: Field,
    state: Option<Field>,
    reason: Option<Field>,
    addresses: ResetAddresses,
}

impl ResetEncoder {
    /// For the tracepoint's `format` and the configuration its program was given.
    pub fn new(
        format: &Format,
        direction: ResetDirection,
        config: SpanProbeConfig,
    ) -> Result<Self, TracefsError> {
        let saddr = format.field("saddr")?;
        let addresses = if saddr.size >= 16 {
            ResetAddresses::Sockaddr {
                saddr,
                daddr: format.field("daddr")?,
            }
        } else {
            ResetAddresses::Split(SplitAddresses::from_format(format)?)
        };
        Ok(Self {
            kind: match direction {
                ResetDirection::Sent => RecordKind::SendReset,
                ResetDirection::Received => RecordKind::ReceiveReset,
            },
            config,
            skaddr: format.field("skaddr")?,
            state: format.get("state"),
            reason: format.get("reason"),
            addresses,
        })
    }

    /// Appends the record of `r`: no socket and an unknown state are written as 0, as the
    /// kernel reports them.
    pub fn encode(&self, r: &Reset, out: &mut Vec<u8>) {
        let mut rec = span_context(self.kind, r.mono_ns, None, r.netns);
        let mut tp = Copied::span(&mut rec, &self.config);
        tp.int(self.skaddr, r.sock.unwrap_or(0));
        if let Some(f) = self.state {
            tp.int(f, r.state.map_or(0, |s| u64::from(s as u8)));
        }
        if let Some(f) = self.reason {
            tp.int(f, u64::from(r.reason.map_or(0, |reason| reason.0)));
        }
        match self.addresses {
            ResetAddresses::Sockaddr { saddr, daddr } => {
                tp.octets(saddr, &sockaddr(r.family, r.local));
                tp.octets(daddr, &sockaddr(r.family, r.remote));
            }
            ResetAddresses::Split(split) => {
                put_split(&mut tp, &split, r.family, r.local, r.remote);
            }
        }
        out.extend_from_slice(bytes_of(&rec));
    }
}

/// Writes `tcp:tcp_retransmit_skb` records.
#[derive(Clone, Debug)]
pub struct RetransmitEncoder {
    config: SpanProbeConfig,
    skaddr: Field,
    state: Field,
    err: Option<Field>,
    addresses: SplitAddresses,
}

impl RetransmitEncoder {
    /// For the tracepoint's `format` and the configuration its program was given.
    pub fn new(format: &Format, config: SpanProbeConfig) -> Result<Self, TracefsError> {
        Ok(Self {
            config,
            skaddr: format.field("skaddr")?,
            state: format.field("state")?,
            err: format.get("err"),
            addresses: SplitAddresses::from_format(format)?,
        })
    }

    /// Appends the record of `r`. The program runs in softirq: no task is written.
    pub fn encode(&self, r: &Retransmit, out: &mut Vec<u8>) {
        let mut rec = span_context(RecordKind::Retransmit, r.mono_ns, None, r.netns);
        rec.flags = r.unrecovered.map_or(0, |n| {
            FLAG_RETRANSMITS_READ | (u16::from(n) << RETRANSMITS_SHIFT)
        });
        let mut tp = Copied::span(&mut rec, &self.config);
        tp.int(self.skaddr, r.sock);
        tp.int(self.state, r.state.map_or(0, |s| u64::from(s as u8)));
        if let Some(f) = self.err {
            tp.int(f, u64::from(r.err.cast_unsigned()));
        }
        put_split(&mut tp, &self.addresses, r.family, r.local, r.remote);
        out.extend_from_slice(bytes_of(&rec));
    }
}

fn af(family: Family) -> u16 {
    match family {
        Family::Ipv4 => AF_INET,
        Family::Ipv6 => AF_INET6,
    }
}

/// Ports, family and addresses in separate fields; an IPv4 address also v4-mapped in the v6
/// field, as the kernel fills them.
fn put_split(
    tp: &mut Copied,
    split: &SplitAddresses,
    family: Family,
    local: SocketAddr,
    remote: SocketAddr,
) {
    tp.int(split.sport, u64::from(local.port()));
    tp.int(split.dport, u64::from(remote.port()));
    tp.int(split.family, u64::from(af(family)));
    for (addr, v4, v6) in [
        (local, split.saddr, split.saddr_v6),
        (remote, split.daddr, split.daddr_v6),
    ] {
        match addr.ip() {
            IpAddr::V4(ip) => {
                tp.octets(v4, &ip.octets());
                tp.octets(v6, &ip.to_ipv6_mapped().octets());
            }
            IpAddr::V6(ip) => tp.octets(v6, &ip.octets()),
        }
    }
}

/// A `struct sockaddr_in` or `sockaddr_in6`, as `tcp_send_reset` stores it since Linux 6.10.
fn sockaddr(family: Family, a: SocketAddr) -> [u8; 28] {
    let mut b = [0u8; 28];
    b[0..2].copy_from_slice(&af(family).to_ne_bytes());
    b[2..4].copy_from_slice(&a.port().to_be_bytes());
    match a.ip() {
        IpAddr::V4(ip) => b[4..8].copy_from_slice(&ip.octets()),
        IpAddr::V6(ip) => b[8..24].copy_from_slice(&ip.octets()),
    }
    b
}
