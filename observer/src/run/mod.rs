//! `observer run`: the daemon. Tracks every TCP socket, serves Prometheus metrics, evaluates
//! alert rules and delivers their state changes.

pub mod http;
mod state;

use std::time::Duration;

use anyhow::Context as _;
use tokio::{
    signal::unix::{SignalKind, signal},
    task::JoinHandle,
};

pub use self::state::{Shared, State};
use crate::{
    alerts::{Delivery, DeliveryOptions, Engine, Inputs},
    config::Config,
    decode::Event,
    events::{EventStream, Losses},
    export::{PortLabels, TransitionCounts},
    feed,
    inventory::{Inventory, mono_now_ns},
    load::LoadOptions,
    track::{Report, Tracker},
};

/// Runs until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let mut daemon = Daemon::start(&config).await?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut reconcile = interval_after(config.tracker.reconcile_every);
    let mut evaluate = tokio::time::interval(config.alerts.evaluation_interval);
    let mut resend = interval_after(daemon.delivery.resend_every());
    let mut pending_dump: Option<JoinHandle<Inventory>> = None;

    loop {
        tokio::select! {
            r = daemon.stream.next_batch(&mut daemon.batch) => r.context("reading the ring buffer")?,
            _ = tick.tick() => daemon.update_losses()?,
            _ = reconcile.tick(), if pending_dump.is_none() => {
                pending_dump = Some(tokio::task::spawn_blocking(Inventory::take));
            }
            dump = async { pending_dump.as_mut().expect("guarded").await }, if pending_dump.is_some() => {
                pending_dump = None;
                daemon.reconcile(dump.context("the sock_diag dump panicked")?);
            }
            _ = evaluate.tick() => daemon.evaluate(),
            _ = resend.tick() => {
                daemon.delivery.resend(daemon.engine.active(), jiff::Timestamp::now());
                daemon.shared.lock().notifications = daemon.delivery.counts();
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
        daemon.apply();
    }
    daemon.stop().await
}

/// The daemon's parts; the tracker itself lives in [`Shared`], under the lock.
struct Daemon {
    stream: EventStream,
    shared: Shared,
    engine: Engine,
    delivery: Delivery,
    inventory: Inventory,
    batch: Vec<Event>,
    reports: Vec<Report>,
    owner_after_ns: u64,
}

impl Daemon {
    /// Attaches the programs, binds the metrics port, seeds from sock_diag, starts serving.
    async fn start(config: &Config) -> anyhow::Result<Self> {
        let mut stream = EventStream::open(&LoadOptions {
            ring_buffer_bytes: config.kernel.ring_buffer_size,
            max_timewait_timers: config.kernel.max_timewait_timers,
        })?;
        let listener = http::bind(config.metrics.listen).await?;
        let listen = listener
            .local_addr()
            .context("reading the listening address")?;
        let engine = Engine::new(config.effective_rules(), config.alerts.max_alerts_per_rule);
        let delivery = Delivery::new(DeliveryOptions::from_config(
            &config.alerts,
            Some(format!("http://{listen}/alerts")),
        ))?;

        let mut batch = Vec::with_capacity(1024);
        let mut reports = Vec::with_capacity(1024);
        let dump = tokio::task::spawn_blocking(Inventory::take)
            .await
            .context("the sock_diag dump panicked")?;
        let mut tracker = Tracker::new(config.tracker.max_sockets);
        let seeded = feed::seed(&mut tracker, &mut stream, &mut batch, &mut reports, &dump);
        let mut transitions = TransitionCounts::default();
        transitions.count(&reports);
        reports.clear();
        let shared = Shared::new(State {
            tracker,
            transitions,
            received: stream.received(),
            losses: stream.losses()?,
            limits: dump.limits.clone(),
            ports: PortLabels::new(&config.metrics.ports, config.metrics.max_port_labels),
            alert_counts: engine.counts(),
            notifications: delivery.counts(),
            active_alerts: Vec::new(),
        });
        http::serve(listener, shared.clone());
        log::info!(
            "observing TCP connections: {seeded} sockets already open in {} network namespaces; \
             metrics on http://{listen}/metrics; {} alert rules",
            dump.dumped.len(),
            engine.rules().len()
        );
        Ok(Self {
            stream,
            shared,
            engine,
            delivery,
            inventory: dump,
            batch,
            reports,
            owner_after_ns: feed::nanos(config.tracker.owner_after),
        })
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
        let now = mono_now_ns();
        let wall = jiff::Timestamp::now();
        let mut s = self.shared.lock();
        self.inventory
            .resolve_close_wait_owners(&mut s.tracker, self.owner_after_ns, now);
        let inputs = Inputs {
            tracker: &s.tracker,
            limits: &s.limits,
            lost_total: s.losses.total(),
            now_ns: now,
        };
        let changes = self.engine.evaluate(&inputs, wall);
        self.delivery.changes(&changes, wall);
        s.alert_counts = self.engine.counts();
        s.active_alerts = self.engine.active().cloned().collect();
        s.notifications = self.delivery.counts();
    }

    /// Applies what is left in the ring buffer, then gives notifications time to leave.
    async fn stop(mut self) -> anyhow::Result<()> {
        self.stream.drain_now(&mut self.batch);
        self.apply();
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
fn interval_after(period: Duration) -> tokio::time::Interval {
    tokio::time::interval_at(tokio::time::Instant::now() + period, period)
}

fn log_new_losses(now: &Losses, before: &Losses) {
    let k = now.kernel;
    let b = before.kernel;
    if k.ring_buffer_full > b.ring_buffer_full {
        log::warn!(
            "lost {} events because the ring buffer was full (raise kernel.ring_buffer_size)",
            k.ring_buffer_full - b.ring_buffer_full
        );
    }
    if k.recursion_misses > b.recursion_misses {
        log::warn!(
            "the kernel skipped {} events while another BPF program ran on the same CPU",
            k.recursion_misses - b.recursion_misses
        );
    }
    if k.read_failed > b.read_failed || now.malformed > before.malformed {
        log::warn!(
            "{} unreadable and {} malformed records",
            k.read_failed - b.read_failed,
            now.malformed - before.malformed
        );
    }
}
