//! The daemon's Unix socket, as `observer watch` and `observer top` use it: the event stream
//! carries every transition the daemon saw (checked against the probes attached in this
//! process), the filters are applied by the daemon, a client that stops reading is cut off and
//! counted while the others keep every line, and the socket's mode and group decide who may
//! connect.

use crate::support;
use observer_testkit::tmux::TMUX;

use std::{
    collections::BTreeMap,
    ffi::CString,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::SocketAddr,
    os::unix::{
        fs::{MetadataExt as _, PermissionsExt as _},
        net::UnixStream,
    },
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

use observer::track::Report;
use serde_json::Value;
use support::{
    Recorder, V4, client_closes_first, connected_pair,
    netns::NetNs,
    privileged, serial,
    services::{Process, TempDir, free_port, get, observer_run},
};

/// A daemon serving its socket in `dir`, with `socket` as its `[socket]` table's other keys.
fn start_daemon(dir: &TempDir, socket: &str) -> (Process, SocketAddr, PathBuf) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let path = dir.path("observer.sock");
    let config = dir.path("observer.toml");
    std::fs::write(
        &config,
        format!(
            "[metrics]\nlisten = \"{addr}\"\n\n[tracker]\nstate_file = \"\"\n\n\
             [alerts]\nlog = false\n\n[socket]\npath = \"{}\"\n{socket}\n",
            path.display()
        ),
    )
    .unwrap();
    let process = observer_run(&config, addr);
    (process, addr, path)
}

/// A client of the event stream, its lines read on a thread.
struct Stream {
    lines: mpsc::Receiver<String>,
    got: Vec<Value>,
}

impl Stream {
    /// Subscribes with `request` and returns once the daemon confirmed.
    fn subscribe(path: &Path, request: &str) -> Self {
        let mut socket = UnixStream::connect(path).expect("connecting to the daemon's socket");
        socket.write_all(request.as_bytes()).unwrap();
        socket.write_all(b"\n").unwrap();
        let mut reader = BufReader::new(socket);
        let mut first = String::new();
        reader.read_line(&mut first).unwrap();
        assert_eq!(first, "{\"type\":\"subscribed\"}\n", "for {request}");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            lines,
            got: Vec::new(),
        }
    }

    /// Reads until `done` holds of the lines so far, failing after 15 s.
    fn until(&mut self, what: &str, done: impl Fn(&[Value]) -> bool) -> &[Value] {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !done(&self.got) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    // Everything already there, before `done` is asked again.
                    for line in std::iter::once(line).chain(self.lines.try_iter()) {
                        self.got
                            .push(serde_json::from_str(&line).unwrap_or_else(|e| {
                                panic!(
                                    "not JSON (a line cut short is the end of a client the \
                                         daemon disconnected): {line:?}: {e}"
                                )
                            }));
                    }
                }
                Err(e) => panic!("{e}: waiting for {what}; got {:#?}", self.got),
            }
        }
        &self.got
    }

    /// Whatever else arrives within `quiet`.
    fn rest(&mut self, quiet: Duration) -> &[Value] {
        while let Ok(line) = self.lines.recv_timeout(quiet) {
            self.got.push(serde_json::from_str(&line).unwrap());
        }
        &self.got
    }
}

/// A transition as the stream shows it: socket, old state, new state.
type Step = (String, String, String);

fn transitions(lines: &[Value]) -> BTreeMap<Step, usize> {
    let mut steps = BTreeMap::new();
    for v in lines.iter().filter(|v| v["type"] == "transition") {
        let step = (
            v["sock"].as_str().unwrap().to_owned(),
            v["old_state"].as_str().unwrap().to_owned(),
            v["new_state"].as_str().unwrap().to_owned(),
        );
        *steps.entry(step).or_default() += 1;
    }
    steps
}

/// The transitions the in-process tracker reported, as the stream would show them.
fn recorded(reports: &[Report]) -> BTreeMap<Step, usize> {
    let mut steps = BTreeMap::new();
    for r in reports {
        if let Report::Transition { transition: t, .. } = r {
            let step = (
                format!("{:#x}", t.sock),
                t.old.name().to_owned(),
                t.new.name().to_owned(),
            );
            *steps.entry(step).or_default() += 1;
        }
    }
    steps
}

/// Transitions of the steps that `pick` picks (a socket's address may be reused by a later
/// socket: steps are counted, not keys).
fn count(steps: &BTreeMap<Step, usize>, pick: impl Fn(&Step) -> bool) -> usize {
    steps.iter().filter(|(s, _)| pick(s)).map(|(_, n)| n).sum()
}

/// Connections the stalled-client test makes.
const CONNECTIONS: usize = 700;

fn metric(addr: SocketAddr, name: &str) -> f64 {
    let body = get(addr, "/metrics", None).unwrap().body;
    body.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(name)?;
            rest.strip_prefix("{} ").or_else(|| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .parse()
        .unwrap()
}

#[test]
fn the_stream_carries_every_transition_and_the_filters_choose() {
    if !privileged("daemon_socket::the_stream_carries_every_transition_and_the_filters_choose") {
        return;
    }
    let _serial = serial();
    let ns = NetNs::new("sockstream").unwrap();
    let dir = TempDir::new("sockstream");
    let (_daemon, _, path) = start_daemon(&dir, "");
    let mut recorder = Recorder::start(ns.inode());
    let inode = ns.inode();
    let mut all = Stream::subscribe(
        &path,
        &format!(r#"{{"stream":"events","filter":{{"netns":[{inode}]}}}}"#),
    );
    let mut close_wait = Stream::subscribe(
        &path,
        &format!(r#"{{"stream":"events","filter":{{"netns":[{inode}],"states":["close-wait"]}}}}"#),
    );
    // Four connections that close cleanly, and one the server leaves in CLOSE_WAIT.
    let (ports, leak) = ns.enter(|| {
        let ports: Vec<u16> = (0..4)
            .map(|_| client_closes_first(V4).server_port)
            .collect();
        let leak = connected_pair(V4);
        drop(leak.client);
        (ports, (leak.listener, leak.server, leak.conn))
    });
    let leak_port = leak.2.server_port;
    // Until the last transition of each connection: the leaking client's FIN_WAIT2 comes after
    // its server's CLOSE_WAIT (it is the ACK of the FIN), possibly in a later read.
    recorder.reports_until(Duration::from_secs(10), |r| {
        let steps = recorded(r);
        count(&steps, |(_, _, new)| new == "CLOSE_WAIT") == 5
            && count(&steps, |(_, old, _)| old == "LAST_ACK") == 4
            && count(&steps, |(_, _, new)| new == "FIN_WAIT2") == 5
    });
    let expected = recorded(&recorder.reports);
    let got = transitions(all.until("every transition the probes saw", |lines| {
        transitions(lines) == expected
    }));
    assert_eq!(got, expected);
    // Subscribed once the daemon has streamed (so applied) those connections' transitions.
    let mut by_port = Stream::subscribe(
        &path,
        &format!(
            r#"{{"stream":"events","filter":{{"ports":[{}]}}}}"#,
            ports[0]
        ),
    );
    by_port.rest(Duration::from_millis(10));
    // Nothing more arrives: the daemon saw exactly what the probes saw.
    let lines = all.rest(Duration::from_millis(500)).to_vec();
    assert_eq!(transitions(&lines), expected, "no extra transition");
    for v in lines.iter().filter(|v| v["type"] == "transition") {
        assert_eq!(v["netns"], inode, "{v}");
    }

    // The state filter: exactly the transitions into or out of CLOSE_WAIT.
    let into_close_wait: BTreeMap<Step, usize> = expected
        .iter()
        .filter(|((_, old, new), _)| old == "CLOSE_WAIT" || new == "CLOSE_WAIT")
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    // Five sockets entered CLOSE_WAIT; the four closed ones left it for LAST_ACK.
    assert_eq!(into_close_wait.values().sum::<usize>(), 9, "{expected:#?}");
    close_wait.until("the CLOSE_WAIT transitions", |l| {
        transitions(l) == into_close_wait
    });
    assert_eq!(
        transitions(close_wait.rest(Duration::from_millis(300))),
        into_close_wait
    );
    for v in &close_wait.got {
        let ends = [&v["old_state"], &v["new_state"]];
        assert!(ends.contains(&&Value::from("CLOSE_WAIT")), "{v}");
    }
    // Subscribed after those connections: a filter on their port gets none of them.
    assert!(transitions(&by_port.got).is_empty(), "{:#?}", by_port.got);
    assert!(leak_port != ports[0]);
    drop(leak);
}

#[test]
fn a_client_that_stops_reading_is_cut_off_and_counted() {
    if !privileged("daemon_socket::a_client_that_stops_reading_is_cut_off_and_counted") {
        return;
    }
    let _serial = serial();
    let ns = NetNs::new("sockstall").unwrap();
    let dir = TempDir::new("sockstall");
    let (mut daemon, addr, path) = start_daemon(&dir, "client_queue_bytes = 1048576");
    let mut recorder = Recorder::start(ns.inode());
    let inode = ns.inode();
    let request = format!(r#"{{"stream":"events","filter":{{"netns":[{inode}]}}}}"#);
    // Subscribes and never reads again.
    let mut stalled = UnixStream::connect(&path).unwrap();
    stalled.write_all(request.as_bytes()).unwrap();
    stalled.write_all(b"\n").unwrap();
    let mut reader = Stream::subscribe(&path, &request);
    assert!(metric(addr, "observer_socket_client_drops_total") < 0.5);

    // About 7,000 lines (3 MB): more than the socket's buffer and a 1 MiB queue hold. Paced by
    // the reading client, however slow the machine: it is never more than 50 connections
    // (about 200 KB) behind, so that only the stalled client fills its queue.
    let last_acks = |l: &[Value]| l.iter().filter(|v| v["old_state"] == "LAST_ACK").count();
    for made in (50..=CONNECTIONS).step_by(50) {
        ns.enter(|| {
            for _ in 0..50 {
                client_closes_first(V4);
            }
        });
        reader.until("the reading client to catch up", |l| last_acks(l) >= made);
    }
    recorder.reports_until(Duration::from_secs(20), |r| {
        count(&recorded(r), |(_, old, _)| old == "LAST_ACK") == CONNECTIONS
    });
    let expected = recorded(&recorder.reports);
    // The client that reads gets every transition: the stalled one slowed nothing.
    reader.until("every transition", |l| transitions(l) == expected);
    let drops = metric(addr, "observer_socket_client_drops_total");
    assert!(
        (drops - 1.0).abs() < 0.5,
        "{drops} drops:\n{}",
        daemon.log()
    );

    // The stalled client gets what its socket buffer held, then the end.
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut held = Vec::new();
    let read = stalled.read_to_end(&mut held);
    assert!(read.is_ok(), "the daemon closed the connection: {read:?}");
    assert!(held.len() < 3_000_000, "{} bytes", held.len());
    // Logged once.
    let log = daemon.log();
    assert_eq!(log.matches("read too slowly").count(), 1, "{log}");
    assert!(daemon.terminate().is_some(), "the daemon stops on SIGTERM");
}

/// Connects to `path` as uid and gid 65534 with no supplementary groups, in a child process;
/// `Ok(())`, or the errno of connect(2).
fn connect_unprivileged(path: &Path, gid: u32) -> Result<(), i32> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a zeroed sockaddr_un is valid; the path fits (checked below).
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::sa_family_t::try_from(libc::AF_UNIX).unwrap();
    let bytes = c_path.as_bytes_with_nul();
    assert!(bytes.len() <= addr.sun_path.len());
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    // SAFETY: the child calls only async-signal-safe functions (setgroups, setresgid,
    // setresuid, socket, connect, _exit) on memory prepared before fork.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let code = if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(65534, 65534, 65534) != 0
            {
                100
            } else {
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                let rc = libc::connect(
                    fd,
                    (&raw const addr).cast(),
                    u32::try_from(std::mem::size_of::<libc::sockaddr_un>()).unwrap_or(0),
                );
                if rc == 0 {
                    0
                } else {
                    *libc::__errno_location()
                }
            };
            libc::_exit(code);
        }
        let mut status = 0;
        assert_eq!(libc::waitpid(pid, &raw mut status, 0), pid);
        assert!(libc::WIFEXITED(status));
        match libc::WEXITSTATUS(status) {
            0 => Ok(()),
            100 => panic!("the child could not drop its privileges"),
            errno => Err(errno),
        }
    }
}

#[test]
fn the_sockets_mode_and_group_decide_who_connects() {
    if !privileged("daemon_socket::the_sockets_mode_and_group_decide_who_connects") {
        return;
    }
    let _serial = serial();
    let dir = TempDir::new("sockperm");
    // The directory is root's; others may traverse it, so only the socket's bits decide.
    let (mut daemon, _, path) = start_daemon(&dir, "mode = \"0660\"");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(
        connect_unprivileged(&path, 65534),
        Err(libc::EACCES),
        "a user outside the socket's group is refused"
    );
    assert!(daemon.terminate().is_some(), "the daemon stops on SIGTERM");
    assert!(
        !path.exists(),
        "the daemon removes its socket when it stops"
    );

    // Group 65534: its members may connect; root's own may too.
    let (mut daemon, _, path) = start_daemon(&dir, "mode = \"0660\"\ngroup = \"65534\"");
    assert_eq!(std::fs::metadata(&path).unwrap().gid(), 65534);
    assert_eq!(connect_unprivileged(&path, 65534), Ok(()));
    assert_eq!(connect_unprivileged(&path, 65533), Err(libc::EACCES));
    assert!(daemon.terminate().is_some(), "the daemon stops on SIGTERM");
}

#[test]
fn snapshots_show_a_close_wait_leak_and_watch_reads_through_the_daemon() {
    if !privileged(
        "daemon_socket::snapshots_show_a_close_wait_leak_and_watch_reads_through_the_daemon",
    ) {
        return;
    }
    let _serial = serial();
    let ns = NetNs::new("socksnap").unwrap();
    let dir = TempDir::new("socksnap");
    let (_daemon, _, path) = start_daemon(&dir, "");
    let inode = ns.inode();
    let mut watch = std::process::Command::new(env!("CARGO_BIN_EXE_observer"))
        .args([
            "watch",
            "--json",
            "--count",
            "3",
            "--netns",
            &inode.to_string(),
        ])
        .arg("--socket")
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(watch.stderr.take().unwrap());
    let mut banner = String::new();
    stderr.read_line(&mut banner).unwrap();
    assert!(banner.contains("through the daemon at"), "{banner}");
    let leaks = ns.enter(|| {
        (0..3)
            .map(|_| {
                let p = connected_pair(V4);
                drop(p.client);
                (p.listener, p.server)
            })
            .collect::<Vec<_>>()
    });
    let out = watch.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines.iter().all(|v| v["netns"] == inode), "{lines:#?}");

    // The read model counts the three CLOSE_WAIT sockets of the namespace.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut socket = UnixStream::connect(&path).unwrap();
        socket.write_all(b"{\"snapshot\":true}\n").unwrap();
        let mut line = String::new();
        BufReader::new(socket).read_line(&mut line).unwrap();
        let model: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(model["type"], "snapshot");
        let ours: Vec<&Value> = model["close_wait"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["netns"] == inode)
            .collect();
        if ours.len() == 3 {
            for field in [
                "lost_total",
                "gaps",
                "evicted_sockets",
                "socket_client_drops",
            ] {
                assert!(model[field].is_u64(), "{field}");
            }
            break;
        }
        assert!(Instant::now() < deadline, "{model:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(leaks);
}

/// A detached tmux session running one command, read by capturing its pane.
struct Tmux(String);

impl Tmux {
    fn run(args: &[&str]) -> String {
        observer_testkit::tmux::run(args).unwrap()
    }

    fn start(session: String, command: &str) -> Self {
        observer_testkit::tmux::start(&session, command).unwrap();
        Self(session)
    }

    fn keys(&self, keys: &str) {
        Self::run(&["send-keys", "-t", &self.0, keys]);
    }

    /// The pane once `done` holds of it, failing after 15 s.
    fn capture_until(&self, what: &str, done: &dyn Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = Self::run(&["capture-pane", "-p", "-t", &self.0]);
            if done(&screen) {
                return screen;
            }
            assert!(Instant::now() < deadline, "waiting for {what}:\n{screen}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for the session to end (its command exited).
    fn wait_gone(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::process::Command::new(TMUX)
            .args(["has-session", "-t", &self.0])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// In the CLOSE_WAIT pane, enter opens the selected (top) row: the oldest leak. Closing that
/// socket shows its last transitions as they happen; escape goes back to the pane.
fn details_follow_a_leak_as_it_closes(
    tmux: &Tmux,
    leaks: &mut Vec<(std::net::TcpListener, std::net::TcpStream)>,
    inode: u32,
    rows: &dyn Fn(&str) -> usize,
) {
    tmux.keys("Enter");
    let screen = tmux.capture_until("the connection's details", &|s| {
        s.contains("Connection 127.0.0.1:") && s.contains("Now: CLOSE_WAIT for")
    });
    let title = screen
        .lines()
        .find_map(|l| l.trim().strip_prefix("Connection "))
        .unwrap()
        .to_owned();
    let at = leaks
        .iter()
        .position(|(_, server)| {
            title
                == format!(
                    "{} -> {}, netns {inode}",
                    server.local_addr().unwrap(),
                    server.peer_addr().unwrap()
                )
        })
        .unwrap_or_else(|| panic!("no leak is {title}:\n{screen}"));
    drop(leaks.remove(at));
    let screen = tmux.capture_until("its close, as it happens", &|s| {
        s.contains("CLOSE_WAIT -> LAST_ACK after") && s.contains("LAST_ACK -> CLOSE")
    });
    assert!(screen.contains("esc back"), "{screen}");
    tmux.keys("Escape");
    tmux.capture_until("the CLOSE_WAIT pane again, one row fewer", &|s| {
        s.contains("[3 CLOSE_WAIT]") && rows(s) == 2
    });
}

/// `observer top` in a tmux pane against the daemon: a CLOSE_WAIT leak and a TIME_WAIT
/// pile-up made in a namespace appear with their numbers, and a leak's details follow it as it
/// closes.
#[test]
fn top_in_tmux_shows_a_close_wait_leak_and_a_timewait_pile_up() {
    if !privileged("daemon_socket::top_in_tmux_shows_a_close_wait_leak_and_a_timewait_pile_up")
        || !support::services::have(TMUX, "daemon_socket::top_in_tmux")
    {
        return;
    }
    let _serial = serial();
    // The namespace exists before the daemon starts: its port range is read at the seed.
    let ns = NetNs::new("socktop").unwrap();
    let dir = TempDir::new("socktop");
    let (_daemon, _, path) = start_daemon(&dir, "");
    let inode = ns.inode();
    let (mut leaks, timewait_port) = ns.enter(|| {
        let leaks: Vec<_> = (0..3)
            .map(|_| {
                let p = connected_pair(V4);
                drop(p.client);
                (p.listener, p.server)
            })
            .collect();
        // Twelve connections to one server, each closed by the client first: twelve
        // TIME_WAIT sockets on the client's ephemeral ports toward 127.0.0.1:port.
        let listener = std::net::TcpListener::bind((V4, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        for _ in 0..12 {
            let client = std::net::TcpStream::connect((V4, port)).unwrap();
            let (mut server, _) = listener.accept().unwrap();
            drop(client);
            assert_eq!(server.read(&mut [0_u8; 8]).unwrap(), 0);
        }
        (leaks, port)
    });
    let command = format!(
        "NO_COLOR=1 {} top --socket {} --netns {inode} --interval 0.3",
        env!("CARGO_BIN_EXE_observer"),
        path.display()
    );
    let tmux = Tmux::start(format!("observer-top-{}", std::process::id()), &command);
    let title = tmux.capture_until("the title", &|s| s.contains("observer top - daemon"));
    assert!(title.contains(&path.display().to_string()), "{title}");
    tmux.keys("3");
    let rows = |s: &str| {
        s.lines()
            .filter(|l| l.trim_end().ends_with(&format!(" {inode}")))
            .count()
    };
    let screen = tmux.capture_until("three CLOSE_WAIT rows", &|s| {
        s.contains("[3 CLOSE_WAIT]") && rows(s) == 3
    });
    assert!(screen.contains("AGE*"), "{screen}");
    details_follow_a_leak_as_it_closes(&tmux, &mut leaks, inode, &rows);
    tmux.keys("4");
    let destination = format!("127.0.0.1:{timewait_port}");
    let screen = tmux.capture_until("the TIME_WAIT destination", &|s| {
        s.contains("[4 TIME_WAIT]") && s.contains(&destination)
    });
    let row = screen
        .lines()
        .find(|l| l.contains(&destination))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(row[0], "12", "{screen}");
    tmux.keys("q");
    tmux.wait_gone("top did not quit on q");
    drop(leaks);
}
