//! The panes of `observer top`, each a table made from a read model: what its columns are and
//! which rows pass the filters.

use std::{cmp::Ordering, net::SocketAddr};

use observer_common::TcpState;

use super::{
    detail::ConnId,
    view::{format_rate, rate},
};
use crate::{
    event::Family,
    human::human_duration,
    wire::{
        Filter,
        model::{ConnectionRow, Model},
    },
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pane {
    #[default]
    Listeners,
    Processes,
    CloseWait,
    Timewait,
    HalfOpen,
    Resets,
    Losses,
}

impl Pane {
    pub const ALL: [Self; 7] = [
        Self::Listeners,
        Self::Processes,
        Self::CloseWait,
        Self::Timewait,
        Self::HalfOpen,
        Self::Resets,
        Self::Losses,
    ];

    #[must_use]
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }

    /// The column a pane is sorted on until another is chosen.
    #[must_use]
    pub const fn default_sort(self) -> usize {
        match self {
            Self::Processes => 2,
            _ => 0,
        }
    }

    /// The tab's name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Listeners => "Listeners",
            Self::Processes => "Processes",
            Self::CloseWait => "CLOSE_WAIT",
            Self::Timewait => "TIME_WAIT",
            Self::HalfOpen => "Half-open",
            Self::Resets => "RSTs",
            Self::Losses => "Losses",
        }
    }
}

/// One cell: its text, and what it sorts by.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub text: String,
    key: Key,
}

#[derive(Clone, Debug, PartialEq)]
enum Key {
    /// Sorted largest first.
    Number(f64),
    /// Sorted in order.
    Text(String),
    /// Sorted smallest first (ports, a fixed order).
    Ordinal(f64),
}

impl Cell {
    fn text(text: impl Into<String>) -> Self {
        let text = text.into();
        Self {
            key: Key::Text(text.clone()),
            text,
        }
    }

    #[expect(clippy::cast_precision_loss, reason = "ports and positions")]
    fn ordinal(text: impl Into<String>, n: usize) -> Self {
        Self {
            text: text.into(),
            key: Key::Ordinal(n as f64),
        }
    }

    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    fn count(n: u64) -> Self {
        Self {
            text: n.to_string(),
            key: Key::Number(n as f64),
        }
    }

    fn rate(r: Option<f64>) -> Self {
        Self {
            text: format_rate(r),
            key: Key::Number(r.unwrap_or(-1.0)),
        }
    }

    /// An age in nanoseconds (`>=` when a lower bound), `-` when none.
    #[expect(clippy::cast_precision_loss, reason = "ages far below 2^52 ns")]
    fn age(ns: Option<u64>, lower_bound: bool) -> Self {
        Self {
            text: ns.map_or_else(
                || "-".to_owned(),
                |ns| {
                    format!(
                        "{}{}",
                        if lower_bound { ">=" } else { "" },
                        human_duration(ns)
                    )
                },
            ),
            key: Key::Number(ns.map_or(-1.0, |ns| ns as f64)),
        }
    }

    fn share(share: Option<f64>) -> Self {
        Self {
            text: share.map_or_else(|| "-".to_owned(), |s| format!("{:.1}%", s * 100.0)),
            key: Key::Number(share.unwrap_or(-1.0)),
        }
    }

    /// The natural order of two cells of one column.
    pub(super) fn order(a: &Self, b: &Self) -> Ordering {
        match (&a.key, &b.key) {
            (Key::Number(x), Key::Number(y)) => y.total_cmp(x),
            (Key::Text(x), Key::Text(y)) => x.cmp(y),
            (Key::Ordinal(x), Key::Ordinal(y)) => x.total_cmp(y),
            _ => Ordering::Equal,
        }
    }
}

/// A pane's table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    pub headers: Vec<&'static str>,
    pub rows: Vec<Vec<Cell>>,
    /// The connection of each row, in panes that list connections (empty in others).
    pub conns: Vec<Option<ConnId>>,
    pub sorted_by: usize,
    /// Rows the model has that its lists left out (counts beyond the listed).
    pub not_listed: u64,
}

/// The table of `pane` for `m`, rates over the `period_ns` since `previous`.
#[must_use]
pub fn table(
    pane: Pane,
    m: &Model,
    previous: Option<&Model>,
    period_ns: u64,
    filter: &Filter,
) -> Table {
    match pane {
        Pane::Listeners => listeners(m, previous, period_ns, filter),
        Pane::Processes => processes(m, filter),
        Pane::CloseWait => connections(&m.close_wait, m.close_wait_total, false, filter),
        Pane::Timewait => timewait(m, filter),
        Pane::HalfOpen => connections(&m.half_open, m.half_open_total, true, filter),
        Pane::Resets => resets(m, previous, period_ns),
        Pane::Losses => losses(m, previous, period_ns),
    }
}

fn port_passes(filter: &Filter, ports: &[u16]) -> bool {
    filter.ports.is_empty() || ports.iter().any(|p| filter.ports.contains(p))
}

fn addrs_pass(filter: &Filter, addrs: &[&str]) -> bool {
    let ips: Vec<std::net::IpAddr> = addrs
        .iter()
        .filter_map(|a| {
            a.parse::<SocketAddr>()
                .map(|s| s.ip())
                .or_else(|_| a.parse())
                .ok()
        })
        .collect();
    (filter.nets.is_empty()
        || ips
            .iter()
            .any(|ip| filter.nets.iter().any(|n| n.contains(ip))))
        && filter.family.is_none_or(|f| {
            ips.iter().any(|ip| {
                matches!(
                    (f, ip),
                    (Family::Ipv4, std::net::IpAddr::V4(_))
                        | (Family::Ipv6, std::net::IpAddr::V6(_))
                )
            })
        })
}

fn netns_passes(filter: &Filter, netns: Option<u32>) -> bool {
    filter.netns.is_empty() || netns.is_some_and(|n| filter.netns.contains(&n))
}

fn pid_passes(filter: &Filter, pid: Option<u32>) -> bool {
    filter.pids.is_empty() || pid.is_some_and(|p| filter.pids.contains(&p))
}

fn port_of(addr: &str) -> u16 {
    addr.parse::<SocketAddr>().map_or(0, |a| a.port())
}

fn listeners(m: &Model, previous: Option<&Model>, period_ns: u64, filter: &Filter) -> Table {
    let rows = m
        .listeners
        .iter()
        .filter(|l| {
            port_passes(filter, &[l.port])
                && addrs_pass(filter, &[&l.addr])
                && netns_passes(filter, l.netns)
        })
        .map(|l| {
            let before = previous.and_then(|p| {
                p.listeners
                    .iter()
                    .find(|b| b.port == l.port && b.netns == l.netns && b.addr == l.addr)
            });
            let delta = |now: u64, then: fn(&crate::wire::model::ListenerRow) -> u64| {
                before.and_then(|b| rate(now.saturating_sub(then(b)), period_ns))
            };
            vec![
                Cell::ordinal(l.port.to_string(), usize::from(l.port)),
                Cell::text(l.addr.clone()),
                Cell::count(u64::from(l.queued)),
                Cell::count(u64::from(l.backlog)),
                Cell::count(u64::from(l.syn_recv)),
                Cell::rate(delta(l.closed_before_accept, |b| b.closed_before_accept)),
                Cell::rate(delta(l.reset_before_accept, |b| b.reset_before_accept)),
                Cell::text(l.netns.map_or_else(|| "?".to_owned(), |n| n.to_string())),
            ]
        })
        .collect();
    Table {
        conns: Vec::new(),
        headers: vec![
            "PORT", "ADDR", "QUEUE", "LIMIT", "SYN_RECV", "CLOSED/s", "RST/s", "NETNS",
        ],
        rows,
        sorted_by: 0,
        not_listed: 0,
    }
}

/// The states a process row has a column for.
const PROCESS_STATES: [TcpState; 6] = [
    TcpState::Established,
    TcpState::SynSent,
    TcpState::CloseWait,
    TcpState::FinWait1,
    TcpState::FinWait2,
    TcpState::LastAck,
];

fn processes(m: &Model, filter: &Filter) -> Table {
    let rows = m
        .processes
        .iter()
        .filter(|p| pid_passes(filter, p.pid))
        .filter(|p| {
            filter.states.is_empty()
                || p.states.iter().any(|c| {
                    TcpState::from_name(&c.state).is_some_and(|s| filter.states.contains(&s))
                })
        })
        .map(|p| {
            let count = |s: TcpState| {
                p.states
                    .iter()
                    .find(|c| c.state == s.name())
                    .map_or(0, |c| c.count)
            };
            let listed: u64 = PROCESS_STATES.iter().map(|s| count(*s)).sum();
            let mut row = vec![
                Cell::text(p.pid.map_or_else(|| "?".to_owned(), |pid| pid.to_string())),
                Cell::text(p.comm.clone().unwrap_or_else(|| "(unknown)".to_owned())),
                Cell::count(p.total),
            ];
            row.extend(PROCESS_STATES.iter().map(|s| Cell::count(count(*s))));
            row.push(Cell::count(p.total.saturating_sub(listed)));
            row.push(Cell::age(p.oldest_close_wait_ns, false));
            row
        })
        .collect();
    Table {
        conns: Vec::new(),
        headers: vec![
            "PID",
            "COMM",
            "TOTAL",
            "ESTAB",
            "SYN_SENT",
            "CLOSE_WAIT",
            "FIN_WAIT1",
            "FIN_WAIT2",
            "LAST_ACK",
            "OTHER",
            "OLDEST_CW",
        ],
        rows,
        sorted_by: 0,
        not_listed: 0,
    }
}

fn connections(rows: &[ConnectionRow], total: u64, half_open: bool, filter: &Filter) -> Table {
    let passing: Vec<&ConnectionRow> = rows
        .iter()
        .filter(|c| {
            port_passes(filter, &[port_of(&c.local), port_of(&c.remote)])
                && addrs_pass(filter, &[&c.local, &c.remote])
                && netns_passes(filter, c.netns)
                && pid_passes(filter, c.pid)
        })
        .collect();
    let conns = passing.iter().map(|c| ConnId::of(c)).collect();
    let listed: Vec<Vec<Cell>> = passing
        .iter()
        .map(|c| {
            let mut row = vec![
                Cell::age(Some(c.age_ns), c.age_lower_bound),
                Cell::text(c.local.clone()),
                Cell::text(c.remote.clone()),
            ];
            if half_open {
                row.push(Cell::text(
                    c.state.clone().unwrap_or_else(|| "?".to_owned()),
                ));
                row.push(Cell::count(u64::from(c.retransmits.unwrap_or(0))));
            }
            row.push(Cell::text(match (c.pid, &c.comm) {
                (Some(pid), Some(comm)) => format!("{pid}/{comm}"),
                _ => "?".to_owned(),
            }));
            row.push(Cell::text(
                c.netns.map_or_else(|| "?".to_owned(), |n| n.to_string()),
            ));
            row
        })
        .collect();
    let headers = if half_open {
        vec![
            "NO PROGRESS",
            "LOCAL",
            "REMOTE",
            "STATE",
            "RETRANS",
            "PROCESS",
            "NETNS",
        ]
    } else {
        vec!["AGE", "LOCAL", "REMOTE", "PROCESS", "NETNS"]
    };
    Table {
        headers,
        not_listed: total.saturating_sub(rows.len() as u64),
        rows: listed,
        conns,
        sorted_by: 0,
    }
}

fn timewait(m: &Model, filter: &Filter) -> Table {
    let rows = m
        .timewait_destinations
        .iter()
        .filter(|d| {
            port_passes(filter, &[port_of(&d.remote)])
                && addrs_pass(filter, &[&d.local_addr, &d.remote])
                && netns_passes(filter, d.netns)
        })
        .map(|d| {
            vec![
                Cell::count(d.timewait),
                Cell::share(d.port_share),
                Cell::text(d.remote.clone()),
                Cell::text(d.local_addr.clone()),
                Cell::text(d.netns.map_or_else(|| "?".to_owned(), |n| n.to_string())),
            ]
        })
        .collect();
    Table {
        conns: Vec::new(),
        headers: vec!["TIME_WAIT", "PORTS", "DESTINATION", "FROM", "NETNS"],
        rows,
        sorted_by: 0,
        not_listed: 0,
    }
}

fn resets(m: &Model, previous: Option<&Model>, period_ns: u64) -> Table {
    let rows =
        m.resets
            .iter()
            .map(|r| {
                let before = previous.and_then(|p| {
                    p.resets
                        .iter()
                        .find(|b| b.direction == r.direction && b.class == r.class)
                        .map(|b| b.count)
                });
                vec![
                    Cell::count(r.count),
                    Cell::rate(previous.and_then(|_| {
                        rate(r.count.saturating_sub(before.unwrap_or(0)), period_ns)
                    })),
                    Cell::text(r.direction.clone()),
                    Cell::text(r.class.clone()),
                ]
            })
            .collect();
    Table {
        conns: Vec::new(),
        headers: vec!["COUNT", "PER_S", "DIRECTION", "CLASS"],
        rows,
        sorted_by: 0,
        not_listed: 0,
    }
}

/// A loss counter: its name, its value, and how to read it from another model.
type Counter = (&'static str, u64, fn(&Model) -> u64);

fn losses(m: &Model, previous: Option<&Model>, period_ns: u64) -> Table {
    let l = &m.losses;
    let counters: [Counter; 10] = [
        ("lost in all", l.lost_total, |m| m.losses.lost_total),
        ("ring buffer full", l.lost_ring_buffer_full, |m| {
            m.losses.lost_ring_buffer_full
        }),
        ("recursion misses", l.lost_recursion_misses, |m| {
            m.losses.lost_recursion_misses
        }),
        ("unreadable records", l.lost_read_failed, |m| {
            m.losses.lost_read_failed
        }),
        ("malformed records", l.malformed, |m| m.losses.malformed),
        ("timer recursion misses", l.timer_recursion_misses, |m| {
            m.losses.timer_recursion_misses
        }),
        ("gaps (missed transitions)", m.gaps, |m| m.gaps),
        ("sockets evicted", m.evicted_sockets, |m| m.evicted_sockets),
        ("timewait untracked", m.timewait_untracked, |m| {
            m.timewait_untracked
        }),
        ("socket clients dropped", m.socket_client_drops, |m| {
            m.socket_client_drops
        }),
    ];
    let mut rows = vec![vec![
        Cell::ordinal("events received", 0),
        Cell::count(m.received),
        Cell::rate(previous.and_then(|p| rate(m.received.saturating_sub(p.received), period_ns))),
    ]];
    rows.extend(counters.iter().enumerate().map(|(i, (name, now, of))| {
        vec![
            Cell::ordinal(*name, i + 1),
            Cell::count(*now),
            Cell::rate(previous.and_then(|p| rate(now.saturating_sub(of(p)), period_ns))),
        ]
    }));
    Table {
        conns: Vec::new(),
        headers: vec!["COUNTER", "TOTAL", "PER_S"],
        rows,
        sorted_by: 0,
        not_listed: 0,
    }
}
