//! The detail view of one connection: what the last read model says of it, and every line
//! about it (transitions, RSTs, retransmissions, errors) from the moment the view opened, from
//! the daemon's stream or a standalone pipeline. The tracker keeps a socket's current state
//! and when it began, not its history: what came before the view opened is that one fact.

use std::{collections::VecDeque, fmt::Write as _, net::SocketAddr};

use serde_json::Value;

use crate::{
    human::human_duration,
    wire::{
        Filter,
        model::{ConnectionRow, Model},
    },
};

/// Lines kept per view; older ones scroll away.
pub const KEPT: usize = 200;

/// Which connection: one socket's two ends and its namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnId {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub netns: Option<u32>,
}

impl ConnId {
    /// A read model's row, when its addresses read back.
    #[must_use]
    pub fn of(row: &ConnectionRow) -> Option<Self> {
        Some(Self {
            local: row.local.parse().ok()?,
            remote: row.remote.parse().ok()?,
            netns: row.netns,
        })
    }

    /// What the daemon is asked to stream: the higher of the two ports (most often the
    /// ephemeral one, which few other connections share) in the connection's namespace. Lines
    /// are then matched exactly, so a guess that lets more through costs only their lines.
    #[must_use]
    pub fn filter(&self) -> Filter {
        Filter {
            ports: vec![self.local.port().max(self.remote.port())],
            netns: self.netns.into_iter().collect(),
            ..Filter::default()
        }
    }

    /// Whether an event line (as `watch --json` writes it) is about this socket.
    fn is(&self, line: &Value) -> bool {
        let end = |addr: &str, port: &str| -> Option<SocketAddr> {
            let ip = line[addr].as_str()?.parse().ok()?;
            let port = u16::try_from(line[port].as_u64()?).ok()?;
            Some(SocketAddr::new(ip, port))
        };
        end("local_addr", "local_port") == Some(self.local)
            && end("remote_addr", "remote_port") == Some(self.remote)
            && line["netns"].as_u64() == self.netns.map(u64::from)
    }

    /// `CLOSE_WAIT for 2 m 3 s, process 42/nginx`: what `m` lists about it, if it does.
    #[must_use]
    pub fn facts(&self, m: &Model) -> Option<String> {
        let listed = |rows: &[ConnectionRow], state: Option<&str>| {
            rows.iter()
                .find(|r| Self::of(r).as_ref() == Some(self))
                .map(|r| {
                    let state = r.state.as_deref().or(state).unwrap_or("?");
                    let process = match (r.pid, &r.comm) {
                        (Some(pid), Some(comm)) => format!("process {pid}/{comm}"),
                        _ => "process unknown".to_owned(),
                    };
                    let since = format!(
                        "{}{}",
                        if r.age_lower_bound { ">=" } else { "" },
                        human_duration(r.age_ns)
                    );
                    (state.to_owned(), since, process)
                })
        };
        if let Some((state, since, process)) = listed(&m.close_wait, Some("CLOSE_WAIT")) {
            return Some(format!("{state} for {since}, {process}"));
        }
        listed(&m.half_open, None).map(|(state, since, process)| {
            format!("{state}, retransmitting without progress for {since}, {process}")
        })
    }
}

/// The lines about one connection since its view opened, newest last.
#[derive(Clone, Debug)]
pub struct History {
    pub conn: ConnId,
    lines: VecDeque<String>,
}

impl History {
    #[must_use]
    pub const fn new(conn: ConnId) -> Self {
        Self {
            conn,
            lines: VecDeque::new(),
        }
    }

    /// Keeps `line` (JSON, as `watch --json` writes it) when it is about this connection.
    pub fn offer(&mut self, line: &str) {
        let Ok(value) = serde_json::from_str::<Value>(line) else {
            return;
        };
        if !self.conn.is(&value) {
            return;
        }
        if let Some(text) = describe(&value) {
            if self.lines.len() == KEPT {
                self.lines.pop_front();
            }
            self.lines.push_back(text);
        }
    }

    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(String::as_str)
    }
}

/// One line of the view: the time of day (UTC, to the millisecond) and what happened.
fn describe(v: &Value) -> Option<String> {
    let s = |key: &str| v[key].as_str();
    let time = s("time")?
        .parse::<jiff::Timestamp>()
        .ok()?
        .strftime("%H:%M:%S%.3f");
    let what = match s("type")? {
        "transition" => {
            let mut text = format!("{} -> {}", s("old_state")?, s("new_state")?);
            if let Some(ns) = v["prev_state_ns"].as_u64() {
                let bound = if v["prev_state_lower_bound"] == true {
                    ">="
                } else {
                    ""
                };
                let _ = write!(
                    text,
                    " after {bound}{} in {}",
                    human_duration(ns),
                    s("old_state")?
                );
            }
            if let Some(note) = s("note") {
                let _ = write!(text, " ({note})");
            }
            text
        }
        "reset" => {
            let reason = s("reason").map(|r| format!(", {r}")).unwrap_or_default();
            format!("RST {} ({}{reason})", s("direction")?, s("class")?)
        }
        "retransmission" => match v["retransmits"].as_u64() {
            Some(n) => format!("{} ({n} retransmissions)", s("phase")?),
            None => s("phase")?.to_owned(),
        },
        "connection_error" => format!("error {} ({})", s("error")?, s("cause")?),
        _ => return None,
    };
    Some(format!("{time}  {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> ConnId {
        ConnId {
            local: "127.0.0.1:8080".parse().unwrap(),
            remote: "127.0.0.1:51000".parse().unwrap(),
            netns: Some(9),
        }
    }

    fn transition(local_port: u16, old: &str, new: &str, prev_ns: &str) -> String {
        format!(
            r#"{{"type":"transition","time":"2026-12-01T21:04:05.123456789Z","mono_ns":5,"sock":"0xffff888000000001","family":"ipv4","local_addr":"127.0.0.1","local_port":{local_port},"remote_addr":"127.0.0.1","remote_port":51000,"old_state":"{old}","new_state":"{new}","prev_state_ns":{prev_ns},"prev_state_lower_bound":false,"note":null,"timewait_timeout_ns":null,"netns":9,"pid":42,"comm":"nginx","task_pid":7,"task_tid":8,"task_comm":"nginx","owner_context":true,"gap":false}}"#
        )
    }

    #[test]
    fn keeps_the_lines_of_its_connection_only() {
        let mut h = History::new(conn());
        h.offer(&transition(8080, "CLOSE_WAIT", "LAST_ACK", "125000000000"));
        // The same ports on the other end, another namespace, a line that is not JSON.
        h.offer(&transition(8081, "ESTABLISHED", "CLOSE_WAIT", "null"));
        h.offer(
            &transition(8080, "LAST_ACK", "CLOSE", "null").replace("\"netns\":9", "\"netns\":10"),
        );
        h.offer("not json");
        h.offer(r#"{"type":"reset","time":"2026-12-01T21:04:06.5Z","mono_ns":6,"direction":"sent","sock":"0xffff888000000001","family":"ipv4","local_addr":"127.0.0.1","local_port":8080,"remote_addr":"127.0.0.1","remote_port":51000,"state":"LAST_ACK","class":"abortive_close","reason":null,"netns":9,"pid":42,"comm":"nginx"}"#);
        let lines: Vec<&str> = h.lines().collect();
        assert_eq!(
            lines,
            [
                "21:04:05.123  CLOSE_WAIT -> LAST_ACK after 2m05s in CLOSE_WAIT",
                "21:04:06.500  RST sent (abortive_close)",
            ]
        );
    }

    #[test]
    fn keeps_the_newest_lines() {
        let mut h = History::new(conn());
        for _ in 0..KEPT + 5 {
            h.offer(&transition(8080, "ESTABLISHED", "CLOSE_WAIT", "null"));
        }
        assert_eq!(h.lines().count(), KEPT);
    }

    #[test]
    fn asks_the_daemon_for_the_higher_port_in_its_namespace() {
        let f = conn().filter();
        assert_eq!((f.ports, f.netns), (vec![51000], vec![9]));
    }
}
