//! The `observer` command.

mod cli;

use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let cli = cli::Cli::parse();
    env_logger::Builder::new()
        .filter_level(cli.log_level)
        .parse_env("RUST_LOG")
        .format_timestamp(None)
        .init();
    // One thread is plenty: the work per event is small and ordering matters.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            cli::Command::Watch(args) => observer::watch::run(args.into_options()).await,
        }
    })
}
