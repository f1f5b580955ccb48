-- Hands leased jobs back without using up their attempt (a worker shutting down).
-- KEYS[1]: running zset   KEYS[2]: queued zset   KEYS[3]: attempts hash
-- KEYS[4]: leases hash    KEYS[5]: sequence counter   KEYS[6]: signal list
-- ARGV: groups of 3: id, token, priority (0-9)
-- Returns: one entry per job: 1 handed back, 0 the lease was already lost
local BAND = 17592186044416
local out = {}
for i = 1, #ARGV, 3 do
  local id = ARGV[i]
  if redis.call('HGET', KEYS[4], id) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[4], id)
    redis.call('ZREM', KEYS[1], id)
    redis.call('HINCRBY', KEYS[3], id, -1)
    local seq = redis.call('INCR', KEYS[5])
    redis.call('ZADD', KEYS[2], string.format('%.0f', (9 - tonumber(ARGV[i + 2])) * BAND + seq), id)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if #out > 0 and redis.call('LLEN', KEYS[6]) < 32 then
  redis.call('RPUSH', KEYS[6], '1')
end
return out
