//! `observer watch` as a client of the daemon's socket: the daemon filters, watch prints. JSON
//! lines are passed through as the daemon wrote them (the same lines standalone watch writes);
//! terminal lines are made from them.

use std::{
    fmt::Write as _,
    io::{self, Write as _},
    path::Path,
};

use anyhow::Context as _;
use serde::Deserialize;
use tokio::signal::unix::{SignalKind, signal};

use super::{WatchOptions, quiet_on_broken_pipe, text::HEADER};
use crate::{human::human_duration, wire::client::Client};

/// The fields of an event line that a terminal line shows.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EventLine {
    #[serde(rename = "type")]
    kind: String,
    time: String,
    local_addr: String,
    local_port: u16,
    remote_addr: String,
    remote_port: u16,
    netns: Option<u32>,
    pid: Option<u32>,
    comm: Option<String>,
    old_state: Option<String>,
    new_state: Option<String>,
    prev_state_ns: Option<u64>,
    prev_state_lower_bound: bool,
    note: Option<String>,
    gap: bool,
    direction: Option<String>,
    state: Option<String>,
    class: Option<String>,
    reason: Option<String>,
    phase: Option<String>,
    retransmits: Option<u32>,
    no_progress_ns: Option<u64>,
    cause: Option<String>,
    error: Option<String>,
}

fn address(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// An event line as a terminal line, in the columns of standalone watch; `None` for lines
/// that are not events (losses).
fn text_line(json: &str, tz: &jiff::tz::TimeZone) -> Option<String> {
    let e: EventLine = serde_json::from_str(json).ok()?;
    let time = e.time.parse::<jiff::Timestamp>().map_or_else(
        |_| e.time.clone(),
        |t| t.to_zoned(tz.clone()).strftime("%H:%M:%S%.6f").to_string(),
    );
    let who = match (e.pid, &e.comm) {
        (Some(pid), Some(comm)) => format!("{pid}/{comm}"),
        _ => "?".to_owned(),
    };
    let mut line = format!(
        "{time} {who:<22} {:>25} -> {:<25}",
        address(&e.local_addr, e.local_port),
        address(&e.remote_addr, e.remote_port)
    );
    let state = |s: &Option<String>| s.clone().unwrap_or_else(|| "?".to_owned());
    match e.kind.as_str() {
        "transition" => {
            let _ = write!(line, " {} -> {}", state(&e.old_state), state(&e.new_state));
            if let Some(ns) = e.prev_state_ns {
                let at_least = if e.prev_state_lower_bound { ">=" } else { "" };
                let _ = write!(line, " ({at_least}{})", human_duration(ns));
            }
            if let Some(note) = &e.note {
                let _ = write!(line, " [{}]", note.replace('_', " "));
            }
            if e.gap {
                line.push_str(" [missed transitions before this one]");
            }
        }
        "reset" => {
            let _ = write!(
                line,
                " RST {} in {}: {}",
                state(&e.direction),
                e.state.as_deref().unwrap_or("no socket"),
                state(&e.class).replace('_', " ")
            );
            if let Some(reason) = &e.reason {
                let _ = write!(line, " ({reason})");
            }
        }
        "retransmission" => {
            let word = match e.phase.as_deref() {
                Some("half_open_suspect") => "HALF-OPEN?",
                Some("recovered") => "RECOVERED",
                _ => "RETRANSMIT",
            };
            let _ = write!(line, " {word}");
            if let Some(s) = &e.state {
                let _ = write!(line, " in {s}");
            }
            if let (Some(n), Some(ns)) = (e.retransmits, e.no_progress_ns) {
                let _ = write!(line, ": {n} retransmissions over {}", human_duration(ns));
            }
        }
        "connection_error" => {
            let _ = write!(
                line,
                " {} in {}: {}",
                state(&e.cause).to_uppercase(),
                state(&e.state),
                state(&e.error)
            );
        }
        _ => return None,
    }
    if let Some(ns) = e.netns {
        let _ = write!(line, " netns {ns}");
    }
    Some(line)
}

/// Streams from the daemon until Ctrl-C, SIGTERM, `--count` lines, a closed stdout, or the
/// daemon's leaving.
pub(super) async fn run(
    mut client: Client,
    path: &Path,
    options: &WatchOptions,
) -> anyhow::Result<()> {
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    client.subscribe(&options.filter).await?;
    eprintln!(
        "observer: watching TCP connections through the daemon at {} (filters applied by \
         the daemon; --standalone loads the programs here instead); Ctrl-C stops",
        path.display()
    );
    let tz = jiff::tz::TimeZone::system();
    let mut out = io::BufWriter::with_capacity(64 * 1024, io::stdout());
    if !options.json {
        writeln!(out, "{HEADER}")?;
        out.flush()?;
    }
    let limit = options.count.unwrap_or(u64::MAX);
    let mut shown = 0_u64;
    let ended_by = loop {
        let line = tokio::select! {
            line = client.next_line() => line?,
            _ = sigint.recv() => break "stopped",
            _ = sigterm.recv() => break "stopped",
        };
        let Some(line) = line else {
            break "the daemon closed the connection (it stopped, or this client fell behind)";
        };
        let is_event = !line.starts_with("{\"type\":\"loss\"");
        let written = if options.json {
            writeln!(out, "{line}")
        } else if let Some(text) = text_line(&line, &tz) {
            writeln!(out, "{text}")
        } else {
            Ok(())
        };
        // Flushed when no more lines wait: once per burst (a write per line could not keep
        // up with a busy host, and the daemon drops a client that falls behind).
        let flushed = written.and_then(|()| {
            if client.has_buffered() {
                Ok(())
            } else {
                out.flush()
            }
        });
        if let Err(e) = flushed {
            return quiet_on_broken_pipe(e);
        }
        if is_event {
            shown += 1;
            if shown >= limit {
                break "done";
            }
        }
    };
    eprintln!("observer: {shown} lines shown through the daemon; {ended_by}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines_read_as_terminal_lines() {
        let tz = jiff::tz::TimeZone::UTC;
        let line = text_line(
            r#"{"type":"transition","time":"2026-01-02T03:04:05.000006Z","mono_ns":1,
               "sock":"0x1","family":"ipv4","local_addr":"127.0.0.1","local_port":8080,
               "remote_addr":"127.0.0.1","remote_port":40000,"old_state":"ESTABLISHED",
               "new_state":"CLOSE_WAIT","prev_state_ns":2000000,"prev_state_lower_bound":false,
               "note":null,"netns":9,"pid":42,"comm":"server","gap":false}"#,
            &tz,
        )
        .unwrap();
        assert_eq!(
            line,
            "03:04:05.000006 42/server                         127.0.0.1:8080 -> \
             127.0.0.1:40000           ESTABLISHED -> CLOSE_WAIT (2ms) netns 9"
        );
        let line = text_line(
            r#"{"type":"reset","time":"2026-01-02T03:04:05Z","direction":"sent",
               "local_addr":"::1","local_port":1,"remote_addr":"::1","remote_port":2,
               "state":null,"class":"no_listener","reason":"NO_SOCKET","netns":null,
               "pid":null,"comm":null}"#,
            &tz,
        )
        .unwrap();
        assert!(
            line.ends_with("[::1]:1 -> [::1]:2                   RST sent in no socket: no listener (NO_SOCKET)"),
            "{line}"
        );
        assert!(text_line(r#"{"type":"loss","lost_total":1}"#, &tz).is_none());
    }
}
