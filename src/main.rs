//! `haochaping`: see `haochaping --help` and the README.

use std::process::ExitCode;

use clap::Parser;
use haochaping::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp
                    | clap::error::ErrorKind::DisplayVersion
                    | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            // One line naming the flag; clap's usage hint follows only with --help.
            eprintln!(
                "{}",
                e.to_string()
                    .lines()
                    .next()
                    .unwrap_or("error: invalid arguments")
            );
            return ExitCode::from(2);
        }
    };
    let quiet = matches!(cli.command, Command::Demo(_));
    haochaping::telemetry::init_logging(if quiet { "warn" } else { "info" }, cli.log_format);
    match haochaping::commands::execute(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(if e.is::<haochaping::config::ConfigError>() {
                2
            } else {
                1
            })
        }
    }
}
