//! Where alert state changes go: a log line each, a JSON-lines file, and Alertmanager.

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    path::PathBuf,
    time::Duration,
};

use jiff::Timestamp;
use serde::Serialize;

use super::{
    Alert, AlertState, Change, NotificationCounts, Status,
    alertmanager::{Alertmanager, AlertmanagerError, AlertmanagerOptions, Notification},
};
use crate::config::{AlertmanagerConfig, AlertsConfig};

#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryOptions {
    pub log: bool,
    pub file: Option<PathBuf>,
    pub alertmanager: Option<AlertmanagerConfig>,
    pub evaluation_interval: Duration,
    /// Where an alert links back to (the daemon's /alerts page).
    pub generator_url: Option<String>,
}

impl DeliveryOptions {
    #[must_use]
    pub fn from_config(alerts: &AlertsConfig, generator_url: Option<String>) -> Self {
        Self {
            log: alerts.log,
            file: alerts.file.clone(),
            alertmanager: alerts.alertmanager.clone(),
            evaluation_interval: alerts.evaluation_interval,
            generator_url,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Alertmanager(#[from] AlertmanagerError),
}

/// The alerts file: opened when first written, and again after a failure, so that a file that
/// cannot be written costs only its own lines (counted), never the daemon.
struct FileSink {
    path: PathBuf,
    file: Option<File>,
    /// The last failure was logged; the next success says so.
    failing: bool,
}

impl FileSink {
    fn open(path: &std::path::Path) -> std::io::Result<File> {
        OpenOptions::new().create(true).append(true).open(path)
    }

    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(Self::open(&self.path)?),
        };
        let written = file.write_all(line);
        if written.is_err() {
            self.file = None;
        }
        written
    }
}

pub struct Delivery {
    log: bool,
    file: Option<FileSink>,
    alertmanager: Option<Alertmanager>,
    resend_every: Duration,
    /// How long a firing alert stays valid in Alertmanager without a resend.
    valid_for: Duration,
    generator_url: Option<String>,
    file_written: u64,
    file_failed: u64,
}

/// An alert state change as a JSON object: a line of the alerts file, and (with a `type`)
/// of `observer watch --alerts --json`.
#[derive(Serialize)]
pub struct ChangeRecord<'a> {
    pub time: Timestamp,
    pub status: Status,
    pub alertname: &'a str,
    pub value: f64,
    pub active_since: Timestamp,
    pub labels: &'a std::collections::BTreeMap<String, String>,
    pub annotations: &'a std::collections::BTreeMap<String, String>,
}

impl<'a> ChangeRecord<'a> {
    #[must_use]
    pub fn new(c: &'a Change, time: Timestamp) -> Self {
        Self {
            time,
            status: c.status,
            alertname: c.alert.name(),
            value: c.alert.value,
            active_since: c.alert.active_since,
            labels: &c.alert.labels,
            annotations: &c.alert.annotations,
        }
    }
}

impl Delivery {
    /// Opens the file and starts the Alertmanager client (on the current tokio runtime). A
    /// file that cannot be opened is said once and tried again at each line.
    pub fn new(options: DeliveryOptions) -> Result<Self, DeliveryError> {
        let file = options.file.map(|path| {
            let opened = FileSink::open(&path);
            if let Err(e) = &opened {
                log::warn!(
                    "cannot open the alerts file {} for appending: {e} (create its directory, \
                     or change alerts.file); its lines are counted as failed until it can be \
                     written",
                    path.display()
                );
            }
            FileSink {
                failing: opened.is_err(),
                file: opened.ok(),
                path,
            }
        });
        let (alertmanager, resend_every) = match options.alertmanager {
            Some(am) => {
                let mut o = AlertmanagerOptions::new(am.url.clone());
                o.timeout = am.timeout;
                o.max_attempts = am.max_attempts;
                (Some(Alertmanager::spawn(o)?), am.resend_every)
            }
            None => (None, Duration::from_mins(1)),
        };
        Ok(Self {
            log: options.log,
            file,
            alertmanager,
            resend_every,
            // As Prometheus does: several missed resends before Alertmanager gives up on it.
            valid_for: 4 * resend_every.max(options.evaluation_interval),
            generator_url: options.generator_url,
            file_written: 0,
            file_failed: 0,
        })
    }

    /// How often firing alerts are re-sent to Alertmanager.
    #[must_use]
    pub const fn resend_every(&self) -> Duration {
        self.resend_every
    }

    /// Delivers state changes: log, file, and Alertmanager for firing and resolved.
    pub fn changes(&mut self, changes: &[Change], now: Timestamp) {
        for c in changes {
            if self.log {
                log_change(c);
            }
            self.write_file(c, now);
        }
        let batch: Vec<_> = changes
            .iter()
            .filter(|c| matches!(c.status, Status::Firing | Status::Resolved))
            .map(|c| self.notification(&c.alert, c.status, now))
            .collect();
        if let Some(am) = &self.alertmanager {
            am.send(batch);
        }
    }

    /// Re-sends every firing alert, so Alertmanager keeps it (and learns it again after its
    /// own restart).
    pub fn resend<'a>(&self, active: impl Iterator<Item = &'a Alert>, now: Timestamp) {
        if let Some(am) = &self.alertmanager {
            let batch: Vec<_> = active
                .filter(|a| a.state == AlertState::Firing)
                .map(|a| self.notification(a, Status::Firing, now))
                .collect();
            am.send(batch);
        }
    }

    #[must_use]
    pub fn counts(&self) -> NotificationCounts {
        NotificationCounts {
            alertmanager: self
                .alertmanager
                .as_ref()
                .map(Alertmanager::counts)
                .unwrap_or_default(),
            file_written: self.file_written,
            file_failed: self.file_failed,
        }
    }

    /// At exit: gives queued notifications (resolutions included) a few seconds to arrive.
    pub async fn flush(self) {
        if let Some(am) = self.alertmanager {
            let counts = am.flush(Duration::from_secs(5)).await;
            log::debug!("alertmanager notifications at exit: {counts:?}");
        }
    }

    fn notification(&self, alert: &Alert, status: Status, now: Timestamp) -> Notification {
        let ends_at = if status == Status::Resolved {
            now
        } else {
            now.checked_add(self.valid_for).unwrap_or(now)
        };
        Notification {
            labels: alert.labels.clone(),
            annotations: alert.annotations.clone(),
            starts_at: alert.active_since,
            ends_at,
            generator_url: self.generator_url.clone(),
        }
    }

    fn write_file(&mut self, c: &Change, now: Timestamp) {
        let Some(sink) = &mut self.file else {
            return;
        };
        let mut line = serde_json::to_vec(&ChangeRecord::new(c, now)).expect("alerts serialize");
        line.push(b'\n');
        match sink.write(&line) {
            Ok(()) => {
                self.file_written += 1;
                if std::mem::take(&mut sink.failing) {
                    log::info!("the alerts file {} is written again", sink.path.display());
                }
            }
            Err(e) => {
                self.file_failed += 1;
                if !std::mem::replace(&mut sink.failing, true) {
                    log::warn!(
                        "cannot write to the alerts file {}: {e}; its lines are counted as \
                         failed until it can be written",
                        sink.path.display()
                    );
                }
            }
        }
    }
}

fn log_change(c: &Change) {
    let a = &c.alert;
    let description = a.annotations.get("description").map_or("", String::as_str);
    let (level, word) = match c.status {
        Status::Firing => (log::Level::Warn, "firing"),
        Status::Pending => (log::Level::Info, "pending"),
        Status::Resolved => (log::Level::Info, "resolved"),
        Status::Inactive => (log::Level::Debug, "no longer pending"),
    };
    log::log!(level, "alert {} {word}: {description}", a.name());
}
