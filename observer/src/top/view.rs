//! What `observer top` shows, as plain values: built from read models ([`Model`]) and the
//! viewer's choices ([`Ui`]), drawn by [`super::draw`]. Nothing here touches a terminal.

use observer_common::TcpState;

use super::{
    detail::{ConnId, History},
    panes::{self, Cell, Pane, Table},
};
use crate::{
    human::human_duration,
    wire::{Filter, model::Model},
};

/// The viewer's choices: pane, sort column per pane, pause, help, scrolling, and the
/// connection whose details are open.
#[derive(Clone, Debug)]
pub struct Ui {
    pub pane: Pane,
    /// Per pane (by [`Pane::index`]): the column sorted on, and whether ascending instead of
    /// the column's natural order.
    pub sort: [Sort; Pane::ALL.len()],
    pub paused: bool,
    pub help: bool,
    /// First row shown; in panes that list connections, the selected one.
    pub scroll: usize,
    /// The connection whose details are shown, with what was seen of it since.
    pub detail: Option<History>,
}

impl Default for Ui {
    fn default() -> Self {
        Self {
            pane: Pane::default(),
            sort: Pane::ALL.map(|p| Sort {
                column: p.default_sort(),
                reversed: false,
            }),
            paused: false,
            help: false,
            scroll: 0,
            detail: None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sort {
    pub column: usize,
    pub reversed: bool,
}

/// What a key asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Quit,
    /// Open the details of the selected connection.
    Open,
    /// Close the details (quit when none are open).
    Back,
    Pause,
    Help,
    NextPane,
    PreviousPane,
    Pane(Pane),
    /// Sort on the next column.
    NextSort,
    ReverseSort,
    Down,
    Up,
    PageDown,
    PageUp,
}

impl Ui {
    /// Applies an action; `columns` is how many columns the current pane has.
    pub fn apply(&mut self, action: Action, columns: usize) {
        let i = self.pane.index();
        match action {
            // The caller opens and closes details: it follows their connection.
            Action::Quit | Action::Open | Action::Back => {}
            Action::Pause => self.paused = !self.paused,
            Action::Help => self.help = !self.help,
            Action::NextPane => self.select(Pane::ALL[(i + 1) % Pane::ALL.len()]),
            Action::PreviousPane => {
                self.select(Pane::ALL[(i + Pane::ALL.len() - 1) % Pane::ALL.len()]);
            }
            Action::Pane(p) => self.select(p),
            Action::NextSort => {
                let s = &mut self.sort[i];
                s.column = (s.column + 1) % columns.max(1);
                s.reversed = false;
                self.scroll = 0;
            }
            Action::ReverseSort => self.sort[i].reversed = !self.sort[i].reversed,
            Action::Down => self.scroll += 1,
            Action::Up => self.scroll = self.scroll.saturating_sub(1),
            Action::PageDown => self.scroll += 10,
            Action::PageUp => self.scroll = self.scroll.saturating_sub(10),
        }
    }

    fn select(&mut self, pane: Pane) {
        self.pane = pane;
        self.scroll = 0;
    }
}

/// Where the data comes from, for the title line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Read from the daemon's socket at this path.
    Daemon(String),
    /// Programs loaded by this process.
    Standalone,
}

/// One screen's content.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    /// Mode, refresh interval, pause.
    pub title: String,
    /// Sockets per state.
    pub states: String,
    /// Event rate and losses.
    pub rates: String,
    pub pane: Pane,
    pub table: Table,
    /// Rows scrolled past.
    pub scroll: usize,
    pub help: bool,
    /// Colours: only on a terminal, never with NO_COLOR.
    pub color: bool,
    /// The row whose details `enter` opens, in panes that list connections.
    pub selected: Option<usize>,
    pub detail: Option<DetailView>,
}

/// One connection's details.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetailView {
    /// `127.0.0.1:8080 -> 127.0.0.1:51000, netns 9`
    pub title: String,
    /// What the last read model lists about it.
    pub facts: String,
    /// What was seen of it since the view opened, oldest first.
    pub lines: Vec<String>,
}

impl DetailView {
    fn new(h: &History, model: Option<&Model>) -> Self {
        let c = &h.conn;
        let netns = c.netns.map(|n| format!(", netns {n}")).unwrap_or_default();
        Self {
            title: format!("{} -> {}{netns}", c.local, c.remote),
            facts: model.and_then(|m| c.facts(m)).unwrap_or_else(|| {
                "not listed in the last snapshot (closed, or beyond the rows asked for)".to_owned()
            }),
            lines: h.lines().map(str::to_owned).collect(),
        }
    }
}

/// `n` per second over `ns` nanoseconds; none without a period.
#[must_use]
#[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
pub fn rate(n: u64, ns: u64) -> Option<f64> {
    (ns > 0).then(|| n as f64 * 1e9 / ns as f64)
}

/// A rate as a column shows it.
#[must_use]
pub fn format_rate(rate: Option<f64>) -> String {
    match rate {
        None => "-".to_owned(),
        Some(r) if !(0.05..100.0).contains(&r) => format!("{r:.0}"),
        Some(r) => format!("{r:.1}"),
    }
}

impl View {
    /// The screen for `model` (none yet: waiting), rates against `previous`.
    #[must_use]
    pub fn new(
        model: Option<&Model>,
        previous: Option<&Model>,
        ui: &Ui,
        mode: &Mode,
        interval_ms: u64,
        filter: &Filter,
        color: bool,
    ) -> Self {
        let source = match mode {
            Mode::Daemon(path) => format!("daemon {path}"),
            Mode::Standalone => "standalone".to_owned(),
        };
        let title = format!(
            "observer top - {source} - every {}{}",
            human_duration(interval_ms.saturating_mul(1_000_000)),
            if ui.paused { " - PAUSED" } else { "" }
        );
        let Some(m) = model else {
            return Self {
                title,
                states: "waiting for the first snapshot...".to_owned(),
                rates: String::new(),
                pane: ui.pane,
                table: Table::default(),
                scroll: 0,
                help: ui.help,
                color,
                selected: None,
                detail: ui.detail.as_ref().map(|h| DetailView::new(h, None)),
            };
        };
        let period = previous.map_or(0, |p| m.mono_ns.saturating_sub(p.mono_ns));
        let states = if m.states.is_empty() {
            "sockets: none".to_owned()
        } else {
            let mut ordered: Vec<_> = TcpState::ALL
                .iter()
                .filter_map(|s| {
                    let n = m.count_of(*s);
                    (n > 0).then(|| format!("{} {n}", s.name()))
                })
                .collect();
            ordered.insert(0, "sockets:".to_owned());
            ordered.join(" ")
        };
        let received = previous.map(|p| m.received.saturating_sub(p.received));
        let rates = format!(
            "events {}/s, lost {}, gaps {}, evicted {}, client drops {}",
            received.map_or_else(|| "-".to_owned(), |n| format_rate(rate(n, period))),
            m.losses.lost_total,
            m.gaps,
            m.evicted_sockets,
            m.socket_client_drops
        );
        let mut table = panes::table(ui.pane, m, previous, period, filter);
        let sort = ui.sort[ui.pane.index()];
        table.sort(sort.column, sort.reversed);
        let selected = (!table.conns.is_empty()).then(|| ui.scroll.min(table.rows.len() - 1));
        Self {
            title,
            states,
            rates,
            pane: ui.pane,
            table,
            scroll: ui.scroll,
            help: ui.help,
            color,
            selected,
            detail: ui.detail.as_ref().map(|h| DetailView::new(h, Some(m))),
        }
    }

    /// The connection `enter` opens: the selected row's.
    #[must_use]
    pub fn selected_conn(&self) -> Option<ConnId> {
        self.table.conns.get(self.selected?)?.clone()
    }
}

impl Table {
    /// Sorts on `column`: numbers largest first, text in order; `reversed` turns it round.
    pub fn sort(&mut self, column: usize, reversed: bool) {
        let column = column.min(self.headers.len().saturating_sub(1));
        self.sorted_by = column;
        let order = |a: &[Cell], b: &[Cell]| {
            let order = match (a.get(column), b.get(column)) {
                (Some(x), Some(y)) => Cell::order(x, y),
                _ => std::cmp::Ordering::Equal,
            };
            if reversed { order.reverse() } else { order }
        };
        if self.conns.len() == self.rows.len() && !self.conns.is_empty() {
            // Each row keeps its connection.
            let mut both: Vec<_> = std::mem::take(&mut self.rows)
                .into_iter()
                .zip(std::mem::take(&mut self.conns))
                .collect();
            both.sort_by(|a, b| order(&a.0, &b.0));
            (self.rows, self.conns) = both.into_iter().unzip();
        } else {
            self.rows.sort_by(|a, b| order(a, b));
        }
    }
}
