//! The `observer` command.

mod cli;

use std::io::Write as _;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser as _};
use observer::config::{self, Config};

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    init_logging(cli.log_level);
    match cli.command {
        cli::Command::CheckConfig(args) => check_config(args.path.as_deref()),
        cli::Command::Doctor(args) => {
            let config = load_config(args.config.as_deref())?;
            let can_run = observer::doctor::run(args.json, &config.workloads)?;
            std::process::exit(i32::from(!can_run));
        }
        cli::Command::Completions(args) => {
            let mut command = cli::Cli::command();
            clap_complete::generate(args.shell, &mut command, "observer", &mut std::io::stdout());
            return Ok(());
        }
        cli::Command::Manpage => {
            clap_mangen::Man::new(cli::Cli::command()).render(&mut std::io::stdout())?;
            return Ok(());
        }
        cli::Command::Watch(_) | cli::Command::Run(_) | cli::Command::Top(_) => {}
    }
    one_malloc_arena();
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
            cli::Command::Top(args) => observer::top::run(args.into_options()).await,
            cli::Command::Run(args) => {
                let path = config_path(args.config.as_deref());
                let mut config = load_config(args.config.as_deref())?;
                args.apply_to(&mut config);
                // Boxed: the daemon's future is large, and lives as long as the process.
                Box::pin(observer::run::run(
                    config,
                    path,
                    Box::new(move |c| args.apply_to(c)),
                ))
                .await
            }
            _ => unreachable!("handled above"),
        }
    })
}

/// One allocator arena. The tracker's tables grow on whichever thread applies what changes
/// them (the event loop, a reconciliation's blocking thread); with an arena per thread, each
/// keeps what the other freed, and a daemon seeded beside 450,000 sockets held 80 MiB more.
fn one_malloc_arena() {
    // SAFETY: mallopt only sets an allocator parameter; glibc documents M_ARENA_MAX.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// The file the configuration comes from: the one named, else the default path if it exists.
fn config_path(path: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
    let default = std::path::Path::new(config::DEFAULT_PATH);
    match path {
        Some(path) => Some(path.to_owned()),
        None if default.exists() => Some(default.to_owned()),
        None => None,
    }
}

/// The named file, else the default path if it exists, else the defaults.
fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    match (path, config_path(path)) {
        (Some(_), Some(path)) => Ok(Config::load(&path)?),
        (None, Some(path)) => {
            Config::load(&path).with_context(|| format!("{} (or pass --config)", path.display()))
        }
        _ => {
            log::info!(
                "no configuration file at {}: using the defaults",
                config::DEFAULT_PATH
            );
            Ok(Config::default())
        }
    }
}

/// `observer check-config`: the verdict, and the rules the file gives; exits 1 when invalid.
fn check_config(path: Option<&std::path::Path>) -> ! {
    let path = path.unwrap_or_else(|| std::path::Path::new(config::DEFAULT_PATH));
    match Config::load(path) {
        Ok(config) => {
            let rules = config.effective_rules();
            println!(
                "{}: valid; metrics on {}, {} alert rules every {}:",
                path.display(),
                config.metrics.listen,
                rules.len(),
                humantime::format_duration(config.alerts.evaluation_interval)
            );
            for rule in rules {
                println!(
                    "  {} (for {}, severity {})",
                    rule.name,
                    humantime::format_duration(rule.for_),
                    rule.severity
                );
            }
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
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
