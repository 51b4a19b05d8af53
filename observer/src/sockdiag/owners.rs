//! Which processes hold a socket: its inode matched against `/proc/<pid>/fd/*` links, as
//! `ss -p` does.

use std::{
    collections::{HashMap, HashSet},
    ffi::OsStr,
    fs,
    path::Path,
};

use super::netns::is_pid;

/// At most this many holders are kept per socket; forked workers can share one listener.
const MAX_HOLDERS: usize = 8;

/// A process that has the socket open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// Process id.
    pub pid: u32,
    /// Command name from `/proc/<pid>/comm` (up to 15 bytes).
    pub comm: String,
}

/// For each of `inodes` that some process holds, those processes (each once, ordered by pid,
/// at most eight). Inodes nobody holds are absent. Processes that exit during the scan, or
/// whose descriptors cannot be read, are skipped. Reads every descriptor link in `/proc`.
#[must_use]
#[expect(
    clippy::implicit_hasher,
    reason = "a fixed signature; a generic hasher would break `collect()` at call sites"
)]
pub fn holders_of(inodes: &HashSet<u64>) -> HashMap<u64, Vec<Holder>> {
    let mut found: HashMap<u64, Vec<Holder>> = HashMap::new();
    if inodes.is_empty() {
        return found;
    }
    let Ok(proc) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in proc.flatten() {
        let name = entry.file_name();
        if !is_pid(&name) {
            continue;
        }
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        scan_process(pid, &entry.path(), inodes, &mut found);
    }
    for holders in found.values_mut() {
        holders.sort_by_key(|h| h.pid);
    }
    found
}

fn scan_process(
    pid: u32,
    dir: &Path,
    inodes: &HashSet<u64>,
    found: &mut HashMap<u64, Vec<Holder>>,
) {
    let Ok(fds) = fs::read_dir(dir.join("fd")) else {
        return;
    };
    // Read once per process, and only when one of its descriptors matches.
    let mut comm: Option<Option<String>> = None;
    for fd in fds.flatten() {
        let Ok(target) = fs::read_link(fd.path()) else {
            continue;
        };
        let Some(inode) = socket_inode(target.as_os_str()) else {
            continue;
        };
        if !inodes.contains(&inode) {
            continue;
        }
        if found
            .get(&inode)
            .is_some_and(|h| h.len() >= MAX_HOLDERS || h.iter().any(|h| h.pid == pid))
        {
            continue;
        }
        // No comm means the process has exited since its descriptor was read.
        let Some(name) = comm.get_or_insert_with(|| read_comm(dir)) else {
            return;
        };
        found.entry(inode).or_default().push(Holder {
            pid,
            comm: name.clone(),
        });
    }
}

fn read_comm(dir: &Path) -> Option<String> {
    let mut comm = fs::read_to_string(dir.join("comm")).ok()?;
    if comm.ends_with('\n') {
        comm.pop();
    }
    Some(comm)
}

/// The inode of a descriptor link such as `socket:[12345]`.
fn socket_inode(link: &OsStr) -> Option<u64> {
    let digits = link
        .as_encoded_bytes()
        .strip_prefix(b"socket:[")?
        .strip_suffix(b"]")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashSet,
        ffi::OsStr,
        os::{fd::AsFd as _, unix::fs::MetadataExt as _, unix::net::UnixStream},
    };

    use super::{holders_of, socket_inode};

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode(OsStr::new("socket:[123]")), Some(123));
        assert_eq!(
            socket_inode(OsStr::new("socket:[18446744073709551615]")),
            Some(u64::MAX)
        );
        assert_eq!(socket_inode(OsStr::new("socket:[]")), None);
        assert_eq!(socket_inode(OsStr::new("socket:[12a]")), None);
        assert_eq!(socket_inode(OsStr::new("socket:[+12]")), None);
        assert_eq!(socket_inode(OsStr::new("socket:[123")), None);
        assert_eq!(
            socket_inode(OsStr::new("socket:[18446744073709551616]")),
            None
        );
        assert_eq!(socket_inode(OsStr::new("pipe:[123]")), None);
        assert_eq!(socket_inode(OsStr::new("anon_inode:[eventpoll]")), None);
        assert_eq!(socket_inode(OsStr::new("/dev/null")), None);
    }

    /// A socket pair of this process: every socket has an inode, not just TCP ones.
    #[test]
    fn finds_this_process() {
        let (a, _b) = UnixStream::pair().unwrap();
        let inode = std::fs::File::from(a.as_fd().try_clone_to_owned().unwrap())
            .metadata()
            .unwrap()
            .ino();
        let absent = u64::MAX - 1;
        let found = holders_of(&HashSet::from([inode, absent]));
        let holders = &found[&inode];
        assert_eq!(holders.len(), 1, "{holders:?}");
        assert_eq!(holders[0].pid, std::process::id());
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(holders[0].comm, comm.trim_end());
        assert!(!found.contains_key(&absent));
        assert!(holders_of(&HashSet::new()).is_empty());
    }
}
