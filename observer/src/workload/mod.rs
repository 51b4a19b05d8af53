//! Who owns a socket, by its cgroup: the cgroup id the kernel gave (see
//! [`crate::event::CgroupId`]) resolved to its path on the cgroup2 mount, and the path read as
//! a systemd unit, a container and a Kubernetes pod ([`names`]), with the pod's name,
//! namespace and container from the kubelet's log directory ([`kubelet`]).
//!
//! Lookups are cached and bounded; a miss rescans the hierarchy, at most once per
//! [`RESCAN_EVERY`], so a flood of unknown ids costs a bounded amount of work.

pub mod cgroupfs;
pub mod kubelet;
pub mod names;
pub mod tally;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rustc_hash::FxHashMap;
use serde::Serialize;

pub use kubelet::PodContainer;
pub use names::Workload;

use crate::event::CgroupId;

/// The kubelet's directory of container log links.
pub const KUBELET_LOGS: &str = "/var/log/containers";
/// A miss rescans the cgroup hierarchy (and the kubelet directory) at most this often.
pub const RESCAN_EVERY: Duration = Duration::from_secs(1);
/// Cgroups remembered at most; past it the cache starts again from the next scan.
pub const MAX_CACHED: usize = 65_536;

/// A socket's cgroup and what it says about the socket's owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attribution {
    /// The cgroup's path relative to the cgroup2 mount.
    pub cgroup: String,
    #[serde(flatten)]
    pub workload: Workload,
    /// The pod's name, namespace and container name, when the kubelet's log directory
    /// names the container.
    #[serde(skip_serializing_if = "Option::is_none", flatten)]
    pub pod: Option<PodFields>,
}

/// [`PodContainer`] as serialized fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodFields {
    pub pod: String,
    pub namespace: String,
    pub container: String,
}

impl Attribution {
    /// The workload's name for a label or a column: `namespace/pod` for a pod, else the
    /// unit, else the container; `None` when the path names none.
    #[must_use]
    pub fn name(&self) -> Option<String> {
        match &self.pod {
            Some(p) => Some(format!("{}/{}", p.namespace, p.pod)),
            None => self.workload.short_name(),
        }
    }
}

/// Counts of what the resolver did, for its metrics and doctor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ResolverStats {
    /// Walks of the cgroup hierarchy.
    pub scans: u64,
    /// Lookups of an id no walk found (a cgroup removed before it was looked up).
    pub unresolved: u64,
    /// Times the cache was full and started again.
    pub cache_resets: u64,
}

/// Cgroup ids -> attributions, for one host. Shared by the pipeline's users (alerts, metrics,
/// watch): lookups take `&self`.
pub struct Resolver {
    mount: Option<PathBuf>,
    kubelet_dir: Option<PathBuf>,
    inner: Mutex<Learnt>,
}

/// What a resolver has learnt.
#[derive(Default)]
struct Learnt {
    resolved: FxHashMap<CgroupId, Arc<Attribution>>,
    paths: FxHashMap<CgroupId, String>,
    pods: FxHashMap<String, PodContainer>,
    last_scan: Option<Instant>,
    stats: ResolverStats,
}

impl Resolver {
    /// This host's cgroup2 mount (from /proc/self/mountinfo) and the kubelet's directory.
    #[must_use]
    pub fn host() -> Self {
        Self::host_with_kubelet(Some(Path::new(KUBELET_LOGS)))
    }

    /// This host's cgroup2 mount, and pods named from `kubelet_dir` (none: pods unnamed).
    #[must_use]
    pub fn host_with_kubelet(kubelet_dir: Option<&Path>) -> Self {
        let mount = std::fs::read_to_string("/proc/self/mountinfo")
            .ok()
            .and_then(|m| cgroupfs::cgroup2_mount(&m));
        Self {
            mount,
            kubelet_dir: kubelet_dir.map(Path::to_path_buf),
            inner: Mutex::new(Learnt::default()),
        }
    }

    #[must_use]
    pub fn new(mount: Option<PathBuf>, kubelet_dir: &Path) -> Self {
        Self {
            mount,
            kubelet_dir: Some(kubelet_dir.to_path_buf()),
            inner: Mutex::new(Learnt::default()),
        }
    }

    /// The cgroup2 mount, when the host has one.
    #[must_use]
    pub fn mount(&self) -> Option<&Path> {
        self.mount.as_deref()
    }

    #[must_use]
    pub fn stats(&self) -> ResolverStats {
        self.lock().stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Learnt> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What `id` says about its owner; `None` when no cgroup2 mount names it.
    pub fn resolve(&self, id: CgroupId) -> Option<Arc<Attribution>> {
        let mut c = self.lock();
        if let Some(found) = c.resolved.get(&id) {
            return Some(Arc::clone(found));
        }
        if !c.paths.contains_key(&id) {
            self.rescan(&mut c);
        }
        let c = &mut *c;
        let Some(path) = c.paths.get(&id) else {
            c.stats.unresolved += 1;
            return None;
        };
        let workload = Workload::from_path(path);
        let pod = workload
            .container_id
            .as_ref()
            .and_then(|id| c.pods.get(id))
            .map(|p| PodFields {
                pod: p.pod.clone(),
                namespace: p.namespace.clone(),
                container: p.container.clone(),
            });
        let found = Arc::new(Attribution {
            cgroup: path.clone(),
            workload,
            pod,
        });
        if c.resolved.len() >= MAX_CACHED {
            c.resolved.clear();
            c.stats.cache_resets += 1;
        }
        c.resolved.insert(id, Arc::clone(&found));
        Some(found)
    }

    /// Walks the hierarchy and the kubelet's directory again, unless that was done within
    /// [`RESCAN_EVERY`].
    fn rescan(&self, c: &mut Learnt) {
        let Some(mount) = &self.mount else {
            return;
        };
        if c.last_scan.is_some_and(|at| at.elapsed() < RESCAN_EVERY) {
            return;
        }
        c.last_scan = Some(Instant::now());
        c.stats.scans += 1;
        c.paths = cgroupfs::walk(mount);
        if let Some(dir) = &self.kubelet_dir {
            c.pods = kubelet::containers(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::MetadataExt as _};

    use super::*;

    #[test]
    fn the_configuration_s_default_kubelet_directory_is_the_resolver_s() {
        assert_eq!(crate::config::DEFAULT_KUBELET_LOGS, KUBELET_LOGS);
    }

    const ID: &str = "4f1d2c3b4a5968778695a4b3c2d1e0f4f1d2c3b4a5968778695a4b3c2d1e0f00";

    #[test]
    fn ids_resolve_to_units_and_pods_through_a_hierarchy_and_the_kubelet_logs() {
        let root = std::env::temp_dir().join(format!("observer-resolve-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let cgroups = root.join("cg");
        let logs = root.join("logs");
        let service = cgroups.join("system.slice/nginx.service");
        let container = cgroups.join(format!(
            "kubepods/burstable/pod1b2c3d4e-5f60-4718-9a0b-1c2d3e4f5a6b/{ID}"
        ));
        fs::create_dir_all(&service).unwrap();
        fs::create_dir_all(&container).unwrap();
        fs::create_dir_all(&logs).unwrap();
        fs::write(logs.join(format!("checkout-7f9c_shop_api-{ID}.log")), "").unwrap();
        let id = |p: &Path| CgroupId::new(fs::metadata(p).unwrap().ino()).unwrap();
        let (service_id, container_id) = (id(&service), id(&container));

        let r = Resolver::new(Some(cgroups), &logs);
        let nginx = r.resolve(service_id).unwrap();
        assert_eq!(nginx.cgroup, "/system.slice/nginx.service");
        assert_eq!(nginx.name().as_deref(), Some("nginx.service"));
        let pod = r.resolve(container_id).unwrap();
        assert_eq!(pod.name().as_deref(), Some("shop/checkout-7f9c"));
        assert_eq!(
            serde_json::to_value(&*pod).unwrap(),
            serde_json::json!({
                "cgroup": format!("/kubepods/burstable/pod1b2c3d4e-5f60-4718-9a0b-1c2d3e4f5a6b/{ID}"),
                "container_id": ID,
                "pod_uid": "1b2c3d4e-5f60-4718-9a0b-1c2d3e4f5a6b",
                "pod": "checkout-7f9c",
                "namespace": "shop",
                "container": "api",
            })
        );
        assert_eq!(r.stats().scans, 1, "both found by one walk");
        fs::remove_dir_all(&root).unwrap();

        // An id no walk finds: one rescan at most per interval, then counted as unresolved.
        let unknown = CgroupId::new(1).unwrap();
        assert_eq!(r.resolve(unknown), None);
        assert_eq!(r.resolve(unknown), None);
        assert_eq!(r.stats().scans, 1, "rescans are rate-limited");
        assert_eq!(r.stats().unresolved, 2);
        // What was resolved stays resolved after its cgroup is gone.
        assert_eq!(r.resolve(service_id), Some(nginx));
    }

    #[test]
    fn a_host_without_cgroup2_resolves_nothing() {
        let r = Resolver::new(None, Path::new("/nonexistent"));
        assert_eq!(r.resolve(CgroupId::new(1).unwrap()), None);
        assert_eq!(r.stats().scans, 0);
    }
}
