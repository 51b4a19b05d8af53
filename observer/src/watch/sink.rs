//! Where `observer watch` writes its lines: one [`Sink`] per format, terminal lines
//! ([`super::text`]) or JSON lines ([`super::json`]), so that the watch loop never asks which.

use std::io;

use super::summary::StateSummary;
use crate::{
    alerts::Change,
    clock::WallClock,
    track::Report,
    wire::lines::{LossCounts, Summary},
    workload::Attribution,
};

pub(super) trait Sink {
    /// Written once, before the first line.
    fn start(&mut self) -> io::Result<()>;

    /// One report, with the workload its socket's cgroup names; `now_ns` dates the reports
    /// that carry no time of their own.
    fn report(
        &mut self,
        report: &Report,
        workload: Option<&Attribution>,
        now_ns: u64,
    ) -> io::Result<()>;

    /// An alert's change of state.
    fn alert(&mut self, change: &Change) -> io::Result<()>;

    /// The loss counters, after new losses (the log already says them on stderr).
    fn losses(&mut self, losses: LossCounts) -> io::Result<()>;

    /// The tracker's state (`--summary`).
    fn state_summary(&mut self, summary: &StateSummary<'_>) -> io::Result<()>;

    /// The closing totals (stderr has them too).
    fn summary(&mut self, summary: &Summary) -> io::Result<()>;

    /// Re-anchors wall-clock time: NTP may have stepped the clock.
    fn set_clock(&mut self, wall: WallClock);

    fn flush(&mut self) -> io::Result<()>;
}
