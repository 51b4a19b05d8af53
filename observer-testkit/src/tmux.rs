//! tmux, for driving a full-screen program (`observer top`) from a test or a benchmark: a
//! detached session runs it, `capture-pane` reads its screen.

use std::{io, process::Command};

pub const TMUX: &str = "/usr/bin/tmux";

/// Runs `tmux ARGS`, returning its standard output; an error when it fails.
pub fn run(args: &[&str]) -> io::Result<String> {
    let out = Command::new(TMUX).args(args).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    String::from_utf8(out.stdout).map_err(io::Error::other)
}

/// Starts `command` in a detached session named `session`, on a 160x40 screen.
pub fn start(session: &str, command: &str) -> io::Result<()> {
    run(&[
        "new-session",
        "-d",
        "-s",
        session,
        "-x",
        "160",
        "-y",
        "40",
        command,
    ])
    .map(drop)
}
