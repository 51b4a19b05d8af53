//! How a transition looks: a terminal line, or a JSON object.

use std::fmt::Write as _;

use anstyle::{AnsiColor, Style};
use observer_common::TcpState;
use serde::Serialize;

use crate::{
    alerts::{Change, Status, deliver::ChangeRecord},
    clock::WallClock,
    decode::{Reset, Task, Transition},
    track::{Note, Observation, TimewaitEnd, resets::ResetClass},
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
    pub family: &'static str,
    pub local_addr: String,
    pub local_port: u16,
    pub remote_addr: String,
    pub remote_port: u16,
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
            family: r.family.name(),
            local_addr: r.local.ip().to_string(),
            local_port: r.local.port(),
            remote_addr: r.remote.ip().to_string(),
            remote_port: r.remote.port(),
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
    pub family: &'static str,
    pub local_addr: String,
    pub local_port: u16,
    pub remote_addr: String,
    pub remote_port: u16,
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
            family: t.family.name(),
            local_addr: t.local.ip().to_string(),
            local_port: t.local.port(),
            remote_addr: t.remote.ip().to_string(),
            remote_port: t.remote.port(),
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
            comm: seen.owner.as_ref().map(crate::decode::Task::comm),
            task_pid: t.task.pid,
            task_tid: t.task.tid,
            task_comm: t.task.comm(),
            owner_context: t.owner_context,
            gap: seen.gap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Family, Task};

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
