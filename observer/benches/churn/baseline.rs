//! The floor for the kernel cost of one event: observer-ebpf's baseline programs (reserve a
//! record of `SpanRecord`'s size in one ring buffer shared by all CPUs, submit it, read
//! nothing) on
//! `sock:inet_sock_set_state`, from a separate instance of the daemon's own object. `baseline`
//! submits as the daemon's programs do (waking the reader past a fill level);
//! `baseline_no_wakeup` never wakes it. Copies of the daemon's state program are attached the
//! same way (see `reads`), and the floors on the daemon's other hooks (`floor_*`), and what
//! the hooks cost before any program's work (`empty_*`, `filter_*`).

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
};

use aya::{EbpfLoader, maps::Map};
use observer_common::{SpanProbeConfig, TimerProbeConfig};

use observer::load::{
    LoadOptions, READ_EVERY, RingBufferSize, RingMap, RingPlan, attach_on,
    contract::{self, Hook, Program},
    object,
    prog_stats::{self, ProgStats},
    ring_wakeup_bytes,
};
use observer::stream::ring::Ring;

use crate::kstats::Cost;

/// The configuration globals a [`Baseline`]'s programs need.
#[derive(Clone, Copy, Default)]
struct Globals<'a> {
    state: Option<&'a SpanProbeConfig>,
    timer: Option<&'a TimerProbeConfig>,
}

pub struct Baseline {
    /// Each program: its name in the figures, and in the object.
    programs: Vec<(&'static str, &'static str)>,
    ebpf: aya::Ebpf,
    drain: Drain,
}

impl Baseline {
    /// Loads and attaches the program, and starts draining its ring buffer on a thread: an
    /// undrained ring would make reserve fail, which is cheaper than a real submit.
    pub fn attach(program: &'static str) -> io::Result<Self> {
        let hook = if program == contract::BASELINE_RAW {
            Hook::Raw
        } else {
            Hook::Tracepoint
        };
        let on = Program {
            hook,
            ..contract::INET_SOCK_SET_STATE
        };
        Self::start(&[(program, program, on)], Globals::default())
    }

    /// A copy of the daemon's own state program configured with `state`, named `label`.
    pub fn attach_state(label: &'static str, state: SpanProbeConfig) -> io::Result<Self> {
        let on = contract::INET_SOCK_SET_STATE;
        let globals = Globals {
            state: Some(&state),
            ..Globals::default()
        };
        Self::start(&[(label, on.name, on)], globals)
    }

    /// `baseline` on the state tracepoint and [`contract::FLOORS`] on the daemon's other hooks:
    /// the least that watching every hook the daemon watches costs, in a phase of its own.
    pub fn attach_all_hooks() -> io::Result<Self> {
        let state = contract::OnHook {
            name: contract::BASELINE,
            on: contract::INET_SOCK_SET_STATE,
        };
        let hooks: Vec<contract::OnHook> = std::iter::once(state).chain(contract::FLOORS).collect();
        Self::attach_on_hooks(&hooks)
    }

    /// Programs on the daemon's hooks ([`contract::FLOORS`], [`contract::HOOK_PIECES`]), in
    /// one object; the timer ones with the daemon's filter, configured for this kernel. A hook
    /// this kernel lacks is left out, as the daemon leaves it out.
    pub fn attach_on_hooks(programs: &[contract::OnHook]) -> io::Result<Self> {
        let planned = observer::load::planned().map_err(io::Error::other)?;
        let floors: Vec<_> = programs
            .iter()
            .filter(|f| planned.programs.contains(&f.on))
            .map(|f| (f.name, f.name, f.on))
            .collect();
        let globals = Globals {
            timer: planned.timer.as_ref(),
            ..Globals::default()
        };
        Self::start(&floors, globals)
    }

    /// Loads the object with the ring buffers sized as the daemon sizes them (the shared one
    /// for the reference programs, the per-CPU ones for copies of the daemon's state program),
    /// attaches each `(label, program, hook)` and drains the rings on a thread.
    fn start(
        programs: &[(&'static str, &'static str, Program)],
        globals: Globals<'_>,
    ) -> io::Result<Self> {
        observer::kernel::tracefs::ensure_mounted().map_err(io::Error::other)?;
        let err = |what: &str, e: &dyn std::fmt::Display| io::Error::other(format!("{what}: {e}"));
        let ring_bytes = LoadOptions::default().ring_buffer_bytes;
        // Copies of the state program and `baseline_per_cpu*` write to the per-CPU rings, every
        // other program here to the shared one: the other kind gets a page.
        let per_cpu = globals.state.is_some()
            || programs.iter().any(|(_, program, _)| {
                matches!(
                    *program,
                    contract::BASELINE_PER_CPU | contract::BASELINE_PER_CPU_WRITTEN
                )
            });
        let rings = RingPlan::for_host(if per_cpu {
            ring_bytes
        } else {
            RingBufferSize::MIN
        })
        .map_err(io::Error::other)?;
        let wakeup = ring_wakeup_bytes(if per_cpu {
            rings.bytes_per_cpu
        } else {
            ring_bytes
        });
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(contract::EVENTS, ring_bytes)
            .override_global(contract::RING_WAKEUP_BYTES, &wakeup, true);
        rings.configure(&mut loader, !per_cpu);
        if let Some(state) = globals.state {
            loader.override_global(contract::INET_SOCK_SET_STATE.config, state, true);
        }
        if let Some(timer) = globals.timer {
            loader.override_global(contract::TIMER_START.config, timer, true);
        }
        let mut ebpf = loader
            .load(object())
            .map_err(|e| err("loading the eBPF object", &e))?;
        let mut rings = rings.create(&mut ebpf).map_err(io::Error::other)?;
        for (_, program, on) in programs {
            attach_on(&mut ebpf, program, on).map_err(io::Error::other)?;
        }
        match ebpf.take_map(contract::EVENTS) {
            Some(Map::RingBuf(map)) => {
                // Sized above, or to a page by `configure`: the map says which.
                let bytes = map.info().map_err(|e| err("EVENTS", &e))?.max_entries();
                rings.push(RingMap { map, bytes });
            }
            _ => return Err(io::Error::other("no EVENTS ring buffer")),
        }
        // Read as the daemon reads: in place, the reader's position published once a pass.
        let rings = rings
            .iter()
            .map(Ring::new)
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Self {
            programs: programs.iter().map(|(l, p, _)| (*l, *p)).collect(),
            ebpf,
            drain: Drain::start(rings),
        })
    }
}

/// Programs whose records the benchmark's own drain reads and counts.
pub trait Counted {
    /// Each program's counters, in a fixed order.
    fn stats(&self) -> io::Result<Vec<ProgStats>>;
    /// Each program's cost since `before` (from [`Counted::stats`]).
    fn costs_since(&self, before: &[ProgStats]) -> io::Result<Vec<Cost>>;
    /// Records read so far.
    fn records(&self) -> u64;
}

impl Counted for Baseline {
    /// Each program's counters, in the order attached.
    fn stats(&self) -> io::Result<Vec<ProgStats>> {
        self.programs
            .iter()
            .map(|(_, name)| {
                let program = self
                    .ebpf
                    .program(name)
                    .ok_or_else(|| io::Error::other(format!("no {name} program")))?;
                let fd = program.fd().map_err(io::Error::other)?;
                prog_stats::read(fd.as_fd())
            })
            .collect()
    }

    /// Under each program's label.
    fn costs_since(&self, before: &[ProgStats]) -> io::Result<Vec<Cost>> {
        Ok(self
            .programs
            .iter()
            .zip(before)
            .zip(self.stats()?)
            .map(|(((label, _), before), after)| Cost::between(label, *before, after))
            .collect())
    }

    fn records(&self) -> u64 {
        self.drain.records()
    }
}

/// A thread reading and counting the records of some rings, until dropped.
pub struct Drain {
    stop: Arc<AtomicBool>,
    records: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Drain {
    pub fn start(rings: Vec<Ring>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, records) = (stop.clone(), records.clone());
            std::thread::spawn(move || drain(rings, &stop, &records))
        };
        Self {
            stop,
            records,
            thread: Some(thread),
        }
    }

    /// Records read so far.
    #[must_use]
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads and counts records until `stop`, as the daemon reads: woken by the ring buffer's
/// notification, or every [`READ_EVERY`] (all `baseline_no_wakeup` has).
#[expect(clippy::cast_possible_truncation, reason = "a few milliseconds")]
const READ_EVERY_MS: i32 = READ_EVERY.as_millis() as i32;

fn drain(mut rings: Vec<Ring>, stop: &AtomicBool, records: &AtomicU64) {
    let mut pfds: Vec<libc::pollfd> = rings
        .iter()
        .map(|ring| libc::pollfd {
            fd: ring.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let count = libc::nfds_t::try_from(pfds.len()).expect("a ring per CPU");
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: valid pollfds; the timeout bounds how long a stop request waits.
        unsafe { libc::poll(pfds.as_mut_ptr(), count, READ_EVERY_MS) };
        let mut n = 0;
        for ring in &mut rings {
            while ring.head().is_some() {
                ring.take();
                n += 1;
            }
            ring.publish();
        }
        records.fetch_add(n, Ordering::Relaxed);
    }
}
