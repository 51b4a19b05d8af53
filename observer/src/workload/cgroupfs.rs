//! The cgroup2 hierarchy on this host: where it is mounted, and which directory a cgroup id
//! names (the id is the directory's inode number).

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use rustc_hash::FxHashMap;

use crate::event::CgroupId;

/// Directories read in one walk of the hierarchy at most: a bound on the work a miss costs.
pub const MAX_WALKED: usize = 200_000;

/// The cgroup2 mount point, from a `/proc/self/mountinfo` text: `/sys/fs/cgroup` on a
/// unified host, `/sys/fs/cgroup/unified` on a hybrid one; `None` on a cgroup v1-only host.
#[must_use]
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // "ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER"
        let (mount, fs) = line.split_once(" - ")?;
        let fstype = fs.split_whitespace().next()?;
        (fstype == "cgroup2").then(|| mount.split_whitespace().nth(4).map(unescape))?
    })
}

/// Mount points escape spaces and a few other bytes as octal (`\040`).
fn unescape(field: &str) -> PathBuf {
    let mut out = Vec::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(b);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from(
        String::from_utf8_lossy(&out).into_owned(),
    ))
}

/// Every cgroup under `mount` by id, as paths relative to it (`/system.slice/nginx.service`;
/// the root is `/`), walking at most [`MAX_WALKED`] directories. Directories that vanish
/// during the walk are skipped.
#[must_use]
pub fn walk(mount: &Path) -> FxHashMap<CgroupId, String> {
    let mut found = FxHashMap::default();
    let mut stack = vec![(mount.to_path_buf(), String::from("/"))];
    while let Some((dir, relative)) = stack.pop() {
        if found.len() >= MAX_WALKED {
            break;
        }
        let Ok(meta) = fs::metadata(&dir) else {
            continue;
        };
        if let Some(id) = CgroupId::new(meta.ino()) {
            found.insert(id, relative.clone());
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let name = entry.file_name().to_string_lossy().into_owned();
                let child = if relative == "/" {
                    format!("/{name}")
                } else {
                    format!("{relative}/{name}")
                };
                stack.push((entry.path(), child));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup2_mount_is_found_on_unified_and_hybrid_hosts_and_not_on_v1() {
        let hybrid = "\
35 24 0:30 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
41 35 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 35 0:39 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let v1 = "42 35 0:39 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu";
        assert_eq!(cgroup2_mount(v1), None);
        let spaced = r"30 23 0:26 / /mnt/cg\040two rw - cgroup2 none rw";
        assert_eq!(cgroup2_mount(spaced), Some(PathBuf::from("/mnt/cg two")));
    }

    #[test]
    fn a_walk_names_every_directory_by_its_inode() {
        let root = std::env::temp_dir().join(format!("observer-cgwalk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("system.slice/nginx.service")).unwrap();
        fs::create_dir_all(root.join("user.slice")).unwrap();
        let ino = |p: &Path| CgroupId::new(fs::metadata(p).unwrap().ino()).unwrap();
        let expected: FxHashMap<CgroupId, String> = [
            (ino(&root), "/"),
            (ino(&root.join("system.slice")), "/system.slice"),
            (
                ino(&root.join("system.slice/nginx.service")),
                "/system.slice/nginx.service",
            ),
            (ino(&root.join("user.slice")), "/user.slice"),
        ]
        .into_iter()
        .map(|(id, p)| (id, p.to_owned()))
        .collect();
        let found = walk(&root);
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(found, expected);
    }
}
