//! Whether sockets can be attributed to workloads: a cgroup2 mount to resolve their cgroup ids
//! on, and the kubelet's log directory for pod names.

use std::path::Path;

use super::super::{
    check::{Check, Feature},
    facts::KubeletLogs,
};

/// The cgroup2 mount, where the sockets' cgroup ids are resolved to units and containers;
/// `read` is false when the configuration turns the kernel's read of them off.
pub(super) fn cgroup2_check(mount: Option<&Path>, read: bool) -> Check {
    const NAME: &str = "cgroup2";
    match mount {
        Some(_) if !read => Check::info(
            NAME,
            "workloads.cgroups = false: the kernel does not read sockets' cgroups, so sockets \
             are not attributed to units, containers or pods",
        ),
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

/// The kubelet's container log links (the directory `workloads.kubelet_logs` names), which
/// name pods, namespaces and containers.
pub(super) fn kubelet_check(logs: &KubeletLogs) -> Check {
    const NAME: &str = "kubelet.logs";
    match logs {
        KubeletLogs::Readable(dir) => Check::ok(
            NAME,
            format!(
                "{} is readable: containers are named by pod, namespace and container",
                dir.display()
            ),
        ),
        KubeletLogs::Unreadable(dir) => Check::info(
            NAME,
            format!(
                "no {} (workloads.kubelet_logs): not a Kubernetes node, or the directory is not \
                 mounted into observer's container; containers are named by id and pods by uid \
                 only",
                dir.display()
            ),
        ),
        KubeletLogs::NotRead => Check::info(
            NAME,
            "workloads.kubelet_logs = \"\": no kubelet logs are read; containers are named by \
             id and pods by uid only",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::check::Status;

    #[test]
    fn without_cgroup2_attribution_is_lost_and_said_so() {
        let ok = cgroup2_check(Some(Path::new("/sys/fs/cgroup")), true);
        assert_eq!(ok.status, Status::Ok);
        let off = cgroup2_check(Some(Path::new("/sys/fs/cgroup")), false);
        assert_eq!(off.status, Status::Info);
        assert!(off.finding.contains("workloads.cgroups = false"), "{off:?}");
        let missing = cgroup2_check(None, true);
        assert_eq!(missing.status, Status::Warn);
        assert!(missing.costs.unwrap().contains("`--unit`"));
        assert_eq!(missing.degrades, [Feature::Cgroups]);
        let dir = || std::path::PathBuf::from("/srv/kubelet-logs");
        let readable = kubelet_check(&KubeletLogs::Readable(dir()));
        assert_eq!(readable.status, Status::Ok);
        assert!(
            readable.finding.starts_with("/srv/kubelet-logs "),
            "{readable:?}"
        );
        let none = kubelet_check(&KubeletLogs::Unreadable(dir()));
        assert_eq!(none.status, Status::Info);
        assert!(
            none.finding.starts_with("no /srv/kubelet-logs ")
                && none.finding.contains("pods by uid only"),
            "{none:?}"
        );
        let off = kubelet_check(&KubeletLogs::NotRead);
        assert_eq!(off.status, Status::Info);
        assert!(off.finding.contains("kubelet_logs = \"\""), "{off:?}");
    }
}
