//! Drawing a [`View`] on a ratatui frame: three lines of totals, the tabs, the pane's table, a
//! line of keys, and the help overlay on top when asked for.

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Clear, Paragraph, Row, Table, TableState},
};

use super::{
    panes::Pane,
    view::{DetailView, View},
};

/// The keys, as the help overlay lists them.
pub const HELP: &[(&str, &str)] = &[
    ("q, Ctrl-C", "quit"),
    ("space", "pause or resume refreshing"),
    ("tab, right", "next pane"),
    ("shift-tab, left", "previous pane"),
    ("1 to 7", "that pane"),
    ("s", "sort on the next column"),
    ("r", "reverse the sort"),
    ("up, down, PgUp, PgDn", "scroll (the top row is selected)"),
    ("enter", "details of the selected connection"),
    ("esc", "back from the details, else quit"),
    ("?", "this help (any key closes it)"),
];

/// Widest a column grows.
const MAX_COLUMN: usize = 48;

fn style(view: &View, s: Style) -> Style {
    if view.color { s } else { Style::new() }
}

/// Draws `view` over the whole frame.
pub fn draw(frame: &mut Frame<'_>, view: &View) {
    let [title, states, rates, tabs, table, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let bold = style(view, Style::new().add_modifier(Modifier::BOLD));
    frame.render_widget(
        Paragraph::new(Line::styled(view.title.as_str(), bold)),
        title,
    );
    frame.render_widget(Paragraph::new(view.states.as_str()), states);
    frame.render_widget(Paragraph::new(view.rates.as_str()), rates);
    frame.render_widget(Paragraph::new(tab_line(view)), tabs);
    let key_line = if view.detail.is_some() {
        "esc back  q quit  ? help  space pause"
    } else if view.selected.is_some() {
        "q quit  ? help  enter details  space pause  tab pane  s sort  r reverse"
    } else {
        "q quit  ? help  space pause  tab pane  s sort  r reverse"
    };
    match &view.detail {
        Some(detail) => draw_detail(frame, view, detail, table),
        None => draw_table(frame, view, table),
    }
    frame.render_widget(
        Paragraph::new(Line::styled(
            key_line,
            style(view, Style::new().fg(Color::DarkGray)),
        )),
        keys,
    );
    if view.help {
        draw_help(frame, view);
    }
}

fn tab_line(view: &View) -> Line<'static> {
    let selected = style(view, Style::new().add_modifier(Modifier::REVERSED));
    let spans: Vec<Span<'static>> = Pane::ALL
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if *p == view.pane {
                Span::styled(format!("[{} {}]", i + 1, p.name()), selected)
            } else {
                Span::raw(format!(" {} {} ", i + 1, p.name()))
            }
        })
        .collect();
    Line::from(spans)
}

fn draw_table(frame: &mut Frame<'_>, view: &View, area: Rect) {
    let t = &view.table;
    if t.headers.is_empty() {
        return;
    }
    let headers: Vec<String> = t
        .headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            if i == t.sorted_by {
                format!("{h}*")
            } else {
                (*h).to_owned()
            }
        })
        .collect();
    let widths: Vec<Constraint> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let widest = t
                .rows
                .iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.text.chars().count())
                .fold(h.chars().count(), usize::max)
                .min(MAX_COLUMN);
            Constraint::Length(u16::try_from(widest).unwrap_or(u16::MAX))
        })
        .collect();
    // The header, and a line for what the lists left out, take a line each.
    let room = usize::from(area.height).saturating_sub(1 + usize::from(t.not_listed > 0));
    let scroll = view.scroll.min(t.rows.len().saturating_sub(room));
    let rows: Vec<Row<'_>> = t
        .rows
        .iter()
        .skip(scroll)
        .take(room)
        .map(|r| Row::new(r.iter().map(|c| c.text.as_str())))
        .collect();
    let header_style = style(
        view,
        Style::new()
            .add_modifier(Modifier::BOLD)
            .add_modifier(Modifier::UNDERLINED),
    );
    // The selected row: marked (colours or not), and reversed on a colour terminal.
    let mut state =
        TableState::new().with_selected(view.selected.filter(|s| *s >= scroll).map(|s| s - scroll));
    let table = Table::new(rows, widths)
        .header(Row::new(headers).style(header_style))
        .column_spacing(2)
        .highlight_symbol("> ")
        .row_highlight_style(style(view, Style::new().add_modifier(Modifier::REVERSED)));
    let [list, more] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(u16::from(t.not_listed > 0)),
    ])
    .areas(area);
    frame.render_stateful_widget(table, list, &mut state);
    if t.not_listed > 0 {
        frame.render_widget(
            Paragraph::new(format!("... and {} more, not listed", t.not_listed)),
            more,
        );
    }
}

/// One connection: what the last snapshot says, then what was seen of it since the view
/// opened (the newest lines, as many as fit).
fn draw_detail(frame: &mut Frame<'_>, view: &View, detail: &DetailView, area: Rect) {
    let bold = style(view, Style::new().add_modifier(Modifier::BOLD));
    let mut lines = vec![
        Line::styled(format!("Connection {}", detail.title), bold),
        Line::from(format!("Now: {}", detail.facts)),
        Line::from(""),
        Line::styled("Seen since this view opened (UTC):", bold),
    ];
    let room = usize::from(area.height).saturating_sub(lines.len());
    if detail.lines.is_empty() {
        lines.push(Line::from("  nothing yet"));
    }
    let skip = detail.lines.len().saturating_sub(room);
    lines.extend(
        detail.lines[skip..]
            .iter()
            .map(|l| Line::from(format!("  {l}"))),
    );
    frame.render_widget(Paragraph::new(lines), area);
}

fn draw_help(frame: &mut Frame<'_>, view: &View) {
    let lines: Vec<Line<'_>> = HELP
        .iter()
        .map(|(key, what)| Line::from(format!("{key:<21}{what}")))
        .collect();
    let width = u16::try_from(
        HELP.iter()
            .map(|(_, what)| 21 + what.len())
            .max()
            .unwrap_or(0)
            + 2,
    )
    .unwrap_or(u16::MAX);
    let height = u16::try_from(lines.len() + 2).unwrap_or(u16::MAX);
    let area = frame.area();
    let popup = Rect {
        x: area.x + area.width.saturating_sub(width) / 2,
        y: area.y + area.height.saturating_sub(height) / 2,
        width: width.min(area.width),
        height: height.min(area.height),
    };
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::new()
                .borders(Borders::ALL)
                .title(" keys ")
                .border_style(style(view, Style::new().fg(Color::Cyan))),
        ),
        popup,
    );
}
