//! `cargo xtask bench`'s churn generator, at the small size of `--quick`, against `observer
//! run`: every transition the generator's counts promise is counted by the daemon, nothing is
//! lost, no gap. Keeps the benchmark's generator and its reading of the metrics honest.

use crate::support;

use std::time::Duration;

use observer_testkit::{churn as generator, churn::Load, daemon, scrape::Scraper};
use support::{kernel_version::KernelVersion, netns::NetNs, privileged, serial};

#[test]
fn quick_churn_is_counted_exactly_and_nothing_is_lost() {
    if !privileged("bench_smoke::quick_churn_is_counted_exactly_and_nothing_is_lost") {
        return;
    }
    let _serial = serial();
    // Linux 6.10 traces an RST sent without a socket (a refusal's); older kernels do not.
    let socketless_traced = KernelVersion::running().at_least(6, 10);
    let daemon = daemon::Daemon::start(env!("CARGO_BIN_EXE_observer")).expect("observer run");
    let mut scraper = Scraper::connect(daemon.addr).expect("connecting to /metrics");
    // The scrape connection's own transitions land before the first scrape.
    std::thread::sleep(Duration::from_millis(300));
    let load = Load {
        threads: 2,
        connections: 4_000,
        max_time: Duration::from_secs(30),
    };
    // The daemon counts the whole host, so another program's connections during the load add
    // to its count. They can only add: a surplus is retried, a shortfall never is.
    for attempt in 1..=3 {
        let ns = NetNs::new("smoke").expect("creating a network namespace");
        let before = scraper.scrape().expect("scraping");
        let made = ns
            .enter(|| generator::run(&load, None))
            .expect("the churn generator");
        let after = scraper.settle().expect("scraping");
        let got = after.counters().since(&before.counters());
        let pairs = generator::pair_differences(
            &made.pairs(),
            &before.kernel_pairs(),
            &after.kernel_pairs(),
        );
        assert!(
            !made.stopped_by_time,
            "the load hit its time bound: {made:?}"
        );
        assert_eq!(
            made.connections(),
            load.connections,
            "connections made: {made:?}"
        );
        assert_eq!(got.lost(), 0, "events lost: {got:?}");
        assert_eq!(got.gaps, 0, "gaps: {got:?}");
        let resets = got.resets_sent + got.resets_received;
        let traced = if socketless_traced {
            made.resets()
        } else {
            made.resets() - made.socketless_resets()
        };
        assert!(
            got.kernel_transitions() >= made.transitions() && resets >= traced,
            "the daemon counted {} transitions and {resets} RSTs; the load made {} and {traced} \
             that this kernel traces: {got:?}; (old, new, made, counted): {pairs:?}",
            got.kernel_transitions(),
            made.transitions(),
        );
        if got.kernel_transitions() == made.transitions() && resets == traced {
            scraper.close();
            daemon.stop().expect("observer run stops cleanly");
            return;
        }
        eprintln!(
            "attempt {attempt}: the daemon counted {} transitions and {} RSTs more than the \
             load made: other traffic on this host; trying again; {got:?}",
            got.kernel_transitions() - made.transitions(),
            resets - traced
        );
    }
    panic!("other TCP traffic on this host disturbed all 3 attempts");
}
