//! The `observer` command.

mod cli;

use std::io::Write as _;

use anyhow::Context as _;
use clap::Parser as _;
use observer::config::{self, Config};

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    init_logging(cli.log_level);
    // One thread is plenty: the work per event is small and ordering matters.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            cli::Command::Watch(args) => {
                let alerts = if args.alerts {
                    Some(load_config(args.config.as_deref())?)
                } else {
                    None
                };
                observer::watch::run(args.into_options(alerts.as_ref())).await
            }
            cli::Command::Run(args) => {
                let mut config = load_config(args.config.as_deref())?;
                if let Some(listen) = args.listen {
                    config.metrics.listen = listen;
                }
                observer::run::run(config).await
            }
        }
    })
}

/// The named file, else the default path if it exists, else the defaults.
fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    let default = std::path::Path::new(config::DEFAULT_PATH);
    match path {
        Some(path) => Ok(Config::load(path)?),
        None if default.exists() => Config::load(default)
            .with_context(|| format!("{} (or pass --config)", config::DEFAULT_PATH)),
        None => {
            log::info!(
                "no configuration file at {}: using the defaults",
                config::DEFAULT_PATH
            );
            Ok(Config::default())
        }
    }
}

/// Messages on stderr. Under systemd (JOURNAL_STREAM set) each line starts with its syslog
/// priority, `<4>` for a warning, so the journal records levels; no timestamps either way.
fn init_logging(level: log::LevelFilter) {
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let mut builder = env_logger::Builder::new();
    builder
        .filter_level(level)
        .parse_env("RUST_LOG")
        .format_timestamp(None);
    if journald {
        builder.format(|out, record| {
            let priority = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(out, "<{priority}>{}", record.args())
        });
    }
    builder.init();
}
