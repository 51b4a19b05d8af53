//! What each read of the daemon's state program costs: copies of the program, each leaving
//! one read out, attached beside the whole program and the `baseline` floor on the same
//! tracepoint, so that all of them run for the same transitions in the same phase. Their
//! difference is the read's cost, free of the drift between phases (on this kind of machine one
//! phase's ns per run differs from the next by up to 300 ns). The kernel runs them one after
//! the other, the later ones with the socket's cache lines already loaded by the earlier ones:
//! a first, unmeasured copy of the whole program loads them for all, so that every figure is
//! a warm-cache cost (a cache miss that the program alone would take is not in them), and the
//! order of the measured ones rotates with the round.

use std::io;

use observer::load::{KernelReads, contract, prog_stats::ProgStats, state_config};
use observer_common::{SpanProbeConfig, record::BASELINE_WRITTEN_SPAN};

use crate::{
    baseline::{Baseline, Counted as _},
    kstats::Cost,
};

/// A read, or all of them, left out of a copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Omitted {
    Cgroup,
    Netns,
    SkSocket,
    Comm,
    /// All four: what is left is the span copy, the filter, the timestamp and the task.
    All,
}

impl Omitted {
    pub const ALL: [Self; 5] = [
        Self::Cgroup,
        Self::Netns,
        Self::SkSocket,
        Self::Comm,
        Self::All,
    ];

    /// The copy's name in the figures.
    pub const fn key(self) -> &'static str {
        match self {
            Self::Cgroup => "state_no_cgroup",
            Self::Netns => "state_no_netns",
            Self::SkSocket => "state_no_sk_socket",
            Self::Comm => "state_no_comm",
            Self::All => "state_no_reads",
        }
    }

    /// The read, as the table names it.
    pub const fn read(self) -> &'static str {
        match self {
            Self::Cgroup => "the socket's cgroup (3 reads, at its birth)",
            Self::Netns => "the socket's network namespace (2 reads, at its birth)",
            Self::SkSocket => "sk_socket (1 read, ESTABLISHED -> CLOSE_WAIT or CLOSE)",
            Self::Comm => "the task's comm (a helper call, in the owner's context)",
            Self::All => "all four",
        }
    }

    const fn reads(self) -> KernelReads {
        let all = KernelReads::ALL;
        match self {
            Self::Cgroup => KernelReads {
                cgroup: false,
                ..all
            },
            Self::Netns => KernelReads {
                netns: false,
                ..all
            },
            Self::SkSocket => KernelReads {
                sk_socket: false,
                ..all
            },
            Self::Comm => KernelReads { comm: false, ..all },
            Self::All => KernelReads {
                netns: false,
                sk_socket: false,
                cgroup: false,
                comm: false,
            },
        }
    }
}

/// The whole program's copy, in the figures.
pub const WHOLE: &str = "state_whole";

/// The copy that runs first, unmeasured, to warm the cache for the others.
const WARM_UP: &str = "state_warm_up";

/// A copy without the four reads that copies no span either, and so reads the two fields it
/// needs (the protocol and the socket) from the record one by one: against [`Omitted::All`]'s
/// copy, what copying the span costs beside reading just those fields.
pub const NO_SPAN: &str = "state_no_span";

/// The copies and the floor, attached.
pub struct Copies(Vec<Baseline>);

impl Copies {
    /// Attaches the warm-up copy, then the whole program, each copy and `baseline` in an
    /// order rotated by `round`.
    pub fn attach(round: u64) -> io::Result<Self> {
        let config = |reads| state_config(reads).map_err(io::Error::other);
        let mut no_span = config(Omitted::All.reads())?;
        no_span.span_len = 0;
        let whole = config(KernelReads::ALL)?;
        if whole.span_len as usize != BASELINE_WRITTEN_SPAN {
            eprintln!(
                "bench: the state program copies {} bytes of span on this kernel, and {} \
                 stores {BASELINE_WRITTEN_SPAN}: the record's stores are not measured at the \
                 program's size",
                whole.span_len,
                contract::BASELINE_PER_CPU_WRITTEN
            );
        }
        let mut wanted: Vec<(&'static str, Option<SpanProbeConfig>)> = vec![(WHOLE, Some(whole))];
        for o in Omitted::ALL {
            wanted.push((o.key(), Some(config(o.reads())?)));
        }
        wanted.push((NO_SPAN, Some(no_span)));
        wanted.push((contract::BASELINE, None));
        wanted.push((contract::BASELINE_PER_CPU, None));
        wanted.push((contract::BASELINE_PER_CPU_WRITTEN, None));
        let by = usize::try_from(round).expect("few rounds") % wanted.len();
        wanted.rotate_left(by);
        wanted.insert(0, (WARM_UP, Some(config(KernelReads::ALL)?)));
        let mut attached = Vec::new();
        for (label, state) in wanted {
            attached.push(match state {
                Some(state) => Baseline::attach_state(label, state)?,
                None => Baseline::attach(label)?,
            });
        }
        // Last, so that every copy above runs in the same order relative to them each round;
        // the pieces after the floors, so the timer filter's read finds the timer in cache, as
        // every copy here finds the socket.
        attached.push(Baseline::attach_on_hooks(&contract::FLOORS)?);
        attached.push(Baseline::attach_on_hooks(&contract::HOOK_PIECES)?);
        Ok(Self(attached))
    }

    /// Every program's counters, one list per object.
    pub fn stats(&self) -> io::Result<Vec<Vec<ProgStats>>> {
        self.0.iter().map(Baseline::stats).collect()
    }

    /// Each program's cost since `before`, under its label.
    pub fn costs_since(&self, before: &[Vec<ProgStats>]) -> io::Result<Vec<Cost>> {
        let mut costs = Vec::new();
        for (b, before) in self.0.iter().zip(before) {
            costs.extend(b.costs_since(before)?);
        }
        Ok(costs)
    }
}
