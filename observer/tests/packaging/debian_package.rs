//! The Debian package `cargo xtask deb` makes: its files and their modes, its control fields,
//! its maintainer scripts, the files it installs; lintian when installed.

use observer_testkit::skip::{skip, under_ci};
use std::{
    io::Read as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use crate::tools::{TempDir, repo, run, text};

/// What the .deb must hold: (path, mode as `dpkg-deb --contents` shows it).
const DEB_FILES: &[(&str, &str)] = &[
    ("/usr/bin/observer", "-rwxr-xr-x"),
    ("/lib/systemd/system/observer.service", "-rw-r--r--"),
    ("/etc/observer/observer.toml", "-rw-r--r--"),
    ("/usr/share/observer/observer-dashboard.json", "-rw-r--r--"),
    ("/usr/share/observer/observer-rules.yml", "-rw-r--r--"),
    ("/usr/share/man/man1/observer.1.gz", "-rw-r--r--"),
    (
        "/usr/share/bash-completion/completions/observer",
        "-rw-r--r--",
    ),
    ("/usr/share/zsh/vendor-completions/_observer", "-rw-r--r--"),
    (
        "/usr/share/fish/vendor_completions.d/observer.fish",
        "-rw-r--r--",
    ),
    ("/usr/share/doc/observer/copyright", "-rw-r--r--"),
    ("/usr/share/doc/observer/changelog.gz", "-rw-r--r--"),
];

/// Repository files the .deb ships unchanged: (source, installed path).
const SHIPPED_AS_IS: &[(&str, &str)] = &[
    (
        "deploy/systemd/observer.service",
        "lib/systemd/system/observer.service",
    ),
    ("deploy/observer.toml", "etc/observer/observer.toml"),
    (
        "deploy/grafana/observer-dashboard.json",
        "usr/share/observer/observer-dashboard.json",
    ),
    (
        "deploy/prometheus/observer-rules.yml",
        "usr/share/observer/observer-rules.yml",
    ),
];

#[test]
fn deb_holds_every_file_and_installs_cleanly() {
    let test = "deb_holds_every_file_and_installs_cleanly";
    if run("dpkg-deb", &["--version"]).is_none() {
        skip(
            test,
            "dpkg-deb is not installed (it comes with dpkg, on every Debian)",
        );
        return;
    }
    let dir = TempDir::new("deb");
    let Some(deb) = build_deb(test, &dir.0) else {
        return;
    };
    let deb = deb.to_string_lossy().into_owned();
    check_listing(&deb);
    check_fields(&deb);
    check_control_files(&deb, &dir.0.join("control"));
    check_installed_files(&deb, &dir.0.join("root"));
    lint(test, &deb);
}

/// Every file, with its mode, owned by root.
fn check_listing(deb: &str) {
    let contents = run("dpkg-deb", &["--contents", deb]).unwrap();
    assert!(contents.status.success(), "{}", text(&contents));
    let listing = String::from_utf8_lossy(&contents.stdout).into_owned();
    for (path, mode) in DEB_FILES {
        let line = listing
            .lines()
            .find(|l| l.split_whitespace().nth(5) == Some(&format!(".{path}")))
            .unwrap_or_else(|| panic!("the .deb has no {path}:\n{listing}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[0], *mode, "{path}");
        assert_eq!(fields[1], "root/root", "{path}");
    }
}

fn check_fields(deb: &str) {
    let field = |name: &str| {
        let out = run("dpkg-deb", &["--field", deb, name]).unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(field("Package"), "observer");
    assert_eq!(
        field("Version"),
        env!("CARGO_PKG_VERSION").replace('-', "~")
    );
    let arch = run("dpkg", &["--print-architecture"]).unwrap();
    assert_eq!(
        field("Architecture"),
        String::from_utf8_lossy(&arch.stdout).trim()
    );
    assert_eq!(field("Section"), "net");
    assert_eq!(field("Priority"), "optional");
    let maintainer = field("Maintainer");
    assert!(
        maintainer.contains(" <") && maintainer.ends_with('>'),
        "Maintainer: {maintainer}"
    );
    let depends = field("Depends");
    assert!(
        depends.split(", ").any(|d| d.starts_with("libc6 (>= ")),
        "Depends must name the C library version: {depends}"
    );
    assert!(!field("Description").is_empty());
}

/// conffiles, and maintainer scripts that run under sh and without systemd.
fn check_control_files(deb: &str, control: &Path) {
    let out = run("dpkg-deb", &["--control", deb, &control.to_string_lossy()]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        ["/etc/observer/observer.toml"]
    );
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.join(script);
        let body = std::fs::read_to_string(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "{script} must be executable");
        assert!(body.starts_with("#!/bin/sh\nset -e\n"), "{script}");
        let syntax = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(syntax.status.success(), "{script}: {}", text(&syntax));
        // systemd may not run (containers, chroots): every systemctl and invoke is guarded.
        if body.contains("deb-systemd-invoke") || body.contains("systemctl") {
            assert!(body.contains("[ -d /run/systemd/system ]"), "{script}");
        }
    }
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("deb-systemd-helper enable"));
    assert!(postinst.contains("action=restart"));
    let prerm = std::fs::read_to_string(control.join("prerm")).unwrap();
    assert!(prerm.contains("deb-systemd-invoke stop observer.service"));
}

/// The shipped files are the repository's, the man page is gzipped roff, the binary runs.
fn check_installed_files(deb: &str, root: &Path) {
    let out = run("dpkg-deb", &["--extract", deb, &root.to_string_lossy()]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    for (source, installed) in SHIPPED_AS_IS {
        assert!(
            std::fs::read(repo(source)).unwrap() == std::fs::read(root.join(installed)).unwrap(),
            "/{installed} differs from {source}"
        );
    }
    let mut page = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(root.join("usr/share/man/man1/observer.1.gz")).unwrap(),
    )
    .read_to_string(&mut page)
    .expect("the man page is gzip");
    assert!(
        page.contains(".TH observer 1"),
        "not an observer(1) roff page"
    );
    assert!(
        page.contains("observer run"),
        "the man page does not mention `observer run`"
    );
    let version = Command::new(root.join("usr/bin/observer"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("observer {}", env!("CARGO_PKG_VERSION"))
    );
}

/// lintian, when installed: no errors.
fn lint(test: &str, deb: &str) {
    match run("lintian", &["--no-tag-display-limit", deb]) {
        Some(out) => {
            let report = text(&out);
            let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
            assert!(errors.is_empty(), "lintian reports errors:\n{report}");
            eprintln!("lintian:\n{report}");
        }
        None => eprintln!("\n*** {test}: lintian is not installed; the .deb was not linted ***\n"),
    }
}

/// Runs `cargo xtask deb` into `dir` and returns the .deb's path. The binary is packaged as
/// it is when target/release/observer is current; otherwise it is built under CI=true (a
/// minute or two), and the test is skipped elsewhere.
fn build_deb(test: &str, dir: &Path) -> Option<PathBuf> {
    let binary = repo("target/release/observer");
    // An older binary lacks the hidden `manpage` command or has another version.
    let current = Command::new(&binary)
        .arg("manpage")
        .output()
        .is_ok_and(|o| o.status.success())
        && Command::new(&binary)
            .arg("--version")
            .output()
            .is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout).trim()
                    == format!("observer {}", env!("CARGO_PKG_VERSION"))
            });
    let mut args = vec!["xtask", "deb", "--output"];
    let dir_arg = dir.to_string_lossy().into_owned();
    args.push(&dir_arg);
    if current {
        args.push("--no-build");
    } else if !under_ci() {
        skip(
            test,
            "target/release/observer is missing or older than the sources \
             (`cargo build --release -p observer`, or run with CI=true to build it)",
        );
        return None;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(&args)
        .current_dir(repo(""))
        .output()
        .expect("running cargo xtask deb");
    assert!(
        out.status.success(),
        "cargo {} failed:\n{}",
        args.join(" "),
        text(&out)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    let deb = PathBuf::from(
        printed
            .lines()
            .last()
            .expect("xtask prints the .deb's path")
            .trim(),
    );
    assert!(deb.exists(), "{} was not written", deb.display());
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!(
            "observer_{}_",
            env!("CARGO_PKG_VERSION").replace('-', "~")
        )) && deb.extension() == Some("deb".as_ref()),
        "{name}: not observer_<version>_<arch>.deb"
    );
    Some(deb)
}
