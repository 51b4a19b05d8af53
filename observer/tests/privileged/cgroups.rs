//! The socket's cgroup (v2), read in the kernel, checked against the inode of the cgroup
//! directory the test itself makes, and resolved back to that directory's path.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{IpAddr, TcpListener},
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    process::{Command, Stdio},
};

use observer::{
    event::CgroupId,
    load::{KernelReads, LoadOptions},
    workload::{Resolver, cgroupfs},
};
use observer_common::TcpState::{Close, Listen, SynRecv, SynSent};

use crate::support::{self, Recorder, V4, V6, netns::NetNs, privileged, serial, socket_where};

/// The cgroup2 mount, or a loud skip (a failure under CI, whose machines have one).
pub(crate) fn cgroup2() -> Option<PathBuf> {
    let mount = fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|m| cgroupfs::cgroup2_mount(&m));
    if mount.is_none() {
        eprintln!("SKIPPED: no cgroup2 mount on this host");
        assert!(
            std::env::var_os("CI").is_none(),
            "CI machines mount cgroup2"
        );
    }
    mount
}

/// The cgroup (path relative to the mount) this process runs in: `0::PATH` in
/// /proc/self/cgroup.
pub(crate) fn own_cgroup() -> String {
    let text = fs::read_to_string("/proc/self/cgroup").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup2 line in /proc/self/cgroup")
        .to_owned()
}

/// A cgroup the test made, removed when the test ends however it ends.
struct Made(PathBuf);

impl Made {
    fn new(path: PathBuf) -> Self {
        let _ = fs::remove_dir(&path);
        fs::create_dir(&path).unwrap();
        Self(path)
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

fn inode(path: &std::path::Path) -> CgroupId {
    CgroupId::new(fs::metadata(path).unwrap().ino()).unwrap()
}

/// A client made by a shell that first moved itself into a new cgroup: its socket carries
/// that cgroup; the server's accepted socket carries the listener's, this process's.
fn sockets_carry_the_cgroup_of_the_process_that_made_them(addr: IpAddr) {
    let _serial = serial();
    let Some(mount) = cgroup2() else {
        return;
    };
    let name = format!("observer-test-{}", std::process::id());
    let dir = Made::new(mount.join(&name));
    let ns = NetNs::new("cgroup").unwrap();
    let mut rec = Recorder::start(ns.inode());
    let listener = ns.enter(|| TcpListener::bind((addr, 0)).unwrap());
    let server = listener.local_addr().unwrap();
    let host = match addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => a.to_string(),
    };
    // bash's /dev/tcp: connect, then exit (the kernel closes the socket). `ip netns exec`
    // mounts its own /sys, so the shell is moved into the cgroup from here, by its pid (`ip`
    // execs the shell), before it is told to go on.
    let script = format!("read go && exec 3<>/dev/tcp/{host}/{}", server.port());
    let mut shell = Command::new("ip")
        .args(["netns", "exec", ns.name(), "bash", "-c", &script])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    fs::write(dir.0.join("cgroup.procs"), shell.id().to_string()).unwrap();
    shell.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(shell.wait().unwrap().success(), "the client shell failed");
    let (mut accepted, _) = listener.accept().unwrap();
    accepted.read_to_end(&mut Vec::new()).unwrap();
    drop(accepted);
    drop(listener);
    let seen = rec
        .collect_until(|s| support::closed_sockets(s) == 3)
        .to_vec();
    let made = inode(&dir.0);
    let own_path = own_cgroup();
    let own = inode(&mount.join(own_path.trim_start_matches('/')));
    // Resolved back to the paths, while the made directory still exists.
    let resolver = Resolver::host();
    let made_path = resolver.resolve(made).map(|a| a.cgroup.clone());
    let own_resolved = resolver.resolve(own).map(|a| a.cgroup.clone());
    drop(dir);
    assert_eq!(made_path, Some(format!("/{name}")));
    assert_eq!(own_resolved, Some(own_path));

    let client = socket_where(&seen, |t| t.remote == server && t.old == Close);
    let connect = seen
        .iter()
        .find(|t| t.sock == client && (t.old, t.new) == (Close, SynSent))
        .unwrap();
    assert_eq!(connect.cgroup, Some(made), "{connect:?}");
    let child = socket_where(&seen, |t| {
        t.local == server && (t.old, t.new) == (Listen, SynRecv)
    });
    let born = seen.iter().find(|t| t.sock == child).unwrap();
    assert_eq!(born.cgroup, Some(own), "the listener's cgroup: {born:?}");
    let listening = seen
        .iter()
        .find(|t| t.local == server && (t.old, t.new) == (Close, Listen))
        .unwrap();
    assert_eq!(listening.cgroup, Some(own), "{listening:?}");
    // Only a socket's birth carries it (out of CLOSE or LISTEN); the tracker keeps it for the
    // later transitions.
    let later: Vec<_> = seen
        .iter()
        .filter(|t| !matches!(t.old, Close | Listen))
        .collect();
    assert!(later.len() >= 6, "{seen:#?}");
    assert!(later.iter().all(|t| t.cgroup.is_none()), "{later:#?}");
}

both_families!(sockets_carry_the_cgroup_of_the_process_that_made_them);

/// `workloads.cgroups = false`: the program reads no cgroup, and says so.
#[test]
fn with_cgroups_off_no_socket_carries_one() {
    if !privileged("with_cgroups_off_no_socket_carries_one") {
        return;
    }
    let _serial = serial();
    if cgroup2().is_none() {
        return;
    }
    let ns = NetNs::new("nocgroup").unwrap();
    let mut rec = Recorder::start_with(
        ns.inode(),
        &LoadOptions {
            reads: KernelReads {
                cgroup: false,
                ..KernelReads::ALL
            },
            ..LoadOptions::default()
        },
    );
    assert!(
        !rec.features().cgroups.is_active(),
        "{:?}",
        rec.features().cgroups
    );
    let listener = ns.enter(|| TcpListener::bind((V4, 0)).unwrap());
    let client = ns.enter(|| std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap());
    let (accepted, _) = listener.accept().unwrap();
    drop((client, accepted, listener));
    let seen = rec
        .collect_until(|s| support::closed_sockets(s) == 3)
        .to_vec();
    // The same transitions carry one with the read on (see above).
    assert!(seen.iter().any(|t| (t.old, t.new) == (Close, Listen)));
    assert!(seen.iter().all(|t| t.cgroup.is_none()), "{seen:#?}");
}

/// An abortive close by this process of a connection a shell in a made cgroup opened: the
/// RST the server sends names this process's cgroup, the RST the client receives the made
/// one (neither carried by the reset records themselves: the tracker knows the sockets').
fn resets_name_the_cgroup_of_their_socket(addr: IpAddr) {
    let _serial = serial();
    let Some(mount) = cgroup2() else {
        return;
    };
    let dir = Made::new(mount.join(format!("observer-test-rst-{}", std::process::id())));
    let ns = NetNs::new("cgrouprst").unwrap();
    let mut rec = Recorder::start(ns.inode());
    let listener = ns.enter(|| TcpListener::bind((addr, 0)).unwrap());
    let server = listener.local_addr().unwrap();
    // The client keeps its socket open until told, so that the RST reaches a live socket.
    let script = format!(
        "read go && exec 3<>/dev/tcp/{}/{} && echo connected && read done",
        server.ip(),
        server.port()
    );
    let mut shell = Command::new("ip")
        .args(["netns", "exec", ns.name(), "bash", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    fs::write(dir.0.join("cgroup.procs"), shell.id().to_string()).unwrap();
    let mut stdin = shell.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    let mut connected = [0u8; 10];
    shell
        .stdout
        .take()
        .unwrap()
        .read_exact(&mut connected)
        .unwrap();
    let (accepted, _) = listener.accept().unwrap();
    socket2::SockRef::from(&accepted)
        .set_linger(Some(std::time::Duration::ZERO))
        .unwrap();
    drop(accepted);
    let resets = |r: &[observer::track::Report]| {
        r.iter()
            .filter(|r| matches!(r, observer::track::Report::Reset { .. }))
            .count()
    };
    let reports = rec
        .reports_until(std::time::Duration::from_secs(10), |r| resets(r) == 2)
        .to_vec();
    stdin.write_all(b"done\n").unwrap();
    drop(stdin);
    assert!(shell.wait().unwrap().success(), "the client shell failed");
    let made = inode(&dir.0);
    let own = inode(&mount.join(own_cgroup().trim_start_matches('/')));
    drop(dir);
    // On loopback the peer's receive is traced inside the send: order by direction.
    let mut by_direction: Vec<_> = reports
        .iter()
        .filter_map(|r| match r {
            observer::track::Report::Reset { reset, cgroup, .. } => Some((
                reset.direction.name(),
                reset.local.port() == server.port(),
                *cgroup,
            )),
            _ => None,
        })
        .collect();
    by_direction.sort_unstable();
    assert_eq!(
        by_direction,
        [("received", false, Some(made)), ("sent", true, Some(own))],
        "{reports:#?}"
    );
}

both_families!(resets_name_the_cgroup_of_their_socket);
