-- Keeps a record in the outbox until PostgreSQL has it (a reaped attempt, a stale result).
-- KEYS[1]: outbox hash   KEYS[2]: outbox zset
-- ARGV[1]: entry ("id:token:kind")   ARGV[2]: the record (JSON)
-- Returns: 1
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[1])
return 1
