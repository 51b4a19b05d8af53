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
    clock::{WallClock, mono_now_ns},
    track::{Tracker, Tuple},
};

const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    version: u32,
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

/// Where restart state is kept, and the last write's failure (logged once).
pub struct RestartState {
    path: PathBuf,
    failing: bool,
    /// What the file holds now: an unchanged state is not written again.
    written: Vec<u8>,
}

impl RestartState {
    #[must_use]
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            failing: false,
            written: Vec::new(),
        }
    }

    /// Writes the state (to a temporary file renamed over the old one: a crash mid-write
    /// leaves the previous state).
    pub fn save(&mut self, tracker: &Tracker, engine: &Engine) {
        let clock = WallClock::now();
        let saved = Saved {
            version: VERSION,
            close_wait: tracker
                .close_wait()
                .into_iter()
                .map(|e| SavedSocket {
                    netns: e.tuple.netns,
                    local: e.tuple.local,
                    remote: e.tuple.remote,
                    since: clock.at(e.since_ns),
                    lower_bound: e.lower_bound,
                })
                .collect(),
            alerts: engine.saved(),
        };
        let bytes = serde_json::to_vec(&saved).expect("restart state serializes");
        if bytes == self.written {
            return;
        }
        match write_atomically(&self.path, &bytes) {
            Ok(()) => {
                self.written = bytes;
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
        let clock = WallClock::now();
        let mut sockets = 0;
        for s in &saved.close_wait {
            let tuple = Tuple {
                netns: s.netns,
                local: s.local,
                remote: s.remote,
            };
            if let Some(since) = clock.mono_of(s.since)
                && tracker.backdate(&tuple, TcpState::CloseWait, since, s.lower_bound)
            {
                sockets += 1;
            }
        }
        let alerts = saved.alerts.len();
        engine.restore(saved.alerts, mono_now_ns());
        (sockets, alerts)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
