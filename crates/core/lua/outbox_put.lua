-- Keeps records in the outbox until PostgreSQL has them (reaped attempts, stale results).
-- KEYS[1]: outbox hash   KEYS[2]: outbox zset
-- ARGV: pairs: entry ("id:token:kind"), the record (JSON)
-- Returns: how many records were kept
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], now, ARGV[i])
end
return #ARGV / 2
