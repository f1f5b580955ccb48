//! The Lua scripts, loaded once. `redis::Script` sends `EVALSHA` and falls back to
//! `EVAL` when Redis does not have the script (after a restart or a `SCRIPT FLUSH`).

use std::sync::LazyLock;

use redis::Script;

pub(crate) struct Scripts {
    pub enqueue: Script,
    pub fetch: Script,
    pub complete: Script,
    pub heartbeat: Script,
    pub reap: Script,
    pub requeue: Script,
    pub cancel: Script,
    pub present: Script,
    pub ack: Script,
    pub outbox_put: Script,
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: Script::new(include_str!("../../lua/enqueue.lua")),
    fetch: Script::new(include_str!("../../lua/fetch.lua")),
    complete: Script::new(include_str!("../../lua/complete.lua")),
    heartbeat: Script::new(include_str!("../../lua/heartbeat.lua")),
    reap: Script::new(include_str!("../../lua/reap.lua")),
    requeue: Script::new(include_str!("../../lua/requeue.lua")),
    cancel: Script::new(include_str!("../../lua/cancel.lua")),
    present: Script::new(include_str!("../../lua/present.lua")),
    ack: Script::new(include_str!("../../lua/ack.lua")),
    outbox_put: Script::new(include_str!("../../lua/outbox_put.lua")),
});
