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
local function wake(signal, n)
  local want = math.min(n, 32) - redis.call('LLEN', signal)
  for _ = 1, want do
    redis.call('RPUSH', signal, '1')
  end
end
