//! `observer run`: the daemon. Tracks every TCP socket, serves Prometheus metrics, evaluates
//! alert rules and delivers their state changes; reloads its configuration on SIGHUP, talks
//! to systemd (Type=notify, watchdog) and keeps what must survive a restart.

pub mod http;
pub mod notify;
mod restart;
mod state;

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    task::JoinHandle,
    time::Interval,
};

pub use self::state::{Shared, State};
use self::{notify::Notifier, restart::RestartState};
use crate::{
    alerts::{Delivery, DeliveryOptions, Engine},
    config::Config,
    decode::Event,
    events::{EventStream, Losses},
    export::{PortLabels, TransitionCounts},
    feed,
    listen_queues::ListenQueues,
    load::LoadOptions,
    sockdiag::{self, ListenSnapshot},
    track::{Report, Tracker},
    {clock::mono_now_ns, inventory::Inventory},
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
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut watchdog = every_or_never(notifier.watchdog_interval());
    let mut status = interval_after(STATUS_EVERY);
    let mut timers = Timers::of(&daemon);
    let mut pending_dump: Option<JoinHandle<Inventory>> = None;
    let mut pending_listen: Option<JoinHandle<ListenSnapshot>> = None;

    loop {
        tokio::select! {
            r = daemon.stream.next_batch(&mut daemon.batch) => r.context("reading the ring buffer")?,
            _ = tick.tick() => daemon.update_losses()?,
            _ = timers.reconcile.tick(), if pending_dump.is_none() => {
                pending_dump = Some(tokio::task::spawn_blocking(Inventory::take));
            }
            dump = async { pending_dump.as_mut().expect("guarded").await }, if pending_dump.is_some() => {
                pending_dump = None;
                daemon.reconcile(dump.context("the sock_diag dump panicked")?);
            }
            _ = timers.listen.tick(), if pending_listen.is_none() => {
                pending_listen = Some(tokio::task::spawn_blocking(sockdiag::listeners_all));
            }
            sample = async { pending_listen.as_mut().expect("guarded").await }, if pending_listen.is_some() => {
                pending_listen = None;
                daemon.shared.lock().listen.update(sample.context("the listener sample panicked")?);
            }
            // Restart state is written after each evaluation, so saved alerts are current.
            _ = timers.evaluate.tick() => {
                daemon.evaluate();
                daemon.save();
            }
            _ = timers.resend.tick() => daemon.resend(),
            _ = watchdog.tick() => notifier.watchdog(),
            _ = status.tick() => notifier.status(&daemon.status()),
            _ = sighup.recv() => {
                notifier.reloading();
                match daemon.reload(path.as_ref(), &overrides) {
                    Ok(()) => {
                        timers = Timers::of(&daemon);
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
        daemon.apply();
    }
    notifier.stopping();
    daemon.stop().await
}

/// The periods that come from the configuration (recreated on reload).
struct Timers {
    reconcile: Interval,
    evaluate: Interval,
    resend: Interval,
    listen: Interval,
}

impl Timers {
    fn of(daemon: &Daemon) -> Self {
        Self {
            reconcile: interval_after(daemon.config.tracker.reconcile_every),
            evaluate: tokio::time::interval(daemon.config.alerts.evaluation_interval),
            resend: interval_after(daemon.delivery.resend_every()),
            listen: tokio::time::interval(daemon.config.tracker.listen_every),
        }
    }
}

/// The daemon's parts; the tracker itself lives in [`Shared`], under the lock.
struct Daemon {
    config: Config,
    stream: EventStream,
    shared: Shared,
    engine: Engine,
    delivery: Delivery,
    inventory: Inventory,
    restart: Option<RestartState>,
    batch: Vec<Event>,
    reports: Vec<Report>,
}

fn delivery_options(config: &Config) -> DeliveryOptions {
    DeliveryOptions::from_config(
        &config.alerts,
        Some(format!("http://{}/alerts", config.metrics.listen)),
    )
}

impl Daemon {
    /// Attaches the programs, binds the metrics port, seeds from sock_diag, restores what the
    /// previous run saved, starts serving.
    async fn start(mut config: Config) -> anyhow::Result<Self> {
        let mut stream = EventStream::open(&LoadOptions {
            ring_buffer_bytes: config.kernel.ring_buffer_size,
        })?;
        let listener = http::bind(config.metrics.listen).await?;
        // Port 0 means "any": alert links need the real one.
        config.metrics.listen = listener
            .local_addr()
            .context("reading the listening address")?;
        let mut engine = Engine::new(config.effective_rules(), config.alerts.max_alerts_per_rule);
        let delivery = Delivery::new(delivery_options(&config))?;

        let mut batch = Vec::with_capacity(1024);
        let mut reports = Vec::with_capacity(1024);
        let dump = tokio::task::spawn_blocking(Inventory::take)
            .await
            .context("the sock_diag dump panicked")?;
        let mut tracker = Tracker::new(config.tracker.max_sockets);
        tracker.set_half_open_after(feed::nanos(config.tracker.half_open_after));
        let seeded = feed::seed(&mut tracker, &mut stream, &mut batch, &mut reports, &dump);
        let restart = config.tracker.state_file.clone().map(RestartState::new);
        if let Some(r) = &restart {
            let (sockets, alerts) = r.restore(&mut tracker, &mut engine);
            if sockets + alerts > 0 {
                log::info!(
                    "restored from the previous run: when {sockets} CLOSE_WAIT sockets began, \
                     {alerts} alerts"
                );
            }
        }
        let mut transitions = TransitionCounts::default();
        transitions.count(&reports);
        reports.clear();
        let shared = Shared::new(State {
            tracker,
            transitions,
            received: stream.received(),
            losses: stream.losses()?,
            limits: dump.limits.clone(),
            listen: ListenQueues::default(),
            half_open_after_ns: feed::nanos(config.tracker.half_open_after),
            ports: PortLabels::new(&config.metrics.ports, config.metrics.max_port_labels),
            alert_counts: engine.counts(),
            notifications: delivery.counts(),
            active_alerts: Vec::new(),
        });
        http::serve(listener, shared.clone());
        log::info!(
            "observing TCP connections: {seeded} sockets already open in {} network namespaces; \
             metrics on http://{}/metrics; {} alert rules",
            dump.dumped.len(),
            config.metrics.listen,
            engine.rules().len()
        );
        Ok(Self {
            config,
            stream,
            shared,
            engine,
            delivery,
            inventory: dump,
            restart,
            batch,
            reports,
        })
    }

    /// One line for systemd's STATUS.
    fn status(&self) -> String {
        let s = self.shared.lock();
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

    /// Applies the batch read from the ring buffer.
    fn apply(&mut self) {
        let mut s = self.shared.lock();
        feed::apply(&mut s.tracker, &mut self.batch, &mut self.reports);
        s.tracker.advance(mono_now_ns(), &mut self.reports);
        s.transitions.count(&self.reports);
        s.received = self.stream.received();
        self.reports.clear();
    }

    fn update_losses(&mut self) -> anyhow::Result<()> {
        let losses = self.stream.losses()?;
        let mut s = self.shared.lock();
        log_new_losses(&losses, &s.losses);
        s.losses = losses;
        Ok(())
    }

    fn reconcile(&mut self, dump: Inventory) {
        let mut s = self.shared.lock();
        feed::reconcile(
            &mut s.tracker,
            &mut self.stream,
            &mut self.batch,
            &mut self.reports,
            &dump,
        );
        s.limits.clone_from(&dump.limits);
        self.inventory = dump;
    }

    /// Evaluates the rules (CLOSE_WAIT owners resolved first) and delivers what changed.
    fn evaluate(&mut self) {
        let wall = jiff::Timestamp::now();
        let mut guard = self.shared.lock();
        let s = &mut *guard;
        let changes = feed::evaluate_alerts(
            &mut self.engine,
            &mut s.tracker,
            &self.inventory,
            &s.listen.listeners,
            self.config.tracker.owner_after,
            s.losses.total(),
            wall,
        );
        self.delivery.changes(&changes, wall);
        s.alert_counts = self.engine.counts();
        s.active_alerts = self.engine.active().cloned().collect();
        s.notifications = self.delivery.counts();
    }

    fn resend(&mut self) {
        self.delivery
            .resend(self.engine.active(), jiff::Timestamp::now());
        self.shared.lock().notifications = self.delivery.counts();
    }

    fn save(&mut self) {
        if let Some(restart) = &mut self.restart {
            let s = self.shared.lock();
            restart.save(&s.tracker, &self.engine);
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
        ];
        for (field, changed) in restart_only {
            if changed {
                log::warn!("{field} changed: it takes effect when observer restarts");
            }
        }
        new.metrics.listen = old.metrics.listen;
        new.kernel = old.kernel.clone();
        new.tracker.max_sockets = old.tracker.max_sockets;

        let delivery = if delivery_options(&new) == delivery_options(old) {
            None
        } else {
            Some(Delivery::new(delivery_options(&new))?)
        };
        let changes = self
            .engine
            .set_rules(new.effective_rules(), new.alerts.max_alerts_per_rule);
        if let Some(delivery) = delivery {
            let previous = std::mem::replace(&mut self.delivery, delivery);
            tokio::spawn(previous.flush());
        }
        self.delivery.changes(&changes, jiff::Timestamp::now());
        {
            let mut s = self.shared.lock();
            if new.metrics.ports != old.metrics.ports
                || new.metrics.max_port_labels != old.metrics.max_port_labels
            {
                s.ports = PortLabels::new(&new.metrics.ports, new.metrics.max_port_labels);
            }
            s.alert_counts = self.engine.counts();
            s.notifications = self.delivery.counts();
            let half_open_after = feed::nanos(new.tracker.half_open_after);
            s.half_open_after_ns = half_open_after;
            s.tracker.set_half_open_after(half_open_after);
        }
        self.restart = new.tracker.state_file.clone().map(RestartState::new);
        log::info!(
            "configuration reloaded{}: {} alert rules",
            path.map(|p| format!(" from {}", p.display()))
                .unwrap_or_default(),
            self.engine.rules().len()
        );
        self.config = new;
        Ok(())
    }

    /// Applies what is left in the ring buffer, saves restart state, and gives notifications
    /// time to leave.
    async fn stop(mut self) -> anyhow::Result<()> {
        self.stream.drain_now(&mut self.batch);
        self.apply();
        self.save();
        let losses = self.stream.losses()?;
        log::info!(
            "stopping: {} events received, {} lost",
            self.stream.received(),
            losses.total()
        );
        self.delivery.flush().await;
        Ok(())
    }
}

/// An interval whose first tick comes after one period, not at once.
fn interval_after(period: Duration) -> Interval {
    tokio::time::interval_at(tokio::time::Instant::now() + period, period)
}

/// Ticks every `period`, or (in effect) never.
fn every_or_never(period: Option<Duration>) -> Interval {
    interval_after(period.unwrap_or(Duration::MAX / 4))
}

fn log_new_losses(now: &Losses, before: &Losses) {
    let why = now.new_since(before);
    if !why.is_empty() {
        log::warn!("lost events: {}", why.join("; "));
    }
}
