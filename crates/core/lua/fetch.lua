-- Takes up to ARGV[1] jobs for one worker: first promotes scheduled jobs that are due,
-- then pops the highest-priority queued jobs and gives each a lease and a fencing token.
-- KEYS[1]: queued zset   KEYS[2]: scheduled zset   KEYS[3]: running zset (id -> lease deadline)
-- KEYS[4]: jobs hash     KEYS[5]: attempts hash    KEYS[6]: leases hash (id -> token)
-- KEYS[7]: sequence counter
-- ARGV[1]: most jobs to take   ARGV[2]: lease length in ms
-- Returns: strings: next due time in unix ms or -1, then groups of 4: id, token, attempt,
-- payload
local now, t = clock()

local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', scheduled_score(now, 9),
  'WITHSCORES', 'LIMIT', 0, 1000)
if #due > 0 then
  local ids = {}
  for i = 1, #due, 2 do
    push_queued(KEYS[1], KEYS[7], due[i], scheduled_band(due[i + 1]))
    ids[#ids + 1] = due[i]
  end
  redis.call('ZREM', KEYS[2], unpack(ids))
end

local out = {'-1'}
local nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if #nxt > 0 then
  out[1] = string.format('%.0f', scheduled_due(nxt[2]))
end

local popped = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[1]))
local deadline = string.format('%.0f', now + tonumber(ARGV[2]))
for i = 1, #popped, 2 do
  local id = popped[i]
  local payload = redis.call('HGET', KEYS[4], id)
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
  end
end
return out
