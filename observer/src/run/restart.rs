//! What survives a restart, kill -9 included: when each CLOSE_WAIT socket began and since when
//! each alert holds. Written atomically every few seconds; read once at start, after the
//! sock_diag seed, so that ages and alerts continue instead of starting over.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use jiff::Timestamp;
use observer_common::TcpState;
use serde::{Deserialize, Serialize};

use crate::{
    alerts::{Engine, engine::SavedAlert},
    clock::{WallClock, mono_now_ns},
    event::{Netns, Tuple},
    track::Tracker,
};

const VERSION: u32 = 1;

/// At most this many CLOSE_WAIT sockets are kept, the oldest (those alerts are about).
const MAX_SAVED_CLOSE_WAIT: usize = 65_536;

/// What is kept: taken under the daemon's lock, written off it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Saved {
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

/// Where restart state is kept, and what was written last. Cloned handles share it, so that
/// a write can run on a blocking thread.
#[derive(Clone)]
pub struct RestartState {
    path: PathBuf,
    written: Arc<Mutex<Written>>,
}

#[derive(Default)]
struct Written {
    /// The last write failed (logged once).
    failing: bool,
    /// What the file holds now: an unchanged state is not written again.
    bytes: Vec<u8>,
}

impl RestartState {
    #[must_use]
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            written: Arc::default(),
        }
    }

    /// What to keep now: when each CLOSE_WAIT socket began (the oldest
    /// [`MAX_SAVED_CLOSE_WAIT`]), and the alerts. Cheap enough for the daemon's lock.
    #[must_use]
    pub fn snapshot(tracker: &Tracker, engine: &Engine) -> Saved {
        let clock = WallClock::now();
        Saved {
            version: VERSION,
            close_wait: tracker
                .close_wait()
                .take(MAX_SAVED_CLOSE_WAIT)
                .map(|e| SavedSocket {
                    netns: Netns::inode_or_zero(e.tuple.netns),
                    local: e.tuple.local,
                    remote: e.tuple.remote,
                    since: clock.at(e.since_ns),
                    lower_bound: e.lower_bound,
                })
                .collect(),
            alerts: engine.saved(),
        }
    }

    /// Writes the state (to a temporary file renamed over the old one: a crash mid-write
    /// leaves the previous state). Blocking: serializing tens of thousands of sockets takes
    /// milliseconds.
    pub fn write(&self, saved: &Saved) {
        let bytes = serde_json::to_vec(saved).expect("restart state serializes");
        let mut written = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if bytes == written.bytes {
            return;
        }
        match write_atomically(&self.path, &bytes) {
            Ok(()) => {
                written.bytes = bytes;
                if written.failing {
                    log::info!("restart state written to {} again", self.path.display());
                }
                written.failing = false;
            }
            Err(e) if !written.failing => {
                written.failing = true;
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
                netns: Netns::new(s.netns),
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
