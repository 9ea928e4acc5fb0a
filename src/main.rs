//! Parse the flags, start logging, bind, serve until SIGINT or SIGTERM.

use std::io::IsTerminal;

use clap::Parser;
use switchboard::{Config, serve, shutdown};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let listener = TcpListener::bind(config.listen).await?;
    serve(listener, config, shutdown::signal()).await
}
