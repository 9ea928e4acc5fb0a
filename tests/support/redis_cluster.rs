//! A Redis Cluster for the cluster suite: the one the test script started
//! ([`SHARED_VAR`], each test on a prefix of its own), or one a test starts for itself
//! ([`RedisCluster::start`]: three masters with a replica each, on ephemeral loopback ports),
//! which it may reshard or break ([`RedisCluster::move_slot`], [`RedisCluster::kill`]).
//!
//! Needs Redis 7 (`redis-server`, `redis-cli`: Debian's `redis-server` package).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::time::sleep;

use super::cluster::Redis;
use super::{POLL, WAIT, free_port};

/// The variable naming the test script's cluster: `redis+cluster://127.0.0.1:P1,...`. With it,
/// [`Cluster::start`](super::cluster::Cluster::start) runs every test over that cluster.
pub const SHARED_VAR: &str = "TEST_REDIS_CLUSTER";

/// The test script's cluster, if it gave one.
pub fn shared() -> Option<String> {
    std::env::var(SHARED_VAR).ok().filter(|url| !url.is_empty())
}

/// Whether the test is left out of the pass over the shared cluster: it starts a Redis Cluster
/// of its own and breaks it, so it ran in full in the pass before, and once is enough. Says so
/// when it is left out. (A test that needs a `redis-server` of its own, to kill it, count its
/// commands or put a proxy in front of it, starts one:
/// [`Cluster::start_own`](super::cluster::Cluster::start_own).)
pub fn ran_in_the_first_pass(test: &str, why: &str) -> bool {
    let skip = shared().is_some();
    if skip {
        eprintln!("{test}: not run again over the shared Redis Cluster: {why}");
    }
    skip
}

/// Six `redis-server` children in cluster mode (three masters, a replica each), killed on drop.
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts the six servers with a short node timeout (a dead master's replica takes over
    /// within seconds), joins them with `redis-cli --cluster create`, and waits until every
    /// node says `cluster_state:ok`.
    pub async fn start() -> RedisCluster {
        let dir = std::env::temp_dir().join(format!(
            "sb-redis-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("a directory for the nodes' files");
        let mut nodes = Vec::new();
        while nodes.len() < 6 {
            let port = free_port();
            let config = dir.join(format!("nodes-{port}.conf"));
            // The cluster bus port too: by default the port + 10000, which may be taken or
            // past 65535.
            let bus = free_port().to_string();
            let flags = [
                "--cluster-port",
                &bus,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                config.to_str().expect("a UTF-8 path"),
                "--cluster-node-timeout",
                "1000",
                // A replica that never synced cannot take over: sync at once, not after 5 s.
                "--repl-diskless-sync-delay",
                "0",
            ];
            if let Ok(node) = Redis::start_with(port, &flags).await {
                nodes.push(node);
            }
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli (Debian: apt-get install -y redis-server)");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = RedisCluster { nodes, dir };
        cluster.wait_until_ok().await;
        cluster
    }

    /// `redis+cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .filter(|node| node.is_running())
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// Waits until every live node says `cluster_state:ok`, and every replica has synced with
    /// its master (so that it can take over).
    pub async fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut ok = true;
            for node in self.nodes.iter().filter(|node| node.is_running()) {
                let info: String = node.command(redis::cmd("CLUSTER").arg("INFO")).await;
                ok &= info.lines().any(|line| line.trim() == "cluster_state:ok");
                let replication: String = node.command(redis::cmd("INFO").arg("replication")).await;
                let replica = replication.lines().any(|line| line.trim() == "role:slave");
                ok &= !replica
                    || replication
                        .lines()
                        .any(|line| line.trim() == "master_link_status:up");
            }
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the Redis Cluster never got ok");
            sleep(POLL).await;
        }
    }

    /// A live node.
    fn any(&self) -> &Redis {
        self.nodes
            .iter()
            .find(|node| node.is_running())
            .expect("a live node")
    }

    /// The slot of `key`.
    pub async fn slot(&self, key: &str) -> u16 {
        self.any()
            .command(redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
            .await
    }

    /// The node (index in `nodes`) that is master of the slot of `key`, as a live node sees it.
    pub async fn owner(&self, key: &str) -> usize {
        let slot = self.slot(key).await;
        let asked = self.any();
        let slots: redis::Value = asked.command(redis::cmd("CLUSTER").arg("SLOTS")).await;
        let redis::Value::Array(ranges) = slots else {
            panic!("CLUSTER SLOTS: {slots:?}")
        };
        for range in ranges {
            let (start, end, master): (u16, u16, (String, u16)) = match range {
                redis::Value::Array(parts) => (
                    redis::from_redis_value(parts[0].clone()).unwrap(),
                    redis::from_redis_value(parts[1].clone()).unwrap(),
                    {
                        let redis::Value::Array(node) = &parts[2] else {
                            panic!("a node in CLUSTER SLOTS")
                        };
                        (
                            redis::from_redis_value(node[0].clone()).unwrap(),
                            redis::from_redis_value(node[1].clone()).unwrap(),
                        )
                    },
                ),
                other => panic!("CLUSTER SLOTS range: {other:?}"),
            };
            if (start..=end).contains(&slot) {
                return self.index_of(master.1);
            }
        }
        panic!("nobody owns slot {slot}");
    }

    fn index_of(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|node| node.port == port)
            .expect("a node of this cluster")
    }

    /// Another live master than `node`.
    pub async fn other_master(&self, node: usize) -> usize {
        for (i, candidate) in self.nodes.iter().enumerate() {
            if i == node || !candidate.is_running() {
                continue;
            }
            let role: Vec<redis::Value> = candidate.command(&redis::cmd("ROLE")).await;
            if redis::from_redis_value::<String>(role[0].clone()).unwrap() == "master" {
                return i;
            }
        }
        panic!("no other master");
    }

    async fn node_id(&self, node: usize) -> String {
        self.nodes[node]
            .command(redis::cmd("CLUSTER").arg("MYID"))
            .await
    }

    /// Resharding: moves the slot of `key`, with its keys, from master `from` to master `to`,
    /// as `redis-cli --cluster reshard` does (IMPORTING, MIGRATING, MIGRATE, then the new owner
    /// everywhere). Returns once every node agrees.
    pub async fn move_slot(&self, key: &str, from: usize, to: usize) {
        let slot = self.slot(key).await;
        let (source, target) = (self.node_id(from).await, self.node_id(to).await);
        let setslot = |state: &str, node: &str| {
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("SETSLOT").arg(slot).arg(state).arg(node);
            cmd
        };
        let _: () = self.nodes[to].command(&setslot("IMPORTING", &source)).await;
        let _: () = self.nodes[from]
            .command(&setslot("MIGRATING", &target))
            .await;
        loop {
            let keys: Vec<String> = self.nodes[from]
                .command(
                    redis::cmd("CLUSTER")
                        .arg("GETKEYSINSLOT")
                        .arg(slot)
                        .arg(100),
                )
                .await;
            if keys.is_empty() {
                break;
            }
            let mut migrate = redis::cmd("MIGRATE");
            migrate
                .arg("127.0.0.1")
                .arg(self.nodes[to].port)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("REPLACE")
                .arg("KEYS")
                .arg(&keys);
            let _: () = self.nodes[from].command(&migrate).await;
        }
        let _: () = self.nodes[to].command(&setslot("NODE", &target)).await;
        let _: () = self.nodes[from].command(&setslot("NODE", &target)).await;
        for node in self.nodes.iter().filter(|node| node.is_running()) {
            let _: redis::RedisResult<()> = node.try_command(&setslot("NODE", &target)).await;
        }
        let deadline = Instant::now() + WAIT;
        while self.owner(key).await != to {
            assert!(Instant::now() < deadline, "the slot did not move");
            sleep(POLL).await;
        }
    }

    /// SIGKILL node `node` (its replica takes over after the node timeout).
    pub fn kill(&mut self, node: usize) {
        self.nodes[node].kill();
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
