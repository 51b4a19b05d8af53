//! The client's end of the daemon's socket: connect when a daemon serves one this user may
//! open, send a request, read lines.

use std::{
    io,
    path::{Path, PathBuf},
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{
        UnixStream,
        unix::{OwnedReadHalf, OwnedWriteHalf},
    },
};

use super::{
    model::Model,
    request::{ErrorLine, Request},
};

/// Where a front-end gets its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The daemon's socket at this path when it exists and this user may open it; else the
    /// programs loaded by this process.
    DaemonOr(PathBuf),
    /// The programs loaded by this process (`--standalone`).
    Standalone,
}

impl Source {
    /// The daemon's socket at `path` (default: [`crate::config::DEFAULT_SOCKET`]), unless
    /// `standalone`.
    #[must_use]
    pub fn new(path: Option<PathBuf>, standalone: bool) -> Self {
        if standalone {
            Self::Standalone
        } else {
            Self::DaemonOr(path.unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_SOCKET)))
        }
    }
}

/// Why no daemon could be reached: the front-end then loads the programs itself.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    #[error("no daemon socket at {0}")]
    Absent(String),
    #[error(
        "{0}: permission denied (the socket's group may connect: add this user to it, or run \
         as root)"
    )]
    Denied(String),
    #[error("{0}: no daemon listens there ({1})")]
    NotListening(String, io::Error),
}

/// What went wrong once connected.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the daemon's socket: {0}")]
    Io(#[from] io::Error),
    #[error("the daemon refused the request: {0}")]
    Refused(String),
    #[error("the daemon closed the connection")]
    Closed,
    #[error("the daemon sent an unreadable snapshot: {0}")]
    Snapshot(serde_json::Error),
}

/// A connection to the daemon.
pub struct Client {
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    out: OwnedWriteHalf,
}

impl Client {
    /// Connects to the daemon's socket at `path`.
    pub async fn connect(path: &Path) -> Result<Self, Unreachable> {
        let shown = path.display().to_string();
        match UnixStream::connect(path).await {
            Ok(stream) => {
                let (read, out) = stream.into_split();
                Ok(Self {
                    lines: BufReader::new(read).lines(),
                    out,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Unreachable::Absent(shown)),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                Err(Unreachable::Denied(shown))
            }
            Err(e) => Err(Unreachable::NotListening(shown, e)),
        }
    }

    /// Subscribes to the event lines that pass `filter`: returns once the daemon confirmed,
    /// so that every event from then on is streamed.
    pub async fn subscribe(&mut self, filter: &crate::wire::Filter) -> Result<(), ClientError> {
        self.send(&Request::Events(filter.clone())).await?;
        match self.next_line().await? {
            Some(line) if line.starts_with("{\"type\":\"subscribed\"") => Ok(()),
            Some(line) => Err(ClientError::Refused(format!(
                "unexpected first line: {line}"
            ))),
            None => Err(ClientError::Closed),
        }
    }

    /// Sends a request.
    pub async fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        self.out.write_all(request.to_line().as_bytes()).await?;
        Ok(())
    }

    /// The next line the daemon wrote (without its newline); `None` when it closed the
    /// connection. An error line becomes [`ClientError::Refused`].
    pub async fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        let Some(line) = self.lines.next_line().await? else {
            return Ok(None);
        };
        if line.starts_with("{\"type\":\"error\"")
            && let Ok(e) = serde_json::from_str::<ErrorLine>(&line)
        {
            return Err(ClientError::Refused(e.error));
        }
        Ok(Some(line))
    }

    /// Whether lines already read from the socket wait to be taken: a writer passing lines on
    /// flushes when none do, once per burst instead of once per line.
    #[must_use]
    pub fn has_buffered(&mut self) -> bool {
        !self.lines.get_ref().buffer().is_empty()
    }

    /// Asks for one read model, up to `listed` entries per list of those that pass `filter`,
    /// and reads it.
    pub async fn snapshot(
        &mut self,
        listed: usize,
        filter: &crate::wire::Filter,
    ) -> Result<Model, ClientError> {
        self.send(&Request::Snapshot {
            listed,
            filter: filter.clone(),
        })
        .await?;
        let line = self.next_line().await?.ok_or(ClientError::Closed)?;
        serde_json::from_str(&line).map_err(ClientError::Snapshot)
    }
}
