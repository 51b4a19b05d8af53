//! Alertmanager v2 API client.
//!
//! [`Alertmanager::send`] only puts a batch on a bounded queue; a task on the tokio runtime
//! posts the batches one after another, retrying failures with exponential backoff. The
//! daemon's event loop therefore never waits on the network, and an unreachable Alertmanager
//! costs at most a full queue and some counted drops.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use reqwest::header::CONTENT_TYPE;
use reqwest::{StatusCode, Url};
use serde::Serializer;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;

/// Where alerts go, relative to the base URL.
const API_PATH: &str = "api/v2/alerts";

/// How much of an error response body ends up in the log.
const BODY_EXCERPT: usize = 200;

/// A dead Alertmanager makes every batch drop; one warning per interval is enough.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One alert as Alertmanager's v2 API takes it (POST /api/v2/alerts, a JSON array of these):
/// {"labels":{..},"annotations":{..},"startsAt":"RFC3339","endsAt":"RFC3339","generatorURL":".."}
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Notification {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt", serialize_with = "rfc3339")]
    pub starts_at: jiff::Timestamp,
    /// In the future while firing (Alertmanager resolves the alert by itself if no resend
    /// arrives in time), the resolution time once resolved.
    #[serde(rename = "endsAt", serialize_with = "rfc3339")]
    pub ends_at: jiff::Timestamp,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
}

/// jiff's `Display` for a timestamp is RFC 3339 in UTC, which is what Alertmanager parses.
fn rfc3339<S: Serializer>(timestamp: &jiff::Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(timestamp)
}

#[derive(Clone, Debug)]
pub struct AlertmanagerOptions {
    /// Base URL, e.g. http://127.0.0.1:9093 (a trailing slash or a path prefix such as
    /// http://host/am/ works; the client appends api/v2/alerts).
    pub url: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Attempts per batch before it is given up (0 is taken as 1).
    pub max_attempts: u32,
    /// First retry delay; doubled each retry up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Batches waiting to be sent; beyond it new batches are dropped and counted (0 is taken
    /// as 1).
    pub queue: usize,
}

impl AlertmanagerOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            timeout: Duration::from_secs(10),
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            queue: 64,
        }
    }
}

/// Totals since start, for the daemon's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    /// Alerts (not batches) accepted by Alertmanager (HTTP 2xx).
    pub sent: u64,
    /// Requests that failed (connect error, timeout, non-2xx).
    pub failed_attempts: u64,
    /// Alerts given up on: queue full, attempts exhausted, rejected with a 4xx other than
    /// 429, or still unsent when `flush` ran out of time.
    pub dropped: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AlertmanagerError {
    #[error("Alertmanager URL {url:?} is not a valid URL ({reason}); write it like {suggestion}")]
    InvalidUrl {
        url: String,
        reason: String,
        suggestion: String,
    },
    #[error(
        "Alertmanager URL {url:?} has scheme {scheme:?}, but Alertmanager is reached over http \
         or https; write it like {suggestion}"
    )]
    UnsupportedScheme {
        url: String,
        scheme: String,
        suggestion: String,
    },
    #[error("cannot set up the HTTP client for Alertmanager: {0}")]
    Client(#[source] reqwest::Error),
    #[error("the Alertmanager client needs a tokio runtime to run its delivery task on")]
    NoRuntime,
}

/// Pushes alerts to Alertmanager from a background task.
///
/// Dropping it without [`flush`](Self::flush) lets the task finish the queue on its own for
/// as long as the runtime lives.
#[derive(Debug)]
pub struct Alertmanager {
    queue: mpsc::Sender<Vec<Notification>>,
    counters: Arc<Counters>,
    worker: JoinHandle<()>,
    /// The endpoint as logs show it, without a password.
    shown: Arc<str>,
    drops: Mutex<DropLog>,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    failed_attempts: AtomicU64,
    dropped: AtomicU64,
    /// Alerts accepted by `send` and not yet sent or dropped, so that `flush` can count what
    /// it abandons.
    pending: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> DeliveryCounts {
        DeliveryCounts {
            sent: self.sent.load(Ordering::Relaxed),
            failed_attempts: self.failed_attempts.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// Drops not yet reported in a warning.
#[derive(Debug, Default)]
struct DropLog {
    last_warning: Option<Instant>,
    batches: u64,
    alerts: u64,
}

impl Alertmanager {
    /// Validates the URL and spawns the delivery task on the current tokio runtime.
    pub fn spawn(options: AlertmanagerOptions) -> Result<Self, AlertmanagerError> {
        let AlertmanagerOptions {
            url,
            timeout,
            max_attempts,
            initial_backoff,
            max_backoff,
            queue,
        } = options;
        let endpoint = endpoint(&url)?;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| AlertmanagerError::NoRuntime)?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("observer/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(AlertmanagerError::Client)?;
        let shown: Arc<str> = shown(&endpoint).into();
        let counters = Arc::new(Counters::default());
        let (queue, batches) = mpsc::channel(queue.max(1));
        let worker = Worker {
            client,
            endpoint,
            shown: Arc::clone(&shown),
            timeout,
            max_attempts: max_attempts.max(1),
            initial_backoff,
            max_backoff,
            counters: Arc::clone(&counters),
        };
        let worker = runtime.spawn(worker.run(batches));
        Ok(Self {
            queue,
            counters,
            worker,
            shown,
            drops: Mutex::new(DropLog::default()),
        })
    }

    /// Queues a batch without waiting. An empty batch is ignored. When the queue is full the
    /// batch is dropped and counted.
    pub fn send(&self, batch: Vec<Notification>) {
        if batch.is_empty() {
            return;
        }
        let alerts = batch.len() as u64;
        // Counted before the worker can see the batch, so its decrement never comes first.
        Counters::add(&self.counters.pending, alerts);
        if let Err(e) = self.queue.try_send(batch) {
            self.counters.pending.fetch_sub(alerts, Ordering::Relaxed);
            Counters::add(&self.counters.dropped, alerts);
            let reason = match e {
                TrySendError::Full(_) => {
                    format!("the queue of {} batches is full", self.queue.max_capacity())
                }
                TrySendError::Closed(_) => "the delivery task has stopped".to_owned(),
            };
            self.note_drop(alerts, &reason);
        }
    }

    fn note_drop(&self, alerts: u64, reason: &str) {
        let mut drops = self.drops.lock().unwrap_or_else(PoisonError::into_inner);
        drops.batches += 1;
        drops.alerts += alerts;
        let now = Instant::now();
        if drops
            .last_warning
            .is_none_or(|last| now.duration_since(last) >= DROP_LOG_INTERVAL)
        {
            log::warn!(
                "dropped {} alerts ({} batches) for Alertmanager at {}: {reason}; further drops \
                 are summarised every {} s",
                drops.alerts,
                drops.batches,
                self.shown,
                DROP_LOG_INTERVAL.as_secs(),
            );
            *drops = DropLog {
                last_warning: Some(now),
                ..DropLog::default()
            };
        }
    }

    pub fn counts(&self) -> DeliveryCounts {
        self.counters.snapshot()
    }

    /// For shutdown: stops accepting, and waits up to `deadline` for queued batches to be
    /// delivered. Whatever is still unsent then is counted as dropped. Returns the final
    /// counts.
    pub async fn flush(self, deadline: Duration) -> DeliveryCounts {
        let Self {
            queue,
            counters,
            mut worker,
            shown,
            drops,
        } = self;
        // The worker stops once it has emptied a closed queue.
        drop(queue);
        match tokio::time::timeout(deadline, &mut worker).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::error!("Alertmanager delivery task failed: {e}"),
            Err(_) => {
                worker.abort();
                // Waits for the cancellation, so no attempt is still counting.
                let _ = worker.await;
            }
        }
        let abandoned = counters.pending.swap(0, Ordering::Relaxed);
        if abandoned > 0 {
            Counters::add(&counters.dropped, abandoned);
            log::warn!(
                "{abandoned} alerts were not delivered to Alertmanager at {shown} within the \
                 {deadline:?} shutdown deadline"
            );
        }
        let drops = drops.into_inner().unwrap_or_else(PoisonError::into_inner);
        if drops.alerts > 0 {
            log::warn!(
                "dropped {} alerts ({} batches) for Alertmanager at {shown} since the last \
                 warning",
                drops.alerts,
                drops.batches,
            );
        }
        counters.snapshot()
    }
}

/// The v2 alerts endpoint under the base URL the user gave.
fn endpoint(url: &str) -> Result<Url, AlertmanagerError> {
    let url = url.trim();
    let mut base = Url::parse(url).map_err(|e| AlertmanagerError::InvalidUrl {
        url: url.to_owned(),
        reason: e.to_string(),
        suggestion: suggestion(url),
    })?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(AlertmanagerError::UnsupportedScheme {
            url: url.to_owned(),
            scheme: base.scheme().to_owned(),
            suggestion: suggestion(url),
        });
    }
    // A URL that already names the endpoint is taken as meant rather than doubled.
    if base
        .path()
        .trim_end_matches('/')
        .ends_with(&format!("/{API_PATH}"))
    {
        let path = base.path().trim_end_matches('/').to_owned();
        base.set_path(&path);
        return Ok(base);
    }
    // Without the slash, joining would replace the last path segment instead of appending.
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base.join(API_PATH)
        .map_err(|e| AlertmanagerError::InvalidUrl {
            url: url.to_owned(),
            reason: e.to_string(),
            suggestion: suggestion(url),
        })
}

/// The URL with an http scheme in place of whatever was there: "localhost:9093" parses
/// with the scheme "localhost", so anything without "://" is taken as lacking a scheme.
fn suggestion(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    if rest.is_empty() {
        "http://127.0.0.1:9093".to_owned()
    } else {
        format!("http://{rest}")
    }
}

/// The URL for logs: credentials in it are masked.
fn shown(url: &Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        // Cannot fail: a URL with a password has a host.
        let _ = url.set_password(Some("***"));
    }
    url.to_string()
}

/// The delay before retry number `retry` (1 for the first): doubling from `initial`,
/// capped at `max`.
fn backoff(initial: Duration, max: Duration, retry: u32) -> Duration {
    let factor = 2u32.saturating_pow(retry.saturating_sub(1));
    initial.saturating_mul(factor).min(max)
}

struct Worker {
    client: reqwest::Client,
    endpoint: Url,
    shown: Arc<str>,
    timeout: Duration,
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    counters: Arc<Counters>,
}

/// How one request went.
enum Outcome {
    Delivered,
    /// Worth another try: the network, a timeout, 5xx or 429.
    Retry(String),
    /// Alertmanager will not take this payload however often it is sent.
    Rejected(String),
}

impl Worker {
    async fn run(self, mut batches: mpsc::Receiver<Vec<Notification>>) {
        while let Some(batch) = batches.recv().await {
            self.deliver(&batch).await;
            self.counters
                .pending
                .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        }
    }

    async fn deliver(&self, batch: &[Notification]) {
        let alerts = batch.len() as u64;
        let body = match serde_json::to_vec(batch) {
            Ok(body) => body,
            Err(e) => {
                log::error!("cannot encode {alerts} alerts for Alertmanager: {e}");
                Counters::add(&self.counters.dropped, alerts);
                return;
            }
        };
        let url = &self.shown;
        let max = self.max_attempts;
        for attempt in 1..=max {
            let cause = match self.attempt(body.clone()).await {
                Outcome::Delivered => {
                    Counters::add(&self.counters.sent, alerts);
                    log::debug!("sent {alerts} alerts to Alertmanager at {url}");
                    return;
                }
                Outcome::Rejected(cause) => {
                    Counters::add(&self.counters.failed_attempts, 1);
                    Counters::add(&self.counters.dropped, alerts);
                    log::error!(
                        "Alertmanager at {url} rejected {alerts} alerts ({cause}); dropping them"
                    );
                    return;
                }
                Outcome::Retry(cause) => cause,
            };
            Counters::add(&self.counters.failed_attempts, 1);
            if attempt == max {
                log::warn!(
                    "sending {alerts} alerts to Alertmanager at {url} failed (attempt \
                     {attempt}/{max}): {cause}"
                );
                log::error!(
                    "giving up on {alerts} alerts for Alertmanager at {url} after {max} attempts"
                );
                Counters::add(&self.counters.dropped, alerts);
                return;
            }
            let delay = backoff(self.initial_backoff, self.max_backoff, attempt);
            log::warn!(
                "sending {alerts} alerts to Alertmanager at {url} failed (attempt \
                 {attempt}/{max}): {cause}; retrying in {delay:?}"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(&self, body: Vec<u8>) -> Outcome {
        let request = self
            .client
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Outcome::Retry(self.describe(e)),
        };
        let status = response.status();
        let excerpt = read_excerpt(&mut response).await;
        if status.is_success() {
            return Outcome::Delivered;
        }
        let cause = if excerpt.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {excerpt}")
        };
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            Outcome::Retry(cause)
        } else {
            Outcome::Rejected(cause)
        }
    }

    /// reqwest's own message is generic ("error sending request"); the cause is in its
    /// sources, e.g. "Connection refused".
    fn describe(&self, error: reqwest::Error) -> String {
        if error.is_timeout() {
            return format!("no answer within {:?}", self.timeout);
        }
        // The URL is logged next to the cause already.
        let error = error.without_url();
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            let _ = write!(text, ": {cause}");
            source = cause.source();
        }
        text
    }
}

/// The start of the response body, for the log. Reading the rest is left out so that a
/// large error page costs nothing; the body of a success is read to let the connection be
/// reused.
async fn read_excerpt(response: &mut reqwest::Response) -> String {
    let mut head = Vec::new();
    let mut more = false;
    while let Ok(Some(chunk)) = response.chunk().await {
        if head.len() >= BODY_EXCERPT {
            more = true;
            if !response.status().is_success() {
                break;
            }
            continue;
        }
        head.extend_from_slice(&chunk);
    }
    excerpt(&head, more)
}

/// At most `BODY_EXCERPT` bytes of `body` on one line, marked when cut short.
fn excerpt(body: &[u8], more: bool) -> String {
    let cut = body.len() > BODY_EXCERPT;
    let head = String::from_utf8_lossy(&body[..body.len().min(BODY_EXCERPT)]);
    let mut line = head.split_whitespace().collect::<Vec<_>>().join(" ");
    if (cut || more) && !line.is_empty() {
        line.push_str(" …");
    }
    line
}

#[cfg(test)]
mod tests;
