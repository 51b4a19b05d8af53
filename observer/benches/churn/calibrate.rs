//! Checks the generator's expected transitions against this kernel: each kind alone, one
//! thread, a low rate, watched by `observer watch --json --netns` (which sees only the
//! calibration namespace, so the host's other traffic cannot blur the count), transition by
//! transition.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use observer_testkit::{
    churn::{self as generator, KINDS, Kind, Load, Pairs},
    daemon::die_with_parent,
    netns::NetNs,
};

/// One kind: expected against seen.
#[derive(Clone, Debug)]
pub struct Calibration {
    pub kind: Kind,
    pub connections: u64,
    pub expected: u64,
    pub seen: u64,
    /// Pairs whose count differs: (old, new, expected, seen).
    pub differences: Vec<(String, String, u64, u64)>,
    pub resets_expected: u64,
    pub resets_seen: u64,
}

impl Calibration {
    pub fn matches(&self) -> bool {
        self.differences.is_empty() && self.resets_expected == self.resets_seen
    }
}

#[derive(Default)]
struct Seen {
    pairs: Pairs,
    resets: u64,
}

pub fn run(binary: &str, per_kind: u64) -> anyhow::Result<Vec<Calibration>> {
    let ns = NetNs::new("calibrate").context("creating a network namespace")?;
    let mut child = die_with_parent(
        Command::new(binary)
            .args(["watch", "--json", "--netns", &ns.inode().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .spawn()
    .context("starting observer watch")?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    let record = seen.clone();
    let reader = std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let mut s = record.lock().expect("not poisoned");
            match v["type"].as_str() {
                Some("reset") => s.resets += 1,
                Some("transition") => {
                    if let Some(pair) = kernel_pair(&v) {
                        *s.pairs.entry(pair).or_default() += 1;
                    }
                }
                _ => {}
            }
        }
    });
    let (tx, ready) = mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().expect("piped"));
    let log = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("watching") {
                let _ = tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    if ready.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "observer watch did not start: {}",
            log.join().unwrap_or_default().join("\n")
        );
    }

    let rows = KINDS
        .iter()
        .map(|kind| one_kind(&ns, *kind, per_kind, &seen))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(i32::try_from(child.id()).expect("pid"), libc::SIGINT) };
    let status = child.wait()?;
    let _ = reader.join();
    let log = log.join().unwrap_or_default();
    if !status.success() {
        bail!("observer watch failed ({status}): {}", log.join("\n"));
    }
    // "... lost N (ring buffer full ..." in its last line: the check is void with a loss.
    if let Some(last) = log.last()
        && !last.contains("lost 0 ")
    {
        bail!("observer watch lost events during the calibration: {last}");
    }
    Ok(rows)
}

/// Runs `per_kind` connections of `kind` alone and compares what the watcher saw.
fn one_kind(
    ns: &NetNs,
    kind: Kind,
    per_kind: u64,
    seen: &Mutex<Seen>,
) -> anyhow::Result<Calibration> {
    *seen.lock().expect("not poisoned") = Seen::default();
    let load = Load {
        threads: 1,
        connections: per_kind,
        max_time: Duration::from_secs(20),
    };
    let made = ns.enter(|| generator::run(&load, Some(kind)))?;
    let expected = made.pairs();
    let (pairs, resets) = settled(seen);
    let keys: BTreeSet<&(String, String)> = expected.keys().chain(pairs.keys()).collect();
    let differences = keys
        .into_iter()
        .filter_map(|key| {
            let e = expected.get(key).copied().unwrap_or(0);
            let s = pairs.get(key).copied().unwrap_or(0);
            (e != s).then(|| (key.0.clone(), key.1.clone(), e, s))
        })
        .collect();
    Ok(Calibration {
        kind,
        connections: made.connections(),
        expected: made.transitions(),
        seen: pairs.values().sum(),
        differences,
        resets_expected: made.resets(),
        resets_seen: resets,
    })
}

/// A watch line's kernel transition: the TIME_WAIT entry is the full socket's FIN_WAIT2 (or
/// CLOSING) -> CLOSE; TIME_WAIT restarts and ends are not kernel transitions.
fn kernel_pair(v: &Value) -> Option<(String, String)> {
    let (old, new) = (v["old_state"].as_str()?, v["new_state"].as_str()?);
    match v["note"].as_str() {
        Some("timewait_restarted" | "timewait_expired" | "timewait_killed") => None,
        Some("timewait_entered") => Some((old.to_owned(), "CLOSE".to_owned())),
        _ => Some((old.to_owned(), new.to_owned())),
    }
}

/// What was seen once nothing more arrives: at least 1.5 s after the load (a close is
/// reported without a timewait socket only after a 1 s grace), at most 10 s.
fn settled(seen: &Mutex<Seen>) -> (Pairs, u64) {
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let take = || {
        let s = seen.lock().expect("not poisoned");
        (s.pairs.clone(), s.resets)
    };
    let mut last = take();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = take();
        if now == last || start.elapsed() > Duration::from_secs(10) {
            return now;
        }
        last = now;
    }
}
