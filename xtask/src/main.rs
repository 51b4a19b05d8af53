//! Project tasks that cargo cannot do alone: installing the eBPF toolchain pieces, running the
//! observer and the privileged test suite, and the benchmark.

mod bench;
mod package;
mod pgo;
mod setup;
mod vm;

use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Set-up, run, test and benchmark the observer")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building the eBPF programs needs (rust-src for the nightly toolchain,
    /// bpf-linker built against that toolchain's LLVM), skipping what is present.
    Setup,
    /// Set up, build in release mode (profile-guided, as root: a training run the first time
    /// and after a source changes) and run the observer (default: `observer watch`).
    Run {
        /// Arguments for `observer`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up (including Debian's prometheus, prometheus-alertmanager and nftables, which the
    /// tests run), then run every test: unit tests, the packaging checks, and the privileged
    /// integration tests against the running kernel, one at a time (skipped loudly without
    /// root; a failure under CI=true).
    Test {
        /// Extra arguments for `cargo test` (after `--`: for the test binaries, e.g. a filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure what observing costs and whether anything is lost (needs root): connection
    /// churn with no tracer, `observer run`, bcc's tcpstates (Debian's libbpf-tools, installed
    /// if missing) and a minimal ring-buffer program, alternating; the kernel's run time per
    /// program; the daemon's CPU and memory; the tracker's throughput and bytes per socket.
    /// Prints one table; the figures go to target/bench/bench.json (or where `--output`
    /// after `--` says).
    Bench {
        /// A few seconds instead of minutes: one small round, fewer sockets.
        #[arg(long)]
        quick: bool,
        /// Extra arguments for the system benchmark
        /// (`cargo bench -p observer --bench churn -- --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// `observer run` under hostile loads, each bounded and in a namespace of its own (needs
    /// root): a TIME_WAIT pile-up and its expiry burst, a SYN flood, an RST storm, a 4K ring
    /// overflow and recovery, reconciliations under churn, a SIGHUP storm, start-up beside
    /// 400,000 sockets, kill -9 and restart, a soak of five minutes. Each is checked against
    /// the kernel's own counters and socket lists and against accounting identities; one table,
    /// and target/stress/stress.json.
    Stress {
        /// A minute or two instead of about fifteen: every scenario smaller.
        #[arg(long)]
        quick: bool,
        /// Extra arguments for the stress run (`cargo bench -p observer --bench stress --
        /// --help` lists them, e.g. `--only timewait_expiry,soak`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build the release binary (profile-guided, as root) and package it as a .deb
    /// with dpkg-deb (target/debian/observer_<version>_<arch>.deb).
    Deb {
        /// Directory the .deb is written to (default: target/debian in the workspace).
        #[arg(long, value_name = "DIR")]
        output: Option<std::path::PathBuf>,
        /// Package the existing target/release/observer without building it.
        #[arg(long)]
        no_build: bool,
    },
    /// Run the privileged test suite inside virtual machines booted on Debian's kernels (needs
    /// root): installs qemu, busybox and kmod (Debian), virtme-ng (PyPI, in target/vm/venv)
    /// and the newest 6.1 and 6.12 kernel packages (unpacked under target/vm/kernels), builds
    /// the tests on the host, runs them one at a time in each guest with KVM when a trial boot
    /// shows it works, software emulation otherwise, and prints a pass/fail table per kernel.
    ///
    /// Then the service test: a Debian bookworm root with systemd (debootstrap, cached in
    /// target/vm/service) boots on the 6.1 kernel with systemd as PID 1, installs the .deb of
    /// `cargo xtask deb` and checks what an operator relies on: active only after READY=1, the
    /// dynamic user with exactly the unit's capabilities, /metrics, a CLOSE_WAIT leak's alert
    /// with its owner in the journal at warning level, reload (RELOADING=1 then READY=1), a
    /// clean stop, restart after kill -9 with the leak's age kept, a group's member
    /// watching through the daemon's socket without root, apt-get remove and purge.
    /// One table of checks; a few minutes once cached (about two more the first time).
    VmTest {
        /// Which kernels.
        #[arg(long, value_enum, default_value = "all")]
        kernel: vm::KernelChoice,
        /// Bound of each guest's run, boot included, in minutes.
        #[arg(long, default_value_t = 90)]
        timeout_minutes: u64,
        /// Skip the service test.
        #[arg(long, conflicts_with = "service_only")]
        no_service: bool,
        /// Only the service test, no kernel matrix.
        #[arg(long)]
        service_only: bool,
        /// Bound of the service test's guest, boot included, in minutes.
        #[arg(long, default_value_t = 20)]
        service_timeout_minutes: u64,
        /// For the test harness, after `--`: a filter (e.g. `kernel::`) and its flags.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Task::Setup => setup::run(),
        Task::Run { args } => {
            setup::run()?;
            let release = pgo::Release::prepare();
            run_command(&mut release.cargo(&["build", "--release", "-p", "observer"]))?;
            let args = if args.is_empty() {
                vec!["watch".to_owned()]
            } else {
                args
            };
            let binary = release.binary();
            // The probes need root; ask sudo for it rather than fail.
            let mut cmd = if is_root() {
                Command::new(&binary)
            } else {
                eprintln!("xtask: observer needs root to load eBPF programs; running it with sudo");
                let mut sudo = Command::new("sudo");
                sudo.arg(&binary);
                sudo
            };
            let status = cmd
                .args(&args)
                .status()
                .with_context(|| format!("starting {}", binary.display()))?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Task::Test { args } => {
            setup::run()?;
            setup::test_tools()?;
            // Cargo's arguments, then the test binaries' after `--`.
            let split = args.iter().position(|a| a == "--").unwrap_or(args.len());
            let (cargo_args, harness_args) = (&args[..split], args.get(split + 1..).unwrap_or(&[]));
            let mut every = vec!["test", "--workspace"];
            every.extend(cargo_args.iter().map(String::as_str));
            every.push("--");
            every.extend(harness_args.iter().map(String::as_str));
            // The privileged tests share the kernel: an exact count must not see another
            // test's load, so they run one at a time.
            let mut privileged = vec!["test", "-p", "observer", "--test", "privileged"];
            privileged.extend(cargo_args.iter().map(String::as_str));
            privileged.extend(["--", "--test-threads=1"]);
            privileged.extend(harness_args.iter().map(String::as_str));
            let totals = test(&every)?.add(test(&privileged)?);
            println!("\nevery test binary together ({} ignored):", totals.ignored);
            println!("total: {} passed, {} failed", totals.passed, totals.failed);
            Ok(())
        }
        Task::Bench { quick, args } => bench::run(quick, &args),
        Task::Stress { quick, args } => {
            setup::run()?;
            setup::test_tools()?;
            if !is_root() {
                bail!(
                    "cargo xtask stress needs root: it loads eBPF programs and creates network \
                     namespaces (try `sudo -E cargo xtask stress`)"
                );
            }
            let release = pgo::Release::prepare();
            eprintln!("xtask: {}", release.describe());
            let mut cmd = vec!["bench", "-p", "observer", "--bench", "stress", "--"];
            if quick {
                cmd.push("--quick");
            }
            cmd.extend(args.iter().map(String::as_str));
            run_command(&mut release.cargo(&cmd))
        }
        Task::Deb { output, no_build } => package::deb(output, !no_build),
        Task::VmTest {
            kernel,
            timeout_minutes,
            no_service,
            service_only,
            service_timeout_minutes,
            args,
        } => vm::run(&vm::Options {
            kernel,
            timeout: std::time::Duration::from_secs(timeout_minutes * 60),
            harness_args: args,
            matrix: !service_only,
            service: !no_service,
            service_timeout: std::time::Duration::from_secs(service_timeout_minutes * 60),
        }),
    }
}

/// Tests counted over the binaries of `cargo test` runs.
#[derive(Clone, Copy, Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    const fn add(self, other: Self) -> Self {
        Self {
            passed: self.passed + other.passed,
            failed: self.failed + other.failed,
            ignored: self.ignored + other.ignored,
        }
    }
}

/// Runs `cargo test`, passing its output through, and counts the tests of every binary it ran.
fn test(args: &[&str]) -> anyhow::Result<Totals> {
    use std::io::BufRead as _;
    let mut child = cargo_command(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    let stdout = std::io::BufReader::new(child.stdout.take().context("piped stdout")?);
    for line in stdout.lines() {
        let line = line?;
        println!("{line}");
        if let Some(counts) = line.strip_prefix("test result: ") {
            for part in counts.split(['.', ';']) {
                let mut words = part.split_whitespace();
                if let (Some(n), Some(what)) = (
                    words.next().and_then(|n| n.parse::<u64>().ok()),
                    words.next(),
                ) {
                    match what {
                        "passed" => passed += n,
                        "failed" => failed += n,
                        "ignored" => ignored += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        println!("\nso far ({ignored} ignored): {passed} passed, {failed} failed");
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(Totals {
        passed,
        failed,
        ignored,
    })
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines().any(|l| {
            l.strip_prefix("Uid:")
                .is_some_and(|ids| ids.split_whitespace().nth(1) == Some("0"))
        })
    })
}

/// The workspace root (xtask lives one level below it).
fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_path_buf()
}

/// `cargo ARGS` in the workspace root, with the cargo that runs xtask.
fn cargo_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    cmd.args(args).current_dir(workspace_root());
    cmd
}

/// Runs `cmd` to its end, failing with its command line unless it succeeds.
fn run_command(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}
