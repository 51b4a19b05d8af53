//! The daemon's programs without the daemon: loaded, configured and attached as `observer run`
//! loads them (`observer::load::Probes`), their per-CPU rings read in place and counted by the
//! benchmark's drain, nothing decoded or tracked. Against `observer run`, what the daemon adds
//! to the cost (its decoding, tracking and export, its memory, its wakes); against the floors
//! on its hooks, what the programs' own work adds.

use std::io;

use observer::load::{LoadOptions, Probes, prog_stats::ProgStats};
use observer::stream::ring::Ring;

use crate::{
    baseline::{Counted, Drain},
    kstats::Cost,
};

pub struct Programs {
    probes: Probes,
    /// The programs this kernel let the loader attach, in the order of their counters.
    names: Vec<&'static str>,
    drain: Drain,
}

impl Programs {
    /// Loads and attaches the daemon's programs with its default options, and drains their
    /// rings on a thread as the daemon's reader does (woken past a quarter of a ring, else on
    /// its read interval).
    pub fn attach() -> io::Result<Self> {
        let mut probes = Probes::load(&LoadOptions::default()).map_err(io::Error::other)?;
        let names = probes
            .program_stats()
            .map_err(io::Error::other)?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        let rings = probes
            .take_rings()
            .ok_or_else(|| io::Error::other("the programs' ring buffers were already taken"))?
            .iter()
            .map(Ring::new)
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self {
            probes,
            names,
            drain: Drain::start(rings),
        })
    }
}

impl Counted for Programs {
    fn stats(&self) -> io::Result<Vec<ProgStats>> {
        let stats = self.probes.program_stats().map_err(io::Error::other)?;
        let names: Vec<&str> = stats.iter().map(|(name, _)| *name).collect();
        if names != self.names {
            return Err(io::Error::other(format!(
                "the programs attached changed: {:?}, then {names:?}",
                self.names
            )));
        }
        Ok(stats.into_iter().map(|(_, s)| s).collect())
    }

    fn costs_since(&self, before: &[ProgStats]) -> io::Result<Vec<Cost>> {
        Ok(self
            .names
            .iter()
            .zip(before)
            .zip(self.stats()?)
            .map(|((name, before), after)| Cost::between(name, *before, after))
            .collect())
    }

    fn records(&self) -> u64 {
        self.drain.records()
    }
}
