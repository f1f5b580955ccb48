-- Keeps records in the journal until PostgreSQL has them (reaped attempts, stale results).
-- KEYS[1]: journal hash   KEYS[2]: journal zset
-- ARGV: pairs: entry ("id:token:kind"), the record (JSON)
-- Returns: how many records were kept
local now = clock()
for i = 1, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], now, ARGV[i])
end
return #ARGV / 2
