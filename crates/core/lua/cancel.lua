-- Removes a job from its queue wherever it is. A running job loses its lease, so its
-- worker's result is refused, and the worker is told on ARGV[2] to abort the call.
-- KEYS[1]: queued zset   KEYS[2]: scheduled zset   KEYS[3]: running zset
-- KEYS[4]: jobs hash     KEYS[5]: attempts hash    KEYS[6]: leases hash
-- ARGV[1]: job id   ARGV[2]: cancel channel
-- Returns: 'running', 'waiting' (queued or scheduled) or 'absent'
local id = ARGV[1]
local where = 'absent'
if redis.call('ZREM', KEYS[3], id) == 1 then
  where = 'running'
  redis.call('HDEL', KEYS[6], id)
  redis.call('PUBLISH', ARGV[2], id)
elseif redis.call('ZREM', KEYS[1], id) + redis.call('ZREM', KEYS[2], id) > 0 then
  where = 'waiting'
end
redis.call('HDEL', KEYS[4], id)
redis.call('HDEL', KEYS[5], id)
return where
