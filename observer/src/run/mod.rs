//! `observer run`: the daemon. Tracks every TCP socket, serves Prometheus metrics, evaluates
//! alert rules and delivers their state changes; reloads its configuration on SIGHUP, talks
//! to systemd (Type=notify, watchdog) and keeps what must survive a restart.

pub mod http;
pub mod notify;
mod restart;
pub mod socket;

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use self::{notify::Notifier, restart::RestartState, socket::SocketServer};
pub use crate::pipeline::{Shared, State};
use crate::{
    alerts::{Delivery, DeliveryOptions},
    config::Config,
    export::Exporter,
    load::{KernelReads, LoadOptions},
    pipeline::{self, AlertSettings, Pipeline, Settings, Step, every_or_never, interval_after},
};

/// systemd's STATUS line is refreshed this often.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// Flags given on the command line, applied over every configuration read (also on reload).
pub type Overrides = Box<dyn Fn(&mut Config)>;

/// Runs until SIGINT or SIGTERM. `path` is the configuration file SIGHUP reads again.
pub async fn run(
    config: Config,
    path: Option<PathBuf>,
    overrides: Overrides,
) -> anyhow::Result<()> {
    let notifier = Notifier::from_env();
    let mut daemon = Daemon::start(config).await?;
    notifier.ready(&daemon.status());
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut watchdog = every_or_never(notifier.watchdog_interval());
    let mut status = interval_after(STATUS_EVERY);
    let mut resend = interval_after(daemon.delivery.resend_every());

    loop {
        tokio::select! {
            step = daemon.pipeline.next() => {
                let step = step?;
                daemon.publish(&step);
                daemon.step(&step);
            }
            _ = resend.tick() => daemon.resend(),
            _ = watchdog.tick() => notifier.watchdog(),
            _ = status.tick() => notifier.status(&daemon.status()),
            _ = sighup.recv() => {
                notifier.reloading();
                let resend_every = daemon.delivery.resend_every();
                match daemon.reload(path.as_ref(), &overrides) {
                    Ok(()) => {
                        if daemon.delivery.resend_every() != resend_every {
                            resend = interval_after(daemon.delivery.resend_every());
                        }
                        notifier.reloaded(&daemon.status());
                    }
                    Err(e) => {
                        log::error!("configuration not reloaded, the running one stays: {e:#}");
                        notifier.reloaded(&format!("reload failed, running the previous configuration: {e}"));
                    }
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    notifier.stopping();
    daemon.stop().await
}

/// The daemon's parts around the pipeline.
struct Daemon {
    config: Config,
    pipeline: Pipeline,
    delivery: Delivery,
    exporter: Arc<Exporter>,
    restart: Option<RestartState>,
    /// A restart-state write in progress.
    saving: Option<tokio::task::JoinHandle<()>>,
    /// The Unix socket for local clients, unless socket.path is "".
    socket: Option<SocketServer>,
}

fn delivery_options(config: &Config) -> DeliveryOptions {
    DeliveryOptions::from_config(
        &config.alerts,
        Some(format!("http://{}/alerts", config.metrics.listen)),
    )
}

/// What the pipeline runs with, from the configuration.
fn settings(config: &Config) -> Settings {
    Settings {
        half_open_after: config.tracker.half_open_after,
        reconcile_every: config.tracker.reconcile_every,
        listen_every: Some(config.tracker.listen_every),
        owner_after: config.tracker.owner_after,
        evaluate_every: Some(config.alerts.evaluation_interval),
        alerts: Some(AlertSettings {
            rules: config.effective_rules(),
            max_per_rule: config.alerts.max_alerts_per_rule,
        }),
    }
}

impl Daemon {
    /// Binds the metrics port, attaches the programs and seeds from sock_diag, restores what
    /// the previous run saved, starts serving.
    async fn start(mut config: Config) -> anyhow::Result<Self> {
        let listener = http::bind(config.metrics.listen).await?;
        // Port 0 means "any": alert links need the real one.
        config.metrics.listen = listener
            .local_addr()
            .context("reading the listening address")?;
        let delivery = Delivery::new(delivery_options(&config))?;
        let mut pipeline = Pipeline::start(pipeline::Options {
            load: LoadOptions {
                reads: KernelReads {
                    cgroup: config.workloads.cgroups,
                    ..KernelReads::ALL
                },
                ..LoadOptions::sized(config.kernel.ring_buffer_size)
            },
            max_sockets: config.tracker.max_sockets,
            kubelet_logs: config.workloads.kubelet_logs.clone(),
            settings: settings(&config),
        })
        .await?;
        let restart = config.tracker.state_file.clone().map(RestartState::new);
        if let Some(r) = &restart {
            let (sockets, alerts) = pipeline.with_parts(|tracker, engine| {
                engine.map_or((0, 0), |engine| r.restore(tracker, engine))
            });
            if sockets + alerts > 0 {
                log::info!(
                    "restored from the previous run: when {sockets} CLOSE_WAIT sockets began, \
                     {alerts} alerts"
                );
            }
        }
        pipeline.state().notifications = delivery.counts();
        let workloads = Arc::clone(&pipeline.state().workloads);
        let exporter = Arc::new(Exporter::with_resolver(
            &config.metrics.ports,
            config.metrics.max_port_labels,
            config.metrics.max_workload_labels,
            Arc::clone(&workloads),
        ));
        http::serve(listener, pipeline.shared(), exporter.clone());
        // Without its socket the daemon still does its main work: metrics and alerts.
        // Plain transitions are reported only while the socket has clients to read them.
        let plain_reports = pipeline.plain_reports();
        plain_reports.set(false);
        let socket = config.socket.path.as_ref().and_then(|path| {
            SocketServer::start(
                &config.socket,
                path,
                pipeline.shared(),
                workloads,
                plain_reports,
            )
            .map_err(|e| {
                log::error!(
                    "{e}; observer watch and observer top will load the programs themselves"
                );
            })
            .ok()
        });
        let seeded = pipeline.seeded();
        log::info!(
            "observing TCP connections: {} sockets already open in {} network namespaces; \
             metrics on http://{}/metrics; {}; {} alert rules",
            seeded.outcome.added,
            seeded.dumped.len(),
            config.metrics.listen,
            socket.as_ref().map_or_else(
                || "no local socket".to_owned(),
                |s| format!("live data on {}", s.path().display())
            ),
            config.effective_rules().len()
        );
        Ok(Self {
            config,
            pipeline,
            delivery,
            exporter,
            restart,
            saving: None,
            socket,
        })
    }

    /// Hands a step's lines to the socket's clients; those cut off are counted.
    fn publish(&mut self, step: &Step) {
        if let Some(socket) = &mut self.socket {
            let dropped = socket.publish(self.pipeline.reports(), step);
            if dropped > 0 {
                self.pipeline.state().socket_client_drops += dropped;
            }
        }
    }

    /// One line for systemd's STATUS.
    fn status(&self) -> String {
        let s = self.pipeline.state();
        let stats = s.tracker.stats();
        let firing: u64 = s.alert_counts.iter().map(|r| r.firing).sum();
        format!(
            "tracking {} sockets and {} timewait sockets; {} events, {} lost; {firing} alerts \
             firing; metrics on {}",
            stats.tracked_sockets,
            stats.tracked_timewait,
            s.received,
            s.losses.total(),
            self.config.metrics.listen
        )
    }

    /// Delivers what an evaluation changed; the restart state is written after each
    /// evaluation, so that saved alerts are current.
    fn step(&mut self, step: &Step) {
        if !step.evaluated {
            return;
        }
        self.delivery.changes(&step.changes, jiff::Timestamp::now());
        self.pipeline.state().notifications = self.delivery.counts();
        self.save();
    }

    fn resend(&mut self) {
        if let Some(engine) = self.pipeline.engine() {
            self.delivery
                .resend(engine.active(), jiff::Timestamp::now());
        }
        self.pipeline.state().notifications = self.delivery.counts();
    }

    /// Writes the restart state: taken under the lock, written on a blocking thread (one at a
    /// time: a write still running skips this one).
    fn save(&mut self) {
        let Some(restart) = &self.restart else {
            return;
        };
        if self.saving.as_ref().is_some_and(|s| !s.is_finished()) {
            return;
        }
        let saved = self
            .pipeline
            .with_parts(|tracker, engine| engine.map(|e| RestartState::snapshot(tracker, e)));
        if let Some(saved) = saved {
            let restart = restart.clone();
            self.saving = Some(tokio::task::spawn_blocking(move || restart.write(&saved)));
        }
    }

    /// The last restart state, written before exiting.
    async fn save_now(&mut self) {
        if let Some(saving) = self.saving.take() {
            let _ = saving.await;
        }
        if let Some(restart) = &self.restart {
            let saved = self
                .pipeline
                .with_parts(|tracker, engine| engine.map(|e| RestartState::snapshot(tracker, e)));
            if let Some(saved) = saved {
                restart.write(&saved);
            }
        }
    }

    /// Reads the configuration again and applies what can change while running: rules, alert
    /// sinks, intervals, port labels. The programs stay attached and no event is dropped; a
    /// bad file changes nothing.
    fn reload(&mut self, path: Option<&PathBuf>, overrides: &Overrides) -> anyhow::Result<()> {
        let mut new = match path {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        overrides(&mut new);
        // Kept from start-up: these need the programs, the table or the socket made again.
        let old = &self.config;
        let restart_only = [
            (
                "metrics.listen",
                new.metrics.listen != old.metrics.listen && new.metrics.listen.port() != 0,
            ),
            (
                "kernel.ring_buffer_size",
                new.kernel.ring_buffer_size != old.kernel.ring_buffer_size,
            ),
            (
                "tracker.max_sockets",
                new.tracker.max_sockets != old.tracker.max_sockets,
            ),
            ("socket", new.socket != old.socket),
            (
                "workloads.cgroups",
                new.workloads.cgroups != old.workloads.cgroups,
            ),
        ];
        for (field, changed) in restart_only {
            if changed {
                log::warn!("{field} changed: it takes effect when observer restarts");
            }
        }
        new.metrics.listen = old.metrics.listen;
        new.kernel = old.kernel.clone();
        new.tracker.max_sockets = old.tracker.max_sockets;
        new.socket = old.socket.clone();
        new.workloads.cgroups = old.workloads.cgroups;

        if delivery_options(&new) != delivery_options(old) {
            let delivery = Delivery::new(delivery_options(&new))?;
            let previous = std::mem::replace(&mut self.delivery, delivery);
            tokio::spawn(previous.flush());
        }
        let changes = self.pipeline.reconfigure(settings(&new));
        self.delivery.changes(&changes, jiff::Timestamp::now());
        if new.metrics.ports != old.metrics.ports
            || new.metrics.max_port_labels != old.metrics.max_port_labels
        {
            self.exporter
                .set_ports(&new.metrics.ports, new.metrics.max_port_labels);
        }
        if new.metrics.max_workload_labels != old.metrics.max_workload_labels {
            self.exporter.set_workloads(new.metrics.max_workload_labels);
        }
        self.pipeline.state().notifications = self.delivery.counts();
        if let Some(engine) = self.pipeline.engine() {
            let counts = engine.counts();
            self.pipeline.state().alert_counts = counts;
        }
        self.restart = new.tracker.state_file.clone().map(RestartState::new);
        log::info!(
            "configuration reloaded{}: {} alert rules",
            path.map(|p| format!(" from {}", p.display()))
                .unwrap_or_default(),
            new.effective_rules().len()
        );
        self.config = new;
        Ok(())
    }

    /// Applies what is left in the ring buffer, saves restart state, and gives notifications
    /// time to leave.
    async fn stop(mut self) -> anyhow::Result<()> {
        self.pipeline.drain();
        self.publish(&Step::default());
        if let Some(socket) = self.socket.take() {
            socket.close();
        }
        self.save_now().await;
        let losses = self.pipeline.losses()?;
        log::info!(
            "stopping: {} events received, {} lost",
            self.pipeline.received(),
            losses.total()
        );
        self.delivery.flush().await;
        Ok(())
    }
}
