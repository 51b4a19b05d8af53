//! Works out what every program needs on this kernel: tracepoint layouts from tracefs, struct
//! offsets from BTF, the timewait timer's callback from /proc/kallsyms. Optional pieces that are
//! missing switch their feature off with the reason, instead of failing the whole load.

use std::path::Path;

use observer_common::{SpanProbeConfig, TimerProbeConfig};

use super::{
    Availability, Features, LoadError, btf::KernelBtf, kallsyms, kernel_config, tracefs::Format,
};
use crate::decode::{
    Decoder, ResetDirection, ResetLayout, ResetReason, StateLayout,
    timewait::{CommonOffsets, TimerLayout, TimewaitOffsets},
};

/// Configuration globals for each program, and the matching decoder.
pub(super) struct Plan {
    pub decoder: Decoder,
    pub state: SpanProbeConfig,
    pub send_reset: Option<SpanProbeConfig>,
    pub receive_reset: Option<SpanProbeConfig>,
    pub timer: Option<TimerProbeConfig>,
    pub features: Features,
}

pub(super) fn plan(tracefs: &Path) -> Result<Plan, LoadError> {
    let format = Format::read(tracefs, "sock", "inet_sock_set_state")?;
    let (state_layout, mut state) = StateLayout::from_format(&format)?;
    let btf = KernelBtf::load();
    let mut features = Features::default();
    let mut net = None;
    match &btf {
        Ok(btf) => {
            net = btf
                .offset_of("sock", "__sk_common.skc_net.net")
                .and_then(|sock_net| Ok((sock_net, btf.offset_of("net", "ns.inum")?)))
                .map_err(|e| log::warn!("network namespaces will not be reported: {e}"))
                .ok();
            match btf.offset_of("sock", "sk_socket") {
                Ok(off) => state.sk_socket_offset = off,
                Err(e) => {
                    features.closed_before_accept = Availability::Unavailable(e.to_string());
                }
            }
            if let Ok(values) = btf.enum_values("sk_rst_reason") {
                ResetReason::set_names(values);
            }
        }
        Err(e) => {
            log::warn!("network namespaces will not be reported: {e}");
            features.closed_before_accept = Availability::Unavailable(e.to_string());
        }
    }
    if let Some((sock_net, inum)) = net {
        state.sock_net_offset = sock_net;
        state.net_inum_offset = inum;
    }

    let mut reset =
        |direction: ResetDirection, name: &str| -> Option<(ResetLayout, SpanProbeConfig)> {
            let planned = Format::read(tracefs, "tcp", name)
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
    let send = reset(ResetDirection::Sent, "tcp_send_reset");
    let receive = reset(ResetDirection::Received, "tcp_receive_reset");
    features.reset_reasons = send.as_ref().is_some_and(|(l, _)| l.has_reason());

    let timer = match timer_plan(tracefs, btf.as_ref().ok()) {
        Ok(t) => Some(t),
        Err(reason) => {
            features.timewait = Availability::Unavailable(reason);
            None
        }
    };
    Ok(Plan {
        decoder: Decoder {
            state: state_layout,
            send_reset: send.map(|(l, _)| l),
            receive_reset: receive.map(|(l, _)| l),
            timer: timer.map(|(l, _)| l),
        },
        state,
        send_reset: send.map(|(_, c)| c),
        receive_reset: receive.map(|(_, c)| c),
        timer: timer.map(|(_, c)| c),
        features,
    })
}

fn timer_plan(
    tracefs: &Path,
    btf: Option<&KernelBtf>,
) -> Result<(TimerLayout, TimerProbeConfig), String> {
    let btf = btf.ok_or("kernel BTF is needed to read timewait sockets")?;
    let handler = kallsyms::address_of("tw_timer_handler").map_err(|e| e.to_string())?;
    let read = |name| Format::read(tracefs, "timer", name).map_err(|e| e.to_string());
    let (start, cancel, expire) = (
        read("timer_start")?,
        read("timer_cancel")?,
        read("timer_expire_entry")?,
    );
    let common = |m: &str| btf.offset_of("sock_common", m).map_err(|e| e.to_string());
    let offsets = CommonOffsets {
        daddr: common("skc_daddr")?,
        rcv_saddr: common("skc_rcv_saddr")?,
        dport: common("skc_dport")?,
        num: common("skc_num")?,
        family: common("skc_family")?,
        v6_daddr: common("skc_v6_daddr")?,
        v6_rcv_saddr: common("skc_v6_rcv_saddr")?,
        net: common("skc_net.net")?,
    };
    let tw = |m: &str| {
        btf.offset_of("inet_timewait_sock", m)
            .map_err(|e| e.to_string())
    };
    let tw_offsets = TimewaitOffsets {
        timer: tw("tw_timer")?,
        substate: tw("tw_substate")?,
        net_inum: btf.offset_of("net", "ns.inum").map_err(|e| e.to_string())?,
    };
    let hz = kernel_config::hz();
    if hz.is_none() {
        log::info!(
            "CONFIG_HZ unknown: TIME_WAIT timeouts are reported without their scheduled length"
        );
    }
    TimerLayout::new([&start, &cancel, &expire], offsets, tw_offsets, handler, hz)
        .map_err(|e| e.to_string())
}
