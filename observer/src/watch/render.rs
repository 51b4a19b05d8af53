//! How a transition looks: a terminal line, or a JSON object.

use std::{fmt::Write as _, net::SocketAddr};

use anstyle::{AnsiColor, Style};
use observer_common::TcpState;
use serde::Serialize;

use crate::{
    alerts::{Change, Status, deliver::ChangeRecord},
    clock::WallClock,
    event::{Reset, SocketError, Task, Transition, Tuple},
    track::{EndCause, Note, Observation, RetransmitPhase, TimewaitEnd, resets::ResetClass},
};

/// A duration in the unit a person reads best: `850ns`, `12.3µs`, `4.56ms`, `1.23s`, `2m03s`,
/// `1h02m`.
#[must_use]
pub fn human_duration(ns: u64) -> String {
    /// `value` with up to `decimals` decimals, trailing zeros dropped.
    fn trimmed(value: f64, decimals: usize, unit: &str) -> String {
        let s = format!("{value:.decimals$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.')
        } else {
            &s
        };
        format!("{s}{unit}")
    }
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let f = ns as f64;
    let secs = ns / 1_000_000_000;
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => trimmed(f / 1e3, 1, "µs"),
        1_000_000..1_000_000_000 => trimmed(f / 1e6, 2, "ms"),
        1_000_000_000..60_000_000_000 => trimmed(f / 1e9, 2, "s"),
        60_000_000_000..3_600_000_000_000 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

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

/// The header printed above terminal lines.
pub const HEADER: &str = "TIME            PID/COMM                                   LOCAL -> REMOTE                    OLD -> NEW (TIME IN OLD)";

/// One terminal line. `pid/comm` is `?` when the owner is unknown (the transition ran in
/// softirq context for a socket whose owner has not yet been seen).
#[must_use]
pub fn text_line(
    t: &Transition,
    seen: &Observation,
    note: Option<Note>,
    clock: &WallClock,
    tz: &jiff::tz::TimeZone,
    own_netns: Option<u32>,
    color: bool,
) -> String {
    let time = clock.at(t.mono_ns).to_zoned(tz.clone());
    let who = seen
        .owner
        .map_or_else(|| "?".to_owned(), |o| format!("{}/{}", o.pid, o.comm()));
    let paint = |s: TcpState| {
        if color {
            let st = state_style(s);
            format!("{}{}{}", st.render(), s.name(), st.render_reset())
        } else {
            s.name().to_owned()
        }
    };
    let mut line = format!(
        "{} {:<22} {:>25} -> {:<25} {} -> {}",
        time.strftime("%H:%M:%S%.6f"),
        who,
        t.local.to_string(),
        t.remote.to_string(),
        paint(t.old),
        paint(t.new),
    );
    if let Some(ns) = seen.previous_state_ns {
        let at_least = if seen.lower_bound { ">=" } else { "" };
        let _ = write!(line, " ({at_least}{})", human_duration(ns));
    }
    if let Some(note) = note {
        let _ = write!(line, " [{}]", describe(note));
    }
    if seen.gap {
        line.push_str(" [missed transitions before this one]");
    }
    if let Some(ns) = t.netns.filter(|ns| Some(*ns) != own_netns) {
        let _ = write!(line, " netns {ns}");
    }
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

/// The JSON `note` value (README: "JSON output").
const fn note_name(note: Note) -> &'static str {
    match note {
        Note::ClosedBeforeAccept => "closed_before_accept",
        Note::TimewaitEntered { .. } => "timewait_entered",
        Note::TimewaitRestarted { .. } => "timewait_restarted",
        Note::TimewaitEnded(TimewaitEnd::Expired) => "timewait_expired",
        Note::TimewaitEnded(TimewaitEnd::Killed) => "timewait_killed",
        Note::TimewaitEnded(TimewaitEnd::Unseen) => "timewait_unseen",
        Note::NoTimewait => "no_timewait",
    }
}

/// One RST as a terminal line.
#[must_use]
pub fn reset_line(
    r: &Reset,
    state: Option<TcpState>,
    class: ResetClass,
    owner: Option<&Task>,
    clock: &WallClock,
    tz: &jiff::tz::TimeZone,
    own_netns: Option<u32>,
) -> String {
    let time = clock.at(r.mono_ns).to_zoned(tz.clone());
    let who = owner.map_or_else(|| "?".to_owned(), |o| format!("{}/{}", o.pid, o.comm()));
    let mut line = format!(
        "{} {:<22} {:>25} -> {:<25} RST {} in {}: {}",
        time.strftime("%H:%M:%S%.6f"),
        who,
        r.local.to_string(),
        r.remote.to_string(),
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
    if let Some(ns) = r.netns.filter(|ns| Some(*ns) != own_netns) {
        let _ = write!(line, " netns {ns}");
    }
    line
}

/// An RST as one JSON object (README: "JSON output").
/// A connection's ends in every JSON object (flattened into it): `family`, `local_addr`,
/// `local_port`, `remote_addr`, `remote_port`.
#[derive(Serialize)]
pub struct JsonEndpoints {
    pub family: &'static str,
    pub local_addr: String,
    pub local_port: u16,
    pub remote_addr: String,
    pub remote_port: u16,
}

impl JsonEndpoints {
    #[must_use]
    pub fn new(
        family: crate::event::Family,
        local: std::net::SocketAddr,
        remote: std::net::SocketAddr,
    ) -> Self {
        Self {
            family: family.name(),
            local_addr: local.ip().to_string(),
            local_port: local.port(),
            remote_addr: remote.ip().to_string(),
            remote_port: remote.port(),
        }
    }
}

#[derive(Serialize)]
pub struct JsonReset<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    pub mono_ns: u64,
    /// `sent` or `received`.
    pub direction: &'static str,
    /// Kernel socket address, hex; null for a reset sent without a socket.
    pub sock: Option<String>,
    #[serde(flatten)]
    pub endpoints: JsonEndpoints,
    /// The socket's state, null when there is no socket.
    pub state: Option<&'static str>,
    /// Plain-words class (a closed set; README).
    pub class: &'static str,
    /// The kernel's `sk_rst_reason` name (Linux 6.10+, sent RSTs), else null.
    pub reason: Option<String>,
    pub netns: Option<u32>,
    pub pid: Option<u32>,
    pub comm: Option<std::borrow::Cow<'a, str>>,
}

impl<'a> JsonReset<'a> {
    #[must_use]
    pub fn new(
        r: &Reset,
        state: Option<TcpState>,
        class: ResetClass,
        owner: Option<&'a Task>,
        clock: &WallClock,
    ) -> Self {
        Self {
            kind: "reset",
            time: clock.at(r.mono_ns).to_string(),
            mono_ns: r.mono_ns,
            direction: r.direction.name(),
            sock: r.sock.map(|s| format!("{s:#x}")),
            endpoints: JsonEndpoints::new(r.family, r.local, r.remote),
            state: state.map(TcpState::name),
            class: class.name(),
            reason: r
                .reason
                .map(|x| x.name().map_or_else(|| format!("{}", x.0), str::to_owned)),
            netns: r.netns,
            pid: owner.map(|o| o.pid),
            comm: owner.map(Task::comm),
        }
    }
}

/// A transition as one JSON object. Field names are part of the interface (README: "JSON
/// output"); add fields, never rename them.
#[derive(Serialize)]
pub struct JsonTransition<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// RFC 3339, UTC, nanoseconds.
    pub time: String,
    pub mono_ns: u64,
    /// Kernel socket address, hex: identity of the socket while it lives.
    pub sock: String,
    #[serde(flatten)]
    pub endpoints: JsonEndpoints,
    pub old_state: &'static str,
    pub new_state: &'static str,
    /// Nanoseconds in `old_state`, null when its start was not seen.
    pub prev_state_ns: Option<u64>,
    /// `prev_state_ns` is a lower bound: the socket existed before observer started.
    pub prev_state_lower_bound: bool,
    /// What else happened: `timewait_entered`, `timewait_restarted`, `timewait_expired`,
    /// `timewait_killed`, `no_timewait`, `closed_before_accept`; null otherwise.
    pub note: Option<&'static str>,
    /// For `timewait_entered`/`timewait_restarted`: nanoseconds until the timer fires.
    pub timewait_timeout_ns: Option<u64>,
    pub netns: Option<u32>,
    /// Owning process, null when unknown.
    pub pid: Option<u32>,
    pub comm: Option<std::borrow::Cow<'a, str>>,
    /// The task that was running on the CPU (the owner only when `owner_context`).
    pub task_pid: u32,
    pub task_tid: u32,
    pub task_comm: std::borrow::Cow<'a, str>,
    pub owner_context: bool,
    /// Transitions of this socket were lost before this one.
    pub gap: bool,
}

impl<'a> JsonTransition<'a> {
    #[must_use]
    pub fn new(
        t: &'a Transition,
        seen: &'a Observation,
        note: Option<Note>,
        clock: &WallClock,
    ) -> Self {
        Self {
            kind: "transition",
            time: clock.at(t.mono_ns).to_string(),
            mono_ns: t.mono_ns,
            sock: format!("{:#x}", t.sock),
            endpoints: JsonEndpoints::new(t.family, t.local, t.remote),
            old_state: t.old.name(),
            new_state: t.new.name(),
            prev_state_ns: seen.previous_state_ns,
            prev_state_lower_bound: seen.lower_bound,
            note: note.map(note_name),
            timewait_timeout_ns: match note {
                Some(
                    Note::TimewaitEntered { timeout_ns } | Note::TimewaitRestarted { timeout_ns },
                ) => timeout_ns,
                _ => None,
            },
            netns: t.netns,
            pid: seen.owner.map(|o| o.pid),
            comm: seen.owner.as_ref().map(crate::event::Task::comm),
            task_pid: t.task.pid,
            task_tid: t.task.tid,
            task_comm: t.task.comm(),
            owner_context: t.owner_context,
            gap: seen.gap,
        }
    }
}

/// An alert state change as a line: time, ALERT, state, rule, what is wrong.
#[must_use]
pub fn alert_line(change: &Change, tz: &jiff::tz::TimeZone, color: bool) -> String {
    let time = jiff::Timestamp::now().to_zoned(tz.clone());
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
    if color && change.status == Status::Firing {
        let style = AnsiColor::Red.on_default().bold();
        format!("{style}{line}{style:#}")
    } else {
        line
    }
}

/// An alert state change as a JSON line (`"type": "alert"`).
#[derive(Serialize)]
pub struct JsonAlert<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    record: ChangeRecord<'a>,
}

impl<'a> JsonAlert<'a> {
    #[must_use]
    pub fn new(change: &'a Change) -> Self {
        Self {
            kind: "alert",
            record: ChangeRecord::new(change, jiff::Timestamp::now()),
        }
    }
}

/// How terminal lines are written: wall-clock mapping, time zone, the namespace not worth
/// naming, colours.
#[derive(Clone, Copy)]
pub struct TextContext<'a> {
    pub clock: &'a WallClock,
    pub tz: &'a jiff::tz::TimeZone,
    pub own_netns: Option<u32>,
    pub color: bool,
}

impl TextContext<'_> {
    /// Time, owner and addresses: the columns every line starts with.
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

    /// ` in STATE`, coloured as transitions colour it; nothing when the state is unknown.
    fn in_state(&self, state: Option<TcpState>) -> String {
        state.map_or_else(String::new, |s| {
            format!(" in {}", self.paint(s.name(), state_style(s)))
        })
    }

    /// ` netns N` unless it is observer's own namespace or unknown (0).
    fn netns_suffix(&self, netns: Option<u32>) -> String {
        netns
            .filter(|ns| *ns != 0 && Some(*ns) != self.own_netns)
            .map_or_else(String::new, |ns| format!(" netns {ns}"))
    }
}

/// `>=` before a value that is only a lower bound.
const fn at_least(lower_bound: bool) -> &'static str {
    if lower_bound { ">=" } else { "" }
}

/// `1 retransmission`, `2 retransmissions`.
pub(super) fn plural(n: u32, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
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
        ctx.netns_suffix(Some(tuple.netns)),
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

/// The errno's symbolic name (`ETIMEDOUT`), else its number. Only errors a TCP socket
/// reports are named.
#[must_use]
pub fn error_name(errno: i32) -> String {
    let name = match errno {
        1 => "EPERM",
        5 => "EIO",
        12 => "ENOMEM",
        13 => "EACCES",
        22 => "EINVAL",
        32 => "EPIPE",
        64 => "ENONET",
        71 => "EPROTO",
        90 => "EMSGSIZE",
        100 => "ENETDOWN",
        101 => "ENETUNREACH",
        102 => "ENETRESET",
        103 => "ECONNABORTED",
        104 => "ECONNRESET",
        105 => "ENOBUFS",
        107 => "ENOTCONN",
        108 => "ESHUTDOWN",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        112 => "EHOSTDOWN",
        113 => "EHOSTUNREACH",
        129 => "EKEYREJECTED",
        _ => return errno.to_string(),
    };
    name.to_owned()
}

/// A non-zero namespace inode (0 is the tracker's "unknown").
const fn known_netns(netns: u32) -> Option<u32> {
    if netns == 0 { None } else { Some(netns) }
}

/// A change in a connection's retransmissions as one JSON object (README: "JSON output").
#[derive(Serialize)]
pub struct JsonRetransmits<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    /// When the change was noticed.
    pub mono_ns: u64,
    /// `retransmitting` (a streak without progress began), `half_open_suspect` or
    /// `recovered`.
    pub phase: &'static str,
    pub sock: String,
    #[serde(flatten)]
    pub endpoints: JsonEndpoints,
    pub state: Option<&'static str>,
    /// Retransmissions in the streak: so far (suspect), or in all (recovered); null when
    /// it just began.
    pub retransmits: Option<u32>,
    /// Nanoseconds without progress: so far (suspect), or from the streak's first
    /// retransmission to its last (recovered).
    pub no_progress_ns: Option<u64>,
    /// When the streak began (suspect), `CLOCK_MONOTONIC`.
    pub since_mono_ns: Option<u64>,
    /// The streak began before its first retransmission was seen: `retransmits` and
    /// `no_progress_ns` are lower bounds.
    pub lower_bound: bool,
    pub netns: Option<u32>,
    pub pid: Option<u32>,
    pub comm: Option<std::borrow::Cow<'a, str>>,
}

impl<'a> JsonRetransmits<'a> {
    #[must_use]
    pub fn new(
        sock: u64,
        tuple: &Tuple,
        state: Option<TcpState>,
        owner: Option<&'a Task>,
        phase: RetransmitPhase,
        at_ns: u64,
        clock: &WallClock,
    ) -> Self {
        let (retransmits, no_progress_ns, since_mono_ns, lower_bound) = match phase {
            RetransmitPhase::Began => (None, None, None, false),
            RetransmitPhase::Suspect {
                since_ns,
                lower_bound,
                retransmits,
            } => (
                Some(retransmits),
                Some(at_ns.saturating_sub(since_ns)),
                Some(since_ns),
                lower_bound,
            ),
            RetransmitPhase::Recovered {
                retransmits,
                duration_ns,
            } => (Some(retransmits), Some(duration_ns), None, false),
        };
        Self {
            kind: "retransmission",
            time: clock.at(at_ns).to_string(),
            mono_ns: at_ns,
            phase: phase.name(),
            sock: format!("{sock:#x}"),
            endpoints: JsonEndpoints::new(tuple.family(), tuple.local, tuple.remote),
            state: state.map(TcpState::name),
            retransmits,
            no_progress_ns,
            since_mono_ns,
            lower_bound,
            netns: known_netns(tuple.netns),
            pid: owner.map(|o| o.pid),
            comm: owner.map(Task::comm),
        }
    }
}

/// A connection ended by an error as one JSON object (README: "JSON output").
#[derive(Serialize)]
pub struct JsonConnectionError<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub time: String,
    pub mono_ns: u64,
    pub sock: String,
    #[serde(flatten)]
    pub endpoints: JsonEndpoints,
    pub state: Option<&'static str>,
    /// Why it ended (a closed set: `retransmit_timeout`, `keepalive_timeout`, ...).
    pub cause: &'static str,
    pub errno: i32,
    /// The errno's name (`ETIMEDOUT`), or its number when unnamed.
    pub error: String,
    /// Retransmissions of the streak that timed out, and how long it lasted; null when the
    /// connection was not seen retransmitting or did not time out.
    pub retransmits: Option<u32>,
    pub no_progress_ns: Option<u64>,
    /// Keepalive or zero-window probes unanswered (`icsk_probes_out`); null when not read.
    pub probes: Option<u8>,
    pub netns: Option<u32>,
    pub pid: Option<u32>,
    pub comm: Option<std::borrow::Cow<'a, str>>,
}

impl<'a> JsonConnectionError<'a> {
    #[must_use]
    pub fn new(
        e: &SocketError,
        cause: EndCause,
        owner: Option<&'a Task>,
        retransmits: Option<(u32, u64)>,
        clock: &WallClock,
    ) -> Self {
        Self {
            kind: "connection_error",
            time: clock.at(e.mono_ns).to_string(),
            mono_ns: e.mono_ns,
            sock: format!("{:#x}", e.sock),
            endpoints: JsonEndpoints::new(e.family, e.local, e.remote),
            state: e.state.map(TcpState::name),
            cause: cause.name(),
            errno: e.error,
            error: error_name(e.error),
            retransmits: retransmits.map(|(n, _)| n),
            no_progress_ns: retransmits.map(|(_, ns)| ns),
            probes: e.probes_out,
            netns: e.netns,
            pid: owner.map(|o| o.pid),
            comm: owner.map(Task::comm),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Family, Task};

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(850), "850ns");
        assert_eq!(human_duration(12_300), "12.3µs");
        assert_eq!(human_duration(4_000), "4µs");
        assert_eq!(human_duration(4_561_000), "4.56ms");
        assert_eq!(human_duration(1_234_000_000), "1.23s");
        assert_eq!(human_duration(123_000_000_000), "2m03s");
        assert_eq!(human_duration(3_720_000_000_000), "1h02m");
    }

    fn sample() -> (Transition, Observation) {
        let t = Transition {
            mono_ns: 5,
            sock: 0xffff_8880_0000_0001,
            old: TcpState::SynSent,
            new: TcpState::Established,
            family: Family::Ipv6,
            local: "[::1]:40000".parse().unwrap(),
            remote: "[::1]:8080".parse().unwrap(),
            netns: Some(9),
            task: Task::new(7, 8, *b"ksoftirqd/0\0\0\0\0\0"),
            owner_context: false,
            has_socket: Some(true),
        };
        let owner = Task::new(42, 42, *b"curl\0\0\0\0\0\0\0\0\0\0\0\0");
        (
            t,
            Observation {
                previous_state_ns: Some(250_000),
                lower_bound: false,
                owner: Some(owner),
                gap: false,
            },
        )
    }

    #[test]
    fn text_line_shows_owner_addresses_states_and_time_in_state() {
        let (t, seen) = sample();
        let clock = WallClock::IDENTITY;
        let line = text_line(
            &t,
            &seen,
            None,
            &clock,
            &jiff::tz::TimeZone::UTC,
            Some(9),
            false,
        );
        assert!(line.starts_with("00:00:00.000000 42/curl "), "{line}");
        assert!(line.contains("[::1]:40000 -> [::1]:8080"), "{line}");
        assert!(line.contains("SYN_SENT -> ESTABLISHED (250µs)"), "{line}");
        assert!(!line.contains("netns"), "own netns is not repeated: {line}");
        let unknown = Observation {
            owner: None,
            previous_state_ns: None,
            lower_bound: false,
            gap: true,
        };
        let line = text_line(
            &t,
            &unknown,
            None,
            &clock,
            &jiff::tz::TimeZone::UTC,
            Some(1),
            true,
        );
        assert!(line.contains(" ? "), "{line}");
        assert!(line.contains("\u{1b}["), "colour codes when asked: {line}");
        assert!(
            line.ends_with("[missed transitions before this one] netns 9"),
            "{line}"
        );
    }

    #[test]
    fn json_has_the_documented_fields() {
        let (t, seen) = sample();
        let json = serde_json::to_value(JsonTransition::new(&t, &seen, None, &WallClock::IDENTITY))
            .unwrap();
        assert_eq!(json["type"], "transition");
        assert_eq!(json["time"], "1970-01-01T00:00:00.000000005Z");
        assert_eq!(json["sock"], "0xffff888000000001");
        assert_eq!(json["family"], "ipv6");
        assert_eq!(
            (json["local_addr"].as_str(), json["local_port"].as_u64()),
            (Some("::1"), Some(40000))
        );
        assert_eq!(
            (json["old_state"].as_str(), json["new_state"].as_str()),
            (Some("SYN_SENT"), Some("ESTABLISHED"))
        );
        assert_eq!(json["prev_state_ns"], 250_000);
        assert_eq!(
            (json["pid"].as_u64(), json["comm"].as_str()),
            (Some(42), Some("curl"))
        );
        assert_eq!(
            (json["task_pid"].as_u64(), json["task_tid"].as_u64()),
            (Some(7), Some(8))
        );
        assert_eq!(json["task_comm"], "ksoftirqd/0");
        assert_eq!(
            (json["owner_context"].as_bool(), json["gap"].as_bool()),
            (Some(false), Some(false))
        );
        assert_eq!(json["netns"], 9);
    }

    fn tuple() -> Tuple {
        Tuple {
            netns: 9,
            local: "10.0.0.1:40000".parse().unwrap(),
            remote: "10.0.0.2:80".parse().unwrap(),
        }
    }

    fn curl() -> Task {
        Task::new(42, 42, *b"curl\0\0\0\0\0\0\0\0\0\0\0\0")
    }

    fn text_context<'a>(
        clock: &'a WallClock,
        tz: &'a jiff::tz::TimeZone,
        color: bool,
    ) -> TextContext<'a> {
        TextContext {
            clock,
            tz,
            own_netns: Some(9),
            color,
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn retransmission_lines_say_what_changed() {
        let (clock, tz) = (WallClock::IDENTITY, jiff::tz::TimeZone::UTC);
        let ctx = text_context(&clock, &tz, false);
        let owner = curl();
        let line = |phase, owner| {
            retransmits_line(
                &tuple(),
                Some(TcpState::Established),
                owner,
                phase,
                20 * S,
                &ctx,
            )
        };
        let began = line(RetransmitPhase::Began, Some(&owner));
        assert!(began.starts_with("00:00:20.000000 42/curl "), "{began}");
        assert!(began.contains(" 10.0.0.1:40000 -> 10.0.0.2:80 "), "{began}");
        assert!(
            began.ends_with(" RETRANSMIT in ESTABLISHED: retransmitting, no progress"),
            "{began}"
        );
        let suspect = line(
            RetransmitPhase::Suspect {
                since_ns: 7_600_000_000,
                lower_bound: false,
                retransmits: 6,
            },
            None,
        );
        assert!(suspect.contains(" ? "), "{suspect}");
        assert!(
            suspect
                .ends_with("HALF-OPEN? in ESTABLISHED: no progress for 12.4s, 6 retransmissions"),
            "{suspect}"
        );
        let seen_late = line(
            RetransmitPhase::Suspect {
                since_ns: 7_600_000_000,
                lower_bound: true,
                retransmits: 1,
            },
            None,
        );
        assert!(
            seen_late.ends_with("no progress for >=12.4s, >=1 retransmission"),
            "{seen_late}"
        );
        let recovered = line(
            RetransmitPhase::Recovered {
                retransmits: 4,
                duration_ns: 2_800_000_000,
            },
            Some(&owner),
        );
        assert!(
            recovered
                .ends_with("RECOVERED in ESTABLISHED: progress after 4 retransmissions over 2.8s"),
            "{recovered}"
        );
        let other_netns = Tuple {
            netns: 10,
            ..tuple()
        };
        let coloured = retransmits_line(
            &other_netns,
            None,
            None,
            RetransmitPhase::Began,
            S,
            &text_context(&clock, &tz, true),
        );
        assert!(coloured.contains("\u{1b}["), "{coloured}");
        assert!(coloured.ends_with("no progress netns 10"), "{coloured}");
        assert!(
            !coloured.contains(" in "),
            "no state when unknown: {coloured}"
        );
    }

    fn socket_error(error: i32, state: TcpState) -> SocketError {
        let t = tuple();
        SocketError {
            mono_ns: 30 * S,
            sock: 0xffff_8880_0000_0002,
            error,
            state: Some(state),
            family: Family::Ipv4,
            local: t.local,
            remote: t.remote,
            netns: Some(9),
            unrecovered: Some(7),
            probes_out: Some(0),
            unsent_data: Some(true),
        }
    }

    #[test]
    fn connection_error_lines_name_the_cause_and_errno() {
        let (clock, tz) = (WallClock::IDENTITY, jiff::tz::TimeZone::UTC);
        let ctx = text_context(&clock, &tz, false);
        let owner = curl();
        let timeout = connection_error_line(
            &socket_error(110, TcpState::Established),
            EndCause::RetransmitTimeout,
            Some(&owner),
            Some((7, 12_600_000_000)),
            &ctx,
        );
        assert!(timeout.starts_with("00:00:30.000000 42/curl "), "{timeout}");
        assert!(
            timeout.ends_with(
                "TIMEOUT in ESTABLISHED: gave up retransmitting after 7 retransmissions over \
                 12.6s (retransmit_timeout, ETIMEDOUT)"
            ),
            "{timeout}"
        );
        let keepalive = SocketError {
            probes_out: Some(9),
            ..socket_error(110, TcpState::Established)
        };
        let line = connection_error_line(&keepalive, EndCause::KeepaliveTimeout, None, None, &ctx);
        assert!(
            line.ends_with(
                "TIMEOUT in ESTABLISHED: keepalive probes unanswered after 9 probes \
                 (keepalive_timeout, ETIMEDOUT)"
            ),
            "{line}"
        );
        let refused = connection_error_line(
            &socket_error(111, TcpState::SynSent),
            EndCause::Refused,
            None,
            None,
            &ctx,
        );
        assert!(
            refused.ends_with(
                "REFUSED in SYN_SENT: connection refused by the peer (refused, ECONNREFUSED)"
            ),
            "{refused}"
        );
        let reset = connection_error_line(
            &socket_error(32, TcpState::Established),
            EndCause::Reset,
            None,
            None,
            &ctx,
        );
        assert!(
            reset.ends_with("RESET in ESTABLISHED: connection reset by the peer (reset, EPIPE)"),
            "{reset}"
        );
        let odd = SocketError {
            netns: Some(10),
            ..socket_error(200, TcpState::Established)
        };
        let line = connection_error_line(&odd, EndCause::Other, None, None, &ctx);
        assert!(
            line.ends_with("ERROR in ESTABLISHED: socket error (other, 200) netns 10"),
            "{line}"
        );
    }

    #[test]
    fn errnos_are_named_else_numbered() {
        assert_eq!(error_name(110), "ETIMEDOUT");
        assert_eq!(error_name(111), "ECONNREFUSED");
        assert_eq!(error_name(104), "ECONNRESET");
        assert_eq!(error_name(113), "EHOSTUNREACH");
        assert_eq!(error_name(101), "ENETUNREACH");
        assert_eq!(error_name(4242), "4242");
    }

    #[test]
    fn retransmission_json_has_the_documented_fields() {
        let owner = curl();
        let json = |phase| {
            serde_json::to_value(JsonRetransmits::new(
                0xffff_8880_0000_0002,
                &tuple(),
                Some(TcpState::Established),
                Some(&owner),
                phase,
                20 * S,
                &WallClock::IDENTITY,
            ))
            .unwrap()
        };
        let began = json(RetransmitPhase::Began);
        assert_eq!(began["type"], "retransmission");
        assert_eq!(began["phase"], "retransmitting");
        assert_eq!(began["time"], "1970-01-01T00:00:20Z");
        assert_eq!(began["mono_ns"], 20 * S);
        assert_eq!(began["sock"], "0xffff888000000002");
        assert_eq!(began["family"], "ipv4");
        assert_eq!(
            (began["local_addr"].as_str(), began["local_port"].as_u64()),
            (Some("10.0.0.1"), Some(40000))
        );
        assert_eq!(
            (began["remote_addr"].as_str(), began["remote_port"].as_u64()),
            (Some("10.0.0.2"), Some(80))
        );
        assert_eq!(began["state"], "ESTABLISHED");
        assert!(began["retransmits"].is_null() && began["no_progress_ns"].is_null());
        assert_eq!(
            (
                began["netns"].as_u64(),
                began["pid"].as_u64(),
                began["comm"].as_str()
            ),
            (Some(9), Some(42), Some("curl"))
        );
        let suspect = json(RetransmitPhase::Suspect {
            since_ns: 8 * S,
            lower_bound: true,
            retransmits: 6,
        });
        assert_eq!(suspect["phase"], "half_open_suspect");
        assert_eq!(suspect["retransmits"], 6);
        assert_eq!(suspect["no_progress_ns"], 12 * S);
        assert_eq!(suspect["since_mono_ns"], 8 * S);
        assert_eq!(suspect["lower_bound"], true);
        let recovered = json(RetransmitPhase::Recovered {
            retransmits: 4,
            duration_ns: 2_800_000_000,
        });
        assert_eq!(recovered["phase"], "recovered");
        assert_eq!(recovered["retransmits"], 4);
        assert_eq!(recovered["no_progress_ns"], 2_800_000_000_u64);
        assert!(recovered["since_mono_ns"].is_null());
    }

    #[test]
    fn connection_error_json_has_the_documented_fields() {
        let owner = curl();
        let e = socket_error(110, TcpState::Established);
        let json = serde_json::to_value(JsonConnectionError::new(
            &e,
            EndCause::RetransmitTimeout,
            Some(&owner),
            Some((7, 12_600_000_000)),
            &WallClock::IDENTITY,
        ))
        .unwrap();
        assert_eq!(json["type"], "connection_error");
        assert_eq!(json["time"], "1970-01-01T00:00:30Z");
        assert_eq!(json["sock"], "0xffff888000000002");
        assert_eq!(json["family"], "ipv4");
        assert_eq!(
            (json["local_addr"].as_str(), json["remote_port"].as_u64()),
            (Some("10.0.0.1"), Some(80))
        );
        assert_eq!(json["state"], "ESTABLISHED");
        assert_eq!(json["cause"], "retransmit_timeout");
        assert_eq!(
            (json["errno"].as_i64(), json["error"].as_str()),
            (Some(110), Some("ETIMEDOUT"))
        );
        assert_eq!(json["retransmits"], 7);
        assert_eq!(json["no_progress_ns"], 12_600_000_000_u64);
        assert_eq!(json["probes"], 0);
        assert_eq!(
            (
                json["netns"].as_u64(),
                json["pid"].as_u64(),
                json["comm"].as_str()
            ),
            (Some(9), Some(42), Some("curl"))
        );
        let refused = serde_json::to_value(JsonConnectionError::new(
            &socket_error(111, TcpState::SynSent),
            EndCause::Refused,
            None,
            None,
            &WallClock::IDENTITY,
        ))
        .unwrap();
        assert_eq!(refused["error"], "ECONNREFUSED");
        assert!(refused["retransmits"].is_null() && refused["pid"].is_null());
    }
}
