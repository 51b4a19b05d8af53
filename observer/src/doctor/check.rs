//! One verdict of the report: its status, what was found, what it costs and how to fix it.

use serde::Serialize;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Present and working.
    Ok,
    /// Worth knowing, changes nothing observer does.
    Info,
    /// observer runs, with a feature degraded.
    Warn,
    /// observer cannot run.
    Fail,
}

impl Status {
    #[must_use]
    pub const fn word(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// What a warning takes away; the closing sentence counts these, not warnings, since several
/// checks can point at the same loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Feature {
    Netns,
    ClosedBeforeAccept,
    Timewait,
    TimewaitTimeouts,
    Resets,
    ResetReasons,
    Retransmits,
    SocketErrors,
    Cgroups,
    ExistingSockets,
    Owners,
    SkippedRuns,
}

impl Feature {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Netns => "network namespaces",
            Self::ClosedBeforeAccept => "closed-before-accept detection",
            Self::Timewait => "TIME_WAIT",
            Self::TimewaitTimeouts => "TIME_WAIT timeout lengths",
            Self::Resets => "RSTs",
            Self::ResetReasons => "RST reasons",
            Self::Retransmits => "retransmissions and half-open suspects",
            Self::SocketErrors => "connection ends by error (timeouts by cause)",
            Self::Cgroups => "workload attribution (cgroups: units, containers, pods)",
            Self::ExistingSockets => "sockets open before start-up",
            Self::Owners => "socket owners",
            Self::SkippedRuns => "counting of skipped program runs",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub finding: String,
    /// What the user loses (warn and fail only).
    pub costs: Option<String>,
    /// What to do about it (warn and fail only).
    pub fix: Option<String>,
    #[serde(skip)]
    pub degrades: Vec<Feature>,
}

impl Check {
    pub(super) fn ok(name: impl Into<String>, finding: impl Into<String>) -> Self {
        Self::plain(name, Status::Ok, finding)
    }

    pub(super) fn info(name: impl Into<String>, finding: impl Into<String>) -> Self {
        Self::plain(name, Status::Info, finding)
    }

    fn plain(name: impl Into<String>, status: Status, finding: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status,
            finding: finding.into(),
            costs: None,
            fix: None,
            degrades: Vec::new(),
        }
    }

    pub(super) fn warn(
        name: impl Into<String>,
        finding: impl Into<String>,
        costs: impl Into<String>,
        fix: impl Into<String>,
        degrades: &[Feature],
    ) -> Self {
        Self {
            costs: Some(costs.into()),
            fix: Some(fix.into()),
            degrades: degrades.to_vec(),
            ..Self::plain(name, Status::Warn, finding)
        }
    }

    pub(super) fn fail(
        name: impl Into<String>,
        finding: impl Into<String>,
        costs: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            costs: Some(costs.into()),
            fix: Some(fix.into()),
            ..Self::plain(name, Status::Fail, finding)
        }
    }
}

/// A count in the report's words: `1 check`, `2 checks`.
pub(super) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}
