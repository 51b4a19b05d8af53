//! The socket file: its directory, a stale file from an earlier run, its mode and group.

use std::{
    ffi::CString,
    fs, io,
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use tokio::net::UnixListener;

use crate::config::SocketConfig;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot create {0} for the daemon's socket: {1}")]
    Directory(PathBuf, io::Error),
    #[error(
        "another observer already serves {0} (stop it, or set socket.path in the config file \
         or --socket)"
    )]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket: remove it, or set socket.path or --socket")]
    NotASocket(PathBuf),
    #[error("cannot replace the stale socket {0}: {1}")]
    Stale(PathBuf, io::Error),
    #[error("cannot listen on {0}: {1}")]
    Bind(PathBuf, io::Error),
    #[error("group `{0}` of socket.group does not exist (create it: groupadd {0})")]
    NoGroup(String),
    #[error("cannot give {0} its group or mode: {1}")]
    Permissions(PathBuf, io::Error),
}

/// Listens on the configured path: directory created, a stale socket replaced, then the
/// group and mode set (before that, the file has the umask's bits and the daemon's group, so
/// it is never open to more users than configured).
pub fn listen(config: &SocketConfig, path: &Path) -> Result<UnixListener, BindError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| BindError::Directory(dir.to_owned(), e))?;
    }
    remove_stale(path)?;
    let gid = config.group.as_deref().map(group_id).transpose()?;
    let listener = UnixListener::bind(path).map_err(|e| BindError::Bind(path.to_owned(), e))?;
    let permissions = || -> io::Result<()> {
        if gid.is_some() {
            std::os::unix::fs::chown(path, None, gid)?;
        }
        fs::set_permissions(path, fs::Permissions::from_mode(config.mode))
    };
    permissions().map_err(|e| BindError::Permissions(path.to_owned(), e))?;
    Ok(listener)
}

/// A socket file nobody listens on is left by a daemon that did not stop cleanly: removed.
/// One somebody listens on belongs to a running daemon: an error.
fn remove_stale(path: &Path) -> Result<(), BindError> {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(BindError::NotASocket(path.to_owned()));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(BindError::InUse(path.to_owned()));
    }
    fs::remove_file(path).map_err(|e| BindError::Stale(path.to_owned(), e))
}

/// A group's id, by name or number.
fn group_id(name: &str) -> Result<u32, BindError> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let missing = || BindError::NoGroup(name.to_owned());
    let c_name = CString::new(name).map_err(|_| missing())?;
    let mut group = std::mem::MaybeUninit::<libc::group>::uninit();
    let mut buffer = vec![0_u8; 16 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: the name is NUL-terminated, `group` and
    // `found` are writable, and the buffer's length is passed with it.
    let rc = unsafe {
        libc::getgrnam_r(
            c_name.as_ptr(),
            group.as_mut_ptr(),
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            &raw mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return Err(missing());
    }
    // SAFETY: getgrnam_r returned 0 with a non-null result: it filled `group`.
    Ok(unsafe { group.assume_init() }.gr_gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_resolve_by_name_or_number() {
        assert_eq!(group_id("0").unwrap(), 0);
        assert_eq!(group_id("root").unwrap(), 0);
        assert!(
            group_id("no-such-group-here")
                .unwrap_err()
                .to_string()
                .contains("groupadd no-such-group-here")
        );
    }

    #[test]
    fn a_regular_file_is_never_replaced() {
        let dir = std::env::temp_dir().join(format!("observer-bind-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("not-a-socket");
        fs::write(&file, "keep").unwrap();
        assert!(matches!(remove_stale(&file), Err(BindError::NotASocket(_))));
        assert_eq!(fs::read_to_string(&file).unwrap(), "keep");
        let stale = dir.join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        remove_stale(&stale).unwrap();
        assert!(!stale.exists(), "a socket nobody listens on is removed");
        fs::remove_dir_all(&dir).unwrap();
    }
}
