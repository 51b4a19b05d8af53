//! The kernel objects doctor looks up by name: the tracepoints the programs attach to, the
//! symbol the timer programs filter on, and the BTF members and types the loader resolves.

use crate::{
    event::{ResetDirection, RetransmitKind},
    load::contract::{self, Program},
};

/// The symbol the timer programs filter on.
pub(super) const TW_TIMER_HANDLER: &str = contract::TW_TIMER_HANDLER;

/// What a tracepoint feeds, which decides how its format is checked and what its absence costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    State,
    Reset(ResetDirection),
    /// Attached as a raw tracepoint: its record's fields are not read.
    Timer,
    /// Segments' records are decoded; SYN-ACKs' program is attached as a raw tracepoint.
    Retransmit(RetransmitKind),
    /// Attached as a raw tracepoint, too.
    SocketError,
}

pub(super) struct Tracepoint {
    pub category: &'static str,
    pub name: &'static str,
    pub role: Role,
}

impl Tracepoint {
    const fn of(program: Program, role: Role) -> Self {
        Self {
            category: program.category,
            name: program.name,
            role,
        }
    }
}

/// The tracepoints the programs attach to, in the report's order (the contract's).
pub(super) const TRACEPOINTS: [Tracepoint; contract::PROGRAMS.len()] = [
    Tracepoint::of(contract::INET_SOCK_SET_STATE, Role::State),
    Tracepoint::of(contract::TCP_SEND_RESET, Role::Reset(ResetDirection::Sent)),
    Tracepoint::of(
        contract::TCP_RECEIVE_RESET,
        Role::Reset(ResetDirection::Received),
    ),
    Tracepoint::of(contract::TIMER_START, Role::Timer),
    Tracepoint::of(contract::TIMER_CANCEL, Role::Timer),
    Tracepoint::of(contract::TIMER_EXPIRE_ENTRY, Role::Timer),
    Tracepoint::of(
        contract::TCP_RETRANSMIT_SKB,
        Role::Retransmit(RetransmitKind::Segment),
    ),
    Tracepoint::of(
        contract::TCP_RETRANSMIT_SYNACK,
        Role::Retransmit(RetransmitKind::Synack),
    ),
    Tracepoint::of(contract::INET_SK_ERROR_REPORT, Role::SocketError),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_of_the_contract_is_checked_once() {
        let checked: Vec<(&str, &str)> = TRACEPOINTS.iter().map(|t| (t.category, t.name)).collect();
        let attached: Vec<(&str, &str)> = contract::PROGRAMS
            .iter()
            .map(|p| (p.category, p.name))
            .collect();
        assert_eq!(checked, attached);
    }
}
