//! `kill9_restart`: kill -9 under load and a restart from the saved state; the HTTP polling it
//! needs.

use std::{
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use observer_testkit::{
    churn::{self, Load},
    netns::NetNs,
};

use super::Watched;
use crate::{Check, Row};

/// kill -9 under load, then a restart: the CLOSE_WAIT leak keeps its age and its alert its
/// start, nothing is lost after the restart, no other alert fires.
pub(super) fn kill9_restart(quick: bool) -> anyhow::Result<Row> {
    let churn_secs = if quick { 4 } else { 10 };
    let ns = NetNs::new("stress-kill")?;
    let dir = std::env::temp_dir().join(format!("observer-stress-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let tables = kill9_tables(&dir.join("state.json"));
    let mut first = Watched::start(&tables, &[])?;
    let (leak, port) = ns.enter(|| -> anyhow::Result<(TcpStream, u16)> {
        let listener = TcpListener::bind((IpAddr::from([127, 0, 0, 1]), 0))?;
        let port = listener.local_addr()?.port();
        let client = TcpStream::connect(listener.local_addr()?)?;
        let (mut server, _) = listener.accept()?;
        drop(client);
        let _ = std::io::Read::read(&mut server, &mut [0u8; 1])?;
        Ok((server, port))
    })?;
    let leaked_at = Instant::now();
    let alert_of = |addr: SocketAddr| -> Option<serde_json::Value> {
        let body = http_get(addr, "/alerts")?;
        let all: Vec<serde_json::Value> = serde_json::from_str(&body).ok()?;
        all.into_iter().find(|a| {
            a["labels"]["local_port"].as_str() == Some(port.to_string().as_str())
                && a["state"] == "firing"
        })
    };
    let churn_load = Load {
        threads: 1,
        connections: 10_000_000,
        max_time: Duration::from_secs(churn_secs),
    };
    let mut row = Row {
        scenario: "kill9_restart",
        load: "kill -9 under churn, then a restart; one CLOSE_WAIT leak".to_owned(),
        ..Row::default()
    };
    let second = std::thread::scope(|s| -> anyhow::Result<Watched> {
        let churn = s.spawn(|| ns.enter(|| churn::run(&churn_load, None)));
        let before = wait_some(Duration::from_secs(20), || alert_of(first.daemon.addr));
        std::thread::sleep(Duration::from_secs(2));
        first.daemon.kill9();
        // Its scrape connections would sit in CLOSE_WAIT: a real leak, this harness's own.
        drop(first);
        let second = Watched::start(&tables, &[])?;
        let after = wait_some(Duration::from_secs(20), || alert_of(second.daemon.addr));
        let made = churn.join().expect("the churn thread")?;
        row.load = format!(
            "kill -9 under {} connections at {:.0}/s, then a restart; one CLOSE_WAIT leak",
            made.connections(),
            made.connections_per_s()
        );
        let since =
            |a: &Option<serde_json::Value>| a.as_ref().map(|a| a["active_since"].to_string());
        row.checks.push(Check::new(
            "the leak's alert keeps its start",
            before.is_some() && since(&after) == since(&before),
            format!(
                "active since {:?} before, {:?} after",
                since(&before),
                since(&after)
            ),
        ));
        Ok(second)
    })?;
    let mut second = second;
    std::thread::sleep(Duration::from_millis(2200));
    let m = second.metrics()?;
    let age = m.value("observer_tcp_close_wait_oldest_seconds");
    let lost_after = m.sum("observer_events_lost_total", &[]);
    let held = leaked_at.elapsed().as_secs_f64();
    row.checks.push(Check::new(
        "the leak keeps its age",
        age >= held - 3.0,
        format!("oldest CLOSE_WAIT {age:.1} s after the restart, leaked {held:.1} s before"),
    ));
    row.checks.push(Check::new(
        "nothing lost after the restart",
        lost_after == 0,
        format!("{lost_after} events lost"),
    ));
    // The churn's RSTs may well alert (their rate is high): no CLOSE_WAIT alert may be about
    // another socket than the leak.
    let others: Vec<String> = std::fs::read_to_string(second.daemon.dir().join("alerts.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.contains("\"alertname\":\"TcpCloseWaitStuck\"")
                && !l.contains(&format!("\"local_port\":\"{port}\""))
        })
        .map(str::to_owned)
        .collect();
    row.checks.push(Check::target(
        "no false alert",
        others.is_empty(),
        format!(
            "{} CLOSE_WAIT alert changes about other sockets than the leak: {others:?}",
            others.len()
        ),
    ));
    second.finish(&mut row)?;
    drop(leak);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(row)
}

/// Restart state in a directory that outlives both daemons; a CLOSE_WAIT alert after 3 s.
fn kill9_tables(state: &std::path::Path) -> String {
    format!(
        "[tracker]\nstate_file = \"{}\"\n\n[alerts]\nlog = false\nevaluation_interval = \
         \"1s\"\nfile = \"{{dir}}/alerts.jsonl\"\n\n[[alerts.rules]]\nname = \
         \"TcpCloseWaitStuck\"\nkind = \"close_wait_age\"\nolder_than = \"3s\"\n",
        state.display()
    )
}

/// Polls `f` every 200 ms until it gives something, for at most `timeout`.
fn wait_some<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// GET over HTTP/1.0: the body, when the answer is 200.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    // One write: a request in pieces would wait on Nagle for the server's delayed ACK.
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    head.contains(" 200 ").then(|| body.to_owned())
}
