//! The floor for the kernel cost of one event: observer-ebpf's baseline programs (reserve a
//! record of `SpanRecord`'s size in the ring buffer, submit it, read nothing) on
//! `sock:inet_sock_set_state`, from a separate instance of the daemon's own object. `baseline`
//! submits as the daemon's programs do (waking the reader past a fill level);
//! `baseline_no_wakeup` never wakes it. Copies of the daemon's state program are attached the
//! same way (see `reads`).

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
};

use aya::{
    EbpfLoader,
    maps::{MapData, RingBuf},
    programs::{RawTracePoint, TracePoint},
};
use observer_common::SpanProbeConfig;

use observer::load::{
    LoadOptions, READ_EVERY, contract, object,
    prog_stats::{self, ProgStats},
    ring_wakeup_bytes,
};

pub struct Baseline {
    /// Its name in the figures.
    label: &'static str,
    program: &'static str,
    ebpf: aya::Ebpf,
    stop: Arc<AtomicBool>,
    records: Arc<AtomicU64>,
    drain: Option<JoinHandle<()>>,
}

impl Baseline {
    /// Loads and attaches the program, and starts draining its ring buffer on a thread: an
    /// undrained ring would make reserve fail, which is cheaper than a real submit.
    pub fn attach(program: &'static str) -> io::Result<Self> {
        Self::attach_with(program, program, None)
    }

    /// A copy of the daemon's own state program configured with `state`, named `label`.
    pub fn attach_state(label: &'static str, state: SpanProbeConfig) -> io::Result<Self> {
        Self::attach_with(label, contract::INET_SOCK_SET_STATE.name, Some(state))
    }

    fn attach_with(
        label: &'static str,
        program: &'static str,
        state: Option<SpanProbeConfig>,
    ) -> io::Result<Self> {
        observer::kernel::tracefs::ensure_mounted().map_err(io::Error::other)?;
        let err = |what: &str, e: &dyn std::fmt::Display| io::Error::other(format!("{what}: {e}"));
        let ring_bytes = LoadOptions::default().ring_buffer_bytes;
        let wakeup = ring_wakeup_bytes(ring_bytes);
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(contract::EVENTS, ring_bytes)
            .override_global(contract::RING_WAKEUP_BYTES, &wakeup, true);
        if let Some(state) = &state {
            loader.override_global(contract::INET_SOCK_SET_STATE.config, state, true);
        }
        let mut ebpf = loader
            .load(object())
            .map_err(|e| err("loading the eBPF object", &e))?;
        let found = ebpf
            .program_mut(program)
            .ok_or_else(|| io::Error::other(format!("the eBPF object has no {program} program")))?;
        if program == contract::BASELINE_RAW {
            let raw: &mut RawTracePoint = found.try_into().map_err(|e| err(program, &e))?;
            raw.load().map_err(|e| err("loading", &e))?;
            raw.attach(contract::INET_SOCK_SET_STATE.name)
                .map_err(|e| err("attaching", &e))?;
        } else {
            let tracepoint: &mut TracePoint = found.try_into().map_err(|e| err(program, &e))?;
            tracepoint.load().map_err(|e| err("loading", &e))?;
            tracepoint
                .attach(
                    contract::INET_SOCK_SET_STATE.category,
                    contract::INET_SOCK_SET_STATE.name,
                )
                .map_err(|e| err("attaching", &e))?;
        }
        let ring = RingBuf::try_from(
            ebpf.take_map(contract::EVENTS)
                .ok_or_else(|| io::Error::other("no EVENTS map"))?,
        )
        .map_err(|e| err("EVENTS", &e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(AtomicU64::new(0));
        let drain = {
            let (stop, records) = (stop.clone(), records.clone());
            std::thread::spawn(move || drain(ring, &stop, &records))
        };
        Ok(Self {
            label,
            program,
            ebpf,
            stop,
            records,
            drain: Some(drain),
        })
    }

    pub const fn label(&self) -> &'static str {
        self.label
    }

    pub fn stats(&self) -> io::Result<ProgStats> {
        let program = self
            .ebpf
            .program(self.program)
            .ok_or_else(|| io::Error::other("no baseline program"))?;
        let fd = program.fd().map_err(io::Error::other)?;
        prog_stats::read(fd.as_fd())
    }

    /// Records read from the ring buffer so far.
    #[must_use]
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(d) = self.drain.take() {
            let _ = d.join();
        }
    }
}

/// Reads and counts records until `stop`, as the daemon reads: woken by the ring buffer's
/// notification, or every [`READ_EVERY`] (all `baseline_no_wakeup` has).
#[expect(clippy::cast_possible_truncation, reason = "a few milliseconds")]
const READ_EVERY_MS: i32 = READ_EVERY.as_millis() as i32;

fn drain(mut ring: RingBuf<MapData>, stop: &AtomicBool, records: &AtomicU64) {
    let fd = ring.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; the timeout bounds how long a stop request waits.
        unsafe { libc::poll(&raw mut pfd, 1, READ_EVERY_MS) };
        let mut n = 0;
        while ring.next().is_some() {
            n += 1;
        }
        records.fetch_add(n, Ordering::Relaxed);
    }
}
