// Express API in front of a BullMQ queue: the producer side of the setup Courier
// replaces. Driven over HTTP by the Rust benchmark harness.
//
// Env: REDIS_URL (default redis://127.0.0.1:6379), PORT (0 = any free port),
//      QUEUE (default "bench"), HOST (optional bind address; default all interfaces).
// Prints exactly one line to stdout once listening: "listening on <port>".

import express from 'express';
import { Queue } from 'bullmq';
import IORedis from 'ioredis';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const PORT = Number(process.env.PORT ?? 0);
const HOST = process.env.HOST || undefined;
const QUEUE = process.env.QUEUE || 'bench';

const DEFAULT_ATTEMPTS = 3;

// One ioredis connection, shared by everything in this process ("Connections":
// Queue accepts an existing ioredis instance). It is a producer serving HTTP
// calls, so it keeps ioredis' default maxRetriesPerRequest and turns off the
// offline queue: while Redis is unreachable an add fails at once (we answer
// 503) instead of holding the request open ("Going to production" ->
// enableOfflineQueue; pattern "Failing fast when Redis is down").
const connection = new IORedis(REDIS_URL, { enableOfflineQueue: false });

// No removeOnComplete / removeOnFail: completed and failed jobs are kept so that
// GET /counts can count them (BullMQ's default). Courier keeps its job history
// too, in PostgreSQL, so both sides pay for keeping history.
const queue = new Queue(QUEUE, { connection });
queue.on('error', (err) => console.error('queue error:', err.message));

class BadRequest extends Error {}

const isPlainObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// Turns one request object into the { name, data, opts } that add/addBulk take.
function toJob(input, where = '') {
  if (!isPlainObject(input)) throw new BadRequest(`${where}must be a JSON object`);
  const { url, method = 'POST', headers = {}, body, run_at_ms, attempts = DEFAULT_ATTEMPTS } = input;
  if (typeof url !== 'string') throw new BadRequest(`${where}url must be a string`);
  if (typeof method !== 'string') throw new BadRequest(`${where}method must be a string`);
  if (!isPlainObject(headers) || !Object.values(headers).every((v) => typeof v === 'string')) {
    throw new BadRequest(`${where}headers must be an object of strings`);
  }
  if (body != null && typeof body !== 'string') throw new BadRequest(`${where}body must be a string`);
  if (run_at_ms != null && !Number.isFinite(run_at_ms)) {
    throw new BadRequest(`${where}run_at_ms must be a number (unix ms)`);
  }
  if (!Number.isInteger(attempts) || attempts < 1) {
    throw new BadRequest(`${where}attempts must be a positive integer`);
  }

  const opts = { attempts, backoff: { type: 'exponential', delay: 1000 } };
  if (run_at_ms != null) opts.delay = Math.max(0, run_at_ms - Date.now());

  const data = { url, method: method.toUpperCase(), headers };
  if (body != null) data.body = body;
  return { name: 'call', data, opts };
}

const app = express();
app.disable('x-powered-by');
app.set('etag', false);
// A batch of 1000 jobs with bodies fits comfortably.
app.use(express.json({ limit: '64mb' }));

app.post('/jobs', async (req, res) => {
  const { name, data, opts } = toJob(req.body);
  const job = await queue.add(name, data, opts);
  res.status(201).json({ id: job.id });
});

// One addBulk per batch: a single atomic round trip ("Adding jobs in bulk").
app.post('/jobs/batch', async (req, res) => {
  const list = req.body?.jobs;
  if (!Array.isArray(list)) throw new BadRequest('jobs must be an array');
  const jobs = list.map((j, i) => toJob(j, `jobs[${i}].`));
  const added = jobs.length ? await queue.addBulk(jobs) : [];
  res.status(201).json({ ids: added.map((j) => j.id) });
});

// A job scheduler per schedule: BullMQ's recurring jobs ("Job Schedulers").
app.put('/schedulers/:id', async (req, res) => {
  const every = Number(req.body?.every_ms);
  if (!Number.isInteger(every) || every < 1) throw new BadRequest('every_ms must be a positive integer');
  const { name, data, opts } = toJob(req.body?.job ?? {}, 'job.');
  await queue.upsertJobScheduler(req.params.id, { every }, { name, data, opts });
  res.status(201).json({ id: req.params.id });
});

// Every failed job back to wait, as BullMQ's own bulk action does it ("Retrying failed
// jobs": Queue.retryJobs, in pages of `count`, failed before `timestamp`).
app.post('/jobs/retry-failed', async (_req, res) => {
  const before = await queue.getJobCountByTypes('failed');
  await queue.retryJobs({ state: 'failed', count: 1000, timestamp: Date.now() });
  const after = await queue.getJobCountByTypes('failed');
  res.json({ retried: before - after });
});

app.get('/counts', async (_req, res) => {
  res.json(
    await queue.getJobCounts('wait', 'active', 'delayed', 'completed', 'failed', 'prioritized', 'waiting-children'),
  );
});

app.use((_req, res) => res.status(404).json({ error: 'not found' }));

// Express 5 routes rejected promises here too.
app.use((err, _req, res, _next) => {
  if (err instanceof BadRequest) return res.status(422).json({ error: err.message });
  if (err.type === 'entity.parse.failed') return res.status(400).json({ error: 'malformed JSON' });
  if (err.type === 'entity.too.large') return res.status(413).json({ error: 'body too large' });
  if (err.status >= 400 && err.status < 500) return res.status(err.status).json({ error: err.message });
  // Redis down or any other server-side failure.
  console.error('request failed:', err.message);
  res.status(503).json({ error: err.message });
});

let server;
let closing = false;
async function shutdown(signal) {
  if (closing) return;
  closing = true;
  console.error(`${signal}: shutting down`);
  try {
    if (server) {
      // Stop accepting; in-flight requests finish, idle keep-alive sockets close.
      await new Promise((resolve) => {
        server.close(resolve);
        setTimeout(() => server.closeAllConnections(), 5000).unref();
      });
    }
    await queue.close();
    await connection.quit().catch(() => connection.disconnect());
    process.exit(0);
  } catch (err) {
    console.error('shutdown failed:', err);
    process.exit(1);
  }
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

// Connect (and load BullMQ's scripts) before accepting requests: with the offline
// queue off, commands sent before the connection is ready would fail.
await queue.waitUntilReady();

if (!closing) {
  server = app.listen(PORT, HOST, () => {
    process.stdout.write(`listening on ${server.address().port}\n`);
  });
}
