//! `inet_sk_error_report`: an error (refused, reset, timed out, ICMP) reported on a socket.
//!
//! A raw tracepoint: the tracepoint's record has the error and the addresses but not the
//! socket's address, which is what ties the error to a connection. Its only argument is the
//! `struct sock *`, so everything is read from the socket with offsets from BTF. The kernel
//! fires it for every inet socket; only TCP stream sockets are reported.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use observer_common::{
    RecordHeader, RecordKind, SockErrorProbeConfig, SocketErrorRecord,
    probe_config::{KernelBits, UNKNOWN},
    record::{
        COMMON_CAPACITY, Counter, SOCK_ERR_PROBES_OUT_READ, SOCK_ERR_RETRANSMITS_READ,
        SOCK_ERR_SPORT_READ, SOCK_ERR_UNSENT_DATA, SOCK_ERR_WMEM_READ,
    },
};

use super::{common, span::config};
use crate::maps::{NO_WAKEUP, Ring, count};

const IPPROTO_TCP: u32 = 6;
const SOCK_STREAM: u32 = 1;

/// Filled in by the daemon at load time.
#[unsafe(no_mangle)]
static SOCK_ERROR_CONFIG: SockErrorProbeConfig = SockErrorProbeConfig::UNSET;

#[raw_tracepoint(tracepoint = "inet_sk_error_report")]
pub fn inet_sk_error_report(ctx: RawTracePointContext) -> i32 {
    let cfg = config(&SOCK_ERROR_CONFIG);
    if cfg.configured == 0 {
        return 0;
    }
    let sk: *const u8 = ctx.arg(0);
    if sk.is_null() {
        return 0;
    }
    // SAFETY: probe reads of kernel memory through the helpers.
    unsafe {
        // Neighbours in `struct sock`: one read for both where they share 8 bytes.
        let (protocol, sock_type) =
            match read_together(sk, cfg.protocol.offset, cfg.sock_type.offset, 4) {
                #[expect(clippy::cast_possible_truncation, reason = "the u32 at each offset")]
                Some((p, t)) => (
                    Some(member(p as u32, cfg.protocol)),
                    Some(member(t as u32, cfg.sock_type)),
                ),
                None => (read_bits(sk, cfg.protocol), read_bits(sk, cfg.sock_type)),
            };
        if protocol != Some(IPPROTO_TCP) || sock_type != Some(SOCK_STREAM) {
            return 0;
        }
        // sk_err 0: tcp_disconnect() reports even when nothing went wrong.
        let Ok(error) = bpf_probe_read_kernel(sk.add(cfg.err_offset as usize).cast::<i32>()) else {
            count(Counter::ReadFailed);
            return 0;
        };
        if error == 0 {
            return 0;
        }
        emit(sk, &cfg, error);
    }
    0
}

#[inline(always)]
unsafe fn emit(sk: *const u8, cfg: &SockErrorProbeConfig, error: i32) {
    let Some((ring, mut entry)) = Ring::reserve::<SocketErrorRecord>() else {
        count(Counter::RingbufFull);
        return;
    };
    let rec = entry.as_mut_ptr();
    let len = (cfg.common_len as usize).min(COMMON_CAPACITY);
    // SAFETY: `rec` is a reserved record; kernel memory is read through probe-read helpers.
    unsafe {
        let copy = &mut (*rec).common;
        if bpf_probe_read_kernel_buf(sk, &mut copy[..len]).is_err() {
            count(Counter::ReadFailed);
            entry.discard(NO_WAKEUP);
            return;
        }
        // The state and the namespace's pointer are in the copy (`struct sock_common`).
        let copy = &*copy;
        let Some(state) = common::field::<u8>(copy, len, cfg.state_offset)
            .or_else(|| bpf_probe_read_kernel(sk.add(cfg.state_offset as usize)).ok())
        else {
            count(Counter::ReadFailed);
            entry.discard(NO_WAKEUP);
            return;
        };
        (*rec).header = RecordHeader::new(RecordKind::SocketError, size_of::<SocketErrorRecord>());
        (*rec).ts_ns = bpf_ktime_get_ns();
        (*rec).sock = sk as u64;
        (*rec).netns = common::netns_inum(sk, copy, len, cfg.sock_net_offset, cfg.net_inum_offset);
        (*rec).error = error;
        (*rec).state = state;
        #[expect(clippy::cast_possible_truncation, reason = "len <= COMMON_CAPACITY")]
        {
            (*rec).common_len = len as u16;
        }
        let mut flags = 0;
        // Neighbours in `struct inet_connection_sock`: one read for both.
        #[expect(clippy::cast_possible_truncation, reason = "the byte at each offset")]
        let (retransmits, probes_out) =
            match read_together(sk, cfg.retransmits_offset, cfg.probes_out_offset, 1) {
                Some((r, p)) => (Some(r as u8), Some(p as u8)),
                None => (
                    read_u8(sk, cfg.retransmits_offset),
                    read_u8(sk, cfg.probes_out_offset),
                ),
            };
        (*rec).retransmits = match retransmits {
            Some(n) => {
                flags |= SOCK_ERR_RETRANSMITS_READ;
                n
            }
            None => 0,
        };
        (*rec).probes_out = match probes_out {
            Some(n) => {
                flags |= SOCK_ERR_PROBES_OUT_READ;
                n
            }
            None => 0,
        };
        if cfg.wmem_queued_offset != UNKNOWN
            && let Ok(queued) =
                bpf_probe_read_kernel(sk.add(cfg.wmem_queued_offset as usize).cast::<i32>())
        {
            flags |= SOCK_ERR_WMEM_READ;
            if queued > 0 {
                flags |= SOCK_ERR_UNSENT_DATA;
            }
        }
        (*rec).sport = if cfg.sport_offset == UNKNOWN {
            0
        } else if let Ok(port) =
            bpf_probe_read_kernel(sk.add(cfg.sport_offset as usize).cast::<u16>())
        {
            flags |= SOCK_ERR_SPORT_READ;
            port
        } else {
            0
        };
        (*rec).flags = flags;
    }
    ring.submit(entry);
}

#[inline(always)]
unsafe fn read_u8(sk: *const u8, offset: u32) -> Option<u8> {
    if offset == UNKNOWN {
        return None;
    }
    // SAFETY: probe read of kernel memory.
    unsafe { bpf_probe_read_kernel(sk.add(offset as usize)).ok() }
}

/// A member read as the `u32` that holds it; `None` when unknown or unreadable.
#[inline(always)]
unsafe fn read_bits(sk: *const u8, bits: KernelBits) -> Option<u32> {
    if bits.offset == UNKNOWN {
        return None;
    }
    // SAFETY: probe read of kernel memory.
    let word: u32 = unsafe { bpf_probe_read_kernel(sk.add(bits.offset as usize).cast()) }.ok()?;
    Some(member(word, bits))
}

/// The member `bits` describes, from the `u32` that holds it.
#[inline(always)]
fn member(word: u32, bits: KernelBits) -> u32 {
    (word >> (bits.shift & 31)) & bits.mask
}

/// Two members of `size` bytes at offsets `a` and `b` of `sk`, in one read of the 8 bytes
/// from the lower offset when both fit in them: the bytes from each offset on (little-endian,
/// as every target of these programs). `None` when either offset is unknown or they lie
/// further apart; the caller then reads them one by one.
#[inline(always)]
unsafe fn read_together(sk: *const u8, a: u32, b: u32, size: u32) -> Option<(u64, u64)> {
    if a == UNKNOWN || b == UNKNOWN {
        return None;
    }
    let base = a.min(b);
    if a.max(b) - base + size > 8 {
        return None;
    }
    // SAFETY: probe read of kernel memory.
    let word: u64 = unsafe { bpf_probe_read_kernel(sk.add(base as usize).cast()) }.ok()?;
    Some((word >> ((a - base) * 8), word >> ((b - base) * 8)))
}
