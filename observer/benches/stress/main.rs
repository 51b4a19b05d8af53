//! `cargo xtask stress`: `observer run` under the loads that break observers, each scenario in a
//! namespace of its own, bounded in count and in time, its figures checked against the
//! kernel's own counters and socket lists and against accounting identities (root needed).
//!
//! Per scenario: the load achieved, events received, events lost and counted, events lost and
//! not counted (where the load's events are known), the identities and targets that hold or
//! not, the daemon's CPU, its resident memory before, at peak and after, and the latency of
//! /metrics while the load ran. One table, and target/stress/stress.json.
//!
//! Run: `cargo xtask stress [--quick] [--only NAME]`;
//! `cargo bench -p observer --bench stress -- --help`.

#![expect(clippy::cast_precision_loss, reason = "figures for display")]

mod load;
mod measure;
mod scenarios;

use std::{path::PathBuf, time::Instant};

use anyhow::Context as _;
use clap::Parser;
use serde::Serialize;

const OBSERVER: &str = env!("CARGO_BIN_EXE_observer");

#[derive(Parser, Clone)]
#[command(about = "observer run under hostile loads, checked against the kernel")]
pub struct Options {
    /// Seconds instead of minutes: every scenario smaller and shorter (not the targets' loads).
    #[arg(long)]
    pub quick: bool,
    /// Only these scenarios (default: all).
    #[arg(long, value_delimiter = ',', value_parser = scenarios::NAMES)]
    pub only: Vec<String>,
    /// Where the figures are written as JSON (default: target/stress/stress.json in the
    /// workspace).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Ignored: cargo bench passes it.
    #[arg(long, hide = true)]
    bench: bool,
}

/// A condition checked in a scenario.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: String,
    pub holds: bool,
    pub detail: String,
    /// A target of the issue this run answers (else an identity or a sanity check).
    pub target: bool,
}

impl Check {
    #[must_use]
    pub fn new(name: &str, holds: bool, detail: String) -> Self {
        Self {
            name: name.to_owned(),
            holds,
            detail,
            target: false,
        }
    }

    #[must_use]
    pub fn target(name: &str, holds: bool, detail: String) -> Self {
        Self {
            target: true,
            ..Self::new(name, holds, detail)
        }
    }
}

/// One scenario's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Row {
    pub scenario: &'static str,
    /// What the load was, as achieved.
    pub load: String,
    pub seconds: f64,
    pub events: u64,
    pub lost_counted: u64,
    /// Events the load made that were neither received nor counted as lost (negative: more
    /// were received than the load made, the host's own traffic); `None` when the load's own
    /// count of events is not known.
    pub lost_uncounted: Option<i64>,
    pub cpu_seconds: f64,
    pub rss_before_bytes: u64,
    pub rss_peak_bytes: u64,
    pub rss_after_bytes: u64,
    pub scrape_p50_ms: f64,
    pub scrape_p99_ms: f64,
    pub checks: Vec<Check>,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn print_table(rows: &[Row]) {
    println!(
        "\n{:<18} {:>7} {:>10} {:>9} {:>9} {:>7} {:>22} {:>15}  load",
        "scenario",
        "seconds",
        "events",
        "lost",
        "uncounted",
        "CPU s",
        "RSS MiB before/peak/after",
        "scrape ms p50/p99"
    );
    for r in rows {
        println!(
            "{:<18} {:>7.0} {:>10} {:>9} {:>9} {:>7.1} {:>8.1} /{:>6.1} /{:>6.1} {:>7.1} /{:>6.1}  {}",
            r.scenario,
            r.seconds,
            r.events,
            r.lost_counted,
            r.lost_uncounted
                .map_or_else(|| "n/a".to_owned(), |n| n.to_string()),
            r.cpu_seconds,
            mib(r.rss_before_bytes),
            mib(r.rss_peak_bytes),
            mib(r.rss_after_bytes),
            r.scrape_p50_ms,
            r.scrape_p99_ms,
            r.load
        );
    }
    println!(
        "\nchecks (T: a target; every other line is an identity or a check against the kernel):"
    );
    for r in rows {
        for c in &r.checks {
            println!(
                "  {} {} {:<18} {}: {}",
                if c.holds { "ok  " } else { "FAIL" },
                if c.target { "T" } else { " " },
                r.scenario,
                c.name,
                c.detail
            );
        }
    }
    let failed = rows
        .iter()
        .flat_map(|r| &r.checks)
        .filter(|c| !c.holds)
        .count();
    let targets = rows.iter().flat_map(|r| &r.checks).filter(|c| c.target);
    let (met, all) = targets.fold((0, 0), |(m, a), c| (m + usize::from(c.holds), a + 1));
    println!("\n{failed} checks failed; targets met: {met} of {all}");
}

fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let started = Instant::now();
    let mut rows = Vec::new();
    for name in scenarios::NAMES {
        if !options.only.is_empty() && !options.only.iter().any(|o| o == name) {
            continue;
        }
        eprintln!("stress: {name}...");
        // A scenario that cannot run is a failed check, and the others still run.
        let row = scenarios::run(name, &options).unwrap_or_else(|e| Row {
            scenario: scenarios::NAMES
                .iter()
                .find(|n| **n == name)
                .copied()
                .unwrap_or("?"),
            load: "did not run".to_owned(),
            checks: vec![Check::new("ran", false, format!("{e:#}"))],
            ..Row::default()
        });
        eprintln!(
            "stress: {name}: {} of {} checks hold",
            row.checks.iter().filter(|c| c.holds).count(),
            row.checks.len()
        );
        rows.push(row);
    }
    print_table(&rows);
    let output = options.output.clone().unwrap_or_else(|| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/stress/stress.json")
    });
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::json!({
        "finished_after_seconds": started.elapsed().as_secs_f64(),
        "quick": options.quick,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "scenarios": rows,
    });
    std::fs::write(&output, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", output.display()))?;
    eprintln!("stress: figures written to {}", output.display());
    Ok(())
}
