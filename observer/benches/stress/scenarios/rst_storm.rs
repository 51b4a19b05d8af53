//! `rst_storm`: connections aborted or refused as fast as they can be, every RST counted.

use std::time::{Duration, Instant};

use observer_testkit::{
    churn::{self, Kind, Load},
    netns::NetNs,
};

use super::{TABLES, Watched, rate};
use crate::{Check, Row, measure};

/// Connections aborted with SO_LINGER 0, then connections refused, as fast as two threads
/// make them: every RST sent is one the kernel counts, every RST received one the load made.
pub(super) fn rst_storm(quick: bool) -> anyhow::Result<Row> {
    let n = if quick { 20_000 } else { 200_000 };
    let ns = NetNs::new("stress-rst")?;
    let mut w = Watched::start(TABLES, &[])?;
    let before = w.metrics()?.counters();
    let kernel_before = measure::kernel_counters(Some(&ns));
    let started = Instant::now();
    let mut made = Vec::new();
    for kind in [Kind::LingerReset, Kind::Refused] {
        let load = Load {
            threads: 2,
            connections: n / 2,
            max_time: Duration::from_secs(30),
        };
        made.push(ns.enter(|| churn::run(&load, Some(kind)))?);
    }
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(2200));
    let kernel_after = measure::kernel_counters(Some(&ns));
    let delta = w.metrics()?.counters().since(&before);
    let out_rsts = measure::grew(&kernel_before, &kernel_after, "Tcp:OutRsts");
    let connections: u64 = made.iter().map(churn::Made::connections).sum();
    let expected_received: u64 = connections;
    let expected_events: u64 = made.iter().map(|m| m.transitions() + m.resets()).sum();
    let received_events = delta.kernel_transitions() + delta.resets_sent + delta.resets_received;
    let mut row = Row {
        scenario: "rst_storm",
        load: format!(
            "{connections} connections aborted (SO_LINGER 0) or refused, at {:.0}/s",
            rate(connections, took)
        ),
        #[expect(clippy::cast_possible_wrap, reason = "counts far below 2^63")]
        lost_uncounted: Some(expected_events as i64 - received_events as i64 - delta.lost() as i64),
        ..Row::default()
    };
    row.checks.push(Check::new(
        "RSTs sent as the kernel counts them",
        delta.resets_sent == out_rsts,
        format!(
            "{} counted, Tcp OutRsts grew by {out_rsts}",
            delta.resets_sent
        ),
    ));
    row.checks.push(Check::new(
        "RSTs received, one per connection",
        delta.resets_received == expected_received,
        format!(
            "{} counted, {expected_received} made",
            delta.resets_received
        ),
    ));
    w.finish(&mut row)?;
    Ok(row)
}
