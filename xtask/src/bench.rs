//! `cargo xtask bench`: the tracker's userspace figures (benches/tracker/), then the
//! system benchmark (benches/churn), which prints the one table and writes
//! target/bench/bench.json with both.

use std::{os::fd::AsFd as _, process::Stdio};

use anyhow::{Context as _, bail};

pub fn run(quick: bool, args: &[String]) -> anyhow::Result<()> {
    super::setup::run()?;
    super::setup::bench_tools();
    if !super::is_root() {
        bail!(
            "cargo xtask bench needs root: it loads eBPF programs, turns BPF statistics on and \
             creates network namespaces (try `sudo -E cargo xtask bench`)"
        );
    }
    // What the benchmark measures is what `cargo xtask run` and `cargo xtask deb` ship.
    let release = super::pgo::Release::prepare();
    eprintln!("xtask: {}", release.describe());
    let dir = super::workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tracker = dir.join("tracker.json");
    // A stale file must not pass for this run's figures.
    let _ = std::fs::remove_file(&tracker);
    let tracker_arg = tracker.to_string_lossy().into_owned();
    let mut cmd = vec![
        "bench",
        "-p",
        "observer",
        "--bench",
        "tracker",
        "--",
        "--output",
        &tracker_arg,
    ];
    if quick {
        // Seconds instead of minutes; the table says at how many sockets memory was measured.
        cmd.extend(["--connections", "20000", "--sockets", "100000"]);
    }
    eprintln!("xtask: userspace figures: cargo {}", cmd.join(" "));
    // Its own table goes to stderr: stdout carries only the one table of the benchmark.
    let stderr = std::io::stderr().as_fd().try_clone_to_owned()?;
    let status = release
        .cargo(&cmd)
        .stdout(Stdio::from(stderr))
        .status()
        .context("running the tracker benchmark")?;
    if !status.success() {
        bail!("the tracker benchmark failed ({status})");
    }

    let output = dir.join("bench.json").to_string_lossy().into_owned();
    let mut cmd = vec![
        "bench",
        "-p",
        "observer",
        "--bench",
        "churn",
        "--",
        "--userspace",
        &tracker_arg,
    ];
    // The benchmark takes one `--output`: the caller's, when given, else the default.
    if !names_output(args) {
        cmd.extend(["--output", &output]);
    }
    if quick {
        cmd.push("--quick");
    }
    cmd.extend(args.iter().map(String::as_str));
    eprintln!("xtask: system benchmark: cargo {}", cmd.join(" "));
    super::run_command(&mut release.cargo(&cmd))
}

/// Whether the benchmark's own arguments choose where its JSON goes.
fn names_output(args: &[String]) -> bool {
    args.iter()
        .any(|a| a == "--output" || a.starts_with("--output="))
}

#[cfg(test)]
mod tests {
    use super::names_output;

    #[test]
    fn the_callers_output_replaces_the_default() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(names_output(&args(&[
            "--rounds",
            "8",
            "--output",
            "/tmp/a.json"
        ])));
        assert!(names_output(&args(&["--output=/tmp/a.json"])));
        assert!(!names_output(&args(&["--rounds", "8"])));
        assert!(!names_output(&args(&["--outputs"])));
    }
}
