//! TCP states as the kernel numbers them (`include/net/tcp_states.h`).

/// A TCP state. Discriminants are the kernel's values.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TcpState {
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    FinWait1 = 4,
    FinWait2 = 5,
    TimeWait = 6,
    Close = 7,
    CloseWait = 8,
    LastAck = 9,
    Listen = 10,
    Closing = 11,
    NewSynRecv = 12,
}

impl TcpState {
    /// Every state, in kernel order.
    pub const ALL: [Self; 12] = [
        Self::Established,
        Self::SynSent,
        Self::SynRecv,
        Self::FinWait1,
        Self::FinWait2,
        Self::TimeWait,
        Self::Close,
        Self::CloseWait,
        Self::LastAck,
        Self::Listen,
        Self::Closing,
        Self::NewSynRecv,
    ];

    /// The state with kernel value `value`, if there is one.
    #[must_use]
    pub const fn from_kernel(value: i32) -> Option<Self> {
        if value >= 1 && value <= 12 {
            #[expect(clippy::cast_sign_loss, reason = "1..=12")]
            Some(Self::ALL[(value - 1) as usize])
        } else {
            None
        }
    }

    /// The name `ss` and the kernel's tracepoint print format use, without the `TCP_` prefix.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Established => "ESTABLISHED",
            Self::SynSent => "SYN_SENT",
            Self::SynRecv => "SYN_RECV",
            Self::FinWait1 => "FIN_WAIT1",
            Self::FinWait2 => "FIN_WAIT2",
            Self::TimeWait => "TIME_WAIT",
            Self::Close => "CLOSE",
            Self::CloseWait => "CLOSE_WAIT",
            Self::LastAck => "LAST_ACK",
            Self::Listen => "LISTEN",
            Self::Closing => "CLOSING",
            Self::NewSynRecv => "NEW_SYN_RECV",
        }
    }

    /// Parses a state name case-insensitively, with or without `TCP_`, ignoring `_` and `-`
    /// (`close_wait`, `CLOSE-WAIT`, `TCP_CLOSE_WAIT` and `closewait` are all `CLOSE_WAIT`).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        let letters = |s: &str| {
            s.bytes()
                .filter(|b| *b != b'_' && *b != b'-')
                .map(|b| b.to_ascii_uppercase())
                .collect::<heapless_name::Name>()
        };
        let wanted = letters(name);
        let wanted = wanted
            .as_bytes()
            .strip_prefix(b"TCP")
            .unwrap_or(wanted.as_bytes());
        Self::ALL
            .into_iter()
            .find(|s| letters(s.name()).as_bytes() == wanted)
    }

    /// Whether a transition `old -> new` is driven by a system call of the socket's owner, so
    /// that the task running it is the owner.
    ///
    /// Transitions driven by incoming packets or timers run in softirq context, where the
    /// current task is whichever one was interrupted. Only transitions that are always made by
    /// the owner's own call count: `connect()` (-> `SYN_SENT`), `listen()` (-> LISTEN),
    /// `close()/shutdown()` of an established socket (-> `FIN_WAIT1`), `close()` after the peer's FIN
    /// (`CLOSE_WAIT` -> `LAST_ACK`) and `close()` of a listener. A transition to CLOSE from a
    /// connected state is ambiguous (the owner's abortive close, or an incoming RST), so it does
    /// not count.
    #[must_use]
    pub const fn in_owner_context(old: Self, new: Self) -> bool {
        OWNER_CONTEXT[old as usize] & (1 << new as u16) != 0
    }
}

/// [`in_owner_context`] as a table, for the daemon's decoding of every transition: by old
/// state, a bit per new state. One load and a shift instead of a chain of comparisons.
const OWNER_CONTEXT: [u16; 13] = {
    let mut table = [0u16; 13];
    let mut i = 0;
    while i < TcpState::ALL.len() {
        let old = TcpState::ALL[i];
        let mut j = 0;
        while j < TcpState::ALL.len() {
            let new = TcpState::ALL[j];
            if in_owner_context(old as i32, new as i32) {
                table[old as usize] |= 1 << new as u16;
            }
            j += 1;
        }
        i += 1;
    }
    table
};

/// [`TcpState::in_owner_context`] on the kernel's values, as the eBPF programs read them from a
/// tracepoint record (which then read the task's `comm` only when it names the owner).
#[must_use]
pub const fn in_owner_context(old: i32, new: i32) -> bool {
    const CLOSE: i32 = TcpState::Close as i32;
    const SYN_SENT: i32 = TcpState::SynSent as i32;
    const LISTEN: i32 = TcpState::Listen as i32;
    const ESTABLISHED: i32 = TcpState::Established as i32;
    const SYN_RECV: i32 = TcpState::SynRecv as i32;
    const FIN_WAIT1: i32 = TcpState::FinWait1 as i32;
    const CLOSE_WAIT: i32 = TcpState::CloseWait as i32;
    const LAST_ACK: i32 = TcpState::LastAck as i32;
    matches!(
        (old, new),
        (CLOSE, SYN_SENT | LISTEN)
            | (ESTABLISHED | SYN_RECV, FIN_WAIT1)
            | (CLOSE_WAIT, LAST_ACK)
            | (LISTEN, CLOSE)
    )
}

mod heapless_name {
    /// A short upper-case name built without allocating (this crate is `no_std`).
    #[derive(Default)]
    pub struct Name {
        bytes: [u8; 24],
        len: usize,
    }

    impl Name {
        pub fn as_bytes(&self) -> &[u8] {
            &self.bytes[..self.len]
        }
    }

    impl FromIterator<u8> for Name {
        fn from_iter<I: IntoIterator<Item = u8>>(iter: I) -> Self {
            let mut name = Self::default();
            for b in iter {
                if name.len == name.bytes.len() {
                    // Longer than any state name: make it match nothing.
                    name.len = 0;
                    break;
                }
                name.bytes[name.len] = b;
                name.len += 1;
            }
            name
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TcpState;

    #[test]
    fn names_round_trip_and_accept_common_spellings() {
        for s in TcpState::ALL {
            assert_eq!(TcpState::from_name(s.name()), Some(s));
            assert_eq!(TcpState::from_kernel(s as i32), Some(s));
        }
        assert_eq!(TcpState::from_name("close-wait"), Some(TcpState::CloseWait));
        assert_eq!(
            TcpState::from_name("TCP_TIME_WAIT"),
            Some(TcpState::TimeWait)
        );
        assert_eq!(TcpState::from_name("finwait2"), Some(TcpState::FinWait2));
        assert_eq!(TcpState::from_name("closed"), None);
        assert_eq!(TcpState::from_name(""), None);
        assert_eq!(
            TcpState::from_name("ESTABLISHED_AND_MUCH_MORE_THAN_THAT"),
            None
        );
        assert_eq!(TcpState::from_kernel(0), None);
        assert_eq!(TcpState::from_kernel(13), None);
    }

    #[test]
    fn only_syscall_driven_transitions_are_in_owner_context() {
        use TcpState::{
            Close, CloseWait, Established, FinWait1, FinWait2, LastAck, Listen, SynRecv, SynSent,
        };
        assert!(TcpState::in_owner_context(Close, SynSent));
        assert!(TcpState::in_owner_context(Established, FinWait1));
        assert!(TcpState::in_owner_context(CloseWait, LastAck));
        assert!(!TcpState::in_owner_context(SynSent, Established));
        assert!(!TcpState::in_owner_context(Established, Close));
        assert!(!TcpState::in_owner_context(FinWait1, FinWait2));
        assert!(!TcpState::in_owner_context(Listen, SynRecv));
    }

    #[test]
    fn the_daemon_s_table_agrees_with_the_programs_rule_on_every_pair() {
        let mut owned = 0;
        for old in TcpState::ALL {
            for new in TcpState::ALL {
                let rule = super::in_owner_context(old as i32, new as i32);
                assert_eq!(
                    TcpState::in_owner_context(old, new),
                    rule,
                    "{old:?} -> {new:?}"
                );
                owned += u32::from(rule);
            }
        }
        assert_eq!(owned, 6, "the six transitions of the rule, no more");
    }
}
