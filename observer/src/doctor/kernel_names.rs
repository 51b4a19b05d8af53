//! The kernel objects doctor looks up by name: the tracepoints the programs attach to, the
//! symbol the timer programs filter on, and the BTF members and types the loader resolves.

use crate::event::{ResetDirection, RetransmitKind};

/// The symbol the timer programs filter on.
pub(super) const TW_TIMER_HANDLER: &str = "tw_timer_handler";

/// What a tracepoint feeds, which decides how its format is checked and what its absence costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    State,
    Reset(ResetDirection),
    /// Attached as a raw tracepoint: its record's fields are not read.
    Timer,
    Retransmit(RetransmitKind),
    /// Attached as a raw tracepoint, too.
    SocketError,
}

pub(super) struct Tracepoint {
    pub category: &'static str,
    pub name: &'static str,
    pub role: Role,
}

/// The tracepoints the programs attach to, in the report's order.
pub(super) const TRACEPOINTS: [Tracepoint; 9] = [
    Tracepoint {
        category: "sock",
        name: "inet_sock_set_state",
        role: Role::State,
    },
    Tracepoint {
        category: "tcp",
        name: "tcp_send_reset",
        role: Role::Reset(ResetDirection::Sent),
    },
    Tracepoint {
        category: "tcp",
        name: "tcp_receive_reset",
        role: Role::Reset(ResetDirection::Received),
    },
    Tracepoint {
        category: "timer",
        name: "timer_start",
        role: Role::Timer,
    },
    Tracepoint {
        category: "timer",
        name: "timer_cancel",
        role: Role::Timer,
    },
    Tracepoint {
        category: "timer",
        name: "timer_expire_entry",
        role: Role::Timer,
    },
    Tracepoint {
        category: "tcp",
        name: "tcp_retransmit_skb",
        role: Role::Retransmit(RetransmitKind::Segment),
    },
    Tracepoint {
        category: "tcp",
        name: "tcp_retransmit_synack",
        role: Role::Retransmit(RetransmitKind::Synack),
    },
    Tracepoint {
        category: "sock",
        name: "inet_sk_error_report",
        role: Role::SocketError,
    },
];

/// A member of a kernel structure, by the path the loader resolves through BTF.
pub(super) struct BtfMember {
    pub strukt: &'static str,
    pub path: &'static str,
}

/// A socket's network namespace inode: `sock` -> `net` -> `ns.inum`.
pub(super) const BTF_NETNS: [BtfMember; 2] = [
    BtfMember {
        strukt: "sock",
        path: "__sk_common.skc_net.net",
    },
    BtfMember {
        strukt: "net",
        path: "ns.inum",
    },
];

/// The `struct socket` a sock hangs from, absent until accept().
pub(super) const BTF_SK_SOCKET: BtfMember = BtfMember {
    strukt: "sock",
    path: "sk_socket",
};

/// The network namespace of a packet, through its device (RSTs sent without a socket).
pub(super) const BTF_SKB_NETNS: [BtfMember; 2] = [
    BtfMember {
        strukt: "sk_buff",
        path: "dev",
    },
    BtfMember {
        strukt: "net_device",
        path: "nd_net.net",
    },
];

/// The enum whose names say why an RST was sent.
pub(super) const BTF_RST_REASON_ENUM: &str = "sk_rst_reason";
