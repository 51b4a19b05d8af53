//! One ring buffer per CPU ([`contract::RINGS`]): the programs write to the ring of the CPU
//! they run on, so that no two CPUs share a ring's lock, positions and records. The stream
//! merges the rings back into one order by the records' timestamps.

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, MapError, of_maps::ArrayOfMaps},
};
use aya_obj::{
    EbpfSectionKind,
    generated::bpf_map_type::BPF_MAP_TYPE_RINGBUF,
    maps::{LegacyMap, bpf_map_def},
};

use super::{LoadError, contract, ring_size::RingBufferSize};

/// How the configured ring-buffer bytes are shared among the CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingPlan {
    /// Possible CPUs: each has a slot and a ring.
    pub cpus: u32,
    /// Online CPUs, which share the configured bytes. A virtual machine may list many more
    /// possible CPUs than it runs; one brought online later has a ring of
    /// [`RingBufferSize::MIN`] (its losses counted) until the daemon restarts.
    pub online: Vec<u32>,
    /// Bytes of each online CPU's ring: an equal share of the total, rounded down to a power
    /// of two, at least [`RingBufferSize::MIN`].
    pub bytes_per_cpu: u32,
}

fn cpu_list_error((path, e): (&str, std::io::Error)) -> LoadError {
    LoadError::Cpus(format!("{path}: {e}"))
}

impl RingPlan {
    /// The plan for `total_bytes` on this host.
    pub fn for_host(total_bytes: u32) -> Result<Self, LoadError> {
        let cpus = aya::util::nr_cpus().map_err(cpu_list_error)?;
        let online = aya::util::online_cpus().map_err(cpu_list_error)?;
        Ok(Self::new(
            total_bytes,
            u32::try_from(cpus).unwrap_or(u32::MAX),
            online,
        ))
    }

    /// `online` lists CPU numbers; those not below `cpus` are left out.
    #[must_use]
    pub fn new(total_bytes: u32, cpus: u32, mut online: Vec<u32>) -> Self {
        let cpus = cpus.max(1);
        online.retain(|cpu| *cpu < cpus);
        let sharing = u32::try_from(online.len()).unwrap_or(u32::MAX).max(1);
        let share = total_bytes / sharing;
        let bytes_per_cpu = if share < RingBufferSize::MIN {
            RingBufferSize::MIN
        } else {
            1 << share.ilog2()
        };
        Self {
            cpus,
            online,
            bytes_per_cpu,
        }
    }

    /// CPUs offline when the plan was made.
    #[must_use]
    pub fn offline(&self) -> u32 {
        self.cpus - u32::try_from(self.online.len()).unwrap_or(self.cpus)
    }

    /// Kernel memory the rings take.
    #[must_use]
    pub fn total_bytes(&self) -> u64 {
        self.online.len() as u64 * u64::from(self.bytes_per_cpu)
            + u64::from(self.offline()) * u64::from(RingBufferSize::MIN)
    }

    /// Sizes the object's maps: a slot per CPU; the shared ring of the benchmark's reference
    /// programs to a page unless `keep_events` (the benchmark, which attaches them).
    pub fn configure(&self, loader: &mut EbpfLoader<'_>, keep_events: bool) {
        loader.map_max_entries(contract::RINGS, self.cpus);
        if !keep_events {
            loader.map_max_entries(contract::EVENTS, RingBufferSize::MIN);
        }
    }

    /// Creates each CPU's ring and puts it in its slot of [`contract::RINGS`]; returns the
    /// rings in CPU order.
    pub fn create(&self, ebpf: &mut Ebpf) -> Result<Vec<RingMap>, LoadError> {
        let map_err = |source| LoadError::Map {
            name: contract::RINGS,
            source,
        };
        let slots = ebpf.map_mut(contract::RINGS).ok_or(LoadError::Map {
            name: contract::RINGS,
            source: MapError::InvalidName {
                name: contract::RINGS.into(),
            },
        })?;
        let mut slots: ArrayOfMaps<&mut MapData, MapData> =
            ArrayOfMaps::try_from(slots).map_err(map_err)?;
        let mut rings = Vec::with_capacity(self.cpus as usize);
        for cpu in 0..self.cpus {
            let bytes = if self.online.contains(&cpu) {
                self.bytes_per_cpu
            } else {
                RingBufferSize::MIN
            };
            let ring = MapData::create(ring_definition(bytes), &format!("ring{cpu}"), None)
                .map_err(map_err)?;
            slots.set(cpu, &ring, 0).map_err(map_err)?;
            rings.push(RingMap { map: ring, bytes });
        }
        Ok(rings)
    }
}

/// A CPU's ring buffer as created: the stream maps it and reads it.
pub struct RingMap {
    pub map: MapData,
    /// Its data area, a power of two.
    pub bytes: u32,
}

/// A ring buffer of `bytes`.
fn ring_definition(bytes: u32) -> aya_obj::Map {
    aya_obj::Map::Legacy(LegacyMap {
        def: bpf_map_def {
            map_type: BPF_MAP_TYPE_RINGBUF as u32,
            max_entries: bytes,
            ..bpf_map_def::default()
        },
        inner_def: None,
        section_index: 0,
        section_kind: EbpfSectionKind::Maps,
        symbol_index: None,
        data: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cpu_gets_an_equal_power_of_two_share_of_at_least_a_page() {
        let mib = 1 << 20;
        let plan = |total, cpus| {
            let p = RingPlan::new(total, cpus, (0..cpus).collect());
            (p.bytes_per_cpu, p.total_bytes())
        };
        assert_eq!(plan(16 * mib, 1), (16 * mib, 16 << 20));
        assert_eq!(plan(16 * mib, 2), (8 * mib, 16 << 20));
        // Not a power of two: rounded down, never over the total.
        assert_eq!(plan(16 * mib, 3), (4 * mib, 12 << 20));
        assert_eq!(plan(16 * mib, 64), (mib / 4, 16 << 20));
        // A page at least, even where that takes more than the total.
        assert_eq!(plan(4096, 2), (4096, 8192));
        assert_eq!(plan(4096, 0), (4096, 4096));
    }

    #[test]
    fn online_cpus_share_the_bytes_and_the_others_get_a_page() {
        let mib = 1 << 20;
        // A virtual machine running 2 of 64 possible CPUs.
        let p = RingPlan::new(16 * mib, 64, vec![0, 1]);
        assert_eq!((p.cpus, p.online.len(), p.bytes_per_cpu), (64, 2, 8 * mib));
        assert_eq!(p.total_bytes(), (16 << 20) + 62 * 4096);
        // No more online than possible.
        assert_eq!(
            RingPlan::new(16 * mib, 2, vec![0, 1, 2, 3]),
            RingPlan::new(16 * mib, 2, vec![0, 1])
        );
    }
}
