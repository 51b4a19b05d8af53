//! `observer watch` in a terminal: one line per transition, RST, retransmission change,
//! connection error and alert, coloured when the terminal takes colours.

use std::{
    fmt::Write as _,
    io::{self, Write},
    net::SocketAddr,
};

use anstyle::{AnsiColor, Style};
use observer_common::TcpState;

use super::{
    sink::Sink,
    summary::{StateSummary, render_text},
};
use crate::{
    alerts::{Change, Status},
    clock::WallClock,
    event::{Netns, Reset, SocketError, Task, Transition, Tuple},
    human::{error_name, human_duration, plural},
    track::{
        EndCause, Note, Observation, Report, RetransmitPhase, TimewaitEnd, resets::ResetClass,
    },
    wire::lines::{LossCounts, Summary},
    workload::Attribution,
};

/// The header printed above terminal lines.
pub const HEADER: &str = "TIME            PID/COMM                                   LOCAL -> REMOTE                    OLD -> NEW (TIME IN OLD)";

fn state_style(state: TcpState) -> Style {
    let color = match state {
        TcpState::Established => AnsiColor::Green,
        TcpState::CloseWait | TcpState::TimeWait => AnsiColor::Yellow,
        TcpState::Close => AnsiColor::Red,
        TcpState::Listen => AnsiColor::Blue,
        _ => return Style::new(),
    };
    Style::new().fg_color(Some(color.into()))
}

/// How terminal lines are written: wall-clock mapping, time zone, the namespace not worth
/// naming, colours.
#[derive(Clone, Copy)]
pub struct TextContext<'a> {
    pub clock: &'a WallClock,
    pub tz: &'a jiff::tz::TimeZone,
    pub own_netns: Option<Netns>,
    pub color: bool,
}

impl TextContext<'_> {
    /// Time, owner and addresses: the columns every line starts with. The owner is `?` when
    /// unknown (a transition in softirq context for a socket whose owner has not been seen).
    fn prefix(
        &self,
        mono_ns: u64,
        owner: Option<&Task>,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> String {
        let time = self.clock.at(mono_ns).to_zoned(self.tz.clone());
        let who = owner.map_or_else(|| "?".to_owned(), |o| format!("{}/{}", o.pid, o.comm()));
        format!(
            "{} {:<22} {:>25} -> {:<25}",
            time.strftime("%H:%M:%S%.6f"),
            who,
            local.to_string(),
            remote.to_string(),
        )
    }

    fn paint(&self, word: &str, style: Style) -> String {
        if self.color {
            format!("{style}{word}{style:#}")
        } else {
            word.to_owned()
        }
    }

    fn paint_state(&self, state: TcpState) -> String {
        self.paint(state.name(), state_style(state))
    }

    /// ` in STATE`, coloured as transitions colour it; nothing when the state is unknown.
    fn in_state(&self, state: Option<TcpState>) -> String {
        state.map_or_else(String::new, |s| format!(" in {}", self.paint_state(s)))
    }

    /// ` netns N` unless it is observer's own namespace or unknown.
    fn netns_suffix(&self, netns: Option<Netns>) -> String {
        netns
            .filter(|ns| Some(*ns) != self.own_netns)
            .map_or_else(String::new, |ns| format!(" netns {ns}"))
    }
}

/// A transition as a terminal line.
#[must_use]
pub fn text_line(
    t: &Transition,
    seen: &Observation,
    note: Option<Note>,
    ctx: &TextContext<'_>,
) -> String {
    let mut line = format!(
        "{} {} -> {}",
        ctx.prefix(t.mono_ns, seen.owner.as_ref(), t.local, t.remote),
        ctx.paint_state(t.old),
        ctx.paint_state(t.new),
    );
    if let Some(ns) = seen.previous_state_ns {
        let _ = write!(
            line,
            " ({}{})",
            at_least(seen.lower_bound),
            human_duration(ns)
        );
    }
    if let Some(note) = note {
        let _ = write!(line, " [{}]", describe(note));
    }
    if seen.gap {
        line.push_str(" [missed transitions before this one]");
    }
    line.push_str(&ctx.netns_suffix(t.netns));
    line
}

fn describe(note: Note) -> String {
    match note {
        Note::ClosedBeforeAccept => "closed by the peer before accept()".to_owned(),
        Note::TimewaitEntered { timeout_ns } | Note::TimewaitRestarted { timeout_ns } => {
            let what = if matches!(note, Note::TimewaitEntered { .. }) {
                "timewait socket"
            } else {
                "timewait timer restarted"
            };
            match timeout_ns {
                Some(ns) => format!("{what}, ends in {}", human_duration(ns)),
                None => what.to_owned(),
            }
        }
        Note::TimewaitEnded(TimewaitEnd::Expired) => "expired".to_owned(),
        Note::TimewaitEnded(TimewaitEnd::Killed) => "killed early".to_owned(),
        Note::TimewaitEnded(TimewaitEnd::Unseen) => "its end was not seen".to_owned(),
        Note::NoTimewait => "no timewait socket".to_owned(),
    }
}

/// One RST as a terminal line.
#[must_use]
pub fn reset_line(
    r: &Reset,
    state: Option<TcpState>,
    class: ResetClass,
    owner: Option<&Task>,
    ctx: &TextContext<'_>,
) -> String {
    let mut line = format!(
        "{} RST {} in {}: {}",
        ctx.prefix(r.mono_ns, owner, r.local, r.remote),
        r.direction.name(),
        state.map_or("no socket", TcpState::name),
        class.describe(),
    );
    if let Some(name) = r.reason.map(|x| {
        x.name()
            .map_or_else(|| format!("reason {}", x.0), str::to_owned)
    }) {
        let _ = write!(line, " ({name})");
    }
    line.push_str(&ctx.netns_suffix(r.netns));
    line
}

/// An alert state change as a line: time, ALERT, state, rule, what is wrong.
#[must_use]
pub fn alert_line(change: &Change, ctx: &TextContext<'_>) -> String {
    let time = jiff::Timestamp::now().to_zoned(ctx.tz.clone());
    let word = match change.status {
        Status::Pending => "pending",
        Status::Firing => "FIRING",
        Status::Resolved => "resolved",
        Status::Inactive => "inactive",
    };
    let description = change
        .alert
        .annotations
        .get("description")
        .map_or("", String::as_str);
    let line = format!(
        "{} ALERT {word} {}: {description}",
        time.strftime("%H:%M:%S%.6f"),
        change.alert.name()
    );
    if change.status == Status::Firing {
        ctx.paint(&line, AnsiColor::Red.on_default().bold())
    } else {
        line
    }
}

/// `>=` before a value that is only a lower bound.
const fn at_least(lower_bound: bool) -> &'static str {
    if lower_bound { ">=" } else { "" }
}

/// A change in a connection's retransmissions as a terminal line. `at_ns` is when the change
/// was noticed (the report carries no time of its own).
#[must_use]
pub fn retransmits_line(
    tuple: &Tuple,
    state: Option<TcpState>,
    owner: Option<&Task>,
    phase: RetransmitPhase,
    at_ns: u64,
    ctx: &TextContext<'_>,
) -> String {
    let (word, style, what) = match phase {
        RetransmitPhase::Began => (
            "RETRANSMIT",
            AnsiColor::Yellow.on_default(),
            "retransmitting, no progress".to_owned(),
        ),
        RetransmitPhase::Suspect {
            since_ns,
            lower_bound,
            retransmits,
        } => (
            "HALF-OPEN?",
            AnsiColor::Red.on_default().bold(),
            format!(
                "no progress for {0}{1}, {0}{2}",
                at_least(lower_bound),
                human_duration(at_ns.saturating_sub(since_ns)),
                plural(retransmits, "retransmission"),
            ),
        ),
        RetransmitPhase::Recovered {
            retransmits,
            duration_ns,
        } => (
            "RECOVERED",
            AnsiColor::Green.on_default(),
            format!(
                "progress after {} over {}",
                plural(retransmits, "retransmission"),
                human_duration(duration_ns)
            ),
        ),
    };
    format!(
        "{} {}{}: {what}{}",
        ctx.prefix(at_ns, owner, tuple.local, tuple.remote),
        ctx.paint(word, style),
        ctx.in_state(state),
        ctx.netns_suffix(tuple.netns),
    )
}

/// The line's first word for a connection error.
const fn error_word(cause: EndCause) -> &'static str {
    match cause {
        EndCause::Refused => "REFUSED",
        EndCause::Reset => "RESET",
        EndCause::Unreachable => "UNREACHABLE",
        EndCause::Other => "ERROR",
        _ => "TIMEOUT",
    }
}

/// What a cause means, in words.
const fn error_words(cause: EndCause) -> &'static str {
    match cause {
        EndCause::RetransmitTimeout => "gave up retransmitting",
        EndCause::KeepaliveTimeout => "keepalive probes unanswered",
        EndCause::ZeroWindowTimeout => "zero-window probes unanswered",
        EndCause::ConnectTimeout => "handshake unanswered",
        EndCause::Timeout => "timed out",
        EndCause::Refused => "connection refused by the peer",
        EndCause::Reset => "connection reset by the peer",
        EndCause::Unreachable => "host or network unreachable",
        EndCause::Other => "socket error",
    }
}

/// A connection the kernel ended with an error, as a terminal line.
#[must_use]
pub fn connection_error_line(
    e: &SocketError,
    cause: EndCause,
    owner: Option<&Task>,
    retransmits: Option<(u32, u64)>,
    ctx: &TextContext<'_>,
) -> String {
    let mut line = format!(
        "{} {}{}: {}",
        ctx.prefix(e.mono_ns, owner, e.local, e.remote),
        ctx.paint(error_word(cause), AnsiColor::Red.on_default()),
        ctx.in_state(e.state),
        error_words(cause),
    );
    if let Some((n, ns)) = retransmits {
        let _ = write!(
            line,
            " after {} over {}",
            plural(n, "retransmission"),
            human_duration(ns)
        );
    } else if matches!(
        cause,
        EndCause::KeepaliveTimeout | EndCause::ZeroWindowTimeout
    ) && let Some(n) = e.probes_out.filter(|n| *n > 0)
    {
        let _ = write!(line, " after {}", plural(u32::from(n), "probe"));
    }
    let _ = write!(line, " ({}, {})", cause.name(), error_name(e.error));
    line.push_str(&ctx.netns_suffix(e.netns));
    line
}

/// A report as a terminal line; `now_ns` dates reports without a time of their own.
#[must_use]
pub fn report_line(report: &Report, now_ns: u64, ctx: &TextContext<'_>) -> String {
    match report {
        Report::Transition {
            transition,
            seen,
            note,
        } => text_line(transition, seen, *note, ctx),
        Report::Reset {
            reset,
            state,
            class,
            owner,
            ..
        } => reset_line(reset, *state, *class, owner.as_ref(), ctx),
        Report::Retransmits {
            tuple,
            state,
            owner,
            phase,
            ..
        } => retransmits_line(tuple, *state, owner.as_ref(), *phase, now_ns, ctx),
        Report::ConnectionError {
            error,
            cause,
            owner,
            retransmits,
            ..
        } => connection_error_line(error, *cause, owner.as_ref(), *retransmits, ctx),
    }
}

/// The network namespace observer runs in: not worth naming on every line.
fn own_netns() -> Option<Netns> {
    use std::os::unix::fs::MetadataExt as _;
    let ino = std::fs::metadata("/proc/self/ns/net").ok()?.ino();
    u32::try_from(ino).ok().and_then(Netns::new)
}

/// ` [unit nginx.service]`, ` [pod shop/checkout container api]`, ` [container 4f1d2c3b4a59]`
/// or ` [cgroup /my/group]`: the most specific name the socket's cgroup gives.
#[must_use]
pub fn workload_suffix(w: &Attribution) -> String {
    if let Some(p) = &w.pod {
        return format!(" [pod {}/{} container {}]", p.namespace, p.pod, p.container);
    }
    match (&w.workload.unit, &w.workload.container_id) {
        (Some(unit), _) => format!(" [unit {unit}]"),
        (None, Some(id)) => format!(" [container {}]", &id[..12]),
        (None, None) => format!(" [cgroup {}]", w.cgroup),
    }
}

/// Terminal lines written to `out`, in the local time zone.
pub struct TextSink<W> {
    out: W,
    wall: WallClock,
    tz: jiff::tz::TimeZone,
    own_netns: Option<Netns>,
    color: bool,
}

impl<W: Write> TextSink<W> {
    pub fn new(out: W, wall: WallClock, color: bool) -> Self {
        Self {
            out,
            wall,
            tz: jiff::tz::TimeZone::system(),
            own_netns: own_netns(),
            color,
        }
    }

    fn context(&self) -> TextContext<'_> {
        TextContext {
            clock: &self.wall,
            tz: &self.tz,
            own_netns: self.own_netns,
            color: self.color,
        }
    }
}

impl<W: Write> Sink for TextSink<W> {
    fn start(&mut self) -> io::Result<()> {
        writeln!(self.out, "{HEADER}")?;
        self.out.flush()
    }

    fn report(
        &mut self,
        report: &Report,
        workload: Option<&Attribution>,
        now_ns: u64,
    ) -> io::Result<()> {
        let mut line = report_line(report, now_ns, &self.context());
        if let Some(w) = workload {
            line.push_str(&workload_suffix(w));
        }
        writeln!(self.out, "{line}")
    }

    fn alert(&mut self, change: &Change) -> io::Result<()> {
        let line = alert_line(change, &self.context());
        writeln!(self.out, "{line}")
    }

    fn losses(&mut self, _: LossCounts) -> io::Result<()> {
        Ok(())
    }

    fn state_summary(&mut self, summary: &StateSummary<'_>) -> io::Result<()> {
        self.out.write_all(render_text(summary).as_bytes())?;
        self.out.flush()
    }

    fn summary(&mut self, _: &Summary) -> io::Result<()> {
        Ok(())
    }

    fn set_clock(&mut self, wall: WallClock) {
        self.wall = wall;
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
