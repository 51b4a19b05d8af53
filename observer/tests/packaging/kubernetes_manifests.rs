//! The Kubernetes manifests (deploy/kubernetes): Kubernetes' own schemas accept them, the pod
//! gets only the privileges the daemon needs, and its configuration is one the daemon accepts.

use std::{collections::BTreeSet, process::Command};

use serde_json::Value;

use crate::tools::{Python, TempDir, repo, run, text};

pub const MANIFEST: &str = "deploy/kubernetes/observer-daemonset.yaml";
const KUSTOMIZATION: &str = "deploy/kubernetes/kustomization.yaml";

/// The capabilities the daemon needs (the systemd unit grants exactly these as well).
const CAPABILITIES: &[&str] = &[
    "CAP_BPF",
    "CAP_PERFMON",
    "CAP_SYS_ADMIN",
    "CAP_SYSLOG",
    "CAP_SYS_PTRACE",
    "CAP_DAC_READ_SEARCH",
];

/// The oldest Kubernetes the manifest supports (securityContext.appArmorProfile is 1.30's), and
/// the newest the pinned kubernetes-validate knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

fn manifest_documents(test: &str) -> Option<Vec<Value>> {
    let python = Python::with(test, "yaml")?;
    Some(python.yaml(&repo(MANIFEST)))
}

pub fn document<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let mut found = docs.iter().filter(|d| d["kind"] == kind);
    let doc = found
        .next()
        .unwrap_or_else(|| panic!("{MANIFEST} has no {kind}"));
    assert!(found.next().is_none(), "{MANIFEST} has two of {kind}");
    doc
}

// ---- the manifests against Kubernetes' own schemas

#[test]
fn manifests_pass_kubernetes_validate_strict() {
    let test = "manifests_pass_kubernetes_validate_strict";
    let Some(python) = Python::with(test, "kubernetes_validate, yaml") else {
        return;
    };
    let documents = python.yaml(&repo(MANIFEST)).len();
    assert_eq!(
        documents, 4,
        "Namespace, ServiceAccount, ConfigMap, DaemonSet"
    );
    for version in KUBERNETES_VERSIONS {
        // --strict: a misspelt or misplaced field is an error, not silently dropped.
        let out = python
            .command()
            .args(["-m", "kubernetes_validate", "--strict", "-k", version])
            .arg(repo(MANIFEST))
            .output()
            .expect("running python3 -m kubernetes_validate");
        let report = text(&out);
        assert!(
            out.status.success(),
            "{MANIFEST} fails Kubernetes {version}'s schemas:\n{report}"
        );
        // Every document was checked: none skipped as an unknown kind.
        assert_eq!(
            report.matches(" passed ").count(),
            documents,
            "kubernetes-validate against {version} checked fewer documents than there are:\n{report}"
        );
    }
}

#[test]
fn kustomization_applies_the_manifest() {
    let test = "kustomization_applies_the_manifest";
    let Some(python) = Python::with(test, "yaml") else {
        return;
    };
    let kustomization = python.yaml(&repo(KUSTOMIZATION));
    let resources = kustomization[0]["resources"].as_array().expect("resources");
    let names: Vec<&str> = resources.iter().filter_map(Value::as_str).collect();
    assert_eq!(names, ["observer-daemonset.yaml"]);
    assert_eq!(
        kustomization[0]["images"][0]["name"], "ghcr.io/example/observer",
        "the image override must name the manifest's image"
    );
    // kubectl renders kustomizations offline; it is not among the test tools, so without it
    // this part is skipped without failing CI.
    match run(
        "kubectl",
        &["kustomize", &repo("deploy/kubernetes").to_string_lossy()],
    ) {
        Some(out) => {
            assert!(
                out.status.success(),
                "kubectl kustomize failed:\n{}",
                text(&out)
            );
            let rendered = String::from_utf8_lossy(&out.stdout);
            for kind in ["Namespace", "ServiceAccount", "ConfigMap", "DaemonSet"] {
                assert!(
                    rendered.contains(&format!("kind: {kind}\n")),
                    "kubectl kustomize lost the {kind}"
                );
            }
        }
        None => eprintln!(
            "\n*** {test}: kubectl not installed; the kustomization was not rendered ***\n"
        ),
    }
}

// ---- the pod's privileges

#[test]
fn containers_get_exactly_the_documented_capabilities_and_nothing_more() {
    let test = "containers_get_exactly_the_documented_capabilities_and_nothing_more";
    let Some(docs) = manifest_documents(test) else {
        return;
    };
    let pod = &document(&docs, "DaemonSet")["spec"]["template"]["spec"];
    let wanted: BTreeSet<&str> = CAPABILITIES.iter().copied().collect();

    // The host namespaces the design needs, and no other.
    assert_eq!(
        pod["hostNetwork"], true,
        "the host's sockets and one port per node"
    );
    assert_eq!(pod["hostPID"], true, "other processes' /proc");
    assert_ne!(pod["hostIPC"], true, "no use for the host's IPC namespace");
    assert_ne!(pod["securityContext"]["privileged"], true);

    let containers: Vec<&Value> = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|list| pod[*list].as_array())
        .flatten()
        .collect();
    assert!(!containers.is_empty());
    for container in containers {
        let name = &container["name"];
        let sc = &container["securityContext"];
        assert_eq!(sc["privileged"], false, "{name}: must run unprivileged");
        assert_eq!(
            sc["allowPrivilegeEscalation"], false,
            "{name}: no privilege escalation (no_new_privs)"
        );
        assert_eq!(
            sc["readOnlyRootFilesystem"], true,
            "{name}: read-only root file system"
        );
        assert_ne!(sc["procMount"], "Unmasked", "{name}: /proc stays masked");
        let drop: Vec<&str> = sc["capabilities"]["drop"]
            .as_array()
            .map(|d| d.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(drop, ["ALL"], "{name}: drops every capability first");
        let added: Vec<&str> = sc["capabilities"]["add"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for cap in &added {
            // The API server refuses "CAP_SYS_ADMIN" next to allowPrivilegeEscalation: false;
            // Kubernetes' own spelling has no prefix.
            assert!(
                !cap.starts_with("CAP_"),
                "{name}: write {cap} as Kubernetes does, without CAP_"
            );
        }
        let added_set: BTreeSet<String> = added.iter().map(|c| format!("CAP_{c}")).collect();
        assert_eq!(
            added.len(),
            added_set.len(),
            "{name}: a capability is added twice"
        );
        assert_eq!(
            added_set
                .iter()
                .map(String::as_str)
                .collect::<BTreeSet<_>>(),
            wanted,
            "{name}: must add exactly the capabilities the daemon needs"
        );

        // Host paths are read-only, except the state directory the daemon writes.
        let volumes = pod["volumes"].as_array().expect("volumes");
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let volume = volumes
                .iter()
                .find(|v| v["name"] == mount["name"])
                .unwrap_or_else(|| panic!("{name}: no volume {}", mount["name"]));
            if volume.get("hostPath").is_some() && mount["mountPath"] != "/var/lib/observer" {
                assert_eq!(
                    mount["readOnly"], true,
                    "{name}: host path {} must be mounted read-only",
                    mount["mountPath"]
                );
                assert_ne!(
                    mount["mountPropagation"], "Bidirectional",
                    "{name}: nothing may propagate back to the host"
                );
            }
        }
    }
}

#[test]
fn the_systemd_unit_grants_the_same_capabilities() {
    let unit = std::fs::read_to_string(repo("deploy/systemd/observer.service")).unwrap();
    let bounding: BTreeSet<&str> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet=")
        .split_whitespace()
        .collect();
    assert_eq!(
        bounding,
        CAPABILITIES.iter().copied().collect(),
        "the DaemonSet and the systemd unit must grant the same capabilities"
    );
}

#[test]
fn the_configmap_is_a_configuration_the_daemon_accepts() {
    let test = "the_configmap_is_a_configuration_the_daemon_accepts";
    let Some(docs) = manifest_documents(test) else {
        return;
    };
    let config = document(&docs, "ConfigMap")["data"]["observer.toml"]
        .as_str()
        .expect("the ConfigMap holds observer.toml");
    assert!(
        config.contains("listen = \"0.0.0.0:9977\""),
        "Prometheus scrapes the node's IP"
    );
    let dir = TempDir::new("configmap");
    let path = dir.0.join("observer.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_observer"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("running observer check-config");
    assert!(
        out.status.success(),
        "observer check-config refuses the ConfigMap's observer.toml:\n{}",
        text(&out)
    );

    // The container reads it where it is mounted, and serves the port the probes and
    // Prometheus use.
    let pod = &document(&docs, "DaemonSet")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args, ["run", "--config", "/etc/observer/observer.toml"]);
    assert_eq!(container["ports"][0]["name"], "metrics");
    assert_eq!(container["ports"][0]["containerPort"], 9977);
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["path"], "/metrics", "{probe}");
        assert_eq!(container[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
}
