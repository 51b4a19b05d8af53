//! `syn_flood`: half-open connections whose SYN-ACKs are retransmitted, counted as the kernel
//! counts them.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use observer_testkit::netns::{InputDrop, VethPair};

use super::{TABLES, Watched, rate};
use crate::{Check, Row, load, measure};

/// SYNs over a veth pair whose SYN-ACKs the client drops (nftables): the server holds
/// half-open connections and retransmits SYN-ACKs, which the daemon counts as the kernel does.
pub(super) fn syn_flood(quick: bool) -> anyhow::Result<Row> {
    let secs = if quick { 3 } else { 10 };
    let pair = VethPair::new("stress-syn")?;
    pair.server.sysctl("net.ipv4.tcp_synack_retries", "2")?;
    let server_addr = SocketAddr::new(pair.server_v4, 8080);
    let listener = pair.server.enter(|| -> anyhow::Result<socket2::Socket> {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.bind(&server_addr.into())?;
        s.listen(4096)?;
        Ok(s)
    })?;
    let _drop = InputDrop::new(&pair.client, "tcp flags & (syn | ack) == (syn | ack) drop");
    let mut w = Watched::start(TABLES, &[])?;
    let kernel_before = measure::kernel_counters(Some(&pair.server));
    let started = Instant::now();
    let sent = pair
        .client
        .enter(|| load::syn_flood(server_addr, Duration::from_secs(secs)))?;
    let flood = started.elapsed();
    // Retransmissions at 1 s and 3 s after each SYN (tcp_synack_retries = 2), then the
    // request is dropped.
    std::thread::sleep(Duration::from_secs(6));
    let kernel = measure::grew(
        &kernel_before,
        &measure::kernel_counters(Some(&pair.server)),
        "TcpExt:TCPSynRetrans",
    );
    let counted = w.grew("observer_tcp_synack_retransmits_total", &[])?;
    let lost = w.lost()?;
    #[expect(clippy::cast_possible_wrap, reason = "counts far below 2^63")]
    let uncounted = kernel as i64 - counted as i64 - lost as i64;
    let mut row = Row {
        scenario: "syn_flood",
        load: format!(
            "{sent} SYNs at {:.0}/s over a veth pair, SYN-ACKs dropped",
            rate(sent, flood)
        ),
        lost_uncounted: Some(uncounted),
        ..Row::default()
    };
    row.checks.push(Check::new(
        "SYN-ACK retransmissions as the kernel counts them",
        counted <= kernel && uncounted <= 0 && kernel > 0,
        format!(
            "{counted} counted, TcpExt TCPSynRetrans grew by {kernel}; {lost} events lost and \
             counted (programs the kernel skipped)"
        ),
    ));
    drop(listener);
    w.finish(&mut row)?;
    Ok(row)
}
