//! Load and attach the eBPF programs, and read the kernel's loss counters.
//!
//! Names of the object's programs, maps and globals are in [`contract`].

mod configure;
pub mod contract;
pub mod cpu_rings;
pub mod prog_stats;
mod ring_size;

use std::os::fd::AsFd as _;

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{MapData, MapError, PerCpuArray},
    programs::{ProgramError, RawTracePoint, TracePoint},
};
use observer_common::record::Counter;
use thiserror::Error;

use self::{
    contract::{Hook, PROGRAMS, Part, Program},
    prog_stats::ProgStats,
};
pub use self::{
    cpu_rings::{RingMap, RingPlan},
    ring_size::{RingBufferSize, format_size},
};
use crate::decode::Decoder;
use crate::kernel::{privileges, tracefs};

/// The eBPF object built by build.rs from the observer-ebpf crate.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer"));

/// The embedded eBPF object, for tools that load programs of it themselves (the benchmark's
/// baseline program, which the daemon never attaches).
#[must_use]
pub fn object() -> &'static [u8] {
    EBPF_OBJECT
}

/// The state program's configuration on this kernel with `reads`, for tools that attach it
/// themselves (the benchmark measures each read by attaching copies of the program that
/// leave one out, beside the full one).
pub fn state_config(reads: KernelReads) -> Result<observer_common::SpanProbeConfig, LoadError> {
    let tracefs = tracefs::ensure_mounted()?;
    let mut plan = configure::plan(&tracefs)?;
    plan.omit(reads);
    Ok(plan.state)
}

/// What the daemon would attach on this kernel, for tools that attach programs on its hooks
/// themselves (the benchmark's floors, [`contract::FLOORS`]).
pub struct Planned {
    /// The daemon's programs it attaches here, in [`PROGRAMS`] order.
    pub programs: Vec<Program>,
    /// The timer programs' configuration (their filter's); none when they are not attached.
    pub timer: Option<observer_common::TimerProbeConfig>,
}

/// What the daemon would attach on this kernel (see [`Planned`]).
pub fn planned() -> Result<Planned, LoadError> {
    let tracefs = tracefs::ensure_mounted()?;
    let plan = configure::plan(&tracefs)?;
    Ok(Planned {
        programs: PROGRAMS.iter().filter(|p| plan.wants(p)).copied().collect(),
        timer: plan.timer,
    })
}

/// How often readers of the ring buffer look for records on their own while records come. The
/// programs wake the reader only once a quarter of the ring is unread ([`ring_wakeup_bytes`]),
/// so below that rate this interval is the longest a record waits; above it, reads follow the
/// wakeups. Each wake of the reader costs it tens of microseconds beyond the records it reads,
/// so it wakes 25 times a second, not 100: under churn that took a tenth off the daemon's CPU
/// per event.
pub const READ_EVERY: std::time::Duration = std::time::Duration::from_millis(40);

/// The longest a reader waits on its own after finding the ring empty again and again (each
/// empty look doubles the wait from [`READ_EVERY`]): a quiet host wakes the reader 10 times a
/// second rather than 25, and the first record after a quiet spell waits at most this long.
/// A burst meanwhile still wakes the reader at a quarter of the ring.
pub const READ_IDLE_MAX: std::time::Duration = std::time::Duration::from_millis(100);

/// Unread bytes past which a submit wakes the reader: a quarter of the ring, which leaves the
/// reader three quarters of the ring of headroom to wake up and drain before records are lost.
#[must_use]
pub const fn ring_wakeup_bytes(ring_buffer_bytes: u32) -> u64 {
    ring_buffer_bytes as u64 / 4
}

#[derive(Debug, Error)]
pub enum LoadError {
    #[error(transparent)]
    Privileges(#[from] privileges::PrivilegeError),
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error(
        "ring buffer size {0} is not valid: it must be a power of two and a multiple of the page \
         size (4096), e.g. 1M, 4M or 16M"
    )]
    RingBufferSize(u32),
    #[error("counting this host's CPUs (for a ring buffer each) failed: {0}")]
    Cpus(String),
    #[error("loading the eBPF programs failed: {0}. Run `observer` as root on Linux 5.8 or newer")]
    Load(#[source] EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: ProgramError,
    },
    #[error(
        "attaching to tracepoint {category}:{name} failed: {source}. Check that the kernel has \
         this tracepoint (`ls /sys/kernel/tracing/events/{category}/{name}`)"
    )]
    Attach {
        category: &'static str,
        name: &'static str,
        source: ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("reading program statistics: {0}")]
    Stats(#[source] std::io::Error),
    #[error("registering the ring buffer with the event loop: {0}")]
    Poll(#[source] std::io::Error),
    #[error("mapping a ring buffer into the daemon's memory: {0}")]
    MapRing(#[source] std::io::Error),
}

/// What the loader needs from the user.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub ring_buffer_bytes: u32,
    /// The state program's optional reads.
    pub reads: KernelReads,
}

/// What the state program reads beyond its tracepoint record. All of them in the daemon but
/// for the cgroup where `workloads.cgroups = false`; the benchmark attaches copies of the
/// program that each leave one out ([`state_config`]) to measure what it costs. A read left out
/// leaves its field unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent switches, one per read"
)]
pub struct KernelReads {
    /// The socket's network namespace (two reads), on a socket's birth (out of CLOSE or LISTEN).
    pub netns: bool,
    /// `sk_socket`, on ESTABLISHED -> CLOSE_WAIT or CLOSE (closed before accept()).
    pub sk_socket: bool,
    /// The socket's cgroup (three reads), on a socket's birth (out of CLOSE or LISTEN).
    pub cgroup: bool,
    /// The current task's `comm`, on transitions in the owner's context.
    pub comm: bool,
}

impl KernelReads {
    pub const ALL: Self = Self {
        netns: true,
        sk_socket: true,
        cgroup: true,
        comm: true,
    };
}

impl Default for KernelReads {
    fn default() -> Self {
        Self::ALL
    }
}

impl LoadOptions {
    /// The options for a ring of `size`; `auto` is sized from this network namespace's
    /// `net.ipv4.tcp_max_tw_buckets`.
    #[must_use]
    pub fn sized(size: RingBufferSize) -> Self {
        Self {
            ring_buffer_bytes: size.resolve(crate::kernel::max_tw_buckets()),
            reads: KernelReads::ALL,
        }
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self::sized(RingBufferSize::Auto)
    }
}

/// Whether an optional part of the observation works on this kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Availability {
    #[default]
    Active,
    /// Off, and why.
    Unavailable(String),
}

impl Availability {
    #[must_use]
    pub const fn is_active(&self) -> bool {
        matches!(self, Self::Active)
    }
}

/// The optional parts of the observation and whether each one works here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// RSTs sent and received (`tcp:tcp_send_reset`, `tcp:tcp_receive_reset`).
    pub resets: Availability,
    /// The kernel says why it sent each RST (Linux 6.10+).
    pub reset_reasons: bool,
    /// TIME_WAIT entry and end, through the timewait timer.
    pub timewait: Availability,
    /// Whether a socket was ever accepted (`sk->sk_socket` from BTF).
    pub closed_before_accept: Availability,
    /// Retransmitted segments and SYN-ACKs (`tcp:tcp_retransmit_skb`, and the
    /// `tcp_retransmit_synack` raw tracepoint, with BTF).
    pub retransmits: Availability,
    /// Errors the kernel reports on TCP sockets: refused, reset, timed out (the
    /// `inet_sk_error_report` raw tracepoint, Linux 5.15+, with BTF).
    pub socket_errors: Availability,
    /// The cgroup of each socket (`sk->sk_cgrp_data`, through BTF): whose workload it is.
    pub cgroups: Availability,
}

/// Losses counted in the kernel. Every one is an event that userspace never saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLosses {
    /// The ring buffer was full (`--ring-buffer-size` too small for the load).
    pub ring_buffer_full: u64,
    /// The tracepoint record could not be read.
    pub read_failed: u64,
    /// The kernel skipped a transition, reset, retransmission or error program because another
    /// tracing program was running on that CPU (for a raw tracepoint: the same program).
    pub recursion_misses: u64,
    /// The same for the timer programs. Most of these runs would have been for other timers
    /// than timewait ones, so this is an upper bound of timewait events missed.
    pub timer_recursion_misses: u64,
    /// Both of the above by program: which hook's events, and so which counts, are short.
    pub skipped: SkippedRuns,
}

impl KernelLosses {
    /// Events certainly lost (the timer upper bound is not included).
    #[must_use]
    pub const fn total(&self) -> u64 {
        self.ring_buffer_full + self.read_failed + self.recursion_misses
    }
}

/// Runs the kernel skipped (recursion misses), for each of [`PROGRAMS`], in its order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkippedRuns([u64; PROGRAMS.len()]);

impl SkippedRuns {
    /// Counts in [`PROGRAMS`] order.
    #[must_use]
    pub const fn new(counts: [u64; PROGRAMS.len()]) -> Self {
        Self(counts)
    }

    /// Every program and its count, attached or not, in [`PROGRAMS`] order.
    pub fn by_program(&self) -> impl Iterator<Item = (&'static Program, u64)> + '_ {
        PROGRAMS.iter().zip(self.0)
    }

    /// The programs skipped since `before`, with how many runs each.
    pub fn since<'a>(
        &'a self,
        before: &'a Self,
    ) -> impl Iterator<Item = (&'static Program, u64)> + 'a {
        self.by_program()
            .zip(before.0)
            .filter_map(|((program, now), then)| (now > then).then_some((program, now - then)))
    }
}

/// The attached programs. Dropping this detaches them.
pub struct Probes {
    ebpf: Ebpf,
    decoder: Decoder,
    features: Features,
    counters: PerCpuArray<MapData, u64>,
    /// Each CPU's ring buffer, in CPU order.
    rings: Option<Vec<RingMap>>,
}

impl Probes {
    /// Checks privileges and kernel support, reads the tracepoint layouts, loads the programs
    /// and attaches them. Errors say what the user can do about them; optional parts that this
    /// kernel lacks are switched off with a warning (see [`Probes::features`]).
    pub fn load(options: &LoadOptions) -> Result<Self, LoadError> {
        privileges::check_capabilities()?;
        privileges::check_ring_buffer_support()?;
        let size = options.ring_buffer_bytes;
        if !size.is_power_of_two() || size < 4096 {
            return Err(LoadError::RingBufferSize(size));
        }
        let tracefs = tracefs::ensure_mounted()?;
        let mut plan = configure::plan(&tracefs)?;
        plan.omit(options.reads);
        raise_memlock_limit();

        let ring_plan = RingPlan::for_host(size)?;
        let wakeup_bytes = ring_wakeup_bytes(ring_plan.bytes_per_cpu);
        let mut loader = EbpfLoader::new();
        loader
            .override_global(contract::INET_SOCK_SET_STATE.config, &plan.state, true)
            .override_global(contract::RING_WAKEUP_BYTES, &wakeup_bytes, true);
        ring_plan.configure(&mut loader, false);
        if let Some(cfg) = &plan.send_reset {
            loader.override_global(contract::TCP_SEND_RESET.config, cfg, true);
        }
        if let Some(cfg) = &plan.receive_reset {
            loader.override_global(contract::TCP_RECEIVE_RESET.config, cfg, true);
        }
        if let Some(cfg) = &plan.timer {
            loader.override_global(contract::TIMER_START.config, cfg, true);
        }
        if let Some(cfg) = &plan.retransmit {
            loader.override_global(contract::TCP_RETRANSMIT_SKB.config, cfg, true);
        }
        if let Some(cfg) = &plan.retransmit_synack {
            loader.override_global(contract::TCP_RETRANSMIT_SYNACK.config, cfg, true);
        }
        if let Some(cfg) = &plan.sock_error {
            loader.override_global(contract::INET_SK_ERROR_REPORT.config, cfg, true);
        }
        let mut ebpf = loader.load(EBPF_OBJECT).map_err(LoadError::Load)?;
        start_ebpf_logger(&mut ebpf);
        // Before any program runs: a CPU without its ring would count its records as lost.
        let rings = ring_plan.create(&mut ebpf)?;
        let offline = ring_plan.offline();
        log::info!(
            "ring buffers: one of {} for each of {} online CPUs{} ({} of kernel memory)",
            format_size(u64::from(ring_plan.bytes_per_cpu)),
            ring_plan.online.len(),
            if offline > 0 {
                format!(
                    ", {} for each of {offline} offline",
                    format_size(u64::from(RingBufferSize::MIN))
                )
            } else {
                String::new()
            },
            format_size(ring_plan.total_bytes())
        );

        let wanted: Vec<&Program> = PROGRAMS.iter().filter(|p| plan.wants(p)).collect();
        let mut features = plan.features;
        for program in wanted {
            match attach(&mut ebpf, program) {
                Ok(()) => {}
                Err(e) if program.required() => return Err(e),
                Err(e) => {
                    let slot = match program.part {
                        Part::Transitions | Part::Resets => &mut features.resets,
                        Part::Timewait => &mut features.timewait,
                        Part::Retransmits => &mut features.retransmits,
                        Part::SocketErrors => &mut features.socket_errors,
                    };
                    *slot = Availability::Unavailable(e.to_string());
                }
            }
        }
        warn_unavailable(&features);

        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(LoadError::Map {
                name,
                source: MapError::InvalidName { name: name.into() },
            })
        };
        let counters =
            PerCpuArray::try_from(take(&mut ebpf, contract::COUNTERS)?).map_err(|source| {
                LoadError::Map {
                    name: contract::COUNTERS,
                    source,
                }
            })?;
        Ok(Self {
            ebpf,
            decoder: plan.decoder,
            features,
            counters,
            rings: Some(rings),
        })
    }

    /// How to decode this kernel's records.
    #[must_use]
    pub fn decoder(&self) -> Decoder {
        self.decoder.clone()
    }

    /// Which optional parts of the observation work on this kernel.
    #[must_use]
    pub const fn features(&self) -> &Features {
        &self.features
    }

    /// The ring buffers the programs write to, one per CPU in CPU order; can be taken once.
    pub fn take_rings(&mut self) -> Option<Vec<RingMap>> {
        self.rings.take()
    }

    /// The kernel's counters (runs, run time, recursion misses) of every attached program, by
    /// name. Run time is counted only while `kernel.bpf_stats_enabled` is 1.
    pub fn program_stats(&self) -> Result<Vec<(&'static str, ProgStats)>, LoadError> {
        let mut stats = Vec::with_capacity(PROGRAMS.len());
        for program in &PROGRAMS {
            // Programs this kernel could not attach have no fd and no statistics.
            let Some(Ok(fd)) = self.ebpf.program(program.name).map(|p| p.fd()) else {
                continue;
            };
            stats.push((
                program.name,
                prog_stats::read(fd.as_fd()).map_err(LoadError::Stats)?,
            ));
        }
        Ok(stats)
    }

    /// Events the kernel side could not deliver, so far.
    pub fn losses(&self) -> Result<KernelLosses, LoadError> {
        let sum = |counter: Counter| -> Result<u64, LoadError> {
            let values =
                self.counters
                    .get(&(counter as u32), 0)
                    .map_err(|source| LoadError::Map {
                        name: contract::COUNTERS,
                        source,
                    })?;
            Ok(values.iter().sum())
        };
        let (mut recursion_misses, mut timer_recursion_misses) = (0, 0);
        let mut skipped = SkippedRuns::default();
        for (program, slot) in PROGRAMS.iter().zip(&mut skipped.0) {
            // Programs this kernel could not attach have no fd and no statistics.
            let Some(Ok(fd)) = self.ebpf.program(program.name).map(|p| p.fd()) else {
                continue;
            };
            let misses = prog_stats::read(fd.as_fd())
                .map_err(LoadError::Stats)?
                .recursion_misses;
            *slot = misses;
            if program.part == Part::Timewait {
                timer_recursion_misses += misses;
            } else {
                recursion_misses += misses;
            }
        }
        Ok(KernelLosses {
            ring_buffer_full: sum(Counter::RingbufFull)?,
            read_failed: sum(Counter::ReadFailed)?,
            recursion_misses,
            timer_recursion_misses,
            skipped,
        })
    }
}

/// One line for each part of the observation this kernel cannot give.
fn warn_unavailable(features: &Features) {
    if let Availability::Unavailable(why) = &features.resets {
        log::warn!("RSTs will not be observed: {why}");
    }
    if let Availability::Unavailable(why) = &features.timewait {
        log::warn!("TIME_WAIT will not be observed: {why}");
    }
    if let Availability::Unavailable(why) = &features.retransmits {
        log::warn!("retransmissions will not be observed: {why}");
    }
    if let Availability::Unavailable(why) = &features.socket_errors {
        log::warn!("connection errors will not be observed: {why}");
    }
    if let Availability::Unavailable(why) = &features.cgroups {
        log::warn!("sockets will not be attributed to cgroups (units, containers, pods): {why}");
    }
    if let Availability::Unavailable(why) = &features.closed_before_accept {
        log::warn!("connections closed before accept() will not be told apart: {why}");
    }
    if features.resets.is_active() && !features.reset_reasons {
        log::info!("this kernel does not say why it sends RSTs (Linux 6.10+ does)");
    }
}

fn attach(ebpf: &mut Ebpf, spec: &Program) -> Result<(), LoadError> {
    attach_on(ebpf, spec.name, spec)
}

/// Loads the program `name` of `ebpf` and attaches it to `spec`'s hook: the daemon's programs
/// to their own, the benchmark's floors ([`contract::FLOORS`]) to the daemon's.
pub fn attach_on(ebpf: &mut Ebpf, name: &'static str, spec: &Program) -> Result<(), LoadError> {
    let program_error = |source| LoadError::Program { name, source };
    let attach_error = |source| LoadError::Attach {
        category: spec.category,
        name: spec.name,
        source,
    };
    let program = ebpf
        .program_mut(name)
        .ok_or(program_error(ProgramError::NotLoaded))?;
    match spec.hook {
        Hook::Raw => {
            let program: &mut RawTracePoint = program.try_into().map_err(program_error)?;
            program.load().map_err(program_error)?;
            program.attach(spec.name).map_err(attach_error)?;
        }
        Hook::Tracepoint => {
            let program: &mut TracePoint = program.try_into().map_err(program_error)?;
            program.load().map_err(program_error)?;
            program
                .attach(spec.category, spec.name)
                .map_err(attach_error)?;
        }
    }
    Ok(())
}

/// Kernels before 5.11 charge BPF memory to `RLIMIT_MEMLOCK`; lift it so loading does not fail
/// there. Newer kernels use memory cgroups and ignore it.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const unlimited) } != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Forwards the programs' own log lines (aya-log) to the `log` facade from a background task.
fn start_ebpf_logger(ebpf: &mut Ebpf) {
    match aya_log::EbpfLogger::init(ebpf) {
        Ok(logger) => {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(forward_ebpf_logs(logger));
            }
        }
        Err(e) => log::debug!("eBPF logger not started: {e}"),
    }
}

async fn forward_ebpf_logs(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    // SAFETY: the logger owns its ring buffer fd and keeps it open, unchanged, until dropped.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    let Ok(mut fd) = registered else { return };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}
