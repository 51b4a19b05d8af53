//! The contract between this program and the eBPF object it embeds: every program, the
//! tracepoint it attaches to, the configuration global the loader fills for it, the records it
//! writes, and whether the observation can go on without it. The loader, `observer doctor` and
//! the benchmarks read names from here; a test parses the embedded object and checks that
//! every name in this table is in it.

use observer_common::RecordKind;

/// The part of the observation a program serves: the feature it switches off when it cannot
/// be attached, and where its losses are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Transitions,
    Resets,
    Timewait,
    Retransmits,
    SocketErrors,
}

/// How a program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// A tracepoint of tracefs: the program reads its record (`tracepoint/<category>/<name>`).
    Tracepoint,
    /// A raw tracepoint, by name: the program reads the kernel's own arguments.
    Raw,
}

/// One program of the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Program {
    /// The program's name, which is also its tracepoint's.
    pub name: &'static str,
    /// The tracepoint's category (its directory under tracefs `events/`).
    pub category: &'static str,
    pub hook: Hook,
    pub part: Part,
    /// The global the loader fills with this kernel's layout before loading; until then the
    /// program does nothing.
    pub config: &'static str,
    /// The kinds of record it writes to its CPU's ring in [`RINGS`].
    pub records: &'static [RecordKind],
}

impl Program {
    /// Without it, there is nothing to observe: loading fails rather than going on.
    #[must_use]
    pub const fn required(&self) -> bool {
        matches!(self.part, Part::Transitions)
    }
}

pub const INET_SOCK_SET_STATE: Program = Program {
    name: "inet_sock_set_state",
    category: "sock",
    hook: Hook::Tracepoint,
    part: Part::Transitions,
    config: "STATE_PROBE_CONFIG",
    records: &[RecordKind::StateChange],
};

pub const TCP_SEND_RESET: Program = Program {
    name: "tcp_send_reset",
    category: "tcp",
    hook: Hook::Tracepoint,
    part: Part::Resets,
    config: "SEND_RESET_CONFIG",
    records: &[RecordKind::SendReset],
};

pub const TCP_RECEIVE_RESET: Program = Program {
    name: "tcp_receive_reset",
    category: "tcp",
    hook: Hook::Tracepoint,
    part: Part::Resets,
    config: "RECEIVE_RESET_CONFIG",
    records: &[RecordKind::ReceiveReset],
};

/// The three timer programs share one configuration.
const TIMER_CONFIG: &str = "TIMER_PROBE_CONFIG";

pub const TIMER_START: Program = Program {
    name: "timer_start",
    category: "timer",
    hook: Hook::Raw,
    part: Part::Timewait,
    config: TIMER_CONFIG,
    records: &[RecordKind::TimewaitTimer],
};

pub const TIMER_CANCEL: Program = Program {
    name: "timer_cancel",
    category: "timer",
    hook: Hook::Raw,
    part: Part::Timewait,
    config: TIMER_CONFIG,
    records: &[RecordKind::TimewaitEnd],
};

pub const TIMER_EXPIRE_ENTRY: Program = Program {
    name: "timer_expire_entry",
    category: "timer",
    hook: Hook::Raw,
    part: Part::Timewait,
    config: TIMER_CONFIG,
    records: &[RecordKind::TimewaitEnd],
};

pub const TCP_RETRANSMIT_SKB: Program = Program {
    name: "tcp_retransmit_skb",
    category: "tcp",
    hook: Hook::Tracepoint,
    part: Part::Retransmits,
    config: "RETRANSMIT_CONFIG",
    records: &[RecordKind::Retransmit],
};

pub const TCP_RETRANSMIT_SYNACK: Program = Program {
    name: "tcp_retransmit_synack",
    category: "tcp",
    hook: Hook::Raw,
    part: Part::Retransmits,
    config: "RETRANSMIT_SYNACK_CONFIG",
    records: &[RecordKind::RetransmitSynack],
};

pub const INET_SK_ERROR_REPORT: Program = Program {
    name: "inet_sk_error_report",
    category: "sock",
    hook: Hook::Raw,
    part: Part::SocketErrors,
    config: "SOCK_ERROR_CONFIG",
    records: &[RecordKind::SocketError],
};

/// Every program the daemon attaches, transitions first.
pub const PROGRAMS: [Program; 9] = [
    INET_SOCK_SET_STATE,
    TCP_SEND_RESET,
    TCP_RECEIVE_RESET,
    TIMER_START,
    TIMER_CANCEL,
    TIMER_EXPIRE_ENTRY,
    TCP_RETRANSMIT_SKB,
    TCP_RETRANSMIT_SYNACK,
    INET_SK_ERROR_REPORT,
];

/// Programs on `sock:inet_sock_set_state` that the daemon never attaches: the benchmark's
/// baselines (a fixed-size record submitted, waking the reader in different ways), against
/// which the cost of [`INET_SOCK_SET_STATE`] is measured.
pub const BASELINES: [&str; 6] = [
    BASELINE,
    BASELINE_RAW,
    BASELINE_WAKE_EACH,
    BASELINE_NO_WAKEUP,
    BASELINE_PER_CPU,
    BASELINE_PER_CPU_WRITTEN,
];

/// A program of the benchmark on the hook of one of the daemon's programs; the daemon never
/// attaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OnHook {
    pub name: &'static str,
    /// The daemon's program whose hook it takes.
    pub on: Program,
}

/// A floor on each hook of [`PROGRAMS`] after the first: a record reserved and submitted as
/// [`BASELINE`] does (on the timers, for timewait timers only). With [`BASELINE`] they are the
/// least that watching all of the daemon's hooks costs.
pub const FLOORS: [OnHook; 8] = [
    OnHook {
        name: "floor_send_reset",
        on: TCP_SEND_RESET,
    },
    OnHook {
        name: "floor_receive_reset",
        on: TCP_RECEIVE_RESET,
    },
    OnHook {
        name: "floor_timer_start",
        on: TIMER_START,
    },
    OnHook {
        name: "floor_timer_cancel",
        on: TIMER_CANCEL,
    },
    OnHook {
        name: "floor_timer_expire",
        on: TIMER_EXPIRE_ENTRY,
    },
    OnHook {
        name: "floor_retransmit",
        on: TCP_RETRANSMIT_SKB,
    },
    OnHook {
        name: "floor_retransmit_synack",
        on: TCP_RETRANSMIT_SYNACK,
    },
    OnHook {
        name: "floor_sk_error",
        on: INET_SK_ERROR_REPORT,
    },
];

/// What a hook costs before any program's work: `empty_*` do nothing (the kernel's cost of
/// calling a program there), `filter_*` run the timer programs' filter and write nothing.
pub const HOOK_PIECES: [OnHook; 5] = [
    OnHook {
        name: EMPTY_STATE,
        on: INET_SOCK_SET_STATE,
    },
    OnHook {
        name: EMPTY_TIMER_START,
        on: TIMER_START,
    },
    OnHook {
        name: FILTER_TIMER_START,
        on: TIMER_START,
    },
    OnHook {
        name: EMPTY_TIMER_CANCEL,
        on: TIMER_CANCEL,
    },
    OnHook {
        name: FILTER_TIMER_CANCEL,
        on: TIMER_CANCEL,
    },
];

/// [`HOOK_PIECES`] by name: a program doing nothing on each hook, and the timer filter alone.
pub const EMPTY_STATE: &str = "empty_state";
pub const EMPTY_TIMER_START: &str = "empty_timer_start";
pub const FILTER_TIMER_START: &str = "filter_timer_start";
pub const EMPTY_TIMER_CANCEL: &str = "empty_timer_cancel";
pub const FILTER_TIMER_CANCEL: &str = "filter_timer_cancel";

/// Submits a record as the daemon's programs do, waking the reader past a fill level.
pub const BASELINE: &str = "baseline";
/// [`BASELINE`] as a raw tracepoint program (the one baseline that is not a classic
/// tracepoint).
pub const BASELINE_RAW: &str = "baseline_raw";
/// Submits a record and wakes the reader every time.
pub const BASELINE_WAKE_EACH: &str = "baseline_wake_each";
/// Submits a record and never wakes the reader.
pub const BASELINE_NO_WAKEUP: &str = "baseline_no_wakeup";
/// [`BASELINE`] writing to its CPU's ring in [`RINGS`], as the daemon's programs do.
pub const BASELINE_PER_CPU: &str = "baseline_per_cpu";
/// [`BASELINE_PER_CPU`] storing the 120 bytes of its record that the daemon's state program
/// stores (every field, and a 64-byte span).
pub const BASELINE_PER_CPU_WRITTEN: &str = "baseline_per_cpu_written";

/// The ring buffers the daemon's programs write their records to, one per CPU (an array of
/// ring buffers indexed by CPU number).
pub const RINGS: &str = "RINGS";

/// One ring buffer shared by all CPUs, written to by the benchmark's reference programs
/// ([`BASELINES`], [`FLOORS`]) only.
pub const EVENTS: &str = "EVENTS";

/// Per-CPU loss counters, indexed by `observer_common::record::Counter`.
pub const COUNTERS: &str = "COUNTERS";

/// Unread bytes past which a submit wakes the reader.
pub const RING_WAKEUP_BYTES: &str = "RING_WAKEUP_BYTES";

/// The kernel function the timer programs look for as a timer's callback: the timewait
/// socket's (its address comes from /proc/kallsyms).
pub const TW_TIMER_HANDLER: &str = "tw_timer_handler";

/// The program of this name.
#[must_use]
pub fn program(name: &str) -> Option<&'static Program> {
    PROGRAMS.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use aya_obj::{Object, ProgramSection};
    use object::{Object as _, ObjectSymbol as _};

    use super::*;

    fn object() -> Object {
        Object::parse(super::super::object()).expect("the embedded eBPF object parses")
    }

    #[test]
    fn every_program_is_in_the_object_with_its_hook() {
        let obj = object();
        for p in &PROGRAMS {
            let program = obj
                .programs
                .get(p.name)
                .unwrap_or_else(|| panic!("the object has no program {}", p.name));
            match (&program.section, p.hook) {
                (ProgramSection::TracePoint, Hook::Tracepoint)
                | (ProgramSection::RawTracePoint, Hook::Raw) => {}
                (section, hook) => panic!("{}: section {section:?}, table says {hook:?}", p.name),
            }
        }
        for name in BASELINES {
            let section = obj.programs.get(name).map(|p| &p.section);
            assert!(
                if name == BASELINE_RAW {
                    matches!(section, Some(ProgramSection::RawTracePoint))
                } else {
                    matches!(section, Some(ProgramSection::TracePoint))
                },
                "the object has no {name} program of its kind: {section:?}"
            );
        }
        for (floor, on) in FLOORS.iter().zip(&PROGRAMS[1..]) {
            assert_eq!(&floor.on, on, "one floor per hook, in the table's order");
        }
        for floor in FLOORS.iter().chain(&HOOK_PIECES) {
            let section = obj.programs.get(floor.name).map(|p| &p.section);
            assert!(
                matches!(
                    (section, floor.on.hook),
                    (Some(ProgramSection::TracePoint), Hook::Tracepoint)
                        | (Some(ProgramSection::RawTracePoint), Hook::Raw)
                ),
                "the object has no {} program on {}'s hook: {section:?}",
                floor.name,
                floor.on.name
            );
        }
    }

    #[test]
    fn the_object_has_no_program_outside_the_table() {
        let known: BTreeSet<&str> = PROGRAMS
            .iter()
            .map(|p| p.name)
            .chain(BASELINES)
            .chain(FLOORS.iter().chain(&HOOK_PIECES).map(|f| f.name))
            .collect();
        let obj = object();
        let extra: Vec<&String> = obj
            .programs
            .keys()
            .filter(|n| !known.contains(n.as_str()))
            .collect();
        assert!(
            extra.is_empty(),
            "programs missing from the table: {extra:?}"
        );
    }

    #[test]
    fn every_map_and_global_is_in_the_object() {
        let obj = object();
        for map in [RINGS, EVENTS, COUNTERS] {
            assert!(obj.maps.contains_key(map), "the object has no map {map}");
        }
        let elf = object::File::parse(super::super::object()).expect("the eBPF object is ELF");
        let symbols: BTreeSet<&str> = elf.symbols().filter_map(|s| s.name().ok()).collect();
        let globals = PROGRAMS.iter().map(|p| p.config).chain([RING_WAKEUP_BYTES]);
        for global in globals {
            assert!(
                symbols.contains(global),
                "the object has no global {global}"
            );
        }
    }

    #[test]
    fn every_record_kind_has_a_writer() {
        let written: BTreeSet<u16> = PROGRAMS
            .iter()
            .flat_map(|p| p.records.iter().map(|k| *k as u16))
            .collect();
        let all: BTreeSet<u16> = (0..=u16::MAX)
            .filter(|v| RecordKind::from_u16(*v).is_some())
            .collect();
        assert_eq!(
            written, all,
            "record kinds no program writes, or unknown kinds"
        );
    }

    #[test]
    fn only_transitions_are_required() {
        let required: Vec<&str> = PROGRAMS
            .iter()
            .filter(|p| p.required())
            .map(|p| p.name)
            .collect();
        assert_eq!(required, ["inet_sock_set_state"]);
        assert_eq!(program("timer_cancel"), Some(&TIMER_CANCEL));
    }
}
