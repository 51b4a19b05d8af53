//! Workloads named end to end by `observer run`: sockets made in cgroups named as systemd and
//! containerd under Kubernetes name them, with the pod from a kubelet log directory the test
//! makes. Checked in /metrics and in the alert Alertmanager receives, against what the test
//! made.

use std::{
    collections::BTreeSet,
    fs,
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{
    cgroups::{cgroup2, own_cgroup},
    run_daemon::{alertmanager_alert, start_alertmanager},
    support::{
        exposition::{Sample, count, samples},
        netns::NetNs,
        privileged, serial,
        services::{Process, TempDir, free_port, get, have, observer_run, wait_for},
    },
};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
/// Workloads with a label of their own in this test's daemon.
const MAX_LABELS: usize = 16;
/// Workloads made beyond the web unit and the pod, each with one connection.
const MANY: usize = 300;

/// Cgroups the test made, removed (deepest first) when it ends however it ends.
struct Made(Vec<PathBuf>);

impl Made {
    fn dir(&mut self, path: PathBuf) -> PathBuf {
        let _ = fs::remove_dir(&path);
        fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        self.0.push(path.clone());
        path
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Moves this process back to its own cgroup when dropped.
struct Home(PathBuf);

impl Drop for Home {
    fn drop(&mut self) {
        move_to(&self.0);
    }
}

fn move_to(cgroup: &Path) {
    fs::write(cgroup.join("cgroup.procs"), std::process::id().to_string())
        .unwrap_or_else(|e| panic!("moving into {}: {e}", cgroup.display()));
}

/// Runs `f` with this whole process in `cgroup`: the sockets `f` makes carry it for life
/// (`sk_cgrp_data` is set when a socket is created), whatever the process does afterwards.
fn inside<T>(cgroup: &Path, home: &Path, f: impl FnOnce() -> T) -> T {
    move_to(cgroup);
    let _home = Home(home.to_path_buf());
    f()
}

fn start_observer(
    dir: &TempDir,
    kubelet: &Path,
    alertmanager: SocketAddr,
) -> (Process, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = dir.path("observer.toml");
    fs::write(
        &config,
        format!(
            r#"
[metrics]
listen = "{addr}"
max_workload_labels = {MAX_LABELS}

[workloads]
kubelet_logs = "{kubelet}"

[alerts]
evaluation_interval = "500ms"

[alerts.alertmanager]
url = "http://{alertmanager}"
resend_every = "2s"

[[alerts.rules]]
name = "TcpCloseWaitStuck"
kind = "close_wait_age"
older_than = "1s"
"#,
            kubelet = kubelet.display()
        ),
    )
    .unwrap();
    (observer_run(&config, addr), addr)
}

fn scrape(metrics: SocketAddr) -> Vec<Sample> {
    samples(&get(metrics, "/metrics", None).unwrap().body)
}

/// The value of `name` with exactly `labels`, if exported.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| count(s.value))
}

/// `connect()` from this process to `server` in `ns`, and the server's end of it.
fn connection(ns: &NetNs, listener: &TcpListener) -> (TcpStream, TcpStream) {
    let server = listener.local_addr().unwrap();
    let client = ns.enter(|| TcpStream::connect(server).unwrap());
    let (accepted, _) = listener.accept().unwrap();
    (client, accepted)
}

/// Waits until /metrics names the unit's 3 CLOSE_WAIT sockets and its listener, and the pod's
/// abortive close and close before accept().
fn wait_for_workload_metrics(metrics: SocketAddr, unit: &str, pod: &str, observer: &Process) {
    let expected = |s: &[Sample]| {
        let web = [("workload", unit)];
        let web_close_wait = [("workload", unit), ("state", "CLOSE_WAIT")];
        let web_listen = [("workload", unit), ("state", "LISTEN")];
        let pod_rst = [
            ("workload", pod),
            ("direction", "sent"),
            ("class", "abortive_close"),
        ];
        let pod_closed = [("workload", pod), ("how", "peer_closed")];
        [
            value(s, "observer_tcp_close_wait_sockets_by_workload", &web),
            value(s, "observer_tcp_sockets_by_workload", &web_close_wait),
            value(s, "observer_tcp_sockets_by_workload", &web_listen),
            value(s, "observer_tcp_resets_by_workload_total", &pod_rst),
            value(
                s,
                "observer_tcp_closed_before_accept_by_workload_total",
                &pod_closed,
            ),
        ]
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = expected(&scrape(metrics));
        if got == [Some(3), Some(3), Some(1), Some(1), Some(1)] {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the workloads in /metrics: CLOSE_WAIT, CLOSE_WAIT and LISTEN of {unit}, RSTs and \
             closes before accept() of {pod}: {got:?}\n{}",
            observer.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Makes [`MANY`] workloads with one connection each, and checks that the first
/// [`MAX_LABELS`] seen keep a label and the rest are summed under `other`: each named one of
/// ours with exactly its connection, the others' all in `other`. Returns the connections.
fn label_bound_holds(
    metrics: SocketAddr,
    ns: &NetNs,
    made: &mut Made,
    base: &Path,
    home: &Path,
) -> Vec<(TcpStream, TcpStream)> {
    let pid = std::process::id();
    let many = ns.enter(|| TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap());
    let server = many.local_addr().unwrap();
    let mut held = Vec::new();
    for i in 0..MANY {
        let cgroup = made.dir(base.join(format!("w{i}-{pid}.service")));
        let client = inside(&cgroup, home, || {
            ns.enter(|| TcpStream::connect(server).unwrap())
        });
        held.push((client, many.accept().unwrap().0));
    }
    let ours = |name: &str| name.starts_with('w') && name.ends_with(&format!("-{pid}.service"));
    let (named, ours_named, distinct) = wait_for(
        Duration::from_secs(30),
        "the 300 workloads in /metrics",
        || {
            let mut ours_named = 0;
            let mut other = 0;
            let mut labels = BTreeSet::new();
            for sample in scrape(metrics)
                .into_iter()
                .filter(|s| s.name == "observer_tcp_sockets_by_workload")
            {
                let w = sample.labels["workload"].clone();
                if sample.labels["state"] == "ESTABLISHED" {
                    if ours(&w) {
                        assert_eq!(count(sample.value), 1, "{w}: one connection");
                        ours_named += 1;
                    } else if w == "other" {
                        other = count(sample.value);
                    }
                }
                labels.insert(w);
            }
            let named = labels
                .iter()
                .filter(|l| *l != "other" && *l != "unknown")
                .count();
            // Every one of ours is either named, with its 1 connection, or in `other`.
            (other > 0 && other >= (MANY - ours_named) as u64).then_some((
                named,
                ours_named,
                labels.len(),
            ))
        },
    );
    assert_eq!(named, MAX_LABELS, "named workloads: the bound, reached");
    assert!(distinct <= MAX_LABELS + 2, "{distinct} workload values");
    assert!(
        ours_named < MAX_LABELS,
        "the unit and the pod were seen first"
    );
    held
}

#[test]
fn metrics_and_alerts_name_units_and_pods() {
    const TEST: &str = "metrics_and_alerts_name_units_and_pods";
    let _serial = serial();
    if !privileged(TEST) || !have(ALERTMANAGER, TEST) {
        return;
    }
    let Some(mount) = cgroup2() else {
        return;
    };
    let pid = std::process::id();
    let home = mount.join(own_cgroup().trim_start_matches('/'));
    let pod_uid = format!("{pid:08x}-5f60-4718-9a0b-1c2d3e4f5a6b");
    let container_id = format!("{pid:064x}");
    let unit = format!("web-{pid}.service");
    let pod = "shop/checkout-7f9c";

    let dir = TempDir::new("workloads");
    let kubelet = dir.path("containers");
    fs::create_dir(&kubelet).unwrap();
    fs::write(
        kubelet.join(format!("checkout-7f9c_shop_api-{container_id}.log")),
        "",
    )
    .unwrap();
    let mut made = Made(Vec::new());
    let base = made.dir(mount.join(format!("observer-test-{pid}.slice")));
    let unit_cgroup = made.dir(base.join(&unit));
    let pod_slice = made.dir(base.join(format!(
        "kubepods-besteffort-pod{}.slice",
        pod_uid.replace('-', "_")
    )));
    let pod_cgroup = made.dir(pod_slice.join(format!("cri-containerd-{container_id}.scope")));

    let (_am_process, am) = start_alertmanager(&dir);
    let (mut observer, metrics) = start_observer(&dir, &kubelet, am);
    let ns = NetNs::new("workloads").unwrap();
    let netns = ns.inode();
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));

    // The unit leaks 3 sockets in CLOSE_WAIT: its listener (made inside it) hands them over.
    let web = inside(&unit_cgroup, &home, || {
        ns.enter(|| TcpListener::bind(loopback).unwrap())
    });
    let web_port = web.local_addr().unwrap().port();
    let leaked: Vec<TcpStream> = (0..3)
        .map(|_| {
            let (client, accepted) = connection(&ns, &web);
            drop(client);
            accepted
        })
        .collect();
    // The pod aborts one connection (an RST it sends) and never accepts another, which its
    // client closes: a close before accept(), and a socket in CLOSE_WAIT in the pod's queue.
    let checkout = inside(&pod_cgroup, &home, || {
        ns.enter(|| TcpListener::bind(loopback).unwrap())
    });
    let checkout_port = checkout.local_addr().unwrap().port();
    let (aborted_client, aborted) = connection(&ns, &checkout);
    socket2::SockRef::from(&aborted)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(aborted);
    let never_accepted = ns.enter(|| TcpStream::connect(checkout.local_addr().unwrap()).unwrap());
    drop(never_accepted);

    wait_for_workload_metrics(metrics, &unit, pod, &observer);

    // Alertmanager's alerts name the unit, and the pod, namespace and container.
    let web_alert = wait_for(
        Duration::from_secs(30),
        "the unit's CLOSE_WAIT alert in Alertmanager",
        || alertmanager_alert(am, netns, web_port),
    );
    assert_eq!(web_alert["labels"]["unit"], unit.as_str(), "{web_alert}");
    assert!(
        web_alert["labels"]["cgroup"]
            .as_str()
            .is_some_and(|c| c.ends_with(&format!("/{unit}"))),
        "{web_alert}"
    );
    let pod_alert = wait_for(
        Duration::from_secs(30),
        "the pod's CLOSE_WAIT alert in Alertmanager",
        || alertmanager_alert(am, netns, checkout_port),
    );
    let labels = &pod_alert["labels"];
    assert_eq!(labels["pod"], "checkout-7f9c", "{pod_alert}");
    assert_eq!(labels["namespace"], "shop", "{pod_alert}");
    assert_eq!(labels["container"], "api", "{pod_alert}");
    assert_eq!(labels["container_id"], container_id.as_str(), "{pod_alert}");

    // 300 more workloads, one connection each: the first MAX_LABELS workloads seen keep their
    // label, the rest are summed under `other`.
    let held = label_bound_holds(metrics, &ns, &mut made, &base, &home);
    drop((held, leaked, aborted_client, web, checkout));
    let status = observer.terminate().expect("observer exits on SIGTERM");
    assert!(status.success(), "observer: {}", observer.log());
}
