//! The Lua scripts, loaded once. Each is `lua/prelude.lua` (the score encoding and the
//! helpers every script shares), after the constants Rust owns, then the script itself.
//! `redis::Script` sends `EVALSHA` and falls back to `EVAL` when Redis does not have
//! the script (after a restart or a `SCRIPT FLUSH`).
//!
//! There are two sets, differing only in `CLUSTER`: on a Redis Cluster the scripts wake
//! idle workers by pub/sub (see `wake` in `lua/prelude.lua`).

use std::sync::LazyLock;

use redis::Script;

use crate::domain::DEFAULT_MAX_ATTEMPTS;

pub(crate) struct Scripts {
    pub enqueue: Script,
    pub fetch: Script,
    pub complete: Script,
    pub heartbeat: Script,
    pub reap: Script,
    pub requeue: Script,
    pub cancel: Script,
    pub present: Script,
    pub mirror: Script,
    pub journal_put: Script,
    pub journal_ack: Script,
    pub lock_extend: Script,
    pub lock_release: Script,
    pub marker: Script,
    pub marker_claim: Script,
    pub marker_settle: Script,
}

fn load(cluster: bool, body: &str) -> Script {
    Script::new(&format!(
        "local DEFAULT_MAX_ATTEMPTS = {DEFAULT_MAX_ATTEMPTS}\nlocal CLUSTER = {cluster}\n{}\n{body}",
        include_str!("../../lua/prelude.lua")
    ))
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts::new(false));
pub(crate) static CLUSTER_SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts::new(true));

impl Scripts {
    fn new(cluster: bool) -> Self {
        let load = |body| load(cluster, body);
        Self {
            enqueue: load(include_str!("../../lua/enqueue.lua")),
            fetch: load(include_str!("../../lua/fetch.lua")),
            complete: load(include_str!("../../lua/complete.lua")),
            heartbeat: load(include_str!("../../lua/heartbeat.lua")),
            reap: load(include_str!("../../lua/reap.lua")),
            requeue: load(include_str!("../../lua/requeue.lua")),
            cancel: load(include_str!("../../lua/cancel.lua")),
            present: load(include_str!("../../lua/present.lua")),
            mirror: load(include_str!("../../lua/mirror.lua")),
            journal_put: load(include_str!("../../lua/journal_put.lua")),
            journal_ack: load(include_str!("../../lua/journal_ack.lua")),
            lock_extend: load(include_str!("../../lua/lock_extend.lua")),
            lock_release: load(include_str!("../../lua/lock_release.lua")),
            marker: load(include_str!("../../lua/marker.lua")),
            marker_claim: load(include_str!("../../lua/marker_claim.lua")),
            marker_settle: load(include_str!("../../lua/marker_settle.lua")),
        }
    }
}
