//! Linux 6.18 on x86_64 as the daemon reads it (tracepoint formats, struct offsets from BTF,
//! HZ): a decoder for every record kind, and the encoder that writes what it reads.

use observer_common::{SockErrorProbeConfig, SynackProbeConfig};

use super::{
    Encoder, ResetEncoder, RetransmitEncoder, SocketErrorEncoder, StateEncoder, SynackEncoder,
    TimerEncoder,
};
use crate::{
    decode::{
        Decoder, ResetLayout, RetransmitLayout, SocketErrorLayout, StateLayout, SynackLayout,
        TimerLayout,
        timewait::{CommonOffsets, TimewaitOffsets},
    },
    event::ResetDirection,
    kernel::tracefs::{Format, known_formats},
};

/// `struct sock_common`.
pub const SOCK_COMMON: CommonOffsets = CommonOffsets {
    daddr: 0,
    rcv_saddr: 4,
    dport: 12,
    num: 14,
    family: 16,
    v6_daddr: 56,
    v6_rcv_saddr: 72,
    net: 48,
};

/// `struct inet_timewait_sock`, `struct timer_list` and `struct net`.
pub const TIMEWAIT: TimewaitOffsets = TimewaitOffsets {
    timer: 96,
    substate: 20,
    timer_function: 24,
    timer_expires: 16,
    net_inum: 160,
    cookie: Some(88),
};

/// `CONFIG_HZ`: Linux's default.
pub const HZ: u32 = 250;

/// `tw_timer_handler`'s address: the timer programs only compare it.
const TW_TIMER_HANDLER: u64 = 0xffff_ffff_81ab_cdef;

/// A decoder and an encoder for the same layouts.
#[derive(Clone, Debug)]
pub struct Codec {
    pub decoder: Decoder,
    pub encoder: Encoder,
}

/// Every record kind enabled, as the daemon configures this kernel.
#[must_use]
pub fn codec() -> Codec {
    let format = |name: &str, text| Format::parse(format!("{name}/format").into(), text);
    let state = format(
        "inet_sock_set_state",
        known_formats::INET_SOCK_SET_STATE_6_18,
    );
    let send = format("tcp_send_reset", known_formats::TCP_SEND_RESET_6_18);
    let receive = format("tcp_receive_reset", known_formats::TCP_RECEIVE_RESET_6_18);
    let skb = format("tcp_retransmit_skb", known_formats::TCP_RETRANSMIT_SKB_6_18);
    let complete = "the 6.18 formats hold every field the layouts read";
    let (state_layout, state_cfg) = StateLayout::from_format(&state).expect(complete);
    let (send_layout, send_cfg) =
        ResetLayout::from_format(&send, ResetDirection::Sent).expect(complete);
    let (receive_layout, receive_cfg) =
        ResetLayout::from_format(&receive, ResetDirection::Received).expect(complete);
    let (skb_layout, skb_cfg) = RetransmitLayout::from_format(&skb).expect(complete);
    let fits = "sock_common's members fit the copy";
    let (timer_layout, timer_cfg) =
        TimerLayout::new(SOCK_COMMON, TIMEWAIT, TW_TIMER_HANDLER, Some(HZ)).expect(fits);
    let (error_layout, error_cfg) =
        SocketErrorLayout::new(SOCK_COMMON, SockErrorProbeConfig::UNSET).expect(fits);
    let (synack_layout, synack_cfg) =
        SynackLayout::new(SOCK_COMMON, SynackProbeConfig::UNSET).expect(fits);
    Codec {
        decoder: Decoder {
            state: state_layout,
            send_reset: Some(send_layout),
            receive_reset: Some(receive_layout),
            timer: Some(timer_layout),
            retransmit: Some(skb_layout),
            retransmit_synack: Some(synack_layout),
            sock_error: Some(error_layout),
        },
        encoder: Encoder {
            state: Some(StateEncoder::new(&state, state_cfg).expect(complete)),
            send_reset: Some(
                ResetEncoder::new(&send, ResetDirection::Sent, send_cfg).expect(complete),
            ),
            receive_reset: Some(
                ResetEncoder::new(&receive, ResetDirection::Received, receive_cfg).expect(complete),
            ),
            timer: Some(TimerEncoder::new(SOCK_COMMON, timer_cfg, HZ)),
            retransmit: Some(RetransmitEncoder::new(&skb, skb_cfg).expect(complete)),
            retransmit_synack: Some(SynackEncoder::new(SOCK_COMMON, synack_cfg)),
            sock_error: Some(SocketErrorEncoder::new(SOCK_COMMON, error_cfg)),
        },
    }
}
