//! `observer doctor` as a user runs it: the binary, its output and its exit status.

use crate::support::{self, kernel_version::KernelVersion};

use std::process::{Command, Output};

use serde_json::Value;

const OBSERVER: &str = env!("CARGO_BIN_EXE_observer");

/// Checks whose status is always `info`: they change nothing observer does.
const INFORMATIONAL: [&str; 3] = [
    "CAP_NET_ADMIN",
    "kernel.bpf_stats_enabled",
    "kernel.unprivileged_bpf_disabled",
];

fn doctor(prefix: &[&str], json: bool) -> Output {
    let mut args: Vec<&str> = prefix.to_vec();
    args.push(OBSERVER);
    args.push("doctor");
    if json {
        args.push("--json");
    }
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    eprintln!(
        "$ {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn parse(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).expect("doctor --json prints one JSON object")
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks is an array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}"))
}

#[test]
fn everything_is_present_on_the_test_machine() {
    if !support::privileged("everything_is_present_on_the_test_machine") {
        return;
    }
    let _serial = support::serial();

    // Before Linux 6.10 tcp_send_reset has no `reason` field: doctor warns about that one
    // check, with what it costs and the fix on the two lines below it, and it is the one
    // feature degraded.
    let has_reasons = KernelVersion::running().at_least(6, 10);
    // The kubelet's directory exists only on a Kubernetes node.
    let kubelet_missing = !std::path::Path::new("/var/log/containers").is_dir();
    let expected = |name: &str| {
        if INFORMATIONAL.contains(&name) || (name == "kubelet.logs" && kubelet_missing) {
            "info"
        } else if name.starts_with("RST") && !has_reasons {
            "warn"
        } else {
            "ok"
        }
    };

    let text = doctor(&[], false);
    assert_eq!(text.status.code(), Some(0));
    let stdout = String::from_utf8(text.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    let (all, closing) = lines.split_at(lines.len() - 2);
    let advice = all.iter().filter(|l| l.starts_with(' ')).count();
    assert_eq!(advice, if has_reasons { 0 } else { 2 }, "{stdout}");
    let table: Vec<&str> = all
        .iter()
        .copied()
        .filter(|l| !l.starts_with(' '))
        .collect();
    for line in &table {
        // Informational names are one word, so the second word tells them apart.
        let mut words = line.split_whitespace();
        let (status, name) = (words.next().unwrap(), words.next().unwrap());
        assert_eq!(status, expected(name), "{line}");
    }
    let verdict = if has_reasons {
        "observer can run here; nothing is degraded."
    } else {
        "observer can run here; 1 feature degraded: RST reasons."
    };
    assert_eq!(closing, ["", verdict], "{stdout}");
    assert!(
        table.iter().any(|l| l.starts_with("ok    trial load")),
        "{stdout}"
    );

    let json = doctor(&[], true);
    assert_eq!(json.status.code(), Some(0));
    let report = parse(&json);
    assert_eq!(report["can_run"], true);
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), table.len());
    for c in checks {
        let name = c["name"].as_str().unwrap();
        assert_eq!(c["status"], expected(name), "{c}");
        assert!(c["finding"].as_str().is_some_and(|f| !f.is_empty()), "{c}");
        let advised = c["costs"].is_string() && c["fix"].is_string();
        let silent = c["costs"].is_null() && c["fix"].is_null();
        assert!(
            if expected(name) == "warn" {
                advised
            } else {
                silent
            },
            "{c}"
        );
    }
    for name in [
        "kernel",
        "BTF",
        "tracefs",
        "sock:inet_sock_set_state",
        "timer:timer_expire_entry",
        "RST reasons",
        "tw_timer_handler",
        "CONFIG_HZ",
        "trial load",
    ] {
        assert_eq!(check(&report, name)["status"], expected(name), "{name}");
    }
}

#[test]
fn without_capabilities_it_cannot_run_and_says_how_to_grant_them() {
    if !support::privileged("without_capabilities_it_cannot_run_and_says_how_to_grant_them") {
        return;
    }
    let _serial = support::serial();
    let Some(setpriv) = ["/usr/bin/setpriv", "/bin/setpriv", "/usr/sbin/setpriv"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        support::skip::skip(
            "without_capabilities_it_cannot_run_and_says_how_to_grant_them",
            "setpriv (util-linux) is needed to drop capabilities",
        );
        return;
    };
    // Root without any capability, in the effective set and in every set it could regain.
    let drop_all = [setpriv, "--inh-caps=-all", "--bounding-set=-all"];

    let text = doctor(&drop_all, false);
    assert_eq!(text.status.code(), Some(1));
    let stdout = String::from_utf8(text.stdout).unwrap();
    for cap in ["CAP_BPF", "CAP_PERFMON"] {
        let at = stdout
            .lines()
            .position(|l| l.starts_with("fail") && l.split_whitespace().nth(1) == Some(cap))
            .unwrap_or_else(|| panic!("no failing {cap} line in\n{stdout}"));
        let advice: Vec<&str> = stdout.lines().skip(at + 1).take(2).collect();
        assert!(
            advice[0].starts_with("      costs: observer cannot run"),
            "{advice:?}"
        );
        assert!(
            advice[1].starts_with("      fix: run as root"),
            "{advice:?}"
        );
        assert!(
            advice[1].contains("setcap cap_bpf,cap_perfmon"),
            "{advice:?}"
        );
    }
    assert!(
        stdout
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("observer cannot run here: ")),
        "{stdout}"
    );

    let json = doctor(&drop_all, true);
    assert_eq!(json.status.code(), Some(1));
    let report = parse(&json);
    assert_eq!(report["can_run"], false);
    for name in ["CAP_BPF", "CAP_PERFMON", "trial load"] {
        let c = check(&report, name);
        assert_eq!(c["status"], "fail", "{c}");
        assert!(c["costs"].is_string(), "{c}");
    }
    for name in ["CAP_BPF", "CAP_PERFMON"] {
        let fix = check(&report, name)["fix"].as_str().unwrap();
        assert!(fix.contains("sudo setcap"), "{fix}");
    }
    assert!(
        check(&report, "trial load")["finding"]
            .as_str()
            .unwrap()
            .contains("missing privileges")
    );
    // Hidden kernel addresses cost TIME_WAIT, and say so.
    let kallsyms = check(&report, "tw_timer_handler");
    assert_eq!(kallsyms["status"], "warn");
    assert!(
        kallsyms["costs"]
            .as_str()
            .unwrap()
            .contains("TIME_WAIT is not observed")
    );
    // What does not depend on privileges is still found.
    for name in ["kernel", "BTF", "sock:inet_sock_set_state"] {
        assert_eq!(check(&report, name)["status"], "ok", "{name}");
    }
}

/// With `--config`, the checks the configuration changes follow it: the kubelet directory it
/// names, and the cgroup read it turns off.
#[test]
fn the_configuration_decides_the_workload_checks() {
    if !support::privileged("the_configuration_decides_the_workload_checks") {
        return;
    }
    let _serial = support::serial();
    let dir = std::env::temp_dir().join(format!("observer-doctor-{}", std::process::id()));
    let logs = dir.join("kubelet-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let config = dir.join("observer.toml");
    std::fs::write(
        &config,
        format!(
            "[workloads]\nkubelet_logs = \"{}\"\ncgroups = false\n",
            logs.display()
        ),
    )
    .unwrap();
    let default = parse(&doctor(&[], true));
    let with = Command::new(OBSERVER)
        .args(["doctor", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(with.status.code(), Some(0), "{with:?}");
    let report = parse(&with);
    let kubelet = check(&report, "kubelet.logs");
    assert_eq!(kubelet["status"], "ok", "{kubelet}");
    assert!(
        kubelet["finding"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{} is readable", logs.display())),
        "{kubelet}"
    );
    let cgroup2 = check(&report, "cgroup2");
    assert_eq!(cgroup2["status"], "info", "{cgroup2}");
    assert!(
        cgroup2["finding"]
            .as_str()
            .unwrap()
            .contains("workloads.cgroups = false"),
        "{cgroup2}"
    );
    // Without it, the defaults: the read on.
    assert_eq!(check(&default, "cgroup2")["status"], "ok");
}
