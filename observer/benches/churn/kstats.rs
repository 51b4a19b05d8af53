//! The kernel's own per-program counters: run count, run time, recursion misses.
//!
//! Run time is counted only while BPF statistics are enabled. `BPF_ENABLE_STATS` does what
//! `sysctl kernel.bpf_stats_enabled=1` does, but the kernel turns it off again when the file
//! descriptor closes, so the host's setting is restored even if the benchmark is killed.

use std::{collections::BTreeMap, io, os::fd::AsFd as _, os::fd::OwnedFd};

use observer::load::prog_stats::{self, ProgStats};

/// Keeps BPF run-time statistics on while alive.
pub struct StatsEnabled(#[expect(dead_code, reason = "held for its drop")] OwnedFd);

pub fn enable() -> io::Result<StatsEnabled> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map(StatsEnabled)
        .map_err(|e| io::Error::other(format!("enabling BPF statistics: {e}")))
}

/// One program: its kernel name (at most 15 bytes) and counters.
#[derive(Clone, Debug)]
pub struct Program {
    pub name: String,
    pub stats: ProgStats,
}

/// The programs process `pid` has attached (those its BPF links hold; the programs it holds
/// when it has no links), by program id. Programs added to the daemon later show up here
/// without any change to the benchmark.
pub fn attached_by(pid: u32) -> io::Result<BTreeMap<u32, Program>> {
    let (mut linked, mut held) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let list = match target.to_string_lossy().as_ref() {
            "anon_inode:bpf_link" => &mut linked,
            "anon_inode:bpf-prog" => &mut held,
            _ => continue,
        };
        let fdinfo = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            entry.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        if let Some(id) = fdinfo
            .lines()
            .find_map(|l| l.strip_prefix("prog_id:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
        {
            list.push(id);
        }
    }
    let ids = if linked.is_empty() { held } else { linked };
    let mut programs = BTreeMap::new();
    for info in aya::programs::loaded_programs().filter_map(Result::ok) {
        if !ids.contains(&info.id()) {
            continue;
        }
        let Ok(fd) = info.fd() else { continue };
        let stats = prog_stats::read(fd.as_fd())?;
        let name = info.name_as_str().unwrap_or("?").to_owned();
        programs.insert(info.id(), Program { name, stats });
    }
    Ok(programs)
}

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
