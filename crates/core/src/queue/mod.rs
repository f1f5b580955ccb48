//! The Redis dispatch queue. Redis holds only what dispatch needs; PostgreSQL is the
//! system of record. Every multi-key change is one Lua script (`crates/core/lua/`), run
//! by exactly one function here that builds its keys and types its answer.

mod keys;
mod scripts;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use redis::{
    AsyncCommands, AsyncConnectionConfig,
    aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
};

pub use keys::{Keys, QueueKeys};
use scripts::SCRIPTS;

use crate::domain::{JobId, JobSpec, QueueName};
use crate::settings::RedisSettings;

/// A failure to talk to Redis or to read what it holds.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis answered something Courier did not write: {0}")]
    Corrupt(String),
}

/// The fencing token of one attempt. Tokens grow over time, so a newer attempt of a job
/// always has a larger token than an older one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(pub i64);

/// A job to put into Redis.
#[derive(Debug, Clone)]
pub struct Dispatch {
    pub id: JobId,
    pub queue: QueueName,
    /// The job's spec as JSON, as workers read it.
    pub payload: String,
    pub priority: u8,
    pub due: DateTime<Utc>,
    /// Attempts already made (0 for a new job).
    pub attempts: u32,
}

impl Dispatch {
    /// `spec` serialised for Redis.
    pub fn new(
        id: JobId,
        queue: QueueName,
        spec: &JobSpec,
        due: DateTime<Utc>,
        attempts: u32,
    ) -> Self {
        Self::with_payload(
            id,
            queue,
            serde_json::to_string(spec).expect("a job spec always serialises"),
            spec,
            due,
            attempts,
        )
    }

    /// With `payload`, the JSON of `spec` already made (for PostgreSQL, say).
    pub fn with_payload(
        id: JobId,
        queue: QueueName,
        payload: String,
        spec: &JobSpec,
        due: DateTime<Utc>,
        attempts: u32,
    ) -> Self {
        Self {
            id,
            queue,
            payload,
            priority: spec.priority.get(),
            due,
            attempts,
        }
    }
}

/// A job a worker now holds the lease of.
#[derive(Debug, Clone)]
pub struct Leased {
    pub id: JobId,
    pub queue: QueueName,
    pub token: Token,
    /// 1-based number of this attempt.
    pub attempt: u32,
    pub spec: JobSpec,
}

/// What one fetch found.
#[derive(Debug, Default)]
pub struct Fetched {
    pub jobs: Vec<Leased>,
    /// Leased jobs whose payload could not be read; they cannot be run.
    pub unreadable: Vec<Unreadable>,
    /// When the earliest scheduled job of the queue falls due.
    pub next_due: Option<DateTime<Utc>>,
}

/// A leased job whose payload this process cannot read.
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub id: JobId,
    pub token: Token,
    pub attempt: u32,
    pub error: String,
}

/// How an attempt ends, as far as Redis is concerned.
#[derive(Debug, Clone, Copy)]
pub enum Completion {
    /// Succeeded or dead: the job leaves Redis.
    Done,
    /// Try again at this time.
    RetryAt(DateTime<Utc>),
}

/// The outbox entry of an attempt's record: `id:token`, with a kind for records other
/// than the attempt's own end (`reaped`, `stale`).
pub fn outbox_entry(id: JobId, token: Token, kind: Option<&str>) -> String {
    match kind {
        Some(kind) => format!("{id}:{}:{kind}", token.0),
        None => format!("{id}:{}", token.0),
    }
}

/// The end of one attempt, for [`RedisQueue::complete`].
#[derive(Debug, Clone, Copy)]
pub struct Ending<'a> {
    pub id: JobId,
    pub token: Token,
    pub priority: u8,
    pub completion: Completion,
    /// The attempt's record (an `AttemptEnd` as JSON), kept in Redis until PostgreSQL has it.
    pub record: &'a str,
}

/// A job whose lease expired and was taken back.
#[derive(Debug, Clone)]
pub struct Reaped {
    pub id: JobId,
    pub token: Token,
    pub attempts: u32,
    /// Whether the lost attempt was its last.
    pub dead: bool,
}

/// Where [`RedisQueue::scan_ids`] is in a queue's sorted sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanCursor {
    set: usize,
    position: u64,
}

impl ScanCursor {
    pub const START: Self = Self {
        set: 0,
        position: 0,
    };
    const DONE: Self = Self {
        set: usize::MAX,
        position: 0,
    };

    pub fn is_done(self) -> bool {
        self == Self::DONE
    }
}

/// Why [`RedisQueue::wait_for_work`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    Work,
    NewQueue,
    TimedOut,
}

/// Where a cancelled job was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// A worker held it; the worker has been told to abort.
    Running,
    /// Queued or scheduled; it will not run.
    Waiting,
    /// Not in Redis (finished, or never dispatched).
    Absent,
}

/// Courier's queues in one Redis.
#[derive(Clone)]
pub struct RedisQueue {
    /// Multiplexed connections, used in turn: many commands share each at once, and each
    /// reconnects on its own after Redis comes back.
    conns: Arc<[ConnectionManager]>,
    next: Arc<std::sync::atomic::AtomicUsize>,
    client: redis::Client,
    keys: Keys,
    /// When this process last registered each queue in the queue set, so that
    /// enqueueing costs one round trip and a wiped set is refilled within
    /// [`REGISTER_EVERY`].
    registered: Arc<Mutex<HashMap<QueueName, Instant>>>,
}

const REGISTER_EVERY: Duration = Duration::from_secs(10);
/// Wake-up tokens a new queue leaves for idle workers (the same cap as `enqueue.lua`).
const WAKE_TOKENS: usize = 32;

impl RedisQueue {
    /// Builds the connections; they connect on first use, so a process can start while
    /// Redis is down and recover when it comes back.
    ///
    /// # Errors
    /// An unparsable Redis URL.
    pub fn new(settings: &RedisSettings) -> Result<Self, QueueError> {
        let timeout = Duration::from_millis(settings.command_timeout_ms);
        let client = redis::Client::open(settings.url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // One quick retry, then the command fails with the reason (refused, a bad
            // certificate) and the next command connects afresh: the callers retry with
            // their own backoff or report Redis as unavailable. redis-rs's default of six
            // retries held every command, `/readyz` included, for seconds.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2));
        let conns = (0..settings.pool_size.max(1))
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), config.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            conns: conns.into(),
            next: Arc::default(),
            client,
            keys: Keys::new(&settings.prefix),
            registered: Arc::default(),
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The next connection in turn (a cheap clone of a shared handle).
    async fn conn(&self) -> Result<ConnectionManager, QueueError> {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(self.conns[i % self.conns.len()].clone())
    }

    /// A connection of its own with no response timeout, for blocking commands and
    /// pub/sub: the pool's timeout would cut a blocking wait short.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn dedicated_connection(&self) -> Result<MultiplexedConnection, QueueError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(None);
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// A pub/sub connection subscribed to the cancel channel.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn subscribe_cancellations(&self) -> Result<redis::aio::PubSub, QueueError> {
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(self.keys.cancel_channel()).await?;
        Ok(pubsub)
    }

    /// # Errors
    /// Redis unreachable.
    pub async fn ping(&self) -> Result<(), QueueError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn().await?)
            .await?;
        Ok(())
    }

    /// A Redis setting, by name (`maxmemory-policy`, `appendonly`).
    ///
    /// # Errors
    /// Redis unreachable, or `CONFIG` not allowed for this user.
    pub async fn config_get(&self, name: &str) -> Result<Option<String>, QueueError> {
        let pairs: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(&mut self.conn().await?)
            .await?;
        Ok(pairs.into_iter().nth(1))
    }

    /// Logs an error when Redis could evict jobs and a warning when AOF is off (SPEC 5.7).
    /// Redis being down is not fatal: jobs wait in PostgreSQL meanwhile.
    pub async fn warn_on_unsafe_settings(&self) {
        match self.config_get("maxmemory-policy").await {
            Ok(Some(policy)) if policy != "noeviction" => tracing::error!(
                policy,
                "redis maxmemory-policy is not noeviction: queued jobs can be evicted under memory pressure"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not read redis settings at start"),
        }
        if let Ok(Some(aof)) = self.config_get("appendonly").await
            && aof != "yes"
        {
            tracing::warn!(
                "redis AOF is off: a redis crash loses recent queue changes until they are re-dispatched"
            );
        }
    }

    /// Puts jobs into their queues; jobs already present are left alone.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn enqueue<D: std::borrow::Borrow<Dispatch>>(
        &self,
        jobs: &[D],
    ) -> Result<usize, QueueError> {
        let mut by_queue: std::collections::BTreeMap<&QueueName, Vec<&Dispatch>> =
            Default::default();
        for job in jobs {
            let job = job.borrow();
            by_queue.entry(&job.queue).or_default().push(job);
        }
        let mut conn = self.conn().await?;
        let mut added = 0;
        for (queue, jobs) in by_queue {
            let k = self.keys.queue(queue);
            let mut call = SCRIPTS.enqueue.prepare_invoke();
            call.key(&k.queued)
                .key(&k.scheduled)
                .key(&k.jobs)
                .key(&k.attempts)
                .key(&k.seq)
                .key(&k.signal);
            for job in jobs {
                call.arg(job.id.to_string())
                    .arg(job.priority)
                    .arg(job.due.timestamp_millis())
                    .arg(job.attempts)
                    .arg(&job.payload);
            }
            let n: usize = call.invoke_async(&mut conn).await?;
            added += n;
            self.register(&mut conn, queue).await?;
        }
        Ok(added)
    }

    /// Adds `queue` to the queue set (at most every [`REGISTER_EVERY`] per process); a
    /// queue new to the set wakes idle workers so they start serving it at once.
    async fn register(
        &self,
        conn: &mut ConnectionManager,
        queue: &QueueName,
    ) -> Result<(), QueueError> {
        let fresh = |at: &Instant| at.elapsed() < REGISTER_EVERY;
        if self
            .registered
            .lock()
            .expect("lock poisoned")
            .get(queue)
            .is_some_and(fresh)
        {
            return Ok(());
        }
        let new: i64 = conn.sadd(self.keys.queues(), queue.as_str()).await?;
        if new == 1 {
            // One token per idle worker (up to 32), or only the first would hear of it and
            // the rest would find the queue at their next idle poll.
            let _: () = redis::pipe()
                .rpush(self.keys.queues_signal(), &["1"; WAKE_TOKENS])
                .ltrim(self.keys.queues_signal(), -(WAKE_TOKENS as isize), -1)
                .query_async(conn)
                .await?;
        }
        self.registered
            .lock()
            .expect("lock poisoned")
            .insert(queue.clone(), Instant::now());
        Ok(())
    }

    /// Every queue that has received a job.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn known_queues(&self) -> Result<Vec<QueueName>, QueueError> {
        let names: Vec<String> = self.conn().await?.smembers(self.keys.queues()).await?;
        Ok(names
            .iter()
            .filter_map(|n| QueueName::parse(n).ok())
            .collect())
    }

    /// Promotes due jobs, then leases up to `count` of the highest priority.
    ///
    /// # Errors
    /// Redis unreachable, or a payload Courier did not write.
    pub async fn fetch(
        &self,
        queue: &QueueName,
        count: usize,
        lease: Duration,
    ) -> Result<Fetched, QueueError> {
        let k = self.keys.queue(queue);
        let reply: Vec<String> = SCRIPTS
            .fetch
            .key(&k.queued)
            .key(&k.scheduled)
            .key(&k.running)
            .key(&k.jobs)
            .key(&k.attempts)
            .key(&k.leases)
            .key(&k.seq)
            .arg(count)
            .arg(lease.as_millis() as u64)
            .invoke_async(&mut self.conn().await?)
            .await?;
        let mut reply = reply.into_iter();
        let next_due = reply
            .next()
            .and_then(|ms| ms.parse::<i64>().ok())
            .filter(|ms| *ms >= 0)
            .and_then(DateTime::from_timestamp_millis);
        let rest: Vec<String> = reply.collect();
        let mut fetched = Fetched {
            next_due,
            ..Default::default()
        };
        for c in rest.chunks_exact(4) {
            let id = parse_id(&c[0])?;
            let token = parse_token(&c[1])?;
            let attempt = c[2]
                .parse()
                .map_err(|_| QueueError::Corrupt(format!("attempt {:?}", c[2])))?;
            // One payload this worker cannot read (a newer API, say) must not strand the
            // other jobs leased in the same round trip.
            match serde_json::from_str(&c[3]) {
                Ok(spec) => fetched.jobs.push(Leased {
                    id,
                    queue: queue.clone(),
                    token,
                    attempt,
                    spec,
                }),
                Err(e) => fetched.unreadable.push(Unreadable {
                    id,
                    token,
                    attempt,
                    error: e.to_string(),
                }),
            }
        }
        Ok(fetched)
    }

    /// Blocks until some queue of `queues` signals new work, a new queue appears, or
    /// `timeout` passes, on a connection from [`Self::dedicated_connection`].
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn wait_for_work(
        &self,
        conn: &mut MultiplexedConnection,
        queues: &[QueueName],
        timeout: Duration,
    ) -> Result<Wake, QueueError> {
        let mut keys: Vec<String> = queues.iter().map(|q| self.keys.queue(q).signal).collect();
        keys.push(self.keys.queues_signal());
        let secs = timeout.as_secs_f64().max(0.001);
        let popped: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(&keys)
            .arg(secs)
            .query_async(conn)
            .await?;
        Ok(match popped {
            None => Wake::TimedOut,
            Some((key, _)) if key == self.keys.queues_signal() => Wake::NewQueue,
            Some(_) => Wake::Work,
        })
    }

    /// Ends attempts. Returns, per attempt, whether it still held its lease; a `false`
    /// result must not change the job.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn complete(
        &self,
        queue: &QueueName,
        items: &[Ending<'_>],
    ) -> Result<Vec<bool>, QueueError> {
        let k = self.keys.queue(queue);
        let mut call = SCRIPTS.complete.prepare_invoke();
        call.key(&k.running)
            .key(&k.scheduled)
            .key(&k.queued)
            .key(&k.jobs)
            .key(&k.attempts)
            .key(&k.leases)
            .key(&k.seq)
            .key(&k.signal)
            .key(&k.outbox)
            .key(&k.outbox_at);
        for item in items {
            let at = match item.completion {
                Completion::Done => "-".to_string(),
                Completion::RetryAt(at) => at.timestamp_millis().to_string(),
            };
            call.arg(item.id.to_string())
                .arg(item.token.0)
                .arg(at)
                .arg(item.priority)
                .arg(item.record);
        }
        let applied: Vec<i64> = call.invoke_async(&mut self.conn().await?).await?;
        Ok(applied.into_iter().map(|a| a == 1).collect())
    }

    /// Keeps each `(entry, record)` in the outbox until PostgreSQL has it.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn outbox_put(
        &self,
        queue: &QueueName,
        records: &[(String, String)],
    ) -> Result<(), QueueError> {
        if records.is_empty() {
            return Ok(());
        }
        let k = self.keys.queue(queue);
        let mut call = SCRIPTS.outbox_put.prepare_invoke();
        call.key(&k.outbox).key(&k.outbox_at);
        for (entry, record) in records {
            call.arg(entry).arg(record);
        }
        let _: i64 = call.invoke_async(&mut self.conn().await?).await?;
        Ok(())
    }

    /// Drops outbox entries whose records PostgreSQL now holds.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn ack(&self, queue: &QueueName, entries: &[String]) -> Result<(), QueueError> {
        if entries.is_empty() {
            return Ok(());
        }
        let k = self.keys.queue(queue);
        let mut call = SCRIPTS.ack.prepare_invoke();
        call.key(&k.outbox).key(&k.outbox_at);
        for entry in entries {
            call.arg(entry);
        }
        let _: i64 = call.invoke_async(&mut self.conn().await?).await?;
        Ok(())
    }

    /// Outbox entries written more than `age` ago (no worker acknowledged them), oldest
    /// first: `(entry, record)`.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn outbox_older_than(
        &self,
        queue: &QueueName,
        age: Duration,
        limit: usize,
    ) -> Result<Vec<(String, String)>, QueueError> {
        let k = self.keys.queue(queue);
        let before = chrono::Utc::now().timestamp_millis() - age.as_millis() as i64;
        let mut conn = self.conn().await?;
        let entries: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&k.outbox_at)
            .arg("-inf")
            .arg(before)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        if entries.is_empty() {
            return Ok(vec![]);
        }
        let records: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&k.outbox)
            .arg(&entries)
            .query_async(&mut conn)
            .await?;
        let mut found = Vec::new();
        let mut dangling = Vec::new();
        for (entry, record) in entries.into_iter().zip(records) {
            match record {
                Some(record) => found.push((entry, record)),
                // Acknowledged between the two reads.
                None => dangling.push(entry),
            }
        }
        self.ack(queue, &dangling).await?;
        Ok(found)
    }

    /// Extends the leases of `items`; returns the ids whose lease is gone.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn heartbeat(
        &self,
        queue: &QueueName,
        lease: Duration,
        items: &[(JobId, Token)],
    ) -> Result<Vec<JobId>, QueueError> {
        let k = self.keys.queue(queue);
        let mut call = SCRIPTS.heartbeat.prepare_invoke();
        call.key(&k.running)
            .key(&k.leases)
            .arg(lease.as_millis() as u64);
        for (id, token) in items {
            call.arg(id.to_string()).arg(token.0);
        }
        let lost: Vec<String> = call.invoke_async(&mut self.conn().await?).await?;
        lost.iter().map(|id| parse_id(id)).collect()
    }

    /// Takes back up to `max` jobs whose lease expired.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn reap(&self, queue: &QueueName, max: usize) -> Result<Vec<Reaped>, QueueError> {
        let k = self.keys.queue(queue);
        let reply: Vec<String> = SCRIPTS
            .reap
            .key(&k.running)
            .key(&k.queued)
            .key(&k.jobs)
            .key(&k.attempts)
            .key(&k.leases)
            .key(&k.seq)
            .key(&k.signal)
            .arg(max)
            .invoke_async(&mut self.conn().await?)
            .await?;
        reply
            .chunks_exact(4)
            .map(|c| {
                Ok(Reaped {
                    id: parse_id(&c[0])?,
                    token: parse_token(&c[1])?,
                    attempts: c[2]
                        .parse()
                        .map_err(|_| QueueError::Corrupt(format!("attempts {:?}", c[2])))?,
                    dead: c[3] == "dead",
                })
            })
            .collect()
    }

    /// Hands leased jobs back without using up their attempt.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn requeue(
        &self,
        queue: &QueueName,
        items: &[(JobId, Token, u8)],
    ) -> Result<Vec<bool>, QueueError> {
        let k = self.keys.queue(queue);
        let mut call = SCRIPTS.requeue.prepare_invoke();
        call.key(&k.running)
            .key(&k.queued)
            .key(&k.attempts)
            .key(&k.leases)
            .key(&k.seq)
            .key(&k.signal);
        for (id, token, priority) in items {
            call.arg(id.to_string()).arg(token.0).arg(*priority);
        }
        let applied: Vec<i64> = call.invoke_async(&mut self.conn().await?).await?;
        Ok(applied.into_iter().map(|a| a == 1).collect())
    }

    /// Which of `ids` Redis holds, in order.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn present(&self, queue: &QueueName, ids: &[JobId]) -> Result<Vec<bool>, QueueError> {
        let k = self.keys.queue(queue);
        let mut call = SCRIPTS.present.prepare_invoke();
        call.key(&k.jobs);
        for id in ids {
            call.arg(id.to_string());
        }
        let found: Vec<i64> = call.invoke_async(&mut self.conn().await?).await?;
        Ok(found.into_iter().map(|f| f == 1).collect())
    }

    /// One page of the job ids in a queue's sorted sets (queued, scheduled and running),
    /// for `ZSCAN`-style iteration: pass the returned cursor back until it is 0. `set` is
    /// 0, 1 or 2 for queued, scheduled, running; the cursor moves through all three.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn scan_ids(
        &self,
        queue: &QueueName,
        cursor: ScanCursor,
    ) -> Result<(ScanCursor, Vec<JobId>), QueueError> {
        let k = self.keys.queue(queue);
        let sets = [&k.queued, &k.scheduled, &k.running];
        let Some(key) = sets.get(cursor.set) else {
            return Ok((ScanCursor::DONE, vec![]));
        };
        let (next, members): (u64, Vec<String>) = redis::cmd("ZSCAN")
            .arg(*key)
            .arg(cursor.position)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut self.conn().await?)
            .await?;
        // ZSCAN answers member, score, member, score...
        let ids = members
            .iter()
            .step_by(2)
            .filter_map(|m| JobId::parse(m).ok())
            .collect();
        let next = if next == 0 {
            ScanCursor {
                set: cursor.set + 1,
                position: 0,
            }
        } else {
            ScanCursor {
                set: cursor.set,
                position: next,
            }
        };
        Ok((
            if next.set >= sets.len() {
                ScanCursor::DONE
            } else {
                next
            },
            ids,
        ))
    }

    /// The Redis server's `run_id`, which changes whenever Redis restarts.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn run_id(&self) -> Result<String, QueueError> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut self.conn().await?)
            .await?;
        info.lines()
            .find_map(|line| line.strip_prefix("run_id:"))
            .map(|id| id.trim().to_owned())
            .ok_or_else(|| QueueError::Corrupt("INFO server has no run_id".into()))
    }

    /// The `run_id` recorded by the last reconciliation, if Redis still has it.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn marker(&self) -> Result<Option<String>, QueueError> {
        Ok(self.conn().await?.get(self.keys.marker()).await?)
    }

    /// Records that PostgreSQL and Redis were reconciled under `run_id`.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn set_marker(&self, run_id: &str) -> Result<(), QueueError> {
        let _: () = self.conn().await?.set(self.keys.marker(), run_id).await?;
        Ok(())
    }

    /// Takes the reconcile lock for `ttl` if nobody holds it; returns the token to unlock with.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn try_lock_reconcile(&self, ttl: Duration) -> Result<Option<String>, QueueError> {
        let token = uuid::Uuid::new_v4().to_string();
        let taken: Option<String> = redis::cmd("SET")
            .arg(self.keys.reconcile_lock())
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut self.conn().await?)
            .await?;
        Ok(taken.map(|_| token))
    }

    /// Extends the reconcile lock to `ttl` from now if `token` still holds it; `false`
    /// when it no longer does.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn extend_reconcile_lock(
        &self,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, QueueError> {
        let extend = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0",
        );
        let extended: i64 = extend
            .key(self.keys.reconcile_lock())
            .arg(token)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut self.conn().await?)
            .await?;
        Ok(extended == 1)
    }

    /// Releases the reconcile lock if `token` still holds it.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn unlock_reconcile(&self, token: &str) -> Result<(), QueueError> {
        let release = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        );
        let _: i64 = release
            .key(self.keys.reconcile_lock())
            .arg(token)
            .invoke_async(&mut self.conn().await?)
            .await?;
        Ok(())
    }

    /// Forgets which queues this process registered, so the next enqueue registers
    /// them again (after Redis lost its queue set).
    pub fn forget_registrations(&self) {
        self.registered.lock().expect("lock poisoned").clear();
    }

    /// Removes a job from its queue; a running one is announced on the cancel channel.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn cancel(&self, queue: &QueueName, id: JobId) -> Result<Cancelled, QueueError> {
        let k = self.keys.queue(queue);
        let where_: String = SCRIPTS
            .cancel
            .key(&k.queued)
            .key(&k.scheduled)
            .key(&k.running)
            .key(&k.jobs)
            .key(&k.attempts)
            .key(&k.leases)
            .arg(id.to_string())
            .arg(self.keys.cancel_channel())
            .invoke_async(&mut self.conn().await?)
            .await?;
        Ok(match where_.as_str() {
            "running" => Cancelled::Running,
            "waiting" => Cancelled::Waiting,
            _ => Cancelled::Absent,
        })
    }
}

fn parse_id(s: &str) -> Result<JobId, QueueError> {
    JobId::parse(s).map_err(|_| QueueError::Corrupt(format!("job id {s:?}")))
}

fn parse_token(s: &str) -> Result<Token, QueueError> {
    s.parse()
        .map(Token)
        .map_err(|_| QueueError::Corrupt(format!("token {s:?}")))
}
