//! Finding network namespaces and running code inside one.

use std::{
    collections::HashSet,
    ffi::OsStr,
    fs::{self, File},
    io,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    thread,
};

use super::{NetnsRef, SockDiagError};
use crate::event::Netns;

/// Inode of the calling thread's network namespace (threads may differ after `setns`).
pub(super) fn current_inode() -> Result<Netns, SockDiagError> {
    let meta = fs::metadata("/proc/thread-self/ns/net").map_err(SockDiagError::CurrentNamespace)?;
    u32::try_from(meta.ino())
        .ok()
        .and_then(Netns::new)
        .ok_or_else(|| {
            SockDiagError::CurrentNamespace(io::Error::other(format!(
                "namespace inode {} is not a 32-bit inode number",
                meta.ino()
            )))
        })
}

/// Every distinct network namespace reachable through `/run/netns/*` (named by `ip netns`)
/// and `/proc/<pid>/ns/net`, one entry per namespace inode. Named paths come first, so a
/// namespace that has a name is listed by it.
#[must_use]
pub fn list_netns() -> Vec<NetnsRef> {
    // Every namespace file lives on the one nsfs filesystem. A file in /run/netns on another
    // device is a mount point whose bind mount is gone (or not visible in this mount
    // namespace), and entering it would fail.
    let nsfs = fs::metadata("/proc/self/ns/net").ok().map(|m| m.dev());
    let mut seen = HashSet::new();
    let mut found = Vec::new();
    let mut add = |path: PathBuf| {
        let Ok(meta) = fs::metadata(&path) else {
            return; // gone, or not ours to read
        };
        if nsfs.is_some_and(|dev| dev != meta.dev()) {
            return;
        }
        let Some(inode) = u32::try_from(meta.ino()).ok().and_then(Netns::new) else {
            return;
        };
        if seen.insert(inode) {
            found.push(NetnsRef { inode, path });
        }
    };

    if let Ok(dir) = fs::read_dir("/run/netns") {
        let mut named: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        named.sort();
        named.into_iter().for_each(&mut add);
    }
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if is_pid(&entry.file_name()) {
                add(Path::new("/proc").join(entry.file_name()).join("ns/net"));
            }
        }
    }
    found
}

pub(super) fn is_pid(name: &OsStr) -> bool {
    let name = name.as_encoded_bytes();
    !name.is_empty() && name.iter().all(u8::is_ascii_digit)
}

/// Runs `f` on a new thread that has entered `ns`, so that sockets `f` opens belong to it.
/// The calling thread's namespace is untouched.
pub(super) fn run_in<T: Send>(
    ns: &NetnsRef,
    f: impl FnOnce() -> Result<T, SockDiagError> + Send,
) -> Result<T, SockDiagError> {
    let open_error = |source| SockDiagError::OpenNamespace {
        path: ns.path.clone(),
        source,
    };
    let file = File::open(&ns.path).map_err(open_error)?;
    // A /proc/<pid> path may now belong to another process in another namespace.
    let found = file.metadata().map_err(open_error)?.ino();
    if found != u64::from(ns.inode.inode()) {
        return Err(SockDiagError::NamespaceChanged {
            path: ns.path.clone(),
            expected: ns.inode,
            found,
        });
    }

    thread::scope(|scope| {
        let worker = thread::Builder::new()
            .name("sockdiag-netns".into())
            .spawn_scoped(scope, || {
                // SAFETY: setns changes only this thread's network namespace, with an fd that
                // stays open for the call; the thread ends when `f` returns.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(SockDiagError::EnterNamespace {
                        path: ns.path.clone(),
                        source: io::Error::last_os_error(),
                    });
                }
                f()
            })
            .map_err(|e| SockDiagError::Worker {
                path: ns.path.clone(),
                reason: format!("cannot start a thread: {e}"),
            })?;
        worker.join().unwrap_or_else(|panic| {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "it panicked".to_owned());
            Err(SockDiagError::Worker {
                path: ns.path.clone(),
                reason,
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::is_pid;

    #[test]
    fn pids_are_all_digits() {
        assert!(is_pid(OsStr::new("1")));
        assert!(is_pid(OsStr::new("4194304")));
        assert!(!is_pid(OsStr::new("")));
        assert!(!is_pid(OsStr::new("self")));
        assert!(!is_pid(OsStr::new("thread-self")));
        assert!(!is_pid(OsStr::new("12a")));
    }
}
