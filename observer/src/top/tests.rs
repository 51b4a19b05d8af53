//! The screens of `observer top`, exactly, on ratatui's test backend.

use ratatui::{Terminal, backend::TestBackend};

use super::{
    draw::draw,
    panes::Pane,
    view::{Action, Mode, Ui, View},
};
use crate::wire::{
    Filter,
    lines::LossCounts,
    model::{ConnectionRow, DestinationRow, ListenerRow, Model, ProcessRow, ResetRow, StateCount},
};

const S: u64 = 1_000_000_000;

fn count(state: &str, count: u64) -> StateCount {
    StateCount {
        state: state.to_owned(),
        count,
    }
}

/// A host with a listener on 8080, a server leaking two CLOSE_WAIT sockets, TIME_WAIT toward
/// one destination and one half-open suspect; `at_s` seconds in, with `received` events.
fn model(at_s: u64, received: u64, closed_before_accept: u64) -> Model {
    Model {
        kind: "snapshot".to_owned(),
        mono_ns: at_s * S,
        received,
        states: vec![
            count("ESTABLISHED", 3),
            count("CLOSE_WAIT", 2),
            count("TIME_WAIT", 40),
            count("LISTEN", 1),
        ],
        listeners: vec![ListenerRow {
            netns: Some(9),
            addr: "0.0.0.0".to_owned(),
            port: 8080,
            queued: 2,
            backlog: 128,
            syn_recv: 1,
            closed_before_accept,
            reset_before_accept: 0,
        }],
        processes: vec![
            ProcessRow {
                pid: Some(42),
                comm: Some("server".to_owned()),
                total: 4,
                states: vec![count("ESTABLISHED", 2), count("CLOSE_WAIT", 2)],
                oldest_close_wait_ns: Some(75 * S),
            },
            ProcessRow {
                pid: Some(7),
                comm: Some("curl".to_owned()),
                total: 1,
                states: vec![count("ESTABLISHED", 1)],
                oldest_close_wait_ns: None,
            },
        ],
        close_wait_total: 3,
        close_wait: vec![
            ConnectionRow {
                local: "10.0.0.1:8080".to_owned(),
                remote: "10.0.0.2:40000".to_owned(),
                netns: Some(9),
                age_ns: 75 * S,
                age_lower_bound: false,
                state: None,
                retransmits: None,
                pid: Some(42),
                comm: Some("server".to_owned()),
            },
            ConnectionRow {
                local: "10.0.0.1:8080".to_owned(),
                remote: "10.0.0.3:40001".to_owned(),
                netns: Some(9),
                age_ns: 5 * S,
                age_lower_bound: true,
                state: None,
                retransmits: None,
                pid: None,
                comm: None,
            },
        ],
        timewait_total: 40,
        timewait_destinations: vec![DestinationRow {
            netns: Some(9),
            local_addr: "10.0.0.1".to_owned(),
            remote: "10.0.0.9:5432".to_owned(),
            timewait: 40,
            port_share: Some(40.0 / 28_232.0),
        }],
        half_open_after_ns: 10 * S,
        half_open_total: 0,
        half_open: vec![],
        resets: vec![ResetRow {
            direction: "sent".to_owned(),
            class: "no_listener".to_owned(),
            count: 12,
        }],
        losses: LossCounts {
            lost_total: 5,
            lost_ring_buffer_full: 5,
            ..LossCounts::default()
        },
        gaps: 1,
        evicted_sockets: 0,
        timewait_untracked: 0,
        socket_client_drops: 2,
    }
}

/// The screen's lines, trailing spaces cut.
fn screen(view: &View, width: u16, height: u16) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| draw(frame, view)).unwrap();
    let buffer = terminal.backend().buffer();
    buffer
        .content()
        .chunks(usize::from(width))
        .map(|row| {
            row.iter()
                .map(ratatui::buffer::Cell::symbol)
                .collect::<String>()
                .trim_end()
                .to_owned()
        })
        .collect()
}

fn view(ui: &Ui, filter: &Filter) -> View {
    View::new(
        Some(&model(12, 1300, 30)),
        Some(&model(10, 1000, 10)),
        ui,
        &Mode::Daemon("/run/observer/observer.sock".to_owned()),
        1000,
        filter,
        false,
    )
}

#[test]
fn listeners_pane_shows_queues_and_rates() {
    let lines = screen(&view(&Ui::default(), &Filter::default()), 100, 8);
    assert_eq!(
        lines,
        [
            "observer top - daemon /run/observer/observer.sock - every 1s",
            "sockets: ESTABLISHED 3 TIME_WAIT 40 CLOSE_WAIT 2 LISTEN 1",
            "events 150/s, lost 5, gaps 1, evicted 0, client drops 2",
            "[1 Listeners] 2 Processes  3 CLOSE_WAIT  4 TIME_WAIT  5 Half-open  6 RSTs  7 Losses",
            "PORT*  ADDR     QUEUE  LIMIT  SYN_RECV  CLOSED/s  RST/s  NETNS",
            "8080   0.0.0.0  2      128    1         10.0      0      9",
            "",
            "q quit  ? help  space pause  tab pane  s sort  r reverse",
        ]
    );
}

#[test]
fn processes_pane_counts_states_and_sorts_on_the_chosen_column() {
    let mut ui = Ui::default();
    ui.apply(Action::Pane(Pane::Processes), 11);
    let lines = screen(&view(&ui, &Filter::default()), 110, 8);
    assert_eq!(
        lines[4..7],
        [
            "PID  COMM    TOTAL*  ESTAB  SYN_SENT  CLOSE_WAIT  FIN_WAIT1  FIN_WAIT2  LAST_ACK  OTHER  OLDEST_CW",
            "42   server  4       2      0         2           0          0          0         0      1m15s",
            "7    curl    1       1      0         0           0          0          0         0      -",
        ]
    );
    // `s` moves the sort to the next column (ESTAB), `r` turns it round.
    ui.apply(Action::NextSort, 11);
    ui.apply(Action::ReverseSort, 11);
    let lines = screen(&view(&ui, &Filter::default()), 110, 8);
    assert_eq!(
        lines[4..7],
        [
            "PID  COMM    TOTAL  ESTAB*  SYN_SENT  CLOSE_WAIT  FIN_WAIT1  FIN_WAIT2  LAST_ACK  OTHER  OLDEST_CW",
            "7    curl    1      1       0         0           0          0          0         0      -",
            "42   server  4      2       0         2           0          0          0         0      1m15s",
        ]
    );
}

#[test]
fn close_wait_pane_lists_the_oldest_and_says_how_many_more() {
    let mut ui = Ui::default();
    ui.apply(Action::Pane(Pane::CloseWait), 5);
    let lines = screen(&view(&ui, &Filter::default()), 80, 9);
    assert_eq!(
        lines[3..9],
        [
            " 1 Listeners  2 Processes [3 CLOSE_WAIT] 4 TIME_WAIT  5 Half-open  6 RSTs  7 Los",
            "  AGE*   LOCAL          REMOTE          PROCESS    NETNS",
            "> 1m15s  10.0.0.1:8080  10.0.0.2:40000  42/server  9",
            "  >=5s   10.0.0.1:8080  10.0.0.3:40001  ?          9",
            "... and 1 more, not listed",
            "q quit  ? help  enter details  space pause  tab pane  s sort  r reverse",
        ]
    );
}

#[test]
fn filters_choose_the_rows() {
    let mut ui = Ui::default();
    ui.apply(Action::Pane(Pane::CloseWait), 5);
    let filter = Filter {
        nets: vec!["10.0.0.3/32".parse().unwrap()],
        ..Filter::default()
    };
    let lines = screen(&view(&ui, &filter), 80, 9);
    // The line about what the lists left out sits at the foot of the pane.
    assert_eq!(
        lines[4..8],
        [
            "  AGE*  LOCAL          REMOTE          PROCESS  NETNS",
            "> >=5s  10.0.0.1:8080  10.0.0.3:40001  ?        9",
            "",
            "... and 1 more, not listed",
        ]
    );
    let by_port = Filter {
        ports: vec![9999],
        ..Filter::default()
    };
    let lines = screen(&view(&Ui::default(), &by_port), 80, 8);
    assert_eq!(lines[5], "", "no listener on port 9999");
}

#[test]
fn timewait_resets_and_losses_panes() {
    let mut ui = Ui::default();
    ui.apply(Action::Pane(Pane::Timewait), 5);
    let lines = screen(&view(&ui, &Filter::default()), 80, 8);
    assert_eq!(
        lines[4..6],
        [
            "TIME_WAIT*  PORTS  DESTINATION    FROM      NETNS",
            "40          0.1%   10.0.0.9:5432  10.0.0.1  9",
        ]
    );
    ui.apply(Action::NextPane, 5);
    ui.apply(Action::NextPane, 5);
    let lines = screen(&view(&ui, &Filter::default()), 80, 8);
    assert_eq!(
        lines[4..6],
        [
            "COUNT*  PER_S  DIRECTION  CLASS",
            "12      0      sent       no_listener"
        ]
    );
    ui.apply(Action::NextPane, 4);
    let lines = screen(&view(&ui, &Filter::default()), 60, 16);
    assert_eq!(
        lines[4..15],
        [
            "COUNTER*                   TOTAL  PER_S",
            "events received            1300   150",
            "lost in all                5      0",
            "ring buffer full           5      0",
            "recursion misses           0      0",
            "unreadable records         0      0",
            "malformed records          0      0",
            "timer recursion misses     0      0",
            "gaps (missed transitions)  1      0",
            "sockets evicted            0      0",
            "timewait untracked         0      0",
        ]
    );
}

#[test]
fn help_overlay_lists_the_keys_and_pause_shows_in_the_title() {
    let ui = Ui {
        help: true,
        paused: true,
        ..Ui::default()
    };
    let lines = screen(&view(&ui, &Filter::default()), 80, 18);
    assert_eq!(
        lines[0],
        "observer top - daemon /run/observer/observer.sock - every 1s - PAUSED"
    );
    // Centred over the pane, the key list in a box.
    assert_eq!(
        lines[2..15],
        [
            "events 150/┌ keys ─────────────────────────────────────────────────┐",
            "[1 Listener│q, Ctrl-C            quit                              │ RSTs  7 Los",
            "PORT*  ADDR│space                pause or resume refreshing        │",
            "8080   0.0.│tab, right           next pane                         │",
            "           │shift-tab, left      previous pane                     │",
            "           │1 to 7               that pane                         │",
            "           │s                    sort on the next column           │",
            "           │r                    reverse the sort                  │",
            "           │up, down, PgUp, PgDn scroll (the top row is selected)  │",
            "           │enter                details of the selected connection│",
            "           │esc                  back from the details, else quit  │",
            "           │?                    this help (any key closes it)     │",
            "           └───────────────────────────────────────────────────────┘",
        ]
    );
}

#[test]
fn before_the_first_snapshot_the_screen_says_it_waits() {
    let view = View::new(
        None,
        None,
        &Ui::default(),
        &Mode::Standalone,
        500,
        &Filter::default(),
        false,
    );
    let lines = screen(&view, 60, 6);
    assert_eq!(
        lines,
        [
            "observer top - standalone - every 500ms",
            "waiting for the first snapshot...",
            "",
            "[1 Listeners] 2 Processes  3 CLOSE_WAIT  4 TIME_WAIT  5 Half",
            "",
            "q quit  ? help  space pause  tab pane  s sort  r reverse",
        ]
    );
}

#[test]
fn keys_map_to_actions() {
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    let key = |code| super::action(KeyEvent::new(code, KeyModifiers::NONE));
    assert_eq!(key(KeyCode::Char('q')), Some(Action::Quit));
    assert_eq!(key(KeyCode::Char(' ')), Some(Action::Pause));
    assert_eq!(key(KeyCode::Char('?')), Some(Action::Help));
    assert_eq!(key(KeyCode::Char('3')), Some(Action::Pane(Pane::CloseWait)));
    assert_eq!(key(KeyCode::Char('s')), Some(Action::NextSort));
    assert_eq!(key(KeyCode::Char('x')), None);
    assert_eq!(
        super::action(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
        Some(Action::Quit)
    );
}

#[test]
fn enter_opens_the_selected_connection_with_what_was_seen_since() {
    let mut ui = Ui::default();
    ui.apply(Action::Pane(Pane::CloseWait), 5);
    ui.apply(Action::Down, 5);
    let selected = view(&ui, &Filter::default()).selected_conn().unwrap();
    assert_eq!(
        (selected.local, selected.remote, selected.netns),
        (
            "10.0.0.1:8080".parse().unwrap(),
            "10.0.0.3:40001".parse().unwrap(),
            Some(9)
        ),
        "the second row, after one step down"
    );
    ui.scroll = 0;
    let first = view(&ui, &Filter::default()).selected_conn().unwrap();
    let mut history = super::detail::History::new(first);
    history.offer(
        r#"{"type":"transition","time":"2026-12-01T21:04:05.123456789Z","mono_ns":5,"sock":"0xffff888000000001","family":"ipv4","local_addr":"10.0.0.1","local_port":8080,"remote_addr":"10.0.0.2","remote_port":40000,"old_state":"CLOSE_WAIT","new_state":"LAST_ACK","prev_state_ns":75000000000,"prev_state_lower_bound":false,"note":null,"timewait_timeout_ns":null,"netns":9,"pid":42,"comm":"server","task_pid":42,"task_tid":42,"task_comm":"server","owner_context":true,"gap":false}"#,
    );
    ui.detail = Some(history);
    let lines = screen(&view(&ui, &Filter::default()), 80, 11);
    assert_eq!(
        lines[4..11],
        [
            "Connection 10.0.0.1:8080 -> 10.0.0.2:40000, netns 9",
            "Now: CLOSE_WAIT for 1m15s, process 42/server",
            "",
            "Seen since this view opened (UTC):",
            "  21:04:05.123  CLOSE_WAIT -> LAST_ACK after 1m15s in CLOSE_WAIT",
            "",
            "esc back  q quit  ? help  space pause",
        ]
    );
}
