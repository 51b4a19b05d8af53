//! The daemon's Unix socket: live data for local clients (`observer watch`, `observer top`),
//! one JSON object per line both ways ([`crate::wire`]).
//!
//! The event loop hands each step's reports to [`SocketServer::publish`], which filters them
//! per client, writes each line once whatever the number of clients, and pushes it to each
//! client's bounded queue without waiting; each client's task writes its queue out. A client
//! that falls behind by a whole queue is disconnected and counted: it never slows the loop.

mod bind;
mod queue;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream, unix::OwnedWriteHalf},
};

pub use self::bind::BindError;
use self::queue::{LineQueue, Pushed};
use crate::{
    clock::{WallClock, mono_now_ns},
    config::SocketConfig,
    pipeline::{PlainReports, Shared, Step},
    track::Report,
    wire::{
        Filter,
        lines::{Line, LossCounts},
        model::Model,
        request::{ErrorLine, Request},
    },
    workload::{Attribution, Resolver},
};

/// The wall clock is re-anchored this often: NTP may step it.
const REANCHOR_EVERY: Duration = Duration::from_secs(1);

/// The first line of an event stream: the subscription is in place.
pub const SUBSCRIBED: &str = "{\"type\":\"subscribed\"}\n";

/// Longest request line read; a longer one ends the connection.
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// One client of the event stream.
struct Subscriber {
    filter: Filter,
    queue: Arc<LineQueue>,
}

type Subscribers = Arc<Mutex<Vec<Subscriber>>>;

fn lock(subscribers: &Subscribers) -> MutexGuard<'_, Vec<Subscriber>> {
    subscribers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub struct SocketServer {
    path: PathBuf,
    subscribers: Subscribers,
    wall: WallClock,
    anchored: Instant,
    /// A drop was logged: later ones are only counted (and logged at debug).
    drop_logged: bool,
    accept: tokio::task::JoinHandle<()>,
    /// Names the workload of each transition's socket, for the lines and the filters.
    workloads: Arc<Resolver>,
    /// Read while there are subscribers.
    plain_reports: PlainReports,
}

impl SocketServer {
    /// Listens on `path` as configured and serves from `shared`. Must run inside a tokio
    /// runtime.
    pub fn start(
        config: &SocketConfig,
        path: &Path,
        shared: Shared,
        workloads: Arc<Resolver>,
        plain_reports: PlainReports,
    ) -> Result<Self, BindError> {
        let listener = bind::listen(config, path)?;
        let subscribers: Subscribers = Arc::default();
        let accept = tokio::spawn(accept(
            listener,
            Clients {
                shared,
                subscribers: Arc::clone(&subscribers),
                plain_reports: plain_reports.clone(),
                limit: config.client_queue_bytes,
            },
        ));
        Ok(Self {
            path: path.to_owned(),
            subscribers,
            wall: WallClock::now(),
            anchored: Instant::now(),
            drop_logged: false,
            accept,
            workloads,
            plain_reports,
        })
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a step's lines for each client whose filter they pass: its reports, and the
    /// loss counters after new losses. Returns how many clients were cut off for falling
    /// behind.
    pub fn publish(&mut self, reports: &[Report], step: &Step) -> u64 {
        let mut subscribers = lock(&self.subscribers);
        subscribers.retain(|s| !s.queue.is_ended());
        self.plain_reports.set(!subscribers.is_empty());
        if subscribers.is_empty() || (reports.is_empty() && step.new_losses.is_none()) {
            return 0;
        }
        if self.anchored.elapsed() >= REANCHOR_EVERY {
            self.wall = WallClock::now();
            self.anchored = Instant::now();
        }
        let now_ns = mono_now_ns();
        // Each line is written once, for the first client that wants it.
        let mut written: Vec<Option<Arc<str>>> = vec![None; reports.len()];
        let workloads: Vec<Option<Arc<Attribution>>> = reports
            .iter()
            .map(|r| r.cgroup().and_then(|c| self.workloads.resolve(c)))
            .collect();
        let losses = step
            .new_losses
            .map(|(_, now)| line(&Line::Loss(LossCounts::from(now))));
        let mut dropped = 0;
        for subscriber in subscribers.iter() {
            let mut batch: Vec<Arc<str>> = Vec::new();
            for ((report, written), workload) in
                reports.iter().zip(written.iter_mut()).zip(&workloads)
            {
                if subscriber.filter.passes(report)
                    && subscriber.filter.matches_workload(workload.as_deref())
                {
                    let l = written.get_or_insert_with(|| {
                        line(
                            &Line::report(report, now_ns, &self.wall)
                                .with_workload(workload.as_deref()),
                        )
                    });
                    batch.push(Arc::clone(l));
                }
            }
            batch.extend(losses.clone());
            if subscriber.queue.push(batch) == Pushed::Overflowed {
                dropped += 1;
            }
        }
        subscribers.retain(|s| !s.queue.is_ended());
        drop(subscribers);
        if dropped > 0 {
            if self.drop_logged {
                log::debug!("{dropped} more socket clients disconnected: too slow");
            } else {
                log::warn!(
                    "a client of {} read too slowly and was disconnected (its queue of lines \
                     filled up); such drops are counted in observer_socket_client_drops_total \
                     and not logged again",
                    self.path.display()
                );
                self.drop_logged = true;
            }
        }
        dropped
    }

    /// Clients of the event stream now.
    #[must_use]
    pub fn subscribers(&self) -> usize {
        lock(&self.subscribers).len()
    }

    /// Stops accepting, ends every stream and removes the socket file.
    pub fn close(self) {
        self.accept.abort();
        for s in lock(&self.subscribers).drain(..) {
            s.queue.end();
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            log::debug!("removing {}: {e}", self.path.display());
        }
    }
}

/// A record as one line, newline included.
fn line(record: &impl Serialize) -> Arc<str> {
    let mut text = serde_json::to_string(record).unwrap_or_else(|e| {
        // Every record is plain data: this would be a bug, not a client's doing.
        serde_json::to_string(&ErrorLine::new(&e)).unwrap_or_default()
    });
    text.push('\n');
    Arc::from(text)
}

/// What serving a client takes.
#[derive(Clone)]
struct Clients {
    shared: Shared,
    subscribers: Subscribers,
    plain_reports: PlainReports,
    /// Bytes a client's queue holds.
    limit: usize,
}

async fn accept(listener: UnixListener, clients: Clients) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let clients = clients.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, &clients).await {
                        log::debug!("a socket client: {e}");
                    }
                });
            }
            Err(e) => {
                log::warn!("accepting a socket client: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Answers one client's requests until it goes, or streams events to it.
async fn serve(stream: UnixStream, clients: &Clients) -> std::io::Result<()> {
    let (read, mut out) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut text = String::new();
    loop {
        text.clear();
        let n = (&mut read)
            .take(MAX_REQUEST_BYTES as u64)
            .read_line(&mut text)
            .await?;
        if n == 0 || (!text.ends_with('\n') && n >= MAX_REQUEST_BYTES) {
            return Ok(());
        }
        if text.trim().is_empty() {
            continue;
        }
        match Request::parse(&text) {
            Err(e) => {
                out.write_all(line(&ErrorLine::new(&e)).as_bytes()).await?;
                return Ok(());
            }
            Ok(Request::Snapshot { listed, filter }) => {
                let (snapshot, breakdown) = clients
                    .shared
                    .lock()
                    .snapshot_with_breakdown(listed, &filter);
                let model = Model::new(&snapshot, &breakdown);
                out.write_all(line(&model).as_bytes()).await?;
            }
            Ok(Request::Events(filter)) => {
                let queue = Arc::new(LineQueue::new(clients.limit));
                {
                    let mut subscribers = lock(&clients.subscribers);
                    subscribers.push(Subscriber {
                        filter,
                        queue: Arc::clone(&queue),
                    });
                    clients.plain_reports.set(true);
                }
                // Every event from here on is queued: the client may now make what it
                // wants to see.
                out.write_all(SUBSCRIBED.as_bytes()).await?;
                let result = stream_events(&queue, read, &mut out).await;
                queue.end();
                return result;
            }
        }
    }
}

/// Writes the queue out until the client goes or falls a whole queue behind.
async fn stream_events(
    queue: &LineQueue,
    mut read: BufReader<tokio::net::unix::OwnedReadHalf>,
    out: &mut OwnedWriteHalf,
) -> std::io::Result<()> {
    let mut ignored = String::new();
    let mut buffer = Vec::with_capacity(64 * 1024);
    loop {
        let lines = tokio::select! {
            lines = queue.next() => lines,
            // Further lines from the client are not requests; its end is its leaving.
            r = read.read_line(&mut ignored) => {
                ignored.clear();
                match r {
                    Ok(0) | Err(_) => None,
                    Ok(_) => continue,
                }
            }
        };
        let Some(lines) = lines else {
            return Ok(());
        };
        buffer.clear();
        for l in &lines {
            buffer.extend_from_slice(l.as_bytes());
        }
        tokio::select! {
            r = out.write_all(&buffer) => r?,
            // Cut off while a write waits on a client that does not read.
            () = queue.ended() => return Ok(()),
        }
        if buffer.capacity() > 1 << 20 {
            buffer = Vec::with_capacity(64 * 1024);
        }
    }
}
