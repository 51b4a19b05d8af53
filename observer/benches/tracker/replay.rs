//! Feeding the stream to the tracker as the daemon does, as decoded events or as the records
//! the eBPF programs write, and checking what the tracker made of it.

use std::time::{Duration, Instant};

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

/// Feeds the stream to a fresh tracker the way the daemon does: a batch, then `advance`. With
/// a codec, each batch is first written as records (not timed) and decoded in the timed part.
/// `plain`: every transition is reported, as while a client (`observer watch`) reads them;
/// else only notable ones, as the daemon does with none.
pub fn run_stream(
    stream: &[Event],
    codec: Option<&Codec>,
    plain: bool,
    expected: &Expected,
) -> StreamRun {
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
    let mut out: Vec<Report> = Vec::with_capacity(2 * BATCH);
    let mut records = Records::default();
    let mut reports = 0;
    let (mut peak_sockets, mut peak_timewait) = (0, 0);
    let mut elapsed = Duration::ZERO;
    for batch in stream.chunks(BATCH) {
        if let Some(codec) = codec {
            records.fill(codec, batch);
        }
        let start = Instant::now();
        match codec {
            None => {
                for e in batch {
                    tracker.apply(e, &mut out);
                }
            }
            Some(codec) => {
                for record in records.iter() {
                    let e = codec.decoder.decode(record).expect("checked records");
                    tracker.apply(&e, &mut out);
                }
            }
        }
        tracker.advance(batch.last().map_or(0, Event::mono_ns), &mut out);
        elapsed += start.elapsed();
        reports += out.len() as u64;
        out.clear();
        let stats = tracker.stats();
        // Every timewait socket of the stream is a client's, on an ephemeral port.
        let by_destination: u64 = tracker.timewait_usage().per_destination.values().sum();
        assert_eq!(
            usize::try_from(by_destination),
            Ok(stats.tracked_timewait),
            "timewait sockets counted by destination"
        );
        peak_sockets = peak_sockets.max(stats.tracked_sockets);
        peak_timewait = peak_timewait.max(stats.tracked_timewait);
    }

    // Long after the last event: every grace period is over.
    let end = stream.last().map_or(0, Event::mono_ns) + 10 * GRACE_NS;
    tracker.advance(end, &mut out);
    reports += out.len() as u64;
    check(&tracker, expected, reports, plain);
    StreamRun {
        elapsed,
        reports,
        peak_sockets,
        peak_timewait,
    }
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
