//! deploy/systemd/observer.service: systemd accepts it, its sandbox is no looser than measured,
//! the settings the daemon relies on stay, and it grants exactly the capabilities the daemon
//! needs.
//!
//! systemd-analyze comes with systemd (Debian: the `systemd` package). Without it the tests that
//! run it are skipped loudly, except under CI=true, where that is a failure.

use observer_testkit::skip::skip;
use std::{
    collections::BTreeSet,
    io::ErrorKind,
    path::{Path, PathBuf},
    process::{Command, Output},
};

const UNIT: &str = include_str!("../../../deploy/systemd/observer.service");

/// The overall exposure `systemd-analyze security` gave the unit (systemd 252). Lower it when
/// the unit gets tighter; raising it needs a reason.
const MAX_EXPOSURE: f64 = 2.9;

/// The capabilities the daemon needs, and why. The unit must grant exactly these.
const CAPABILITIES: &[(&str, &str)] = &[
    ("CAP_BPF", "load the programs, create the ring buffer"),
    (
        "CAP_PERFMON",
        "attach tracepoint programs (perf_event_open)",
    ),
    ("CAP_SYS_ADMIN", "setns() into other network namespaces"),
    ("CAP_SYSLOG", "real addresses in /proc/kallsyms"),
    (
        "CAP_SYS_PTRACE",
        "/proc/PID/fd and /proc/PID/ns/net of other users",
    ),
    (
        "CAP_DAC_READ_SEARCH",
        "read those and tracefs despite their modes",
    ),
];

/// `systemd-analyze security` checks that show whether a capability survived into the bounding
/// set. Some settings drop capabilities silently (ProtectKernelLogs= drops CAP_SYSLOG), so the
/// unit's own lines are not enough.
const KEPT_CAPABILITY_CHECKS: &[&str] = &[
    "CapabilityBoundingSet=~CAP_BPF",
    "CapabilityBoundingSet=~CAP_SYS_ADMIN",
    "CapabilityBoundingSet=~CAP_SYSLOG",
    "CapabilityBoundingSet=~CAP_SYS_PTRACE",
    "CapabilityBoundingSet=~CAP_(DAC_*|FOWNER|IPC_OWNER)",
];

/// Every `Key=value` of the unit as (section, key, value), comments skipped.
fn assignments() -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in UNIT.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            name.clone_into(&mut section);
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not an assignment: {line:?}"));
        out.push((
            section.clone(),
            key.trim().to_owned(),
            value.trim().to_owned(),
        ));
    }
    out
}

/// The values `key` is given in `[Service]`, in order.
fn service(key: &str) -> Vec<String> {
    assignments()
        .into_iter()
        .filter(|(s, k, _)| s == "Service" && k == key)
        .map(|(_, _, v)| v)
        .collect()
}

/// The one value of `key` in `[Service]`.
fn one(key: &str) -> String {
    let values = service(key);
    assert_eq!(values.len(), 1, "{key}= should be set once: {values:?}");
    values.into_iter().next().unwrap()
}

/// The unit in a fresh directory, ExecStart pointing at the binary just built (verify wants the
/// binary to exist).
fn staged_unit(test: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("observer-unit-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let binary = env!("CARGO_BIN_EXE_observer")
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('%', "%%");
    let mut replaced = 0;
    let staged: String = UNIT
        .lines()
        .map(
            |line| match line.strip_prefix("ExecStart=/usr/bin/observer ") {
                Some(args) => {
                    replaced += 1;
                    format!("ExecStart=\"{binary}\" {args}\n")
                }
                None => format!("{line}\n"),
            },
        )
        .collect();
    assert_eq!(replaced, 1, "the unit should start /usr/bin/observer once");
    let path = dir.join("observer.service");
    std::fs::write(&path, staged).unwrap();
    (dir, path)
}

/// Runs systemd-analyze in the C locale (plain ASCII marks); `None` when it is not installed
/// (a loud skip, or a failure under CI=true).
fn systemd_analyze(test: &str, args: &[&str], unit: &Path) -> Option<Output> {
    match Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .env("LC_ALL", "C")
        .env("SYSTEMD_COLORS", "0")
        .env("SYSTEMD_PAGER", "")
        .output()
    {
        Ok(output) => Some(output),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            skip(
                test,
                "systemd-analyze is not installed (Debian: apt-get install systemd)",
            );
            None
        }
        Err(e) => panic!("running systemd-analyze: {e}"),
    }
}

#[test]
fn systemd_accepts_the_unit() {
    let (dir, unit) = staged_unit("verify");
    // --man=no: the man page is installed with the package, not present in the source tree.
    let output = systemd_analyze("systemd_accepts_the_unit", &["verify", "--man=no"], &unit);
    std::fs::remove_dir_all(dir).unwrap();
    let Some(output) = output else { return };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "systemd-analyze verify failed:\n{said}"
    );
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify complained:\n{said}"
    );
}

#[test]
fn the_sandbox_stays_as_tight_as_measured() {
    let (dir, unit) = staged_unit("security");
    let output = systemd_analyze(
        "the_sandbox_stays_as_tight_as_measured",
        &["security", "--offline=true", "--no-pager"],
        &unit,
    );
    std::fs::remove_dir_all(dir).unwrap();
    let Some(output) = output else { return };
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "systemd-analyze security failed:\n{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let exposure: f64 = report
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for observer.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{report}"));
    assert!(
        exposure <= MAX_EXPOSURE,
        "exposure {exposure} is above the {MAX_EXPOSURE} measured before:\n{report}"
    );

    for check in KEPT_CAPABILITY_CHECKS {
        let line = report
            .lines()
            .map(str::trim_start)
            .find(|l| l.split_whitespace().nth(1) == Some(check))
            .unwrap_or_else(|| panic!("no {check} line in:\n{report}"));
        // "-": exposed, i.e. the service still has the capability.
        assert!(
            line.starts_with('-'),
            "systemd takes away a capability the daemon needs: {line}"
        );
    }
}

#[test]
fn the_unit_keeps_what_the_daemon_relies_on() {
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("NotifyAccess"), "main");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("ProtectSystem"), "strict");
    assert_eq!(one("StateDirectory"), "observer");
    let watchdog = humantime::parse_duration(&one("WatchdogSec")).unwrap();
    assert!(!watchdog.is_zero(), "WatchdogSec= must enable the watchdog");

    // Each of these would break the daemon; see the comments in the unit.
    for (key, breaking) in [
        ("ProtectKernelTunables", "yes"), // hides /proc/kallsyms
        ("ProtectKernelLogs", "yes"),     // drops CAP_SYSLOG
        ("ProtectProc", "invisible"),     // hides other users' processes
        ("ProtectProc", "noaccess"),
        ("ProcSubset", "pid"), // hides /proc/sys/net and /proc/kallsyms
        ("PrivateNetwork", "yes"),
        ("PrivateUsers", "yes"), // capabilities would not reach the host's namespaces
    ] {
        assert!(
            !service(key).iter().any(|v| v == breaking),
            "{key}={breaking} breaks the daemon"
        );
    }
    // setns(CLONE_NEWNET) has to stay allowed.
    assert_eq!(one("RestrictNamespaces"), "net");
}

#[test]
fn the_unit_grants_exactly_the_documented_capabilities() {
    let documented: BTreeSet<&str> = CAPABILITIES.iter().map(|(c, _)| *c).collect();
    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        let granted: Vec<String> = service(key);
        let granted: BTreeSet<&str> = granted.iter().flat_map(|v| v.split_whitespace()).collect();
        assert_eq!(granted, documented, "{key}=");
    }
    // Each capability's reason is written down in the unit too.
    let comments: String = UNIT
        .lines()
        .filter(|l| l.trim_start().starts_with('#'))
        .collect();
    for (cap, _) in CAPABILITIES {
        assert!(
            comments.contains(cap),
            "the unit does not say why it grants {cap}"
        );
    }
}
