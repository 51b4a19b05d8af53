//! `observer doctor`: checks everything observer depends on, on this host, and says for each
//! missing piece what it costs (which feature degrades, and how) and what to do.
//!
//! Facts are gathered first (from /proc, /sys, tracefs, sock_diag, and a trial load of the
//! programs), then judged by pure code, so that every verdict and its wording can be tested
//! from synthetic facts.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use serde::Serialize;

use crate::{
    decode::{ResetLayout, StateLayout, retransmit::RetransmitLayout},
    event::{ResetDirection, RetransmitKind},
    kernel::{
        btf::{KernelBtf, VMLINUX_BTF},
        kallsyms::{self, KallsymsError},
        kernel_config,
        privileges::{self, CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN},
        tracefs::{self, Format, TracefsError},
    },
    load::{Availability, Features, LoadOptions, Probes},
    sockdiag::{self, SockDiagError},
};

const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYSLOG: u32 = 34;

/// The symbol the timer programs filter on.
const TW_TIMER_HANDLER: &str = "tw_timer_handler";

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Present and working.
    Ok,
    /// Worth knowing, changes nothing observer does.
    Info,
    /// observer runs, with a feature degraded.
    Warn,
    /// observer cannot run.
    Fail,
}

impl Status {
    #[must_use]
    pub const fn word(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// What a warning takes away; the closing sentence counts these, not warnings, since several
/// checks can point at the same loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Feature {
    Netns,
    ClosedBeforeAccept,
    Timewait,
    TimewaitTimeouts,
    Resets,
    ResetReasons,
    Retransmits,
    SocketErrors,
    ExistingSockets,
    Owners,
    SkippedRuns,
}

impl Feature {
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Netns => "network namespaces",
            Self::ClosedBeforeAccept => "closed-before-accept detection",
            Self::Timewait => "TIME_WAIT",
            Self::TimewaitTimeouts => "TIME_WAIT timeout lengths",
            Self::Resets => "RSTs",
            Self::ResetReasons => "RST reasons",
            Self::Retransmits => "retransmissions and half-open suspects",
            Self::SocketErrors => "connection ends by error (timeouts by cause)",
            Self::ExistingSockets => "sockets open before start-up",
            Self::Owners => "socket owners",
            Self::SkippedRuns => "counting of skipped program runs",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub finding: String,
    /// What the user loses (warn and fail only).
    pub costs: Option<String>,
    /// What to do about it (warn and fail only).
    pub fix: Option<String>,
    #[serde(skip)]
    pub degrades: Vec<Feature>,
}

impl Check {
    fn ok(name: impl Into<String>, finding: impl Into<String>) -> Self {
        Self::plain(name, Status::Ok, finding)
    }

    fn info(name: impl Into<String>, finding: impl Into<String>) -> Self {
        Self::plain(name, Status::Info, finding)
    }

    fn plain(name: impl Into<String>, status: Status, finding: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status,
            finding: finding.into(),
            costs: None,
            fix: None,
            degrades: Vec::new(),
        }
    }

    fn warn(
        name: impl Into<String>,
        finding: impl Into<String>,
        costs: impl Into<String>,
        fix: impl Into<String>,
        degrades: &[Feature],
    ) -> Self {
        Self {
            costs: Some(costs.into()),
            fix: Some(fix.into()),
            degrades: degrades.to_vec(),
            ..Self::plain(name, Status::Warn, finding)
        }
    }

    fn fail(
        name: impl Into<String>,
        finding: impl Into<String>,
        costs: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            costs: Some(costs.into()),
            fix: Some(fix.into()),
            ..Self::plain(name, Status::Fail, finding)
        }
    }
}

/// Runs every check, prints the report (a table, or one JSON object with `json`), and returns
/// whether observer can run here.
pub fn run(json: bool) -> anyhow::Result<bool> {
    let checks = checks();
    let can_run = can_run(&checks);
    let mut out = io::stdout().lock();
    if json {
        #[derive(Serialize)]
        struct Report<'a> {
            checks: &'a [Check],
            can_run: bool,
        }
        serde_json::to_writer(
            &mut out,
            &Report {
                checks: &checks,
                can_run,
            },
        )?;
        writeln!(out)?;
    } else {
        out.write_all(render_text(&checks).as_bytes())?;
    }
    out.flush()?;
    Ok(can_run)
}

/// Every check on this host. Side effects are those of observer's own start-up: tracefs is
/// mounted if it is not and this process may, and the programs are loaded, attached and
/// detached again.
#[must_use]
pub fn checks() -> Vec<Check> {
    assess(&Facts::gather())
}

/// Whether no check failed.
#[must_use]
pub fn can_run(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

/// One line per check, an indented `costs:` and `fix:` under each warning and failure, then
/// the closing sentence.
#[must_use]
pub fn render_text(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        // Errors can span lines (verifier output); the table keeps one line per check.
        let finding: Vec<&str> = c
            .finding
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let _ = writeln!(
            out,
            "{:<4}  {:<width$}  {}",
            c.status.word(),
            c.name,
            finding.join(" / ")
        );
        if let Some(costs) = &c.costs {
            let _ = writeln!(out, "      costs: {costs}");
        }
        if let Some(fix) = &c.fix {
            let _ = writeln!(out, "      fix: {fix}");
        }
    }
    let _ = writeln!(out, "\n{}", summary(checks));
    out
}

/// The closing sentence: whether observer can run, and which features are degraded.
#[must_use]
pub fn summary(checks: &[Check]) -> String {
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.name.as_str())
        .collect();
    let warned = checks.iter().filter(|c| c.status == Status::Warn).count();
    let degraded: BTreeSet<Feature> = checks
        .iter()
        .filter(|c| c.status == Status::Warn)
        .flat_map(|c| c.degrades.iter().copied())
        .collect();
    let names: Vec<&str> = degraded.iter().map(|f| f.name()).collect();
    let features = match names.len() {
        0 if warned == 0 => "nothing is degraded".to_owned(),
        0 => format!(
            "{} (no feature known to be degraded)",
            plural(warned, "warning")
        ),
        n => format!("{} degraded: {}", plural(n, "feature"), names.join(", ")),
    };
    if failed.is_empty() {
        format!("observer can run here; {features}.")
    } else {
        format!(
            "observer cannot run here: {} failed ({}); besides, {features}.",
            plural(failed.len(), "check"),
            failed.join(", ")
        )
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

// ---------------------------------------------------------------------------------------------
// Facts

/// Where tracefs stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum TracefsFact {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    State,
    Reset(ResetDirection),
    /// Attached as a raw tracepoint: its record's fields are not read.
    Timer,
    Retransmit(RetransmitKind),
    /// Attached as a raw tracepoint, too.
    SocketError,
}

struct Tracepoint {
    category: &'static str,
    name: &'static str,
    role: Role,
}

/// The tracepoints the programs attach to.
const TRACEPOINTS: [Tracepoint; 9] = [
    Tracepoint {
        category: "sock",
        name: "inet_sock_set_state",
        role: Role::State,
    },
    Tracepoint {
        category: "tcp",
        name: "tcp_send_reset",
        role: Role::Reset(ResetDirection::Sent),
    },
    Tracepoint {
        category: "tcp",
        name: "tcp_receive_reset",
        role: Role::Reset(ResetDirection::Received),
    },
    Tracepoint {
        category: "timer",
        name: "timer_start",
        role: Role::Timer,
    },
    Tracepoint {
        category: "timer",
        name: "timer_cancel",
        role: Role::Timer,
    },
    Tracepoint {
        category: "timer",
        name: "timer_expire_entry",
        role: Role::Timer,
    },
    Tracepoint {
        category: "tcp",
        name: "tcp_retransmit_skb",
        role: Role::Retransmit(RetransmitKind::Segment),
    },
    Tracepoint {
        category: "tcp",
        name: "tcp_retransmit_synack",
        role: Role::Retransmit(RetransmitKind::Synack),
    },
    Tracepoint {
        category: "sock",
        name: "inet_sk_error_report",
        role: Role::SocketError,
    },
];

/// One tracepoint on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Presence {
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
enum BtfFact {
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
enum DumpFailure {
    Enter,
    Open,
    Module,
    Other,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct SockDiagFact {
    dumped: usize,
    sockets: usize,
    failed: Vec<(DumpFailure, String)>,
}

struct Facts {
    release: String,
    euid: u32,
    caps: Option<u64>,
    tracefs: TracefsFact,
    /// One per [`TRACEPOINTS`] entry; `None` when tracefs could not be read.
    tracepoints: Option<Vec<Presence>>,
    /// Whether `tcp:tcp_send_reset` has `reason`; `None` when that tracepoint is unusable.
    reset_reason_field: Option<bool>,
    btf: BtfFact,
    kallsyms: Result<u64, KallsymsError>,
    kptr_restrict: Option<i64>,
    perf_event_paranoid: Option<i64>,
    hz: Option<u32>,
    sock_diag: SockDiagFact,
    bpf_stats_enabled: Option<i64>,
    unprivileged_bpf_disabled: Option<i64>,
    trial: Result<Features, String>,
}

impl Facts {
    fn gather() -> Self {
        let tracefs = gather_tracefs();
        let (tracepoints, reset_reason_field) = match tracefs.path() {
            Some(path) => {
                let (found, reason) = gather_tracepoints(path);
                (Some(found), reason)
            }
            None => (None, None),
        };
        Self {
            release: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned()),
            // SAFETY: geteuid cannot fail.
            euid: unsafe { libc::geteuid() },
            caps: privileges::effective_capabilities(),
            tracefs,
            tracepoints,
            reset_reason_field,
            btf: gather_btf(),
            kallsyms: kallsyms::address_of(TW_TIMER_HANDLER),
            kptr_restrict: sysctl("kernel/kptr_restrict"),
            perf_event_paranoid: sysctl("kernel/perf_event_paranoid"),
            hz: kernel_config::hz(),
            sock_diag: gather_sock_diag(),
            bpf_stats_enabled: sysctl("kernel/bpf_stats_enabled"),
            unprivileged_bpf_disabled: sysctl("kernel/unprivileged_bpf_disabled"),
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

/// Reads each tracepoint's format and builds the decoder's layout from it, as the loader does.
fn gather_tracepoints(tracefs: &Path) -> (Vec<Presence>, Option<bool>) {
    let mut reason = None;
    let mut found = Vec::new();
    for tp in &TRACEPOINTS {
        let presence = match Format::read(tracefs, tp.category, tp.name) {
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
                            reason = Some(layout.has_reason());
                        }
                        Presence::Usable
                    }
                    Err(e) => Presence::Unusable(e.to_string()),
                },
                Role::Timer | Role::SocketError => Presence::PresentRaw,
                Role::Retransmit(kind) => match RetransmitLayout::from_format(&format, kind) {
                    Ok(_) => Presence::Usable,
                    Err(e) => Presence::Unusable(e.to_string()),
                },
            },
        };
        found.push(presence);
    }
    (found, reason)
}

/// The BTF lookups the loader makes for each feature (see `load::configure`); the timewait
/// members are covered by the trial load, which reports them with the feature.
fn gather_btf() -> BtfFact {
    let btf = match KernelBtf::load() {
        Ok(btf) => btf,
        Err(e) => return BtfFact::Missing(e.to_string()),
    };
    let offset = |strukt: &str, path: &str| {
        btf.offset_of(strukt, path)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    BtfFact::Present {
        netns: offset("sock", "__sk_common.skc_net.net").and_then(|()| offset("net", "ns.inum")),
        sk_socket: offset("sock", "sk_socket"),
        skb_netns: offset("sk_buff", "dev").and_then(|()| offset("net_device", "nd_net.net")),
        reason_names: btf
            .enum_values("sk_rst_reason")
            .map(drop)
            .map_err(|e| e.to_string()),
    }
}

fn gather_sock_diag() -> SockDiagFact {
    let snapshot = sockdiag::dump_all();
    let mut fact = SockDiagFact {
        sockets: snapshot.sockets.len(),
        ..SockDiagFact::default()
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
        fact.failed
            .push((kind, format!("{}: {error}", ns.path.display())));
    }
    fact.dumped = snapshot.namespaces - snapshot.failed.len();
    fact
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

// ---------------------------------------------------------------------------------------------
// Verdicts

const COST_NETNS: &str =
    "events carry no network namespace (`netns` is null, and `--netns` matches nothing)";
const COST_CLOSED_BEFORE_ACCEPT: &str = "a connection the client gave up on in the accept \
     queue looks like any CLOSE_WAIT: no `[closed by the peer before accept()]`, and \
     `observer_tcp_closed_before_accept_total` stays 0";
const COST_TIMEWAIT: &str = "TIME_WAIT is not observed: a closing connection ends at its \
     FIN_WAIT2 -> CLOSE, with no TIME_WAIT lines, durations, counts or usage ratios, and the \
     TIME_WAIT alert rules never fire";
const COST_NO_REASON: &str = "RSTs sent are classified from the socket's history only: \
     abortive closes and RSTs without a socket are still named, but closes with unread data, \
     FIN_WAIT2 timeouts, orphan pressure, timeouts and invalid segments all count as `other`, \
     and `reason` is null";
const COST_EXISTING_SOCKETS: &str = "sockets already open when observer starts are not \
     learnt (one already stuck in CLOSE_WAIT stays invisible until it closes), ends that were \
     missed are not reconciled, and TIME_WAIT usage ratios lack the namespace's limits";
const FIX_BTF: &str = "a kernel built with CONFIG_DEBUG_INFO_BTF=y";
const FIX_NEW_KERNEL: &str = "none on this kernel; the rest of observer works";

fn setcap_fix(cap: &str) -> String {
    format!(
        "run as root (`sudo observer ...`), or give the binary {cap} with the others it uses: \
         `sudo setcap cap_bpf,cap_perfmon,cap_sys_admin,cap_syslog,cap_sys_ptrace,cap_dac_read_search+ep \
         $(command -v observer)`"
    )
}

fn assess(f: &Facts) -> Vec<Check> {
    let mut checks = vec![kernel_check(&f.release)];
    checks.extend(capability_checks(f.caps, f.euid, f.kallsyms.is_ok()));
    checks.push(tracefs_check(&f.tracefs));
    checks.push(btf_check(&f.btf, f.reset_reason_field == Some(true)));
    if let Some(found) = &f.tracepoints {
        for (tp, presence) in TRACEPOINTS.iter().zip(found) {
            checks.push(tracepoint_check(tp, presence));
        }
    }
    if let Some(has_reason) = f.reset_reason_field {
        checks.push(reset_reason_check(has_reason));
    }
    checks.push(kallsyms_check(
        &f.kallsyms,
        f.kptr_restrict,
        f.perf_event_paranoid,
    ));
    checks.push(hz_check(f.hz));
    checks.push(sock_diag_check(&f.sock_diag));
    checks.push(bpf_stats_check(f.bpf_stats_enabled));
    checks.push(unprivileged_bpf_check(f.unprivileged_bpf_disabled));
    checks.push(trial_check(&f.trial));
    checks
}

/// `(major, minor)` of a release such as `6.18.44-fc-v657` or `5.15.0-91-generic`.
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut numbers = release.split(|c: char| !c.is_ascii_digit());
    let major = numbers.next()?.parse().ok()?;
    let minor = numbers.next()?.parse().ok()?;
    Some((major, minor))
}

fn kernel_check(release: &str) -> Check {
    const NAME: &str = "kernel";
    let Some(version) = parse_release(release) else {
        return Check::warn(
            NAME,
            format!("release {release:?} is not a version this check can read"),
            "what this kernel lacks cannot be told from its version; the trial load below \
             has the last word",
            "none needed if the trial load succeeds",
            &[],
        );
    };
    if version < (5, 8) {
        Check::fail(
            NAME,
            format!("{release}: older than 5.8"),
            "observer cannot run: the kernel has no BPF ring buffer (Linux 5.8), through which \
             every event reaches the daemon, nor CAP_BPF and CAP_PERFMON",
            "upgrade to Linux 5.8 or newer (5.12+ also counts skipped program runs; 6.10+ says \
             why each RST was sent)",
        )
    } else if version < (5, 12) {
        Check::warn(
            NAME,
            format!("{release}: has the BPF ring buffer (5.8+), older than 5.12"),
            "the kernel does not count the runs of a program it skips while another tracing \
             program runs on the same CPU (`recursion_misses`, Linux 5.12): events lost that \
             way are missing from the loss counters",
            "upgrade to Linux 5.12 or newer",
            &[Feature::SkippedRuns],
        )
    } else {
        Check::ok(
            NAME,
            format!("{release}: BPF ring buffer (5.8+), skipped program runs counted (5.12+)"),
        )
    }
}

const fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// One check per capability observer uses, from the effective set.
fn capability_checks(caps: Option<u64>, euid: u32, kallsyms_visible: bool) -> Vec<Check> {
    let Some(caps) = caps else {
        return vec![Check::warn(
            "capabilities",
            "cannot read CapEff from /proc/self/status",
            "what this process may do cannot be told in advance; the trial load below has the \
             last word",
            "mount procfs at /proc",
            &[],
        )];
    };
    let admin = has(caps, CAP_SYS_ADMIN);
    let loader = |cap: u32, name: &str, lower: &str, use_: &str, refused: &str| {
        if has(caps, cap) {
            Check::ok(name, format!("present: {use_}"))
        } else if admin {
            Check::ok(name, "absent; CAP_SYS_ADMIN stands in for it")
        } else {
            Check::fail(
                name,
                "absent, and no CAP_SYS_ADMIN to stand in for it",
                format!("observer cannot run: the kernel refuses {refused}"),
                setcap_fix(lower),
            )
        }
    };
    let mut checks = vec![
        loader(
            CAP_BPF,
            "CAP_BPF",
            "cap_bpf",
            "creating the ring buffer and maps, loading the programs",
            "to create its ring buffer and maps and to load its programs",
        ),
        loader(
            CAP_PERFMON,
            "CAP_PERFMON",
            "cap_perfmon",
            "attaching tracing programs to tracepoints, reading kernel memory from them",
            "tracing programs (attached to tracepoints, reading kernel memory)",
        ),
        syslog_check(has(caps, CAP_SYSLOG), kallsyms_visible),
    ];
    checks.extend(sock_diag_capability_checks(caps, euid));
    checks
}

/// `CAP_SYSLOG` matters only if kernel addresses are otherwise hidden.
fn syslog_check(present: bool, kallsyms_visible: bool) -> Check {
    if present {
        Check::ok(
            "CAP_SYSLOG",
            format!("present: reading the address of {TW_TIMER_HANDLER} in /proc/kallsyms"),
        )
    } else if kallsyms_visible {
        Check::ok(
            "CAP_SYSLOG",
            "absent; not needed here: /proc/kallsyms shows this process kernel addresses",
        )
    } else {
        Check::warn(
            "CAP_SYSLOG",
            "absent: /proc/kallsyms shows this process every kernel address as 0",
            format!(
                "{COST_TIMEWAIT} (the timer programs pick out timewait timers by the address \
                 of {TW_TIMER_HANDLER})"
            ),
            setcap_fix("cap_syslog"),
            &[Feature::Timewait],
        )
    }
}

/// The capabilities behind sock_diag dumps and socket owners.
fn sock_diag_capability_checks(caps: u64, euid: u32) -> Vec<Check> {
    let admin = has(caps, CAP_SYS_ADMIN);
    let mut checks = vec![if admin {
        Check::ok(
            "CAP_SYS_ADMIN",
            "present: entering each network namespace for sock_diag dumps, mounting tracefs",
        )
    } else {
        Check::warn(
            "CAP_SYS_ADMIN",
            "absent",
            format!(
                "sock_diag dumps run inside each network namespace (setns), which needs it: \
                 {COST_EXISTING_SOCKETS}; and tracefs cannot be mounted when it is not"
            ),
            setcap_fix("cap_sys_admin"),
            &[Feature::ExistingSockets],
        )
    }];
    checks.push(if has(caps, CAP_SYS_PTRACE) {
        Check::ok(
            "CAP_SYS_PTRACE",
            "present: reading other processes' /proc/PID/fd and /proc/PID/ns/net",
        )
    } else {
        Check::warn(
            "CAP_SYS_PTRACE",
            "absent",
            "socket holders are found through /proc/PID/fd only among processes this one may \
             inspect (same user, no more capabilities): for the others the owner stays \
             unknown (`?`, CLOSE_WAIT alerts without pid and comm), and network namespaces \
             reachable only through them are not dumped",
            setcap_fix("cap_sys_ptrace"),
            &[Feature::Owners, Feature::ExistingSockets],
        )
    });
    checks.push(if has(caps, CAP_DAC_READ_SEARCH) {
        Check::ok(
            "CAP_DAC_READ_SEARCH",
            "present: listing /proc/PID/fd of other users' processes",
        )
    } else if has(caps, CAP_DAC_OVERRIDE) {
        Check::ok(
            "CAP_DAC_READ_SEARCH",
            "absent; CAP_DAC_OVERRIDE stands in for it",
        )
    } else {
        let tracefs = if euid == 0 {
            ""
        } else {
            "; and tracefs (readable by root only) cannot be read"
        };
        Check::warn(
            "CAP_DAC_READ_SEARCH",
            "absent",
            format!(
                "sockets held by other users' processes have no known owner: their \
                 /proc/PID/fd cannot be listed{tracefs}"
            ),
            setcap_fix("cap_dac_read_search"),
            &[Feature::Owners],
        )
    });
    let net_admin = if has(caps, CAP_NET_ADMIN) {
        "present"
    } else {
        "absent"
    };
    checks.push(Check::info(
        "CAP_NET_ADMIN",
        format!(
            "{net_admin}; not needed: sock_diag dumps need no capability, tracing programs \
             only CAP_BPF and CAP_PERFMON"
        ),
    ));
    checks
}

fn tracefs_check(fact: &TracefsFact) -> Check {
    const NAME: &str = "tracefs";
    const COSTS: &str = "observer cannot run: it reads each tracepoint's layout from tracefs \
         and attaches its programs through it";
    match fact {
        TracefsFact::Readable(path) => {
            Check::ok(NAME, format!("mounted at {}, readable", path.display()))
        }
        TracefsFact::MountedNow(path) => Check::ok(
            NAME,
            format!(
                "was not mounted; mounted it at {}, as observer does at start",
                path.display()
            ),
        ),
        TracefsFact::Unreadable { path, error } => Check::fail(
            NAME,
            format!("mounted at {}, but unreadable: {error}", path.display()),
            COSTS,
            "run as root: tracefs is readable by root only (or with CAP_DAC_READ_SEARCH)",
        ),
        TracefsFact::NotMounted(error) => Check::fail(
            NAME,
            format!(
                "not mounted at {} or {}, and mounting it failed: {error}",
                tracefs::TRACEFS,
                tracefs::DEBUGFS_TRACING
            ),
            COSTS,
            format!(
                "`sudo mount -t tracefs nodev {}`, or run observer as root (with \
                 CAP_SYS_ADMIN it mounts tracefs itself)",
                tracefs::TRACEFS
            ),
        ),
    }
}

/// What depends on BTF, from `load::configure`: namespace offsets (transitions and RSTs),
/// `sk_socket` (closed before accept), the packet's device (namespace of an RST sent without a
/// socket), the names of `enum sk_rst_reason`, and every timewait member.
fn btf_check(fact: &BtfFact, reset_reasons: bool) -> Check {
    const NAME: &str = "BTF";
    match fact {
        BtfFact::Missing(error) => {
            let mut costs = format!(
                "{COST_NETNS}; {COST_CLOSED_BEFORE_ACCEPT}; {COST_TIMEWAIT} (timewait sockets \
                 are read through BTF offsets)"
            );
            let mut degrades = vec![
                Feature::Netns,
                Feature::ClosedBeforeAccept,
                Feature::Timewait,
            ];
            if reset_reasons {
                costs.push_str(
                    "; the kernel's RST reasons cannot be named, so RSTs sent are classified \
                     from the socket's history only",
                );
                degrades.push(Feature::ResetReasons);
            }
            Check::warn(NAME, error.clone(), costs, FIX_BTF, &degrades)
        }
        BtfFact::Present {
            netns,
            sk_socket,
            skb_netns,
            reason_names,
        } => {
            let mut problems = Vec::new();
            let mut costs = Vec::new();
            let mut degrades = Vec::new();
            if let Err(e) = netns {
                problems.push(e.clone());
                costs.push(COST_NETNS.to_owned());
                degrades.push(Feature::Netns);
            } else if let Err(e) = skb_netns {
                problems.push(e.clone());
                costs.push("RSTs sent without a socket carry no network namespace".to_owned());
                degrades.push(Feature::Netns);
            }
            if let Err(e) = sk_socket {
                problems.push(e.clone());
                costs.push(COST_CLOSED_BEFORE_ACCEPT.to_owned());
                degrades.push(Feature::ClosedBeforeAccept);
            }
            if reset_reasons && let Err(e) = reason_names {
                problems.push(e.clone());
                costs.push(
                    "the kernel's RST reasons cannot be named, so RSTs sent are classified \
                     from the socket's history only"
                        .to_owned(),
                );
                degrades.push(Feature::ResetReasons);
            }
            if problems.is_empty() {
                Check::ok(
                    NAME,
                    format!(
                        "{VMLINUX_BTF}: offsets for network namespaces, sk_socket and \
                         timewait sockets{}",
                        if reset_reasons {
                            ", RST reason names"
                        } else {
                            ""
                        }
                    ),
                )
            } else {
                Check::warn(
                    NAME,
                    format!("{VMLINUX_BTF} is incomplete: {}", problems.join("; ")),
                    costs.join("; "),
                    "none on this kernel: its structures differ from what observer reads",
                    &degrades,
                )
            }
        }
    }
}

fn tracepoint_check(tp: &Tracepoint, presence: &Presence) -> Check {
    let name = format!("{}:{}", tp.category, tp.name);
    let finding = match presence {
        Presence::Usable => {
            return Check::ok(
                name,
                "present; its format has every field the decoder reads",
            );
        }
        Presence::PresentRaw => {
            return Check::ok(
                name,
                "present (attached as a raw tracepoint: its record's fields are not read)",
            );
        }
        Presence::Missing => "missing".to_owned(),
        Presence::Unusable(error) => error.clone(),
    };
    let unusable = matches!(presence, Presence::Unusable(_));
    match tp.role {
        Role::State => Check::fail(
            name,
            finding,
            "observer cannot run: every TCP transition comes from this tracepoint",
            if unusable {
                "none on this kernel: its layout of this tracepoint is not one observer decodes"
            } else {
                "Linux 4.16 or newer, built with CONFIG_TRACEPOINTS"
            },
        ),
        Role::Reset(direction) => {
            let which = match direction {
                ResetDirection::Sent => "sent",
                ResetDirection::Received => "received",
            };
            Check::warn(
                name,
                finding,
                format!(
                    "RSTs {which} are not observed: no RST lines or `observer_tcp_resets_total` \
                     for them, and `TcpResetRateHigh` cannot fire for them; transitions still \
                     work"
                ),
                FIX_NEW_KERNEL,
                &[Feature::Resets],
            )
        }
        Role::Timer => Check::warn(
            name,
            finding,
            format!(
                "{COST_TIMEWAIT} (the timewait socket is followed through timer_start, \
                 timer_cancel and timer_expire_entry together)"
            ),
            FIX_NEW_KERNEL,
            &[Feature::Timewait],
        ),
        Role::Retransmit(kind) => Check::warn(
            name,
            finding,
            match kind {
                RetransmitKind::Segment => {
                    "retransmissions are not observed: no half-open suspects, \
                     `observer_tcp_retransmits_total` stays 0 and `TcpHalfOpenSuspected` cannot \
                     fire; timeouts are still counted"
                }
                RetransmitKind::Synack => {
                    "SYN-ACK retransmissions are not observed: \
                     `observer_tcp_synack_retransmits_total` stays empty"
                }
            },
            FIX_NEW_KERNEL,
            &[Feature::Retransmits],
        ),
        Role::SocketError => Check::warn(
            name,
            finding,
            "connections ended by errors are not observed: no timeout, refusal or reset \
             causes, `observer_tcp_connection_errors_total` stays empty and \
             `TcpTimeoutRateHigh` cannot fire",
            FIX_NEW_KERNEL,
            &[Feature::SocketErrors],
        ),
    }
}

fn reset_reason_check(has_reason: bool) -> Check {
    const NAME: &str = "RST reasons";
    if has_reason {
        Check::ok(
            NAME,
            "tcp:tcp_send_reset has `reason` (Linux 6.10+): each RST sent says why",
        )
    } else {
        Check::warn(
            NAME,
            "tcp:tcp_send_reset has no `reason` field (it came in Linux 6.10)",
            COST_NO_REASON,
            "Linux 6.10 or newer",
            &[Feature::ResetReasons],
        )
    }
}

fn kallsyms_check(
    found: &Result<u64, KallsymsError>,
    kptr_restrict: Option<i64>,
    perf_event_paranoid: Option<i64>,
) -> Check {
    const NAME: &str = TW_TIMER_HANDLER;
    let costs = format!(
        "{COST_TIMEWAIT} (the timer programs pick out timewait timers by this callback's \
         address)"
    );
    match found {
        Ok(addr) => Check::ok(NAME, format!("at {addr:#x} in /proc/kallsyms")),
        Err(KallsymsError::Hidden(_)) => {
            let shown = |v: Option<i64>| v.map_or_else(|| "unknown".to_owned(), |v| v.to_string());
            let fix = if kptr_restrict.is_some_and(|v| v >= 2) {
                "set kernel.kptr_restrict to 1 (`sudo sysctl -w kernel.kptr_restrict=1`; at 2 no \
                 process sees kernel addresses), and run with CAP_SYSLOG (root has it)"
                    .to_owned()
            } else if kptr_restrict == Some(0) && perf_event_paranoid.is_some_and(|v| v > 1) {
                "run with CAP_SYSLOG (root has it), or set kernel.perf_event_paranoid to 1 \
                 (`sudo sysctl -w kernel.perf_event_paranoid=1`), which shows kernel addresses \
                 to every process"
                    .to_owned()
            } else {
                "run with CAP_SYSLOG (root has it)".to_owned()
            };
            Check::warn(
                NAME,
                format!(
                    "/proc/kallsyms shows it at address 0 to this process \
                     (kernel.kptr_restrict={}, kernel.perf_event_paranoid={})",
                    shown(kptr_restrict),
                    shown(perf_event_paranoid)
                ),
                costs,
                fix,
                &[Feature::Timewait],
            )
        }
        Err(KallsymsError::Missing(_)) => Check::warn(
            NAME,
            "not in /proc/kallsyms: this kernel's timewait timer has another callback",
            costs,
            FIX_NEW_KERNEL,
            &[Feature::Timewait],
        ),
        Err(e @ KallsymsError::Read(_)) => Check::warn(
            NAME,
            e.to_string(),
            costs,
            "mount procfs at /proc",
            &[Feature::Timewait],
        ),
    }
}

fn hz_check(hz: Option<u32>) -> Check {
    const NAME: &str = "CONFIG_HZ";
    match hz {
        Some(hz) => Check::ok(
            NAME,
            format!("{hz}: TIME_WAIT lines say when the timewait socket ends"),
        ),
        None => Check::warn(
            NAME,
            "unknown: neither /proc/config.gz nor /boot/config-$(uname -r) is readable",
            "TIME_WAIT entries are shown without their scheduled length (no `ends in 1m00s`, \
             `timewait_timeout_ns` is null): the timer counts in jiffies",
            "`sudo modprobe configs` (gives /proc/config.gz on kernels built with \
             CONFIG_IKCONFIG), or install this kernel's config as /boot/config-$(uname -r)",
            &[Feature::TimewaitTimeouts],
        ),
    }
}

fn sock_diag_check(fact: &SockDiagFact) -> Check {
    const NAME: &str = "sock_diag";
    let Some((kind, first)) = fact.failed.first() else {
        if fact.dumped == 0 {
            return Check::warn(
                NAME,
                "no network namespace found to dump",
                COST_EXISTING_SOCKETS,
                "mount procfs at /proc",
                &[Feature::ExistingSockets],
            );
        }
        return Check::ok(
            NAME,
            format!(
                "dumped {} ({}): open sockets are learnt at start and reconciled",
                plural(fact.dumped, "network namespace"),
                plural(fact.sockets, "TCP socket")
            ),
        );
    };
    let fix = match kind {
        DumpFailure::Enter => setcap_fix("cap_sys_admin"),
        DumpFailure::Open => setcap_fix("cap_sys_ptrace"),
        DumpFailure::Module => "`sudo modprobe tcp_diag` (and inet_diag)".to_owned(),
        DumpFailure::Other => "see the error".to_owned(),
    };
    Check::warn(
        NAME,
        format!(
            "{} of {} could not be dumped; first: {first}",
            fact.failed.len(),
            plural(fact.dumped + fact.failed.len(), "network namespace")
        ),
        format!("in those namespaces, {COST_EXISTING_SOCKETS}"),
        fix,
        &[Feature::ExistingSockets],
    )
}

fn bpf_stats_check(value: Option<i64>) -> Check {
    const NAME: &str = "kernel.bpf_stats_enabled";
    Check::info(
        NAME,
        match value {
            Some(0) => {
                "0: BPF programs' run time and count are not measured (`bpftool prog` shows \
                 none for observer's); its loss counters do not depend on it"
            }
            Some(_) => {
                "on: the kernel times every BPF program run, a small cost per run; observer \
                 does not need it"
            }
            None => "not present; observer does not need it",
        },
    )
}

fn unprivileged_bpf_check(value: Option<i64>) -> Check {
    const NAME: &str = "kernel.unprivileged_bpf_disabled";
    let state = match value {
        Some(0) => "0: unprivileged users may use bpf()",
        Some(1) => "1: unprivileged bpf() is off until reboot",
        Some(2) => "2: unprivileged bpf() is off",
        Some(_) => "unprivileged bpf() is off",
        None => "not present",
    };
    Check::info(
        NAME,
        format!(
            "{state}; changes nothing for observer, whose tracing programs need CAP_BPF and \
             CAP_PERFMON either way"
        ),
    )
}

fn trial_check(trial: &Result<Features, String>) -> Check {
    const NAME: &str = "trial load";
    let features = match trial {
        Ok(features) => features,
        Err(error) => {
            return Check::fail(
                NAME,
                error.clone(),
                "observer cannot run here as this process: loading or attaching the programs \
                 failed",
                "follow the error's advice; the failed checks above name what is missing",
            );
        }
    };
    let mut attached = vec!["transitions"];
    let mut off = Vec::new();
    let mut degrades = Vec::new();
    let mut consider = |availability: &Availability, what: &'static str, feature| match availability
    {
        Availability::Active => attached.push(what),
        Availability::Unavailable(why) => {
            off.push(format!("{what} ({why})"));
            degrades.push(feature);
        }
    };
    consider(&features.resets, "RSTs", Feature::Resets);
    consider(&features.timewait, "TIME_WAIT", Feature::Timewait);
    consider(
        &features.closed_before_accept,
        "closed-before-accept detection",
        Feature::ClosedBeforeAccept,
    );
    consider(
        &features.retransmits,
        "retransmissions",
        Feature::Retransmits,
    );
    consider(
        &features.socket_errors,
        "connection errors",
        Feature::SocketErrors,
    );
    if features.resets.is_active() && features.reset_reasons {
        attached.push("RST reasons");
    }
    let done = format!(
        "loaded and attached, then detached: {}",
        attached.join(", ")
    );
    if off.is_empty() {
        Check::ok(NAME, done)
    } else {
        Check::warn(
            NAME,
            done,
            format!("off on this kernel: {}", off.join("; ")),
            "see the checks above for each",
            &degrades,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This project's test machine as doctor sees it: everything present.
    fn healthy() -> Facts {
        Facts {
            release: "6.18.44-fc-v657".to_owned(),
            euid: 0,
            caps: Some(0x1ff_feff_ffff),
            tracefs: TracefsFact::Readable(PathBuf::from("/sys/kernel/tracing")),
            tracepoints: Some(vec![Presence::Usable; TRACEPOINTS.len()]),
            reset_reason_field: Some(true),
            btf: BtfFact::Present {
                netns: Ok(()),
                sk_socket: Ok(()),
                skb_netns: Ok(()),
                reason_names: Ok(()),
            },
            kallsyms: Ok(0xffff_ffff_8200_6870),
            kptr_restrict: Some(0),
            perf_event_paranoid: Some(2),
            hz: Some(250),
            sock_diag: SockDiagFact {
                dumped: 1,
                sockets: 3,
                failed: Vec::new(),
            },
            bpf_stats_enabled: Some(0),
            unprivileged_bpf_disabled: Some(2),
            trial: Ok(Features {
                reset_reasons: true,
                ..Features::default()
            }),
        }
    }

    fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name} in {checks:#?}"))
    }

    fn costs(check: &Check) -> &str {
        check.costs.as_deref().unwrap_or_default()
    }

    fn fix(check: &Check) -> &str {
        check.fix.as_deref().unwrap_or_default()
    }

    #[test]
    fn a_healthy_host_is_all_ok_but_the_informational_checks() {
        let checks = assess(&healthy());
        for c in &checks {
            let expected = if c.name.starts_with("kernel.") || c.name == "CAP_NET_ADMIN" {
                Status::Info
            } else {
                Status::Ok
            };
            assert_eq!(c.status, expected, "{c:?}");
            assert!(c.costs.is_none() && c.fix.is_none(), "{c:?}");
        }
        assert!(can_run(&checks));
        assert_eq!(
            summary(&checks),
            "observer can run here; nothing is degraded."
        );
        // kernel, 7 capabilities, tracefs, BTF, 9 tracepoints, RST reasons, tw_timer_handler,
        // CONFIG_HZ, sock_diag, 2 sysctls, trial load.
        assert_eq!(checks.len(), 26);
    }

    #[test]
    fn capability_masks_decode_into_one_check_each() {
        let statuses = |caps: u64| {
            capability_checks(Some(caps), 0, false)
                .into_iter()
                .map(|c| (c.name, c.status))
                .collect::<Vec<_>>()
        };
        let all = statuses(u64::MAX);
        assert!(
            all.iter()
                .all(|(n, s)| *s == Status::Ok || n == "CAP_NET_ADMIN"),
            "{all:?}"
        );

        let none = capability_checks(Some(0), 0, false);
        assert_eq!(find(&none, "CAP_BPF").status, Status::Fail);
        assert_eq!(find(&none, "CAP_PERFMON").status, Status::Fail);
        for name in [
            "CAP_SYS_ADMIN",
            "CAP_SYSLOG",
            "CAP_SYS_PTRACE",
            "CAP_DAC_READ_SEARCH",
        ] {
            assert_eq!(find(&none, name).status, Status::Warn, "{name}");
        }
        assert!(fix(find(&none, "CAP_BPF")).contains("setcap"));
        assert!(costs(find(&none, "CAP_PERFMON")).starts_with("observer cannot run"));
        assert!(
            find(&none, "CAP_NET_ADMIN")
                .finding
                .starts_with("absent; not needed")
        );

        // CAP_SYS_ADMIN alone stands in for the two loader capabilities.
        let admin = capability_checks(Some(1 << CAP_SYS_ADMIN), 0, false);
        assert_eq!(find(&admin, "CAP_BPF").status, Status::Ok);
        assert!(find(&admin, "CAP_BPF").finding.contains("stands in"));

        // CAP_BPF without CAP_PERFMON is not enough.
        let bpf_only = capability_checks(Some(1 << CAP_BPF), 0, false);
        assert_eq!(find(&bpf_only, "CAP_BPF").status, Status::Ok);
        assert_eq!(find(&bpf_only, "CAP_PERFMON").status, Status::Fail);

        // Visible kernel addresses make CAP_SYSLOG unnecessary.
        let visible = capability_checks(Some(0), 0, true);
        assert_eq!(find(&visible, "CAP_SYSLOG").status, Status::Ok);

        // Bit positions: this host's mask lacks only bit 24 (CAP_SYS_RESOURCE).
        let host = capability_checks(Some(0x1ff_feff_ffff), 0, false);
        assert!(host.iter().all(|c| c.status != Status::Warn));
        assert!(has(0x1ff_feff_ffff, CAP_BPF) && !has(0x1ff_feff_ffff, 24));
    }

    #[test]
    fn without_cap_dac_read_search_a_non_root_user_also_loses_tracefs() {
        let root = capability_checks(Some(0), 0, false);
        let user = capability_checks(Some(0), 1000, false);
        assert!(!costs(find(&root, "CAP_DAC_READ_SEARCH")).contains("tracefs"));
        assert!(costs(find(&user, "CAP_DAC_READ_SEARCH")).contains("tracefs"));
        let override_ = capability_checks(Some(1 << CAP_DAC_OVERRIDE), 1000, false);
        assert_eq!(find(&override_, "CAP_DAC_READ_SEARCH").status, Status::Ok);
    }

    #[test]
    fn dropped_capabilities_fail_and_say_how_to_grant_them() {
        let mut facts = healthy();
        facts.caps = Some(0);
        facts.kallsyms = Err(KallsymsError::Hidden(TW_TIMER_HANDLER.to_owned()));
        facts.trial = Err("missing privileges: loading eBPF programs needs CAP_BPF".to_owned());
        let checks = assess(&facts);
        assert!(!can_run(&checks));
        assert_eq!(
            summary(&checks),
            "observer cannot run here: 3 checks failed (CAP_BPF, CAP_PERFMON, trial load); \
             besides, 3 features degraded: TIME_WAIT, sockets open before start-up, socket \
             owners."
        );
    }

    #[test]
    fn release_strings_compare_by_major_and_minor() {
        assert_eq!(parse_release("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(parse_release("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_release("6.1"), Some((6, 1)));
        assert_eq!(parse_release("6.10.0-rc1"), Some((6, 10)));
        assert_eq!(parse_release("unknown"), None);
        assert!(parse_release("5.7.19").unwrap() < (5, 8));
        assert!(parse_release("5.10.0").unwrap() < (5, 12));
        assert!(parse_release("5.10.0").unwrap() >= (5, 8));
        // 5.10 is older than 5.8 as a string, not as a version.
        assert!(parse_release("5.10.0").unwrap() > parse_release("5.8.0").unwrap());

        assert_eq!(kernel_check("4.19.0-25-amd64").status, Status::Fail);
        assert!(costs(&kernel_check("5.4.0")).contains("no BPF ring buffer"));
        let mid = kernel_check("5.10.0-28-amd64");
        assert_eq!(mid.status, Status::Warn);
        assert!(costs(&mid).contains("recursion_misses"));
        assert_eq!(mid.degrades, [Feature::SkippedRuns]);
        assert_eq!(kernel_check("5.12.0").status, Status::Ok);
        assert_eq!(kernel_check("garbage").status, Status::Warn);
    }

    #[test]
    fn missing_btf_costs_namespaces_accept_detection_and_time_wait() {
        let mut facts = healthy();
        facts.btf = BtfFact::Missing("cannot read kernel BTF".to_owned());
        let checks = assess(&facts);
        let btf = find(&checks, "BTF");
        assert_eq!(btf.status, Status::Warn);
        for needle in [
            "no network namespace",
            "before accept()",
            "TIME_WAIT is not observed",
            "RST reasons cannot be named",
        ] {
            assert!(costs(btf).contains(needle), "{needle}: {btf:?}");
        }
        assert_eq!(fix(btf), FIX_BTF);
        assert!(can_run(&checks));

        // Before 6.10 there are no reasons to name, so BTF costs none.
        let older = btf_check(&facts.btf, false);
        assert!(!costs(&older).contains("RST reasons"));
        assert!(!older.degrades.contains(&Feature::ResetReasons));
    }

    #[test]
    fn incomplete_btf_names_only_what_is_lost() {
        let fact = BtfFact::Present {
            netns: Ok(()),
            sk_socket: Err("kernel BTF has no member `sk_socket` in struct sock".to_owned()),
            skb_netns: Ok(()),
            reason_names: Ok(()),
        };
        let check = btf_check(&fact, true);
        assert_eq!(check.status, Status::Warn);
        assert!(check.finding.contains("sk_socket"));
        assert_eq!(costs(&check), COST_CLOSED_BEFORE_ACCEPT);
        assert_eq!(check.degrades, [Feature::ClosedBeforeAccept]);
    }

    #[test]
    fn tracepoints_fail_only_when_the_transition_one_is_missing() {
        let state = tracepoint_check(&TRACEPOINTS[0], &Presence::Missing);
        assert_eq!(state.status, Status::Fail);
        assert!(fix(&state).contains("4.16"));

        let send = tracepoint_check(&TRACEPOINTS[1], &Presence::Missing);
        assert_eq!(send.status, Status::Warn);
        assert!(costs(&send).starts_with("RSTs sent are not observed"));
        let receive = tracepoint_check(
            &TRACEPOINTS[2],
            &Presence::Unusable("field `saddr` is missing".to_owned()),
        );
        assert_eq!(receive.finding, "field `saddr` is missing");
        assert!(costs(&receive).starts_with("RSTs received are not observed"));

        let timer = tracepoint_check(&TRACEPOINTS[4], &Presence::Missing);
        assert_eq!(timer.status, Status::Warn);
        assert!(costs(&timer).contains("TIME_WAIT is not observed"));
        assert_eq!(timer.degrades, [Feature::Timewait]);
    }

    #[test]
    fn kernels_before_6_10_classify_rsts_from_history() {
        let mut facts = healthy();
        facts.reset_reason_field = Some(false);
        facts.trial = Ok(Features::default());
        let checks = assess(&facts);
        let reasons = find(&checks, "RST reasons");
        assert_eq!(reasons.status, Status::Warn);
        assert!(costs(reasons).contains("history only"));
        assert_eq!(fix(reasons), "Linux 6.10 or newer");
        assert_eq!(
            summary(&checks),
            "observer can run here; 1 feature degraded: RST reasons."
        );
        // Without tcp_send_reset there is nothing to ask about its fields.
        facts.reset_reason_field = None;
        assert!(!assess(&facts).iter().any(|c| c.name == "RST reasons"));
    }

    #[test]
    fn hidden_kernel_addresses_say_which_setting_to_change() {
        let hidden = || Err(KallsymsError::Hidden(TW_TIMER_HANDLER.to_owned()));
        let paranoid = kallsyms_check(&hidden(), Some(0), Some(2));
        assert_eq!(paranoid.status, Status::Warn);
        assert!(paranoid.finding.contains("kptr_restrict=0"));
        assert!(costs(&paranoid).contains("TIME_WAIT is not observed"));
        assert!(fix(&paranoid).contains("perf_event_paranoid to 1"));
        let strict = kallsyms_check(&hidden(), Some(2), Some(2));
        assert!(fix(&strict).contains("kptr_restrict to 1"));
        let restricted = kallsyms_check(&hidden(), Some(1), Some(2));
        assert_eq!(fix(&restricted), "run with CAP_SYSLOG (root has it)");
        let missing = kallsyms_check(
            &Err(KallsymsError::Missing(TW_TIMER_HANDLER.to_owned())),
            Some(0),
            None,
        );
        assert_eq!(fix(&missing), FIX_NEW_KERNEL);
    }

    #[test]
    fn unknown_hz_costs_the_timeout_lengths_only() {
        let check = hz_check(None);
        assert_eq!(check.status, Status::Warn);
        assert!(costs(&check).contains("without their scheduled length"));
        assert!(fix(&check).contains("modprobe configs"));
        assert_eq!(check.degrades, [Feature::TimewaitTimeouts]);
        assert!(hz_check(Some(1000)).finding.starts_with("1000"));
    }

    #[test]
    fn unmounted_tracefs_fails_with_the_mount_command() {
        let check = tracefs_check(&TracefsFact::NotMounted(
            "Operation not permitted (os error 1)".to_owned(),
        ));
        assert_eq!(check.status, Status::Fail);
        assert!(check.finding.contains("Operation not permitted"));
        assert!(fix(&check).contains("mount -t tracefs nodev /sys/kernel/tracing"));
        let unreadable = tracefs_check(&TracefsFact::Unreadable {
            path: PathBuf::from("/sys/kernel/tracing"),
            error: "Permission denied (os error 13)".to_owned(),
        });
        assert_eq!(unreadable.status, Status::Fail);
        assert!(fix(&unreadable).contains("root"));
    }

    #[test]
    fn sock_diag_failures_point_at_the_missing_capability() {
        let fact = SockDiagFact {
            dumped: 0,
            sockets: 0,
            failed: vec![(
                DumpFailure::Enter,
                "/proc/1/ns/net: cannot enter network namespace".to_owned(),
            )],
        };
        let check = sock_diag_check(&fact);
        assert_eq!(check.status, Status::Warn);
        assert!(
            check
                .finding
                .starts_with("1 of 1 network namespace could not")
        );
        assert!(costs(&check).contains("stays invisible until it closes"));
        assert!(fix(&check).contains("cap_sys_admin"));
    }

    #[test]
    fn the_trial_reports_features_the_kernel_switched_off() {
        let features = Features {
            timewait: Availability::Unavailable("no tw_timer_handler".to_owned()),
            ..Features::default()
        };
        let check = trial_check(&Ok(features));
        assert_eq!(check.status, Status::Warn);
        assert!(
            check
                .finding
                .contains("transitions, RSTs, closed-before-accept")
        );
        assert_eq!(
            costs(&check),
            "off on this kernel: TIME_WAIT (no tw_timer_handler)"
        );
        assert_eq!(check.degrades, [Feature::Timewait]);
        let failed = trial_check(&Err("loading the eBPF programs failed".to_owned()));
        assert_eq!(failed.status, Status::Fail);
        assert_eq!(failed.finding, "loading the eBPF programs failed");
    }

    #[test]
    fn the_text_has_one_line_per_check_and_indented_advice() {
        let mut facts = healthy();
        facts.hz = None;
        let text = render_text(&assess(&facts));
        let lines: Vec<&str> = text.lines().collect();
        let hz = lines
            .iter()
            .position(|l| l.starts_with("warn  CONFIG_HZ"))
            .unwrap();
        assert!(lines[hz + 1].starts_with("      costs: TIME_WAIT entries"));
        assert!(lines[hz + 2].starts_with("      fix: `sudo modprobe configs`"));
        assert!(lines.iter().any(|l| l.starts_with("ok    kernel ")));
        assert_eq!(
            lines.last().copied(),
            Some("observer can run here; 1 feature degraded: TIME_WAIT timeout lengths.")
        );
    }

    #[test]
    fn json_has_every_field_and_nulls_for_no_advice() {
        let checks = assess(&healthy());
        let value = serde_json::to_value(&checks[0]).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "name": "kernel",
                "status": "ok",
                "finding": checks[0].finding,
                "costs": null,
                "fix": null,
            })
        );
        let warn = serde_json::to_value(hz_check(None)).unwrap();
        assert_eq!(warn["status"], "warn");
        assert!(warn["costs"].is_string() && warn["fix"].is_string());
    }
}
