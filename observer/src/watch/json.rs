//! `observer watch --json`: the JSON lines, written to standard output.

use std::io;

use jiff::Timestamp;
use serde::Serialize;

use super::{sink::Sink, summary::StateSummary};
use crate::{
    alerts::Change,
    clock::WallClock,
    track::Report,
    wire::lines::{Line, LossCounts, Summary},
    workload::Attribution,
};

/// JSON lines written to `out`.
pub struct JsonSink<W> {
    out: W,
    wall: WallClock,
}

impl<W: io::Write> JsonSink<W> {
    pub const fn new(out: W, wall: WallClock) -> Self {
        Self { out, wall }
    }

    fn line(&mut self, record: &impl Serialize) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")
    }

    /// A line that stands alone (losses, summaries): out at once.
    fn record(&mut self, record: &impl Serialize) -> io::Result<()> {
        self.line(record)?;
        self.out.flush()
    }
}

impl<W: io::Write> Sink for JsonSink<W> {
    fn start(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn report(
        &mut self,
        report: &Report,
        workload: Option<&Attribution>,
        now_ns: u64,
    ) -> io::Result<()> {
        let line = Line::report(report, now_ns, &self.wall).with_workload(workload);
        self.line(&line)
    }

    fn alert(&mut self, change: &Change) -> io::Result<()> {
        self.line(&Line::alert(change, Timestamp::now()))
    }

    fn losses(&mut self, losses: LossCounts) -> io::Result<()> {
        self.record(&Line::Loss(losses))
    }

    fn state_summary(&mut self, summary: &StateSummary<'_>) -> io::Result<()> {
        self.record(summary)
    }

    fn summary(&mut self, summary: &Summary) -> io::Result<()> {
        self.record(&Line::Summary(*summary))
    }

    fn set_clock(&mut self, wall: WallClock) {
        self.wall = wall;
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
