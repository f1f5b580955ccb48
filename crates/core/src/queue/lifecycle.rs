//! A job's way through Redis: enqueued (queued or scheduled), fetched under a lease,
//! ended (gone, or back for a retry), reaped when its worker dies, handed back at
//! shutdown, or cancelled.

use std::{collections::BTreeMap, time::Duration, time::Instant};

use chrono::DateTime;
use futures_util::StreamExt;
use redis::AsyncCommands;

use super::{
    QueueError, QueueKeys, REGISTER_EVERY, RedisQueue,
    connection::{PUBSUB_SETUP, Waiter, WaiterInner, timed_out},
    parse_count, parse_id, parse_token,
    types::{Cancelled, Dispatch, Ending, Fetched, Leased, Reaped, Token, Unreadable, Wake},
};
use crate::domain::{JobId, QueueName};

/// Wake-up tokens a new queue leaves for idle workers (the cap of `prelude.lua`'s `wake`).
const WAKE_TOKENS: usize = 32;

impl RedisQueue {
    /// Puts jobs into their queues; jobs already present are left alone.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn enqueue<D: std::borrow::Borrow<Dispatch>>(
        &self,
        jobs: &[D],
    ) -> Result<usize, QueueError> {
        let mut by_queue: BTreeMap<&QueueName, Vec<&Dispatch>> = BTreeMap::new();
        for job in jobs {
            let job = job.borrow();
            by_queue.entry(&job.queue).or_default().push(job);
        }
        let mut conn = self.conn();
        let mut added = 0;
        for (queue, jobs) in by_queue {
            let k = self.keys.queue(queue);
            let mut call = self.scripts().enqueue.prepare_invoke();
            call.key(&k.queued)
                .key(&k.scheduled)
                .key(&k.jobs)
                .key(&k.attempts)
                .key(&k.seq)
                .key(&k.signal)
                .key(&k.keyof);
            for job in jobs {
                call.arg(job.id.to_string())
                    .arg(job.priority)
                    .arg(job.due.timestamp_millis())
                    .arg(job.attempts)
                    .arg(job.flow_key.as_ref().map_or("", |k| k.as_str()))
                    .arg(&job.payload);
            }
            let n: usize = call.invoke_async(&mut conn).await?;
            added += n;
            self.register(queue).await?;
        }
        Ok(added)
    }

    /// Adds `queue` to the queue set (at most every [`REGISTER_EVERY`] per process); a
    /// queue new to the set wakes idle workers so they start serving it at once.
    async fn register(&self, queue: &QueueName) -> Result<(), QueueError> {
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
        let mut conn = self.conn();
        let new: i64 = conn.sadd(self.keys.queues(), queue.as_str()).await?;
        if new == 1 && self.is_cluster() {
            // Workers on a Cluster listen for new queues on pub/sub (see `Waiter`).
            let _: i64 = conn.publish(self.keys.queues_signal(), "1").await?;
        } else if new == 1 {
            // One token per idle worker (up to 32), or only the first would hear of it and
            // the rest would find the queue at their next idle poll.
            let _: () = redis::pipe()
                .rpush(self.keys.queues_signal(), &["1"; WAKE_TOKENS])
                .ltrim(self.keys.queues_signal(), -(WAKE_TOKENS as isize), -1)
                .query_async(&mut conn)
                .await?;
        }
        self.registered
            .lock()
            .expect("lock poisoned")
            .insert(queue.clone(), Instant::now());
        Ok(())
    }

    /// Puts back into the queue set those of `queues` it lacks, and wakes idle workers
    /// when there were any; returns how many. On a Redis Cluster the set lives on one
    /// master: when that master loses its data, the queues of the other masters would
    /// otherwise stay unknown to workers until each gets a new job.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn ensure_registered(&self, queues: &[QueueName]) -> Result<usize, QueueError> {
        if queues.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn();
        let names: Vec<&str> = queues.iter().map(QueueName::as_str).collect();
        let added: usize = conn.sadd(self.keys.queues(), names).await?;
        if added > 0 && self.is_cluster() {
            let _: i64 = conn.publish(self.keys.queues_signal(), "1").await?;
        }
        Ok(added)
    }

    /// Forgets which queues this process registered and mirrored, so the next enqueue
    /// registers and mirrors them again (after Redis lost its data).
    pub fn forget_registrations(&self) {
        self.registered.lock().expect("lock poisoned").clear();
        self.mirrored.lock().expect("lock poisoned").clear();
    }

    /// Whether this process has mirrored `queue`'s flow control since Redis last lost
    /// its data (as far as it knows).
    pub fn is_mirrored(&self, queue: &QueueName) -> bool {
        self.mirrored.lock().expect("lock poisoned").contains(queue)
    }

    /// Every queue that has received a job.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn known_queues(&self) -> Result<Vec<QueueName>, QueueError> {
        let names: Vec<String> = self.conn().smembers(self.keys.queues()).await?;
        Ok(names
            .iter()
            .filter_map(|n| QueueName::parse(n).ok())
            .collect())
    }

    /// Promotes due jobs, then leases up to `count` of the highest priority that the
    /// queue's and their flow keys' limits allow; jobs over a key's limit are set aside
    /// in the key's own wait, keeping their places.
    ///
    /// # Errors
    /// Redis unreachable, or a reply Courier did not write.
    pub async fn fetch(
        &self,
        queue: &QueueName,
        count: usize,
        lease: Duration,
    ) -> Result<Fetched, QueueError> {
        let k = self.keys.queue(queue);
        let reply: Vec<String> = self
            .scripts()
            .fetch
            .key(&k.queued)
            .key(&k.scheduled)
            .key(&k.running)
            .key(&k.jobs)
            .key(&k.attempts)
            .key(&k.leases)
            .key(&k.seq)
            .key(&k.settings)
            .key(&k.flow_limits)
            .key(&k.keyof)
            .key(&k.buckets)
            .key(&k.key_inflight)
            .key(&k.key_blocked)
            .key(&k.key_pause)
            .key(&k.key_wait)
            .key(&k.signal)
            .arg(count)
            .arg(lease.as_millis() as u64)
            .invoke_async(&mut self.conn())
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
            let attempt = parse_count("attempt", &c[2])?;
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

    /// Waits until some queue of `queues` signals new work, a new queue appears, or
    /// `timeout` passes, on a [`Waiter`] of [`Self::waiter`].
    ///
    /// # Errors
    /// Redis unreachable (make a new waiter then).
    pub async fn wait_for_work(
        &self,
        waiter: &mut Waiter,
        queues: &[QueueName],
        timeout: Duration,
    ) -> Result<Wake, QueueError> {
        let Waiter(inner) = waiter;
        match inner {
            WaiterInner::Blocking(conn) => {
                let mut keys: Vec<String> =
                    queues.iter().map(|q| self.keys.queue(q).signal).collect();
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
            WaiterInner::Listening {
                pubsub,
                channels,
                fresh,
            } => {
                // Queues and work announced before the subscriptions were missed: look
                // again at the queue set, and at the queues, before waiting.
                let mut added = std::mem::take(fresh);
                for queue in queues {
                    let channel = self.keys.queue(queue).signal;
                    if !channels.contains(&channel) {
                        tokio::time::timeout(PUBSUB_SETUP, pubsub.subscribe(&channel))
                            .await
                            .map_err(|_| timed_out("subscribing to a queue's channel"))??;
                        channels.insert(channel);
                        added = true;
                    }
                }
                if added {
                    return Ok(Wake::NewQueue);
                }
                match tokio::time::timeout(timeout, pubsub.on_message().next()).await {
                    Err(_) => Ok(Wake::TimedOut),
                    Ok(None) => Err(QueueError::Redis(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "the pub/sub connection closed",
                    )))),
                    Ok(Some(msg)) if msg.get_channel_name() == self.keys.queues_signal() => {
                        Ok(Wake::NewQueue)
                    }
                    Ok(Some(_)) => Ok(Wake::Work),
                }
            }
        }
    }

    /// Ends attempts. Returns, per attempt, whether it still held its lease; a `false`
    /// result must not change the job.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn complete<E: std::borrow::Borrow<Ending>>(
        &self,
        queue: &QueueName,
        items: &[E],
    ) -> Result<Vec<bool>, QueueError> {
        let k = self.keys.queue(queue);
        let mut call = self.scripts().complete.prepare_invoke();
        call.key(&k.running)
            .key(&k.scheduled)
            .key(&k.queued)
            .key(&k.jobs)
            .key(&k.attempts)
            .key(&k.leases)
            .key(&k.seq)
            .key(&k.signal)
            .key(&k.journal)
            .key(&k.journal_at);
        flow_keys(&mut call, &k);
        for item in items {
            let item = item.borrow();
            let at = item
                .retry_at
                .map_or_else(|| "-".to_string(), |at| at.timestamp_millis().to_string());
            let pause = item
                .key_pause_until
                .map_or(String::new(), |at| at.timestamp_millis().to_string());
            call.arg(item.id.to_string())
                .arg(item.token.0)
                .arg(at)
                .arg(item.priority)
                .arg(pause)
                .arg(&item.record);
        }
        let applied: Vec<i64> = call.invoke_async(&mut self.conn()).await?;
        Ok(applied.into_iter().map(|a| a == 1).collect())
    }

    /// The fencing token of the attempt holding `id`'s lease, if one does.
    ///
    /// # Errors
    /// Redis unreachable, or a token Courier did not write.
    pub async fn lease_of(
        &self,
        queue: &QueueName,
        id: JobId,
    ) -> Result<Option<Token>, QueueError> {
        let k = self.keys.queue(queue);
        let token: Option<String> = self.conn().hget(&k.leases, id.to_string()).await?;
        token.as_deref().map(parse_token).transpose()
    }

    /// Extends the leases of `items`; returns those whose lease is gone.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn heartbeat(
        &self,
        queue: &QueueName,
        lease: Duration,
        items: &[(JobId, Token)],
    ) -> Result<Vec<(JobId, Token)>, QueueError> {
        let k = self.keys.queue(queue);
        let mut call = self.scripts().heartbeat.prepare_invoke();
        call.key(&k.running)
            .key(&k.leases)
            .arg(lease.as_millis() as u64);
        for (id, token) in items {
            call.arg(id.to_string()).arg(token.0);
        }
        let lost: Vec<String> = call.invoke_async(&mut self.conn()).await?;
        lost.chunks_exact(2)
            .map(|c| Ok((parse_id(&c[0])?, parse_token(&c[1])?)))
            .collect()
    }

    /// Takes back up to `max` jobs whose lease expired.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn reap(&self, queue: &QueueName, max: usize) -> Result<Vec<Reaped>, QueueError> {
        let k = self.keys.queue(queue);
        let mut call = self.scripts().reap.prepare_invoke();
        call.key(&k.running)
            .key(&k.queued)
            .key(&k.jobs)
            .key(&k.attempts)
            .key(&k.leases)
            .key(&k.seq)
            .key(&k.signal);
        flow_keys(&mut call, &k);
        let reply: Vec<String> = call.arg(max).invoke_async(&mut self.conn()).await?;
        reply
            .chunks_exact(4)
            .map(|c| {
                Ok(Reaped {
                    id: parse_id(&c[0])?,
                    token: parse_token(&c[1])?,
                    attempts: parse_count("attempts", &c[2])?,
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
        let mut call = self.scripts().requeue.prepare_invoke();
        call.key(&k.running)
            .key(&k.queued)
            .key(&k.attempts)
            .key(&k.leases)
            .key(&k.seq)
            .key(&k.signal);
        flow_keys(&mut call, &k);
        for (id, token, priority) in items {
            call.arg(id.to_string()).arg(token.0).arg(*priority);
        }
        let applied: Vec<i64> = call.invoke_async(&mut self.conn()).await?;
        Ok(applied.into_iter().map(|a| a == 1).collect())
    }

    /// Takes a job out of Redis wherever it is; a running call is told to abort.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn cancel(&self, queue: &QueueName, id: JobId) -> Result<Cancelled, QueueError> {
        Ok(self
            .cancel_many(queue, &[id])
            .await?
            .pop()
            .unwrap_or(Cancelled::Absent))
    }

    /// Takes jobs of one queue out of Redis in one script call: where each one was.
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn cancel_many(
        &self,
        queue: &QueueName,
        ids: &[JobId],
    ) -> Result<Vec<Cancelled>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let k = self.keys.queue(queue);
        let mut call = self.scripts().cancel.prepare_invoke();
        call.key(&k.queued)
            .key(&k.scheduled)
            .key(&k.running)
            .key(&k.jobs)
            .key(&k.attempts)
            .key(&k.leases)
            .key(&k.signal);
        flow_keys(&mut call, &k);
        call.arg(self.keys.cancel_channel());
        for id in ids {
            call.arg(id.to_string());
        }
        let found: Vec<String> = call.invoke_async(&mut self.conn()).await?;
        Ok(found
            .iter()
            .map(|where_| match where_.as_str() {
                "running" => Cancelled::Running,
                "waiting" => Cancelled::Waiting,
                _ => Cancelled::Absent,
            })
            .collect())
    }
}

/// The flow-control keys of a script that ends or takes back leases, in the order of
/// `flow_keys` in `prelude.lua`.
fn flow_keys(call: &mut redis::ScriptInvocation<'_>, k: &QueueKeys) {
    call.key(&k.settings)
        .key(&k.keyof)
        .key(&k.key_inflight)
        .key(&k.key_blocked)
        .key(&k.key_wait)
        .key(&k.key_pause);
}
