//! The one core every front-end runs on: the ring buffer read and applied to the tracker, the
//! tracker reconciled with sock_diag, accept queues sampled, the holders of lingering
//! CLOSE_WAIT sockets found, alert rules evaluated and losses accounted. Everything slow
//! (netlink dumps, walks of /proc) runs on blocking threads, so the event loop only ever
//! applies events.
//!
//! A front-end calls [`Pipeline::next`] in its own loop, beside its own timers, and takes what
//! it needs from each [`Step`] and from [`Pipeline::reports`]: `observer run` adds HTTP,
//! alert delivery, systemd and restart state; `observer watch` adds filters and output.

mod applied;
mod reconcile;
mod state;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    task::JoinHandle,
    time::{Instant, Interval},
};

use self::applied::Applied;
pub use self::{
    reconcile::Done as Reconciled,
    state::{Shared, State},
};
use crate::{
    alerts::{Change, Engine, Inputs},
    clock::{mono_now_ns, nanos},
    config::{AlertRule, RuleKind},
    inventory::{self, OwnerFound},
    kernel::max_tw_buckets,
    load::{Features, LoadOptions, RingBufferSize, format_size},
    sockdiag::{self, ListenSnapshot},
    stream::{EventStream, Losses},
    track::{Report, Tracker},
};

/// What the pipeline is asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    pub load: LoadOptions,
    /// Sockets tracked at once (and, separately, timewait sockets).
    pub max_sockets: usize,
    pub settings: Settings,
    /// The kubelet's directory of container log links, naming pods (none: pods unnamed).
    pub kubelet_logs: Option<std::path::PathBuf>,
}

/// What may change while the pipeline runs (a daemon's configuration reload).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Retransmitting without progress this long makes a half-open suspect.
    pub half_open_after: Duration,
    /// How often the tracker is reconciled with sock_diag.
    pub reconcile_every: Duration,
    /// How often accept queues are sampled; `None`: never.
    pub listen_every: Option<Duration>,
    /// Holders of CLOSE_WAIT sockets are looked for once they are this old (or younger, when
    /// an alert rule is about younger ones).
    pub owner_after: Duration,
    /// How often owners are looked for and rules evaluated; `None`: never.
    pub evaluate_every: Option<Duration>,
    /// The alert rules; `None`: no evaluation (owners are still looked for).
    pub alerts: Option<AlertSettings>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AlertSettings {
    pub rules: Vec<AlertRule>,
    pub max_per_rule: usize,
}

/// What happened in one call of [`Pipeline::next`], besides the reports.
#[derive(Debug, Default)]
pub struct Step {
    /// Alert state changes of an evaluation.
    pub changes: Vec<Change>,
    /// Rules were evaluated.
    pub evaluated: bool,
    /// Events were lost since the last report of losses: (then, now).
    pub new_losses: Option<(Losses, Losses)>,
    /// A reconciliation ended.
    pub reconciled: Option<Reconciled>,
}

/// A loss is followed by a reconciliation this soon (what was lost may have left phantoms),
/// unless one ran less than [`EARLY_RECONCILE_GAP`] ago.
const EARLY_RECONCILE_AFTER: Duration = Duration::from_secs(1);
const EARLY_RECONCILE_GAP: Duration = Duration::from_secs(10);

/// Reports buffered between reads are kept to this capacity.
const KEPT_CAPACITY: usize = 16_384;

/// Events applied under one taking of the state's lock: a scrape waits for at most one chunk.
const CHUNK: usize = 256;

/// At most this many records are taken per read: a ring refilled as fast as it is read must
/// not keep [`Pipeline::next`] from returning, and one step's reports stay a fraction of a
/// streaming client's queue (4 MiB by default). What is left is read at once, without waiting.
const MAX_PER_READ: usize = 4096;

/// A CLOSE_WAIT socket whose holder was not found is looked for again this much later.
const OWNER_RETRY_NS: u64 = 60_000_000_000;
/// At most this many CLOSE_WAIT sockets are looked for at once (the oldest), and this many
/// remembered as looked for.
const MAX_OWNER_LOOKUPS: usize = 4096;
const MAX_OWNERS_TRIED: usize = 1 << 16;

/// Whether a pipeline's reports of plain transitions (those without a note, and timewait
/// sockets' entries and ends: nothing but a reader uses them) are read. A
/// front-end that shows every transition always reads them; the daemon only while its socket
/// has clients. Read before each event is applied, so an event that happens after a reader
/// arrives is reported to it.
#[derive(Clone, Debug)]
pub struct PlainReports(Arc<AtomicBool>);

impl PlainReports {
    pub fn set(&self, read: bool) {
        self.0.store(read, Ordering::SeqCst);
    }

    fn read(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The timers; each kept across reloads unless its period changed.
struct Timers {
    losses: Interval,
    reconcile: Interval,
    listen: Interval,
    evaluate: Interval,
}

pub struct Pipeline {
    stream: EventStream,
    shared: Shared,
    /// Every record reserved before a `CLOCK_MONOTONIC` time has been applied: what a
    /// reconciliation waits for.
    applied: Arc<Applied>,
    /// The last read stopped at [`MAX_PER_READ`]: the next one does not wait.
    behind: bool,
    reports: Vec<Report>,
    plain_reports: PlainReports,
    engine: Option<Engine>,
    settings: Settings,
    timers: Timers,
    pending_reconcile: Option<JoinHandle<Reconciled>>,
    pending_listen: Option<JoinHandle<ListenSnapshot>>,
    pending_owners: Option<JoinHandle<Vec<OwnerFound>>>,
    /// CLOSE_WAIT sockets looked for lately: tracker key -> when.
    owners_tried: rustc_hash::FxHashMap<u64, u64>,
    /// Losses at the last report.
    reported: Losses,
    last_reconcile: Instant,
    /// What the start-up reconciliation did.
    seeded: Reconciled,
}

/// An interval whose first tick comes after one period, not at once.
#[must_use]
pub fn interval_after(period: Duration) -> Interval {
    tokio::time::interval_at(Instant::now() + period, period)
}

/// Ticks every `period`, or (in effect) never.
#[must_use]
pub fn every_or_never(period: Option<Duration>) -> Interval {
    interval_after(period.unwrap_or(Duration::MAX / 4))
}

impl Pipeline {
    /// Attaches the programs and seeds the tracker from sock_diag, applying events all the
    /// while (a dump of a busy host takes seconds). Must run inside a tokio runtime.
    pub async fn start(options: Options) -> anyhow::Result<Self> {
        let stream = EventStream::open(&options.load)?;
        log_ring_size(options.load.ring_buffer_bytes);
        let settings = options.settings;
        let mut tracker = Tracker::new(options.max_sockets);
        let half_open_after_ns = nanos(settings.half_open_after);
        tracker.set_half_open_after(half_open_after_ns);
        let workloads =
            crate::workload::Resolver::host_with_kubelet(options.kubelet_logs.as_deref());
        let shared = Shared::new(State::with_workloads(
            tracker,
            half_open_after_ns,
            Arc::new(workloads),
        ));
        let engine = settings
            .alerts
            .as_ref()
            .map(|a| Engine::new(a.rules.clone(), a.max_per_rule));
        let timers = Timers {
            losses: interval_after(Duration::from_secs(1)),
            reconcile: interval_after(settings.reconcile_every),
            listen: every_or_never(settings.listen_every),
            evaluate: every_or_never(settings.evaluate_every),
        };
        let mut p = Self {
            stream,
            shared,
            applied: Arc::new(Applied::default()),
            behind: false,
            reports: Vec::with_capacity(1024),
            plain_reports: PlainReports(Arc::new(AtomicBool::new(true))),
            engine,
            settings,
            timers,
            pending_reconcile: None,
            pending_listen: None,
            pending_owners: None,
            owners_tried: rustc_hash::FxHashMap::default(),
            reported: Losses::default(),
            last_reconcile: Instant::now(),
            seeded: Reconciled::default(),
        };
        p.start_reconcile();
        loop {
            tokio::select! {
                r = p.stream.wait(p.behind) => {
                    let applied = r.context("waiting for the ring buffer")?;
                    p.apply(applied);
                    // Counted in the state; not shown.
                    p.reports.clear();
                }
                () = p.applied.wanted() => p.behind = true,
                done = join(&mut p.pending_reconcile) => {
                    p.pending_reconcile = None;
                    p.seeded = done.context("the start-up sock_diag dump panicked")?;
                    p.last_reconcile = Instant::now();
                    break;
                }
            }
        }
        // What the start-up produced (reports of the events applied meanwhile) is not shown.
        p.reports.clear();
        p.start_listen_sample();
        Ok(p)
    }

    /// Waits for the next thing worth a front-end's attention. Cancel-safe: a front-end may
    /// select it beside its own timers. [`Pipeline::reports`] then holds the reports of the
    /// events applied.
    pub async fn next(&mut self) -> anyhow::Result<Step> {
        self.reports.clear();
        // A burst's buffers are not kept: a full ring is 100,000 events.
        if self.reports.capacity() > KEPT_CAPACITY {
            self.reports.shrink_to(KEPT_CAPACITY);
        }
        loop {
            tokio::select! {
                r = self.stream.wait(self.behind) => {
                    let applied = r.context("waiting for the ring buffer")?;
                    self.apply(applied);
                    if !self.reports.is_empty() {
                        return Ok(Step::default());
                    }
                }
                // A reconciliation waits for the rings to be read: at once, not at the next look.
                () = self.applied.wanted() => self.behind = true,
                _ = self.timers.losses.tick() => {
                    if let Some(new) = self.check_losses()? {
                        return Ok(Step { new_losses: Some(new), ..Step::default() });
                    }
                }
                _ = self.timers.reconcile.tick(), if self.pending_reconcile.is_none() => {
                    self.start_reconcile();
                }
                done = join(&mut self.pending_reconcile) => {
                    self.pending_reconcile = None;
                    self.last_reconcile = Instant::now();
                    let done = done.context("the sock_diag dump panicked")?;
                    log_reconciled(&done);
                    return Ok(Step { reconciled: Some(done), ..Step::default() });
                }
                _ = self.timers.listen.tick(), if self.pending_listen.is_none() => {
                    self.start_listen_sample();
                }
                sample = join(&mut self.pending_listen) => {
                    self.pending_listen = None;
                    let sample = sample.context("the listener sample panicked")?;
                    self.shared.lock().listen.update(sample, mono_now_ns());
                }
                _ = self.timers.evaluate.tick(), if self.pending_owners.is_none() => {
                    if let Some(step) = self.begin_evaluation() {
                        return Ok(step);
                    }
                }
                found = join(&mut self.pending_owners) => {
                    self.pending_owners = None;
                    let found = found.context("the search for CLOSE_WAIT holders panicked")?;
                    inventory::apply_owners(&mut self.shared.lock().tracker, &found);
                    if let Some(step) = self.evaluate() {
                        return Ok(step);
                    }
                }
            }
        }
    }

    /// Whether plain transitions are reported: every transition is, until the front-end says
    /// otherwise through this.
    #[must_use]
    pub fn plain_reports(&self) -> PlainReports {
        self.plain_reports.clone()
    }

    /// The reports of the events applied in the last [`Pipeline::next`].
    #[must_use]
    pub fn reports(&self) -> &[Report] {
        &self.reports
    }

    /// The state, under its lock.
    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.lock()
    }

    /// The state, shared (for a server that reads it from other tasks).
    #[must_use]
    pub fn shared(&self) -> Shared {
        self.shared.clone()
    }

    /// The alert engine, when rules are evaluated.
    pub const fn engine(&mut self) -> Option<&mut Engine> {
        self.engine.as_mut()
    }

    /// The tracker (under the lock) and the alert engine together: for what reads or restores
    /// both (the daemon's restart state).
    pub fn with_parts<R>(&mut self, f: impl FnOnce(&mut Tracker, Option<&mut Engine>) -> R) -> R {
        let mut s = self.shared.lock();
        f(&mut s.tracker, self.engine.as_mut())
    }

    #[must_use]
    pub const fn settings(&self) -> &Settings {
        &self.settings
    }

    /// What the start-up reconciliation did.
    #[must_use]
    pub const fn seeded(&self) -> &Reconciled {
        &self.seeded
    }

    /// Events decoded so far.
    #[must_use]
    pub const fn received(&self) -> u64 {
        self.stream.received()
    }

    /// Which optional parts of the observation work on this kernel.
    #[must_use]
    pub const fn features(&self) -> &Features {
        self.stream.features()
    }

    /// Everything lost so far.
    pub fn losses(&self) -> anyhow::Result<Losses> {
        Ok(self.stream.losses()?)
    }

    /// Takes new settings: timers whose period changed start again (the others keep their
    /// phase, so that a burst of reloads does not make a burst of evaluations), rules are
    /// replaced (alerts of rules that keep their name keep their state). Returns the changes
    /// that replacing the rules made.
    pub fn reconfigure(&mut self, new: Settings) -> Vec<Change> {
        let old = std::mem::replace(&mut self.settings, new);
        let new = &self.settings;
        if new.reconcile_every != old.reconcile_every {
            self.timers.reconcile = interval_after(new.reconcile_every);
        }
        if new.listen_every != old.listen_every {
            self.timers.listen = every_or_never(new.listen_every);
        }
        if new.evaluate_every != old.evaluate_every {
            self.timers.evaluate = every_or_never(new.evaluate_every);
        }
        let half_open_after_ns = nanos(new.half_open_after);
        {
            let mut s = self.shared.lock();
            s.half_open_after_ns = half_open_after_ns;
            s.tracker.set_half_open_after(half_open_after_ns);
        }
        match (&mut self.engine, &new.alerts) {
            (Some(engine), Some(a)) => engine.set_rules(a.rules.clone(), a.max_per_rule),
            (None, Some(a)) => {
                self.engine = Some(Engine::new(a.rules.clone(), a.max_per_rule));
                Vec::new()
            }
            (Some(engine), None) => {
                let changes = engine.set_rules(Vec::new(), 0);
                self.engine = None;
                changes
            }
            (None, None) => Vec::new(),
        }
    }

    /// Reconciles with sock_diag now (unless a reconciliation is running): its end comes as a
    /// [`Step::reconciled`].
    pub fn reconcile_now(&mut self) {
        if self.pending_reconcile.is_none() {
            self.timers.reconcile.reset_immediately();
        }
    }

    /// Applies what is left in the ring buffers (before exiting: nothing observed is dropped).
    pub fn drain(&mut self) {
        self.reports.clear();
        self.stream.unbound();
        self.apply(mono_now_ns());
    }

    /// The most recent decoding failure, for the log.
    pub fn take_decode_error(&mut self) -> Option<crate::decode::DecodeError> {
        self.stream.take_decode_error()
    }

    /// Takes the ring's records and applies them to the tracker as they are decoded, a chunk
    /// at a time, then moves the tracker's time on. `applied_ns` (records reserved before it
    /// were in the ring when the read began) is published only once the ring has been emptied.
    fn apply(&mut self, applied_ns: u64) {
        let mut taken = 0;
        let emptied = loop {
            let mut guard = self.shared.lock();
            let s = &mut *guard;
            let first = self.reports.len();
            let reports = &mut self.reports;
            let plain = &self.plain_reports;
            let n = self.stream.drain_each(CHUNK, |event| {
                s.tracker.report_plain_transitions(plain.read());
                s.tracker.apply(event, reports);
            });
            s.count_reports(&self.reports[first..]);
            drop(guard);
            taken += n;
            if n < CHUNK {
                break true;
            }
            if taken >= MAX_PER_READ {
                break false;
            }
        };
        let mut guard = self.shared.lock();
        let s = &mut *guard;
        let first = self.reports.len();
        s.tracker.advance(mono_now_ns(), &mut self.reports);
        s.count_reports(&self.reports[first..]);
        s.received = self.stream.received();
        drop(guard);
        self.behind = !emptied;
        if emptied {
            self.applied.publish(applied_ns);
        }
    }

    /// Samples the listeners, counting their request sockets when that is due.
    fn start_listen_sample(&mut self) {
        let Some(every) = self.settings.listen_every else {
            return;
        };
        let requests = self.shared.lock().listen.requests_due(mono_now_ns(), every);
        self.pending_listen = Some(tokio::task::spawn_blocking(move || {
            sockdiag::listeners_all(requests)
        }));
    }

    fn start_reconcile(&mut self) {
        let shared = self.shared.clone();
        let applied = Arc::clone(&self.applied);
        self.pending_reconcile = Some(tokio::task::spawn_blocking(move || {
            reconcile::run(&shared, &applied)
        }));
    }

    /// New losses since the last report: logged with what to do, and a reconciliation soon
    /// (an event lost may have left a phantom, or hidden a socket).
    fn check_losses(&mut self) -> anyhow::Result<Option<(Losses, Losses)>> {
        let now = self.stream.losses()?;
        self.shared.lock().losses = now;
        if now.total() <= self.reported.total() {
            return Ok(None);
        }
        let before = std::mem::replace(&mut self.reported, now);
        let mut why = now.new_since(&before);
        if now.malformed > before.malformed
            && let Some(e) = self.stream.take_decode_error()
            && let Some(last) = why.last_mut()
        {
            *last = format!("{last}, last: {e}");
        }
        log::warn!("lost events: {}", why.join("; "));
        if self.pending_reconcile.is_none() && self.last_reconcile.elapsed() >= EARLY_RECONCILE_GAP
        {
            self.timers.reconcile.reset_after(EARLY_RECONCILE_AFTER);
        }
        Ok(Some((before, now)))
    }

    /// Looks for the holders of the CLOSE_WAIT sockets old enough (off the event loop), then
    /// evaluates; evaluates at once when there are none to look for.
    fn begin_evaluation(&mut self) -> Option<Step> {
        let older_than = self.owner_threshold();
        let now = mono_now_ns();
        let wanted = {
            let s = self.shared.lock();
            inventory::owners_wanted(&s.tracker, nanos(older_than), now)
        };
        // A socket no process holds (one still in its accept queue, say) is looked for again
        // only after a while, and a lookup is bounded.
        self.owners_tried
            .retain(|_, at| now.saturating_sub(*at) < OWNER_RETRY_NS);
        let wanted: Vec<_> = wanted
            .into_iter()
            .filter(|w| !self.owners_tried.contains_key(&w.key))
            .take(MAX_OWNER_LOOKUPS)
            .collect();
        for w in &wanted {
            if self.owners_tried.len() < MAX_OWNERS_TRIED {
                self.owners_tried.insert(w.key, now);
            }
        }
        if wanted.is_empty() {
            return self.evaluate();
        }
        self.pending_owners = Some(tokio::task::spawn_blocking(move || {
            inventory::find_owners(&wanted)
        }));
        None
    }

    /// Holders are looked for once a CLOSE_WAIT socket is `owner_after` old, or as old as the
    /// youngest a rule alerts on, so that its first notification names its holder.
    fn owner_threshold(&self) -> Duration {
        let rules = self.engine.as_ref().map_or(&[][..], |e| e.rules());
        rules
            .iter()
            .filter_map(|r| match r.kind {
                RuleKind::CloseWaitAge { older_than } => Some(older_than),
                _ => None,
            })
            .fold(self.settings.owner_after, Duration::min)
    }

    fn evaluate(&mut self) -> Option<Step> {
        let engine = self.engine.as_mut()?;
        let wall = jiff::Timestamp::now();
        let mut guard = self.shared.lock();
        let s = &mut *guard;
        let changes = engine.evaluate(
            &Inputs {
                tracker: &s.tracker,
                limits: &s.limits,
                listeners: &s.listen.listeners,
                lost_total: s.losses.total(),
                now_ns: mono_now_ns(),
                workloads: Some(&s.workloads),
            },
            wall,
        );
        s.alert_counts = engine.counts();
        s.active_alerts = engine.active().cloned().collect();
        Some(Step {
            changes,
            evaluated: true,
            ..Step::default()
        })
    }
}

/// Awaits a pending blocking task; never completes when there is none (guard the branch).
async fn join<T>(pending: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match pending.as_mut() {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}

/// What the ring costs, and whether it holds the host's largest TIME_WAIT expiry burst.
fn log_ring_size(bytes: u32) {
    let holds = RingBufferSize::timewait_burst(bytes);
    let size = format_size(u64::from(bytes));
    match max_tw_buckets() {
        Some(max) if max > holds => log::warn!(
            "ring buffer: {size} of kernel memory; it holds the expiry burst of {holds} \
             timewait sockets, fewer than net.ipv4.tcp_max_tw_buckets ({max}): raise \
             kernel.ring_buffer_size (or --ring-buffer-size), or leave it at \"auto\""
        ),
        _ => log::info!(
            "ring buffer: {size} of kernel memory; it holds the expiry burst of {holds} \
             timewait sockets"
        ),
    }
}

fn log_reconciled(done: &Reconciled) {
    let o = &done.outcome;
    // Sockets not tracked yet mean lost starts too: the kernel can skip a program uncounted.
    if o.stale + o.stale_timewait + o.corrected + o.added + o.missed_by_dump > 0 {
        log::info!(
            "reconciliation: {} sockets and {} timewait sockets had ended unseen, {} had \
             changed state unseen (corrected); {} sockets were not tracked yet; {} unlisted \
             sockets were still there ({} listed in {} network namespaces, {:.1?})",
            o.stale,
            o.stale_timewait,
            o.corrected,
            o.added,
            o.missed_by_dump,
            done.listed,
            done.dumped.len(),
            done.took
        );
    }
    for failure in &done.failed {
        log::debug!("sock_diag: {failure}");
    }
}
