//! `sighup_storm`: reloads in quick succession under load, nothing lost.

use std::time::{Duration, Instant};

use observer_testkit::{
    churn::{self, Load},
    netns::NetNs,
};

use super::{TABLES, Watched, rate};
use crate::{Check, Row, load};

/// 100 SIGHUPs in about 1.4 s while connections churn and 200,000 timewait sockets are
/// tracked: no reload restarts a heavy pass, nothing is lost.
pub(super) fn sighup_storm(quick: bool) -> anyhow::Result<Row> {
    let (per_s, secs) = if quick { (10_000, 2) } else { (10_000, 20) };
    let ns = NetNs::new("stress-hup")?;
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0")?;
    ns.sysctl("net.ipv4.ip_local_port_range", "10000 60999")?;
    ns.sysctl("net.ipv4.tcp_max_tw_buckets", "400000")?;
    let mut w = Watched::start(TABLES, &[])?;
    let tw = ns.enter(|| load::time_wait(per_s, Duration::from_secs(secs)))?;
    let lost_before = w.lost()?;
    let cpu_before = w.daemon.cpu_secs();
    let churn_load = Load {
        threads: 1,
        connections: 1_000_000,
        max_time: Duration::from_secs(4),
    };
    let started = Instant::now();
    let made = std::thread::scope(|s| {
        let churn = s.spawn(|| ns.enter(|| churn::run(&churn_load, None)));
        std::thread::sleep(Duration::from_millis(500));
        for _ in 0..100 {
            w.daemon.signal(libc::SIGHUP);
            std::thread::sleep(Duration::from_millis(14));
        }
        churn.join().expect("the churn thread")
    })?;
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(2200));
    let lost = w.lost()? - lost_before;
    let cpu = w.daemon.cpu_secs() - cpu_before;
    let reloads = w
        .log()
        .iter()
        .filter(|l| l.contains("configuration reloaded"))
        .count();
    let mut row = Row {
        scenario: "sighup_storm",
        load: format!(
            "100 SIGHUPs in 1.4 s beside {} connections at {:.0}/s, {tw} timewait sockets \
             tracked",
            made.connections(),
            rate(made.connections(), took)
        ),
        ..Row::default()
    };
    row.checks.push(Check::new(
        "nothing lost during the reloads",
        lost == 0,
        format!(
            "{lost} events lost; {reloads} reloads logged; {cpu:.2} CPU s in {:.1} s",
            took.as_secs_f64()
        ),
    ));
    w.finish(&mut row)?;
    Ok(row)
}
