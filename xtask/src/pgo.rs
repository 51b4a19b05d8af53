//! Profile-guided optimisation of the release binary that `cargo xtask run`, `cargo xtask deb`,
//! `cargo xtask bench` and `cargo xtask stress` build. The daemon's work per event (ring read,
//! decode, track) is branchy code, and LLVM lays it out better from a profile of the daemon at
//! work (README, Performance: "Profile-guided build").
//!
//! Training needs root, since it loads the eBPF programs. An instrumented build goes to
//! target/pgo/generate; the churn benchmark's load then runs through it, one short round of its
//! four kinds of connections with `observer run` beside it (and `observer watch` in its
//! calibration), and the daemon's processes write their profiles. llvm-profdata, from rustup's
//! llvm-tools (installed when missing), merges them into target/pgo/observer-HASH.profdata. A
//! profile older than a source file is made again. Builds with it go to target/pgo/use, apart
//! from target/release, which `cargo build --release` and the tests keep building without one.
//! The tracker benchmark's stream, on which decode and track are judged, takes no part in
//! training; the churn benchmark's daemon figures come from the same kinds of connections as
//! the training load (larger phases, more rounds).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::SystemTime,
};

use anyhow::{Context as _, bail, ensure};

/// Where the merged profile is kept, as `observer-HASH.profdata`: named by its content, so
/// that a new profile changes the compiler's flags, and with them what cargo rebuilds (it does
/// not look into the file).
const PROFILE_DIR: &str = "target/pgo";
/// Where the instrumented build goes.
const GENERATE_DIR: &str = "target/pgo/generate";
/// Where the builds with the profile go.
const USE_DIR: &str = "target/pgo/use";
/// Where the training run writes its raw profiles, its log and its figures.
const TRAINING_DIR: &str = "target/pgo/training";

/// The training load: the churn benchmark's four kinds of connections, one round of phases of
/// 30,000 (about a minute with the calibration), without its slower levels.
const TRAINING_LOAD: [&str; 10] = [
    "--tracers",
    "none,observer",
    "--rounds",
    "1",
    "--connections",
    "30000",
    "--peak-threads",
    "0",
    "--steady-rate",
    "0",
];

/// What a profile is made from: when one of these is newer, the profile is made again.
const SOURCES: [&str; 10] = [
    "Cargo.toml",
    "Cargo.lock",
    "observer/Cargo.toml",
    "observer/build.rs",
    "observer/src",
    "observer/benches/churn",
    "observer-common/src",
    "observer-ebpf/src",
    "observer-testkit/src",
    "xtask/src/pgo.rs",
];

/// How a release build is made: with the profile, or (when it could not be made, said so)
/// without.
pub struct Release {
    profile: Option<PathBuf>,
}

impl Release {
    /// Makes the profile if it is missing or stale. Without root, or when training fails, the
    /// build goes on without it, and says so loudly.
    pub fn prepare() -> Self {
        if !super::is_root() {
            eprintln!(
                "\n*** xtask: not root: the release build is made WITHOUT profile-guided \
                 optimisation (training it loads the eBPF programs); the daemon then spends \
                 about 18% more CPU per event ***\n"
            );
            return Self { profile: None };
        }
        match profile() {
            Ok(profile) => Self {
                profile: Some(profile),
            },
            Err(e) => {
                eprintln!(
                    "\n*** xtask: the profile for the release build could not be made ({e:#}); \
                     building WITHOUT profile-guided optimisation ***\n"
                );
                Self { profile: None }
            }
        }
    }

    /// `cargo ARGS` for this build: with the profile, in its own target directory.
    pub fn cargo(&self, args: &[&str]) -> Command {
        let mut cmd = super::cargo_command(args);
        if let Some(profile) = &self.profile {
            cmd.env("CARGO_TARGET_DIR", super::workspace_root().join(USE_DIR))
                .env(
                    "CARGO_ENCODED_RUSTFLAGS",
                    format!("-Cprofile-use={}", profile.display()),
                );
        }
        cmd
    }

    /// The release binary this build makes.
    pub fn binary(&self) -> PathBuf {
        let target = if self.profile.is_some() {
            USE_DIR
        } else {
            "target"
        };
        super::workspace_root()
            .join(target)
            .join("release/observer")
    }

    /// One line on what this build is.
    pub fn describe(&self) -> String {
        match &self.profile {
            Some(p) => format!("profile-guided release build ({})", p.display()),
            None => "release build WITHOUT profile-guided optimisation".to_owned(),
        }
    }
}

/// The profile, made when missing or older than a source file.
fn profile() -> anyhow::Result<PathBuf> {
    let root = super::workspace_root();
    let dir = root.join(PROFILE_DIR);
    if let Some(profile) = current_profile(&dir)
        && let Ok(made) = fs::metadata(&profile).and_then(|m| m.modified())
        && newest(&root, &SOURCES)? <= made
    {
        eprintln!(
            "xtask: profile-guided build with {} (newer than every source)",
            profile.display()
        );
        return Ok(profile);
    }
    train(&root, &dir)
}

/// The profile in `dir`, if there is one.
fn current_profile(dir: &Path) -> Option<PathBuf> {
    profiles(dir).ok()?.into_iter().next()
}

/// Every `observer-*.profdata` in `dir`, newest first.
fn profiles(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found: Vec<(SystemTime, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("observer-") && name.ends_with(".profdata") {
            found.push((fs::metadata(&path)?.modified()?, path));
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Builds the instrumented daemon, runs the training load through it and merges what its
/// processes wrote into a profile in `out`; its path.
fn train(root: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    let profdata = llvm_profdata()?;
    let dir = root.join(TRAINING_DIR);
    let raw = dir.join("raw");
    let build = dir.join("build");
    // Profiles of an older build must not be merged in.
    for d in [&raw, &build] {
        if d.exists() {
            fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
        }
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    eprintln!(
        "xtask: training the profile-guided build: an instrumented build in {GENERATE_DIR}, \
         then the churn benchmark's load through it (about a minute)"
    );
    // Build scripts and procedural macros run during the instrumented build write profiles
    // too: where the daemon's are not.
    let churn = instrumented_churn(root, &build)?;
    let log_path = dir.join("training.log");
    let log =
        fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let output = dir.join("training.json");
    let mut child = Command::new(&churn)
        .args(TRAINING_LOAD)
        .arg("--output")
        .arg(&output)
        .env("LLVM_PROFILE_FILE", raw.join("%p.profraw"))
        .current_dir(root)
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("starting {}", churn.display()))?;
    let load_pid = child.id();
    let status = child.wait()?;
    ensure!(
        status.success(),
        "the training load failed ({status}); its output is in {}",
        log_path.display()
    );
    // The load generator's own profile is not the daemon's.
    let _ = fs::remove_file(raw.join(format!("{load_pid}.profraw")));
    let mut files: Vec<PathBuf> = fs::read_dir(&raw)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "profraw"))
        .collect();
    files.sort();
    ensure!(
        !files.is_empty(),
        "the training run left no profile of the daemon in {}",
        raw.display()
    );
    let merged = dir.join("merged.profdata");
    super::run_command(
        Command::new(&profdata)
            .arg("merge")
            .arg("-o")
            .arg(&merged)
            .args(&files),
    )?;
    let bytes = fs::read(&merged).with_context(|| format!("reading {}", merged.display()))?;
    let mut hasher = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&bytes, &mut hasher);
    let profile = out.join(format!(
        "observer-{:016x}.profdata",
        std::hash::Hasher::finish(&hasher)
    ));
    for old in profiles(out)? {
        fs::remove_file(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    fs::rename(&merged, &profile).with_context(|| format!("writing {}", profile.display()))?;
    eprintln!(
        "xtask: profile of {} daemon processes merged into {}",
        files.len(),
        profile.display()
    );
    Ok(profile)
}

/// Builds the churn benchmark and the daemon it runs, instrumented (writing to `raw` unless
/// `LLVM_PROFILE_FILE` says otherwise); the benchmark's path.
fn instrumented_churn(root: &Path, raw: &Path) -> anyhow::Result<PathBuf> {
    let args = [
        "bench",
        "-p",
        "observer",
        "--bench",
        "churn",
        "--no-run",
        "--message-format=json-render-diagnostics",
    ];
    let out = super::cargo_command(&args)
        .env("CARGO_TARGET_DIR", root.join(GENERATE_DIR))
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("-Cprofile-generate={}", raw.display()),
        )
        .stderr(Stdio::inherit())
        .output()
        .context("building the instrumented daemon")?;
    if !out.status.success() {
        bail!("the instrumented build failed ({})", out.status);
    }
    // The benchmark's executable, from cargo's artifact messages.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == "churn")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .context("cargo named no executable for the churn benchmark")
}

/// The toolchain's own llvm-profdata (its LLVM must be the compiler's), installing rustup's
/// llvm-tools when it is missing.
fn llvm_profdata() -> anyhow::Result<PathBuf> {
    let root = super::workspace_root();
    let rustc = |arg: &str| -> anyhow::Result<String> {
        let out = Command::new("rustc")
            .arg(arg)
            .current_dir(&root)
            .output()
            .context("running rustc")?;
        ensure!(out.status.success(), "rustc {arg} failed");
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let sysroot = rustc("--print=sysroot")?;
    let host = rustc("-vV")?
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV names no host")?;
    let path = Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(host)
        .join("bin/llvm-profdata");
    if !path.exists() {
        eprintln!(
            "setup: installing rustup's llvm-tools (llvm-profdata, for the profile-guided build)"
        );
        super::run_command(
            Command::new("rustup")
                .args(["component", "add", "llvm-tools"])
                .current_dir(&root),
        )?;
    }
    ensure!(
        path.exists(),
        "{} is missing after `rustup component add llvm-tools`",
        path.display()
    );
    Ok(path)
}

/// The latest modification time of `paths` (files, or directories walked) under `root`.
fn newest(root: &Path, paths: &[&str]) -> anyhow::Result<SystemTime> {
    let mut latest = SystemTime::UNIX_EPOCH;
    let mut pending: Vec<PathBuf> = paths.iter().map(|p| root.join(p)).collect();
    while let Some(path) = pending.pop() {
        let meta = fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        latest = latest.max(meta.modified()?);
        if meta.is_dir() {
            for entry in fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(latest)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A directory of its own under the system's temporary directory, removed at the end.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("xtask-pgo-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        /// Writes `path` (under the scratch directory) and dates it `secs` after the epoch.
        fn file(&self, path: &str, secs: u64) -> PathBuf {
            let path = self.0.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            let file = fs::File::create(&path).unwrap();
            file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
                .unwrap();
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_newest_profile_comes_first_and_other_files_are_not_profiles() {
        let s = Scratch::new("profiles");
        let old = s.file("observer-0001.profdata", 1_000);
        let new = s.file("observer-0002.profdata", 2_000);
        s.file("merged.profdata", 3_000);
        s.file("observer.profdata", 4_000);
        assert_eq!(profiles(&s.0).unwrap(), vec![new.clone(), old]);
        assert_eq!(current_profile(&s.0), Some(new));
        assert_eq!(current_profile(&s.0.join("missing")), None);
    }

    #[test]
    fn a_source_deep_in_a_directory_dates_the_sources() {
        let s = Scratch::new("sources");
        s.file("Cargo.toml", 1_000);
        s.file("src/a.rs", 2_000);
        let deep = s.file("src/inner/b.rs", 5_000);
        // Directories are dated by their own changes too: date them before every file.
        for dir in [s.0.join("src/inner"), s.0.join("src")] {
            fs::File::open(&dir)
                .unwrap()
                .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(10))
                .unwrap();
        }
        assert_eq!(
            newest(&s.0, &["Cargo.toml", "src"]).unwrap(),
            fs::metadata(deep).unwrap().modified().unwrap()
        );
        assert!(newest(&s.0, &["Cargo.toml", "missing"]).is_err());
    }
}
