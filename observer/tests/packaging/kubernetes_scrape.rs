//! The Prometheus scrape configuration for Kubernetes (deploy/prometheus/kubernetes-scrape.yml):
//! promtool accepts it, and it selects the DaemonSet's pods.

use observer_testkit::skip::skip;
use std::fmt::Write as _;

use crate::kubernetes_manifests::{MANIFEST, document};
use crate::tools::{Python, TempDir, repo, run, text};

const SCRAPE_CONFIG: &str = "deploy/prometheus/kubernetes-scrape.yml";

#[test]
fn kubernetes_scrape_config_passes_promtool() {
    let test = "kubernetes_scrape_config_passes_promtool";
    let config = repo(SCRAPE_CONFIG);
    let Some(out) = run("promtool", &["check", "config", &config.to_string_lossy()]) else {
        skip(
            test,
            "promtool is not installed (Debian: apt-get install prometheus)",
        );
        return;
    };
    if out.status.success() {
        return;
    }
    let report = text(&out);
    // Debian builds Prometheus without Kubernetes service discovery, and its promtool rejects
    // the kubernetes_sd_configs key itself. Everything else (relabelling, the rules file) is
    // then checked on a copy that discovers one static target instead; the discovery block
    // is checked against the DaemonSet by `scrape_config_selects_the_daemonset_pods`.
    assert!(
        report.contains("field kubernetes_sd_configs not found"),
        "promtool check config {SCRAPE_CONFIG} failed:\n{report}"
    );
    eprintln!(
        "\n*** {test}: this promtool has no Kubernetes service discovery (Debian's); checking \
         the rest of the file with a static target in its place ***\n"
    );
    let dir = TempDir::new("scrape");
    let copy = dir.0.join("kubernetes-scrape.yml");
    std::fs::write(
        &copy,
        with_static_target(&std::fs::read_to_string(&config).unwrap()),
    )
    .unwrap();
    std::fs::copy(
        repo("deploy/prometheus/observer-rules.yml"),
        dir.0.join("observer-rules.yml"),
    )
    .unwrap();
    let out = run("promtool", &["check", "config", &copy.to_string_lossy()]).unwrap();
    assert!(
        out.status.success(),
        "promtool check config (static target in place of discovery) failed:\n{}",
        text(&out)
    );
    assert!(
        text(&out).contains("SUCCESS: 1 rule files found"),
        "the rules file was not checked:\n{}",
        text(&out)
    );
}

/// The scrape configuration with each `kubernetes_sd_configs:` block (up to the next key of
/// the same indentation) replaced by one static target.
fn with_static_target(config: &str) -> String {
    let mut out = String::new();
    let mut replacing: Option<usize> = None;
    for line in config.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(depth) = replacing {
            if line.trim().is_empty()
                || indent > depth
                || (indent == depth && line.trim_start().starts_with('-'))
            {
                continue;
            }
            replacing = None;
        }
        if line.trim_start().starts_with("kubernetes_sd_configs:") {
            let pad = " ".repeat(indent);
            writeln!(out, "{pad}static_configs:").unwrap();
            writeln!(out, "{pad}  - targets: [\"node-1.example:9977\"]").unwrap();
            replacing = Some(indent);
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(
        !out.lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains("kubernetes_sd_configs")),
        "a discovery block was left in place"
    );
    out
}

#[test]
fn scrape_config_selects_the_daemonset_pods() {
    let test = "scrape_config_selects_the_daemonset_pods";
    let Some(python) = Python::with(test, "yaml") else {
        return;
    };
    let docs = python.yaml(&repo(MANIFEST));
    let daemonset = document(&docs, "DaemonSet");
    let namespace = daemonset["metadata"]["namespace"].as_str().unwrap();
    let labels = &daemonset["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/name"], "observer");

    let config = &python.yaml(&repo(SCRAPE_CONFIG))[0];
    assert_eq!(config["rule_files"][0], "observer-rules.yml");
    let jobs = config["scrape_configs"].as_array().expect("scrape_configs");
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    let sd = &job["kubernetes_sd_configs"][0];
    assert_eq!(sd["role"], "pod");
    assert_eq!(sd["namespaces"]["names"][0], namespace);
    assert_eq!(sd["selectors"][0]["role"], "pod");
    assert_eq!(
        sd["selectors"][0]["label"],
        "app.kubernetes.io/name=observer"
    );

    let relabel = job["relabel_configs"].as_array().expect("relabel_configs");
    let keeps = |source: &str, regex: &str| {
        relabel.iter().any(|r| {
            r["action"] == "keep" && r["source_labels"][0] == source && r["regex"] == regex
        })
    };
    assert!(keeps(
        "__meta_kubernetes_pod_label_app_kubernetes_io_name",
        "observer"
    ));
    // The port name the DaemonSet declares.
    assert!(keeps(
        "__meta_kubernetes_pod_container_port_name",
        "metrics"
    ));
    let annotations = &daemonset["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert!(keeps(
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape",
        "true"
    ));
    assert!(
        relabel.iter().any(|r| {
            r["source_labels"][0] == "__meta_kubernetes_pod_node_name"
                && r["target_label"] == "instance"
        }),
        "instance must be the node's name"
    );
}
