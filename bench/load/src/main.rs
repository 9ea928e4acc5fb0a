//! `switchboard-load`: the load generator for switchboard, and for nginx+nchan side by side.
//!
//! # Layout
//! - `main.rs`: picks the mode the command line names and prints its [`outcome::Outcome`].
//! - [`cli`]: the command line: the options every mode shares, and the modes.
//! - [`coord`]: the coordinating process (phases, publishing, server memory/CPU sampling).
//! - [`worker`]: worker processes (`__worker`), each holding up to ~15,000 streams on one thread.
//! - [`proto`]: the JSON lines coordinator and workers exchange.
//! - [`http`]: a small HTTP/1.1 client on tokio TCP, loopback only, with source-address binding.
//! - [`sse`]: the incremental chunked + SSE decoder (the hot path).
//! - [`sys`]: `getrusage`, `/proc` memory and CPU of the server's process tree.
//! - [`outcome`]: the result table, `--json`, and the `report` subcommand (medians, ratios).
//! - [`chart`]: the `chart` subcommand (SVG charts of results files).
#![forbid(unsafe_code)]

mod chart;
mod cli;
mod coord;
mod http;
mod outcome;
mod proto;
mod sse;
mod sys;
mod worker;

use std::time::Duration;

use clap::Parser;

use crate::cli::{Cli, Mode, Opts, common};

fn main() {
    let cli = Cli::parse();
    let code = match cli.mode {
        Mode::Worker => worker::main(),
        Mode::Report { files, metrics } => match outcome::report(&files, &metrics) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e}");
                2
            }
        },
        Mode::Chart { files, out } => match chart::chart(&files, &out) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e}");
                2
            }
        },
        mode => run(&cli.opts, mode),
    };
    std::process::exit(code);
}

fn run(o: &Opts, mode: Mode) -> i32 {
    let c = match common(o) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    sys::raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    let limit = Duration::from_secs(o.max_secs);
    let result = local.block_on(&rt, async {
        let fut = async {
            match mode {
                Mode::Idle {
                    streams,
                    settle,
                    hold,
                    shared_connection,
                } => {
                    coord::idle(
                        &c,
                        streams,
                        shared_connection,
                        Duration::from_secs(settle),
                        Duration::from_secs(hold),
                    )
                    .await
                }
                Mode::Fanout {
                    streams,
                    broadcasts,
                    rate,
                    window,
                    publishers,
                    payload,
                    drain_timeout,
                } => {
                    coord::fanout(
                        &c,
                        &coord::FanoutArgs {
                            streams,
                            broadcasts,
                            rate,
                            window: window.max(1),
                            publishers: publishers.max(1),
                            payload,
                            drain_timeout: Duration::from_secs(drain_timeout),
                        },
                    )
                    .await
                }
                Mode::Direct {
                    pairs,
                    rate,
                    duration,
                    payload,
                    drain_timeout,
                } => {
                    coord::direct(
                        &c,
                        pairs,
                        rate,
                        Duration::from_secs(duration),
                        payload,
                        Duration::from_secs(drain_timeout),
                    )
                    .await
                }
                Mode::Churn {
                    rate,
                    duration,
                    hold_ms,
                    sample,
                    warmup,
                } => {
                    coord::churn(
                        &c,
                        rate,
                        Duration::from_secs(duration),
                        Duration::from_millis(hold_ms),
                        Duration::from_secs(sample.max(1)),
                        Duration::from_secs(warmup),
                    )
                    .await
                }
                Mode::Rooms {
                    rooms,
                    room_size,
                    rates,
                    publishers,
                    step_secs,
                    p99_limit_ms,
                    all_steps,
                    retries,
                    drain_timeout,
                } => {
                    coord::rooms(
                        &c,
                        &coord::RoomsArgs {
                            rooms: rooms.max(1),
                            size: room_size.max(1),
                            rates,
                            publishers,
                            step: Duration::from_secs(step_secs.max(1)),
                            p99_limit_ms,
                            all_steps,
                            retries,
                            drain_timeout: Duration::from_secs(drain_timeout),
                        },
                    )
                    .await
                }
                Mode::Join {
                    sessions,
                    room_size,
                    joins,
                    rate,
                } => {
                    coord::join(
                        &c,
                        &coord::JoinArgs {
                            sessions,
                            room_size,
                            joins,
                            rate,
                        },
                    )
                    .await
                }
                Mode::Report { .. } | Mode::Chart { .. } | Mode::Worker => {
                    unreachable!("handled in main")
                }
            }
        };
        tokio::time::timeout(limit, fut)
            .await
            .unwrap_or_else(|_| Err(format!("run exceeded --max-secs {}", o.max_secs)))
    });
    match result {
        Ok(out) => {
            if o.json {
                println!(
                    "{}",
                    serde_json::to_string(&out).expect("outcome serializes")
                );
            } else {
                out.print_table();
            }
            if out.ok { 0 } else { 1 }
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}
