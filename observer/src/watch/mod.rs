//! `observer watch`: the live stream of transitions in a terminal or as JSON lines.

pub mod filter;
pub mod render;

use std::io::{self, IsTerminal as _, Write as _};

use anyhow::Context as _;
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    decode::Transition,
    events::{Losses, TransitionStream},
    load::LoadOptions,
    track::StateClock,
};
pub use filter::Filter;
use render::{JsonTransition, WallClock};

#[derive(Clone, Debug)]
pub struct WatchOptions {
    pub load: LoadOptions,
    pub filter: Filter,
    pub json: bool,
    /// Exit after this many transitions have been shown.
    pub count: Option<u64>,
    /// Sockets whose state entry times are kept, for the time-in-state column.
    pub max_sockets: usize,
}

/// Loss counters as they appear in the JSON stream (`"type": "loss"` records and the summary).
#[derive(Clone, Copy, Debug, Serialize)]
struct LossCounts {
    lost_total: u64,
    lost_ring_buffer_full: u64,
    lost_recursion_misses: u64,
    lost_read_failed: u64,
    malformed: u64,
}

impl From<Losses> for LossCounts {
    fn from(l: Losses) -> Self {
        Self {
            lost_total: l.total(),
            lost_ring_buffer_full: l.kernel.ring_buffer_full,
            lost_recursion_misses: l.kernel.recursion_misses,
            lost_read_failed: l.kernel.read_failed,
            malformed: l.malformed,
        }
    }
}

/// Written when new losses are seen (at most once a second).
#[derive(Serialize)]
struct LossRecord {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    losses: LossCounts,
}

/// Totals printed when watch exits, and written as the last JSON line.
#[derive(Clone, Copy, Debug, Serialize)]
struct Summary {
    #[serde(rename = "type")]
    kind: &'static str,
    received: u64,
    shown: u64,
    #[serde(flatten)]
    losses: LossCounts,
    gaps: u64,
    untracked_sockets: u64,
}

impl Summary {
    fn sentence(&self) -> String {
        let l = &self.losses;
        format!(
            "{} transitions received, {} shown; lost {} (ring buffer full {}, recursion misses {}, \
             unreadable {}), malformed {}, gaps {}, untracked sockets {}",
            self.received,
            self.shown,
            l.lost_total,
            l.lost_ring_buffer_full,
            l.lost_recursion_misses,
            l.lost_read_failed,
            l.malformed,
            self.gaps,
            self.untracked_sockets
        )
    }
}

/// Writes transitions to stdout, as text or JSON.
struct Output {
    out: io::BufWriter<io::Stdout>,
    json: bool,
    color: bool,
    wall: WallClock,
    tz: jiff::tz::TimeZone,
    own_netns: Option<u32>,
}

impl Output {
    fn transition(&mut self, t: &Transition, seen: &crate::track::Observation) -> io::Result<()> {
        if self.json {
            serde_json::to_writer(&mut self.out, &JsonTransition::new(t, seen, &self.wall))?;
            self.out.write_all(b"\n")
        } else {
            let line = render::text_line(t, seen, &self.wall, &self.tz, self.own_netns, self.color);
            writeln!(self.out, "{line}")
        }
    }

    fn json_record(&mut self, record: &impl Serialize) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

fn own_netns() -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let ino = std::fs::metadata("/proc/self/ns/net").ok()?.ino();
    u32::try_from(ino).ok()
}

/// Runs until Ctrl-C, SIGTERM, `--count` transitions, or a closed stdout.
pub async fn run(options: WatchOptions) -> anyhow::Result<()> {
    let mut stream = TransitionStream::open(&options.load)?;
    let mut clock = StateClock::new(options.max_sockets);
    let mut output = Output {
        out: io::BufWriter::with_capacity(64 * 1024, io::stdout()),
        json: options.json,
        color: !options.json
            && io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none(),
        wall: WallClock::now(),
        tz: jiff::tz::TimeZone::system(),
        own_netns: own_netns(),
    };
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    eprintln!("observer: watching TCP state transitions; Ctrl-C stops");
    if !options.json {
        writeln!(output.out, "{}", render::HEADER)?;
        output.out.flush()?;
    }

    let mut batch = Vec::with_capacity(1024);
    let mut shown = 0u64;
    let mut reported = Losses::default();
    let limit = options.count.unwrap_or(u64::MAX);
    let mut done = false;
    while !done {
        tokio::select! {
            r = stream.next_batch(&mut batch) => r.context("reading the ring buffer")?,
            _ = tick.tick() => {
                // Re-anchor wall-clock time: NTP may have stepped the clock.
                output.wall = WallClock::now();
                reported = report_new_losses(&mut stream, reported, &mut output)?;
                continue;
            }
            _ = sigint.recv() => done = true,
            _ = sigterm.recv() => done = true,
        }
        if done {
            stream.drain_now(&mut batch);
        }
        for t in batch.drain(..) {
            let seen = clock.observe(&t);
            if shown < limit && options.filter.matches(&t, seen.owner.map(|o| o.pid)) {
                if let Err(e) = output.transition(&t, &seen) {
                    return quiet_on_broken_pipe(e);
                }
                shown += 1;
            }
        }
        done |= shown >= limit;
        if let Err(e) = output.out.flush() {
            return quiet_on_broken_pipe(e);
        }
    }

    let losses = stream.losses()?;
    let stats = clock.stats();
    let summary = Summary {
        kind: "summary",
        received: stream.received(),
        shown,
        losses: losses.into(),
        gaps: stats.gaps,
        untracked_sockets: stats.untracked,
    };
    if options.json {
        output.json_record(&summary)?;
    }
    eprintln!("observer: {}", summary.sentence());
    Ok(())
}

/// Says so on stderr (and in the JSON stream) when anything new was lost since the last report.
fn report_new_losses(
    stream: &mut TransitionStream,
    reported: Losses,
    output: &mut Output,
) -> anyhow::Result<Losses> {
    let now = stream.losses()?;
    if now.total() > reported.total() {
        let k = now.kernel;
        let r = reported.kernel;
        let mut why = Vec::new();
        if k.ring_buffer_full > r.ring_buffer_full {
            why.push(format!(
                "{} because the ring buffer was full (raise --ring-buffer-size)",
                k.ring_buffer_full - r.ring_buffer_full
            ));
        }
        if k.recursion_misses > r.recursion_misses {
            why.push(format!(
                "{} skipped by the kernel while another BPF program ran on the same CPU",
                k.recursion_misses - r.recursion_misses
            ));
        }
        if k.read_failed > r.read_failed {
            why.push(format!(
                "{} unreadable tracepoint records",
                k.read_failed - r.read_failed
            ));
        }
        if now.malformed > reported.malformed {
            let last = stream
                .take_decode_error()
                .map(|e| format!(", last: {e}"))
                .unwrap_or_default();
            why.push(format!(
                "{} malformed records{last}",
                now.malformed - reported.malformed
            ));
        }
        log::warn!("lost transitions: {}", why.join("; "));
        if output.json {
            output.json_record(&LossRecord {
                kind: "loss",
                losses: now.into(),
            })?;
        }
    }
    Ok(now)
}

fn quiet_on_broken_pipe(e: io::Error) -> anyhow::Result<()> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(e).context("writing to stdout")
    }
}
