//! Whether sockets can be attributed to workloads: a cgroup2 mount to resolve their cgroup ids
//! on, and the kubelet's log directory for pod names.

use std::path::Path;

use super::super::check::{Check, Feature};
use crate::workload::KUBELET_LOGS;

/// The cgroup2 mount, where the sockets' cgroup ids are resolved to units and containers.
pub(super) fn cgroup2_check(mount: Option<&Path>) -> Check {
    const NAME: &str = "cgroup2";
    match mount {
        Some(path) => Check::ok(
            NAME,
            format!(
                "mounted at {}: sockets are attributed to systemd units and containers",
                path.display()
            ),
        ),
        None => Check::warn(
            NAME,
            "no cgroup2 mount (a cgroup v1-only host)",
            "sockets are not attributed to workloads: no `unit`, `container_id` or `pod` in \
             watch lines and alerts, and `--unit`, `--pod` and `--cgroup` match nothing",
            "boot with the unified or hybrid hierarchy (`systemd.unified_cgroup_hierarchy=1`, \
             the default since systemd 247), or mount cgroup2 (`mount -t cgroup2 none \
             /sys/fs/cgroup/unified`)",
            &[Feature::Cgroups],
        ),
    }
}

/// The kubelet's container log links, which name pods, namespaces and containers.
pub(super) fn kubelet_check(readable: bool) -> Check {
    const NAME: &str = "kubelet.logs";
    if readable {
        Check::ok(
            NAME,
            format!(
                "{KUBELET_LOGS} is readable: containers are named by pod, namespace and container"
            ),
        )
    } else {
        Check::info(
            NAME,
            format!(
                "no {KUBELET_LOGS}: not a Kubernetes node, or the directory is not mounted into \
                 observer's container; containers are named by id and pods by uid only"
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::check::Status;

    #[test]
    fn without_cgroup2_attribution_is_lost_and_said_so() {
        let ok = cgroup2_check(Some(Path::new("/sys/fs/cgroup")));
        assert_eq!(ok.status, Status::Ok);
        let missing = cgroup2_check(None);
        assert_eq!(missing.status, Status::Warn);
        assert!(missing.costs.unwrap().contains("`--unit`"));
        assert_eq!(missing.degrades, [Feature::Cgroups]);
        assert_eq!(kubelet_check(true).status, Status::Ok);
        let none = kubelet_check(false);
        assert_eq!(none.status, Status::Info);
        assert!(none.finding.contains("pods by uid only"), "{none:?}");
    }
}
