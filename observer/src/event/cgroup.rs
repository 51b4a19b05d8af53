//! A cgroup (v2), named as the kernel names it.

use std::{fmt, num::NonZeroU64};

/// A cgroup v2: its id, which is the inode number of its directory on the cgroup2 mount (what
/// `stat -c %i /sys/fs/cgroup/...` shows, and `bpf_get_current_cgroup_id()` returns). The eBPF
/// program writes 0 when it did not read one, so callers hold an `Option<CgroupId>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CgroupId(NonZeroU64);

impl CgroupId {
    /// The cgroup with this id; `None` for 0 (not read).
    #[must_use]
    pub const fn new(id: u64) -> Option<Self> {
        match NonZeroU64::new(id) {
            Some(n) => Some(Self(n)),
            None => None,
        }
    }

    #[must_use]
    pub const fn get(self) -> u64 {
        self.0.get()
    }

    /// The id the programs write for `cgroup`: 0 when none.
    #[must_use]
    pub const fn id_or_zero(cgroup: Option<Self>) -> u64 {
        match cgroup {
            Some(c) => c.get(),
            None => 0,
        }
    }
}

impl fmt::Display for CgroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl serde::Serialize for CgroupId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.get())
    }
}
