//! The packaged service on a real systemd: a Debian bookworm guest booted on Debian's 6.1
//! kernel with systemd as PID 1 installs the .deb of `cargo xtask deb` and goes through what
//! an operator does (service-check.sh says what, and how each step is checked). The guest
//! writes its results to a disk of its own; the host reads them, decides the capability checks
//! against the unit file, and prints a table.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{
    accel::Accel,
    caps,
    guest::{self, Outcome},
    install::KernelImage,
    results::Verdict,
    root,
};

/// Run by the guest's check unit (see root.rs) from the input disk.
const CHECK_SCRIPT: &str = include_str!("service-check.sh");

/// Runs the checks, then hands the results back on the disk with serial observer-out and
/// powers off. The whole journal goes along, for when a check fails.
const START_SCRIPT: &str = r#"#!/bin/sh
set -u
out=/run/observer-vm/out
mkdir -p "$out"
/bin/bash /run/observer-vm/service-check.sh /run/observer-vm "$out"
journalctl -b --no-pager >"$out/journal.txt" 2>&1
for b in /sys/block/vd*; do
    [ "$(cat "$b/serial" 2>/dev/null)" = observer-out ] && disk=/dev/${b##*/}
done
tar -cf "$disk" -C "$out" . && sync
systemctl poweroff --no-block
"#;

/// The checks service-check.sh decides, in its order; the capability rows, decided here, go
/// after dynamic_user. A check with no line in the results is reported without a result.
const GUEST_CHECKS: &[&str] = &[
    "pid1_is_systemd",
    "install",
    "started_by_install",
    "active_after_ready",
    "dynamic_user",
    "same_caps_every_thread",
    "metrics",
    "reload",
    "leak_made",
    "close_wait_alert",
    "journal_levels",
    "restart_after_kill9",
    "leak_age_survives_restart",
    "clean_stop",
    "socket_group",
    "remove",
    "purge",
];

/// The /proc/PID/status masks checked against the unit, and the unit key each must equal:
/// ambient capabilities are also what the process is permitted and has in effect.
const MASKS: &[(&str, &str)] = &[
    ("CapEff", "AmbientCapabilities"),
    ("CapPrm", "AmbientCapabilities"),
    ("CapAmb", "AmbientCapabilities"),
    ("CapBnd", "CapabilityBoundingSet"),
];

/// The results disk: room for the results and the boot's journal.
const OUT_DISK_BYTES: u64 = 64 << 20;

pub struct Row {
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
}

/// Builds (or reuses) the root and its disk image, packages the observer, boots the guest and
/// returns the table's rows. `kernel` is the 6.1 kernel.
pub fn run(
    vm_dir: &Path,
    kernel: &KernelImage,
    accel: Accel,
    timeout: Duration,
) -> anyhow::Result<(Vec<Row>, String)> {
    let started = Instant::now();
    let service_dir = vm_dir.join("service");
    fs::create_dir_all(&service_dir)?;
    let modules = kernel
        .vmlinuz
        .parent()
        .and_then(Path::parent)
        .context("the kernel image lies in boot/ of the unpacked package")?
        .join("lib/modules")
        .join(&kernel.release);
    let root_dir = root::debian_root(&service_dir)?;
    let image = root::disk_image(&service_dir, &root_dir, kernel, &modules)?;

    let dir = vm_dir.join("run/service");
    let _ = fs::remove_dir_all(&dir);
    let input = dir.join("in");
    fs::create_dir_all(&input)?;
    let deb = package(&dir.join("deb"))?;
    fs::copy(&deb, input.join("observer.deb"))?;
    fs::write(input.join("service-check.sh"), CHECK_SCRIPT)?;
    fs::write(input.join("start.sh"), START_SCRIPT)?;
    let in_tar = dir.join("in.tar");
    crate::run_command(
        Command::new("tar")
            .arg("-cf")
            .arg(&in_tar)
            .arg("-C")
            .arg(&input)
            .arg("."),
    )?;
    let out_disk = dir.join("out.img");
    fs::File::create(&out_disk)?.set_len(OUT_DISK_BYTES)?;
    let initrd = dir.join("initramfs.cpio");
    root::initramfs(&initrd, &modules)?;
    let prepared = started.elapsed();

    println!(
        "\n=== observer.service on Linux {} (Debian bookworm, systemd as PID 1, {}) ===",
        kernel.release,
        accel.name()
    );
    let qemu = qemu(kernel, accel, &initrd, &image, &in_tar, &out_disk);
    let booted = Instant::now();
    let outcome = guest::bounded(qemu, &dir.join("console.log"), timeout, |line| {
        line.contains("check: ") || line.contains("initramfs:")
    })?;
    let in_guest = booted.elapsed();
    let out = dir.join("out");
    fs::create_dir_all(&out)?;
    // The guest writes a tar archive at the start of the disk; zeros there (an empty archive
    // to tar) mean it never got that far.
    let _ = Command::new("tar")
        .arg("-xf")
        .arg(&out_disk)
        .arg("-C")
        .arg(&out)
        .stderr(std::process::Stdio::null())
        .status();
    let results = out.join("results.txt");
    let unpacked = results.exists();
    if !unpacked {
        print_tail(&dir.join("console.log"), 40);
    }
    let text = fs::read_to_string(&results).unwrap_or_default();
    let unit = fs::read_to_string(crate::workspace_root().join("deploy/systemd/observer.service"))
        .context("reading deploy/systemd/observer.service")?;
    let rows = rows(&text, &unit)?;
    let mut note = format!(
        "prepared in {}, guest ran {}",
        super::minutes(prepared),
        super::minutes(in_guest)
    );
    match outcome {
        Outcome::TimedOut => {
            note = format!(
                "{note}; did not finish within {} (stopped)",
                super::minutes(timeout)
            );
        }
        Outcome::Finished { .. } if !unpacked => {
            note.push_str("; the guest wrote no results");
        }
        Outcome::Finished { .. } => {}
    }
    Ok((rows, note))
}

/// The guest: 2 CPUs, 2 GiB, no network, the serial console on stdout, the root disk in
/// snapshot mode, the input and results disks.
fn qemu(
    kernel: &KernelImage,
    accel: Accel,
    initrd: &Path,
    image: &Path,
    in_tar: &Path,
    out_disk: &Path,
) -> Command {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-m", "2G", "-smp", "2", "-nographic", "-no-reboot"])
        .args(["-monitor", "none", "-serial", "stdio", "-nic", "none"])
        .arg("-accel")
        // One host thread for all emulated CPUs, as in the kernel matrix (see guest.rs).
        .arg(match accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg,thread=single",
        })
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        // The daily timers are masked: one that comes due during the checks (apt's, dpkg's
        // database backup) would hold dpkg's lock or slow the emulated CPU.
        .args([
            "-append",
            "console=ttyS0 panic=-1 loglevel=4 systemd.unit=observer-vm.target \
             systemd.show_status=error systemd.mask=apt-daily.timer \
             systemd.mask=apt-daily-upgrade.timer systemd.mask=dpkg-db-backup.timer \
             systemd.mask=e2scrub_all.timer systemd.mask=fstrim.timer",
        ])
        // snapshot=on: the guest's writes go to a temporary file, the cached image stays as
        // it was.
        .args(disk(image, "observer-root", "snapshot=on"))
        .args(disk(in_tar, "observer-in", "readonly=on"))
        .args(disk(out_disk, "observer-out", ""));
    qemu
}

/// qemu's arguments for a virtio disk that the guest finds by its serial (a property of the
/// device, not of the drive, in current qemu).
fn disk(file: &Path, serial: &str, extra: &str) -> [String; 4] {
    let mut drive = format!(
        "file={},format=raw,if=none,id={serial}",
        file.display().to_string().replace(',', ",,")
    );
    if !extra.is_empty() {
        drive.push(',');
        drive.push_str(extra);
    }
    [
        "-drive".to_owned(),
        drive,
        "-device".to_owned(),
        format!("virtio-blk-pci,drive={serial},serial={serial}"),
    ]
}

/// `cargo xtask deb` into `dir`; the .deb's path.
fn package(dir: &Path) -> anyhow::Result<PathBuf> {
    crate::package::deb(Some(dir.to_path_buf()), true)?;
    fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("cargo xtask deb left no .deb in {}", dir.display()))
}

/// One row per check, in order: the guest's verdicts, and the capability masks it reported
/// compared with what `unit` lists.
fn rows(results: &str, unit: &str) -> anyhow::Result<Vec<Row>> {
    let mut checks = BTreeMap::new();
    let mut facts = BTreeMap::new();
    for line in results.lines() {
        let fields: Vec<&str> = line.splitn(4, '\t').collect();
        match fields.as_slice() {
            ["check", name, verdict, detail] => {
                let verdict = match *verdict {
                    "pass" => Verdict::Passed,
                    _ => Verdict::Failed,
                };
                checks.insert((*name).to_owned(), (verdict, (*detail).to_owned()));
            }
            ["fact", name, value] | ["fact", name, value, ..] => {
                facts.insert((*name).to_owned(), (*value).to_owned());
            }
            _ => {}
        }
    }
    let mut rows = Vec::new();
    let guest_row = |name: &str| {
        let (verdict, detail) = checks
            .get(name)
            .cloned()
            .unwrap_or((Verdict::NoResult, String::new()));
        Row {
            name: name.to_owned(),
            verdict,
            detail,
        }
    };
    for name in GUEST_CHECKS {
        rows.push(guest_row(name));
        if *name == "dynamic_user" {
            rows.extend(capability_rows(&facts, unit)?);
        }
    }
    // Checks the script has that this list lacks are shown too.
    for name in checks.keys() {
        if !GUEST_CHECKS.contains(&name.as_str()) {
            rows.push(guest_row(name));
        }
    }
    Ok(rows)
}

fn capability_rows(facts: &BTreeMap<String, String>, unit: &str) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (field, key) in MASKS {
        let want = caps::from_unit(unit, key)?;
        let name = format!("capabilities {field}");
        let Some(hex) = facts.get(*field).filter(|h| !h.is_empty()) else {
            rows.push(Row {
                name,
                verdict: Verdict::NoResult,
                detail: String::new(),
            });
            continue;
        };
        let (verdict, detail) = match caps::decode(hex) {
            Ok(got) => match caps::difference(&got, &want) {
                None => (
                    Verdict::Passed,
                    format!(
                        "{hex} = {key}: {}",
                        got.iter().cloned().collect::<Vec<_>>().join(" ")
                    ),
                ),
                Some(diff) => (Verdict::Failed, format!("{hex} against {key}: {diff}")),
            },
            Err(e) => (Verdict::Failed, format!("{e:#}")),
        };
        rows.push(Row {
            name,
            verdict,
            detail,
        });
    }
    // NoNewPrivileges=yes in the unit: the kernel's flag must be set.
    let nnp = facts.get("NoNewPrivs").map(String::as_str);
    rows.push(Row {
        name: "no_new_privileges".to_owned(),
        verdict: match nnp {
            Some("1") => Verdict::Passed,
            Some(_) => Verdict::Failed,
            None => Verdict::NoResult,
        },
        detail: format!("NoNewPrivs: {}", nnp.unwrap_or("not reported")),
    });
    Ok(rows)
}

/// The table: one row per check with its detail, then the totals.
pub fn table(title: &str, rows: &[Row]) -> String {
    use std::fmt::Write as _;
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(5).max(5);
    let mut out = format!("\n{title}\n{:<width$}  result     detail\n", "check");
    let _ = writeln!(out, "{}  ---------  ------", "-".repeat(width));
    for r in rows {
        let _ = writeln!(
            out,
            "{:<width$}  {:<9}  {}",
            r.name,
            r.verdict.label(),
            shorten(&r.detail, 150)
        );
    }
    let count = |v: Verdict| rows.iter().filter(|r| r.verdict == v).count();
    let _ = writeln!(
        out,
        "total: {} passed, {} failed, {} without a result",
        count(Verdict::Passed),
        count(Verdict::Failed),
        count(Verdict::NoResult)
    );
    out
}

pub fn all_passed(rows: &[Row]) -> bool {
    !rows.is_empty() && rows.iter().all(|r| r.verdict == Verdict::Passed)
}

/// The end of the guest's console, for a run that gave no results.
fn print_tail(log: &Path, lines: usize) {
    let text = fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    println!(
        "the guest's console, last {lines} lines ({}):",
        log.display()
    );
    for line in &all[all.len().saturating_sub(lines)..] {
        println!("  | {line}");
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let cut: String = s.chars().take(max - 3).collect();
    format!("{cut}...")
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: &str = "[Service]\n\
        CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_SYS_ADMIN CAP_SYSLOG CAP_SYS_PTRACE CAP_DAC_READ_SEARCH\n\
        AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_SYS_ADMIN CAP_SYSLOG CAP_SYS_PTRACE CAP_DAC_READ_SEARCH\n";

    fn row<'a>(rows: &'a [Row], name: &str) -> &'a Row {
        rows.iter().find(|r| r.name == name).unwrap()
    }

    #[test]
    fn results_lines_become_rows_in_order() {
        let text = "check\tpid1_is_systemd\tpass\tPID 1 is /usr/lib/systemd/systemd\n\
                    check\tinstall\tfail\tapt-get install failed: a\tb\n\
                    fact\tCapEff\t000000c400280004\n\
                    fact\tCapPrm\t000000c400280004\n\
                    fact\tCapAmb\t000000c400280004\n\
                    fact\tCapBnd\t000001ffffffffff\n\
                    fact\tNoNewPrivs\t1\n\
                    check\tsomething_new\tpass\tx\n\
                    garbage\n";
        let rows = rows(text, UNIT).unwrap();
        assert_eq!(rows[0].name, "pid1_is_systemd");
        assert_eq!(rows[0].verdict, Verdict::Passed);
        assert_eq!(row(&rows, "install").verdict, Verdict::Failed);
        // A tab inside the detail stays in it.
        assert_eq!(row(&rows, "install").detail, "apt-get install failed: a\tb");
        assert_eq!(row(&rows, "metrics").verdict, Verdict::NoResult);
        assert_eq!(row(&rows, "capabilities CapEff").verdict, Verdict::Passed);
        // A full bounding set is not what the unit lists.
        let bnd = row(&rows, "capabilities CapBnd");
        assert_eq!(bnd.verdict, Verdict::Failed);
        assert!(bnd.detail.contains("extra: CAP_AUDIT_CONTROL"));
        assert_eq!(row(&rows, "no_new_privileges").verdict, Verdict::Passed);
        assert_eq!(rows.last().unwrap().name, "something_new");
        // The capability rows follow dynamic_user.
        let at = |n: &str| rows.iter().position(|r| r.name == n).unwrap();
        assert_eq!(at("capabilities CapEff"), at("dynamic_user") + 1);
        assert!(!all_passed(&rows));
    }

    #[test]
    fn no_results_pass_nothing() {
        let rows = rows("", UNIT).unwrap();
        assert!(rows.iter().all(|r| r.verdict == Verdict::NoResult));
        assert!(!all_passed(&rows));
        // Every check of the guest, a row per capability mask, and no_new_privileges.
        let expected = GUEST_CHECKS.len() + MASKS.len() + 1;
        assert!(
            table("t", &rows).contains(&format!("0 passed, 0 failed, {expected} without a result"))
        );
    }
}
