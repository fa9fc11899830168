//! `haochaping`: see `haochaping --help` and the README.

use std::process::ExitCode;

use clap::Parser;
use haochaping::cli::{Cli, Command};

fn main() -> ExitCode {
    limit_malloc_arenas();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// glibc gives each thread that allocates its own malloc arena, up to eight a core, and keeps what
/// is freed in each. The stages run in bursts of threads over batch-sized buffers, so by default
/// the process ends up holding several times its live memory: 10 M events offline peaked at
/// 1.56 GiB of RSS, and at 0.47 GiB with one arena a core (benches/RESULTS.md §12). Set before the
/// runtime starts its threads.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let arenas = libc::c_int::try_from(haochaping::parallel::workers().max(2))
            .unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets a parameter of the allocator; no thread allocates concurrently
        // this early, and a refused value leaves glibc's default in place.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

async fn run() -> ExitCode {
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
            eprintln!("error: {}", haochaping::commands::error_report(&e));
            ExitCode::from(if e.is::<haochaping::config::ConfigError>() {
                2
            } else {
                1
            })
        }
    }
}
