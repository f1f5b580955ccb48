//! Courier's binaries as real child processes, for tests that kill, scale or read the
//! logs of whole processes.

use std::{path::PathBuf, process::Stdio};

use tokio::process::{Child, Command};

/// The path of a workspace binary (`courier-api`, `courier-worker`), built next to the
/// test executables (`scripts/test.sh` builds them before the tests).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    // A test runs from target/<profile>/deps/, a binary (the chaos harness) from
    // target/<profile>/: the workspace's binaries are in the latter.
    let mut dir = exe.parent().expect("executable dir");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target dir");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace's binaries first (`cargo build --workspace --bins`; `cargo build -p courier-cli` for `courier`)",
        path.display()
    );
    path
}

/// A child process that is killed when dropped, with its output captured to a file.
pub struct ChildProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl ChildProcess {
    /// Starts `name` with `args` and `env`, writing stdout and stderr to a log file.
    pub fn spawn(name: &str, args: &[&str], env: &[(String, String)]) -> Self {
        let log =
            std::env::temp_dir().join(format!("{name}-{}.log", uuid::Uuid::new_v4().simple()));
        let file = std::fs::File::create(&log).expect("create log file");
        let child = Command::new(binary(name))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log file"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        Self { child, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("process is running") as i32
    }

    /// Sends a signal (`TERM`, `KILL`, `STOP`, `CONT`) with kill(1).
    pub async fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .await
            .expect("kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().await.expect("wait for child")
    }

    /// Everything the process has written so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl ChildProcess {
    /// Starts a `courier-worker` with `env` and waits for its start-up line.
    pub async fn start_worker(env: &[(String, String)]) -> Self {
        let worker = Self::spawn("courier-worker", &[], env);
        crate::wait_until(
            "the worker to start",
            std::time::Duration::from_secs(20),
            || async {
                worker
                    .output()
                    .contains("courier-worker started")
                    .then_some(())
            },
        )
        .await;
        worker
    }

    /// For a `courier-api` started with port 0 and JSON logs: the port it listens on.
    pub async fn api_port(&self) -> u16 {
        crate::wait_until(
            "the api to listen",
            std::time::Duration::from_secs(20),
            || async {
                self.output().lines().find_map(|line| {
                    let line: serde_json::Value = serde_json::from_str(line).ok()?;
                    (line["message"] == "courier-api listening")
                        .then(|| line["port"].as_u64())?
                        .map(|p| p as u16)
                })
            },
        )
        .await
    }
}
