//! What ships beyond the binary: the Kubernetes manifests (deploy/kubernetes), the Prometheus
//! scrape configuration for Kubernetes, and the Debian package `cargo xtask deb` makes.
//!
//! The tools are the ones `cargo xtask test` installs: kubernetes-validate from PyPI (into
//! target/python-tools unless python3 already has it; it brings PyYAML), promtool (Debian's
//! `prometheus`), and dpkg-deb, which every Debian has. Without one, the tests that need it are
//! skipped loudly, except under CI=true, where that is a failure. lintian is used when it is
//! installed, never required.

use observer_testkit::skip::{skip, under_ci};
use std::{
    collections::BTreeSet,
    ffi::OsString,
    fmt::Write as _,
    io::{ErrorKind, Read as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

const MANIFEST: &str = "deploy/kubernetes/observer-daemonset.yaml";
const KUSTOMIZATION: &str = "deploy/kubernetes/kustomization.yaml";
const SCRAPE_CONFIG: &str = "deploy/prometheus/kubernetes-scrape.yml";

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

/// Where xtask's set-up installs kubernetes-validate when python3 cannot import it.
const PYTHON_TOOLS: &str = "target/python-tools";

/// What the .deb must hold: (path, mode as `dpkg-deb --contents` shows it).
const DEB_FILES: &[(&str, &str)] = &[
    ("/usr/bin/observer", "-rwxr-xr-x"),
    ("/lib/systemd/system/observer.service", "-rw-r--r--"),
    ("/etc/observer/observer.toml", "-rw-r--r--"),
    ("/usr/share/observer/observer-dashboard.json", "-rw-r--r--"),
    ("/usr/share/observer/observer-rules.yml", "-rw-r--r--"),
    ("/usr/share/man/man1/observer.1.gz", "-rw-r--r--"),
    (
        "/usr/share/bash-completion/completions/observer",
        "-rw-r--r--",
    ),
    ("/usr/share/zsh/vendor-completions/_observer", "-rw-r--r--"),
    (
        "/usr/share/fish/vendor_completions.d/observer.fish",
        "-rw-r--r--",
    ),
    ("/usr/share/doc/observer/copyright", "-rw-r--r--"),
    ("/usr/share/doc/observer/changelog.gz", "-rw-r--r--"),
];

/// Repository files the .deb ships unchanged: (source, installed path).
const SHIPPED_AS_IS: &[(&str, &str)] = &[
    (
        "deploy/systemd/observer.service",
        "lib/systemd/system/observer.service",
    ),
    ("deploy/observer.toml", "etc/observer/observer.toml"),
    (
        "deploy/grafana/observer-dashboard.json",
        "usr/share/observer/observer-dashboard.json",
    ),
    (
        "deploy/prometheus/observer-rules.yml",
        "usr/share/observer/observer-rules.yml",
    ),
];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// `program ARGS`, or `None` when the program is not installed.
fn run(program: &str, args: &[&str]) -> Option<Output> {
    match Command::new(program).args(args).output() {
        Ok(output) => Some(output),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => panic!("running {program}: {e}"),
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

// ---- python3 with kubernetes-validate and PyYAML

/// python3, with target/python-tools on its path when that is where the modules are.
struct Python {
    path: Option<OsString>,
}

impl Python {
    /// The first python3 set-up that imports `modules`; `None` (after a loud skip, or a
    /// failure under CI=true) when there is none.
    fn with(test: &str, modules: &str) -> Option<Self> {
        let tools = repo(PYTHON_TOOLS);
        let mut extended = OsString::from(&tools);
        if let Some(existing) = std::env::var_os("PYTHONPATH") {
            extended.push(":");
            extended.push(existing);
        }
        for path in [None, Some(extended)] {
            let python = Self { path };
            match python
                .command()
                .args(["-c", &format!("import {modules}")])
                .output()
            {
                Ok(out) if out.status.success() => return Some(python),
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                Err(e) => panic!("running python3: {e}"),
            }
        }
        skip(
            test,
            &format!(
                "needs python3 able to import {modules} (PyPI's kubernetes-validate brings them; \
                 `cargo xtask test` installs it into {PYTHON_TOOLS})"
            ),
        );
        None
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new("python3");
        if let Some(path) = &self.path {
            cmd.env("PYTHONPATH", path);
        }
        cmd
    }

    /// Every document of a YAML file, as JSON.
    fn yaml(&self, path: &Path) -> Vec<Value> {
        let out = self
            .command()
            .args([
                "-c",
                "import json, sys, yaml\n\
                 with open(sys.argv[1]) as f:\n    \
                     docs = [d for d in yaml.safe_load_all(f) if d is not None]\n\
                 json.dump(docs, sys.stdout)",
            ])
            .arg(path)
            .output()
            .expect("running python3");
        assert!(
            out.status.success(),
            "{} is not valid YAML:\n{}",
            path.display(),
            text(&out)
        );
        match serde_json::from_slice(&out.stdout).expect("python3 printed JSON") {
            Value::Array(docs) => docs,
            other => panic!("expected a list of documents, got {other}"),
        }
    }
}

fn manifest_documents(test: &str) -> Option<Vec<Value>> {
    let python = Python::with(test, "yaml")?;
    Some(python.yaml(&repo(MANIFEST)))
}

fn document<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let mut found = docs.iter().filter(|d| d["kind"] == kind);
    let doc = found
        .next()
        .unwrap_or_else(|| panic!("{MANIFEST} has no {kind}"));
    assert!(found.next().is_none(), "{MANIFEST} has two of {kind}");
    doc
}

// ---- (a) the manifests against Kubernetes' own schemas

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

// ---- (b) the pod's privileges

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

// ---- (c) the Prometheus configuration for Kubernetes

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

// ---- (d) the Debian package

#[test]
fn deb_holds_every_file_and_installs_cleanly() {
    let test = "deb_holds_every_file_and_installs_cleanly";
    if run("dpkg-deb", &["--version"]).is_none() {
        skip(
            test,
            "dpkg-deb is not installed (it comes with dpkg, on every Debian)",
        );
        return;
    }
    let dir = TempDir::new("deb");
    let Some(deb) = build_deb(test, &dir.0) else {
        return;
    };
    let deb = deb.to_string_lossy().into_owned();
    check_listing(&deb);
    check_fields(&deb);
    check_control_files(&deb, &dir.0.join("control"));
    check_installed_files(&deb, &dir.0.join("root"));
    lint(test, &deb);
}

/// Every file, with its mode, owned by root.
fn check_listing(deb: &str) {
    let contents = run("dpkg-deb", &["--contents", deb]).unwrap();
    assert!(contents.status.success(), "{}", text(&contents));
    let listing = String::from_utf8_lossy(&contents.stdout).into_owned();
    for (path, mode) in DEB_FILES {
        let line = listing
            .lines()
            .find(|l| l.split_whitespace().nth(5) == Some(&format!(".{path}")))
            .unwrap_or_else(|| panic!("the .deb has no {path}:\n{listing}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[0], *mode, "{path}");
        assert_eq!(fields[1], "root/root", "{path}");
    }
}

fn check_fields(deb: &str) {
    let field = |name: &str| {
        let out = run("dpkg-deb", &["--field", deb, name]).unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(field("Package"), "observer");
    assert_eq!(
        field("Version"),
        env!("CARGO_PKG_VERSION").replace('-', "~")
    );
    let arch = run("dpkg", &["--print-architecture"]).unwrap();
    assert_eq!(
        field("Architecture"),
        String::from_utf8_lossy(&arch.stdout).trim()
    );
    assert_eq!(field("Section"), "net");
    assert_eq!(field("Priority"), "optional");
    let maintainer = field("Maintainer");
    assert!(
        maintainer.contains(" <") && maintainer.ends_with('>'),
        "Maintainer: {maintainer}"
    );
    let depends = field("Depends");
    assert!(
        depends.split(", ").any(|d| d.starts_with("libc6 (>= ")),
        "Depends must name the C library version: {depends}"
    );
    assert!(!field("Description").is_empty());
}

/// conffiles, and maintainer scripts that run under sh and without systemd.
fn check_control_files(deb: &str, control: &Path) {
    let out = run("dpkg-deb", &["--control", deb, &control.to_string_lossy()]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        ["/etc/observer/observer.toml"]
    );
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.join(script);
        let body = std::fs::read_to_string(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "{script} must be executable");
        assert!(body.starts_with("#!/bin/sh\nset -e\n"), "{script}");
        let syntax = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(syntax.status.success(), "{script}: {}", text(&syntax));
        // systemd may not run (containers, chroots): every systemctl and invoke is guarded.
        if body.contains("deb-systemd-invoke") || body.contains("systemctl") {
            assert!(body.contains("[ -d /run/systemd/system ]"), "{script}");
        }
    }
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("deb-systemd-helper enable"));
    assert!(postinst.contains("action=restart"));
    let prerm = std::fs::read_to_string(control.join("prerm")).unwrap();
    assert!(prerm.contains("deb-systemd-invoke stop observer.service"));
}

/// The shipped files are the repository's, the man page is gzipped roff, the binary runs.
fn check_installed_files(deb: &str, root: &Path) {
    let out = run("dpkg-deb", &["--extract", deb, &root.to_string_lossy()]).unwrap();
    assert!(out.status.success(), "{}", text(&out));
    for (source, installed) in SHIPPED_AS_IS {
        assert!(
            std::fs::read(repo(source)).unwrap() == std::fs::read(root.join(installed)).unwrap(),
            "/{installed} differs from {source}"
        );
    }
    let mut page = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(root.join("usr/share/man/man1/observer.1.gz")).unwrap(),
    )
    .read_to_string(&mut page)
    .expect("the man page is gzip");
    assert!(
        page.contains(".TH observer 1"),
        "not an observer(1) roff page"
    );
    assert!(
        page.contains("observer run"),
        "the man page does not mention `observer run`"
    );
    let version = Command::new(root.join("usr/bin/observer"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("observer {}", env!("CARGO_PKG_VERSION"))
    );
}

/// lintian, when installed: no errors.
fn lint(test: &str, deb: &str) {
    match run("lintian", &["--no-tag-display-limit", deb]) {
        Some(out) => {
            let report = text(&out);
            let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
            assert!(errors.is_empty(), "lintian reports errors:\n{report}");
            eprintln!("lintian:\n{report}");
        }
        None => eprintln!("\n*** {test}: lintian is not installed; the .deb was not linted ***\n"),
    }
}

/// Runs `cargo xtask deb` into `dir` and returns the .deb's path. The binary is packaged as
/// it is when target/release/observer is current; otherwise it is built under CI=true (a
/// minute or two), and the test is skipped elsewhere.
fn build_deb(test: &str, dir: &Path) -> Option<PathBuf> {
    let binary = repo("target/release/observer");
    // An older binary lacks the hidden `manpage` command or has another version.
    let current = Command::new(&binary)
        .arg("manpage")
        .output()
        .is_ok_and(|o| o.status.success())
        && Command::new(&binary)
            .arg("--version")
            .output()
            .is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout).trim()
                    == format!("observer {}", env!("CARGO_PKG_VERSION"))
            });
    let mut args = vec!["xtask", "deb", "--output"];
    let dir_arg = dir.to_string_lossy().into_owned();
    args.push(&dir_arg);
    if current {
        args.push("--no-build");
    } else if !under_ci() {
        skip(
            test,
            "target/release/observer is missing or older than the sources \
             (`cargo build --release -p observer`, or run with CI=true to build it)",
        );
        return None;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(&args)
        .current_dir(repo(""))
        .output()
        .expect("running cargo xtask deb");
    assert!(
        out.status.success(),
        "cargo {} failed:\n{}",
        args.join(" "),
        text(&out)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    let deb = PathBuf::from(
        printed
            .lines()
            .last()
            .expect("xtask prints the .deb's path")
            .trim(),
    );
    assert!(deb.exists(), "{} was not written", deb.display());
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!(
            "observer_{}_",
            env!("CARGO_PKG_VERSION").replace('-', "~")
        )) && deb.extension() == Some("deb".as_ref()),
        "{name}: not observer_<version>_<arch>.deb"
    );
    Some(deb)
}

/// A directory of this test process, removed at the end of the test.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "observer-package-files-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
