//! The kernel's own per-program counters over a phase: run count, run time, recursion misses
//! (`observer::load::prog_stats` reads them, while enabled).

use std::collections::BTreeMap;

use observer::load::prog_stats::{ProgStats, Program};

/// Counters of one program over a phase.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Cost {
    pub program: String,
    pub invocations: u64,
    pub run_time_ns: u64,
    pub recursion_misses: u64,
}

impl Cost {
    #[must_use]
    pub fn between(name: &str, before: ProgStats, after: ProgStats) -> Self {
        Self {
            program: name.to_owned(),
            invocations: after.run_count - before.run_count,
            run_time_ns: after.run_time_ns - before.run_time_ns,
            recursion_misses: after.recursion_misses - before.recursion_misses,
        }
    }

    /// Counters of every program in `after`, less what they were in `before`.
    #[must_use]
    pub fn all_between(
        before: &BTreeMap<u32, Program>,
        after: &BTreeMap<u32, Program>,
    ) -> Vec<Self> {
        after
            .iter()
            .map(|(id, p)| {
                let start = before.get(id).map(|b| b.stats).unwrap_or_default();
                Self::between(&p.name, start, p.stats)
            })
            .collect()
    }
}
