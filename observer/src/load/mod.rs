//! Load and attach the eBPF programs, and read the kernel's loss counters.
//!
//! First step of the pipeline: load -> decode -> track -> output.

pub mod btf;
pub mod privileges;
pub mod prog_stats;
pub mod tracefs;

use std::os::fd::AsFd as _;

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{MapData, MapError, PerCpuArray, RingBuf},
    programs::{ProgramError, TracePoint},
};
use observer_common::{StateProbeConfig, record::Counter};
use thiserror::Error;

use crate::decode::StateLayout;

/// The eBPF object built by build.rs from the observer-ebpf crate.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer"));

/// Default ring buffer size: 4 MiB holds about 28,000 transitions, several times what this
/// machine can produce between two reads even at peak churn.
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 4 << 20;

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
}

/// What the loader needs from the user.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Ring buffer size in bytes (power of two, multiple of the page size).
    pub ring_buffer_bytes: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            ring_buffer_bytes: DEFAULT_RING_BUFFER_BYTES,
        }
    }
}

/// Losses counted in the kernel. Every one is a transition that userspace never saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLosses {
    /// The ring buffer was full (`--ring-buffer-size` too small for the load).
    pub ring_buffer_full: u64,
    /// The tracepoint record could not be read.
    pub read_failed: u64,
    /// The kernel skipped the program because another tracing program was running on that CPU.
    pub recursion_misses: u64,
}

impl KernelLosses {
    #[must_use]
    pub const fn total(&self) -> u64 {
        self.ring_buffer_full + self.read_failed + self.recursion_misses
    }
}

/// The attached programs. Dropping this detaches them.
pub struct Probes {
    ebpf: Ebpf,
    layout: StateLayout,
    counters: PerCpuArray<MapData, u64>,
    events: Option<RingBuf<MapData>>,
}

const STATE_PROGRAM: &str = "inet_sock_set_state";

impl Probes {
    /// Checks privileges and kernel support, reads the tracepoint layout, loads the programs
    /// and attaches them. Errors say what the user can do about them.
    pub fn load(options: &LoadOptions) -> Result<Self, LoadError> {
        privileges::check_capabilities()?;
        privileges::check_ring_buffer_support()?;
        let size = options.ring_buffer_bytes;
        if !size.is_power_of_two() || size < 4096 {
            return Err(LoadError::RingBufferSize(size));
        }
        let tracefs = tracefs::ensure_mounted()?;
        let format = tracefs::Format::read(&tracefs, "sock", STATE_PROGRAM)?;
        let (layout, mut config) = StateLayout::from_format(&format)?;
        resolve_netns_offsets(&mut config);
        raise_memlock_limit();

        let mut ebpf = EbpfLoader::new()
            .override_global("STATE_PROBE_CONFIG", &config, true)
            .map_max_entries("EVENTS", size)
            .load(EBPF_OBJECT)
            .map_err(LoadError::Load)?;
        start_ebpf_logger(&mut ebpf);
        let program: &mut TracePoint = ebpf
            .program_mut(STATE_PROGRAM)
            .ok_or(LoadError::Program {
                name: STATE_PROGRAM,
                source: ProgramError::NotLoaded,
            })?
            .try_into()
            .map_err(|source| LoadError::Program {
                name: STATE_PROGRAM,
                source,
            })?;
        program.load().map_err(|source| LoadError::Program {
            name: STATE_PROGRAM,
            source,
        })?;
        program
            .attach("sock", STATE_PROGRAM)
            .map_err(|source| LoadError::Attach {
                category: "sock",
                name: STATE_PROGRAM,
                source,
            })?;

        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(LoadError::Map {
                name,
                source: MapError::InvalidName { name: name.into() },
            })
        };
        let counters = PerCpuArray::try_from(take(&mut ebpf, "COUNTERS")?).map_err(|source| {
            LoadError::Map {
                name: "COUNTERS",
                source,
            }
        })?;
        let events =
            RingBuf::try_from(take(&mut ebpf, "EVENTS")?).map_err(|source| LoadError::Map {
                name: "EVENTS",
                source,
            })?;
        Ok(Self {
            ebpf,
            layout,
            counters,
            events: Some(events),
        })
    }

    /// How to decode this kernel's records.
    #[must_use]
    pub const fn layout(&self) -> StateLayout {
        self.layout
    }

    /// The ring buffer the programs write to; can be taken once.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// Transitions the kernel side could not deliver, so far.
    pub fn losses(&self) -> Result<KernelLosses, LoadError> {
        let sum = |counter: Counter| -> Result<u64, LoadError> {
            let values =
                self.counters
                    .get(&(counter as u32), 0)
                    .map_err(|source| LoadError::Map {
                        name: "COUNTERS",
                        source,
                    })?;
            Ok(values.iter().sum())
        };
        let mut recursion_misses = 0;
        for (_, program) in self.ebpf.programs() {
            let fd = program.fd().map_err(|source| LoadError::Program {
                name: STATE_PROGRAM,
                source,
            })?;
            recursion_misses += prog_stats::read(fd.as_fd())
                .map_err(LoadError::Stats)?
                .recursion_misses;
        }
        Ok(KernelLosses {
            ring_buffer_full: sum(Counter::RingbufFull)?,
            read_failed: sum(Counter::ReadFailed)?,
            recursion_misses,
        })
    }
}

/// Fills in the `struct sock` -> netns inode offsets from BTF. Without BTF the probes still
/// work; events then carry no network namespace, and the user is told once.
fn resolve_netns_offsets(config: &mut StateProbeConfig) {
    let resolved = btf::KernelBtf::load().and_then(|btf| {
        Ok((
            btf.offset_of("sock", "__sk_common.skc_net.net")?,
            btf.offset_of("net", "ns.inum")?,
        ))
    });
    match resolved {
        Ok((sock_net, inum)) => {
            config.sock_net_offset = sock_net;
            config.net_inum_offset = inum;
        }
        Err(e) => log::warn!("network namespaces will not be reported: {e}"),
    }
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
