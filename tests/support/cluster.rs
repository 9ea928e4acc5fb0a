//! Cluster mode for real: a `redis-server` child on an ephemeral port and a few `switchboard`
//! binaries pointed at it with a key prefix of their own.
//!
//! [`Cluster::settle`] is a barrier on the bus: `GET /healthz` in cluster mode publishes a
//! probe through Redis and waits for it to come back, and every instance applies the bus in
//! order, so once each instance answered 200 each has applied everything published before.
//!
//! Needs `redis-server` (Debian: `apt-get install -y redis-server`); without it every cluster
//! test fails and says so.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::time::{sleep, timeout};

use super::{
    Endpoint, Instance, POLL, Session, SseReader, WAIT, free_port, sample, wait_for_health,
};

/// Where Debian's `redis-server` package installs the server.
const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// A `redis-server` child process, killed (SIGKILL) on drop. Nothing is persisted.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts a server on a free ephemeral port; retries with another port if one was taken
    /// between finding it and the server binding it.
    pub async fn start() -> Redis {
        let mut failures = Vec::new();
        for _ in 0..5 {
            match Redis::start_on(free_port()).await {
                Ok(redis) => return redis,
                Err(err) => failures.push(err),
            }
        }
        panic!("could not start redis-server: {failures:?}");
    }

    /// Starts a server on `port` and waits until it answers and proves it is this child (its
    /// `process_id`), not some other server that owns the port.
    pub async fn start_on(port: u16) -> Result<Redis, String> {
        Redis::start_with(port, &[]).await
    }

    /// [`Redis::start_on`], with more flags (cluster mode, for one).
    pub async fn start_with(port: u16, flags: &[&str]) -> Result<Redis, String> {
        let program = if Path::new(REDIS_SERVER).exists() {
            REDIS_SERVER
        } else {
            "redis-server"
        };
        let port_arg = port.to_string();
        let spawned = Command::new(program)
            .args(["--port", &port_arg, "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(flags)
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed ({REDIS_SERVER} not found); the cluster tests \
                 need it: apt-get install -y redis-server"
            ),
            Err(err) => panic!("cannot run {program}: {err}"),
        };
        let pid = child.id();
        let mut redis = Redis {
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(info) = redis.info("server").await
                && info.lines().any(|l| l == format!("process_id:{pid}"))
            {
                return Ok(redis);
            }
            if let Some(child) = redis.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                redis.child = None;
                return Err(format!("redis-server on port {port} exited: {status}"));
            }
            if Instant::now() > deadline {
                return Err(format!("redis-server on port {port} never answered"));
            }
            sleep(POLL).await;
        }
    }

    /// No server of its own: the cluster runs on a Redis Cluster (see [`super::redis_cluster`]).
    pub fn absent() -> Redis {
        Redis {
            port: 0,
            child: None,
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether the server still runs (it was not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `INFO <section>` over a fresh connection, within [`WAIT`].
    async fn info(&self, section: &str) -> Result<String, String> {
        self.try_command(redis::cmd("INFO").arg(section))
            .await
            .map_err(|e| e.to_string())
    }

    /// `cmd` over a fresh connection, within [`WAIT`].
    pub async fn try_command<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        let exchange = async {
            let client = redis::Client::open(self.url())?;
            let mut connection = client.get_multiplexed_async_connection().await?;
            cmd.query_async::<T>(&mut connection).await
        };
        match timeout(WAIT, exchange).await {
            Ok(reply) => reply,
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no reply within the wait",
            ))),
        }
    }

    /// `cmd`, which must succeed.
    pub async fn command<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        self.try_command(cmd)
            .await
            .unwrap_or_else(|err| panic!("{cmd:?} on port {}: {err}", self.port))
    }

    /// SIGKILL, and wait until the process is gone (its port is then free again).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// How many `PUBLISH` commands this server has executed (`INFO commandstats`).
    pub async fn publish_calls(&self) -> u64 {
        self.calls("publish").await
    }

    /// How many `command`s (lower case) this server has executed (`INFO commandstats`).
    pub async fn calls(&self, command: &str) -> u64 {
        let stats = self.info("commandstats").await.expect("INFO commandstats");
        let prefix = format!("cmdstat_{command}:calls=");
        stats
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .map_or(0, |rest| {
                rest.split(',')
                    .next()
                    .and_then(|calls| calls.parse().ok())
                    .expect("a number of calls")
            })
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `switchboard_bus_messages_received_total{channel}` on `node`: what it read from Redis on
/// the shared bus (`"bus"`), room channels (`"room"`) or its own channel (`"instance"`).
pub async fn bus_reads(node: &Endpoint, channel: &str) -> u64 {
    let series = format!("switchboard_bus_messages_received_total{{channel=\"{channel}\"}}");
    sample(&node.metrics().await, &series).map_or(0, |n| n as u64)
}

/// What [`Cluster::kai_on_a_wen_on_b`] set up.
pub struct KaiAndWen {
    /// Homed on node 0, attached there.
    pub kai: Session,
    /// Homed on node 1, not attached.
    pub wen: Session,
    /// kai's stream on node 0, read past wen's `new_user`.
    pub kai_on_a: SseReader,
    /// The id of that `new_user`.
    pub greeted: u64,
}

/// One Redis and a few instances sharing a prefix of their own.
pub struct Cluster {
    // Dropped first: instances die before their Redis.
    pub nodes: Vec<Instance>,
    pub redis: Redis,
    /// The `--redis-prefix` of every node.
    pub prefix: String,
    /// Each node's arguments, to start it again.
    args: Vec<Vec<String>>,
}

impl Cluster {
    /// One instance per entry of `extra` (its extra flags), labelled A, B, C; returns once
    /// every instance is subscribed to the bus. Over a Redis server of its own, or the test
    /// script's Redis Cluster when it gave one ([`super::redis_cluster::SHARED_VAR`]).
    pub async fn start(test: &str, extra: &[&[&str]]) -> Cluster {
        match super::redis_cluster::shared() {
            Some(url) => Cluster::start_on(Redis::absent(), &url, test, extra).await,
            None => {
                let redis = Redis::start().await;
                let url = redis.url();
                Cluster::start_on(redis, &url, test, extra).await
            }
        }
    }

    /// [`Cluster::start`] on a `redis-server` of its own even when the test script gave a
    /// Redis Cluster: for a test that restarts its Redis, reads its command counts, or runs a
    /// release that speaks to one server only.
    pub async fn start_own(test: &str, extra: &[&[&str]]) -> Cluster {
        let redis = Redis::start().await;
        let url = redis.url();
        Cluster::start_on(redis, &url, test, extra).await
    }

    /// [`Cluster::start`] on Redis at `redis_url` (`redis`, or a Redis Cluster).
    pub async fn start_on(redis: Redis, redis_url: &str, test: &str, extra: &[&[&str]]) -> Cluster {
        const LABELS: [&str; 3] = ["A", "B", "C"];
        let redis_url = redis_url.to_owned();
        let prefix = format!("sbtest-{test}-{}", std::process::id());
        let mut nodes = Vec::new();
        let mut all = Vec::new();
        for (label, flags) in LABELS.into_iter().zip(extra) {
            let mut args = vec!["--redis-url", &redis_url, "--redis-prefix", &prefix];
            args.extend_from_slice(flags);
            nodes.push(Instance::start(label, &args).await);
            all.push(args.into_iter().map(str::to_owned).collect());
        }
        let cluster = Cluster {
            nodes,
            redis,
            prefix,
            args: all,
        };
        cluster.settle().await;
        cluster
    }

    /// Starts one more instance, labelled `label`, with the cluster's prefix and `flags`,
    /// talking to Redis at `redis_url` (the cluster's own, or a proxy in front of it); its
    /// index in `nodes`.
    pub async fn add(&mut self, label: &str, redis_url: &str, flags: &[&str]) -> usize {
        let mut args = vec!["--redis-url", redis_url, "--redis-prefix", &self.prefix];
        args.extend_from_slice(flags);
        self.nodes.push(Instance::start(label, &args).await);
        self.args
            .push(args.into_iter().map(str::to_owned).collect());
        self.nodes.len() - 1
    }

    /// [`Cluster::add`] with `program` as the binary (another release's).
    pub async fn add_program(&mut self, label: &str, program: &Path, flags: &[&str]) -> usize {
        let redis_url = self.redis.url();
        let mut args = vec!["--redis-url", &redis_url, "--redis-prefix", &self.prefix];
        args.extend_from_slice(flags);
        let node = Instance::launch(label).program(program).start(&args).await;
        self.nodes.push(node);
        self.args
            .push(args.into_iter().map(str::to_owned).collect());
        self.nodes.len() - 1
    }

    /// How many connections read `channel` (`PUBSUB NUMSUB`).
    pub async fn readers(&self, channel: &str) -> u64 {
        let client = redis::Client::open(self.redis.url()).expect("a Redis URL");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("a connection to the test's Redis");
        let (_, readers): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut connection)
            .await
            .expect("PUBSUB NUMSUB");
        readers
    }

    /// Publishes `payload` on `channel` as an instance would.
    pub async fn publish_raw(&self, channel: &str, payload: &str) {
        let client = redis::Client::open(self.redis.url()).expect("a Redis URL");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("a connection to the test's Redis");
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async::<u64>(&mut connection)
            .await
            .expect("PUBLISH");
    }

    /// Node `i`'s instance id, from its `cluster mode` log line.
    pub async fn instance_id(&self, i: usize) -> String {
        let (line, _) = self.nodes[i].log_line("cluster mode").await;
        line.split_whitespace()
            .find_map(|field| field.strip_prefix("instance="))
            .expect("the instance id in the log")
            .to_owned()
    }

    /// The pub/sub channel of node `i`'s own messages (`<prefix>:to:<uuid>`).
    pub async fn own_channel(&self, i: usize) -> String {
        format!("{}:to:{}", self.prefix, self.instance_id(i).await)
    }

    /// A deploy of node `i`: SIGTERM, wait for its graceful exit (which must succeed), start
    /// it again with the same arguments (on another port) and wait until it is healthy.
    pub async fn restart(&mut self, i: usize) {
        let exit = self.nodes[i].terminate().await;
        assert!(
            exit.success(),
            "{} stops cleanly: {exit:?}",
            self.nodes[i].label
        );
        let args: Vec<&str> = self.args[i].iter().map(String::as_str).collect();
        let label = self.nodes[i].label.clone();
        self.nodes[i] = Instance::start(&label, &args).await;
        wait_for_health(&self.nodes[i], StatusCode::OK, Duration::from_secs(10)).await;
    }

    /// The start of most fault tests: kai joins on node 0 and wen on node 1 (settled after
    /// each, so kai hears wen join), and kai's stream attaches on node 0, read past `ready`
    /// and wen's `new_user`.
    pub async fn kai_on_a_wen_on_b(&self) -> KaiAndWen {
        let kai = self.nodes[0].helo("kai").await;
        self.settle().await;
        let wen = self.nodes[1].helo("wen").await;
        self.settle().await;
        let (mut kai_on_a, _) = self.nodes[0].attach_roster(&kai, None).await;
        let greeted = kai_on_a.expect_new_user(&wen).await;
        KaiAndWen {
            kai,
            wen,
            kai_on_a,
            greeted,
        }
    }

    /// A bus barrier: waits until every live instance answers `/healthz` 200, i.e. a probe it
    /// published came back, so it has applied everything published before.
    pub async fn settle(&self) {
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            wait_for_health(node, StatusCode::OK, Duration::from_secs(10)).await;
        }
    }
}
