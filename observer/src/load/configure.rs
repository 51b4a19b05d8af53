//! Works out what every program needs on this kernel: tracepoint layouts from tracefs, struct
//! offsets from BTF, the timewait timer's callback from /proc/kallsyms. Optional pieces that are
//! missing switch their feature off with the reason, instead of failing the whole load.

use std::path::Path;

use observer_common::{SockErrorProbeConfig, SpanProbeConfig, SynackProbeConfig, TimerProbeConfig};

use observer_common::probe_config::UNKNOWN;

use super::{
    Availability, Features, KernelReads, LoadError,
    contract::{self, Part, Program},
};
use crate::decode::{
    Decoder, ResetLayout, RetransmitLayout, SocketErrorLayout, StateLayout, SynackLayout,
    timewait::{CommonOffsets, TimerLayout, TimewaitOffsets},
};
use crate::event::{ResetDirection, ResetReason};
use crate::kernel::{
    btf::{BtfError, KernelBtf},
    kallsyms, tick_rate,
    tracefs::Format,
};

/// Configuration globals for each program, and the matching decoder.
pub(super) struct Plan {
    pub decoder: Decoder,
    pub state: SpanProbeConfig,
    pub send_reset: Option<SpanProbeConfig>,
    pub receive_reset: Option<SpanProbeConfig>,
    pub timer: Option<TimerProbeConfig>,
    pub retransmit: Option<SpanProbeConfig>,
    pub retransmit_synack: Option<SynackProbeConfig>,
    pub sock_error: Option<SockErrorProbeConfig>,
    pub features: Features,
}

impl Plan {
    /// Whether the daemon attaches `program` on this kernel: a program whose layout this
    /// kernel lacks is not attached, and its feature is off.
    pub(super) fn wants(&self, program: &Program) -> bool {
        match program.part {
            Part::Transitions => true,
            Part::Resets if program.name == contract::TCP_SEND_RESET.name => {
                self.send_reset.is_some()
            }
            Part::Resets => self.receive_reset.is_some(),
            Part::Timewait => self.timer.is_some(),
            Part::Retransmits if program.name == contract::TCP_RETRANSMIT_SKB.name => {
                self.retransmit.is_some()
            }
            Part::Retransmits => self.retransmit_synack.is_some(),
            Part::SocketErrors => self.sock_error.is_some(),
        }
    }

    /// Leaves out of the state program the reads `reads` turns off: the program skips a read
    /// whose offset is unknown.
    pub(super) fn omit(&mut self, reads: KernelReads) {
        if !reads.cgroup && self.features.cgroups.is_active() {
            self.state.sk_cgroup_offset = UNKNOWN;
            self.features.cgroups =
                Availability::Unavailable("turned off (workloads.cgroups = false)".to_owned());
        }
        if !reads.sk_socket && self.features.closed_before_accept.is_active() {
            self.state.sk_socket_offset = UNKNOWN;
            self.features.closed_before_accept =
                Availability::Unavailable("turned off (sk_socket is not read)".to_owned());
        }
        if !reads.netns {
            self.state.sock_net_offset = UNKNOWN;
        }
        if !reads.comm {
            self.state.skip_comm = 1;
        }
    }
}

pub(super) fn plan(tracefs: &Path) -> Result<Plan, LoadError> {
    let format = Format::read(
        tracefs,
        contract::INET_SOCK_SET_STATE.category,
        contract::INET_SOCK_SET_STATE.name,
    )?;
    let (state_layout, mut state) = StateLayout::from_format(&format)?;
    let btf = KernelBtf::load();
    let mut features = Features::default();
    let net = state_from_btf(btf.as_ref(), &mut state, &mut features);
    if let Some((sock_net, inum)) = net {
        state.sock_net_offset = sock_net;
        state.net_inum_offset = inum;
    }

    let mut reset =
        |direction: ResetDirection, program: Program| -> Option<(ResetLayout, SpanProbeConfig)> {
            let planned = Format::read(tracefs, program.category, program.name)
                .and_then(|f| ResetLayout::from_format(&f, direction));
            match planned {
                Ok((layout, mut cfg)) => {
                    if let Some((sock_net, inum)) = net {
                        cfg.sock_net_offset = sock_net;
                        cfg.net_inum_offset = inum;
                    }
                    if let Ok(btf) = &btf
                        && let (Ok(dev), Ok(dev_net)) = (
                            btf.offset_of("sk_buff", "dev"),
                            btf.offset_of("net_device", "nd_net.net"),
                        )
                    {
                        cfg.skb_dev_offset = dev;
                        cfg.dev_net_offset = dev_net;
                    }
                    Some((layout, cfg))
                }
                Err(e) => {
                    features.resets = Availability::Unavailable(e.to_string());
                    None
                }
            }
        };
    let send = reset(ResetDirection::Sent, contract::TCP_SEND_RESET);
    let receive = reset(ResetDirection::Received, contract::TCP_RECEIVE_RESET);
    features.reset_reasons = send.as_ref().is_some_and(|(l, _)| l.has_reason());

    let timer = match timer_plan(btf.as_ref().ok()) {
        Ok(t) => Some(t),
        Err(reason) => {
            features.timewait = Availability::Unavailable(reason);
            None
        }
    };

    let (segment, synack) =
        retransmit_plans(tracefs, btf.as_ref().ok(), net, &mut features.retransmits);

    let sock_error = match sock_error_plan(tracefs, btf.as_ref().ok(), net) {
        Ok(planned) => Some(planned),
        Err(reason) => {
            features.socket_errors = Availability::Unavailable(reason);
            None
        }
    };
    Ok(Plan {
        decoder: Decoder {
            state: state_layout,
            send_reset: send.map(|(l, _)| l),
            receive_reset: receive.map(|(l, _)| l),
            timer: timer.map(|(l, _)| l),
            retransmit: segment.map(|(l, _)| l),
            retransmit_synack: synack.map(|(l, _)| l),
            sock_error: sock_error.map(|(l, _)| l),
        },
        state,
        send_reset: send.map(|(_, c)| c),
        receive_reset: receive.map(|(_, c)| c),
        timer: timer.map(|(_, c)| c),
        retransmit: segment.map(|(_, c)| c),
        retransmit_synack: synack.map(|(_, c)| c),
        sock_error: sock_error.map(|(_, c)| c),
        features,
    })
}

/// What the state program reads through BTF (the socket's namespace, `sk_socket`, its cgroup),
/// and the RST reason names; returns the namespace offsets the other programs share.
fn state_from_btf(
    btf: Result<&KernelBtf, &BtfError>,
    state: &mut SpanProbeConfig,
    features: &mut Features,
) -> Option<(u32, u32)> {
    let btf = match btf {
        Ok(btf) => btf,
        Err(e) => {
            log::warn!("network namespaces will not be reported: {e}");
            features.closed_before_accept = Availability::Unavailable(e.to_string());
            features.cgroups = Availability::Unavailable(e.to_string());
            return None;
        }
    };
    match btf.offset_of("sock", "sk_socket") {
        Ok(off) => state.sk_socket_offset = off,
        Err(e) => features.closed_before_accept = Availability::Unavailable(e.to_string()),
    }
    if let Err(e) = cgroup_offsets(btf, state) {
        features.cgroups = Availability::Unavailable(e.to_string());
    }
    if let Ok(values) = btf.enum_values("sk_rst_reason") {
        ResetReason::set_names(values);
    }
    btf.offset_of("sock", "__sk_common.skc_net.net")
        .and_then(|sock_net| Ok((sock_net, btf.offset_of("net", "ns.inum")?)))
        .map_err(|e| log::warn!("network namespaces will not be reported: {e}"))
        .ok()
}

/// Where the state program finds a socket's cgroup id: `sk->sk_cgrp_data` points at the
/// cgroup (a plain pointer since Linux 5.15; before, `val` holds it unless its lowest bit marks
/// other data), whose `kn->id` is the id.
fn cgroup_offsets(btf: &KernelBtf, state: &mut SpanProbeConfig) -> Result<(), BtfError> {
    let (pointer, tagged) = match btf.offset_of("sock", "sk_cgrp_data.cgroup") {
        Ok(offset) => (offset, 0),
        Err(_) => (btf.offset_of("sock", "sk_cgrp_data.val")?, 1),
    };
    state.cgroup_kn_offset = btf.offset_of("cgroup", "kn")?;
    state.kn_id_offset = btf.offset_of("kernfs_node", "id")?;
    state.sk_cgroup_offset = pointer;
    state.cgroup_tagged = tagged;
    Ok(())
}

type RetransmitPlan = (RetransmitLayout, SpanProbeConfig);
type SynackPlan = (SynackLayout, SynackProbeConfig);

/// Both retransmission programs; `availability` says why one is missing.
fn retransmit_plans(
    tracefs: &Path,
    btf: Option<&KernelBtf>,
    net: Option<(u32, u32)>,
    availability: &mut Availability,
) -> (Option<RetransmitPlan>, Option<SynackPlan>) {
    let program = contract::TCP_RETRANSMIT_SKB;
    let segment = Format::read(tracefs, program.category, program.name)
        .and_then(|f| RetransmitLayout::from_format(&f))
        .map(|(layout, mut cfg)| {
            if let Some((sock_net, inum)) = net {
                cfg.sock_net_offset = sock_net;
                cfg.net_inum_offset = inum;
            }
            let icsk_retransmits = btf
                .ok_or_else(|| "no kernel BTF".to_owned())
                .and_then(|btf| as_text(btf.offset_of("inet_connection_sock", "icsk_retransmits")));
            match icsk_retransmits {
                Ok(off) => cfg.icsk_retransmits_offset = off,
                Err(e) => log::info!(
                    "retransmissions are reported without the count of timeouts in a row: {e}"
                ),
            }
            (layout, cfg)
        })
        .map_err(|e| *availability = Availability::Unavailable(e.to_string()))
        .ok();
    let synack = synack_plan(tracefs, btf, net)
        .map_err(|e| *availability = Availability::Unavailable(e))
        .ok();
    (segment, synack)
}

/// The SYN-ACK program reads the request socket (a raw tracepoint's argument): it needs BTF.
/// `net` is the (`skc_net`, `ns.inum`) pair when known.
fn synack_plan(
    tracefs: &Path,
    btf: Option<&KernelBtf>,
    net: Option<(u32, u32)>,
) -> Result<SynackPlan, String> {
    // The format file only says whether this kernel has the tracepoint.
    let program = contract::TCP_RETRANSMIT_SYNACK;
    Format::read(tracefs, program.category, program.name).map_err(|e| e.to_string())?;
    let btf = btf.ok_or("kernel BTF is needed to read the request socket of a SYN-ACK")?;
    synack_from_btf(btf, net)
}

/// The SYN-ACK program's offsets, all from BTF.
fn synack_from_btf(btf: &KernelBtf, net: Option<(u32, u32)>) -> Result<SynackPlan, String> {
    let common = common_offsets(btf)?;
    let config = SynackProbeConfig {
        req_common_offset: as_text(btf.offset_of("request_sock", "__req_common"))?,
        common_net_offset: common.net,
        net_inum_offset: net.map_or(UNKNOWN, |(_, inum)| inum),
        ..SynackProbeConfig::UNSET
    };
    SynackLayout::new(common, config).map_err(|e| e.to_string())
}

fn as_text<T>(r: Result<T, BtfError>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

/// The `struct sock_common` members that make a socket's identity.
fn common_offsets(btf: &KernelBtf) -> Result<CommonOffsets, String> {
    let common = |m: &str| btf.offset_of("sock_common", m).map_err(|e| e.to_string());
    Ok(CommonOffsets {
        daddr: common("skc_daddr")?,
        rcv_saddr: common("skc_rcv_saddr")?,
        dport: common("skc_dport")?,
        num: common("skc_num")?,
        family: common("skc_family")?,
        v6_daddr: common("skc_v6_daddr")?,
        v6_rcv_saddr: common("skc_v6_rcv_saddr")?,
        net: common("skc_net.net")?,
    })
}

/// The error-report program reads everything from the socket: it needs BTF. `net` is the
/// (`skc_net`, `ns.inum`) pair when known.
fn sock_error_plan(
    tracefs: &Path,
    btf: Option<&KernelBtf>,
    net: Option<(u32, u32)>,
) -> Result<(SocketErrorLayout, SockErrorProbeConfig), String> {
    // Attached as a raw tracepoint, whose arguments carry the socket; the format file only
    // says whether this kernel has it (Linux 5.15+).
    let program = contract::INET_SK_ERROR_REPORT;
    Format::read(tracefs, program.category, program.name).map_err(|e| e.to_string())?;
    let btf = btf.ok_or("kernel BTF is needed to read the socket of an error report")?;
    sock_error_from_btf(btf, net)
}

/// The error-report program's offsets, all from BTF.
fn sock_error_from_btf(
    btf: &KernelBtf,
    net: Option<(u32, u32)>,
) -> Result<(SocketErrorLayout, SockErrorProbeConfig), String> {
    let optional = |what: &str, r: Result<u32, BtfError>| {
        r.map_err(|e| log::info!("connection errors are reported without {what}: {e}"))
            .unwrap_or(UNKNOWN)
    };
    let (sock_net_offset, net_inum_offset) = net.unwrap_or((UNKNOWN, UNKNOWN));
    let config = SockErrorProbeConfig {
        configured: 1,
        protocol: as_text(btf.bits_of("sock", "sk_protocol"))?,
        sock_type: as_text(btf.bits_of("sock", "sk_type"))?,
        err_offset: as_text(btf.offset_of("sock", "sk_err"))?,
        state_offset: as_text(btf.offset_of("sock", "__sk_common.skc_state"))?,
        retransmits_offset: optional(
            "the count of timeouts in a row",
            btf.offset_of("inet_connection_sock", "icsk_retransmits"),
        ),
        probes_out_offset: optional(
            "the count of unanswered probes",
            btf.offset_of("inet_connection_sock", "icsk_probes_out"),
        ),
        wmem_queued_offset: optional(
            "whether data was waiting to be sent",
            btf.offset_of("sock", "sk_wmem_queued"),
        ),
        sport_offset: optional(
            "the local port of a connection that failed before it was established",
            btf.offset_of("inet_sock", "inet_sport"),
        ),
        common_len: 0,
        sock_net_offset,
        net_inum_offset,
    };
    SocketErrorLayout::new(common_offsets(btf)?, config).map_err(|e| e.to_string())
}

fn timer_plan(btf: Option<&KernelBtf>) -> Result<(TimerLayout, TimerProbeConfig), String> {
    let btf = btf.ok_or("kernel BTF is needed to read timewait sockets")?;
    let handler = kallsyms::address_of(contract::TW_TIMER_HANDLER).map_err(|e| e.to_string())?;
    let offsets = common_offsets(btf)?;
    let offset = |s: &str, m: &str| btf.offset_of(s, m).map_err(|e| e.to_string());
    let tw_offsets = TimewaitOffsets {
        timer: offset("inet_timewait_sock", "tw_timer")?,
        substate: offset("inet_timewait_sock", "tw_substate")?,
        timer_function: offset("timer_list", "function")?,
        timer_expires: offset("timer_list", "expires")?,
        net_inum: offset("net", "ns.inum")?,
        cookie: btf
            .offset_of("sock_common", "skc_cookie")
            .map_err(|e| {
                log::info!(
                    "timewait sockets that existed before observer started are ended by \
                     reconciliation only: {e}"
                );
            })
            .ok(),
    };
    let hz = match tick_rate::tick_rate() {
        Ok(rate) => {
            log::debug!("HZ {} ({})", rate.hz, rate.source);
            Some(rate.hz)
        }
        Err(e) => {
            log::info!(
                "HZ unknown: TIME_WAIT timeouts are reported without their scheduled length: {e}"
            );
            None
        }
    };
    TimerLayout::new(offsets, tw_offsets, handler, hz).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use observer_common::probe_config::KernelBits;

    use super::*;
    use crate::kernel::btf::btf_for_test;

    #[test]
    fn the_socket_cgroup_is_reached_through_btf() {
        let Some(btf) = btf_for_test() else {
            return;
        };
        let mut state = SpanProbeConfig::UNSET;
        cgroup_offsets(&btf, &mut state).unwrap();
        // Linux 5.15+ (every kernel tested here): a plain pointer, no tag bit.
        assert_eq!(state.cgroup_tagged, 0);
        for offset in [
            state.sk_cgroup_offset,
            state.cgroup_kn_offset,
            state.kn_id_offset,
        ] {
            assert_ne!(offset, UNKNOWN);
        }
    }

    /// `struct sock`, `struct cgroup` and `struct kernfs_node` as far as the cgroup read goes,
    /// with `sock_cgroup_data` as Linux 5.15+ has it (a pointer) or as before (a tagged
    /// `val` in an anonymous union beside bitfields).
    fn cgroup_btf(pre_5_15: bool) -> KernelBtf {
        use crate::kernel::btf::handmade::{Builder, STRUCT, UNION};
        let mut b = Builder::new();
        let (u8_, u16_, u32_, u64_) = (
            b.int("u8", 1),
            b.int("u16", 2),
            b.int("u32", 4),
            b.int("u64", 8),
        );
        let kernfs_node = b.composite(STRUCT, "kernfs_node", 128, &[("id", u64_, 64 * 8, 0)]);
        let kn = b.ptr(kernfs_node);
        let cgroup = b.next_id() + 1;
        let cgroup_ptr = b.ptr(cgroup);
        assert_eq!(
            b.composite(STRUCT, "cgroup", 512, &[("kn", kn, 256 * 8, 0)]),
            cgroup
        );
        let data = if pre_5_15 {
            let bits = b.composite(
                STRUCT,
                "",
                8,
                &[
                    ("is_data", u8_, 0, 1),
                    ("no_refcnt", u8_, 1, 1),
                    ("unused", u8_, 2, 6),
                    ("padding", u8_, 8, 0),
                    ("prioidx", u16_, 16, 0),
                    ("classid", u32_, 32, 0),
                ],
            );
            let union = b.composite(UNION, "", 8, &[("", bits, 0, 0), ("val", u64_, 0, 0)]);
            b.composite(STRUCT, "sock_cgroup_data", 8, &[("", union, 0, 0)])
        } else {
            b.composite(
                STRUCT,
                "sock_cgroup_data",
                16,
                &[
                    ("cgroup", cgroup_ptr, 0, 0),
                    ("classid", u32_, 64, 0),
                    ("prioidx", u16_, 96, 0),
                ],
            )
        };
        b.composite(
            STRUCT,
            "sock",
            1024,
            &[
                ("sk_rcvbuf", u32_, 0, 0),
                ("sk_cgrp_data", data, 672 * 8, 0),
            ],
        );
        b.build()
    }

    #[test]
    fn the_socket_cgroup_is_reached_before_and_since_linux_5_15() {
        for (pre_5_15, tagged) in [(false, 0), (true, 1)] {
            let mut state = SpanProbeConfig::UNSET;
            cgroup_offsets(&cgroup_btf(pre_5_15), &mut state).unwrap();
            assert_eq!(
                (
                    state.sk_cgroup_offset,
                    state.cgroup_tagged,
                    state.cgroup_kn_offset,
                    state.kn_id_offset
                ),
                (672, tagged, 256, 64),
                "pre_5_15: {pre_5_15}"
            );
        }
    }

    #[test]
    fn the_synack_program_copies_the_request_socket_s_sock_common() {
        let Some(btf) = btf_for_test() else {
            return;
        };
        let (_, cfg) = synack_from_btf(&btf, Some((48, 160))).unwrap();
        assert_eq!(cfg.configured, 1);
        // A request socket begins with its `struct sock_common`, as a full socket does.
        assert_eq!(cfg.req_common_offset, 0, "{cfg:?}");
        assert_eq!(
            cfg.common_net_offset,
            btf.offset_of("sock_common", "skc_net.net").unwrap()
        );
        assert_eq!(cfg.net_inum_offset, 160);
        // The namespace's pointer is in the copy: no read of the request for it.
        assert!(cfg.common_net_offset + 8 <= cfg.common_len, "{cfg:?}");
        let (_, without_netns) = synack_from_btf(&btf, None).unwrap();
        assert_eq!(without_netns.net_inum_offset, UNKNOWN);
    }

    #[test]
    fn the_error_report_program_is_configured_from_btf() {
        let Some(btf) = btf_for_test() else {
            return;
        };
        let (_, cfg) = sock_error_from_btf(&btf, Some((48, 160))).unwrap();
        assert_eq!(cfg.configured, 1);
        // Linux 5.6+: sk_protocol and sk_type are plain u16s; before, 8 and 16 bits of a word.
        let plain = |b: KernelBits| b.shift == 0 && b.mask == 0xffff;
        let old = |b: KernelBits, width: u32| {
            b.offset.is_multiple_of(4) && b.mask == u32::MAX >> (32 - width)
        };
        assert!(plain(cfg.protocol) || old(cfg.protocol, 8), "{cfg:?}");
        assert!(plain(cfg.sock_type) || old(cfg.sock_type, 16), "{cfg:?}");
        for offset in [
            cfg.retransmits_offset,
            cfg.probes_out_offset,
            cfg.wmem_queued_offset,
            cfg.sport_offset,
        ] {
            assert_ne!(offset, UNKNOWN, "{cfg:?}");
        }
        // sk_err and icsk_* live past struct sock_common, skc_state inside it.
        assert!(cfg.err_offset as usize > cfg.common_len as usize, "{cfg:?}");
        assert!(cfg.state_offset < cfg.common_len, "{cfg:?}");
        assert!(cfg.retransmits_offset > cfg.sport_offset, "{cfg:?}");
        assert_eq!((cfg.sock_net_offset, cfg.net_inum_offset), (48, 160));
    }
}
