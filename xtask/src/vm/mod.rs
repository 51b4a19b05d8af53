//! `cargo xtask vm-test`: the privileged test suite, built on the host, run inside virtual
//! machines booted on Debian's kernels, one pass/fail table per kernel; then the packaged
//! service on a Debian system with systemd as PID 1 (service.rs), one table of checks.

mod accel;
mod caps;
mod guest;
mod install;
mod results;
mod root;
mod service;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use guest::{Boot, Outcome, shell_quote};
use results::{Results, Totals};

/// A kernel series Debian ships for bookworm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Series {
    /// Debian 12's own LTS kernel (`linux-image-6.1.0-N-amd64`).
    V6_1,
    /// The newer LTS offered to Debian 12 (`linux-image-6.12.N+deb12-amd64`).
    V6_12,
}

impl Series {
    const ALL: [Self; 2] = [Self::V6_1, Self::V6_12];

    pub const fn name(self) -> &'static str {
        match self {
            Self::V6_1 => "6.1",
            Self::V6_12 => "6.12",
        }
    }

    /// Where `package` stands among the series' kernel image packages (higher is newer), or
    /// `None` when it is not one of them.
    fn package_rank(self, package: &str) -> Option<u32> {
        let (prefix, suffix) = match self {
            Self::V6_1 => ("linux-image-6.1.0-", "-amd64"),
            Self::V6_12 => ("linux-image-6.12.", "+deb12-amd64"),
        };
        package
            .strip_prefix(prefix)?
            .strip_suffix(suffix)?
            .parse()
            .ok()
    }
}

/// Which kernels `--kernel` chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelChoice {
    #[value(name = "6.1")]
    V6_1,
    #[value(name = "6.12")]
    V6_12,
    All,
}

impl KernelChoice {
    fn series(self) -> Vec<Series> {
        match self {
            Self::V6_1 => vec![Series::V6_1],
            Self::V6_12 => vec![Series::V6_12],
            Self::All => Series::ALL.to_vec(),
        }
    }
}

pub struct Options {
    pub kernel: KernelChoice,
    /// Bound of one guest's whole run, boot included.
    pub timeout: Duration,
    /// For the test harness: a filter and its flags.
    pub harness_args: Vec<String>,
    /// Run the kernel matrix (the privileged tests per kernel).
    pub matrix: bool,
    /// Run the service test (on 6.1, whatever `kernel` says).
    pub service: bool,
    /// Bound of the service guest's run, boot included.
    pub service_timeout: Duration,
}

pub fn run(opts: &Options) -> anyhow::Result<()> {
    if !crate::is_root() {
        bail!(
            "cargo xtask vm-test needs root: it installs Debian packages and links the guest \
             kernels' modules under /lib/modules (try `sudo -E cargo xtask vm-test`)"
        );
    }
    crate::setup::run()?;
    crate::setup::test_tools()?;
    install::debian_packages()?;
    let root = crate::workspace_root();
    let vm_dir = root.join("target/vm");
    std::fs::create_dir_all(&vm_dir)?;
    let vng_bin = install::virtme_ng(&vm_dir)?;
    let series = if opts.matrix {
        opts.kernel.series()
    } else {
        Vec::new()
    };
    let mut kernels = series
        .into_iter()
        .map(|s| Ok((s, install::kernel(&vm_dir, s)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let service_kernel = if opts.service {
        if let Some(at) = kernels.iter().position(|(s, _)| *s == Series::V6_1) {
            Some(at)
        } else {
            kernels.push((Series::V6_1, install::kernel(&vm_dir, Series::V6_1)?));
            Some(kernels.len() - 1)
        }
    } else {
        None
    };
    let accel = accel::decide(&vm_dir, &vng_bin, &kernels[0].1)?;
    let mut all_ok = true;
    if opts.matrix {
        all_ok &= matrix(opts, &root, &vm_dir, &vng_bin, &kernels, accel)?;
    }
    if let Some(at) = service_kernel {
        let started = Instant::now();
        let kernel = &kernels[at].1;
        let (rows, note) = service::run(&vm_dir, kernel, accel, opts.service_timeout)?;
        let title = format!(
            "observer.service, Debian bookworm with systemd as PID 1, Linux {} ({}, {}: {note})",
            kernel.release,
            accel.name(),
            minutes(started.elapsed())
        );
        println!("{}", service::table(&title, &rows));
        println!("guest files (console, journal, results) under target/vm/run/service/");
        all_ok &= service::all_passed(&rows);
    }
    if !all_ok {
        bail!("tests failed or did not finish in a guest; console logs under target/vm/run/");
    }
    Ok(())
}

/// The privileged tests in a guest per kernel, a table each and a summary; whether all passed.
fn matrix(
    opts: &Options,
    root: &Path,
    vm_dir: &Path,
    vng_bin: &Path,
    kernels: &[(Series, install::KernelImage)],
    accel: accel::Accel,
) -> anyhow::Result<bool> {
    let binary = build_tests()?;
    let listed = list_tests(&binary, &opts.harness_args)?;
    let mut all_ok = true;
    let mut summary = Vec::new();
    let chosen = opts.kernel.series();
    for (series, kernel) in kernels.iter().filter(|(s, _)| chosen.contains(s)) {
        let started = Instant::now();
        let run = GuestRun {
            vm_dir,
            vng_bin,
            binary: &binary,
            package_dir: &root.join("observer"),
            harness_args: &opts.harness_args,
            timeout: opts.timeout,
        };
        let (results, note) = run.tests(*series, kernel, accel)?;
        let results = results::complete(&listed, &results);
        let title = format!(
            "Linux {} ({}, {}){note}",
            kernel.release,
            accel.name(),
            minutes(started.elapsed())
        );
        println!("{}", results::table(&title, &results));
        let totals = Totals::of(&results);
        all_ok &= totals.ok() && note.is_empty();
        summary.push(format!(
            "{:<20} {:>4} passed {:>3} failed {:>3} ignored {:>3} without a result  {}{note}",
            kernel.release,
            totals.passed,
            totals.failed,
            totals.ignored,
            totals.no_result,
            minutes(started.elapsed())
        ));
    }
    println!("\nkernel matrix:");
    for line in &summary {
        println!("  {line}");
    }
    Ok(all_ok)
}

struct GuestRun<'a> {
    vm_dir: &'a Path,
    vng_bin: &'a Path,
    binary: &'a Path,
    /// The harness runs tests from their package's directory, as `cargo test` does.
    package_dir: &'a Path,
    harness_args: &'a [String],
    timeout: Duration,
}

impl GuestRun<'_> {
    /// Boots `kernel` once, runs the tests one at a time under CI=true, and reads their
    /// results back from a directory the guest may write. The note says why a run is
    /// incomplete (empty when it is not).
    fn tests(
        &self,
        series: Series,
        kernel: &install::KernelImage,
        accel: accel::Accel,
    ) -> anyhow::Result<(Results, String)> {
        let dir = self.vm_dir.join("run").join(series.name());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let (log, status, output) = (
            dir.join("results.log"),
            dir.join("status"),
            dir.join("output.txt"),
        );
        let mut harness = vec![
            shell_quote(&self.binary.display().to_string()),
            "--test-threads=1".to_owned(),
            format!("--logfile={}", shell_quote(&log.display().to_string())),
        ];
        harness.extend(self.harness_args.iter().map(|a| shell_quote(a)));
        let script = format!(
            "cd {pkg} || exit 97\n\
             export CI=true RUST_BACKTRACE=1 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
             echo \"observer-vm: $(uname -r)\"\n\
             {{ {cmd}; echo $? > {status}; }} 2>&1 | tee {output}\n",
            pkg = shell_quote(&self.package_dir.display().to_string()),
            cmd = harness.join(" "),
            status = shell_quote(&status.display().to_string()),
            output = shell_quote(&output.display().to_string()),
        );
        let script_path = dir.join("run.sh");
        std::fs::write(&script_path, script)?;
        println!(
            "\n=== Linux {} in a virtual machine ({}), tests one at a time ===",
            kernel.release,
            accel.name()
        );
        let outcome = guest::boot(&Boot {
            vng_bin: self.vng_bin,
            kernel,
            accel,
            memory: "2G",
            rwdir: Some(&dir),
            exec: &format!("sh {}", shell_quote(&script_path.display().to_string())),
            timeout: self.timeout,
            console_log: &dir.join("console.log"),
            echo: true,
        })?;
        let results = results::parse_logfile(&std::fs::read_to_string(&log).unwrap_or_default());
        let note = match outcome {
            Outcome::TimedOut => format!(
                ": did not finish within {} (stopped)",
                minutes(self.timeout)
            ),
            Outcome::Finished { .. } if !status.exists() => {
                ": the guest ended before the tests did".to_owned()
            }
            Outcome::Finished { .. } => String::new(),
        };
        Ok((results, note))
    }
}

/// Builds the privileged test binary (and the observer binary it runs) and returns its path.
/// Optimised: an emulated guest runs code many times slower than the host, and an unoptimised
/// observer took 12 s or more there to start (most of a start's instructions parse the
/// kernel's BTF).
fn build_tests() -> anyhow::Result<PathBuf> {
    let out = crate::setup::output_bytes(&mut crate::cargo_command(&[
        "test",
        "--release",
        "-p",
        "observer",
        "--test",
        "privileged",
        "--no-run",
        "--message-format=json",
    ]))?;
    for line in String::from_utf8_lossy(&out).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == "privileged"
            && let Some(exe) = msg["executable"].as_str()
        {
            return Ok(PathBuf::from(exe));
        }
    }
    bail!("cargo built no `privileged` test binary")
}

/// The names of the tests the harness arguments select, as the host lists them.
fn list_tests(binary: &Path, harness_args: &[String]) -> anyhow::Result<Vec<String>> {
    let out = crate::setup::output_bytes(
        Command::new(binary)
            .args(["--list", "--format", "terse"])
            .args(harness_args),
    )
    .context("listing the privileged tests")?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_owned)
        .collect())
}

fn minutes(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}m{:02}s", s / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_packages_are_ranked_within_their_series() {
        assert_eq!(
            Series::V6_1.package_rank("linux-image-6.1.0-48-amd64"),
            Some(48)
        );
        assert_eq!(
            Series::V6_1.package_rank("linux-image-6.1.0-48-cloud-amd64"),
            None
        );
        assert_eq!(
            Series::V6_1.package_rank("linux-image-6.12.57+deb12-amd64"),
            None
        );
        assert_eq!(
            Series::V6_12.package_rank("linux-image-6.12.57+deb12-amd64"),
            Some(57)
        );
        assert_eq!(
            Series::V6_12.package_rank("linux-image-6.12.57+deb12-rt-amd64"),
            None
        );
    }
}
