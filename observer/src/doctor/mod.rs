//! `observer doctor`: checks everything observer depends on, on this host, and says for each
//! missing piece what it costs (which feature degrades, and how) and what to do.
//!
//! Facts are gathered first (`facts`: /proc, /sys, tracefs, BTF, sock_diag, and a trial load
//! of the programs), then judged by pure code (`judge`), then rendered (`report`), so that
//! every verdict and its wording can be tested from synthetic facts.

mod check;
mod facts;
mod judge;
mod kernel_names;
mod report;
#[cfg(test)]
mod testing;

use std::io::{self, Write as _};

use crate::config::WorkloadsConfig;

pub use check::{Check, Feature, Status};
pub use judge::can_run;
pub use report::{render_json, render_text, summary};

/// Runs every check, prints the report (a table, or one JSON object with `json`), and returns
/// whether observer can run here.
pub fn run(json: bool, workloads: &WorkloadsConfig) -> anyhow::Result<bool> {
    let checks = checks(workloads);
    let can_run = can_run(&checks);
    let report = if json {
        render_json(&checks, can_run)?
    } else {
        render_text(&checks)
    };
    let mut out = io::stdout().lock();
    out.write_all(report.as_bytes())?;
    out.flush()?;
    Ok(can_run)
}

/// Every check on this host. Side effects are those of observer's own start-up: tracefs is
/// mounted if it is not and this process may, and the programs are loaded, attached and
/// detached again.
#[must_use]
pub fn checks(workloads: &WorkloadsConfig) -> Vec<Check> {
    judge::assess(&facts::Facts::gather(workloads))
}
