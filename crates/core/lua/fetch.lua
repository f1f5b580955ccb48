-- Takes up to ARGV[1] jobs for one worker, within the queue's and the flow keys' limits:
-- promotes scheduled jobs that are due, gives keys whose wait is over their waiting jobs
-- back, then pops the highest-priority queued jobs and leases each with a fencing
-- token. A keyed job over its key's limit is set aside in the key's `kwait` (keeping
-- its place) without using an attempt, and the rest of the queue goes on: one key at
-- its limit never holds back another.
-- KEYS[1]: queued zset   KEYS[2]: scheduled zset   KEYS[3]: running zset (id -> lease deadline)
-- KEYS[4]: jobs hash     KEYS[5]: attempts hash    KEYS[6]: leases hash (id -> token)
-- KEYS[7]: sequence counter
-- KEYS[8]: settings hash   KEYS[9]: flow key limits hash   KEYS[10]: keyof hash (id -> key)
-- KEYS[11]: buckets hash   KEYS[12]: keys' calls in flight hash   KEYS[13]: kblocked zset
-- KEYS[14]: keys' pause-until hash   KEYS[15]: the prefix of each key's kwait zset
-- KEYS[16]: signal (on a Cluster, cleared when nothing can start: see `wake`)
-- ARGV[1]: most jobs to take   ARGV[2]: lease length in ms
-- Returns: strings: when to look again in unix ms or -1 (the next scheduled job, a
-- key's wait, the queue's next token), then groups of 4: id, token, attempt, payload
local now, t = clock()
local queued, kwait_base, kblocked = KEYS[1], KEYS[15], KEYS[13]

-- Nothing can start: on a Cluster, the next wake publishes again.
local function idle(reply)
  if CLUSTER then
    redis.call('DEL', KEYS[16])
  end
  return reply
end

local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', scheduled_score(now, 9),
  'WITHSCORES', 'LIMIT', 0, 1000)
if #due > 0 then
  local ids = {}
  for i = 1, #due, 2 do
    push_queued(queued, KEYS[7], due[i], scheduled_band(due[i + 1]))
    ids[#ids + 1] = due[i]
  end
  redis.call('ZREM', KEYS[2], unpack(ids))
end

-- Flow keys' state, read once per call and written back at the end.
local keys = {}
local function key_state(key)
  local ks = keys[key]
  if not ks then
    local rate, burst, conc = limits(redis.call('HGET', KEYS[9], key))
    burst = burst or math.max(1, math.ceil(rate or 1))
    ks = {
      rate = rate,
      burst = burst,
      conc = conc,
      tokens = refill(redis.call('HGET', KEYS[11], 'k:' .. key), rate, burst, now),
      inflight = tonumber(redis.call('HGET', KEYS[12], key) or '0'),
      pause = tonumber(redis.call('HGET', KEYS[14], key) or nil),
      changed = false,
    }
    if ks.pause and ks.pause <= now then
      redis.call('HDEL', KEYS[14], key)
      ks.pause = nil
    end
    keys[key] = ks
  end
  return ks
end

-- Keys whose wait is over get as many waiting jobs back as they may start.
local waited = redis.call('ZRANGEBYSCORE', kblocked, '-inf', now, 'LIMIT', 0, 100)
for _, key in ipairs(waited) do
  local cap, until_ms = capacity(key_state(key), now)
  if cap > 0 then
    release(queued, kwait_base, kblocked, key, math.min(cap, tonumber(ARGV[1])))
  else
    redis.call('ZADD', kblocked, until_ms, key)
  end
end

local out = {'-1'}
local function wake_at(ms)
  if out[1] == '-1' or ms < tonumber(out[1]) then
    out[1] = string.format('%.0f', ms)
  end
end
local nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #nxt > 0 then
  wake_at(scheduled_due(nxt[2]))
end
local blocked = redis.call('ZRANGE', kblocked, 0, 0, 'WITHSCORES')
if #blocked > 0 then
  wake_at(tonumber(blocked[2]))
end

-- The queue's own limits: paused, concurrency, rate.
local s = {}
local raw = redis.call('HGETALL', KEYS[8])
for i = 1, #raw, 2 do
  s[raw[i]] = raw[i + 1]
end
if not s.v then
  -- Redis does not hold the queue's flow control (it lost its data, or the queue is
  -- new): start nothing until a mirror writes it, which wakes the workers.
  wake_at(now + 250)
  return idle({out[1]})
end
if s.paused == '1' then
  return idle({'-1'})
end
local n = tonumber(ARGV[1])
if s.conc then
  n = math.min(n, tonumber(s.conc) - redis.call('ZCARD', KEYS[3]))
end
local qrate = tonumber(s.rate)
local qburst = tonumber(s.burst) or math.max(1, math.ceil(qrate or 1))
local qtokens = refill(redis.call('HGET', KEYS[11], 'q'), qrate, qburst, now)
if qtokens then
  n = math.min(n, math.floor(qtokens))
  if n < 1 and redis.call('ZCARD', queued) > 0 then
    wake_at(now + math.ceil((1 - qtokens) * 1000 / qrate))
  end
end

local deadline = string.format('%.0f', now + tonumber(ARGV[2]))
local taken, tries = 0, 0
while taken < n and tries < n * 4 + 16 do
  local popped = redis.call('ZPOPMIN', queued, n - taken)
  if #popped == 0 then
    break
  end
  for i = 1, #popped, 2 do
    tries = tries + 1
    local id, score = popped[i], popped[i + 1]
    local go = true
    local key = redis.call('HGET', KEYS[10], id)
    if key then
      local ks = key_state(key)
      local cap, until_ms = capacity(ks, now)
      if cap < 1 then
        redis.call('ZADD', kwait_base .. key, score, id)
        -- LT adds a new key too, and never puts off a key's earlier look.
        redis.call('ZADD', kblocked, 'LT', until_ms, key)
        wake_at(until_ms)
        go = false
      else
        if ks.tokens then
          ks.tokens = ks.tokens - 1
        end
        ks.inflight = ks.inflight + 1
        ks.changed = true
      end
    end
    local payload = go and redis.call('HGET', KEYS[4], id)
    if payload then
      local attempt = redis.call('HINCRBY', KEYS[5], id, 1)
      -- Tokens grow with Redis's clock, so they keep growing even across a Redis that
      -- lost its data; the sequence tells apart tokens issued in the same microsecond.
      local seq = redis.call('INCR', KEYS[7])
      local token = t[1] .. string.format('%06d%03d', tonumber(t[2]), seq % 1000)
      redis.call('HSET', KEYS[6], id, token)
      redis.call('ZADD', KEYS[3], deadline, id)
      out[#out + 1] = id
      out[#out + 1] = token
      out[#out + 1] = tostring(attempt)
      out[#out + 1] = payload
      taken = taken + 1
    elseif go and key then
      -- Popped but gone (cancelled meanwhile): its slot and token were never used.
      local ks = keys[key]
      ks.inflight = ks.inflight - 1
      if ks.tokens then
        ks.tokens = ks.tokens + 1
      end
    end
  end
end

for key, ks in pairs(keys) do
  if ks.changed then
    redis.call('HSET', KEYS[12], key, ks.inflight)
    if ks.tokens then
      redis.call('HSET', KEYS[11], 'k:' .. key, string.format('%.6f,%.0f', ks.tokens, now))
    end
  end
end
if qtokens and taken > 0 then
  redis.call('HSET', KEYS[11], 'q', string.format('%.6f,%.0f', qtokens - taken, now))
end
if taken == 0 then
  return idle(out)
end
return out
