//! What survives a restart, kill -9 included: when each CLOSE_WAIT socket began and since when
//! each alert holds. Written atomically every few seconds; read once at start, after the
//! sock_diag seed, so that ages and alerts continue instead of starting over.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use jiff::Timestamp;
use observer_common::TcpState;
use serde::{Deserialize, Serialize};

use crate::{
    alerts::{Engine, engine::SavedAlert},
    inventory::mono_now_ns,
    track::{Tracker, Tuple},
};

const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    version: u32,
    written: Timestamp,
    close_wait: Vec<SavedSocket>,
    alerts: Vec<SavedAlert>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedSocket {
    netns: u32,
    local: SocketAddr,
    remote: SocketAddr,
    since: Timestamp,
    lower_bound: bool,
}

/// Converts between `CLOCK_MONOTONIC` ns and wall-clock time, as of now.
#[derive(Clone, Copy)]
struct Clocks {
    mono_ns: u64,
    wall: Timestamp,
}

impl Clocks {
    fn now() -> Self {
        Self {
            mono_ns: mono_now_ns(),
            wall: Timestamp::now(),
        }
    }

    fn wall_of(self, mono_ns: u64) -> Timestamp {
        let ago = i64::try_from(self.mono_ns.saturating_sub(mono_ns)).unwrap_or(i64::MAX);
        self.wall
            .checked_sub(jiff::SignedDuration::from_nanos(ago))
            .unwrap_or(self.wall)
    }

    /// `None` for a time in the future (the wall clock was stepped back).
    fn mono_of(self, wall: Timestamp) -> Option<u64> {
        let ago = u64::try_from(self.wall.duration_since(wall).as_nanos()).ok()?;
        Some(self.mono_ns.saturating_sub(ago))
    }
}

/// Where restart state is kept, and the last write's failure (logged once).
pub struct RestartState {
    path: PathBuf,
    failing: bool,
}

impl RestartState {
    #[must_use]
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            failing: false,
        }
    }

    /// Writes the state (to a temporary file renamed over the old one: a crash mid-write
    /// leaves the previous state).
    pub fn save(&mut self, tracker: &Tracker, engine: &Engine) {
        let clocks = Clocks::now();
        let saved = Saved {
            version: VERSION,
            written: clocks.wall,
            close_wait: tracker
                .close_wait()
                .into_iter()
                .map(|e| SavedSocket {
                    netns: e.tuple.netns,
                    local: e.tuple.local,
                    remote: e.tuple.remote,
                    since: clocks.wall_of(e.since_ns),
                    lower_bound: e.lower_bound,
                })
                .collect(),
            alerts: engine.saved(),
        };
        match write_atomically(&self.path, &saved) {
            Ok(()) => {
                if self.failing {
                    log::info!("restart state written to {} again", self.path.display());
                }
                self.failing = false;
            }
            Err(e) if !self.failing => {
                self.failing = true;
                log::warn!(
                    "cannot write restart state to {}: {e}; CLOSE_WAIT ages and alerts will start \
                     over after a restart (create the directory, or set tracker.state_file)",
                    self.path.display()
                );
            }
            Err(_) => {}
        }
    }

    /// Restores what a previous run saved: CLOSE_WAIT starts into the freshly seeded tracker,
    /// alerts into the engine. Returns (sockets, alerts) restored.
    pub fn restore(&self, tracker: &mut Tracker, engine: &mut Engine) -> (usize, usize) {
        let saved: Saved = match std::fs::read(&self.path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(saved) => saved,
                Err(e) => {
                    log::warn!(
                        "ignoring the restart state in {}: {e} (it is rewritten in a few seconds)",
                        self.path.display()
                    );
                    return (0, 0);
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => return (0, 0),
            Err(e) => {
                log::warn!(
                    "cannot read the restart state in {}: {e}",
                    self.path.display()
                );
                return (0, 0);
            }
        };
        if saved.version != VERSION {
            log::info!(
                "ignoring restart state of version {} in {}",
                saved.version,
                self.path.display()
            );
            return (0, 0);
        }
        let clocks = Clocks::now();
        let mut sockets = 0;
        for s in &saved.close_wait {
            let tuple = Tuple {
                netns: s.netns,
                local: s.local,
                remote: s.remote,
            };
            if let Some(since) = clocks.mono_of(s.since)
                && tracker.backdate(&tuple, TcpState::CloseWait, since, s.lower_bound)
            {
                sockets += 1;
            }
        }
        let alerts = saved.alerts.len();
        engine.restore(saved.alerts, clocks.mono_ns);
        (sockets, alerts)
    }
}

fn write_atomically(path: &Path, saved: &Saved) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(saved).map_err(io::Error::other)?;
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
