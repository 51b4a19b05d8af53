//! Network namespaces that a test or benchmark creates for itself and deletes when done.

use std::{
    fs::File,
    io,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// A named network namespace (`ip netns add`) with `lo` up. Deleted on drop.
pub struct NetNs {
    name: String,
    handle: File,
}

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl NetNs {
    pub fn new(tag: &str) -> io::Result<Self> {
        let name = Self::next_name(tag);
        ip(&["netns", "add", &name])?;
        Self::named(name)
    }

    /// A namespace whose established hash has only `buckets` buckets, so that its sockets
    /// share hash chains (where a sock_diag dump under churn skips sockets). It is created from
    /// a parent namespace whose `net.ipv4.tcp_child_ehash_entries` (Linux 6.1+) says so; the
    /// host's own setting is not touched.
    pub fn with_ehash(tag: &str, buckets: u32) -> io::Result<Self> {
        let parent = Self::new(&format!("{tag}-parent"))?;
        parent.sysctl("net.ipv4.tcp_child_ehash_entries", &buckets.to_string())?;
        let name = Self::next_name(tag);
        parent.enter(|| {
            // SAFETY: unshare moves only this thread, which ends once the namespace is named.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            ip(&["netns", "attach", &name, &tid.to_string()])
        })?;
        Self::named(name)
    }

    fn next_name(tag: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        format!(
            "obs-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Takes over the namespace `ip netns` knows as `name`, and sets its `lo` up.
    fn named(name: String) -> io::Result<Self> {
        let ns = Self {
            handle: File::open(format!("/run/netns/{name}"))?,
            name,
        };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, for `ip netns exec`.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Inode number of the namespace: what `observer watch --netns` and events carry.
    #[must_use]
    pub fn inode(&self) -> u32 {
        u32::try_from(self.handle.metadata().expect("netns handle").ino()).expect("32-bit inode")
    }

    /// Sets a per-namespace sysctl, e.g. `net.ipv4.tcp_max_tw_buckets`.
    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        ip(&[
            "netns",
            "exec",
            &self.name,
            "sysctl",
            "-qw",
            &format!("{key}={value}"),
        ])
    }

    /// Runs a command inside the namespace (`ip netns exec`), failing the test if it fails.
    pub fn exec(&self, program: &str, args: &[&str]) {
        let out = self
            .run(program, args)
            .unwrap_or_else(|e| panic!("running {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// What a command run inside the namespace prints (stdout, then stderr), or why it could
    /// not run: for a failing test's message, so never a failure itself.
    #[must_use]
    pub fn capture(&self, program: &str, args: &[&str]) -> String {
        match self.run(program, args) {
            Ok(out) => format!(
                "$ {program} {}\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("$ {program} {}: could not run: {e}\n", args.join(" ")),
        }
    }

    /// `program args` run inside the namespace (`ip netns exec`), its output collected.
    fn run(&self, program: &str, args: &[&str]) -> io::Result<std::process::Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
    }

    /// The namespace's own value of a kernel SNMP counter, e.g. `("Tcp", "RetransSegs")` or
    /// `("TcpExt", "TCPLossProbes")`, from its `/proc/net/snmp` or `/proc/net/netstat`.
    pub fn snmp_counter(&self, group: &str, name: &str) -> io::Result<u64> {
        self.enter(|| {
            let file = if group.ends_with("Ext") {
                "netstat"
            } else {
                "snmp"
            };
            let text = std::fs::read_to_string(format!("/proc/thread-self/net/{file}"))?;
            snmp_value(&text, group, name).ok_or_else(|| {
                io::Error::other(format!("no counter {group}:{name} in /proc/net/{file}"))
            })
        })
    }

    /// Timewait sockets the kernel made in the namespace, by its own count (`TcpExt: TW` +
    /// `TWKilled`: every timewait socket scheduled, by its length); from zero in a new one.
    pub fn timewait_sockets_made(&self) -> io::Result<u64> {
        Ok(self.snmp_counter("TcpExt", "TW")? + self.snmp_counter("TcpExt", "TWKilled")?)
    }

    /// Runs `f` on a thread inside the namespace. Sockets it creates stay in the namespace
    /// and can be used from any thread afterwards.
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on this thread only, with a valid namespace fd.
                let rc = unsafe { libc::setns(self.handle.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
                f()
            })
            .join()
            .expect("thread inside the namespace panicked")
        })
    }
}

/// A counter from the text of `/proc/net/snmp` or `/proc/net/netstat`: each group is a line
/// of names followed by a line of values, both starting with `Group:`.
fn snmp_value(text: &str, group: &str, name: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let (names, values) = (lines.next()?, lines.next()?);
    let at = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(at)?.parse().ok()
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Two namespaces joined by a veth pair: `client` holds .1, `server` .2, in IPv4
/// (10.231.N.0/24) and IPv6 (fd31:0:0:N::/64, without duplicate address detection).
pub struct VethPair {
    pub client: NetNs,
    pub server: NetNs,
    pub client_v4: std::net::IpAddr,
    pub server_v4: std::net::IpAddr,
    pub client_v6: std::net::IpAddr,
    pub server_v6: std::net::IpAddr,
}
impl VethPair {
    pub fn new(tag: &str) -> io::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = (std::process::id() + NEXT.fetch_add(1, Ordering::Relaxed)) % 250 + 1;
        let client = NetNs::new(&format!("{tag}-c"))?;
        let server = NetNs::new(&format!("{tag}-s"))?;
        // Interface names are at most 15 bytes; they live only inside the two namespaces.
        let (c_if, s_if) = ("veth-c", "veth-s");
        ip(&[
            "-n",
            &client.name,
            "link",
            "add",
            c_if,
            "type",
            "veth",
            "peer",
            "name",
            s_if,
            "netns",
            &server.name,
        ])?;
        for (ns, dev, host) in [(&client, c_if, 1), (&server, s_if, 2)] {
            ip(&[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("10.231.{n}.{host}/24"),
                "dev",
                dev,
            ])?;
            ip(&[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("fd31:0:0:{n:x}::{host}/64"),
                "dev",
                dev,
                "nodad",
            ])?;
            ip(&["-n", &ns.name, "link", "set", dev, "up"])?;
        }
        // A SYN sent before the carrier is up is lost and retransmitted a second later,
        // which tests of retransmissions would see: wait until both ends are up.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        for (ns, dev) in [(&client, c_if), (&server, s_if)] {
            loop {
                let out = Command::new("ip")
                    .args(["-n", &ns.name, "-o", "link", "show", "dev", dev])
                    .output()?;
                let text = String::from_utf8_lossy(&out.stdout);
                if text.contains("LOWER_UP") && text.contains("state UP") {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err(io::Error::other(format!("{dev} is not up: {text}")));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        let v4 = |host: u8| std::net::IpAddr::from([10, 231, u8::try_from(n).unwrap(), host]);
        let v6 = |host: u16| {
            std::net::IpAddr::from([0xfd31, 0, 0, u16::try_from(n).unwrap(), 0, 0, 0, host])
        };
        Ok(Self {
            client,
            server,
            client_v4: v4(1),
            server_v4: v4(2),
            client_v6: v6(1),
            server_v6: v6(2),
        })
    }
}

/// Drops packets with nftables on a namespace's input hook, from `rule` (nft syntax, e.g.
/// `ip saddr 10.231.1.1 drop`). The table is removed on drop.
pub struct InputDrop<'a> {
    ns: &'a NetNs,
}
impl<'a> InputDrop<'a> {
    #[must_use]
    pub fn new(ns: &'a NetNs, rule: &str) -> Self {
        ns.exec("nft", &["add", "table", "inet", "observer_test"]);
        ns.exec(
            "nft",
            &["add chain inet observer_test input { type filter hook input priority 0 ; }"],
        );
        ns.exec(
            "nft",
            &[&format!("add rule inet observer_test input {rule}")],
        );
        Self { ns }
    }
}

impl Drop for InputDrop<'_> {
    fn drop(&mut self) {
        self.ns
            .exec("nft", &["delete", "table", "inet", "observer_test"]);
    }
}

#[cfg(test)]
mod tests {
    use super::snmp_value;

    #[test]
    fn reads_a_counter_by_group_and_name() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 2 64\nTcp: RtoAlgorithm RetransSegs\nTcp: 1 4\n";
        assert_eq!(snmp_value(text, "Tcp", "RetransSegs"), Some(4));
        assert_eq!(snmp_value(text, "Ip", "DefaultTTL"), Some(64));
        assert_eq!(snmp_value(text, "Tcp", "OutRsts"), None);
        assert_eq!(snmp_value(text, "Udp", "InErrors"), None);
    }
}
