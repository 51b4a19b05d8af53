//! The stream of decoded events: attached probes -> per-CPU ring buffers -> [`Event`]s, in
//! time order ([`merge`]).
//!
//! Shared by every consumer (`observer watch`, the integration tests) so that all of them read,
//! decode and count losses the same way.

mod merge;
pub mod ring;
mod wakeups;

use std::time::Duration;

use tokio::io::unix::AsyncFd;

use self::{
    merge::{Heads, Look},
    ring::Ring,
    wakeups::Wakeups,
};
use crate::{
    clock::mono_now_ns,
    decode::{DecodeError, Decoder, record_time},
    event::Event,
    load::{
        Features, KernelLosses, LoadError, LoadOptions, Probes, READ_EVERY, READ_IDLE_MAX,
        contract::Part,
    },
};

/// A program submits its record microseconds after reserving it; a drain stops at the first
/// record of a ring not yet submitted. Records reserved this long before a drain began have
/// been read, and a drain takes no younger ones, so that a record still being written on one
/// CPU is not overtaken by younger records of another.
pub const SUBMIT_MARGIN_NS: u64 = 1_000_000;

/// Everything lost between the kernel and the consumer, so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Losses {
    pub kernel: KernelLosses,
    /// Records that failed decoding (counted, skipped).
    pub malformed: u64,
}

impl Losses {
    #[must_use]
    pub const fn total(&self) -> u64 {
        self.kernel.total() + self.malformed
    }

    /// What was lost since `before`, one phrase per cause, each saying what to do about it.
    #[must_use]
    pub fn new_since(&self, before: &Self) -> Vec<String> {
        let (k, b) = (self.kernel, before.kernel);
        let mut why = Vec::new();
        if k.ring_buffer_full > b.ring_buffer_full {
            why.push(format!(
                "{} because the ring buffer was full (raise --ring-buffer-size, or \
                 kernel.ring_buffer_size in the configuration)",
                k.ring_buffer_full - b.ring_buffer_full
            ));
        }
        if k.recursion_misses > b.recursion_misses {
            // Which programs: an RST or a retransmission skipped stays uncounted, a transition
            // is repaired by the next reconciliation. Timer runs are an upper bound, apart.
            let programs: Vec<String> = k
                .skipped
                .since(&b.skipped)
                .filter(|(p, _)| p.part != Part::Timewait)
                .map(|(p, n)| format!("{} {n}", p.name))
                .collect();
            why.push(format!(
                "{} skipped by the kernel while another BPF program ran on the same CPU ({})",
                k.recursion_misses - b.recursion_misses,
                programs.join(", ")
            ));
        }
        if k.read_failed > b.read_failed {
            why.push(format!(
                "{} unreadable tracepoint records",
                k.read_failed - b.read_failed
            ));
        }
        if self.malformed > before.malformed {
            why.push(format!(
                "{} malformed records",
                self.malformed - before.malformed
            ));
        }
        why
    }
}

pub struct EventStream {
    probes: Probes,
    /// Each CPU's ring, in CPU order.
    rings: Vec<Ring>,
    heads: Heads,
    /// Readable when a program wakes the reader (past a fill level of its ring).
    wakeups: AsyncFd<Wakeups>,
    /// Drains take the records written before this time (`CLOCK_MONOTONIC` ns): the last
    /// wait's end, less [`SUBMIT_MARGIN_NS`].
    bound: u64,
    decoder: Counting,
    pace: ReadPace,
    /// A wait ended and the drain after it has not yet told the pace what it found.
    look_pending: bool,
}

/// How long the next read waits for a wakeup before it looks on its own: [`READ_EVERY`] while
/// records come, doubled after each look that found none, up to [`READ_IDLE_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ReadPace {
    wait: Duration,
}

impl ReadPace {
    const fn new() -> Self {
        Self { wait: READ_EVERY }
    }

    fn looked(&mut self, found_records: bool) {
        self.wait = if found_records {
            READ_EVERY
        } else {
            (self.wait * 2).min(READ_IDLE_MAX)
        };
    }
}

/// Decodes records and counts what it receives and what it rejects.
struct Counting {
    layout: Decoder,
    received: u64,
    malformed: u64,
    last_error: Option<DecodeError>,
}

impl Counting {
    /// Takes up to `limit` records written before `bound` from the rings, in time order
    /// ([`merge`]), handing each decoded event to `each`; returns how many records it took,
    /// decoded or not.
    fn drain(
        &mut self,
        rings: &mut [Ring],
        heads: &mut Heads,
        bound: u64,
        limit: usize,
        mut each: impl FnMut(&Event),
    ) -> usize {
        let taken = heads.drain(rings, bound, limit, peek_time, |ring, turn| {
            let Some(record) = ring.head() else {
                return Look::Empty;
            };
            let time = record_time(record).unwrap_or(0);
            if !turn.comes_first(time) {
                return Look::Left(time);
            }
            self.decode(record, &mut each);
            ring.take();
            Look::Taken
        });
        for ring in rings {
            ring.publish();
        }
        taken
    }

    fn decode(&mut self, record: &[u8], each: &mut impl FnMut(&Event)) {
        // By reference: moving the event out of the result is a copy of it.
        match self.layout.decode(record) {
            Ok(ref event) => {
                self.received += 1;
                each(event);
            }
            Err(e) => {
                self.malformed += 1;
                self.last_error = Some(e);
            }
        }
    }
}

/// The time of a ring's first unread record, leaving it unread. A record without a time of
/// this daemon's layout counts as the oldest: it is taken at once, and rejected by the decoder.
fn peek_time(ring: &mut Ring) -> Option<u64> {
    ring.head().map(|record| record_time(record).unwrap_or(0))
}

impl EventStream {
    /// Loads and attaches the probes. Must run inside a tokio runtime.
    pub fn open(options: &LoadOptions) -> Result<Self, LoadError> {
        let mut probes = Probes::load(options)?;
        let rings = probes
            .take_rings()
            .expect("fresh probes still own their ring buffers")
            .iter()
            .map(Ring::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(LoadError::MapRing)?;
        let wakeups = Wakeups::of(&rings).map_err(LoadError::Poll)?;
        // SAFETY: `Wakeups` owns its descriptor and keeps it open, unchanged, until dropped.
        let wakeups =
            unsafe { AsyncFd::register_with_interest(wakeups, tokio::io::Interest::READABLE) }
                .map_err(|e| LoadError::Poll(e.into()))?;
        let decoder = Counting {
            layout: probes.decoder(),
            received: 0,
            malformed: 0,
            last_error: None,
        };
        Ok(Self {
            probes,
            heads: Heads::new(rings.len()),
            rings,
            wakeups,
            bound: 0,
            decoder,
            pace: ReadPace::new(),
            look_pending: false,
        })
    }

    /// Waits until records are available, then appends every available event to `out`.
    /// Cancel-safe: records are consumed only synchronously, after the wait.
    pub async fn next_batch(&mut self, out: &mut Vec<Event>) -> std::io::Result<()> {
        let start = out.len();
        while out.len() == start {
            let before = self.decoder.malformed;
            self.read(out).await?;
            if self.decoder.malformed != before {
                // Let the caller log the decoding failure now.
                break;
            }
        }
        Ok(())
    }

    /// Waits until the kernel wakes the reader (only past a fill level: waking per record would
    /// cost more than the record) or the reader's own wait passes ([`READ_EVERY`] while records
    /// come, longer on a quiet host, up to [`READ_IDLE_MAX`]), then appends every available
    /// event to `out` (possibly none). Returns a time (`CLOCK_MONOTONIC` ns) before which every
    /// record was read: the drain's start, less a margin for records reserved but not yet
    /// submitted. Cancel-safe: records are consumed only after the wait.
    pub async fn read(&mut self, out: &mut Vec<Event>) -> std::io::Result<u64> {
        let began = self.wait(false).await?;
        self.drain_each(usize::MAX, |e| out.push(*e));
        Ok(began)
    }

    /// The wait of [`EventStream::read`], without the drain: the caller then takes the records
    /// with [`EventStream::drain_each`], and every record reserved before the returned time has
    /// been read once the ring is empty. `at_once`: the caller left records in the ring, and
    /// looks again after only letting the runtime's other tasks run (a client's writer among
    /// them). Cancel-safe: it changes nothing until the wait ends.
    pub async fn wait(&mut self, at_once: bool) -> std::io::Result<u64> {
        if at_once {
            tokio::task::yield_now().await;
        } else if let Ok(guard) =
            tokio::time::timeout(self.pace.wait, self.wakeups.readable_mut()).await
        {
            // Cleared before draining, so a wakeup during the drain is not lost.
            guard?.clear_ready();
        }
        self.look_pending = true;
        self.bound = mono_now_ns().saturating_sub(SUBMIT_MARGIN_NS);
        Ok(self.bound)
    }

    /// Hands up to `limit` events from the ring to `each`, in order, without waiting and
    /// without copying them anywhere; returns how many records it took (0: the ring was empty).
    pub fn drain_each(&mut self, limit: usize, each: impl FnMut(&Event)) -> usize {
        let taken = self
            .decoder
            .drain(&mut self.rings, &mut self.heads, self.bound, limit, each);
        // The first drain after a wait tells whether that look found records.
        if std::mem::take(&mut self.look_pending) {
            self.pace.looked(taken > 0 || self.heads.holds_records());
        }
        taken
    }

    /// Until the next wait, drains take every record, however young (before exiting, so that
    /// nothing already observed is dropped).
    pub fn unbound(&mut self) {
        self.bound = u64::MAX;
    }

    /// Appends everything in the ring buffers now, without waiting (see [`Self::unbound`]).
    pub fn drain_now(&mut self, out: &mut Vec<Event>) {
        self.unbound();
        self.drain_each(usize::MAX, |e| out.push(*e));
    }

    /// Events decoded so far.
    #[must_use]
    pub const fn received(&self) -> u64 {
        self.decoder.received
    }

    /// The most recent decoding failure, for the log.
    pub fn take_decode_error(&mut self) -> Option<DecodeError> {
        self.decoder.last_error.take()
    }

    /// Which optional parts of the observation work on this kernel.
    #[must_use]
    pub const fn features(&self) -> &Features {
        self.probes.features()
    }

    pub fn losses(&self) -> Result<Losses, LoadError> {
        Ok(Losses {
            kernel: self.probes.losses()?,
            malformed: self.decoder.malformed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_ring_is_looked_at_less_and_less_often_and_records_restore_the_pace() {
        let mut pace = ReadPace::new();
        let mut waits = vec![pace.wait];
        for _ in 0..5 {
            pace.looked(false);
            waits.push(pace.wait);
        }
        let ms = |n| Duration::from_millis(n);
        assert_eq!(waits, [ms(40), ms(80), ms(100), ms(100), ms(100), ms(100)]);
        pace.looked(true);
        assert_eq!(pace.wait, READ_EVERY);
    }

    #[test]
    fn a_loss_line_names_the_programs_skipped_since_the_last_and_not_the_timers() {
        use crate::load::SkippedRuns;
        let losses = |state, timer, synack| {
            let kernel = KernelLosses {
                recursion_misses: state + synack,
                timer_recursion_misses: timer,
                skipped: SkippedRuns::new([state, 0, 0, timer, 0, 0, 0, synack, 0]),
                ..KernelLosses::default()
            };
            Losses {
                kernel,
                malformed: 0,
            }
        };
        let why = losses(2, 9, 7).new_since(&losses(2, 1, 4));
        assert_eq!(
            why,
            [
                "3 skipped by the kernel while another BPF program ran on the same CPU \
              (tcp_retransmit_synack 3)"
            ]
        );
        let why = losses(5, 1, 7).new_since(&losses(2, 1, 4));
        assert_eq!(
            why,
            [
                "6 skipped by the kernel while another BPF program ran on the same CPU \
              (inet_sock_set_state 3, tcp_retransmit_synack 3)"
            ]
        );
    }
}
