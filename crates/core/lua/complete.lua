-- Ends attempts: each job either leaves Redis (succeeded or dead) or goes back for a
-- retry at a given time. An attempt whose token no longer holds the lease is refused,
-- so a late result never overrides a newer attempt or a cancellation.
-- KEYS[1]: running zset   KEYS[2]: scheduled zset   KEYS[3]: queued zset
-- KEYS[4]: jobs hash      KEYS[5]: attempts hash    KEYS[6]: leases hash
-- KEYS[7]: sequence counter   KEYS[8]: signal list
-- KEYS[9]: outbox hash ("id:token" -> the attempt's record)   KEYS[10]: outbox zset (by time)
-- ARGV: groups of 5: id, token, retry time in unix ms or '-' when done, priority (0-9),
--       the attempt's record (JSON), kept in the outbox until PostgreSQL has it, so a
--       worker that dies before its history batch lands loses nothing

-- Returns: one entry per job: 1 applied, 0 refused (the lease was lost)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local BAND = 17592186044416
local out, woken = {}, 0
for i = 1, #ARGV, 5 do
  local id = ARGV[i]
  if redis.call('HGET', KEYS[6], id) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[6], id)
    redis.call('ZREM', KEYS[1], id)
    local entry = id .. ':' .. ARGV[i + 1]
    redis.call('HSET', KEYS[9], entry, ARGV[i + 4])
    redis.call('ZADD', KEYS[10], now, entry)
    if ARGV[i + 2] == '-' then
      redis.call('HDEL', KEYS[4], id)
      redis.call('HDEL', KEYS[5], id)
    else
      local at = tonumber(ARGV[i + 2])
      local band = 9 - tonumber(ARGV[i + 3])
      if at <= now then
        local seq = redis.call('INCR', KEYS[7])
        redis.call('ZADD', KEYS[3], string.format('%.0f', band * BAND + seq), id)
      else
        redis.call('ZADD', KEYS[2], string.format('%.0f', at * 10 + band), id)
      end
      woken = woken + 1
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if woken > 0 and redis.call('LLEN', KEYS[8]) < 32 then
  redis.call('RPUSH', KEYS[8], '1')
end
return out
