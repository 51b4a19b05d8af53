//! tracefs: where it is, mounting it when allowed, and reading tracepoint format files.

use std::{
    collections::HashMap,
    ffi::CString,
    io,
    path::{Path, PathBuf},
};

use thiserror::Error;

pub(crate) const TRACEFS: &str = "/sys/kernel/tracing";
pub(crate) const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

#[derive(Debug, Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it at {TRACEFS} failed ({source}); mount it as root \
         with `mount -t tracefs nodev {TRACEFS}` and run again"
    )]
    NotMounted { source: io::Error },
    #[error(
        "tracepoint {category}:{name} does not exist on this kernel (no {path}); it needs Linux \
         4.16 or newer with CONFIG_TRACEPOINTS — check `uname -r`"
    )]
    MissingTracepoint {
        category: String,
        name: String,
        path: PathBuf,
    },
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: field `{field}` is missing; this kernel's tracepoint layout is not supported")]
    MissingField { path: PathBuf, field: String },
    #[error(
        "{path}: field `{field}` is {size} bytes where {expected} were expected; this kernel's \
         tracepoint layout is not supported"
    )]
    FieldSize {
        path: PathBuf,
        field: String,
        size: usize,
        expected: usize,
    },
}

/// Returns the tracefs mount point, mounting tracefs at /sys/kernel/tracing if it is not
/// mounted anywhere (aya, which resolves tracepoint ids through tracefs, then finds it too).
pub fn ensure_mounted() -> Result<PathBuf, TracefsError> {
    for dir in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(PathBuf::from(dir));
        }
    }
    mount_tracefs().map_err(|source| TracefsError::NotMounted { source })?;
    Ok(PathBuf::from(TRACEFS))
}

fn mount_tracefs() -> io::Result<()> {
    let c = |s: &str| CString::new(s).expect("no NUL in constant");
    let (src, target, fstype) = (c("nodev"), c(TRACEFS), c("tracefs"));
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One field of a tracepoint record, from its `format` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: usize,
    pub size: usize,
}

impl Field {
    /// The same field, with its offset counted from `start` (the first copied byte).
    #[must_use]
    pub const fn relative_to(self, start: usize) -> Self {
        Self {
            offset: self.offset - start,
            size: self.size,
        }
    }
}

/// The fields of a tracepoint record by name.
#[derive(Clone, Debug, Default)]
pub struct Format {
    path: PathBuf,
    fields: HashMap<String, Field>,
}

impl Format {
    /// Reads `events/CATEGORY/NAME/format` under `tracefs`.
    pub fn read(tracefs: &Path, category: &str, name: &str) -> Result<Self, TracefsError> {
        let path = tracefs
            .join("events")
            .join(category)
            .join(name)
            .join("format");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Self::parse(path, &text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(TracefsError::MissingTracepoint {
                category: category.to_owned(),
                name: name.to_owned(),
                path,
            }),
            Err(source) => Err(TracefsError::Read { path, source }),
        }
    }

    /// Parses the text of a format file. Lines look like
    /// `field:__u8 saddr[4];<TAB>offset:32;<TAB>size:4;<TAB>signed:0;`.
    #[must_use]
    pub fn parse(path: PathBuf, text: &str) -> Self {
        let mut fields = HashMap::new();
        for line in text.lines() {
            let mut decl = None;
            let (mut offset, mut size) = (None, None);
            for part in line.trim().split(';') {
                let part = part.trim();
                if let Some(d) = part.strip_prefix("field:") {
                    decl = Some(d);
                } else if let Some(o) = part.strip_prefix("offset:") {
                    offset = o.parse().ok();
                } else if let Some(s) = part.strip_prefix("size:") {
                    size = s.parse().ok();
                }
            }
            if let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) {
                // The name is the last word of the declaration, without any array suffix.
                let name = decl.rsplit([' ', '*']).next().unwrap_or(decl);
                let name = name.split('[').next().unwrap_or(name);
                fields.insert(name.to_owned(), Field { offset, size });
            }
        }
        Self { path, fields }
    }

    #[must_use]
    pub fn get(&self, name: &str) -> Option<Field> {
        self.fields.get(name).copied()
    }

    pub fn field(&self, name: &str) -> Result<Field, TracefsError> {
        self.get(name).ok_or_else(|| TracefsError::MissingField {
            path: self.path.clone(),
            field: name.to_owned(),
        })
    }

    /// A field that must be `size` bytes wide: the decoders read it at that width.
    pub fn sized_field(&self, name: &str, size: usize) -> Result<Field, TracefsError> {
        let field = self.field(name)?;
        if field.size != size {
            return Err(TracefsError::FieldSize {
                path: self.path.clone(),
                field: name.to_owned(),
                size: field.size,
                expected: size,
            });
        }
        Ok(field)
    }
}

/// Format files as Linux 6.18 prints them (kept under `tests/data/formats`), for tests and
/// benchmarks that replay that kernel's records.
pub mod known_formats {
    /// `sock:inet_sock_set_state`.
    pub const INET_SOCK_SET_STATE_6_18: &str =
        include_str!("../../tests/data/formats/6.18/sock/inet_sock_set_state.format");
    /// `tcp:tcp_send_reset`: addresses as `struct sockaddr_in6`-sized blobs, with a reason.
    pub const TCP_SEND_RESET_6_18: &str =
        include_str!("../../tests/data/formats/6.18/tcp/tcp_send_reset.format");
    /// `tcp:tcp_receive_reset`: separate ports, family and addresses, no reason.
    pub const TCP_RECEIVE_RESET_6_18: &str =
        include_str!("../../tests/data/formats/6.18/tcp/tcp_receive_reset.format");
    /// `tcp:tcp_retransmit_skb`, with `err` (Linux 6.13+).
    pub const TCP_RETRANSMIT_SKB_6_18: &str =
        include_str!("../../tests/data/formats/6.18/tcp/tcp_retransmit_skb.format");
    /// `tcp:tcp_retransmit_synack`.
    pub const TCP_RETRANSMIT_SYNACK_6_18: &str =
        include_str!("../../tests/data/formats/6.18/tcp/tcp_retransmit_synack.format");
}

#[cfg(test)]
mod tests {
    use super::{known_formats::INET_SOCK_SET_STATE_6_18, *};

    #[test]
    fn a_missing_tracepoint_says_which_kernel_is_needed() {
        let dir = std::env::temp_dir().join(format!("observer-tracefs-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("events")).unwrap();
        let err = Format::read(&dir, "sock", "inet_sock_set_state")
            .unwrap_err()
            .to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            err.contains("sock:inet_sock_set_state does not exist"),
            "{err}"
        );
        assert!(err.contains("Linux 4.16 or newer"), "{err}");
    }

    #[test]
    fn a_field_of_another_width_is_refused_by_name_and_size() {
        let f = Format::parse(PathBuf::from("format"), INET_SOCK_SET_STATE_6_18);
        assert_eq!(
            f.sized_field("sport", 2).unwrap(),
            Field {
                offset: 24,
                size: 2
            }
        );
        let err = f.sized_field("saddr", 16).unwrap_err().to_string();
        assert!(
            err.contains("field `saddr` is 4 bytes where 16 were expected"),
            "{err}"
        );
    }

    #[test]
    fn parses_every_field_with_offset_and_size() {
        let f = Format::parse(PathBuf::from("format"), INET_SOCK_SET_STATE_6_18);
        assert_eq!(f.get("skaddr"), Some(Field { offset: 8, size: 8 }));
        assert_eq!(
            f.get("protocol"),
            Some(Field {
                offset: 30,
                size: 2
            })
        );
        assert_eq!(
            f.get("saddr"),
            Some(Field {
                offset: 32,
                size: 4
            })
        );
        assert_eq!(
            f.get("daddr_v6"),
            Some(Field {
                offset: 56,
                size: 16
            })
        );
        assert_eq!(f.get("common_pid"), Some(Field { offset: 4, size: 4 }));
        assert_eq!(f.get("name"), None);
        let err = f.field("reason").unwrap_err().to_string();
        assert!(err.contains("`reason` is missing"), "{err}");
    }
}
