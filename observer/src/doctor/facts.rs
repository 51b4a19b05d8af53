//! What doctor knows about this host, and how it learns it: reads of /proc, /sys, tracefs,
//! BTF and sock_diag, and a trial load of the programs. No verdicts here.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use super::kernel_names::{
    BTF_NETNS, BTF_RST_REASON_ENUM, BTF_SK_SOCKET, BTF_SKB_NETNS, BtfMember, Role, TRACEPOINTS,
    TW_TIMER_HANDLER,
};
use crate::{
    config::WorkloadsConfig,
    decode::{ResetLayout, StateLayout, retransmit::RetransmitLayout},
    event::{ResetDirection, RetransmitKind},
    kernel::{
        btf::KernelBtf,
        kallsyms::{self, KallsymsError},
        privileges,
        tick_rate::{self, TickRate},
        tracefs::{self, Format, TracefsError},
    },
    load::{Features, LoadOptions, Probes},
    sockdiag::{self, Snapshot, SockDiagError},
    workload::Resolver,
};

/// Where tracefs stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum TracefsFact {
    Readable(PathBuf),
    /// It was not mounted; doctor mounted it, as observer does at start.
    MountedNow(PathBuf),
    Unreadable {
        path: PathBuf,
        error: String,
    },
    /// Not mounted, and mounting it failed with this error.
    NotMounted(String),
}

impl TracefsFact {
    fn path(&self) -> Option<&Path> {
        match self {
            Self::Readable(p) | Self::MountedNow(p) => Some(p),
            Self::Unreadable { .. } | Self::NotMounted(_) => None,
        }
    }
}

/// One tracepoint on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Presence {
    /// Its format has every field the decoder reads.
    Usable,
    /// Present, and attached as a raw tracepoint: its record's fields are not read.
    PresentRaw,
    Missing,
    /// Present but not decodable (or unreadable), and why.
    Unusable(String),
}

/// What kernel BTF yields, piece by piece (each `Err` holds the reason).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum BtfFact {
    Missing(String),
    Present {
        netns: Result<(), String>,
        sk_socket: Result<(), String>,
        skb_netns: Result<(), String>,
        reason_names: Result<(), String>,
    },
}

/// Why a namespace could not be dumped, for the advice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DumpFailure {
    Enter,
    Open,
    Module,
    Other,
}

/// A namespace that could not be dumped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FailedDump {
    pub kind: DumpFailure,
    /// The namespace's path and the error.
    pub error: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct SockDiagFact {
    pub dumped: usize,
    pub sockets: usize,
    pub failed: Vec<FailedDump>,
}

impl SockDiagFact {
    /// Keeps the failures that say something about this host: a namespace that went away
    /// between listing and dumping is not one.
    pub(super) fn from_snapshot(snapshot: &Snapshot) -> Self {
        let mut fact = Self {
            sockets: snapshot.sockets.len(),
            ..Self::default()
        };
        for (ns, error) in &snapshot.failed {
            let kind = match error {
                // A process that exited between listing and dumping took its namespace along.
                SockDiagError::NamespaceChanged { .. } => continue,
                SockDiagError::OpenNamespace { source, .. }
                    if source.kind() == io::ErrorKind::NotFound =>
                {
                    continue;
                }
                SockDiagError::EnterNamespace { .. } => DumpFailure::Enter,
                SockDiagError::OpenNamespace { .. } => DumpFailure::Open,
                SockDiagError::Socket(_) | SockDiagError::Kernel { .. } => DumpFailure::Module,
                _ => DumpFailure::Other,
            };
            fact.failed.push(FailedDump {
                kind,
                error: format!("{}: {error}", ns.path.display()),
            });
        }
        fact.dumped = snapshot.namespaces - snapshot.failed.len();
        fact
    }
}

/// Everything doctor reads from the host, before any verdict.
pub(super) struct Facts {
    pub release: String,
    pub euid: u32,
    pub caps: Option<u64>,
    pub tracefs: TracefsFact,
    /// One per [`TRACEPOINTS`] entry; `None` when tracefs could not be read.
    pub tracepoints: Option<Vec<Presence>>,
    /// Whether `tcp:tcp_send_reset` has `reason`; `None` when that tracepoint is unusable.
    pub reset_reason_field: Option<bool>,
    pub btf: BtfFact,
    pub kallsyms: Result<u64, KallsymsError>,
    pub kptr_restrict: Option<i64>,
    pub perf_event_paranoid: Option<i64>,
    /// The timer frequency, or why neither the configuration nor a measurement gave it.
    pub hz: Result<TickRate, String>,
    pub sock_diag: SockDiagFact,
    pub bpf_stats_enabled: Option<i64>,
    pub unprivileged_bpf_disabled: Option<i64>,
    /// The cgroup2 mount, where sockets' cgroups are resolved.
    pub cgroup2: Option<PathBuf>,
    /// The kubelet's container log directory the configuration names (pod names).
    pub kubelet_logs: KubeletLogs,
    /// Whether the configuration has the kernel read sockets' cgroups (`workloads.cgroups`).
    pub cgroups_read: bool,
    pub trial: Result<Features, String>,
}

/// The kubelet's container log directory, as the configuration has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeletLogs {
    /// `workloads.kubelet_logs = ""`.
    NotRead,
    Readable(PathBuf),
    Unreadable(PathBuf),
}

impl Facts {
    /// Side effects are those of observer's own start-up: tracefs is mounted if it is not and
    /// this process may, and the programs are loaded, attached and detached again.
    pub(super) fn gather(workloads: &WorkloadsConfig) -> Self {
        let tracefs = gather_tracefs();
        let tracepoints = tracefs.path().map(gather_tracepoints);
        let reset_reason_field = tracepoints.as_ref().and_then(|t| t.reset_reason_field);
        Self {
            release: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned()),
            // SAFETY: geteuid cannot fail.
            euid: unsafe { libc::geteuid() },
            caps: privileges::effective_capabilities(),
            tracefs,
            tracepoints: tracepoints.map(|t| t.presence),
            reset_reason_field,
            btf: gather_btf(),
            kallsyms: kallsyms::address_of(TW_TIMER_HANDLER),
            kptr_restrict: sysctl("kernel/kptr_restrict"),
            perf_event_paranoid: sysctl("kernel/perf_event_paranoid"),
            hz: tick_rate::tick_rate().map_err(|e| e.to_string()),
            sock_diag: SockDiagFact::from_snapshot(&sockdiag::dump_all()),
            bpf_stats_enabled: sysctl("kernel/bpf_stats_enabled"),
            unprivileged_bpf_disabled: sysctl("kernel/unprivileged_bpf_disabled"),
            cgroup2: Resolver::host().mount().map(Path::to_path_buf),
            kubelet_logs: match &workloads.kubelet_logs {
                None => KubeletLogs::NotRead,
                Some(dir) if fs::read_dir(dir).is_ok() => KubeletLogs::Readable(dir.clone()),
                Some(dir) => KubeletLogs::Unreadable(dir.clone()),
            },
            cgroups_read: workloads.cgroups,
            trial: trial_load(),
        }
    }
}

fn sysctl(name: &str) -> Option<i64> {
    fs::read_to_string(Path::new("/proc/sys").join(name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn gather_tracefs() -> TracefsFact {
    let known = [tracefs::TRACEFS, tracefs::DEBUGFS_TRACING];
    for dir in known {
        if fs::read_dir(Path::new(dir).join("events")).is_ok() {
            return TracefsFact::Readable(dir.into());
        }
    }
    // Mounted but unreadable is told apart from not mounted: mounting again would not help.
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mounted = mounts.lines().find_map(|line| {
        let mut fields = line.split_ascii_whitespace();
        let (target, fstype) = (fields.nth(1)?, fields.next()?);
        (fstype == "tracefs" && known.contains(&target)).then(|| PathBuf::from(target))
    });
    if let Some(path) = mounted {
        let error = fs::read_dir(path.join("events"))
            .err()
            .map_or_else(|| "unknown error".to_owned(), |e| e.to_string());
        return TracefsFact::Unreadable { path, error };
    }
    match tracefs::ensure_mounted() {
        Ok(path) => TracefsFact::MountedNow(path),
        Err(TracefsError::NotMounted { source }) => TracefsFact::NotMounted(source.to_string()),
        Err(e) => TracefsFact::NotMounted(e.to_string()),
    }
}

/// What the tracepoints' formats say.
struct TracepointFacts {
    /// One per [`TRACEPOINTS`] entry.
    presence: Vec<Presence>,
    /// Whether `tcp:tcp_send_reset` has `reason`; `None` when that tracepoint is unusable.
    reset_reason_field: Option<bool>,
}

/// Reads each tracepoint's format and builds the decoder's layout from it, as the loader does.
fn gather_tracepoints(tracefs: &Path) -> TracepointFacts {
    let mut reset_reason_field = None;
    let mut presence = Vec::new();
    for tp in &TRACEPOINTS {
        let found = match Format::read(tracefs, tp.category, tp.name) {
            Err(TracefsError::MissingTracepoint { .. }) => Presence::Missing,
            Err(e) => Presence::Unusable(e.to_string()),
            Ok(format) => match tp.role {
                Role::State => match StateLayout::from_format(&format) {
                    Ok(_) => Presence::Usable,
                    Err(e) => Presence::Unusable(e.to_string()),
                },
                Role::Reset(direction) => match ResetLayout::from_format(&format, direction) {
                    Ok((layout, _)) => {
                        if direction == ResetDirection::Sent {
                            reset_reason_field = Some(layout.has_reason());
                        }
                        Presence::Usable
                    }
                    Err(e) => Presence::Unusable(e.to_string()),
                },
                Role::Timer | Role::SocketError | Role::Retransmit(RetransmitKind::Synack) => {
                    Presence::PresentRaw
                }
                Role::Retransmit(RetransmitKind::Segment) => {
                    match RetransmitLayout::from_format(&format) {
                        Ok(_) => Presence::Usable,
                        Err(e) => Presence::Unusable(e.to_string()),
                    }
                }
            },
        };
        presence.push(found);
    }
    TracepointFacts {
        presence,
        reset_reason_field,
    }
}

/// The BTF lookups the loader makes for each feature (see `load::configure`); the timewait
/// members are covered by the trial load, which reports them with the feature.
fn gather_btf() -> BtfFact {
    let btf = match KernelBtf::load() {
        Ok(btf) => btf,
        Err(e) => return BtfFact::Missing(e.to_string()),
    };
    let offset = |member: &BtfMember| {
        btf.offset_of(member.strukt, member.path)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    BtfFact::Present {
        netns: BTF_NETNS.iter().try_for_each(offset),
        sk_socket: offset(&BTF_SK_SOCKET),
        skb_netns: BTF_SKB_NETNS.iter().try_for_each(offset),
        reason_names: btf
            .enum_values(BTF_RST_REASON_ENUM)
            .map(drop)
            .map_err(|e| e.to_string()),
    }
}

/// Loads and attaches the programs as `observer watch` would, then detaches them (on drop).
fn trial_load() -> Result<Features, String> {
    // The loader logs the degraded features that doctor reports itself; keep stderr quiet
    // unless the user asked for more than the default.
    let level = log::max_level();
    if level <= log::LevelFilter::Info {
        log::set_max_level(log::LevelFilter::Error);
    }
    // The loader hands the programs' log map to a task on the current runtime; without one
    // the map would be closed before the programs that refer to it are loaded.
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the trial's runtime: {e}"))
        .and_then(|runtime| {
            let _entered = runtime.enter();
            Probes::load(&LoadOptions::default())
                .map(|probes| probes.features().clone())
                .map_err(|e| e.to_string())
        });
    log::set_max_level(level);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{event::Netns, sockdiag::NetnsRef};

    fn ns(pid: u32) -> NetnsRef {
        NetnsRef {
            inode: Netns::new(4_026_531_840 + pid).unwrap(),
            path: PathBuf::from(format!("/proc/{pid}/ns/net")),
        }
    }

    #[test]
    fn namespaces_that_went_away_are_not_failures() {
        let gone = |kind| io::Error::from(kind);
        let snapshot = Snapshot {
            sockets: Vec::new(),
            failed: vec![
                (
                    ns(10),
                    SockDiagError::NamespaceChanged {
                        path: ns(10).path,
                        expected: Netns::new(1).unwrap(),
                        found: 2,
                    },
                ),
                (
                    ns(11),
                    SockDiagError::OpenNamespace {
                        path: ns(11).path,
                        source: gone(io::ErrorKind::NotFound),
                    },
                ),
                (
                    ns(12),
                    SockDiagError::OpenNamespace {
                        path: ns(12).path,
                        source: gone(io::ErrorKind::PermissionDenied),
                    },
                ),
                (
                    ns(13),
                    SockDiagError::EnterNamespace {
                        path: ns(13).path,
                        source: gone(io::ErrorKind::PermissionDenied),
                    },
                ),
                (
                    ns(14),
                    SockDiagError::Socket(gone(io::ErrorKind::Unsupported)),
                ),
                (
                    ns(15),
                    SockDiagError::Truncated {
                        len: 2,
                        capacity: 1,
                    },
                ),
            ],
            namespaces: 8,
        };
        let fact = SockDiagFact::from_snapshot(&snapshot);
        let kinds: Vec<DumpFailure> = fact.failed.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [
                DumpFailure::Open,
                DumpFailure::Enter,
                DumpFailure::Module,
                DumpFailure::Other
            ]
        );
        assert!(
            fact.failed[1]
                .error
                .starts_with("/proc/13/ns/net: cannot enter network namespace")
        );
        // The vanished namespaces are neither dumped nor failed.
        assert_eq!(fact.dumped, 2);
        assert_eq!(fact.sockets, 0);
    }
}
