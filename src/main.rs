//! Parse the flags, raise the open-file limit, start logging, bind, serve until SIGINT or SIGTERM.
//!
//! A start-up failure is one line on stderr naming the address or flag, and exit status 1
//! (clap's own flag errors exit 2).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use switchboard::{Config, LogFormat, serve, shutdown};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// `--help` and `--version` as clap prints them; any other flag error as its first line alone
/// (clap's names the flag and the reason; its usage and tips follow on further lines), exit 2.
fn flag_error(err: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => err.exit(),
        _ => {
            let text = err.render().to_string();
            let line = text.lines().next().unwrap_or("error: invalid flags");
            eprintln!("{line} (see --help)");
            ExitCode::from(2)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(err) => return flag_error(&err),
    };
    // Every connection is a descriptor, and the limits are sized from this one: a shell's soft
    // limit (often 1,024) is only a default, the hard one is what the host allows.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    // `--log` was validated while parsing.
    let filter = EnvFilter::new(&config.log);
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stdout().is_terminal()).init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let listener = match TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!(
                "error: cannot listen on {} (--listen): {err}",
                config.listen
            );
            return ExitCode::FAILURE;
        }
    };
    match serve(listener, config, shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
