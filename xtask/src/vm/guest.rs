//! One guest boot through virtme-ng: the host's own root file system (9p) under the guest
//! kernel, one command, its console kept in a log and bounded by a timeout. `bounded` does the
//! last part for any guest command (the service test starts qemu itself).

use std::{
    io::{BufRead as _, BufReader, Read, Write as _},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{accel::Accel, install::KernelImage};

pub struct Boot<'a> {
    /// The venv's bin directory, with `vng`.
    pub vng_bin: &'a Path,
    pub kernel: &'a KernelImage,
    pub accel: Accel,
    pub memory: &'a str,
    /// A host directory the guest may write (its /tmp, /etc... are throw-away overlays).
    pub rwdir: Option<&'a Path>,
    /// A shell command line run in the guest.
    pub exec: &'a str,
    pub timeout: Duration,
    /// Where the whole console goes, kernel lines included.
    pub console_log: &'a Path,
    /// Whether to print the guest's own lines (not the kernel's) as they come.
    pub echo: bool,
}

pub enum Outcome {
    /// The command (vng or qemu) exited; `lines` are the console's lines without the kernel's.
    Finished { lines: Vec<String> },
    /// Killed at the timeout.
    TimedOut,
}

pub fn boot(b: &Boot) -> anyhow::Result<Outcome> {
    let mut cmd = Command::new(b.vng_bin.join("vng"));
    cmd.arg("--run").arg(&b.kernel.vmlinuz).args([
        "--force-9p",
        "--memory",
        b.memory,
        "--cpus",
        "2",
        "--verbose",
    ]);
    if b.accel == Accel::Tcg {
        cmd.arg("--disable-kvm");
    }
    if let Some(dir) = b.rwdir {
        cmd.arg(format!("--rwdir={}", dir.display()));
    }
    cmd.args(["--exec", b.exec]);
    if b.accel == Accel::Tcg {
        // One host thread for all emulated CPUs: with one thread per CPU, a CPU can run code
        // that another is patching (static keys flipped as tracing programs attach and
        // detach) and hit the kernel's transient int3 after it was removed, an Oops seen in
        // call_timer_fn on 6.12. Goes last: vng passes everything after it to qemu.
        cmd.arg("--qemu-opts=-accel tcg,thread=single");
    }
    let path = std::env::var("PATH").unwrap_or_default();
    cmd.env("PATH", format!("{}:{path}", b.vng_bin.display()));
    let echo = b.echo;
    bounded(cmd, b.console_log, b.timeout, |line| {
        echo && !is_kernel_line(line)
    })
}

/// Runs a guest's command (vng, or qemu itself) with its console in `console_log`, printing the
/// lines `echo` picks, and kills its whole process group at `timeout`.
pub fn bounded(
    mut cmd: Command,
    console_log: &Path,
    timeout: Duration,
    echo: impl Fn(&str) -> bool,
) -> anyhow::Result<Outcome> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: at the timeout, qemu goes with vng.
        .process_group(0);
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let (tx, rx) = mpsc::channel::<String>();
    let readers = [
        forward(child.stdout.take().context("piped stdout")?, tx.clone()),
        forward(child.stderr.take().context("piped stderr")?, tx),
    ];
    let mut log = std::fs::File::create(console_log)
        .with_context(|| format!("creating {}", console_log.display()))?;
    let deadline = Instant::now() + timeout;
    let mut lines = Vec::new();
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                writeln!(log, "{line}")?;
                if echo(&line) {
                    println!("  | {line}");
                }
                if !is_kernel_line(&line) {
                    lines.push(line);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
        }
    }
    if timed_out {
        let pgid = i32::try_from(child.id()).context("pid fits in i32")?;
        // The whole group: vng, qemu and whatever vng started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .status();
        let _ = child.wait();
        return Ok(Outcome::TimedOut);
    }
    for reader in readers {
        let _ = reader.join();
    }
    child.wait()?;
    Ok(Outcome::Finished { lines })
}

fn forward(
    stream: impl Read + Send + 'static,
    tx: mpsc::Sender<String>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).split(b'\n') {
            let Ok(line) = line else { break };
            let text = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_owned();
            if tx.send(text).is_err() {
                break;
            }
        }
    })
}

/// A kernel message on the console: `[    1.234567] ...`.
pub fn is_kernel_line(line: &str) -> bool {
    let Some(rest) = line.trim_start().strip_prefix('[') else {
        return false;
    };
    rest.split_once(']')
        .is_some_and(|(stamp, _)| stamp.trim().parse::<f64>().is_ok())
}

/// `s` quoted for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_lines_are_told_from_the_guest_s_own() {
        assert!(is_kernel_line("[    1.234567] virtio_net virtio1: ..."));
        assert!(is_kernel_line("  [12.5] x"));
        assert!(!is_kernel_line("test kernel::resets ... ok"));
        assert!(!is_kernel_line("[ok] done"));
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
