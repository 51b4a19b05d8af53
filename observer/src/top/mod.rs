//! `observer top`: a full-screen view of the tracker, refreshed every interval. It reads read
//! models ([`crate::wire::model`]) from the daemon's socket, or makes them itself from its own
//! pipeline when no daemon serves one here (or with `--standalone`). The view is plain values
//! ([`view`]) drawn by functions of a ratatui frame ([`draw`]), so both are tested on
//! ratatui's test backend; only [`terminal`] touches the real terminal.

pub mod draw;
pub mod panes;
mod terminal;
#[cfg(test)]
mod tests;
pub mod view;

use std::time::Duration;

use anyhow::Context as _;
use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use tokio::sync::mpsc;

use self::{
    panes::Pane,
    view::{Action, Mode, Ui, View},
};
use crate::{
    load::LoadOptions,
    pipeline::{self, Pipeline, Settings},
    wire::{
        Filter,
        client::{Client, Source},
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

/// Where the models come from.
enum Feed {
    Daemon(Client),
    Standalone(Box<Pipeline>),
}

impl Feed {
    async fn model(&mut self, listed: usize) -> anyhow::Result<Model> {
        match self {
            Self::Daemon(client) => Ok(client.snapshot(listed).await?),
            Self::Standalone(pipeline) => {
                let (snapshot, breakdown) = pipeline.state().snapshot_with_breakdown(listed);
                Ok(Model::new(&snapshot, &breakdown))
            }
        }
    }

    /// Keeps a standalone pipeline applying events; never completes for a daemon's feed.
    async fn work(&mut self) -> anyhow::Result<()> {
        match self {
            Self::Daemon(_) => std::future::pending().await,
            Self::Standalone(pipeline) => pipeline.next().await.map(drop),
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
        KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
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
                    Feed::Daemon(client),
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
    Ok((Feed::Standalone(Box::new(pipeline)), Mode::Standalone))
}

/// Runs until `q` or Ctrl-C.
pub async fn run(options: TopOptions) -> anyhow::Result<()> {
    let (mut feed, mode) = open(&options).await?;
    let mut screen = terminal::Screen::enter().context("opening the terminal")?;
    let color = terminal::takes_color();
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
                    let new = feed.model(options.listed).await?;
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
                ui.apply(action, view.table.headers.len());
            }
            r = feed.work() => r?,
        }
    }
    drop(screen);
    Ok(())
}
