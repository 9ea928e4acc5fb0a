//! The server under attack: the real binary with a low open-file limit, and what its log and its
//! memory show from outside.

use std::time::Duration;

use tokio::time::Instant;

use crate::support::{self, Instance, public_dir};

/// Longest wait for a read or a condition: longer than [`support::WAIT`], since answers under
/// attack may be slow.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Soft and hard open-file limit of the server: 256 descriptors, 192 connection slots.
pub(crate) const NOFILE: u64 = 256;

/// The binary on an ephemeral port with the crate's `public/`, no drain window, the low
/// open-file limit and `extra` arguments.
pub(crate) async fn start(extra: &[&str]) -> Instance {
    start_with_open_files(NOFILE, NOFILE, extra).await
}

/// [`start`] with the server's soft and hard open-file limits apart.
pub(crate) async fn start_with_open_files(soft: u64, hard: u64, extra: &[&str]) -> Instance {
    let public = public_dir();
    let key = support::api_key_file();
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--drain-window",
        "0s",
        "--public-dir",
        public.to_str().unwrap(),
        "--api-key-file",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Instance::launch("hostile")
        .open_file_limits(soft, hard)
        .with_args(&args)
        .await
}

/// The server's resident memory, from /proc/<pid>/status.
pub(crate) fn rss_kib(server: &Instance) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.id())).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Waits for a log line holding every one of `needles`.
pub(crate) async fn logged(server: &Instance, needles: &[&str]) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if server
            .log()
            .iter()
            .any(|line| needles.iter().all(|n| line.contains(n)))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
