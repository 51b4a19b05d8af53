//! `observer watch` run as a process, as a user runs it: JSON output parsed and checked, and
//! every filter checked against an unfiltered run that saw the same transitions.

use crate::support;

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{V4, V6, netns::NetNs, privileged, serial};

/// A running `observer watch --json`, its stdout lines collected on a thread.
struct Watch {
    child: Child,
    lines: mpsc::Receiver<String>,
    got: Vec<Value>,
}

impl Watch {
    /// Starts the watcher and returns once it says it is watching (programs attached).
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_observer"))
            .args([
                "watch",
                "--standalone",
                "--json",
                "--ring-buffer-size",
                "256K",
            ])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting observer");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("observer stderr: {line}");
                if line.contains("watching") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Loading and attaching took an unoptimised build 12 to 16 s in an emulated virtual
        // machine, and longer while other watchers started; the bound only ends a failed start.
        let started = Instant::now();
        ready_rx
            .recv_timeout(Duration::from_secs(90))
            .expect("observer did not start watching");
        eprintln!("observer watching after {:?}", started.elapsed());
        Self {
            child,
            lines,
            got: Vec::new(),
        }
    }

    fn transitions(&self) -> Vec<&Value> {
        self.got
            .iter()
            .filter(|v| v["type"] == "transition")
            .collect()
    }

    /// Waits until a line satisfies `pred` (15 s at most).
    fn wait_until(&mut self, what: &str, pred: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.got.iter().any(&pred) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.got.push(
                    serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}")),
                ),
                Err(e) => panic!("{e}: no line for {what}: {:#?}", self.got),
            }
        }
    }

    /// Waits until `n` transitions arrived (10 s at most).
    fn wait_for(&mut self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.transitions().len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.got.push(
                    serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}")),
                ),
                Err(e) => panic!(
                    "{e}: only {} of {n} transitions arrived: {:#?}",
                    self.transitions().len(),
                    self.got
                ),
            }
        }
    }

    /// Ctrl-C, then everything it printed; it must exit cleanly.
    fn stop(mut self) -> Vec<Value> {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(i32::try_from(self.child.id()).unwrap(), libc::SIGINT) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "observer exited with {status}");
        self.got.extend(
            self.lines
                .iter()
                .map(|l| serde_json::from_str::<Value>(&l).unwrap()),
        );
        self.got
    }
}

/// Ids of the loaded `inet_sock_set_state` programs.
fn state_program_ids() -> std::collections::BTreeSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| {
            p.name_as_str()
                .is_some_and(|n| n.starts_with("inet_sock_set"))
        })
        .map(|p| p.id())
        .collect()
}

fn states(lines: &[Value], port: u64) -> Vec<(String, String)> {
    lines
        .iter()
        .filter(|v| v["type"] == "transition" && v["local_port"] == port)
        .map(|v| {
            (
                v["old_state"].as_str().unwrap().to_owned(),
                v["new_state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
fn watch_json_output_is_complete_and_exits_cleanly() {
    if !privileged("watch_json_output_is_complete_and_exits_cleanly") {
        return;
    }
    let _serial = serial();
    let before = state_program_ids();
    let ns = NetNs::new("json").unwrap();
    let watch = Watch::start(&["--netns", &ns.inode().to_string()]);
    let ours: Vec<u32> = state_program_ids().difference(&before).copied().collect();
    assert_eq!(ours.len(), 1, "watch loaded its program");
    let conn = ns.enter(|| support::client_closes_first(V4));
    let mut watch = watch;
    watch.wait_for(12);
    let lines = watch.stop();
    // The kernel frees a program shortly after its last reference goes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while state_program_ids().contains(&ours[0]) {
        assert!(
            Instant::now() < deadline,
            "the program outlived the watcher"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let (last, transitions) = lines.split_last().unwrap();
    assert_eq!(
        transitions.len(),
        12,
        "exactly the connection's 12 transitions: {lines:#?}"
    );
    let fields = [
        "type",
        "time",
        "mono_ns",
        "sock",
        "family",
        "local_addr",
        "local_port",
        "remote_addr",
        "remote_port",
        "old_state",
        "new_state",
        "prev_state_ns",
        "netns",
        "pid",
        "comm",
        "task_pid",
        "task_tid",
        "task_comm",
        "owner_context",
        "gap",
        "prev_state_lower_bound",
        "note",
        "timewait_timeout_ns",
    ];
    // The workload fields are there when the socket's cgroup names them: here only the
    // cgroup's path, this process's own (no unit, container or pod names it).
    let workload = [
        "cgroup",
        "unit",
        "container_id",
        "pod_uid",
        "pod",
        "namespace",
        "container",
    ];
    let own_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own_cgroup = own_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup2 line in /proc/self/cgroup");
    for t in transitions {
        let keys: Vec<&str> = t.as_object().unwrap().keys().map(String::as_str).collect();
        for key in &keys {
            assert!(
                fields.contains(key) || workload.contains(key),
                "unexpected field {key} in {t}"
            );
        }
        for f in fields {
            assert!(keys.contains(&f), "field {f} missing in {t}");
        }
        assert_eq!(t["cgroup"], own_cgroup, "{t}");
        assert_eq!(t["family"], "ipv4");
        assert_eq!(t["netns"], ns.inode());
        assert_eq!(t["gap"], false);
        assert!(t["time"].as_str().unwrap().ends_with('Z'));
    }
    let client: Vec<_> = states(&lines, u64::from(conn.client_port));
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(
        client,
        [
            pair("SYN_SENT", "ESTABLISHED"),
            pair("ESTABLISHED", "FIN_WAIT1"),
            pair("FIN_WAIT1", "FIN_WAIT2"),
            pair("FIN_WAIT2", "TIME_WAIT")
        ],
        "client (its CLOSE -> SYN_SENT has local port 0); its full socket's FIN_WAIT2 -> \
         CLOSE is shown as what it is: the connection waiting on in a timewait socket"
    );
    let time_wait = transitions
        .iter()
        .find(|t| t["new_state"] == "TIME_WAIT")
        .unwrap();
    assert_eq!(time_wait["note"], "timewait_entered", "{time_wait}");
    // Time in the previous state is known for every transition after the first of a socket.
    let timed = transitions
        .iter()
        .filter(|t| t["prev_state_ns"].is_u64())
        .count();
    assert_eq!(
        timed,
        12 - 3,
        "all but the first transition of each of the 3 sockets"
    );
    let me = u64::from(std::process::id());
    let connect = transitions
        .iter()
        .find(|t| t["old_state"] == "CLOSE" && t["new_state"] == "SYN_SENT")
        .unwrap();
    assert_eq!(
        (connect["pid"].as_u64(), connect["owner_context"].as_bool()),
        (Some(me), Some(true))
    );

    assert_eq!(last["type"], "summary");
    assert_eq!(last["shown"], 12);
    assert_eq!(last["lost_total"], 0, "{last}");
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
fn each_filter_shows_exactly_what_matches() {
    if !privileged("each_filter_shows_exactly_what_matches") {
        return;
    }
    let _serial = serial();
    let ns = NetNs::new("filters").unwrap();
    let other = NetNs::new("other").unwrap();
    // Loopback's default lets connect() take over a TIME_WAIT port (tcp_tw_reuse=2): the
    // second v4 connection to `port` could then end the first's timewait socket, a TIME_WAIT
    // end each watch reports only after a grace period, so some of them before being stopped
    // and some not.
    for n in [&ns, &other] {
        n.sysctl("net.ipv4.tcp_tw_reuse", "0").unwrap();
    }
    let inode = ns.inode().to_string();
    let me = std::process::id().to_string();
    let net = ["--netns", inode.as_str()];

    // The v4 server's port is known only once it listens, so the port filter uses a fixed one.
    let port = "40123";
    let filters: Vec<(&str, Vec<&str>)> = vec![
        ("all", vec![]),
        ("port", vec!["--port", port]),
        ("addr", vec!["--addr", "::1"]),
        ("state", vec!["--state", "close-wait"]),
        ("v4", vec!["-4"]),
        ("v6", vec!["-6"]),
        ("pid", vec!["--pid", me.as_str()]),
    ];
    let mut watches: Vec<(&str, Watch)> = filters
        .iter()
        .map(|(name, extra)| {
            let args: Vec<&str> = net.iter().copied().chain(extra.iter().copied()).collect();
            (*name, Watch::start(&args))
        })
        .collect();
    let other_inode = other.inode().to_string();
    let other_watch = Watch::start(&["--netns", &other_inode]);

    // In `ns`: a v4 connection on `port`, a v6 one, and one from another process (bash) to the
    // v4 listener. In `other`: one v4 connection.
    ns.enter(|| {
        let listener = std::net::TcpListener::bind((V4, port.parse::<u16>().unwrap())).unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        drop(client);
        assert_eq!(std::io::Read::read(&mut server, &mut [0u8; 8]).unwrap(), 0);
        drop(server);
        std::thread::scope(|s| {
            s.spawn(|| {
                let (mut server, _) = listener.accept().unwrap();
                assert_eq!(std::io::Read::read(&mut server, &mut [0u8; 8]).unwrap(), 0);
            });
            let st = Command::new("bash")
                .args([
                    "-c",
                    &format!("exec 3<>/dev/tcp/127.0.0.1/{port}; exec 3>&-"),
                ])
                .status()
                .unwrap();
            assert!(st.success());
        });
        support::client_closes_first(V6);
    });
    other.enter(|| support::client_closes_first(V4));

    // 3 connections x 10 transitions, plus CLOSE<->LISTEN for the two listeners.
    let all_count = 34;
    watches[0].1.wait_for(all_count);
    let mut other_watch = other_watch;
    other_watch.wait_for(12);
    // Every transition of the traffic above has happened once the unfiltered watch has shown it
    // (not when the traffic's calls return: on a loaded machine the loopback's receive side can
    // run later, in ksoftirqd). The watches are stopped one after another, and in an emulated
    // machine that takes long enough for a TIME_WAIT socket to end (60 s) while some still run:
    // each output is compared within this window, on the clock the lines carry.
    let traffic_done_ns = monotonic_ns();
    let outputs: Vec<(&str, Vec<Value>)> =
        watches.into_iter().map(|(n, w)| (n, w.stop())).collect();
    // A timewait socket's timer re-armed (the peer's FIN turning the orphaned client's
    // FIN_WAIT2 into TIME_WAIT) is reported only when its new deadline falls in another bucket
    // of the kernel's timer wheel: now and then in an emulated machine (seen on 6.12, 3.8 ms
    // after the timewait socket started). It is no state change of the traffic: not counted.
    let transitions = |lines: &[Value]| -> Vec<Value> {
        lines
            .iter()
            .filter(|v| {
                v["type"] == "transition"
                    && v["note"] != "timewait_restarted"
                    && v["mono_ns"].as_u64().unwrap() <= traffic_done_ns
            })
            .cloned()
            .collect()
    };
    let all = transitions(&outputs[0].1);
    assert_eq!(all.len(), all_count, "{all:#?}");

    // Each watch is its own process, with its own programs (so its own timestamps), and the
    // order in which reports of neighbouring events come out depends on where its reads cut
    // the stream (seen: a TIME_WAIT entry before the peer's CLOSE_WAIT -> LAST_ACK in one
    // watch, after it in another): the lines are compared as sorted sets of transitions.
    let key = |v: &Value| {
        (
            v["sock"].to_string(),
            v["old_state"].to_string(),
            v["new_state"].to_string(),
        )
    };
    let port_n: u64 = port.parse().unwrap();
    let pid_n = u64::from(std::process::id());
    for (name, lines) in &outputs[1..] {
        let mut shown: Vec<_> = transitions(lines).iter().map(key).collect();
        shown.sort();
        let mut expected: Vec<_> = all
            .iter()
            .filter(|v| match *name {
                "port" => v["local_port"] == port_n || v["remote_port"] == port_n,
                "addr" => v["local_addr"] == "::1" || v["remote_addr"] == "::1",
                "state" => v["old_state"] == "CLOSE_WAIT" || v["new_state"] == "CLOSE_WAIT",
                "v4" => v["family"] == "ipv4",
                "v6" => v["family"] == "ipv6",
                "pid" => v["pid"] == pid_n,
                _ => unreachable!(),
            })
            .map(key)
            .collect();
        expected.sort();
        assert!(
            !expected.is_empty() && expected.len() < all.len(),
            "{name}: the traffic exercises the filter"
        );
        assert_eq!(
            shown, expected,
            "--{name} shows exactly the matching transitions"
        );
    }
    // bash's client socket is not ours: --pid excluded it.
    assert!(
        all.iter().any(|v| v["comm"] == "bash"),
        "bash's connection was seen: {all:#?}"
    );

    let other_lines = other_watch.stop();
    let other_transitions = transitions(&other_lines);
    assert_eq!(other_transitions.len(), 12);
    assert!(
        other_transitions
            .iter()
            .all(|v| v["netns"] == other.inode()),
        "--netns excludes other namespaces"
    );
    assert!(all.iter().all(|v| v["netns"] == ns.inode()));
}

/// `CLOCK_MONOTONIC` now, in ns: the clock of every line's `mono_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) },
        0
    );
    u64::try_from(ts.tv_sec).unwrap() * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap()
}

/// Runs without any privileges (as nobody when we are root) and gets a sentence saying what to
/// do, not a bare EPERM. Needs no privileges itself.
#[test]
fn watch_alerts_shows_a_close_wait_leak_firing_then_resolved() {
    if !privileged("watch_alerts_shows_a_close_wait_leak_firing_then_resolved") {
        return;
    }
    let config =
        std::env::temp_dir().join(format!("observer-watch-alerts-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "[alerts]\nevaluation_interval = \"200ms\"\nbuiltin_rules = false\n\n\
         [[alerts.rules]]\nname = \"Leak\"\nkind = \"close_wait_age\"\nolder_than = \"1s\"\n",
    )
    .unwrap();
    let ns = NetNs::new("alerts").unwrap();
    let netns = ns.inode().to_string();
    let mut watch = Watch::start(&[
        "--netns",
        &netns,
        "--alerts",
        "--config",
        config.to_str().unwrap(),
    ]);
    let (server, port) = ns.enter(|| {
        let support::Pair {
            client,
            mut server,
            conn,
            ..
        } = support::connected_pair(V6);
        drop(client);
        assert_eq!(std::io::Read::read(&mut server, &mut [0u8; 4]).unwrap(), 0);
        (server, conn.server_port.to_string())
    });
    let about_leak = |v: &Value, status: &str| {
        v["type"] == "alert"
            && v["alertname"] == "Leak"
            && v["status"] == status
            && v["labels"]["local_port"].as_str() == Some(port.as_str())
            && v["labels"]["netns"].as_str() == Some(netns.as_str())
    };
    watch.wait_until("the Leak alert firing", |v| about_leak(v, "firing"));
    let firing = watch.got.iter().find(|v| about_leak(v, "firing")).unwrap();
    assert_eq!(
        firing["labels"]["pid"],
        std::process::id().to_string(),
        "{firing}"
    );
    assert!(firing["value"].as_f64().unwrap() > 1.0);
    drop(server);
    watch.wait_until("the Leak alert resolved", |v| about_leak(v, "resolved"));
    let lines = watch.stop();
    let fired = lines.iter().filter(|v| about_leak(v, "firing")).count();
    assert_eq!(fired, 1, "fired once");
    let _ = std::fs::remove_file(config);
}

#[test]
fn without_privileges_watch_explains_what_to_do() {
    let bin = env!("CARGO_BIN_EXE_observer");
    let root = observer::kernel::privileges::can_load_probes();
    let out = if root {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                bin,
                "watch",
            ])
            .output()
    } else {
        Command::new(bin).arg("watch").output()
    }
    .expect("running observer");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("missing privileges")
            && stderr.contains("CAP_BPF")
            && stderr.contains("sudo"),
        "{stderr}"
    );
}
