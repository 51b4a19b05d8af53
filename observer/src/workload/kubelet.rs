//! Pod names from the kubelet's container log links: `/var/log/containers/` holds one
//! `<pod>_<namespace>_<container>-<container id>.log` per container, readable on the node
//! without any API server access (the DaemonSet mounts it read-only).

use std::{fs, path::Path};

use rustc_hash::FxHashMap;

/// Where a container runs in Kubernetes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodContainer {
    pub pod: String,
    pub namespace: String,
    pub container: String,
}

/// Containers by id, from the names in `dir`; empty when it cannot be read.
#[must_use]
pub fn containers(dir: &Path) -> FxHashMap<String, PodContainer> {
    let Ok(entries) = fs::read_dir(dir) else {
        return FxHashMap::default();
    };
    entries
        .flatten()
        .filter_map(|e| parse(&e.file_name().to_string_lossy()))
        .collect()
}

/// (container id, where it runs) from one log file name.
fn parse(name: &str) -> Option<(String, PodContainer)> {
    let stem = name.strip_suffix(".log")?;
    let (rest, id) = stem.rsplit_once('-')?;
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // Pod, namespace and container names are DNS labels or subdomains: no '_'.
    let mut parts = rest.splitn(3, '_');
    let (pod, namespace, container) = (parts.next()?, parts.next()?, parts.next()?);
    if [pod, namespace, container]
        .iter()
        .any(|p| p.is_empty() || p.contains('_'))
    {
        return None;
    }
    Some((
        id.to_owned(),
        PodContainer {
            pod: pod.to_owned(),
            namespace: namespace.to_owned(),
            container: container.to_owned(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1d2c3b4a5968778695a4b3c2d1e0f4f1d2c3b4a5968778695a4b3c2d1e0f00";

    #[test]
    fn log_names_give_pod_namespace_and_container() {
        assert_eq!(
            parse(&format!("checkout-7f9c6d5b8-x2x4z_shop_api-{ID}.log")),
            Some((
                ID.to_owned(),
                PodContainer {
                    pod: "checkout-7f9c6d5b8-x2x4z".to_owned(),
                    namespace: "shop".to_owned(),
                    container: "api".to_owned(),
                }
            ))
        );
        // Container names may hold dashes: the id is after the last one.
        let (_, pc) = parse(&format!("web-0_default_istio-proxy-{ID}.log")).unwrap();
        assert_eq!(pc.container, "istio-proxy");
    }

    #[test]
    fn other_names_are_ignored() {
        for name in [
            "README",
            &format!("pod_ns_c-{ID}.txt"),
            &format!("pod_ns-{ID}.log"),
            "pod_ns_c-abc.log",
            &format!("_ns_c-{ID}.log"),
        ] {
            assert_eq!(parse(name), None, "{name}");
        }
    }

    #[test]
    fn a_directory_is_read_by_its_names() {
        let dir = std::env::temp_dir().join(format!("observer-kubelet-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("db-0_data_postgres-{ID}.log")), "").unwrap();
        fs::write(dir.join("unrelated.txt"), "").unwrap();
        let found = containers(&dir);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[ID].pod, "db-0");
        assert!(containers(&dir).is_empty(), "a missing directory is empty");
    }
}
