//! Servers a test owns, so it can do real faults to them without touching other tests:
//! a `redis-server` on its own port and directory, and a PostgreSQL cluster of its own.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::process::{Child, Command};

use crate::wait::wait_until;

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("courier-{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A `redis-server` of the test's own; killed when dropped.
pub struct RedisServer {
    pub port: u16,
    pub dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts Redis with AOF (`appendfsync everysec`) when `aof`, plus `extra` arguments.
    pub async fn start(aof: bool, extra: &[&str]) -> Self {
        let port = free_port();
        let dir = scratch_dir("redis");
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            dir.display().to_string(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            if aof { "yes" } else { "no" }.into(),
            "--appendfsync".into(),
            "everysec".into(),
            "--maxmemory-policy".into(),
            "noeviction".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut server = Self {
            port,
            dir,
            args,
            child: None,
        };
        server.launch().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let log = std::fs::File::create(self.dir.join("redis.log")).expect("redis log");
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server (is it installed?)");
        self.child = Some(child);
        let port = self.port;
        wait_until("redis to answer", Duration::from_secs(20), || async move {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
            let mut conn = client.get_multiplexed_async_connection().await.ok()?;
            let pong: String = redis::cmd("PING").query_async(&mut conn).await.ok()?;
            (pong == "PONG").then_some(())
        })
        .await;
    }

    /// `kill -9`: no shutdown, no final AOF flush.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().expect("kill redis");
            child.wait().await.expect("reap redis");
        }
    }

    /// Starts it again on the same port and directory (so it reloads its AOF).
    pub async fn restart(&mut self) {
        self.kill9().await;
        self.launch().await;
    }

    /// Sends a command (`FLUSHALL`, `CONFIG GET ...`) and returns the answer.
    pub async fn command(&self, args: &[&str]) -> redis::Value {
        let client = redis::Client::open(self.url()).expect("redis url");
        // FLUSHALL of a million keys takes longer than redis-rs's 500 ms default.
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(Duration::from_secs(120)));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .expect("connect to redis");
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn).await.expect("redis command")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of the test's own: `redis-server --cluster-enabled yes` nodes, each in
/// its own directory, joined by `redis-cli --cluster create`. Killed when dropped.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub port: u16,
    pub master: bool,
    pub failed: bool,
    /// Slot ranges served, inclusive (masters only).
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// `masters` masters with `replicas` replicas each; a node unreachable for
    /// `node_timeout_ms` is failed over.
    pub async fn start(masters: usize, replicas: usize, node_timeout_ms: u64) -> Self {
        let timeout = node_timeout_ms.to_string();
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            nodes.push(
                RedisServer::start(
                    false,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-node-timeout",
                        &timeout,
                        // A replica takes over however long it was cut off from its master.
                        "--cluster-replica-validity-factor",
                        "0",
                    ],
                )
                .await,
            );
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create
            .arg("--cluster-replicas")
            .arg(replicas.to_string())
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes };
        let want = cluster.nodes.len();
        wait_until(
            "every node to see the whole cluster, its slots all served",
            Duration::from_secs(60),
            || async {
                for node in &cluster.nodes {
                    let info = info_of(node.port, "CLUSTER", "INFO").await?;
                    if !info.contains("cluster_state:ok") {
                        return None;
                    }
                    let seen = parse_nodes(&info_of(node.port, "CLUSTER", "NODES").await?);
                    if seen.len() != want || seen.iter().filter(|n| n.master).count() != masters {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
        cluster
    }

    /// Every node's URL (seed nodes for Courier).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The cluster as a live node other than `except` sees it.
    pub async fn nodes_seen(&self, except: &[u16]) -> Option<Vec<ClusterNode>> {
        for node in self.nodes.iter().filter(|n| !except.contains(&n.port)) {
            if let Some(text) = info_of(node.port, "CLUSTER", "NODES").await {
                return Some(parse_nodes(&text));
            }
        }
        None
    }

    /// The port of the master serving `key`'s slot, as a live node other than
    /// `except` sees it (not failed).
    pub async fn master_of(&self, key: &str, except: &[u16]) -> Option<u16> {
        let slot = self.slot_of(key, except).await?;
        self.nodes_seen(except)
            .await?
            .into_iter()
            .find(|n| {
                n.master && !n.failed && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .map(|n| n.port)
    }

    /// The slot of `key`, as a live node other than `except` computes it.
    pub async fn slot_of(&self, key: &str, except: &[u16]) -> Option<u16> {
        for node in self.nodes.iter().filter(|n| !except.contains(&n.port)) {
            let Ok(client) = redis::Client::open(node.url()) else {
                continue;
            };
            let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                continue;
            };
            if let Ok(slot) = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query_async(&mut conn)
                .await
            {
                return Some(slot);
            }
        }
        None
    }

    /// The node on `port`.
    pub fn node_mut(&mut self, port: u16) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster")
    }
}

async fn info_of(port: u16, cmd: &str, arg: &str) -> Option<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .ok()?;
    redis::cmd(cmd).arg(arg).query_async(&mut conn).await.ok()
}

fn parse_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let addr = f.get(1)?;
            let port = addr
                .split(['@', ','])
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let flags = f.get(2)?;
            let slots = f
                .iter()
                .skip(8)
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|x| (x, x)),
                })
                .collect();
            Some(ClusterNode {
                port,
                master: flags.contains("master"),
                failed: flags.contains("fail") && !flags.contains("fail?")
                    || flags.contains("noaddr"),
                slots,
            })
        })
        .collect()
}

/// A PostgreSQL cluster of the test's own (initdb in a scratch directory, trust auth,
/// no fsync), which the test can stop and start. Stopped and removed when dropped.
pub struct PgCluster {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL tool as the `postgres` user when we are root (initdb refuses root).
async fn run_pg(bin: &Path, tool: &str, args: &[String]) {
    let program = bin.join(tool);
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.arg("-u").arg("postgres").arg("--").arg(&program);
        c
    } else {
        Command::new(&program)
    };
    // initdb and pg_ctl are chatty; their output matters only when they fail.
    let output = command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    assert!(
        output.status.success(),
        "{tool} {args:?} failed: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl PgCluster {
    pub async fn start() -> Self {
        let bin = pg_bin();
        let dir = scratch_dir("pg");
        if is_root() {
            let status = Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(&dir)
                .status()
                .await
                .expect("chown");
            assert!(status.success());
        }
        let data = dir.join("data").display().to_string();
        run_pg(
            &bin,
            "initdb",
            &[
                "-D".into(),
                data,
                "-A".into(),
                "trust".into(),
                "-U".into(),
                "postgres".into(),
                "-N".into(),
            ],
        )
        .await;
        let cluster = Self {
            port: free_port(),
            dir,
            bin,
        };
        cluster.start_again().await;
        cluster
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Starts the (stopped) cluster.
    pub async fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("pg.log").display().to_string();
        run_pg(
            &self.bin,
            "pg_ctl",
            &[
                "-D".into(),
                self.data(),
                "-o".into(),
                options,
                "-l".into(),
                log,
                "-w".into(),
                "start".into(),
            ],
        )
        .await;
    }

    /// Pauses every process of the cluster (SIGSTOP): connections hang rather than fail,
    /// as with a stalled disk or a frozen VM.
    pub async fn pause(&self) {
        self.signal_all("STOP").await;
    }

    /// Resumes a paused cluster.
    pub async fn resume(&self) {
        self.signal_all("CONT").await;
    }

    async fn signal_all(&self, signal: &str) {
        let pid_file = std::fs::read_to_string(self.dir.join("data").join("postmaster.pid"))
            .expect("postmaster.pid");
        let pid = pid_file.lines().next().expect("a pid").trim().to_owned();
        // Children first, so none of them runs on while the postmaster is held.
        let _ = Command::new("pkill")
            .arg(format!("-{signal}"))
            .arg("-P")
            .arg(&pid)
            .status()
            .await;
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(&pid)
            .status()
            .await;
    }

    /// Stops the cluster ("fast": connections are cut, as in a crash of the service).
    pub async fn stop(&self) {
        run_pg(
            &self.bin,
            "pg_ctl",
            &[
                "-D".into(),
                self.data(),
                "-m".into(),
                "fast".into(),
                "-w".into(),
                "stop".into(),
            ],
        )
        .await;
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl");
        let args = ["-D", &self.data(), "-m", "immediate", "stop"];
        let _ = if is_root() {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            std::process::Command::new(&program).args(args).output()
        };
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
