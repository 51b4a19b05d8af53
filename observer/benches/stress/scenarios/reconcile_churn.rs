//! `reconcile_churn`: short-lived CLOSE_WAIT while reconciliations run, no phantom alert.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use observer_testkit::netns::NetNs;

use super::{TABLES, Watched, no_alert, rate, tracker_matches_kernel};
use crate::{Row, load};

/// Connections that sit in CLOSE_WAIT for 20 ms, made while reconciliations run every second:
/// no reconciliation adds back one that closed during its dump, so no CLOSE_WAIT alert fires
/// for a socket that is gone.
pub(super) fn reconcile_churn(quick: bool) -> anyhow::Result<Row> {
    let secs = if quick { 8 } else { 30 };
    let ns = NetNs::new("stress-recon")?;
    let tables = format!(
        "{TABLES}\n[[alerts.rules]]\nname = \"TcpCloseWaitStuck\"\nkind = \"close_wait_age\"\n\
         older_than = \"5s\"\n"
    )
    .replace("[tracker]\n", "[tracker]\nreconcile_every = \"1s\"\n")
    .replace("[alerts]\n", "[alerts]\nevaluation_interval = \"1s\"\n");
    let mut w = Watched::start(&tables, &[])?;
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let made = std::thread::scope(|s| {
        let churn = s
            .spawn(|| ns.enter(|| load::close_wait_churn(3_000, Duration::from_millis(20), &stop)));
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
        churn.join().expect("the churn thread")
    })?;
    let took = started.elapsed();
    // Past the alert threshold: a phantom CLOSE_WAIT would alert by now.
    std::thread::sleep(Duration::from_secs(7));
    let mut row = Row {
        scenario: "reconcile_churn",
        load: format!(
            "{made} connections in CLOSE_WAIT for 20 ms each, at {:.0}/s, reconciling every \
             second",
            rate(made, took)
        ),
        ..Row::default()
    };
    row.checks.push(no_alert(&mut w)?);
    row.checks.push(tracker_matches_kernel(&mut w)?);
    w.finish(&mut row)?;
    Ok(row)
}
