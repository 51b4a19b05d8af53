//! `observer watch`: the live stream of transitions in a terminal or as JSON lines.

mod json;
mod remote;
mod sink;
mod summary;
#[cfg(test)]
mod tests;
mod text;

use std::{io, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

pub use crate::wire::Filter;
use crate::{
    alerts::Status,
    clock::{WallClock, mono_now_ns},
    load::LoadOptions,
    pipeline::{self, AlertSettings, Pipeline, Settings, Step, every_or_never, interval_after},
    track::{Note, Report},
    wire::{
        client::{Client, Source},
        lines::Summary,
    },
    workload::Resolver,
};
use json::JsonSink;
use sink::Sink;
use text::TextSink;

#[derive(Clone, Debug)]
pub struct WatchOptions {
    pub source: Source,
    pub load: LoadOptions,
    pub filter: Filter,
    pub json: bool,
    /// Exit after this many lines (transitions and RSTs) have been shown.
    pub count: Option<u64>,
    /// Most sockets tracked at once.
    pub max_sockets: usize,
    /// Print the tracker's state this often.
    pub summary_every: Option<Duration>,
    /// Resolve CLOSE_WAIT owners through /proc after this long in CLOSE_WAIT.
    pub owner_after: Duration,
    /// Reconcile with sock_diag this often.
    pub reconcile_every: Duration,
    /// A connection retransmitting without progress this long is a half-open suspect.
    pub half_open_after: Duration,
    /// Evaluate alert rules and show their state changes.
    pub alerts: Option<WatchAlerts>,
}

/// The alert rules `observer watch --alerts` evaluates.
#[derive(Clone, Debug)]
pub struct WatchAlerts {
    pub rules: Vec<crate::config::AlertRule>,
    pub max_per_rule: usize,
    pub evaluation_interval: Duration,
}

/// Standard output in the format asked for.
fn stdout_sink(json: bool) -> Box<dyn Sink> {
    let out = io::BufWriter::with_capacity(64 * 1024, io::stdout());
    if json {
        Box::new(JsonSink::new(out, WallClock::now()))
    } else {
        Box::new(TextSink::new(
            out,
            WallClock::now(),
            crate::human::stdout_takes_color(),
        ))
    }
}

/// What the pipeline runs with, for watch.
fn settings(options: &WatchOptions) -> Settings {
    let alerts = options.alerts.as_ref();
    Settings {
        half_open_after: options.half_open_after,
        reconcile_every: options.reconcile_every,
        // Accept queues matter only to the alert rules.
        listen_every: alerts.map(|a| a.evaluation_interval),
        owner_after: options.owner_after,
        // Holders are looked for before each evaluation and each summary.
        evaluate_every: [alerts.map(|a| a.evaluation_interval), options.summary_every]
            .into_iter()
            .flatten()
            .min(),
        alerts: alerts.map(|a| AlertSettings {
            rules: a.rules.clone(),
            max_per_rule: a.max_per_rule,
        }),
    }
}

/// Runs until Ctrl-C, SIGTERM, `--count` lines, or a closed stdout: through the daemon when
/// one serves its socket here (and neither `--summary` nor `--alerts`, which need the
/// tracker, is asked for), standalone otherwise.
pub async fn run(options: WatchOptions) -> anyhow::Result<()> {
    if let Source::DaemonOr(path) = &options.source
        && options.alerts.is_none()
        && options.summary_every.is_none()
    {
        match Client::connect(path).await {
            Ok(client) => return remote::run(client, path, &options).await,
            Err(why) => log::info!("{why}: loading the programs here (standalone)"),
        }
    }
    standalone(options).await
}

async fn standalone(options: WatchOptions) -> anyhow::Result<()> {
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    // Seed before showing anything: sockets that existed before the programs attached.
    let mut pipeline = Pipeline::start(pipeline::Options {
        load: options.load.clone(),
        max_sockets: options.max_sockets,
        kubelet_logs: Some(crate::workload::KUBELET_LOGS.into()),
        settings: settings(&options),
    })
    .await?;
    let mut sink = stdout_sink(options.json);
    let mut tick = interval_after(Duration::from_secs(1));
    let mut summary_tick = every_or_never(options.summary_every);
    let mut shown_count = Shown::default();
    let limit = options.count.unwrap_or(u64::MAX);
    let workloads = Arc::clone(&pipeline.state().workloads);
    if workloads.mount().is_none() {
        log::warn!(
            "no cgroup2 mount (a cgroup v1-only host): sockets are not attributed to units, \
             containers or pods"
        );
    }
    let seeded = pipeline.seeded();
    eprintln!(
        "observer: watching TCP connections standalone (programs loaded by this process); {} \
         sockets already open in {} network namespaces; Ctrl-C stops",
        seeded.outcome.added,
        seeded.dumped.len()
    );
    sink.start()?;

    let mut done = false;
    while !done {
        let written = tokio::select! {
            step = pipeline.next() => {
                let step = step?;
                show_step(sink.as_mut(), &step).and_then(|()| {
                    show(sink.as_mut(), &options.filter, pipeline.reports(), &workloads, &mut shown_count, limit)
                })
            }
            // Re-anchor wall-clock time: NTP may have stepped the clock.
            _ = tick.tick() => {
                sink.set_clock(WallClock::now());
                Ok(())
            }
            _ = summary_tick.tick() => {
                let snapshot = pipeline.state().snapshot(summary::LISTED);
                sink.state_summary(&summary::build(&snapshot, &workloads))
            }
            _ = sigint.recv() => {
                done = true;
                Ok(())
            }
            _ = sigterm.recv() => {
                done = true;
                Ok(())
            }
        };
        if done {
            pipeline.drain();
            if let Err(e) = show(
                sink.as_mut(),
                &options.filter,
                pipeline.reports(),
                &workloads,
                &mut shown_count,
                limit,
            ) {
                return quiet_on_broken_pipe(e);
            }
        }
        if let Err(e) = written {
            return quiet_on_broken_pipe(e);
        }
        done |= shown_count.lines >= limit;
    }

    finish(&pipeline, &shown_count, sink.as_mut())
}

/// What a step says besides its reports: alert changes, new losses.
fn show_step(sink: &mut dyn Sink, step: &Step) -> io::Result<()> {
    for change in &step.changes {
        if change.status != Status::Inactive {
            sink.alert(change)?;
        }
    }
    if let Some((_, now)) = step.new_losses {
        sink.losses(now.into())?;
    }
    sink.flush()
}

/// The closing totals: on stderr, and as the last JSON line.
fn finish(pipeline: &Pipeline, shown: &Shown, sink: &mut dyn Sink) -> anyhow::Result<()> {
    let losses = pipeline.losses()?;
    let stats = pipeline.state().tracker.stats();
    let summary = Summary {
        received: pipeline.received(),
        shown: shown.lines,
        shown_not_transitions: shown.not_transitions,
        losses: losses.into(),
        gaps: stats.gaps,
        evicted_sockets: stats.evicted,
        tracker: stats,
    };
    sink.summary(&summary)?;
    eprintln!("observer: {}", summary.sentence());
    Ok(())
}

/// Lines shown so far.
#[derive(Default)]
struct Shown {
    lines: u64,
    not_transitions: u64,
}

/// Writes the reports that pass the filter, up to `limit` lines in all.
fn show(
    sink: &mut dyn Sink,
    filter: &Filter,
    reports: &[Report],
    workloads: &Resolver,
    shown_count: &mut Shown,
    limit: u64,
) -> io::Result<()> {
    // Reports without a time of their own are dated when they were noticed: now.
    let now_ns = mono_now_ns();
    for report in reports {
        if shown_count.lines >= limit || !filter.passes(report) {
            continue;
        }
        let workload = report.cgroup().and_then(|c| workloads.resolve(c));
        if filter.matches_workload(workload.as_deref()) {
            sink.report(report, workload.as_deref(), now_ns)?;
            shown_count.lines += 1;
            if matches!(
                report,
                Report::Reset { .. }
                    | Report::Retransmits { .. }
                    | Report::ConnectionError { .. }
                    | Report::Transition {
                        note: Some(Note::TimewaitEnded(_) | Note::TimewaitRestarted { .. }),
                        ..
                    }
            ) {
                shown_count.not_transitions += 1;
            }
        }
    }
    sink.flush()
}

fn quiet_on_broken_pipe(e: io::Error) -> anyhow::Result<()> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(e).context("writing to stdout")
    }
}
