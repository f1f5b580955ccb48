// BullMQ worker that makes the HTTP call each job describes: the consumer side
// of the setup Courier replaces.
//
// Env: REDIS_URL (default redis://127.0.0.1:6379), QUEUE (default "bench"),
//      CONCURRENCY (default 100); for flow control, LIMIT_PER_SECOND (a rate limiter
//      on the queue's workers) and GLOBAL_CONCURRENCY (the queue's jobs in flight
//      across every worker), both unset by default.
// Prints "ready" to stdout once connected to Redis. SIGTERM/SIGINT: finishes the
// jobs in hand (worker.close()), then exits 0.

import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';
import { Agent, setGlobalDispatcher } from 'undici';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const QUEUE = process.env.QUEUE || 'bench';
const CONCURRENCY = Number(process.env.CONCURRENCY || 100);
if (!Number.isInteger(CONCURRENCY) || CONCURRENCY < 1) {
  throw new Error(`CONCURRENCY must be a positive integer, got ${process.env.CONCURRENCY}`);
}

const LIMIT_PER_SECOND = Number(process.env.LIMIT_PER_SECOND || 0);
const GLOBAL_CONCURRENCY = Number(process.env.GLOBAL_CONCURRENCY || 0);

const CALL_TIMEOUT_MS = 90_000;

// HTTP client: Node's global fetch (undici). Every job to one origin must be able
// to run at once, so the per-origin pool is explicitly unbounded (connections:
// null, which is also undici's Pool default) and idle keep-alive sockets are kept
// for 60 s rather than undici's 4 s default, so they are reused between bursts.
// undici 6.x is the major bundled in Node 20, so its Agent is the dispatcher type
// Node's fetch expects (Symbol.for('undici.globalDispatcher.1')).
const agent = new Agent({ connections: null, keepAliveTimeout: 60_000 });
setGlobalDispatcher(agent);
if (globalThis[Symbol.for('undici.globalDispatcher.1')] !== agent) {
  throw new Error("undici's global dispatcher is not the one Node's fetch uses");
}

async function call(job) {
  const { url, method = 'POST', headers = {}, body } = job.data;
  const h = new Headers(headers);
  // The same headers Courier sends, so the shared target sees no difference.
  h.set('x-courier-job-id', String(job.id));
  h.set('x-courier-attempt', String(job.attemptsMade + 1));
  // A job scheduler's job id ends with the time it is due ("repeat:<id>:<millis>"):
  // tell the target, as Courier tells it an occurrence's time.
  if (job.repeatJobKey) {
    const due = Number(String(job.id).split(':').pop());
    if (Number.isFinite(due)) h.set('x-bench-due-us', String(due * 1000));
  }
  const res = await fetch(url, {
    method,
    headers: h,
    body: method === 'GET' || method === 'HEAD' ? undefined : body,
    signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
  });
  // Read the body to the end so the connection goes back to the pool.
  await res.arrayBuffer();
  if (res.status >= 200 && res.status < 300) return { status: res.status };
  // Failing the job makes BullMQ retry it with the job's backoff.
  throw new Error(`target answered ${res.status}`);
}

// One ioredis connection for the worker's commands; BullMQ duplicates it for its
// blocking connection ("Connections"). Workers need maxRetriesPerRequest: null
// ("Going to production" -> maxRetriesPerRequest). The offline queue stays on
// so the worker waits out a Redis outage instead of failing.
const connection = new IORedis(REDIS_URL, { maxRetriesPerRequest: null });

// concurrency is the one throughput knob: the processor is I/O bound ("Concurrency":
// concurrency applies to async work such as calls to an external HTTP service).
// Everything else (drainDelay 5 s long poll, stalledInterval 30 s, lockDuration
// 30 s with automatic renewal) is left at BullMQ's defaults, which the docs say
// normally need no change ("Stalled Jobs"). No removeOnComplete/removeOnFail:
// history is kept, as Courier keeps its own in PostgreSQL.
// Flow control, when asked for: BullMQ's rate limiter ("Rate limiting": max jobs per
// duration, across the queue's workers) and global concurrency ("Global Concurrency":
// jobs in flight across every worker), the open-source counterparts of a queue's
// limits; per-key groups are BullMQ Pro's.
if (GLOBAL_CONCURRENCY > 0) {
  const queue = new Queue(QUEUE, { connection });
  await queue.setGlobalConcurrency(GLOBAL_CONCURRENCY);
  await queue.close();
}
const worker = new Worker(QUEUE, call, {
  connection,
  concurrency: CONCURRENCY,
  ...(LIMIT_PER_SECOND > 0 ? { limiter: { max: LIMIT_PER_SECOND, duration: 1000 } } : {}),
});

// "Going to production" -> Log errors.
worker.on('error', (err) => console.error('worker error:', err.message));

let closing = false;
async function shutdown(signal) {
  if (closing) return;
  closing = true;
  console.error(`${signal}: closing worker`);
  try {
    // Stops fetching and waits for the jobs in hand ("Graceful shutdown").
    await worker.close();
    await connection.quit().catch(() => connection.disconnect());
    await agent.close();
    process.exit(0);
  } catch (err) {
    console.error('shutdown failed:', err);
    process.exit(1);
  }
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

await worker.waitUntilReady();
if (!closing) process.stdout.write('ready\n');
