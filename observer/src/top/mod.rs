//! `observer top`: a full-screen view of the tracker, refreshed every interval. It reads read
//! models ([`crate::wire::model`]) from the daemon's socket, or makes them itself from its own
//! pipeline when no daemon serves one here (or with `--standalone`). The view is plain values
//! ([`view`]) drawn by functions of a ratatui frame ([`draw`]), so both are tested on
//! ratatui's test backend; only [`terminal`] touches the real terminal.

pub mod detail;
pub mod draw;
pub mod panes;
mod terminal;
#[cfg(test)]
mod tests;
pub mod view;

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc;

use self::{
    detail::{ConnId, History},
    panes::Pane,
    view::{Action, Mode, Ui, View},
};
use crate::{
    clock::{WallClock, mono_now_ns},
    load::LoadOptions,
    pipeline::{self, Pipeline, Settings},
    wire::{
        Filter,
        client::{Client, Source},
        lines::Line,
        model::Model,
    },
};

#[derive(Clone, Debug)]
pub struct TopOptions {
    pub source: Source,
    pub filter: Filter,
    /// How often the view is refreshed.
    pub interval: Duration,
    /// Entries per list asked for (CLOSE_WAIT sockets, processes, destinations, suspects).
    pub listed: usize,
    /// Standalone only: the programs' options, the table's size, the half-open threshold.
    pub load: LoadOptions,
    pub max_sockets: usize,
    pub half_open_after: Duration,
}

/// Where the models, and the lines about a followed connection, come from.
enum Feed {
    Daemon {
        client: Client,
        path: PathBuf,
        /// A second connection, streaming the lines of the followed connection.
        followed: Option<Box<Client>>,
    },
    Standalone {
        pipeline: Box<Pipeline>,
        /// The daemon's filter for the followed connection, applied here.
        following: Option<Filter>,
    },
}

impl Feed {
    async fn model(&mut self, listed: usize, filter: &Filter) -> anyhow::Result<Model> {
        match self {
            Self::Daemon { client, .. } => Ok(client.snapshot(listed, filter).await?),
            Self::Standalone { pipeline, .. } => {
                let (snapshot, breakdown) =
                    pipeline.state().snapshot_with_breakdown(listed, filter);
                Ok(Model::new(&snapshot, &breakdown))
            }
        }
    }

    /// Streams the lines about `conn` from now on ([`Feed::work`] returns them); `None` stops.
    async fn follow(&mut self, conn: Option<&ConnId>) -> anyhow::Result<()> {
        match self {
            Self::Daemon { path, followed, .. } => {
                *followed = None;
                if let Some(conn) = conn {
                    let mut client = Client::connect(path).await?;
                    client.subscribe(&conn.filter()).await?;
                    *followed = Some(Box::new(client));
                }
            }
            Self::Standalone { following, .. } => *following = conn.map(ConnId::filter),
        }
        Ok(())
    }

    /// Keeps a standalone pipeline applying events, or reads the followed connection's
    /// stream; returns the event lines to offer the followed connection (never completes for
    /// a daemon's feed that follows none).
    async fn work(&mut self) -> anyhow::Result<Vec<String>> {
        match self {
            Self::Daemon {
                followed: Some(client),
                ..
            } => Ok(client.next_line().await?.into_iter().collect()),
            Self::Daemon { followed: None, .. } => std::future::pending().await,
            Self::Standalone {
                pipeline,
                following,
            } => {
                pipeline.next().await?;
                let Some(filter) = following else {
                    return Ok(Vec::new());
                };
                let clock = WallClock::now();
                let now_ns = mono_now_ns();
                Ok(pipeline
                    .reports()
                    .iter()
                    .filter(|r| filter.passes(r))
                    .map(|r| serde_json::to_string(&Line::report(r, now_ns, &clock)))
                    .collect::<Result<_, _>>()?)
            }
        }
    }
}

/// What the key `key` asks for.
#[must_use]
pub fn action(key: KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    Some(match key.code {
        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => Action::Quit,
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Esc => Action::Back,
        KeyCode::Enter => Action::Open,
        KeyCode::Char(' ') => Action::Pause,
        KeyCode::Char('?' | 'h') => Action::Help,
        KeyCode::Tab | KeyCode::Right => Action::NextPane,
        KeyCode::BackTab | KeyCode::Left => Action::PreviousPane,
        KeyCode::Char(c @ '1'..='7') => {
            let n = c.to_digit(10).and_then(|d| usize::try_from(d).ok())?;
            Action::Pane(Pane::ALL[n - 1])
        }
        KeyCode::Char('s') => Action::NextSort,
        KeyCode::Char('r') => Action::ReverseSort,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::PageUp => Action::PageUp,
        _ => return None,
    })
}

/// Reads the terminal's keys on a thread of its own (crossterm reads block), until the
/// receiver goes.
fn read_keys() -> mpsc::UnboundedReceiver<KeyEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while !tx.is_closed() {
            match crossterm::event::poll(Duration::from_millis(200)) {
                Ok(true) => {
                    if let Ok(Event::Key(key)) = crossterm::event::read()
                        && tx.send(key).is_err()
                    {
                        return;
                    }
                }
                Ok(false) => {}
                Err(_) => return,
            }
        }
    });
    rx
}

/// Connects to the daemon, or starts a pipeline of its own.
async fn open(options: &TopOptions) -> anyhow::Result<(Feed, Mode)> {
    if let Source::DaemonOr(path) = &options.source {
        match Client::connect(path).await {
            Ok(client) => {
                return Ok((
                    Feed::Daemon {
                        client,
                        path: path.clone(),
                        followed: None,
                    },
                    Mode::Daemon(path.display().to_string()),
                ));
            }
            Err(why) => log::info!("{why}: loading the programs here (standalone)"),
        }
    }
    eprintln!("observer: loading the programs and reading the sockets already open...");
    let every = options.interval.max(Duration::from_secs(1));
    let pipeline = Pipeline::start(pipeline::Options {
        load: options.load.clone(),
        max_sockets: options.max_sockets,
        kubelet_logs: Some(crate::workload::KUBELET_LOGS.into()),
        settings: Settings {
            half_open_after: options.half_open_after,
            reconcile_every: Duration::from_secs(30),
            listen_every: Some(every),
            owner_after: Duration::from_secs(10),
            // Owners of CLOSE_WAIT sockets are looked for this often.
            evaluate_every: Some(every),
            alerts: None,
        },
    })
    .await?;
    Ok((
        Feed::Standalone {
            pipeline: Box::new(pipeline),
            following: None,
        },
        Mode::Standalone,
    ))
}

/// Runs until `q` or Ctrl-C.
pub async fn run(options: TopOptions) -> anyhow::Result<()> {
    let (mut feed, mode) = open(&options).await?;
    let mut screen = terminal::Screen::enter().context("opening the terminal")?;
    let color = crate::human::stdout_takes_color();
    let interval_ms = u64::try_from(options.interval.as_millis()).unwrap_or(u64::MAX);
    let mut keys = read_keys();
    let mut tick = tokio::time::interval(options.interval);
    let mut ui = Ui::default();
    let (mut model, mut previous): (Option<Model>, Option<Model>) = (None, None);
    loop {
        let view = View::new(
            model.as_ref(),
            previous.as_ref(),
            &ui,
            &mode,
            interval_ms,
            &options.filter,
            color,
        );
        screen.terminal.draw(|frame| draw::draw(frame, &view))?;
        tokio::select! {
            _ = tick.tick() => {
                if !ui.paused {
                    let new = feed.model(options.listed, &options.filter).await?;
                    previous = model.replace(new);
                }
            }
            key = keys.recv() => {
                let Some(key) = key else { break };
                let Some(action) = action(key) else { continue };
                if action == Action::Quit {
                    break;
                }
                if ui.help {
                    // Any key closes the help.
                    ui.help = false;
                    continue;
                }
                match action {
                    Action::Open if ui.detail.is_none() => {
                        if let Some(conn) = view.selected_conn() {
                            feed.follow(Some(&conn)).await?;
                            ui.detail = Some(History::new(conn));
                        }
                    }
                    Action::Back if ui.detail.is_some() => {
                        ui.detail = None;
                        feed.follow(None).await?;
                    }
                    Action::Back => break,
                    _ => ui.apply(action, view.table.headers.len()),
                }
            }
            lines = feed.work() => {
                let lines = lines?;
                if let Some(history) = ui.detail.as_mut() {
                    for line in &lines {
                        history.offer(line);
                    }
                }
            }
        }
    }
    drop(screen);
    Ok(())
}
