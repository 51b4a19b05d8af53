//! Reading `observer run`'s /metrics during a benchmark phase or a stress run, and the daemon's
//! counters that they compare. Also used by tests/privileged/bench_smoke.rs.
//!
//! One HTTP/1.1 connection is opened before the phase and kept alive across its scrapes, so
//! the scrapes add no TCP transitions to what the daemon counts.

use std::{
    collections::BTreeMap,
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

/// A kept-alive connection to the daemon's metrics endpoint.
pub struct Scraper {
    reader: BufReader<TcpStream>,
    addr: SocketAddr,
}

impl Scraper {
    pub fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Self {
            reader: BufReader::new(stream),
            addr,
        })
    }

    /// GET /metrics (Prometheus text format) on the kept-alive connection.
    pub fn scrape(&mut self) -> io::Result<Metrics> {
        let addr = self.addr;
        // One write: a request in pieces would wait on Nagle for the server's delayed ACK.
        let request =
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: keep-alive\r\n\r\n");
        self.reader.get_mut().write_all(request.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        if line.split_whitespace().nth(1) != Some("200") {
            return Err(io::Error::other(format!(
                "/metrics answered {}",
                line.trim()
            )));
        }
        let (mut length, mut chunked, mut closes) = (None, false, false);
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let (name, value) = (name.to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => closes = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        if closes {
            // A new connection per scrape would add transitions to the counts compared.
            return Err(io::Error::other(
                "the daemon does not keep connections alive",
            ));
        }
        let body = if chunked {
            self.read_chunked()?
        } else {
            let mut body = vec![0; length.ok_or_else(|| io::Error::other("no length"))?];
            self.reader.read_exact(&mut body)?;
            body
        };
        Ok(Metrics::parse(&String::from_utf8_lossy(&body)))
    }

    fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| io::Error::other("bad chunk size"))?;
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk)?;
            if size == 0 {
                return Ok(body);
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }

    /// Scrapes until the daemon's counters stop moving: at least 2.2 s after the load (a
    /// close is reported without a timewait socket only after a 1 s grace, checked every
    /// second), at most 10 s.
    pub fn settle(&mut self) -> io::Result<Metrics> {
        let start = Instant::now();
        std::thread::sleep(Duration::from_millis(2200));
        let mut last = self.scrape()?.counters();
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.scrape()?;
            if now.counters() == last || start.elapsed() > Duration::from_secs(10) {
                return Ok(now);
            }
            last = now.counters();
        }
    }

    /// Closes with an RST (`SO_LINGER {on, 0}`): no timewait socket is left behind whose end
    /// would show up in a later phase.
    pub fn close(self) {
        let stream = self.reader.into_inner();
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    }
}

/// One scrape: every sample, by metric name and labels.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    #[must_use]
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            samples.push((name.to_owned(), labels, value));
        }
        Self { samples }
    }

    /// The value of the first sample of `name` (0 when there is none).
    #[must_use]
    pub fn value(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .find(|(n, ..)| n == name)
            .map_or(0.0, |(.., v)| *v)
    }

    /// Sum over the samples of `name` whose labels include `with`.
    #[must_use]
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "counters are whole and far below 2^53"
    )]
    pub fn sum(&self, name: &str, with: &[(&str, &str)]) -> u64 {
        self.samples
            .iter()
            .filter(|(n, labels, _)| {
                n == name
                    && with
                        .iter()
                        .all(|(k, v)| labels.get(*k).is_some_and(|l| l == v))
            })
            .map(|(_, _, v)| v.round() as u64)
            .sum()
    }

    /// Kernel transitions the daemon counted, by (old, new) state: a TIME_WAIT entry is the
    /// full socket's FIN_WAIT2 (or CLOSING) -> CLOSE, and TIME_WAIT ends are left out.
    #[must_use]
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "counters are whole and far below 2^53"
    )]
    pub fn kernel_pairs(&self) -> BTreeMap<(String, String), u64> {
        let mut pairs = BTreeMap::new();
        for (name, labels, value) in &self.samples {
            let (Some(from), Some(to)) = (labels.get("from"), labels.get("to")) else {
                continue;
            };
            if name != "observer_tcp_transitions_total" || from == "TIME_WAIT" {
                continue;
            }
            let to = if to == "TIME_WAIT" { "CLOSE" } else { to };
            *pairs.entry((from.clone(), to.to_owned())).or_default() += value.round() as u64;
        }
        pairs
    }

    #[must_use]
    pub fn counters(&self) -> Counters {
        let lost = |reason| self.sum("observer_events_lost_total", &[("reason", reason)]);
        Counters {
            events_received: self.sum("observer_events_received_total", &[]),
            transitions: self.sum("observer_tcp_transitions_total", &[]),
            // Ends seen (as transitions); an end not seen is no transition.
            timewait_started: self.sum(
                "observer_tcp_timewait_started_total",
                &[("source", "timer")],
            ),
            timewait_ended: self.sum("observer_tcp_timewait_ended_total", &[("cause", "expired")])
                + self.sum("observer_tcp_timewait_ended_total", &[("cause", "killed")]),
            resets_sent: self.sum("observer_tcp_resets_total", &[("direction", "sent")]),
            resets_received: self.sum("observer_tcp_resets_total", &[("direction", "received")]),
            lost_ring_buffer_full: lost("ring_buffer_full"),
            lost_recursion_miss: lost("recursion_miss"),
            lost_unreadable: lost("unreadable"),
            lost_malformed: lost("malformed"),
            timer_recursion_misses: self.sum("observer_timer_recursion_misses_total", &[]),
            timewait_untracked: self
                .sum("observer_tracker_evicted_total", &[("table", "timewait")]),
            gaps: self.sum("observer_tracker_gaps_total", &[]),
            evicted: self.sum("observer_tracker_evicted_total", &[]),
            connection_errors: self.sum("observer_tcp_connection_errors_total", &[]),
            retransmits: self.sum("observer_tcp_retransmits_total", &[]),
            synack_retransmits: self.sum("observer_tcp_synack_retransmits_total", &[]),
        }
    }
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        // Label values here are plain words: no escaped quotes.
        let Some((value, tail)) = after.split_once('"') else {
            break;
        };
        labels.insert(
            key.trim_start_matches(',').trim().to_owned(),
            value.to_owned(),
        );
        rest = tail;
    }
    labels
}

/// The daemon's counters that the benchmark compares, as totals or as a phase's deltas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub events_received: u64,
    /// Every counted transition, TIME_WAIT entries and ends included.
    pub transitions: u64,
    /// Timewait sockets whose timer's start the daemon saw.
    pub timewait_started: u64,
    pub timewait_ended: u64,
    pub resets_sent: u64,
    pub resets_received: u64,
    pub lost_ring_buffer_full: u64,
    pub lost_recursion_miss: u64,
    pub lost_unreadable: u64,
    pub lost_malformed: u64,
    pub timer_recursion_misses: u64,
    pub timewait_untracked: u64,
    pub gaps: u64,
    pub evicted: u64,
    /// What the daemon's other programs reported (0 where a daemon has no such metric).
    pub connection_errors: u64,
    pub retransmits: u64,
    pub synack_retransmits: u64,
}

impl Counters {
    /// `self` and `other` added, counter by counter.
    #[must_use]
    pub fn plus(&self, other: &Self) -> Self {
        Self {
            events_received: self.events_received + other.events_received,
            transitions: self.transitions + other.transitions,
            timewait_started: self.timewait_started + other.timewait_started,
            timewait_ended: self.timewait_ended + other.timewait_ended,
            resets_sent: self.resets_sent + other.resets_sent,
            resets_received: self.resets_received + other.resets_received,
            lost_ring_buffer_full: self.lost_ring_buffer_full + other.lost_ring_buffer_full,
            lost_recursion_miss: self.lost_recursion_miss + other.lost_recursion_miss,
            lost_unreadable: self.lost_unreadable + other.lost_unreadable,
            lost_malformed: self.lost_malformed + other.lost_malformed,
            timer_recursion_misses: self.timer_recursion_misses + other.timer_recursion_misses,
            timewait_untracked: self.timewait_untracked + other.timewait_untracked,
            gaps: self.gaps + other.gaps,
            evicted: self.evicted + other.evicted,
            connection_errors: self.connection_errors + other.connection_errors,
            retransmits: self.retransmits + other.retransmits,
            synack_retransmits: self.synack_retransmits + other.synack_retransmits,
        }
    }

    /// What changed from `before` to `self`.
    #[must_use]
    pub fn since(&self, before: &Self) -> Self {
        Self {
            events_received: self.events_received - before.events_received,
            transitions: self.transitions - before.transitions,
            timewait_started: self.timewait_started - before.timewait_started,
            timewait_ended: self.timewait_ended - before.timewait_ended,
            resets_sent: self.resets_sent - before.resets_sent,
            resets_received: self.resets_received - before.resets_received,
            lost_ring_buffer_full: self.lost_ring_buffer_full - before.lost_ring_buffer_full,
            lost_recursion_miss: self.lost_recursion_miss - before.lost_recursion_miss,
            lost_unreadable: self.lost_unreadable - before.lost_unreadable,
            lost_malformed: self.lost_malformed - before.lost_malformed,
            timer_recursion_misses: self.timer_recursion_misses - before.timer_recursion_misses,
            timewait_untracked: self.timewait_untracked - before.timewait_untracked,
            gaps: self.gaps - before.gaps,
            evicted: self.evicted - before.evicted,
            connection_errors: self.connection_errors - before.connection_errors,
            retransmits: self.retransmits - before.retransmits,
            synack_retransmits: self.synack_retransmits - before.synack_retransmits,
        }
    }

    /// Kernel transitions (`inet_sock_set_state` records) the daemon counted. Each one is
    /// counted once (FIN_WAIT2 -> CLOSE as the TIME_WAIT entry when a timewait socket follows);
    /// TIME_WAIT ends are counted as transitions too, and are not kernel transitions.
    #[must_use]
    pub const fn kernel_transitions(&self) -> u64 {
        self.transitions - self.timewait_ended
    }

    /// Events the daemon counted as lost, by any reason.
    #[must_use]
    pub const fn lost(&self) -> u64 {
        self.lost_ring_buffer_full
            + self.lost_recursion_miss
            + self.lost_unreadable
            + self.lost_malformed
    }
}
