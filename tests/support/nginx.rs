//! nginx as `docs/cluster/nginx.conf` runs it, read from the file at test time: only its
//! `listen` port and its upstream servers are replaced, so a change to the recipe is tested.
//! It runs as the recipe says (`nginx -p <dir> -c nginx.conf`, in the foreground) in a
//! directory of its own, where its pid file, logs (the access log among them) and temporary
//! files land. Its process group (master and workers) is killed on drop.
//!
//! Needs `nginx` (Debian: `apt-get install -y nginx`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::time::sleep;

use super::{POLL, WAIT, free_port};

const NGINX_CONF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cluster/nginx.conf");

/// Where Debian's `nginx` package installs it (often not on a non-root `PATH`).
const NGINX: &str = "/usr/sbin/nginx";

/// The recipe's nginx, running.
pub struct Nginx {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl Nginx {
    /// Starts the recipe's nginx in front of `upstreams` (`host:port` each, in place of the
    /// recipe's upstream servers) and waits until `/healthz` answers 200 through it. `label`
    /// names its directory.
    pub async fn start(label: &str, upstreams: &[String]) -> Nginx {
        let dir = std::env::temp_dir().join(format!("switchboard-nginx-{label}-{}", free_port()));
        std::fs::create_dir_all(dir.join("tmp")).expect("creating nginx's directory");
        let port = free_port();
        std::fs::write(dir.join("nginx.conf"), derived_conf(port, upstreams))
            .expect("writing nginx.conf");
        let child = spawn_nginx(&dir);
        let mut nginx = Nginx { port, dir, child };
        nginx.wait_until_it_proxies().await;
        nginx
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// An HTTP client whose connections come from `address`.
    pub fn client_from(&self, address: IpAddr) -> reqwest::Client {
        reqwest::Client::builder()
            .local_address(address)
            .connect_timeout(WAIT)
            .no_proxy()
            .build()
            .unwrap()
    }

    /// The access log as written so far: one line per finished request (a stream's when it
    /// ends), in the recipe's format.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    async fn wait_until_it_proxies(&mut self) {
        let probe = self.client_from(IpAddr::from([127, 0, 0, 1]));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("nginx exited ({exit}): {}", self.errors());
            }
            let answer = tokio::time::timeout(WAIT, probe.get(self.url("/healthz")).send()).await;
            if let Ok(Ok(response)) = answer
                && response.status() == StatusCode::OK
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nginx never proxied /healthz: {}",
                self.errors()
            );
            sleep(POLL).await;
        }
    }

    /// What nginx logged, for a failure message.
    fn errors(&self) -> String {
        ["startup.log", "error.log"]
            .map(|log| std::fs::read_to_string(self.dir.join(log)).unwrap_or_default())
            .join("\n")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGKILL to the group: the master would leave its workers serving if it died alone.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The recipe as written.
pub fn nginx_conf() -> String {
    std::fs::read_to_string(NGINX_CONF).expect("reading docs/cluster/nginx.conf")
}

/// How many upstream servers the recipe names (one per instance of its cluster).
pub fn upstream_count() -> usize {
    upstream_lines(&nginx_conf()).count()
}

/// The line numbers of the `server` lines of nginx.conf's `upstream` block.
fn upstream_lines(conf: &str) -> impl Iterator<Item = usize> + '_ {
    let mut in_upstream = false;
    conf.lines().enumerate().filter_map(move |(i, line)| {
        let line = line.trim();
        if line.starts_with("upstream ") {
            in_upstream = true;
        } else if line.starts_with('}') {
            in_upstream = false;
        } else if in_upstream && line.starts_with("server ") {
            return Some(i);
        }
        None
    })
}

/// nginx.conf with its `listen` on `port` and `upstreams` in place of its upstream servers
/// (the first server line becomes them all, the others go); every other line as the recipe
/// has it.
fn derived_conf(port: u16, upstreams: &[String]) -> String {
    let conf = nginx_conf();
    let servers: Vec<usize> = upstream_lines(&conf).collect();
    assert!(!servers.is_empty() && !upstreams.is_empty(), "an upstream");
    let mut listens = 0;
    let mut lines = Vec::new();
    for (i, line) in conf.lines().enumerate() {
        let indent = &line[..line.len() - line.trim_start().len()];
        if i == servers[0] {
            lines.extend(upstreams.iter().map(|up| format!("{indent}server {up};")));
        } else if servers.contains(&i) {
            continue;
        } else if line.trim_start().starts_with("listen ") {
            listens += 1;
            lines.push(format!("{indent}listen 127.0.0.1:{port};"));
        } else {
            lines.push(line.to_owned());
        }
    }
    assert_eq!(listens, 1, "nginx.conf listens once");
    lines.join("\n")
}

fn spawn_nginx(dir: &Path) -> Child {
    use std::os::unix::process::CommandExt;

    let program = if Path::new(NGINX).exists() {
        NGINX
    } else {
        "nginx"
    };
    let spawned = Command::new(program)
        .arg("-p")
        .arg(dir)
        .args(["-c", "nginx.conf"])
        // Errors before the config is read go here instead of the system's log.
        .arg("-e")
        .arg(dir.join("startup.log"))
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match spawned {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            panic!("nginx is not installed; this test needs it: apt-get install -y nginx")
        }
        Err(err) => panic!("cannot run {program}: {err}"),
    }
}
