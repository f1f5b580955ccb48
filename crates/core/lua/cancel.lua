-- Removes jobs from their queue wherever they are, a flow key's wait included. A running
-- job loses its lease (and frees its key's slot), so its worker's result is refused, and
-- the worker is told on ARGV[1] to abort the call.
-- KEYS[1]: queued zset   KEYS[2]: scheduled zset   KEYS[3]: running zset
-- KEYS[4]: jobs hash     KEYS[5]: attempts hash    KEYS[6]: leases hash
-- KEYS[7]: signal list   KEYS[8..13]: flow control (see `flow_keys` in prelude.lua)
-- ARGV[1]: cancel channel   ARGV[2..]: job ids
-- Returns, for each id: 'running', 'waiting' (queued, scheduled or waiting on its key) or
-- 'absent'
local f = flow_keys(8)
local results = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local where = 'absent'
  if redis.call('ZREM', KEYS[3], id) == 1 then
    where = 'running'
    redis.call('HDEL', KEYS[6], id)
    redis.call('PUBLISH', ARGV[1], id)
    local woken = left_running(f, KEYS[1], id)
    if woken > 0 then
      wake(KEYS[7], woken)
    end
  elseif redis.call('ZREM', KEYS[1], id) + redis.call('ZREM', KEYS[2], id) > 0 then
    where = 'waiting'
  else
    local key = redis.call('HGET', f.keyof, id)
    if key and redis.call('ZSCORE', f.kwait .. key, id) then
      where = 'waiting'
    end
  end
  forget_key(f, id)
  redis.call('HDEL', KEYS[4], id)
  redis.call('HDEL', KEYS[5], id)
  results[#results + 1] = where
end
return results
