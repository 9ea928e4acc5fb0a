//! `switchboard-h2-idle`: what an idle stream costs a switchboard serving HTTP/2 over TLS
//! (`--tls-cert`), the counterpart of `switchboard-load idle` for plain HTTP/1.1.
//!
//! `cert DIR` writes a CA (`ca.pem`) and a server certificate for `127.0.0.1` signed by it
//! (`cert.pem`, `key.pem`), for the server's `--tls-cert`/`--tls-key`. `run` opens
//! `--connections` HTTP/2 connections trusting that CA, joins `--streams` sessions over them
//! (`POST /helo`) and attaches one stream each (`GET /events/{id}`, read up to `ready`),
//! spread evenly, then holds them and reads the server's resident memory: before anything,
//! once settled, and after the hold. It prints one JSON line. Loopback only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use h2::client::SendRequest;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Parser)]
#[command(about = "Idle streams over HTTP/2 (TLS): server memory per stream")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes ca.pem, cert.pem and key.pem into DIR.
    Cert { dir: PathBuf },
    /// Holds idle streams over HTTP/2 and reports the server's memory per stream.
    Run {
        /// The server's TLS address (loopback).
        #[arg(long)]
        addr: SocketAddr,
        /// The CA written by `cert`.
        #[arg(long)]
        ca: PathBuf,
        /// The server's pid, for its memory.
        #[arg(long)]
        server_pid: u32,
        #[arg(long, default_value_t = 10_000)]
        streams: usize,
        /// HTTP/2 connections the streams are spread over (the server allows 200 streams each).
        #[arg(long, default_value_t = 100)]
        connections: usize,
        /// Seconds to wait after the last attach before reading memory, then to hold.
        #[arg(long, default_value_t = 3)]
        settle: u64,
        #[arg(long, default_value_t = 5)]
        hold: u64,
    },
}

fn main() -> Result<(), String> {
    match Cli::parse().command {
        Command::Cert { dir } => write_cert(&dir),
        Command::Run {
            addr,
            ca,
            server_pid,
            streams,
            connections,
            settle,
            hold,
        } => {
            if !addr.ip().is_loopback() {
                return Err(format!("{addr} is not a loopback address"));
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let run = Run {
                addr,
                ca,
                server_pid,
                streams,
                connections,
            };
            runtime.block_on(run.hold(Duration::from_secs(settle), Duration::from_secs(hold)))
        }
    }
}

fn write_cert(dir: &std::path::Path) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| err(&e))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "switchboard bench CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().map_err(|e| err(&e))?)
        .map_err(|e| err(&e))?;
    let key = KeyPair::generate().map_err(|e| err(&e))?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .and_then(|p| p.signed_by(&key, &ca))
        .map_err(|e| err(&e))?;
    std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
    std::fs::write(dir.join("ca.pem"), ca.pem()).map_err(|e| err(&e))?;
    std::fs::write(dir.join("cert.pem"), cert.pem()).map_err(|e| err(&e))?;
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).map_err(|e| err(&e))
}

struct Run {
    addr: SocketAddr,
    ca: PathBuf,
    server_pid: u32,
    streams: usize,
    connections: usize,
}

impl Run {
    async fn hold(self, settle: Duration, hold: Duration) -> Result<(), String> {
        let before = rss_kb(self.server_pid)?;
        let connector = self.connector()?;
        let mut links = Vec::new();
        for _ in 0..self.connections {
            links.push(self.connect(&connector).await?);
        }
        let started = Instant::now();
        // Each connection joins and attaches its share, all of them at once.
        let mut tasks = tokio::task::JoinSet::new();
        for (n, link) in links.iter().enumerate() {
            let share =
                self.streams / self.connections + usize::from(n < self.streams % self.connections);
            let link = link.clone();
            tasks.spawn(attach_many(link, share));
        }
        let mut held = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            held.extend(joined.map_err(|e| e.to_string())??);
        }
        let attach_s = started.elapsed().as_secs_f64();
        tokio::time::sleep(settle).await;
        let settled = rss_kb(self.server_pid)?;
        tokio::time::sleep(hold).await;
        let after = rss_kb(self.server_pid)?;
        let per = |kb: u64| (kb.saturating_sub(before) * 1024) as f64 / held.len().max(1) as f64;
        println!(
            "{}",
            json!({
                "mode": "h2-idle",
                "streams": held.len(),
                "connections": self.connections,
                "attach_s": attach_s,
                "rss_before_kb": before,
                "rss_settled_kb": settled,
                "rss_after_kb": after,
                "rss_per_stream_bytes": per(settled.max(after)),
            })
        );
        drop(held);
        Ok(())
    }

    fn connector(&self) -> Result<TlsConnector, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.ca).map_err(|e| e.to_string())? {
            roots
                .add(cert.map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsConnector::from(Arc::new(config)))
    }

    async fn connect(&self, connector: &TlsConnector) -> Result<SendRequest<Bytes>, String> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::from(self.addr.ip());
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (send, connection) = h2::client::handshake(tls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(send)
    }
}

/// Joins and attaches `count` sessions over `link`, one after the other; the streams' bodies,
/// each read up to its `ready`.
async fn attach_many(
    link: SendRequest<Bytes>,
    count: usize,
) -> Result<Vec<h2::RecvStream>, String> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let body = Bytes::from_static(br#"{"name":"idle"}"#);
        let (status, session) = request(&link, "POST", "/helo", Some(body)).await?;
        if status != 201 {
            return Err(format!("POST /helo answered {status}"));
        }
        let session: Value =
            serde_json::from_slice(&read_all(session).await?).map_err(|e| e.to_string())?;
        let path = format!(
            "/events/{}?token={}",
            session["id"].as_str().unwrap_or_default(),
            session["token"].as_str().unwrap_or_default()
        );
        let (status, mut stream) = request(&link, "GET", &path, None).await?;
        if status != 200 {
            return Err(format!("GET /events answered {status}"));
        }
        // Up to `ready`: the stream is attached.
        let mut seen = Vec::new();
        while !seen.windows(12).any(|w| w == b"event: ready") {
            let chunk = stream
                .data()
                .await
                .ok_or("the stream ended before ready")?
                .map_err(|e| e.to_string())?;
            let _ = stream.flow_control().release_capacity(chunk.len());
            seen.extend_from_slice(&chunk);
        }
        held.push(stream);
    }
    Ok(held)
}

async fn request(
    link: &SendRequest<Bytes>,
    method: &str,
    path: &str,
    body: Option<Bytes>,
) -> Result<(u16, h2::RecvStream), String> {
    let mut link = link.clone().ready().await.map_err(|e| e.to_string())?;
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("https://127.0.0.1{path}"));
    if let Some(body) = &body {
        request = request
            .header("content-type", "application/json")
            .header("content-length", body.len());
    }
    let request = request.body(()).map_err(|e| e.to_string())?;
    let (response, mut send) = link
        .send_request(request, body.is_none())
        .map_err(|e| e.to_string())?;
    if let Some(body) = body {
        send.send_data(body, true).map_err(|e| e.to_string())?;
    }
    let response = response.await.map_err(|e| e.to_string())?;
    Ok((response.status().as_u16(), response.into_body()))
}

async fn read_all(mut body: h2::RecvStream) -> Result<Vec<u8>, String> {
    let mut all = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let _ = body.flow_control().release_capacity(chunk.len());
        all.extend_from_slice(&chunk);
    }
    Ok(all)
}

/// The server's `VmRSS`, in KiB.
fn rss_kb(pid: u32) -> Result<u64, String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no VmRSS for pid {pid}"))
}
