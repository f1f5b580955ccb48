-- Shared by every script: `scripts.rs` puts this in front of each one, after the
-- constants Rust defines (DEFAULT_MAX_ATTEMPTS), so the score encoding is written once.
--
-- Scores. `queued` is scored by priority band, then a FIFO sequence: band * 2^44 + seq
-- (2^44 leaves room for the sequence while the score stays an exact integer in a
-- double). `scheduled` is scored by due time with the band in the last decimal digit:
-- due_ms * 10 + band, so promotion carries the priority back out. Band 0 is priority 9.
local BAND = 17592186044416

-- Redis's clock in unix milliseconds, and the raw TIME reply (seconds, microseconds).
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), t
end

local function band_of(priority)
  return 9 - tonumber(priority)
end

local function queued_score(band, seq)
  return string.format('%.0f', band * BAND + seq)
end

local function scheduled_score(due_ms, band)
  return string.format('%.0f', due_ms * 10 + band)
end

-- The band and due time a `scheduled` score carries.
local function scheduled_band(score)
  return tonumber(score) % 10
end

local function scheduled_due(score)
  return math.floor(tonumber(score) / 10)
end

-- Appends `id` to `queued` in its band; the FIFO sequence comes from `seq_key`.
local function push_queued(queued, seq_key, id, band)
  local seq = redis.call('INCR', seq_key)
  redis.call('ZADD', queued, queued_score(band, seq), id)
end

-- Puts `id` in `queued` when due by `now`, otherwise in `scheduled`.
local function place(queued, scheduled, seq_key, id, band, due_ms, now)
  if due_ms <= now then
    push_queued(queued, seq_key, id, band)
  else
    redis.call('ZADD', scheduled, scheduled_score(due_ms, band), id)
  end
end

-- Leaves at least min(n, 32) wake-up tokens for idle workers in `signal` (one per
-- idle worker is plenty): a token already waiting wakes a worker as well as a new one,
-- and every extra one only costs an idle worker a spare look.
-- On a Redis Cluster, workers cannot block on many queues' lists at once (they are in
-- different slots), so they listen on pub/sub, where a message reaches every listener:
-- `signal` then holds one flag, set by the first wake after a worker found the queue
-- with nothing to start (fetch.lua clears it then), and only setting it publishes: a
-- queue being drained publishes nothing.
local function wake(signal, n)
  if CLUSTER then
    if n > 0 and redis.call('SET', signal, '1', 'NX') then
      redis.call('PUBLISH', signal, '1')
    end
    return
  end
  local want = math.min(n, 32) - redis.call('LLEN', signal)
  for _ = 1, want do
    redis.call('RPUSH', signal, '1')
  end
end

-- Flow control (SPEC 10). A queue's settings hash holds `paused`, `rate`, `burst` and
-- `conc`; its `fk` hash holds each flow key's limits as "rate,burst,conc" (empty for
-- none). Token buckets are "tokens,ms" strings in the `buckets` hash ("q" for the
-- queue, "k:<key>" for a key). A keyed job that a limit holds back waits in its key's
-- `kwait` zset with the score it had in `queued` (so it keeps its place by priority and
-- time), and the key sits in `kblocked`, scored by when to look again.

-- A token bucket refilled to `now`: tokens, or nil without a rate.
local function refill(raw, rate, burst, now)
  if not rate then
    return nil
  end
  local tokens, at = burst, now
  if raw then
    local comma = string.find(raw, ',', 1, true)
    tokens = tonumber(string.sub(raw, 1, comma - 1))
    at = tonumber(string.sub(raw, comma + 1))
  end
  return math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
end

-- "rate,burst,conc" as three numbers or nils.
local function limits(raw)
  if not raw then
    return nil, nil, nil
  end
  local parts, i = {}, 0
  for part in string.gmatch(raw .. ',', '([^,]*),') do
    i = i + 1
    parts[i] = tonumber(part)
  end
  return parts[1], parts[2], parts[3]
end

-- How many more jobs a key's state allows now, and, at 0, when to look again.
local function capacity(ks, now)
  if ks.pause and ks.pause > now then
    return 0, ks.pause
  end
  local cap = math.huge
  if ks.conc then
    cap = ks.conc - ks.inflight
    if cap <= 0 then
      -- A slot's release wakes the key first; this only bounds a missed one.
      return 0, now + 1000
    end
  end
  if ks.rate then
    if ks.tokens < 1 then
      return 0, now + math.ceil((1 - ks.tokens) * 1000 / ks.rate)
    end
    cap = math.min(cap, math.floor(ks.tokens))
  end
  return cap, nil
end

-- Moves up to `n` of `key`'s waiting jobs back to `queued`, with their scores; drops
-- the key from `kblocked` once none waits. Returns how many moved.
local function release(queued, kwait_base, kblocked, key, n)
  local wait = kwait_base .. key
  local moved = 0
  if n > 0 then
    local items = redis.call('ZPOPMIN', wait, n)
    for i = 1, #items, 2 do
      redis.call('ZADD', queued, items[i + 1], items[i])
      moved = moved + 1
    end
  end
  if redis.call('EXISTS', wait) == 0 then
    redis.call('ZREM', kblocked, key)
  end
  return moved
end

-- The flow-control keys of a script that ends or takes back leases, from KEYS[first]
-- on: the queue's settings hash, keyof hash, keys' calls in flight, kblocked, the kwait
-- prefix and the keys' pause-until hash.
local function flow_keys(first)
  return {
    settings = KEYS[first],
    keyof = KEYS[first + 1],
    kinflight = KEYS[first + 2],
    kblocked = KEYS[first + 3],
    kwait = KEYS[first + 4],
    kpause = KEYS[first + 5],
  }
end

-- A job left `running`: its key's slot is free, so one of the key's waiting jobs goes
-- back to `queued`. Returns how many workers to wake: that job, and one more when the
-- queue has a concurrency limit (a queued job may have waited for the slot).
local function left_running(f, queued, id)
  local wake_n = redis.call('HEXISTS', f.settings, 'conc')
  local key = redis.call('HGET', f.keyof, id)
  if key then
    if redis.call('HINCRBY', f.kinflight, key, -1) <= 0 then
      redis.call('HDEL', f.kinflight, key)
    end
    wake_n = wake_n + release(queued, f.kwait, f.kblocked, key, 1)
  end
  return wake_n
end

-- A job left the queue for good (done, dead or cancelled): it no longer has a key, and
-- if it waited on its key's limit, it waits no more.
local function forget_key(f, id)
  local key = redis.call('HGET', f.keyof, id)
  if key then
    redis.call('HDEL', f.keyof, id)
    local wait = f.kwait .. key
    if redis.call('ZREM', wait, id) == 1 and redis.call('EXISTS', wait) == 0 then
      redis.call('ZREM', f.kblocked, key)
    end
  end
end

-- Makes the key of job `id` wait until `until_ms` (a 429 or 503 with Retry-After).
local function pause_key(f, id, until_ms)
  local key = redis.call('HGET', f.keyof, id)
  if key then
    local current = tonumber(redis.call('HGET', f.kpause, key) or '0')
    if until_ms > current then
      redis.call('HSET', f.kpause, key, string.format('%.0f', until_ms))
    end
  end
end
