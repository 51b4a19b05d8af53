//! `observer run` as systemd runs it: sd_notify messages on a socket the test owns, SIGHUP
//! reloads (a changed rule takes effect, a broken file changes nothing), and kill -9 followed
//! by a restart keeps CLOSE_WAIT ages and alerts.

use crate::support;

use std::{
    io::Read as _,
    net::{SocketAddr, TcpStream},
    os::unix::net::UnixDatagram,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{
    V4,
    netns::NetNs,
    privileged,
    services::{Process, TempDir, free_port, get, wait_for},
    ss,
};

fn start(config: &Path, extra_env: &[(&str, &str)], extra_args: &[&str]) -> Process {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_observer"));
    cmd.args(["run", "--config"]).arg(config).args(extra_args);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    Process::spawn("observer", &mut cmd)
}

fn wait_serving(process: &mut Process, addr: SocketAddr) {
    wait_for(Duration::from_mins(1), "observer to serve /metrics", || {
        if let Some(status) = process.exited() {
            panic!("observer run exited ({status}):\n{}", process.log());
        }
        get(addr, "/metrics", None).ok().filter(|r| r.status == 200)
    });
}

/// The daemon's alerts for the socket on `port` in `netns`, from /alerts.
fn alerts_for(addr: SocketAddr, netns: u32, port: u16) -> Vec<Value> {
    let Ok(r) = get(addr, "/alerts", None) else {
        return Vec::new();
    };
    let all: Vec<Value> = serde_json::from_str(&r.body).unwrap_or_default();
    all.into_iter()
        .filter(|a| {
            a["labels"]["netns"].as_str() == Some(netns.to_string().as_str())
                && a["labels"]["local_port"].as_str() == Some(port.to_string().as_str())
        })
        .collect()
}

/// A metric's value from the Prometheus text output.
fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let body = get(addr, "/metrics", None).ok()?.body;
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A server socket left in CLOSE_WAIT (the client closed; the server never will).
fn leak(ns: &NetNs) -> (TcpStream, u16) {
    ns.enter(|| {
        let support::Pair {
            client,
            mut server,
            conn,
            ..
        } = support::connected_pair(V4);
        drop(client);
        assert_eq!(server.read(&mut [0u8; 4]).unwrap(), 0);
        (server, conn.server_port)
    })
}

fn config(dir: &TempDir, listen: SocketAddr, older_than: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.path("observer.toml");
    std::fs::write(
        &path,
        format!(
            "[metrics]\nlisten = \"{listen}\"\n\n[tracker]\nstate_file = \"{}\"\n\n\
             [alerts]\nevaluation_interval = \"300ms\"\nbuiltin_rules = false\n{extra}\n\
             [[alerts.rules]]\nname = \"Leak\"\nkind = \"close_wait_age\"\nolder_than = \"{older_than}\"\n",
            dir.path("state.json").display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn sd_notify_ready_status_watchdog_reload_and_stopping() {
    if !privileged("sd_notify_ready_status_watchdog_reload_and_stopping") {
        return;
    }
    let dir = TempDir::new("notify");
    let socket_path = dir.path("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = config(&dir, addr, "1h", "");
    let notify = socket_path.to_str().unwrap();
    let mut observer = start(
        &config,
        &[("NOTIFY_SOCKET", notify), ("WATCHDOG_USEC", "400000")],
        &[],
    );
    let mut messages: Vec<String> = Vec::new();
    let mut receive_until = |what: &str, done: &dyn Fn(&[String]) -> bool| {
        let deadline = Instant::now() + Duration::from_mins(1);
        while !done(&messages) {
            assert!(Instant::now() < deadline, "no {what} in {messages:?}");
            let mut buf = [0u8; 4096];
            if let Ok(n) = socket.recv(&mut buf) {
                messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        messages.clone()
    };
    let got = receive_until("READY=1", &|m| m.iter().any(|m| m.contains("READY=1")));
    // READY comes once the programs are attached and the seed is applied: /metrics answers.
    assert!(get(addr, "/metrics", None).unwrap().status == 200);
    let ready = got.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(ready.contains("STATUS=tracking "), "{ready}");
    // WATCHDOG=1 every 200 ms (half of WATCHDOG_USEC).
    let start = Instant::now();
    let got = receive_until("three WATCHDOG=1", &|m| {
        m.iter().filter(|m| m.as_str() == "WATCHDOG=1").count() >= 3
    });
    assert!(start.elapsed() < Duration::from_secs(3), "{got:?}");

    // SIGHUP: RELOADING=1, then READY=1 again.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(observer_pid(&observer), libc::SIGHUP) };
    let got = receive_until("READY=1 after RELOADING=1", &|m| {
        m.iter()
            .position(|m| m.contains("RELOADING=1"))
            .is_some_and(|i| m[i..].iter().any(|m| m.contains("READY=1")))
    });
    let reloading = got.iter().find(|m| m.contains("RELOADING=1")).unwrap();
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");

    let status = observer.terminate().expect("exits on SIGTERM");
    assert!(status.success());
    receive_until("STOPPING=1", &|m| {
        m.iter().any(|m| m.contains("STOPPING=1"))
    });
}

fn observer_pid(p: &Process) -> i32 {
    i32::try_from(p.pid()).unwrap()
}

/// A process's CPU time (every thread's, those that ended included), by its CPU-time clock.
fn process_cpu_seconds(pid: i32) -> f64 {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: a valid out-pointer; the result is checked.
    assert_eq!(unsafe { libc::clock_getcpuclockid(pid, &raw mut clock) }, 0);
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a clock id the kernel gave, a valid out-pointer; the result is checked.
    assert_eq!(unsafe { libc::clock_gettime(clock, &raw mut ts) }, 0);
    #[expect(clippy::cast_precision_loss, reason = "seconds of CPU")]
    {
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    }
}

/// A reconciliation's metrics: it listed at least every socket `ss` lists in a namespace the
/// test filled, it took no longer than the daemon has run, and its CPU, which grows with each
/// reconciliation, stays within the daemon's whole CPU time as the kernel counts it.
#[test]
fn reconciliations_report_what_they_listed_and_what_they_cost() {
    if !privileged("reconciliations_report_what_they_listed_and_what_they_cost") {
        return;
    }
    let ns = NetNs::new("reconcost").unwrap();
    let pairs: Vec<support::Pair> =
        ns.enter(|| (0..200).map(|_| support::connected_pair(V4)).collect());
    let in_ns = ss::tcp_sockets(&ns).len();
    assert_eq!(in_ns, 600, "200 listeners and 200 connections, both ends");
    let dir = TempDir::new("reconcost");
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let path = dir.path("observer.toml");
    std::fs::write(
        &path,
        format!(
            "[metrics]\nlisten = \"{addr}\"\n\n[tracker]\nstate_file = \"{}\"\nreconcile_every = \"1s\"\n",
            dir.path("state.json").display()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let mut observer = start(&path, &[], &[]);
    wait_serving(&mut observer, addr);
    let pid = observer_pid(&observer);
    let listed = wait_for(
        Duration::from_secs(20),
        "a reconciliation's metrics",
        || metric(addr, "observer_reconciliation_listed_sockets"),
    );
    #[expect(clippy::cast_precision_loss, reason = "a few hundred sockets")]
    let in_ns = in_ns as f64;
    assert!(
        listed >= in_ns,
        "{listed} sockets listed, {in_ns} in the test's namespace alone"
    );
    let took = metric(addr, "observer_reconciliation_duration_seconds").unwrap();
    assert!(
        took > 0.0 && took <= started.elapsed().as_secs_f64(),
        "the last reconciliation took {took} s"
    );
    let first = metric(addr, "observer_reconciliation_cpu_seconds_total").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let then = metric(addr, "observer_reconciliation_cpu_seconds_total").unwrap();
    // Read after the metric: the process's clock only grows. A clock read and the kernel's
    // accounting of a thread that just ran may differ by a scheduler tick.
    let process = process_cpu_seconds(pid);
    assert!(
        0.0 < first && first < then && then <= process + 0.005,
        "reconciliations' CPU {first} s, 3 s later {then} s; the daemon's whole CPU {process} s"
    );
    drop(pairs);
    assert!(observer.terminate().unwrap().success());
}

#[test]
fn sighup_applies_a_changed_rule_and_keeps_running_on_a_broken_file() {
    if !privileged("sighup_applies_a_changed_rule_and_keeps_running_on_a_broken_file") {
        return;
    }
    let dir = TempDir::new("sighup");
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let path = config(&dir, addr, "1h", "");
    let mut observer = start(&path, &[], &[]);
    wait_serving(&mut observer, addr);
    let ns = NetNs::new("sighup").unwrap();
    let netns = ns.inode();
    let (server, port) = leak(&ns);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        alerts_for(addr, netns, port).is_empty(),
        "1h threshold: no alert"
    );

    // A changed rule takes effect on SIGHUP.
    config(&dir, addr, "1s", "");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(observer_pid(&observer), libc::SIGHUP) };
    let alert = wait_for(
        Duration::from_secs(20),
        "the alert after the reload",
        || alerts_for(addr, netns, port).into_iter().next(),
    );
    assert_eq!(alert["state"], "firing");

    // A broken file is refused, with its line; the daemon keeps running the old one.
    std::fs::write(&path, "[alerts]\nevaluation_interval = \"soon\"\n").unwrap();
    let received = metric(addr, "observer_events_received_total").unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(observer_pid(&observer), libc::SIGHUP) };
    wait_for(
        Duration::from_secs(10),
        "the reload error in the log",
        || {
            observer
                .log()
                .contains("configuration not reloaded")
                .then_some(())
        },
    );
    let log = observer.log();
    assert!(log.contains("observer.toml:2:"), "names the line: {log}");
    assert!(observer.exited().is_none(), "still running");
    assert_eq!(
        alerts_for(addr, netns, port).len(),
        1,
        "the rule still holds"
    );
    // Events are still processed: a new connection is counted.
    ns.enter(|| support::client_closes_first(V4));
    wait_for(
        Duration::from_secs(10),
        "new events after the failed reload",
        || (metric(addr, "observer_events_received_total")? > received).then_some(()),
    );
    drop(server);
    assert!(observer.terminate().unwrap().success());
}

#[test]
fn kill_9_then_restart_keeps_close_wait_ages_and_alerts() {
    if !privileged("kill_9_then_restart_keeps_close_wait_ages_and_alerts") {
        return;
    }
    let dir = TempDir::new("restart");
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let path = config(&dir, addr, "1s", "");
    let mut observer = start(&path, &[], &[]);
    wait_serving(&mut observer, addr);
    let ns = NetNs::new("restart").unwrap();
    let netns = ns.inode();
    let (server, port) = leak(&ns);
    let leaked_at = Instant::now();
    let before = wait_for(Duration::from_secs(20), "the alert", || {
        alerts_for(addr, netns, port)
            .into_iter()
            .find(|a| a["state"] == "firing")
    });
    // Let a save happen after the alert fired, then kill -9: no chance to write anything more.
    std::thread::sleep(Duration::from_secs(2));
    observer.kill9();
    std::thread::sleep(Duration::from_secs(2));

    let mut observer = start(&path, &[], &[]);
    wait_serving(&mut observer, addr);
    let after = wait_for(
        Duration::from_secs(20),
        "the alert after the restart",
        || {
            alerts_for(addr, netns, port)
                .into_iter()
                .find(|a| a["state"] == "firing")
        },
    );
    assert_eq!(
        after["active_since"], before["active_since"],
        "{before} vs {after}"
    );
    // The socket's age continues: at least the time since the leak, not since the restart.
    let age = metric(addr, "observer_tcp_close_wait_oldest_seconds").unwrap();
    let expected = leaked_at.elapsed().as_secs_f64();
    assert!(
        age >= expected - 1.0,
        "CLOSE_WAIT age {age} s after the restart, expected about {expected} s"
    );
    assert!(observer.log().contains("restored from the previous run"));
    drop(server);
    assert!(observer.terminate().unwrap().success());
}

/// The first notification of a CLOSE_WAIT leak names the process holding the socket, even when
/// the rule's threshold is shorter than `tracker.owner_after`: the holder is looked for before
/// the alert is evaluated.
#[test]
fn the_first_close_wait_notification_names_its_holder() {
    if !privileged("the_first_close_wait_notification_names_its_holder") {
        return;
    }
    let dir = TempDir::new("owner");
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let file = dir.path("alerts.jsonl");
    let path = config(
        &dir,
        addr,
        "1s",
        &format!("file = \"{}\"\n", file.display()),
    );
    let mut observer = start(&path, &[], &[]);
    wait_serving(&mut observer, addr);
    let ns = NetNs::new("owner").unwrap();
    let netns = ns.inode();
    let (server, port) = leak(&ns);
    let first = wait_for(Duration::from_secs(20), "the first notification", || {
        let text = std::fs::read_to_string(&file).ok()?;
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|r| {
                r["labels"]["netns"].as_str() == Some(netns.to_string().as_str())
                    && r["labels"]["local_port"].as_str() == Some(port.to_string().as_str())
            })
    });
    assert_eq!(first["status"], "firing", "{first}");
    assert_eq!(
        first["labels"]["pid"],
        std::process::id().to_string(),
        "{first}"
    );
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert_eq!(first["labels"]["comm"], comm.trim(), "{first}");
    assert!(
        first["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains(&format!("(pid {})", std::process::id())),
        "{first}"
    );
    drop(server);
    assert!(observer.terminate().unwrap().success());
}

/// An alerts file that cannot be written costs only its lines: the daemon starts, serves, and
/// counts each failed line.
#[test]
fn an_unwritable_alerts_file_is_counted_not_fatal() {
    if !privileged("an_unwritable_alerts_file_is_counted_not_fatal") {
        return;
    }
    let dir = TempDir::new("badfile");
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let path = config(
        &dir,
        addr,
        "1s",
        "file = \"/nonexistent-observer-test/alerts.jsonl\"\n",
    );
    let mut observer = start(&path, &[], &[]);
    wait_serving(&mut observer, addr);
    assert!(
        observer.log().contains("cannot open the alerts file"),
        "{}",
        observer.log()
    );
    let ns = NetNs::new("badfile").unwrap();
    let (server, port) = leak(&ns);
    wait_for(Duration::from_secs(20), "the alert", || {
        alerts_for(addr, ns.inode(), port).into_iter().next()
    });
    let failed = wait_for(Duration::from_secs(10), "a failed line counted", || {
        metric(
            addr,
            "observer_alert_notifications_total{sink=\"file\",result=\"failed\"}",
        )
        .filter(|n| *n >= 1.0)
    });
    assert!(failed >= 1.0);
    assert_eq!(
        metric(
            addr,
            "observer_alert_notifications_total{sink=\"file\",result=\"sent\"}"
        ),
        Some(0.0)
    );
    assert!(observer.exited().is_none(), "still running");
    drop(server);
    assert!(observer.terminate().unwrap().success());
}
