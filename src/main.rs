//! Parse the flags, start logging, bind, serve until SIGINT or SIGTERM.
//!
//! A start-up failure is one line on stderr naming the address or flag, and exit status 1
//! (clap's own flag errors exit 2).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use switchboard::{Config, LogFormat, serve, shutdown};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
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
