//! `timewait_expiry`: TIME_WAIT made fast, then its expiry in bursts, nothing lost.

use std::time::{Duration, Instant};

use observer_common::TcpState;
use observer_testkit::netns::NetNs;

use super::{TABLES, Watched, no_alert, rate, tracker_matches_kernel};
use crate::{Check, Row, load, measure};

/// TIME_WAIT made at 10,000 closes/s for 20 s with the default configuration, then their
/// expiry, in bursts of a timer-wheel bucket (about 20,000 each): nothing lost at the expiry,
/// every one ended as expired.
pub(super) fn timewait_expiry(quick: bool) -> anyhow::Result<Row> {
    let (per_s, secs) = if quick { (10_000, 2) } else { (10_000, 20) };
    let ns = NetNs::new("stress-tw")?;
    ns.sysctl("net.ipv4.tcp_tw_reuse", "0")?;
    ns.sysctl("net.ipv4.ip_local_port_range", "10000 60999")?;
    ns.sysctl("net.ipv4.tcp_max_tw_buckets", "400000")?;
    let mut w = Watched::start(TABLES, &[])?;
    let started_at = Instant::now();
    let made = ns.enter(|| load::time_wait(per_s, Duration::from_secs(secs)))?;
    let achieved = rate(made, started_at.elapsed());
    std::thread::sleep(Duration::from_secs(2));
    let mut row = Row {
        scenario: "timewait_expiry",
        load: format!(
            "{made} TIME_WAIT made at {achieved:.0}/s ({per_s}/s asked) for {secs} s, then \
             their expiry"
        ),
        ..Row::default()
    };
    let peak_rss = measure::rss(&w.daemon).0;
    let listed = measure::sockets_in(&ns, TcpState::TimeWait);
    row.checks.push(Check::new(
        "TIME_WAIT made",
        listed == made,
        format!("ss lists {listed} TIME_WAIT in the namespace, {made} made"),
    ));
    row.checks.push(tracker_matches_kernel(&mut w)?);
    #[expect(clippy::cast_possible_wrap, reason = "memory far below 2^63")]
    let growth = peak_rss as i64 - w.rss_before as i64;
    row.checks.push(Check::new(
        "RSS growth per timewait socket",
        true,
        format!(
            "{:.0} bytes ({} MiB for {made}; includes the ring buffer's pages touched)",
            growth as f64 / made as f64,
            growth >> 20
        ),
    ));
    let lost_at_load = w.lost()?;
    let started = w.grew(
        "observer_tcp_timewait_started_total",
        &[("source", "timer")],
    )?;
    // Timewait sockets of the host that were there when the daemon started may expire too.
    let open_at_start = w
        .before
        .sum("observer_tracker_sockets", &[("table", "timewait")]);
    // 60 s after the last, fired up to one 2 s bucket late.
    let expired = w.wait(Duration::from_secs(90), Duration::from_secs(2), |m| {
        m.sum("observer_tcp_sockets", &[("state", "TIME_WAIT")]) == 0
    })?;
    let lost_at_expiry = w.lost()? - lost_at_load;
    let ended =
        |w: &mut Watched, cause| w.grew("observer_tcp_timewait_ended_total", &[("cause", cause)]);
    let (expired_n, killed, unseen) = (
        ended(&mut w, "expired")?,
        ended(&mut w, "killed")?,
        ended(&mut w, "unseen")?,
    );
    row.checks.push(Check::target(
        "zero lost at the expiry burst",
        lost_at_expiry == 0 && expired,
        format!("{lost_at_expiry} events lost while {expired_n} timewait sockets expired"),
    ));
    row.checks.push(Check::new(
        "every TIME_WAIT seen to expire",
        started >= made
            && (started..=started + open_at_start).contains(&expired_n)
            && killed == 0
            && unseen == 0,
        format!(
            "{started} started (timer seen), {expired_n} expired ({open_at_start} were open when \
             the daemon started), {killed} killed, {unseen} unseen; {made} made by the load"
        ),
    ));
    row.checks.push(no_alert(&mut w)?);
    w.finish(&mut row)?;
    Ok(row)
}
