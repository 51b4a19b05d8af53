//! Alerts that name the workload a socket belongs to, through its cgroup.

use super::*;

#[test]
fn a_close_wait_alert_names_the_workload_that_leaks() {
    use std::os::unix::fs::MetadataExt as _;

    use crate::{event::CgroupId, workload::Resolver};

    let root = std::env::temp_dir().join(format!("observer-alert-cg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let unit = root.join("system.slice/nginx.service");
    std::fs::create_dir_all(&unit).unwrap();
    let id = CgroupId::new(std::fs::metadata(&unit).unwrap().ino()).unwrap();
    let resolver = Resolver::new(Some(root.clone()), &root.join("no-kubelet"));

    let mut tracker = Tracker::new(64);
    let mut out = Vec::new();
    let connect = match tr(0xA, S, Close, SynSent, "10.0.0.1:0", "10.0.0.2:80") {
        Event::Transition(t) => Event::Transition(Transition {
            cgroup: Some(id),
            ..t
        }),
        _ => unreachable!(),
    };
    for e in [
        connect,
        tr(
            0xA,
            S,
            SynSent,
            Established,
            "10.0.0.1:40000",
            "10.0.0.2:80",
        ),
        tr(
            0xA,
            S,
            Established,
            CloseWait,
            "10.0.0.1:40000",
            "10.0.0.2:80",
        ),
    ] {
        tracker.apply(&e, &mut out);
    }
    let mut engine = Engine::new(
        vec![rule(
            "Stuck",
            0,
            RuleKind::CloseWaitAge {
                older_than: Duration::from_secs(1),
            },
        )],
        16,
    );
    let limits = FxHashMap::default();
    let changes = engine.evaluate(
        &Inputs {
            workloads: Some(&resolver),
            tracker: &tracker,
            limits: &limits,
            listeners: &[],
            lost_total: 0,
            now_ns: 5 * S,
        },
        Timestamp::from_second(1_700_000_000).unwrap(),
    );
    std::fs::remove_dir_all(&root).unwrap();
    let alert = &changes[0].alert;
    assert_eq!(alert.labels["unit"], "nginx.service");
    assert_eq!(alert.labels["cgroup"], "/system.slice/nginx.service");
    assert!(
        !alert.labels.contains_key("pod"),
        "unknown pieces are absent"
    );
    assert!(
        alert.annotations["description"].contains("in nginx.service"),
        "{:?}",
        alert.annotations
    );
}
