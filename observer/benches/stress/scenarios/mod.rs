//! The scenarios. Each starts `observer run` afresh, makes its load in a namespace of its own,
//! and checks what the daemon says against the kernel and against accounting identities.
//!
//! Here what they share: the daemon being watched and the checks several scenarios make.

mod clients;
mod kill9_restart;
mod reconcile_churn;
mod ring_overflow;
mod rst_storm;
mod sighup_storm;
mod soak;
mod startup_existing;
mod syn_flood;
mod timewait_expiry;

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use observer::load::contract::{PROGRAMS, Part};
use observer_common::TcpState;
use observer_testkit::{
    daemon::Daemon,
    scrape::{Metrics, Scraper},
};

use self::{
    clients::clients, kill9_restart::kill9_restart, reconcile_churn::reconcile_churn,
    ring_overflow::ring_overflow, rst_storm::rst_storm, sighup_storm::sighup_storm, soak::soak,
    startup_existing::startup_existing, syn_flood::syn_flood, timewait_expiry::timewait_expiry,
};
use super::{Check, OBSERVER, Options, Row, measure};

pub const NAMES: [&str; 10] = [
    "timewait_expiry",
    "syn_flood",
    "rst_storm",
    "ring_overflow",
    "reconcile_churn",
    "sighup_storm",
    "startup_existing",
    "kill9_restart",
    "clients",
    "soak",
];

pub fn run(name: &str, options: &Options) -> anyhow::Result<Row> {
    let q = options.quick;
    match name {
        "timewait_expiry" => timewait_expiry(q),
        "syn_flood" => syn_flood(q),
        "rst_storm" => rst_storm(q),
        "ring_overflow" => ring_overflow(q),
        "reconcile_churn" => reconcile_churn(q),
        "sighup_storm" => sighup_storm(q),
        "startup_existing" => startup_existing(q),
        "kill9_restart" => kill9_restart(q),
        "clients" => clients(q),
        "soak" => soak(q),
        other => bail!("no scenario {other}"),
    }
}

/// The configuration every scenario's daemon starts from: the defaults, with its alerts written
/// to a file of its own (to look for false alerts) and restart state kept in its directory.
const TABLES: &str = "[tracker]\nstate_file = \"{dir}/state.json\"\n\n\
                      [alerts]\nlog = false\nfile = \"{dir}/alerts.jsonl\"\n";

/// A daemon being watched: its counters, CPU, memory, scrape latency and log since it started.
struct Watched {
    daemon: Daemon,
    scraper: Scraper,
    sampler: Option<measure::Sampler>,
    before: Metrics,
    cpu_before: f64,
    rss_before: u64,
    started: Instant,
    log: Vec<String>,
}

impl Watched {
    fn start(tables: &str, args: &[&str]) -> anyhow::Result<Self> {
        let daemon = Daemon::start_with(OBSERVER, tables, args).context("starting observer run")?;
        let mut scraper = Scraper::connect(daemon.addr)?;
        let before = scraper.scrape()?;
        let sampler = measure::Sampler::start(&daemon);
        Ok(Self {
            cpu_before: daemon.cpu_secs(),
            rss_before: measure::rss(&daemon).0,
            sampler: Some(sampler),
            before,
            daemon,
            scraper,
            started: Instant::now(),
            log: Vec::new(),
        })
    }

    fn metrics(&mut self) -> anyhow::Result<Metrics> {
        Ok(self.scraper.scrape()?)
    }

    /// What a metric grew by since the start.
    fn grew(&mut self, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<u64> {
        let now = self.metrics()?;
        Ok(now.sum(name, labels) - self.before.sum(name, labels))
    }

    fn lost(&mut self) -> anyhow::Result<u64> {
        self.grew("observer_events_lost_total", &[])
    }

    /// The daemon's log so far.
    fn log(&mut self) -> &[String] {
        self.log.extend(self.daemon.log_lines());
        &self.log
    }

    /// Events lost as the log's "lost events" lines told them, summed.
    fn logged_losses(&mut self) -> u64 {
        self.log()
            .iter()
            .filter_map(|l| l.split_once("lost events: "))
            .flat_map(|(_, why)| why.split("; "))
            .filter_map(|phrase| phrase.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// Waits until `done` holds on the metrics, checking every `every`; false after `timeout`.
    fn wait(
        &mut self,
        timeout: Duration,
        every: Duration,
        mut done: impl FnMut(&Metrics) -> bool,
    ) -> anyhow::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.metrics()?) {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(every);
        }
    }

    /// Fills the row's common figures, checks the identities every scenario must keep, and
    /// stops the daemon.
    fn finish(mut self, row: &mut Row) -> anyhow::Result<()> {
        // Let the last events and losses arrive and be logged.
        std::thread::sleep(Duration::from_millis(2200));
        let after = self.metrics()?;
        let logged = self.logged_losses();
        let before = &self.before;
        let grew = |name: &str, labels: &[(&str, &str)]| {
            after.sum(name, labels) - before.sum(name, labels)
        };
        row.events = grew("observer_events_received_total", &[]);
        row.lost_counted = grew("observer_events_lost_total", &[]);
        row.cpu_seconds = self.daemon.cpu_secs() - self.cpu_before;
        let (rss, peak) = measure::rss(&self.daemon);
        (
            row.rss_before_bytes,
            row.rss_peak_bytes,
            row.rss_after_bytes,
        ) = (self.rss_before, peak, rss);
        if let Some(sampler) = self.sampler.take() {
            let (p50, p99, failed) = sampler.finish();
            (row.scrape_p50_ms, row.scrape_p99_ms) = (p50, p99);
            row.checks.push(Check::new(
                "scrapes answered",
                failed == 0,
                format!("{failed} scrapes failed"),
            ));
        }
        row.seconds = self.started.elapsed().as_secs_f64();
        let total = after.sum("observer_events_lost_total", &[]);
        row.checks.push(Check::new(
            "every loss logged",
            logged == total,
            format!("the log's loss lines add up to {logged}, the metric says {total}"),
        ));
        row.checks.push(timewait_identity(&after));
        let skipped: Vec<String> = PROGRAMS
            .iter()
            .filter(|p| p.part != Part::Timewait)
            .map(|p| {
                let n = grew(
                    "observer_program_runs_skipped_total",
                    &[("program", p.name)],
                );
                (p.name, n)
            })
            .filter(|&(_, n)| n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        row.checks.push(Check::new(
            "recursion misses",
            true,
            format!(
                "{} runs of the state, RST, retransmission and error programs skipped by the \
                 kernel (counted as lost{}), {} timer runs (an upper bound of timewait timer \
                 events missed)",
                grew(
                    "observer_events_lost_total",
                    &[("reason", "recursion_miss")]
                ),
                if skipped.is_empty() {
                    String::new()
                } else {
                    format!(": {}", skipped.join(", "))
                },
                grew("observer_timer_recursion_misses_total", &[])
            ),
        ));
        self.daemon
            .stop()
            .context("observer run did not stop cleanly")?;
        Ok(())
    }
}

/// started + seeded = ended (every cause) + open, in one scrape.
fn timewait_identity(m: &Metrics) -> Check {
    let started = m.sum("observer_tcp_timewait_started_total", &[]);
    let ended = m.sum("observer_tcp_timewait_ended_total", &[]);
    let open = m.sum("observer_tracker_sockets", &[("table", "timewait")]);
    Check::new(
        "timewait: started = ended + open",
        started == ended + open,
        format!("{started} started (timer and sock_diag) = {ended} ended + {open} open"),
    )
}

/// The tracker's sockets by state against the kernel's (`ss` in the host and every named
/// namespace), tried a few times: expiries land in bursts, and the two are read apart. A
/// failure gives every try's differences: the same shortfall at every try is a socket the
/// tracker lacks, a moving one the two reads apart.
fn tracker_matches_kernel(w: &mut Watched) -> anyhow::Result<Check> {
    let mut tries = Vec::new();
    for _ in 0..8 {
        let m = w.metrics()?;
        let kernel = measure::kernel_sockets_by_state();
        let mut differences = Vec::new();
        for state in TcpState::ALL {
            if matches!(
                state,
                TcpState::SynRecv | TcpState::NewSynRecv | TcpState::Close
            ) {
                continue;
            }
            let tracked = m.sum("observer_tcp_sockets", &[("state", state.name())]);
            let listed = kernel.get(&state).copied().unwrap_or(0);
            if tracked != listed {
                differences.push(format!(
                    "{}: {tracked} tracked, {listed} listed",
                    state.name()
                ));
            }
        }
        if differences.is_empty() {
            let all: u64 = kernel.values().sum();
            return Ok(Check::new(
                "the tracker holds what the kernel lists",
                true,
                format!("{all} sockets, state by state, as ss lists them"),
            ));
        }
        tries.push(differences.join(", "));
        std::thread::sleep(Duration::from_millis(400));
    }
    Ok(Check::new(
        "the tracker holds what the kernel lists",
        false,
        format!("at each of {} tries: {}", tries.len(), tries.join("; ")),
    ))
}

/// No alert fired whose condition did not hold: in these scenarios no condition holds, but
/// for lost events (`ObserverLostEvents`) when some were lost.
fn no_alert(w: &mut Watched) -> anyhow::Result<Check> {
    let lost = w.lost()?;
    let changes: Vec<(String, String)> = measure::alert_changes(&w.daemon)
        .into_iter()
        .filter(|(_, name)| lost == 0 || name != "ObserverLostEvents")
        .collect();
    Ok(Check::target(
        "no false alert",
        changes.is_empty(),
        if changes.is_empty() {
            format!(
                "no alert became pending or fired{}",
                if lost > 0 {
                    " but ObserverLostEvents, for the events lost"
                } else {
                    ""
                }
            )
        } else {
            format!("{changes:?}")
        },
    ))
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}
