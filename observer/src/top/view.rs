//! What `observer top` shows, as plain values: built from read models ([`Model`]) and the
//! viewer's choices ([`Ui`]), drawn by [`super::draw`]. Nothing here touches a terminal.

use observer_common::TcpState;

use super::panes::{self, Cell, Pane, Table};
use crate::{
    human::human_duration,
    wire::{Filter, model::Model},
};

/// The viewer's choices: pane, sort column per pane, pause, help, scrolling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ui {
    pub pane: Pane,
    /// Per pane (by [`Pane::index`]): the column sorted on, and whether ascending instead of
    /// the column's natural order.
    pub sort: [Sort; Pane::ALL.len()],
    pub paused: bool,
    pub help: bool,
    /// First row shown.
    pub scroll: usize,
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
            Action::Quit => {}
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
        Self {
            title,
            states,
            rates,
            pane: ui.pane,
            table,
            scroll: ui.scroll,
            help: ui.help,
            color,
        }
    }
}

impl Table {
    /// Sorts on `column`: numbers largest first, text in order; `reversed` turns it round.
    pub fn sort(&mut self, column: usize, reversed: bool) {
        let column = column.min(self.headers.len().saturating_sub(1));
        self.sorted_by = column;
        self.rows.sort_by(|a, b| {
            let order = match (a.get(column), b.get(column)) {
                (Some(x), Some(y)) => Cell::order(x, y),
                _ => std::cmp::Ordering::Equal,
            };
            if reversed { order.reverse() } else { order }
        });
    }
}
