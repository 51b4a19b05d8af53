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
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "obs-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let ns = Self {
            handle: File::open(format!("/run/netns/{name}"))?,
            name,
        };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Inode number of the namespace: what `observer watch --netns` and events carry.
    #[must_use]
    pub fn inode(&self) -> u32 {
        u32::try_from(self.handle.metadata().expect("netns handle").ino()).expect("32-bit inode")
    }

    /// Sets a per-namespace sysctl, e.g. `net.ipv4.tcp_max_tw_buckets`.
    #[allow(dead_code, reason = "not every user sets sysctls")]
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

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}
