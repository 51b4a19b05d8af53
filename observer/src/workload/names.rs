//! What a cgroup path says about its workload, by the conventions of systemd, Docker,
//! containerd, CRI-O, podman and the kubelet. Pure: the path in, what it names out; a piece the
//! path does not name is absent, never guessed.

use serde::Serialize;

/// The workload a cgroup belongs to, as far as its path names it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// The systemd unit: `nginx.service`, `session-3.scope`, `docker-<id>.scope`...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The container's id (64 hex digits), from a runtime's directory or scope name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The Kubernetes pod's uid, from a `kubepods` path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
}

impl Workload {
    /// Reads `path` (relative to the cgroup2 mount, e.g. `/system.slice/nginx.service`).
    #[must_use]
    pub fn from_path(path: &str) -> Self {
        let mut w = Self::default();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if let Some(uid) = pod_uid(part) {
                w.pod_uid = Some(uid);
            }
            if let Some(id) = container_id(part) {
                w.container_id = Some(id.to_owned());
            }
            if is_unit(part) {
                w.unit = Some(part.to_owned());
            }
        }
        // A container's scope is the container, not a service an operator would name.
        if w.container_id.is_some() && w.unit.as_deref().is_some_and(is_runtime_scope) {
            w.unit = None;
        }
        w
    }

    /// Whether the path named nothing: the root cgroup, or a slice of no known convention.
    #[must_use]
    pub const fn is_unknown(&self) -> bool {
        self.unit.is_none() && self.container_id.is_none() && self.pod_uid.is_none()
    }

    /// A short name for a label or a column: the unit, else the container (first 12 hex
    /// digits, as `docker ps` shows it), else the pod uid.
    #[must_use]
    pub fn short_name(&self) -> Option<String> {
        if let Some(unit) = &self.unit {
            return Some(unit.clone());
        }
        if let Some(id) = &self.container_id {
            return Some(format!("container:{}", &id[..12]));
        }
        self.pod_uid.as_ref().map(|uid| format!("pod:{uid}"))
    }
}

/// Systemd units that are leaves with a name (services, scopes, sockets...), not slices.
fn is_unit(part: &str) -> bool {
    [".service", ".scope", ".socket", ".mount", ".swap"]
        .iter()
        .any(|suffix| part.len() > suffix.len() && part.ends_with(suffix))
}

/// Scopes the runtimes make per container (`docker-<id>.scope`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `libpod-<id>.scope`).
fn is_runtime_scope(unit: &str) -> bool {
    RUNTIME_PREFIXES.iter().any(|p| {
        unit.strip_prefix(p)
            .is_some_and(|rest| rest.strip_suffix(".scope").is_some())
    })
}

const RUNTIME_PREFIXES: [&str; 4] = ["docker-", "cri-containerd-", "crio-", "libpod-"];

/// A container id in a path element: a runtime's scope (`docker-<id>.scope`...), or a
/// directory that is the id itself (cgroupfs driver: `/docker/<id>`, `/kubepods/.../<id>`).
fn container_id(part: &str) -> Option<&str> {
    let inner = RUNTIME_PREFIXES
        .iter()
        .find_map(|p| part.strip_prefix(p))
        .map_or(part, |rest| rest.strip_suffix(".scope").unwrap_or(rest));
    (inner.len() == 64 && inner.bytes().all(|b| b.is_ascii_hexdigit())).then_some(inner)
}

/// The pod uid in a kubelet cgroup element: `pod<uid>` (cgroupfs driver), or
/// `kubepods-<qos>-pod<uid>.slice` with the uid's dashes as underscores (systemd driver).
fn pod_uid(part: &str) -> Option<String> {
    let rest = match part.strip_suffix(".slice") {
        Some(slice) => slice.rsplit_once("-pod")?.1,
        None => part.strip_prefix("pod")?,
    };
    let uid = rest.replace('_', "-");
    let looks_like_uid = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    looks_like_uid.then_some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1d2c3b4a5968778695a4b3c2d1e0f4f1d2c3b4a5968778695a4b3c2d1e0f00";
    const UID: &str = "1b2c3d4e-5f60-4718-9a0b-1c2d3e4f5a6b";

    fn w(unit: Option<&str>, container: Option<&str>, pod: Option<&str>) -> Workload {
        Workload {
            unit: unit.map(str::to_owned),
            container_id: container.map(str::to_owned),
            pod_uid: pod.map(str::to_owned),
        }
    }

    #[test]
    fn systemd_services_and_sessions_are_their_units() {
        assert_eq!(
            Workload::from_path("/system.slice/nginx.service"),
            w(Some("nginx.service"), None, None)
        );
        assert_eq!(
            Workload::from_path("/user.slice/user-1000.slice/session-3.scope"),
            w(Some("session-3.scope"), None, None)
        );
        assert_eq!(
            Workload::from_path(
                "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service"
            ),
            w(Some("foo.service"), None, None)
        );
    }

    #[test]
    fn container_runtimes_name_the_container_with_either_driver() {
        for path in [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/docker/{ID}"),
            format!("/system.slice/crio-{ID}.scope"),
            format!("/machine.slice/libpod-{ID}.scope"),
            format!("/system.slice/containerd.service/cri-containerd-{ID}.scope"),
        ] {
            let got = Workload::from_path(&path);
            assert_eq!(got.container_id.as_deref(), Some(ID), "{path}");
            assert_eq!(got.pod_uid, None, "{path}");
        }
        // The daemon's own service is its unit when no container scope is below it.
        assert_eq!(
            Workload::from_path("/system.slice/containerd.service"),
            w(Some("containerd.service"), None, None)
        );
    }

    #[test]
    fn kubernetes_pods_with_the_systemd_and_cgroupfs_drivers() {
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/\
             cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        assert_eq!(Workload::from_path(&systemd), w(None, Some(ID), Some(UID)));
        let cgroupfs = format!("/kubepods/besteffort/pod{UID}/{ID}");
        assert_eq!(Workload::from_path(&cgroupfs), w(None, Some(ID), Some(UID)));
        // The pod's own cgroup, between its containers (the sandbox's sockets live below).
        let pod = format!("/kubepods/pod{UID}");
        assert_eq!(Workload::from_path(&pod), w(None, None, Some(UID)));
    }

    #[test]
    fn what_no_convention_names_stays_unknown() {
        for path in [
            "/",
            "",
            "/system.slice",
            "/user.slice/user-1000.slice",
            "/my/own/group",
        ] {
            let got = Workload::from_path(path);
            assert!(got.is_unknown(), "{path}: {got:?}");
            assert_eq!(got.short_name(), None);
        }
        // Almost an id is not an id.
        assert!(Workload::from_path(&format!("/docker/{}", &ID[1..])).is_unknown());
        assert!(Workload::from_path("/kubepods/podnot-a-uid").is_unknown());
    }

    #[test]
    fn short_names_prefer_the_unit_then_the_container() {
        assert_eq!(
            Workload::from_path("/system.slice/nginx.service")
                .short_name()
                .as_deref(),
            Some("nginx.service")
        );
        assert_eq!(
            Workload::from_path(&format!("/docker/{ID}"))
                .short_name()
                .as_deref(),
            Some("container:4f1d2c3b4a59")
        );
    }
}
