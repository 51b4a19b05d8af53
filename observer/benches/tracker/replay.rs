//! Feeding the stream to the tracker as the daemon does, as decoded events or as the records
//! the eBPF programs write, and checking what the tracker made of it.

use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

use observer::{
    decode::encode::linux_6_18::Codec,
    event::{Event, PerState, ResetDirection},
    kernel::NetLimits,
    track::{DEFAULT_MAX_SOCKETS, GRACE_NS, Report, Tracker, resets::ResetClass},
};
use observer_common::TcpState::TimeWait;
use rustc_hash::FxHashMap;

use super::{
    BATCH,
    stream::{Expected, NETNS},
};

/// One batch of records, back to back as a ring-buffer drain reads them.
#[derive(Default)]
struct Records {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Records {
    fn fill(&mut self, codec: &Codec, events: &[Event]) {
        self.bytes.clear();
        self.ends.clear();
        for e in events {
            codec
                .encoder
                .encode(e, &mut self.bytes)
                .expect("every kind of the stream is enabled");
            self.ends.push(self.bytes.len());
        }
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(s, &e)| &self.bytes[s..e])
    }
}

/// Panics unless every event of the stream decodes back from its record unchanged.
pub fn check_records(codec: &Codec, stream: &[Event]) {
    let mut records = Records::default();
    for batch in stream.chunks(BATCH) {
        records.fill(codec, batch);
        for (record, event) in records.iter().zip(batch) {
            assert_eq!(codec.decoder.decode(record).as_ref(), Ok(event));
        }
    }
}

/// One feeding of the whole stream.
pub struct StreamRun {
    pub elapsed: Duration,
    pub reports: u64,
    pub peak_sockets: usize,
    pub peak_timewait: usize,
}

/// Two CPUs this process may run on: one writes records, the other decodes them.
#[derive(Clone, Copy)]
pub struct CpuPair {
    reader: usize,
    writer: usize,
}

impl CpuPair {
    /// The first two CPUs of this thread's affinity mask; `None` with fewer than two.
    pub fn find() -> Option<Self> {
        let mut cpus = (0..libc::CPU_SETSIZE as usize).filter({
            let set = affinity()?;
            // SAFETY: a set the kernel filled, read within its size.
            move |&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }
        });
        Some(Self {
            reader: cpus.next()?,
            writer: cpus.next()?,
        })
    }
}

/// The calling thread's affinity mask.
fn affinity() -> Option<libc::cpu_set_t> {
    // SAFETY: an all-zero `cpu_set_t` is an empty set, and the kernel writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &raw mut set) == 0).then_some(set)
    }
}

/// Binds the calling thread to `set`.
fn set_affinity(set: &libc::cpu_set_t) {
    // SAFETY: a valid set of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), set) };
    assert_eq!(
        rc,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
}

/// Binds the calling thread to `cpu` alone.
fn pin(cpu: usize) {
    // SAFETY: an all-zero `cpu_set_t` is an empty set; `cpu` is below `CPU_SETSIZE`.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    };
    set_affinity(&set);
}

/// How the stream reaches the tracker.
#[derive(Clone, Copy)]
pub enum Feed<'a> {
    /// As decoded events: the tracker alone.
    Events,
    /// As records, each batch written by the thread that decodes it, just before: in its
    /// cache, as a record a program wrote on the reader's CPU.
    Records(&'a Codec),
    /// As records, each batch written by a thread on another CPU while the reader waits, as
    /// the programs write a transition's record on the CPU where it happens: the reader takes
    /// every record's cache lines from the other CPU, from its cache or from beyond it.
    RecordsFromAnotherCpu(&'a Codec, CpuPair, WriterCache),
}

/// Where the records written on another CPU are when the reader takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriterCache {
    /// In the writer's cache, just written.
    Kept,
    /// Pushed out of the writer's cache by [`EVICT_BYTES`] of other writes: as the daemon
    /// finds them, read up to tens of milliseconds after a program wrote them, while the load
    /// wrote on that CPU.
    Evicted,
}

/// What the writer writes after each batch to push the batch out of its own caches: four
/// times the 2 MiB L2 per core of the machines measured here.
const EVICT_BYTES: usize = 8 << 20;

/// Feeds the stream to a fresh tracker the way the daemon does: a batch, then `advance`.
/// Records are written outside the timed part and decoded in it.
/// `plain`: every transition is reported, as while a client (`observer watch`) reads them;
/// else only notable ones, as the daemon does with none.
pub fn run_stream(stream: &[Event], feed: Feed, plain: bool, expected: &Expected) -> StreamRun {
    let mut tracker = Tracker::new(DEFAULT_MAX_SOCKETS);
    tracker.report_plain_transitions(plain);
    // What the daemon reads of each namespace (Linux's defaults): with a port range known,
    // every timewait socket holding an ephemeral port is also counted by destination.
    tracker.set_limits(&FxHashMap::from_iter([(
        NETNS,
        NetLimits {
            max_tw_buckets: Some(262_144),
            local_port_range: Some((32_768, 60_999)),
        },
    )]));
    let mut feeding = Feeding {
        tracker,
        out: Vec::with_capacity(2 * BATCH),
        run: StreamRun {
            elapsed: Duration::ZERO,
            reports: 0,
            peak_sockets: 0,
            peak_timewait: 0,
        },
    };
    match feed {
        Feed::Events => {
            for batch in stream.chunks(BATCH) {
                feeding.batch(batch, None);
            }
        }
        Feed::Records(codec) => {
            let mut records = Records::default();
            for batch in stream.chunks(BATCH) {
                records.fill(codec, batch);
                feeding.batch(batch, Some((codec, &records)));
            }
        }
        Feed::RecordsFromAnotherCpu(codec, cpus, cache) => {
            feed_from_another_cpu(&mut feeding, stream, codec, cpus, cache);
        }
    }
    let Feeding {
        mut tracker,
        mut out,
        mut run,
    } = feeding;
    // Long after the last event: every grace period is over.
    let end = stream.last().map_or(0, Event::mono_ns) + 10 * GRACE_NS;
    tracker.advance(end, &mut out);
    run.reports += out.len() as u64;
    check(&tracker, expected, run.reports, plain);
    run
}

/// A tracker being fed, and what its feeding measured so far.
struct Feeding {
    tracker: Tracker,
    out: Vec<Report>,
    run: StreamRun,
}

impl Feeding {
    /// Applies one batch, as events or decoded from its records (timed), then checks it.
    fn batch(&mut self, batch: &[Event], records: Option<(&Codec, &Records)>) {
        let tracker = &mut self.tracker;
        let start = Instant::now();
        match records {
            None => {
                for e in batch {
                    tracker.apply(e, &mut self.out);
                }
            }
            Some((codec, records)) => {
                for record in records.iter() {
                    let e = codec.decoder.decode(record).expect("checked records");
                    tracker.apply(&e, &mut self.out);
                }
            }
        }
        tracker.advance(batch.last().map_or(0, Event::mono_ns), &mut self.out);
        self.run.elapsed += start.elapsed();
        self.run.reports += self.out.len() as u64;
        self.out.clear();
        let stats = tracker.stats();
        // Every timewait socket of the stream is a client's, on an ephemeral port.
        let by_destination: u64 = tracker.timewait_usage().per_destination.values().sum();
        assert_eq!(
            usize::try_from(by_destination),
            Ok(stats.tracked_timewait),
            "timewait sockets counted by destination"
        );
        self.run.peak_sockets = self.run.peak_sockets.max(stats.tracked_sockets);
        self.run.peak_timewait = self.run.peak_timewait.max(stats.tracked_timewait);
    }
}

/// [`Feed::RecordsFromAnotherCpu`]: one buffer passed back and forth, so that the writer
/// never runs while the reader is timed.
fn feed_from_another_cpu(
    feeding: &mut Feeding,
    stream: &[Event],
    codec: &Codec,
    cpus: CpuPair,
    cache: WriterCache,
) {
    let before = affinity().expect("the affinity read when the pair was found");
    pin(cpus.reader);
    let (to_writer, writer_gets) = mpsc::sync_channel::<Records>(1);
    let (to_reader, reader_gets) = mpsc::sync_channel::<Records>(1);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            pin(cpus.writer);
            let mut other_writes = match cache {
                WriterCache::Kept => Vec::new(),
                WriterCache::Evicted => vec![0u8; EVICT_BYTES],
            };
            for batch in stream.chunks(BATCH) {
                let mut records = writer_gets.recv().expect("the reader waits for each batch");
                records.fill(codec, batch);
                // A write to every cache line: the batch's lines leave this CPU's caches
                // before the reader takes them.
                for line in other_writes.chunks_mut(64) {
                    line[0] = line[0].wrapping_add(1);
                }
                std::hint::black_box(&other_writes);
                to_reader
                    .send(records)
                    .expect("the reader waits for each batch");
            }
        });
        to_writer
            .send(Records::default())
            .expect("the writer waits for a buffer");
        for batch in stream.chunks(BATCH) {
            let records = reader_gets.recv().expect("the writer fills every batch");
            feeding.batch(batch, Some((codec, &records)));
            // After the last batch the writer is gone, and the buffer with it.
            let _ = to_writer.send(records);
        }
    });
    set_affinity(&before);
}

/// Panics unless the tracker saw exactly what the stream holds.
fn check(tracker: &Tracker, expected: &Expected, reports: u64, plain: bool) {
    let stats = tracker.stats();
    let (gaps, missing) = (stats.gaps, stats.timewait_missing);
    assert_eq!(
        gaps, 0,
        "transitions missed in a complete stream: {stats:?}"
    );
    assert_eq!(missing, 0, "TIME_WAIT entries not linked: {stats:?}");
    assert_eq!(
        (
            stats.evicted,
            stats.timewait_untracked,
            stats.timewait_unlinked
        ),
        (0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(
        (stats.timewait_end_lost, stats.timewait_restarted),
        (0, 0),
        "{stats:?}"
    );
    assert_eq!(
        (stats.tracked_sockets, stats.tracked_timewait),
        (0, 0),
        "every connection ended: {stats:?}"
    );
    let tw = tracker.timewait_counts();
    assert_eq!(
        (tw.started, tw.expired, tw.killed, tw.unseen),
        (expected.close_first, expected.close_first, 0, 0),
        "(started, expired, killed, unseen)"
    );
    assert_eq!(tracker.durations().of(TimeWait).count, expected.close_first);
    let usage = tracker.timewait_usage();
    assert!(
        usage.per_netns.is_empty() && usage.per_destination.is_empty(),
        "every timewait socket counted in was counted out: {usage:?}"
    );
    assert_eq!(tracker.counts_by_state(), PerState::default());
    assert!(tracker.closed_before_accept().is_empty());
    let resets = tracker.resets();
    assert_eq!(
        (
            resets.get(ResetDirection::Received, ResetClass::PeerAbort),
            resets.get(ResetDirection::Sent, ResetClass::AbortiveClose),
        ),
        (expected.linger, expected.linger),
        "RSTs of the SO_LINGER closes"
    );
    assert_eq!(
        reports,
        expected.reports(plain),
        "reports (plain transitions: {plain})"
    );
}
