//! Dead peers and overloaded listeners, on the real kernel: two hosts joined by a veth pair in
//! network namespaces the tests create, packets dropped with nftables on the input hook.
//!
//! - a peer that stops answering mid-transfer makes a half-open suspect, then a retransmission
//!   timeout (`tcp_retries2` lowered in the client's namespace so it takes seconds);
//! - a silent peer of an idle connection with short keepalive timers: a keepalive timeout;
//! - retransmissions that recover when the drops are lifted: the suspect clears, no timeout;
//! - a listener that never accepts: its queue reaches the limit, overflows are counted and the
//!   daemon's accept-queue alert fires.

use crate::support;
use observer::event::Netns;

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use observer::{
    event::Family,
    track::{EndCause, Report, RetransmitPhase},
};
use observer_common::TcpState;
use serde_json::Value;
use support::{
    Recorder,
    netns::{InputDrop, NetNs, VethPair},
    privileged, serial,
    services::{Process, TempDir, free_port, get, have, observer_run, wait_for},
};

const S: u64 = 1_000_000_000;

fn families(test: &str, scenario: fn(Family)) {
    if !privileged(test) || !have("/usr/sbin/nft", test) {
        return;
    }
    let _serial = serial();
    scenario(Family::Ipv4);
    scenario(Family::Ipv6);
}

/// The client's and the server's address of the pair in `family`.
fn addresses(pair: &VethPair, family: Family) -> (IpAddr, IpAddr) {
    match family {
        Family::Ipv4 => (pair.client_v4, pair.server_v4),
        Family::Ipv6 => (pair.client_v6, pair.server_v6),
    }
}

/// A drop rule for everything from `addr`, counting what it drops.
fn from(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => format!("ip saddr {a} counter drop"),
        IpAddr::V6(a) => format!("ip6 saddr {a} counter drop"),
    }
}

/// The kernel's view of a connection that did not end as expected: the client's sockets with
/// their timers, its retransmission counters, and what the server's drop rule dropped.
fn kernel_view(pair: &VethPair) -> String {
    [
        pair.client.capture("ss", &["-tinoe"]),
        pair.client
            .capture("nstat", &["-asz", "TcpRetransSegs", "TcpExtTCPTimeouts"]),
        pair.server
            .capture("nft", &["list", "table", "inet", "observer_test"]),
    ]
    .concat()
}

/// A connection from the client namespace to the server namespace, with some data
/// acknowledged: (client, server's accepted socket).
fn connect(pair: &VethPair, family: Family) -> (TcpStream, TcpStream) {
    let (client_addr, server_addr) = addresses(pair, family);
    let listener = pair
        .server
        .enter(|| TcpListener::bind((server_addr, 0)).unwrap());
    let port = listener.local_addr().unwrap().port();
    let mut client = pair.client.enter(|| {
        let c = TcpStream::connect((server_addr, port)).unwrap();
        assert_eq!(c.local_addr().unwrap().ip(), client_addr);
        c
    });
    let (mut server, _) = listener.accept().unwrap();
    client.write_all(b"hello").unwrap();
    let mut buf = [0u8; 5];
    server.read_exact(&mut buf).unwrap();
    (client, server)
}

/// Reports about the socket whose local end is `local`.
fn about(reports: &[Report], local: SocketAddr) -> Vec<Report> {
    reports
        .iter()
        .filter(|r| match r {
            Report::Retransmits { tuple, .. } => tuple.local == local,
            Report::ConnectionError { error, .. } => error.local == local,
            _ => false,
        })
        .copied()
        .collect()
}

fn ended(reports: &[Report], local: SocketAddr) -> bool {
    about(reports, local)
        .iter()
        .any(|r| matches!(r, Report::ConnectionError { .. }))
}

#[test]
fn a_peer_that_goes_silent_is_a_half_open_suspect_then_a_retransmit_timeout() {
    families(
        "a_peer_that_goes_silent_is_a_half_open_suspect_then_a_retransmit_timeout",
        |family| {
            let pair = VethPair::new("silent").unwrap();
            // About 3 s of retransmissions from a 200 ms RTO before the kernel gives up.
            pair.client.sysctl("net.ipv4.tcp_retries2", "3").unwrap();
            let mut recorder = Recorder::start(pair.client.inode());
            recorder.tracker.set_half_open_after(S);
            let (mut client, _server) = connect(&pair, family);
            let local = client.local_addr().unwrap();
            let (client_addr, _) = addresses(&pair, family);
            let _drop = InputDrop::new(&pair.server, &from(client_addr));
            client.write_all(&[7u8; 1000]).unwrap();

            let (held, reports) =
                recorder.reports_within(Duration::from_secs(30), |r| ended(r, local));
            let mine = about(reports, local);
            assert!(
                held,
                "{family:?}: the connection's end was not reported within 30 s: {mine:#?}\n{}",
                kernel_view(&pair)
            );
            let phases: Vec<&str> = mine
                .iter()
                .filter_map(|r| match r {
                    Report::Retransmits { phase, .. } => Some(phase.name()),
                    _ => None,
                })
                .collect();
            assert_eq!(
                phases,
                ["retransmitting", "half_open_suspect"],
                "{family:?}: {mine:#?}"
            );
            let Some(Report::ConnectionError {
                error,
                cause,
                retransmits,
                owner,
                ..
            }) = mine.last()
            else {
                panic!("{family:?}: no error last: {mine:#?}");
            };
            assert_eq!(*cause, EndCause::RetransmitTimeout, "{error:?}");
            assert_eq!(error.error, 110, "ETIMEDOUT");
            assert_eq!(error.state, Some(TcpState::Established));
            assert_eq!(error.remote.ip(), addresses(&pair, family).1);
            let (count, duration_ns) = retransmits.expect("the streak that timed out");
            assert!(count >= 3, "{count} retransmissions");
            assert!(duration_ns >= S, "{duration_ns} ns of retransmissions");
            assert_eq!(owner.map(|o| o.pid), Some(std::process::id()));
            let ends = recorder.tracker.connection_ends();
            assert_eq!(ends.of_cause(EndCause::RetransmitTimeout), 1);
            assert_eq!(ends.timeouts(), 1);
            // The application learns it too.
            let err = client.read(&mut [0u8; 8]).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ETIMEDOUT));
        },
    );
}

#[test]
fn an_idle_connection_to_a_silent_peer_ends_by_keepalive_timeout() {
    families(
        "an_idle_connection_to_a_silent_peer_ends_by_keepalive_timeout",
        |family| {
            let pair = VethPair::new("keepalive").unwrap();
            let mut recorder = Recorder::start(pair.client.inode());
            let (client, _server) = connect(&pair, family);
            socket2::SockRef::from(&client)
                .set_tcp_keepalive(
                    &socket2::TcpKeepalive::new()
                        .with_time(Duration::from_secs(1))
                        .with_interval(Duration::from_secs(1))
                        .with_retries(2),
                )
                .unwrap();
            let local = client.local_addr().unwrap();
            let (client_addr, _) = addresses(&pair, family);
            let _drop = InputDrop::new(&pair.server, &from(client_addr));

            let reports = recorder.reports_until(Duration::from_secs(20), |r| ended(r, local));
            let mine = about(reports, local);
            assert_eq!(mine.len(), 1, "{family:?}: no retransmissions: {mine:#?}");
            let Report::ConnectionError {
                error,
                cause,
                retransmits,
                ..
            } = mine[0]
            else {
                panic!("{mine:#?}");
            };
            assert_eq!(cause, EndCause::KeepaliveTimeout, "{error:?}");
            assert_eq!(error.error, 110, "ETIMEDOUT");
            assert_eq!(error.state, Some(TcpState::Established));
            assert_eq!(error.probes_out, Some(2));
            assert_eq!(retransmits, None);
            assert_eq!(
                recorder
                    .tracker
                    .connection_ends()
                    .of_cause(EndCause::KeepaliveTimeout),
                1
            );
        },
    );
}

#[test]
fn retransmissions_that_recover_clear_the_suspect_without_a_timeout() {
    families(
        "retransmissions_that_recover_clear_the_suspect_without_a_timeout",
        |family| {
            let pair = VethPair::new("recover").unwrap();
            let mut recorder = Recorder::start(pair.client.inode());
            recorder.tracker.set_half_open_after(S);
            let (mut client, mut server) = connect(&pair, family);
            let local = client.local_addr().unwrap();
            let (client_addr, _) = addresses(&pair, family);
            let drop = InputDrop::new(&pair.server, &from(client_addr));
            client.write_all(&[7u8; 1000]).unwrap();
            recorder.reports_until(Duration::from_secs(10), |r| {
                about(r, local).iter().any(|r| {
                    matches!(
                        r,
                        Report::Retransmits {
                            phase: RetransmitPhase::Suspect { .. },
                            ..
                        }
                    )
                })
            });
            assert_eq!(recorder.tracker.half_open_suspects(S).len(), 1);
            drop_rule(drop);
            // The next retransmission gets through; the data arrives.
            let mut buf = [0u8; 1000];
            server.read_exact(&mut buf).unwrap();

            let reports = recorder.reports_until(Duration::from_secs(20), |r| {
                about(r, local).iter().any(|r| {
                    matches!(
                        r,
                        Report::Retransmits {
                            phase: RetransmitPhase::Recovered { .. },
                            ..
                        }
                    )
                })
            });
            let mine = about(reports, local);
            let Some(Report::Retransmits {
                phase: RetransmitPhase::Recovered { retransmits, .. },
                state,
                ..
            }) = mine.last()
            else {
                panic!("{family:?}: {mine:#?}");
            };
            assert!(*retransmits >= 2, "{retransmits}");
            assert_eq!(*state, Some(TcpState::Established));
            assert!(
                !mine
                    .iter()
                    .any(|r| matches!(r, Report::ConnectionError { .. })),
                "{mine:#?}"
            );
            let netns = pair.client.inode();
            let suspects: Vec<_> = recorder
                .tracker
                .half_open_suspects(0)
                .into_iter()
                .filter(|s| s.tuple.netns == Netns::new(netns))
                .collect();
            assert!(suspects.is_empty(), "{suspects:#?}\n{mine:#?}");
            assert_eq!(recorder.tracker.connection_ends().timeouts(), 0);
            assert_eq!(recorder.tracker.retransmit_counts().recovered, 1);
            // Still a working connection.
            client.write_all(b"again").unwrap();
            server.read_exact(&mut buf[..5]).unwrap();
        },
    );
}

fn drop_rule(rule: InputDrop<'_>) {
    drop(rule);
}

/// `observer run` with one accept-queue rule and the listener's port labelled.
fn start_observer(dir: &TempDir, port: u16) -> (Process, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = dir.path("observer.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[metrics]
listen = "{addr}"
ports = [{port}]

[tracker]
listen_every = "1s"
state_file = ""

[alerts]
evaluation_interval = "500ms"
builtin_rules = false

[[alerts.rules]]
name = "TcpAcceptQueueFull"
kind = "accept_queue_usage"
above_fraction = 0.9
for = "1s"
"#
        ),
    )
    .unwrap();
    let observer = observer_run(&config, addr);

    (observer, addr)
}

fn metric(body: &str, name: &str, labels: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(&format!("{name}{labels} ")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn a_listener_that_never_accepts_fills_its_queue_and_fires_the_alert() {
    const TEST: &str = "a_listener_that_never_accepts_fills_its_queue_and_fires_the_alert";
    if !privileged(TEST) {
        return;
    }
    let _serial = serial();
    let ns = NetNs::new("backlog").unwrap();
    let (listener, port) = ns.enter(|| {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        s.listen(2).unwrap();
        let port = s.local_addr().unwrap().as_socket().unwrap().port();
        (s, port)
    });

    let dir = TempDir::new("backlog");
    let (mut observer, addr) = start_observer(&dir, port);

    // Clients keep connecting; none is accepted. Bounded: 12 clients, each once.
    let clients: Vec<socket2::Socket> = ns.enter(|| {
        (0..12)
            .map(|_| {
                let c = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .unwrap();
                c.set_nonblocking(true).unwrap();
                let _ = c.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into());
                std::thread::sleep(Duration::from_millis(20));
                c
            })
            .collect()
    });

    let port_label = format!("{{port=\"{port}\"}}");
    let body = wait_for(
        Duration::from_secs(20),
        "the full queue and its overflows in /metrics",
        || {
            let body = get(addr, "/metrics", None).ok()?.body;
            let queued = metric(&body, "observer_tcp_listen_queue_length", &port_label)?;
            let overflows = metric(&body, "observer_tcp_listen_overflows_total", "{}")?;
            (queued >= 3.0 && overflows > 0.0).then_some(body)
        },
    );
    // Linux lets the accept queue hold one more than the backlog.
    assert_eq!(
        metric(&body, "observer_tcp_listen_queue_length", &port_label),
        Some(3.0)
    );
    assert_eq!(
        metric(&body, "observer_tcp_listen_queue_limit", &port_label),
        Some(2.0)
    );
    assert!(metric(&body, "observer_tcp_listen_queue_usage_ratio", "{}") >= Some(1.5));
    assert!(metric(&body, "observer_tcp_listen_drops_total", "{}") > Some(0.0));
    // Counting request sockets costs next to nothing on this host: every sample (1 s) does it.
    let age = metric(&body, "observer_tcp_listen_syn_recv_age_seconds", "{}");
    assert!(age.is_some_and(|a| (0.0..2.0).contains(&a)), "{age:?}");

    let port_text = port.to_string();
    let alert = wait_for(Duration::from_secs(20), "the alert to fire", || {
        let page = get(addr, "/alerts", None).ok()?;
        let alerts: Value = serde_json::from_str(&page.body).ok()?;
        alerts.as_array()?.iter().find_map(|a| {
            (a["labels"]["alertname"] == "TcpAcceptQueueFull"
                && a["labels"]["port"] == port_text.as_str()
                && a["state"] == "firing")
                .then(|| a.clone())
        })
    });
    assert_eq!(alert["labels"]["netns"], ns.inode().to_string());
    assert_eq!(alert["labels"]["local_address"], "127.0.0.1");
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("holds 3 connections, 150% of its backlog of 2"),
        "{alert}"
    );
    drop((clients, listener));
    assert_eq!(
        observer.terminate().and_then(|s| s.code()),
        Some(0),
        "{}",
        observer.log()
    );
}
