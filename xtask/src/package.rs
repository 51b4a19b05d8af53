//! `cargo xtask deb`: a Debian package of the observer, made with dpkg-deb alone (no debhelper,
//! no cargo-deb), so any Debian host that builds the observer can package it.
//!
//! The tree is staged in a temporary directory laid out as debhelper would
//! (`debian/observer/...` next to a minimal `debian/control`), which is what dpkg-shlibdeps
//! expects when it computes the library dependencies.

use std::{
    fs,
    io::ErrorKind,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail, ensure};

use crate::{run_command, setup::output_bytes};

const PACKAGE: &str = "observer";

/// Workspace files installed as they are: (source, path in the package, mode).
const FILES: &[(&str, &str, u32)] = &[
    (
        "deploy/systemd/observer.service",
        "lib/systemd/system/observer.service",
        0o644,
    ),
    ("deploy/observer.toml", "etc/observer/observer.toml", 0o644),
    (
        "deploy/grafana/observer-dashboard.json",
        "usr/share/observer/observer-dashboard.json",
        0o644,
    ),
    (
        "deploy/prometheus/observer-rules.yml",
        "usr/share/observer/observer-rules.yml",
        0o644,
    ),
];

/// Files dpkg must not overwrite once the administrator has edited them.
const CONFFILES: &[&str] = &["/etc/observer/observer.toml"];

/// `observer completions SHELL` output and where each shell looks for packaged completions.
const COMPLETIONS: &[(&str, &str)] = &[
    ("bash", "usr/share/bash-completion/completions/observer"),
    ("zsh", "usr/share/zsh/vendor-completions/_observer"),
    ("fish", "usr/share/fish/vendor_completions.d/observer.fish"),
];

/// The Maintainer field when DEBFULLNAME / DEBEMAIL (read by dch and dh_make too) are unset.
const DEFAULT_MAINTAINER_NAME: &str = "observer maintainers";
const DEFAULT_MAINTAINER_EMAIL: &str = "observer@example.org";

const SYNOPSIS: &str = "eBPF observer of TCP connection states";

const DESCRIPTION: &str = "\
observer follows every TCP connection of the host through the kernel's TCP
tracepoints and shows where connections go wrong: sockets stuck in CLOSE_WAIT
with the process holding them, TIME_WAIT pile-ups and their lifetimes, resets
named by what they mean, connections closed before they were accepted.

The observer service (observer run) serves Prometheus metrics on
127.0.0.1:9977 and evaluates alert rules; observer watch streams the
transitions to a terminal. A Grafana dashboard and Prometheus alerting rules
are installed in /usr/share/observer.";

/// Enables the unit on first install, keeps the administrator's choice on upgrades, and
/// (re)starts it. Whatever systemd itself would do is skipped when it is not running
/// (containers, chroots, image builds); the enablement links are still recorded.
const POSTINST: &str = r#"#!/bin/sh
set -e

unit=observer.service

case "$1" in
configure | abort-upgrade | abort-deconfigure | abort-remove)
    if command -v deb-systemd-helper >/dev/null 2>&1; then
        # A removal masked the unit (see postrm); installing again lifts that mask.
        deb-systemd-helper unmask "$unit" >/dev/null || true
        # was-enabled answers yes for a unit it has never seen, so a first install enables
        # the unit, while an upgrade leaves a unit the administrator disabled alone.
        if deb-systemd-helper --quiet was-enabled "$unit"; then
            deb-systemd-helper enable "$unit" >/dev/null || true
        else
            deb-systemd-helper update-state "$unit" >/dev/null || true
        fi
    fi
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
        # $2 is the version configured before: set on upgrades, empty on first install.
        if [ -n "$2" ]; then
            action=restart
        else
            action=start
        fi
        # deb-systemd-invoke starts only enabled units, and honours policy-rc.d. A daemon
        # that cannot start here (old kernel, no privileges) must not fail the install.
        deb-systemd-invoke "$action" "$unit" >/dev/null || true
    fi
    ;;
esac

exit 0
"#;

/// Stops the daemon when the package goes away; upgrades keep it running until postinst
/// restarts it with the new binary.
const PRERM: &str = r#"#!/bin/sh
set -e

# DPKG_ROOT is set when dpkg works on another root: the running system is not ours to stop.
if [ -z "${DPKG_ROOT:-}" ] && [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    deb-systemd-invoke stop observer.service >/dev/null || true
fi

exit 0
"#;

/// Forgets the unit: masked on removal (its enablement links outlive the unit file until
/// purge), fully cleared on purge, with the daemon's restart state.
const POSTRM: &str = r#"#!/bin/sh
set -e

unit=observer.service

case "$1" in
remove)
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
    fi
    if command -v deb-systemd-helper >/dev/null 2>&1; then
        deb-systemd-helper mask "$unit" >/dev/null || true
    fi
    ;;
purge)
    if command -v deb-systemd-helper >/dev/null 2>&1; then
        deb-systemd-helper purge "$unit" >/dev/null || true
        deb-systemd-helper unmask "$unit" >/dev/null || true
    fi
    # StateDirectory=observer with DynamicUser=yes: the state lives in /var/lib/private,
    # behind a symbolic link.
    rm -rf /var/lib/observer /var/lib/private/observer
    ;;
esac

exit 0
"#;

/// Builds (unless `build` is false) and packages the observer; prints the .deb's path.
pub fn deb(output: Option<PathBuf>, build: bool) -> anyhow::Result<()> {
    let root = super::workspace_root();
    let binary = if build {
        super::setup::run()?;
        let release = super::pgo::Release::prepare();
        eprintln!("xtask: packaging the {}", release.describe());
        run_command(&mut release.cargo(&["build", "--release", "-p", PACKAGE]))?;
        release.binary()
    } else {
        root.join("target/release/observer")
    };
    ensure!(
        binary.exists(),
        "{} does not exist: build it (`cargo build --release -p observer`) or drop --no-build",
        binary.display()
    );
    let crate_version = package_field(&root.join("observer/Cargo.toml"), "package", "version")?;
    // A binary left over from an older build must not go out under the current version.
    let shown = stdout(Command::new(&binary).arg("--version"))?;
    ensure!(
        shown.split_whitespace().nth(1) == Some(crate_version.as_str()),
        "{} says {:?} but the crate is version {crate_version}: rebuild it or drop --no-build",
        binary.display(),
        shown.trim()
    );
    let version = debian_version(&crate_version);
    let arch = stdout(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_owned();
    let license = package_field(&root.join("Cargo.toml"), "workspace.package", "license")?;

    let stage = Stage::new()?;
    let tree = stage.0.join("debian").join(PACKAGE);
    stage_files(&root, &binary, &tree, &version, &license)?;
    // dpkg-shlibdeps finds the package's root by its DEBIAN directory.
    fs::create_dir_all(tree.join("DEBIAN"))?;
    let depends = depends(&stage.0, &tree.join("usr/bin/observer"))?;
    control_files(&tree, &version, &arch, &depends)?;

    let out_dir = output.unwrap_or_else(|| root.join("target/debian"));
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let deb = out_dir.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    // --root-owner-group: every file root:root without fakeroot.
    run_command(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&tree)
            .arg(&deb)
            .stdout(Stdio::null()),
    )?;
    println!("{}", deb.display());
    Ok(())
}

/// Everything but DEBIAN/.
fn stage_files(
    root: &Path,
    binary: &Path,
    tree: &Path,
    version: &str,
    license: &str,
) -> anyhow::Result<()> {
    let staged = tree.join("usr/bin/observer");
    install(&staged, &fs::read(binary)?, 0o755)?;
    strip(&staged)?;
    for (source, target, mode) in FILES {
        let contents = fs::read(root.join(source)).with_context(|| format!("reading {source}"))?;
        install(&tree.join(target), &contents, *mode)?;
    }
    // Generated by the staged binary itself, which also proves the stripped copy still runs.
    let page = tree.join("usr/share/man/man1/observer.1");
    install(
        &page,
        &output_bytes(Command::new(&staged).arg("manpage"))?,
        0o644,
    )?;
    gzip(&page)?;
    for (shell, target) in COMPLETIONS {
        let script = output_bytes(Command::new(&staged).args(["completions", shell]))?;
        install(&tree.join(target), &script, 0o644)?;
    }
    let doc = tree.join("usr/share/doc").join(PACKAGE);
    install(&doc.join("copyright"), copyright(license).as_bytes(), 0o644)?;
    // Debian wants a changelog with every package; a native package's is changelog.gz.
    let changelog_path = doc.join("changelog");
    install(&changelog_path, changelog(version)?.as_bytes(), 0o644)?;
    gzip(&changelog_path)?;
    Ok(())
}

/// DEBIAN/: control, conffiles, md5sums and the maintainer scripts.
fn control_files(tree: &Path, version: &str, arch: &str, depends: &str) -> anyhow::Result<()> {
    let (installed_kib, files) = walk(tree)?;
    let control_dir = tree.join("DEBIAN");
    let depends = if depends.is_empty() {
        String::new()
    } else {
        format!("Depends: {depends}\n")
    };
    let control = format!(
        "Package: {PACKAGE}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: {}\n\
         Installed-Size: {installed_kib}\n\
         {depends}\
         Section: net\n\
         Priority: optional\n\
         Description: {SYNOPSIS}\n\
         {}\n",
        maintainer(),
        extended_description(DESCRIPTION)
    );
    install(&control_dir.join("control"), control.as_bytes(), 0o644)?;
    let conffiles = CONFFILES.join("\n") + "\n";
    install(&control_dir.join("conffiles"), conffiles.as_bytes(), 0o644)?;
    // Conffiles are left out, as dh_md5sums does: dpkg keeps their sums on its own.
    let summed: Vec<&String> = files
        .iter()
        .filter(|f| !CONFFILES.contains(&format!("/{f}").as_str()))
        .collect();
    let sums = output_bytes(Command::new("md5sum").args(&summed).current_dir(tree))?;
    install(&control_dir.join("md5sums"), &sums, 0o644)?;
    for (name, script) in [("postinst", POSTINST), ("prerm", PRERM), ("postrm", POSTRM)] {
        install(&control_dir.join(name), script.as_bytes(), 0o755)?;
    }
    Ok(())
}

/// The Depends field. dpkg-shlibdeps (from dpkg-dev) knows which package provides each
/// library the binary links and the version its symbols need; without it, see
/// `depends_from_binary`.
fn depends(stage: &Path, binary: &Path) -> anyhow::Result<String> {
    let relative = binary.strip_prefix(stage)?;
    match Command::new("dpkg-shlibdeps")
        .arg("-O")
        .arg(format!("-e{}", relative.display()))
        .current_dir(stage)
        .stderr(Stdio::inherit())
        .output()
    {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("shlibs:Depends="))
            .unwrap_or_default()
            .trim()
            .to_owned()),
        Ok(out) => bail!("dpkg-shlibdeps failed ({})", out.status),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let depends = depends_from_binary(&fs::read(binary)?);
            eprintln!(
                "xtask: dpkg-shlibdeps not found (Debian's dpkg-dev has it); Depends taken from \
                 the binary's symbol versions: {depends}"
            );
            Ok(depends)
        }
        Err(e) => Err(e).context("running dpkg-shlibdeps"),
    }
}

/// libc6 at least as new as the highest `GLIBC_x.y` symbol version the binary asks for (the
/// dynamic linker refuses older C libraries, so that is the true minimum), and libgcc-s1 when
/// the binary links libgcc_s (Rust's unwinder).
fn depends_from_binary(elf: &[u8]) -> String {
    const TAG: &[u8] = b"GLIBC_";
    let mut newest: Option<Vec<u32>> = None;
    let mut at = 0;
    while let Some(found) = find(&elf[at..], TAG) {
        let start = at + found + TAG.len();
        let len = elf[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit() || **b == b'.')
            .count();
        at = start;
        // Version names in the dynamic string table end with a NUL byte.
        if len == 0 || elf.get(start + len) != Some(&0) {
            continue;
        }
        let parsed: Option<Vec<u32>> = std::str::from_utf8(&elf[start..start + len])
            .ok()
            .and_then(|v| v.split('.').map(|n| n.parse().ok()).collect());
        if let Some(parsed) = parsed
            && newest.as_ref().is_none_or(|n| parsed > *n)
        {
            newest = Some(parsed);
        }
    }
    let mut depends = Vec::new();
    if let Some(newest) = newest {
        let dotted: Vec<String> = newest.iter().map(u32::to_string).collect();
        depends.push(format!("libc6 (>= {})", dotted.join(".")));
    }
    if find(elf, b"libgcc_s.so.1\0").is_some() {
        depends.push("libgcc-s1".to_owned());
    }
    depends.join(", ")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A Cargo pre-release (`0.2.0-rc.1`) must sort before its release, which Debian's `~` does;
/// and a hyphen would mark a Debian revision.
fn debian_version(crate_version: &str) -> String {
    crate_version.replace('-', "~")
}

/// `key = "value"` from the `[section]` table of a Cargo.toml; plain lines only, which is how
/// the workspace writes them.
fn package_field(manifest: &Path, section: &str, key: &str) -> anyhow::Result<String> {
    let text =
        fs::read_to_string(manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let header = format!("[{section}]");
    let mut inside = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == header;
        } else if inside
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
            && let Some(value) = v.trim().strip_prefix('"').and_then(|v| v.strip_suffix('"'))
        {
            return Ok(value.to_owned());
        }
    }
    bail!(
        "no {key} = \"...\" in [{section}] of {}",
        manifest.display()
    )
}

fn maintainer() -> String {
    let name = std::env::var("DEBFULLNAME").unwrap_or_default();
    let email = std::env::var("DEBEMAIL").unwrap_or_default();
    match (name.trim(), email.trim()) {
        // DEBEMAIL may hold the whole "Name <address>".
        (_, email) if email.contains('<') => email.to_owned(),
        ("", "") => format!("{DEFAULT_MAINTAINER_NAME} <{DEFAULT_MAINTAINER_EMAIL}>"),
        ("", email) => format!("{DEFAULT_MAINTAINER_NAME} <{email}>"),
        (name, "") => format!("{name} <{DEFAULT_MAINTAINER_EMAIL}>"),
        (name, email) => format!("{name} <{email}>"),
    }
}

/// Control-file continuation lines: indented by one space, blank lines as " .".
fn extended_description(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                " .".to_owned()
            } else {
                format!(" {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn copyright(license: &str) -> String {
    format!(
        "observer: observe TCP connection states with eBPF and report the ones that go wrong.\n\
         \n\
         Copyright: the observer developers\n\
         License: {license}\n\
         \n\
         observer is distributed under the license expression above (SPDX), as its Cargo.toml\n\
         declares: either license, at your option.\n\
         \n\
         On Debian systems the complete text of the Apache License, Version 2.0, is in\n\
         /usr/share/common-licenses/Apache-2.0.\n"
    )
}

fn changelog(version: &str) -> anyhow::Result<String> {
    // SOURCE_DATE_EPOCH makes the package reproducible; otherwise it is dated now.
    let mut date = Command::new("date");
    date.args(["-u", "-R"]);
    if let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH") {
        date.arg("-d").arg(format!("@{epoch}"));
    }
    let date = stdout(&mut date)?;
    Ok(format!(
        "{PACKAGE} ({version}) unstable; urgency=medium\n\
         \n  * Packaged by `cargo xtask deb` from the observer {version} sources.\n\
         \n -- {}  {}\n",
        maintainer(),
        date.trim()
    ))
}

/// Writes a file with exactly this mode, whatever the umask.
fn install(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// `gzip -9n`: best compression, and no name or time stamp inside, so the output depends
/// on the content alone.
fn gzip(path: &Path) -> anyhow::Result<()> {
    run_command(Command::new("gzip").arg("-9nf").arg(path))?;
    let mut gz = path.as_os_str().to_owned();
    gz.push(".gz");
    fs::set_permissions(&gz, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// Removes the symbol table as dh_strip does (Debian ships binaries stripped); without
/// binutils' strip the binary goes in as built.
fn strip(binary: &Path) -> anyhow::Result<()> {
    match Command::new("strip")
        .args([
            "--strip-unneeded",
            "--remove-section=.comment",
            "--remove-section=.note",
        ])
        .arg(binary)
        .status()
    {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => bail!("strip {} failed ({status})", binary.display()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            eprintln!("xtask: strip not found (binutils); the binary is packaged unstripped");
            Ok(())
        }
        Err(e) => Err(e).context("running strip"),
    }
}

/// Sets every directory under `tree` to 0755 (the umask may have narrowed them) and returns
/// the Installed-Size in KiB as dpkg-gencontrol counts it (regular files rounded up to whole
/// KiB, 1 for every other entry) with the regular files' paths relative to `tree`, sorted.
fn walk(tree: &Path) -> anyhow::Result<(u64, Vec<String>)> {
    fn visit(
        dir: &Path,
        tree: &Path,
        kib: &mut u64,
        files: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                if path.file_name() != Some("DEBIAN".as_ref()) {
                    *kib += 1;
                    visit(&path, tree, kib, files)?;
                }
            } else if kind.is_file() {
                *kib += entry.metadata()?.len().div_ceil(1024);
                files.push(path.strip_prefix(tree)?.to_string_lossy().into_owned());
            } else {
                *kib += 1;
            }
        }
        Ok(())
    }
    let (mut kib, mut files) = (0, Vec::new());
    visit(tree, tree, &mut kib, &mut files)?;
    files.sort();
    Ok((kib, files))
}

fn stdout(cmd: &mut Command) -> anyhow::Result<String> {
    Ok(String::from_utf8_lossy(&output_bytes(cmd)?).into_owned())
}

/// The staging directory, removed when the packaging ends, whether it succeeded or not.
struct Stage(PathBuf);

impl Stage {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("observer-deb-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        // dpkg-shlibdeps refuses to run without a debian/control, and wants the binary under
        // debian/<a package it names>/.
        fs::create_dir_all(dir.join("debian"))
            .with_context(|| format!("creating {}", dir.display()))?;
        fs::write(
            dir.join("debian/control"),
            format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n"),
        )?;
        Ok(Self(dir))
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pre_releases_sort_before_their_release() {
        assert_eq!(super::debian_version("0.1.0"), "0.1.0");
        assert_eq!(super::debian_version("0.2.0-rc.1"), "0.2.0~rc.1");
    }

    #[test]
    fn depends_come_from_the_newest_glibc_version_named() {
        let elf =
            b"\0libgcc_s.so.1\0libc.so.6\0GLIBC_2.3.4\0GLIBC_2.34\0GLIBC_2.9\0GLIBC_PRIVATE\0";
        assert_eq!(
            super::depends_from_binary(elf),
            "libc6 (>= 2.34), libgcc-s1"
        );
        assert_eq!(super::depends_from_binary(b"static\0"), "");
    }

    #[test]
    fn extended_description_marks_blank_lines() {
        assert_eq!(super::extended_description("a\n\nb"), " a\n .\n b");
    }
}
