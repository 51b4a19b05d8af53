//! `syn_flood`: half-open connections whose SYN-ACKs are retransmitted, counted as the kernel
//! counts them.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use observer::load::prog_stats;
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
    // Run counts, so that a shortfall says on which side of the ring it happened.
    let stats = prog_stats::enable();
    let runs_before = retransmit_runs(w.daemon.pid());
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
    let mut daemon_skipped = 0;
    for program in ["tcp_retransmit_skb", "tcp_retransmit_synack"] {
        daemon_skipped += w.grew(
            "observer_program_runs_skipped_total",
            &[("program", program)],
        )?;
    }
    let runs = retransmit_runs(w.daemon.pid())
        .zip(runs_before)
        .filter(|_| stats.is_ok())
        .map(|(after, before)| after.since(before));
    drop(stats);
    // Only the retransmission programs' own skipped runs can explain a retransmission not
    // counted; other programs' count in `lost` too, so it is the bound when runs are unknown.
    let skipped = runs.map_or(lost, |r| r.skipped);
    #[expect(clippy::cast_possible_wrap, reason = "counts far below 2^63")]
    let uncounted = kernel as i64 - counted as i64 - skipped as i64;
    // A count short of the kernel's: looked at again later, to tell records read late from
    // records never read.
    let later = if uncounted > 0 {
        std::thread::sleep(Duration::from_secs(3));
        format!(
            "; 3 s later {} counted",
            w.grew("observer_tcp_synack_retransmits_total", &[])?
        )
    } else {
        String::new()
    };
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
        // The daemon counts as lost every run the kernel skipped, under its program.
        counted <= kernel
            && uncounted <= 0
            && kernel > 0
            && lost >= skipped
            && runs.is_none_or(|r| daemon_skipped == r.skipped),
        format!(
            "{counted} counted, TcpExt TCPSynRetrans grew by {kernel}; {lost} events lost and \
             counted (programs the kernel skipped); the retransmission programs {}{later}",
            runs.map_or_else(
                || "ran an unknown number of times".to_owned(),
                |r| format!(
                    "ran {} times and were skipped {} times ({daemon_skipped} counted under \
                     their names)",
                    r.ran, r.skipped
                )
            )
        ),
    ));
    drop(listener);
    w.finish(&mut row)?;
    Ok(row)
}

/// How often the daemon's retransmission programs ran, and were skipped by the kernel.
#[derive(Clone, Copy)]
struct RetransmitRuns {
    ran: u64,
    /// Recursion misses: counted as lost by the daemon too.
    skipped: u64,
}

impl RetransmitRuns {
    const fn since(self, before: Self) -> Self {
        Self {
            ran: self.ran - before.ran,
            skipped: self.skipped - before.skipped,
        }
    }
}

/// The daemon's retransmission programs' counters (SYN-ACK and segment: their names are one
/// once cut to the kernel's 15 bytes), while run counts are on; `None` if they cannot be read.
fn retransmit_runs(pid: u32) -> Option<RetransmitRuns> {
    let programs = prog_stats::attached_by(pid).ok()?;
    let ours = || {
        programs
            .values()
            .filter(|p| p.name.starts_with("tcp_retransmit"))
    };
    Some(RetransmitRuns {
        ran: ours().map(|p| p.stats.run_count).sum(),
        skipped: ours().map(|p| p.stats.recursion_misses).sum(),
    })
}
