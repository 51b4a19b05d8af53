//! `observer run` as operators run it, against real Prometheus and Alertmanager: every query
//! of the shipped dashboard and rules returns data, and a CLOSE_WAIT leak made in a network
//! namespace fires the built-in alert, reaches Alertmanager, and resolves when the socket
//! closes.

use crate::support;

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::net::UnixStream,
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{
    V4, V6, exposition,
    netns::{InputDrop, NetNs},
    privileged, promql,
    services::{Process, TempDir, encode, free_port, get, have, observer_run, wait_for},
};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";
const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
const NFT: &str = "/usr/sbin/nft";

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn json(addr: SocketAddr, path: &str) -> Option<Value> {
    let r = get(addr, path, None).ok()?;
    (r.status == 200).then(|| serde_json::from_str(&r.body).ok())?
}

pub(crate) fn start_alertmanager(dir: &TempDir) -> (Process, SocketAddr) {
    let config = dir.path("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: nowhere\n  group_wait: 1s\nreceivers:\n  - name: nowhere\n",
    )
    .unwrap();
    let addr = local(free_port());
    let process = Process::spawn(
        "alertmanager",
        Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path("am").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address="),
    );
    wait_for(Duration::from_secs(20), "alertmanager to answer", || {
        json(addr, "/api/v2/status")
    });
    (process, addr)
}

fn start_observer(dir: &TempDir, alertmanager: SocketAddr) -> (Process, SocketAddr) {
    let addr = local(free_port());
    let config = dir.path("observer.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[metrics]
listen = "{addr}"

[alerts]
evaluation_interval = "500ms"
file = "{file}"

[alerts.alertmanager]
url = "http://{alertmanager}"
resend_every = "2s"

# The built-in rule, with a threshold a test can wait for.
[[alerts.rules]]
name = "TcpCloseWaitStuck"
kind = "close_wait_age"
older_than = "2s"
labels = {{ team = "tests" }}
"#,
            file = dir.path("alerts.jsonl").display()
        ),
    )
    .unwrap();
    let process = observer_run(&config, addr);
    (process, addr)
}

fn start_prometheus(dir: &TempDir, observer: SocketAddr) -> (Process, SocketAddr) {
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/prometheus/observer-rules.yml");
    let config = dir.path("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: observer\n    static_configs:\n      - targets: ['{observer}']\n",
            rules.display()
        ),
    )
    .unwrap();
    let addr = local(free_port());
    let process = Process::spawn(
        "prometheus",
        Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}")),
    );
    (process, addr)
}

/// The result vector of an instant query, once it has one.
fn query(prometheus: SocketAddr, expr: &str) -> Option<Vec<Value>> {
    let v = json(prometheus, &format!("/api/v1/query?query={}", encode(expr)))?;
    assert_eq!(v["status"], "success", "query {expr}: {v}");
    let result = v["data"]["result"].as_array()?.clone();
    (!result.is_empty()).then_some(result)
}

/// Alertmanager's active TcpCloseWaitStuck alert for `port` in `netns`.
pub(crate) fn alertmanager_alert(am: SocketAddr, netns: u32, port: u16) -> Option<Value> {
    let filter = encode("alertname=\"TcpCloseWaitStuck\"");
    let alerts = json(am, &format!("/api/v2/alerts?filter={filter}"))?;
    alerts
        .as_array()?
        .iter()
        .find(|a| is_socket(a, netns, port))
        .cloned()
}

/// Whether an alert (or a JSON-lines record) is about the socket on `port` in `netns`.
fn is_socket(alert: &Value, netns: u32, port: u16) -> bool {
    let label = |name: &str| alert["labels"][name].as_str().map(str::to_owned);
    label("netns") == Some(netns.to_string()) && label("local_port") == Some(port.to_string())
}

/// Traffic for every panel: a connection each way of closing, an abort, one closed before
/// accept(), and a CLOSE_WAIT leak per family (returned: the leaking server sockets); a
/// SYN-ACK retransmission and a connect timeout.
fn traffic(ns: &NetNs) -> (Vec<(TcpStream, u16)>, Vec<support::Conn>) {
    lost_handshakes(ns);
    let known = known_close_wait_durations(ns);
    let leaks = ns.enter(|| {
        let mut leaks = Vec::new();
        for addr in [V4, V6] {
            support::client_closes_first(addr);
            support::client_aborts(addr);
            // Closed before accept(): the client gives up while it waits in the queue.
            let listener = TcpListener::bind((addr, 0)).unwrap();
            let port = listener.local_addr().unwrap().port();
            // Its CLOSE_WAIT lasts from the FIN to the listener's close: 600 ms, in none of
            // the buckets that `known_close_wait_durations` fills, even when a slow (emulated)
            // machine handles the FIN tens of milliseconds late.
            drop(TcpStream::connect((addr, port)).unwrap());
            std::thread::sleep(Duration::from_millis(600));
            drop(listener);
            // The leak: the client closes, the server never does.
            let support::Pair {
                client,
                mut server,
                conn,
                ..
            } = support::connected_pair(addr);
            drop(client);
            assert_eq!(server.read(&mut [0u8; 8]).unwrap(), 0, "server sees EOF");
            leaks.push((server, conn.server_port));
        }
        leaks
    });
    (leaks, known)
}

/// CLOSE_WAIT that lasts a known time: 4 sockets for 20 ms, 6 for 200 ms (the server closes
/// that long after the client's FIN). Other sockets of the host may wait in CLOSE_WAIT as long
/// (an HTTP server of the test handling a client's close late on a slow, emulated machine):
/// those are counted from the daemon's event stream ([`CloseWaits`]).
const CLOSE_WAIT_SHORT: (f64, f64, u64) = (0.01, 0.05, 4);
const CLOSE_WAIT_LONG: (f64, f64, u64) = (0.1, 0.5, 6);

fn known_close_wait_durations(ns: &NetNs) -> Vec<support::Conn> {
    ns.enter(|| {
        let mut known = Vec::new();
        for (count, ms) in [(CLOSE_WAIT_SHORT.2, 20), (CLOSE_WAIT_LONG.2, 200)] {
            for _ in 0..count {
                let support::Pair {
                    client,
                    mut server,
                    conn,
                    ..
                } = support::connected_pair(V4);
                drop(client);
                assert_eq!(server.read(&mut [0u8; 8]).unwrap(), 0, "server sees EOF");
                std::thread::sleep(Duration::from_millis(ms));
                drop(server);
                known.push(conn);
            }
        }
        known
    })
}

/// Every CLOSE_WAIT duration the daemon reports on its socket's event stream, in all
/// namespaces: what the host's other sockets add to the duration histogram beside the test's
/// known ones.
struct CloseWaits {
    seen: Arc<Mutex<Vec<CloseWait>>>,
}

/// One socket's stay in CLOSE_WAIT, as the event stream reported it.
struct CloseWait {
    netns: u64,
    local_port: u64,
    remote_port: u64,
    ns: u64,
}

impl CloseWaits {
    fn subscribe(path: &Path) -> Self {
        let mut socket = UnixStream::connect(path).expect("connecting to the daemon's socket");
        socket.write_all(b"{\"stream\":\"events\"}\n").unwrap();
        let mut reader = BufReader::new(socket);
        let mut first = String::new();
        reader.read_line(&mut first).unwrap();
        assert_eq!(first, "{\"type\":\"subscribed\"}\n");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let out = Arc::clone(&seen);
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).expect("a JSON line");
                // As the histogram takes them: a whole stay in CLOSE_WAIT, seen from its start.
                if v["type"] == "transition"
                    && v["old_state"] == "CLOSE_WAIT"
                    && v["prev_state_lower_bound"] == false
                    && let Some(ns) = v["prev_state_ns"].as_u64()
                {
                    let field = |f: &str| v[f].as_u64().unwrap_or(0);
                    out.lock().unwrap().push(CloseWait {
                        netns: field("netns"),
                        local_port: field("local_port"),
                        remote_port: field("remote_port"),
                        ns,
                    });
                }
            }
        });
        Self { seen }
    }

    /// Durations in `(low, high]` seconds: with `known_only`, those of the `known` sockets of
    /// `netns`; else the others.
    fn count(
        &self,
        netns: u64,
        known: &[support::Conn],
        (low, high): (f64, f64),
        known_only: bool,
    ) -> u64 {
        let is_known = |c: &CloseWait| {
            c.netns == netns
                && known.iter().any(|k| {
                    (u64::from(k.server_port), u64::from(k.client_port))
                        == (c.local_port, c.remote_port)
                })
        };
        #[expect(clippy::cast_precision_loss, reason = "durations of seconds")]
        let inside = |c: &CloseWait| {
            let s = c.ns as f64 / 1e9;
            low < s && s <= high
        };
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|d| inside(d) && is_known(d) == known_only)
            .count() as u64
    }
}

/// A handshake whose final ACK is dropped (the server retransmits its SYN-ACK after 1 s), and
/// a connect() whose SYNs are all dropped (it times out after one retry).
fn lost_handshakes(ns: &NetNs) {
    let (listener, port) = ns.enter(|| {
        let listener = TcpListener::bind((V4, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        (listener, port)
    });
    {
        let _drop = InputDrop::new(
            ns,
            &format!("tcp dport {port} tcp flags & (syn | ack) == ack drop"),
        );
        let client = ns.enter(|| TcpStream::connect((V4, port)).unwrap());
        std::thread::sleep(Duration::from_millis(1500));
        drop(client);
    }
    drop(listener);
    ns.sysctl("net.ipv4.tcp_syn_retries", "1").unwrap();
    let _drop = InputDrop::new(ns, "tcp dport 9 drop");
    let err = ns
        .enter(|| TcpStream::connect((V4, 9)))
        .expect_err("every SYN is dropped");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
}

#[test]
fn prometheus_scrapes_and_alertmanager_receives_a_close_wait_leak() {
    const TEST: &str = "prometheus_scrapes_and_alertmanager_receives_a_close_wait_leak";
    if !privileged(TEST)
        || ![PROMETHEUS, PROMTOOL, ALERTMANAGER, NFT]
            .iter()
            .all(|b| have(b, TEST))
    {
        return;
    }
    let dir = TempDir::new("run");
    let (_am_process, am) = start_alertmanager(&dir);
    let (mut observer, metrics) = start_observer(&dir, am);
    let close_waits = CloseWaits::subscribe(&dir.path("observer.sock"));
    let (_prometheus_process, prometheus) = start_prometheus(&dir, metrics);
    let ns = NetNs::new("run").unwrap();
    let netns = ns.inode();
    let (leaks, known) = traffic(&ns);

    // Alertmanager receives one alert per leaked socket, with its owner and addresses.
    for (_, port) in &leaks {
        let alert = wait_for(
            Duration::from_secs(30),
            "the CLOSE_WAIT alert in Alertmanager",
            || alertmanager_alert(am, netns, *port),
        );
        let labels = &alert["labels"];
        assert_eq!(labels["pid"], std::process::id().to_string(), "{alert}");
        assert_eq!(labels["severity"], "warning");
        assert_eq!(labels["team"], "tests");
        assert!(
            labels["remote_port"]
                .as_str()
                .unwrap()
                .parse::<u16>()
                .is_ok()
        );
        assert!(
            alert["annotations"]["description"]
                .as_str()
                .unwrap()
                .contains("CLOSE_WAIT")
        );
        assert!(alert["generatorURL"].as_str().unwrap().ends_with("/alerts"));
    }
    check_daemon_endpoints(metrics);
    check_histograms(metrics, prometheus, &|low, high, known_only| {
        close_waits.count(u64::from(netns), &known, (low, high), known_only)
    });
    check_queries_in_prometheus(prometheus);

    // Closing the sockets resolves the alerts, in Alertmanager too.
    let ports: Vec<u16> = leaks.iter().map(|(_, p)| *p).collect();
    drop(leaks);
    for port in &ports {
        wait_for(
            Duration::from_secs(30),
            "the alert to resolve in Alertmanager",
            || alertmanager_alert(am, netns, *port).is_none().then_some(()),
        );
    }
    let file = std::fs::read_to_string(dir.path("alerts.jsonl")).unwrap();
    let records: Vec<Value> = file
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for port in &ports {
        let statuses: Vec<&str> = records
            .iter()
            .filter(|r| is_socket(r, netns, *port))
            .map(|r| r["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["firing", "resolved"], "{file}");
    }
    let log = observer.log();
    assert!(log.contains("alert TcpCloseWaitStuck firing"), "{log}");
    assert!(log.contains("alert TcpCloseWaitStuck resolved"), "{log}");

    let status = observer.terminate().expect("observer exits on SIGTERM");
    assert!(
        status.success(),
        "observer exited with {status}: {}",
        observer.log()
    );
}

/// /alerts lists the alert; /metrics speaks OpenMetrics to Prometheus and the Prometheus text
/// format to others, which `promtool check metrics` finds clean.
fn check_daemon_endpoints(metrics: SocketAddr) {
    let page = get(metrics, "/alerts", None).unwrap();
    assert!(page.body.contains("TcpCloseWaitStuck"), "{}", page.body);
    let om = get(
        metrics,
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    )
    .unwrap();
    assert!(
        om.content_type.starts_with("application/openmetrics-text"),
        "{}",
        om.content_type
    );
    assert!(om.body.ends_with("# EOF\n"));
    assert!(
        om.body.lines().any(|l| l
            .starts_with("observer_alerts{alertname=\"TcpCloseWaitStuck\",alertstate=\"firing\"}")
            && !l.ends_with(" 0")),
        "{}",
        om.body
    );
    let text = get(metrics, "/metrics", None).unwrap();
    assert!(text.content_type.starts_with("text/plain; version=0.0.4"));
    let mut promtool = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .output_with_stdin(text.body.as_bytes());
    assert!(
        promtool.0.success(),
        "promtool check metrics: {}",
        promtool.1
    );
    promtool.1.retain(|c| !c.is_whitespace());
    assert_eq!(promtool.1, "", "promtool check metrics has remarks");
}

/// Every histogram of /metrics is valid, the known CLOSE_WAIT durations are in their buckets,
/// and Prometheus's `histogram_quantile` over them is what the buckets say.
/// `stream(low, high, known_only)`: the CLOSE_WAIT durations in `(low, high]` seconds that the
/// daemon's event stream reported, of the test's known sockets or of the host's others.
fn check_histograms(
    metrics: SocketAddr,
    prometheus: SocketAddr,
    stream: &dyn Fn(f64, f64, bool) -> u64,
) {
    let others = |low, high| stream(low, high, false);
    // The histogram and the stream are read at different instants: another socket may end its
    // CLOSE_WAIT between the two, so they are read again until they agree.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = get(metrics, "/metrics", None).unwrap().body;
        let all = exposition::histograms(
            &exposition::samples(&text),
            "observer_tcp_state_duration_seconds",
        );
        assert_eq!(all.len(), 12, "one histogram per state");
        let close_wait =
            std::collections::BTreeMap::from([("state".to_owned(), "CLOSE_WAIT".to_owned())]);
        let cw = &all[&close_wait];
        let wrong: Vec<String> = [CLOSE_WAIT_SHORT, CLOSE_WAIT_LONG]
            .iter()
            .filter_map(|&(low, high, n)| {
                let (ours, other) = (stream(low, high, true), others(low, high));
                (cw.between(low, high) != n + other || ours != n).then(|| {
                    format!(
                        "CLOSE_WAIT in ({low}, {high}]: {} in the histogram, expected the \
                         test's {n} (the event stream showed {ours} of them there) and {other} \
                         of other sockets",
                        cw.between(low, high)
                    )
                })
            })
            .collect();
        if wrong.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{wrong:?}: {cw:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Prometheus, at one instant: the buckets it scraped, and its quantile over them. The
    // quantile taken is the rank of the 4th of the 6 long ones, inside (0.1, 0.5].
    let series = "observer_tcp_state_duration_seconds_bucket{state=\"CLOSE_WAIT\"}";
    let at = wait_for(
        Duration::from_secs(30),
        "Prometheus to scrape the durations",
        || {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
                - 1.0;
            let scraped = bucket_values(prometheus, series, now)?;
            let (low, high, n) = CLOSE_WAIT_LONG;
            (scraped.between(low, high) == n + others(low, high)).then_some((now, scraped))
        },
    );
    let (time, scraped) = at;
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let q = (scraped.at(CLOSE_WAIT_LONG.0) + 4) as f64 / scraped.count as f64;
    let expected = scraped.quantile(q);
    assert!(
        (CLOSE_WAIT_LONG.0..=CLOSE_WAIT_LONG.1).contains(&expected),
        "{expected} from {scraped:?}"
    );
    let expr = format!("histogram_quantile({q}, {series})");
    let got = instant_value(prometheus, &expr, time).expect("histogram_quantile has a value");
    assert!(
        (got - expected).abs() < 1e-9,
        "histogram_quantile({q}) is {got} in Prometheus, {expected} from its buckets {scraped:?}"
    );
}

/// The buckets of one histogram series as Prometheus holds them at `time` (Unix seconds).
fn bucket_values(prometheus: SocketAddr, series: &str, time: f64) -> Option<exposition::Histogram> {
    let v = json(
        prometheus,
        &format!("/api/v1/query?query={}&time={time}", encode(series)),
    )?;
    let mut buckets: Vec<(f64, u64)> = v["data"]["result"]
        .as_array()?
        .iter()
        .map(|r| {
            let le = r["metric"]["le"].as_str().unwrap();
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            let value: f64 = r["value"][1].as_str().unwrap().parse().unwrap();
            (bound, exposition::count(value))
        })
        .collect();
    if buckets.is_empty() {
        return None;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let count = buckets.last()?.1;
    Some(exposition::Histogram {
        buckets,
        sum: 0.0,
        count,
    })
}

/// The value of a query with one result, at `time` (Unix seconds).
fn instant_value(prometheus: SocketAddr, expr: &str, time: f64) -> Option<f64> {
    let v = json(
        prometheus,
        &format!("/api/v1/query?query={}&time={time}", encode(expr)),
    )?;
    v["data"]["result"].as_array()?.first()?["value"][1]
        .as_str()?
        .parse()
        .ok()
}

/// Every dashboard query, and the query side of every shipped rule, returns data from a real
/// Prometheus scraping the daemon; every shipped rule evaluates without error.
fn check_queries_in_prometheus(prometheus: SocketAddr) {
    wait_for(
        Duration::from_secs(30),
        "Prometheus to scrape the daemon",
        || query(prometheus, "up{job=\"observer\"} == 1"),
    );
    let mut queries = promql::dashboard_queries();
    queries.extend(
        promql::rule_queries()
            .into_iter()
            .map(|(name, _, lhs)| (format!("rule {name}"), lhs)),
    );
    for (what, expr) in &queries {
        wait_for(
            Duration::from_secs(30),
            &format!("data for {what}: {expr}"),
            || query(prometheus, expr),
        );
    }
    let rules = wait_for(
        Duration::from_secs(20),
        "Prometheus to evaluate the rules",
        || {
            let v = json(prometheus, "/api/v1/rules")?;
            let rules: Vec<Value> = v["data"]["groups"]
                .as_array()?
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            (!rules.is_empty()
                && rules
                    .iter()
                    .all(|r| r["lastEvaluation"] != "0001-01-01T00:00:00Z"))
            .then_some(rules)
        },
    );
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    assert_eq!(rules.len(), promql::rule_names().len());
}

#[test]
fn a_bad_config_is_rejected_with_its_line_and_field() {
    let dir = TempDir::new("bad-config");
    let path = dir.path("bad.toml");
    std::fs::write(
        &path,
        "[alerts]\nevaluation_interval = \"5s\"\n\n[[alerts.rules]]\nname = \"Leak\"\nkind = \"close_wait_age\"\nolder_than = \"5 parsecs\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_observer"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("bad.toml:7:"), "names the line: {stderr}");
    assert!(stderr.contains("older_than"), "names the field: {stderr}");
}

/// `Command::output` with bytes written to its stdin: (status, stdout + stderr).
trait OutputWithStdin {
    fn output_with_stdin(&mut self, input: &[u8]) -> (std::process::ExitStatus, String);
}

impl OutputWithStdin for Command {
    fn output_with_stdin(&mut self, input: &[u8]) -> (std::process::ExitStatus, String) {
        use std::io::Write as _;
        let mut child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status, text)
    }
}
